//! The slot init of a scene from its segmentation and encoder output (centered segment
//! means, orthogonalized part slots, deterministic fallbacks), and the slot-similarity
//! diagnostics.

use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::linalg::*;
use crate::*;

// ---------------------------------------------------------------------------------------------
// slot init

pub(crate) fn fallback_direction(slot: usize, d: usize, accepted: &[Vec<f64>]) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(FALLBACK_SEED);
    rng.set_stream(slot as u64);
    for _ in 0..32 {
        let v: Vec<f64> = (0..d).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
        if let Some(u) = make_distinct(&v, 0.0, accepted, d) {
            return u;
        }
    }
    let mut e = vec![0.0; d];
    e[slot % d] = 1.0;
    e
}

/// `v / norm` if its cosine to every accepted direction is at most [`DUPLICATE_COS`].
pub(crate) fn unit_if_distinct(v: &[f64], norm: f64, accepted: &[Vec<f64>]) -> Option<Vec<f64>> {
    let u: Vec<f64> = v.iter().map(|x| x / norm).collect();
    accepted.iter().all(|a| dot(a, &u) <= DUPLICATE_COS).then_some(u)
}

/// The unit direction of `v` made distinct from `accepted`: orthogonalized against them when
/// they do not yet span the space (accepted if at least 1e-3 of `v` remains), otherwise
/// accepted as is when its cosine to every accepted direction is at most [`DUPLICATE_COS`].
pub(crate) fn make_distinct(v: &[f64], tol: f64, accepted: &[Vec<f64>], d: usize) -> Option<Vec<f64>> {
    let n0 = norm(v);
    let usable = n0.is_finite() && n0 > tol;
    if !usable {
        return None;
    }
    if accepted.len() < d {
        let mut r = v.to_vec();
        for _ in 0..2 {
            for a in accepted {
                let c = dot(a, &r);
                axpy(-c, a, &mut r);
            }
        }
        let nr = norm(&r);
        if nr > 1e-3 * n0 && nr > tol {
            scale(&mut r, 1.0 / nr);
            return Some(r);
        }
        None
    } else {
        unit_if_distinct(v, n0, accepted)
    }
}

/// Initial slots `[num_slots, d]` (row-major f32) for one scene from its encoder output
/// `encoded [n, d]` and its segmentation; see the module docs for the construction, the
/// fallback and why no gradient flows through it. Every row has norm `sqrt(d)`; the result is
/// finite for any input, and rows are pairwise distinct whenever `num_slots <= d`.
pub fn slot_init(
    encoded: &[f32],
    n: usize,
    d: usize,
    seg: &Segmentation,
    num_slots: usize,
) -> Vec<f32> {
    assert_eq!(encoded.len(), n * d, "encoded must be [n, d]");
    assert_eq!(seg.n(), n, "segmentation is for a different token count");
    let k = num_slots;
    let mut out = vec![0.0f32; k * d];
    if k == 0 || d == 0 {
        return out;
    }
    let e = |i: usize, c: usize| {
        let v = encoded[i * d + c];
        if v.is_finite() {
            v as f64
        } else {
            0.0
        }
    };
    let mut mu = vec![0.0f64; d];
    for i in 0..n {
        for (c, m) in mu.iter_mut().enumerate() {
            *m += e(i, c);
        }
    }
    mu.iter_mut().for_each(|v| *v /= n.max(1) as f64);
    let (mut ss_c, mut ss_raw) = (0.0f64, 0.0f64);
    for i in 0..n {
        for (c, &m) in mu.iter().enumerate() {
            ss_c += (e(i, c) - m).powi(2);
            ss_raw += e(i, c).powi(2);
        }
    }
    let rms_c = (ss_c / n.max(1) as f64).sqrt();
    let rms_raw = (ss_raw / n.max(1) as f64).sqrt();
    // all tokens (numerically) identical: no direction in the data separates anything
    let spread = rms_c.is_finite() && rms_c > 1e-7 * rms_raw;
    let degenerate_scene = !spread;
    let tol = 1e-6 * rms_c;

    let means = |labels: &[u32], count: usize| -> Vec<Vec<f64>> {
        let mut sums = vec![vec![0.0f64; d]; count];
        let mut counts = vec![0usize; count];
        for (i, &l) in labels.iter().enumerate() {
            let l = l as usize;
            if l < count {
                counts[l] += 1;
                for (c, v) in sums[l].iter_mut().enumerate() {
                    *v += e(i, c);
                }
            }
        }
        for (s, &cnt) in sums.iter_mut().zip(&counts) {
            if cnt > 0 {
                s.iter_mut().for_each(|v| *v /= cnt as f64);
            }
        }
        sums
    };
    let seg_means = means(&seg.labels, seg.num_segments);
    let group_means = means(&seg.groups, seg.num_groups);

    let mut accepted: Vec<Vec<f64>> = Vec::with_capacity(k);
    for slot in 0..k {
        let cand = if degenerate_scene {
            None
        } else if slot < seg.num_segments {
            let c: Vec<f64> = seg_means[slot]
                .iter()
                .zip(&mu)
                .map(|(m, u)| m - u)
                .collect();
            let nc = norm(&c);
            let usable = nc.is_finite() && nc > tol;
            if !usable {
                None
            } else {
                unit_if_distinct(&c, nc, &accepted).or_else(|| make_distinct(&c, tol, &accepted, d))
            }
        } else if slot < seg.num_groups {
            let parent = seg.group_segment[slot] as usize;
            let v: Vec<f64> = group_means[slot]
                .iter()
                .zip(&seg_means[parent])
                .map(|(g, p)| g - p)
                .collect();
            make_distinct(&v, tol, &accepted, d)
        } else {
            None
        };
        let u = cand.unwrap_or_else(|| fallback_direction(slot, d, &accepted));
        accepted.push(u);
    }
    let s = (d as f64).sqrt();
    for (row, u) in out.chunks_exact_mut(d).zip(&accepted) {
        for (o, &v) in row.iter_mut().zip(u) {
            *o = (v * s) as f32;
        }
    }
    out
}

/// [`slot_init`] for a batch: `encoded [b, n, d]`, one segmentation per scene; returns
/// `[b, num_slots, d]`. Runs in parallel (rayon).
pub fn slot_init_batch<S: AsRef<Segmentation> + Sync>(
    encoded: &[f32],
    b: usize,
    n: usize,
    d: usize,
    segs: &[S],
    num_slots: usize,
) -> Vec<f32> {
    assert_eq!(encoded.len(), b * n * d, "encoded must be [b, n, d]");
    assert_eq!(segs.len(), b, "one segmentation per scene");
    let mut out = vec![0.0f32; b * num_slots * d];
    if b == 0 || num_slots == 0 || d == 0 {
        return out;
    }
    out.par_chunks_mut(num_slots * d)
        .zip(encoded.par_chunks(n * d))
        .zip(segs.par_iter())
        .for_each(|((o, e), s)| o.copy_from_slice(&slot_init(e, n, d, s.as_ref(), num_slots)));
    out
}

// ---------------------------------------------------------------------------------------------
// diagnostics

/// The `k` slots `[k, d]` as f64 rows, their mean, and the rows with the mean removed.
pub(crate) fn rows_mean_centered(slots: &[f32], k: usize, d: usize) -> (Vec<Vec<f64>>, Vec<f64>, Vec<Vec<f64>>) {
    let rows: Vec<Vec<f64>> = slots
        .chunks_exact(d.max(1))
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect();
    let mut mean = vec![0.0f64; d];
    for r in &rows {
        axpy(1.0 / k.max(1) as f64, r, &mut mean);
    }
    let centered = rows
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(a, b)| a - b).collect())
        .collect();
    (rows, mean, centered)
}

/// Mean off-diagonal cosine of the `k` slots `[k, d]`: `(raw, centered)`, the second with the
/// mean slot removed first. A zero vector has cosine 0 with everything; `k < 2` gives `(0, 0)`.
pub fn slot_similarity(slots: &[f32], k: usize, d: usize) -> (f64, f64) {
    assert_eq!(slots.len(), k * d, "slots must be [k, d]");
    if k < 2 {
        return (0.0, 0.0);
    }
    let (rows, _, centered) = rows_mean_centered(slots, k, d);
    let mean_cos = |rs: &[Vec<f64>]| {
        let norms: Vec<f64> = rs.iter().map(|r| norm(r)).collect();
        let mut total = 0.0;
        for i in 0..k {
            for j in 0..k {
                if i != j && norms[i] > 0.0 && norms[j] > 0.0 {
                    let c = dot(&rs[i], &rs[j]) / (norms[i] * norms[j]);
                    if c.is_finite() {
                        total += c;
                    }
                }
            }
        }
        total / (k * (k - 1)) as f64
    };
    (mean_cos(&rows), mean_cos(&centered))
}

/// [`slot_similarity`] averaged over the scenes of a batch `[b, k, d]`.
pub fn slot_similarity_batch(slots: &[f32], b: usize, k: usize, d: usize) -> (f64, f64) {
    assert_eq!(slots.len(), b * k * d, "slots must be [b, k, d]");
    if b == 0 {
        return (0.0, 0.0);
    }
    let (mut r, mut c) = (0.0, 0.0);
    for s in slots.chunks_exact(k * d) {
        let (a, b2) = slot_similarity(s, k, d);
        r += a;
        c += b2;
    }
    (r / b as f64, c / b as f64)
}

/// 2-D PCA coordinates of `k` slots `[k, d]` (centered on their mean), and the projection of
/// the zero vector (where slots sharing a common component sit far from).
pub fn slot_pca(slots: &[f32], k: usize, d: usize) -> (Vec<[f64; 2]>, [f64; 2]) {
    let (_, mean, c) = rows_mean_centered(slots, k, d);
    let gram = DMatrix::<f64>::from_fn(k, k, |i, j| dot(&c[i], &c[j]));
    let eig = SymmetricEigen::new(gram);
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| {
        eig.eigenvalues[b]
            .total_cmp(&eig.eigenvalues[a])
            .then(a.cmp(&b))
    });
    let mut coords = vec![[0.0f64; 2]; k];
    let mut origin = [0.0f64; 2];
    for (axis, &col) in order.iter().take(2).enumerate() {
        let lam = eig.eigenvalues[col];
        if lam.is_nan() || lam <= 1e-12 {
            continue;
        }
        // principal direction p = C^T e / sqrt(lam); coordinate of slot i = e_i sqrt(lam)
        let ev = eig.eigenvectors.column(col);
        let mut p = vec![0.0f64; d];
        for i in 0..k {
            axpy(ev[i] / lam.sqrt(), &c[i], &mut p);
        }
        let mut xs: Vec<f64> = (0..k).map(|i| ev[i] * lam.sqrt()).collect();
        let mut o = -dot(&mean, &p);
        // sign: the largest-magnitude slot coordinate positive
        let big = xs
            .iter()
            .fold(0.0f64, |acc, &v| if v.abs() > acc.abs() { v } else { acc });
        if big < 0.0 {
            xs.iter_mut().for_each(|v| *v = -*v);
            o = -o;
        }
        for i in 0..k {
            coords[i][axis] = xs[i];
        }
        origin[axis] = o;
    }
    (coords, origin)
}
