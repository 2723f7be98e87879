//! k-means++ on the rows of the spectral embedding (fixed seed, a few restarts, best
//! inertia), and the canonical renumbering of its labels.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::linalg::*;
use crate::*;

// ---------------------------------------------------------------------------------------------
// k-means

/// k-means++ seeding then Lloyd iterations, `restarts` runs (ChaCha8 stream = run index), the
/// lowest inertia wins (first on ties). Labels are raw cluster ids (some may be unused when
/// there are fewer distinct points than `k`).
pub(crate) fn kmeans(data: &[f64], n: usize, dim: usize, k: usize, seed: u64, restarts: usize) -> Vec<u32> {
    let k = k.min(n).max(1);
    let mut best: Option<(f64, Vec<u32>)> = None;
    for r in 0..restarts.max(1) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(r as u64);
        let (labels, inertia) = kmeans_once(data, n, dim, k, &mut rng);
        if best.as_ref().is_none_or(|(b, _)| inertia < *b) {
            best = Some((inertia, labels));
        }
    }
    best.map(|(_, l)| l).unwrap_or_else(|| vec![0; n])
}

pub(crate) fn kmeans_once(
    data: &[f64],
    n: usize,
    dim: usize,
    k: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<u32>, f64) {
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let mut centers = vec![0.0f64; k * dim];
    // k-means++ seeding
    let first = rng.random_range(0..n);
    centers[..dim].copy_from_slice(row(first));
    let mut d2: Vec<f64> = (0..n).map(|i| sq_dist(row(i), &centers[..dim])).collect();
    for c in 1..k {
        let total: f64 = d2.iter().sum();
        let mut pick = 0usize;
        if total > 0.0 {
            let target = rng.random::<f64>() * total;
            let mut cum = 0.0;
            pick = usize::MAX;
            let mut last_pos = 0;
            for (i, &d) in d2.iter().enumerate() {
                if d > 0.0 {
                    last_pos = i;
                    cum += d;
                    if cum > target {
                        pick = i;
                        break;
                    }
                }
            }
            if pick == usize::MAX {
                pick = last_pos;
            }
        }
        centers[c * dim..(c + 1) * dim].copy_from_slice(row(pick));
        for (i, d2i) in d2.iter_mut().enumerate() {
            let d = sq_dist(row(i), &centers[c * dim..(c + 1) * dim]);
            if d < *d2i {
                *d2i = d;
            }
        }
    }
    let assign = |centers: &[f64], labels: &mut [u32], dist: &mut [f64]| -> bool {
        let mut changed = false;
        for i in 0..n {
            let mut bc = 0usize;
            let mut bd = f64::INFINITY;
            for c in 0..k {
                let d = sq_dist(row(i), &centers[c * dim..(c + 1) * dim]);
                if d < bd {
                    bd = d;
                    bc = c;
                }
            }
            if labels[i] != bc as u32 {
                labels[i] = bc as u32;
                changed = true;
            }
            dist[i] = bd;
        }
        changed
    };
    let mut labels = vec![u32::MAX; n];
    let mut dist = vec![0.0f64; n];
    assign(&centers, &mut labels, &mut dist);
    for _ in 0..KMEANS_MAX_ITERS {
        let mut counts = vec![0usize; k];
        let mut sums = vec![0.0f64; k * dim];
        for (i, &l) in labels.iter().enumerate() {
            let c = l as usize;
            counts[c] += 1;
            axpy(1.0, row(i), &mut sums[c * dim..(c + 1) * dim]);
        }
        for c in 0..k {
            if counts[c] > 0 {
                let inv = 1.0 / counts[c] as f64;
                for (ce, s) in centers[c * dim..(c + 1) * dim]
                    .iter_mut()
                    .zip(&sums[c * dim..(c + 1) * dim])
                {
                    *ce = s * inv;
                }
            } else {
                // empty cluster: move it to the point farthest from its center, if any is away
                let (far, fd) = dist
                    .iter()
                    .enumerate()
                    .fold(
                        (0usize, -1.0f64),
                        |acc, (i, &d)| if d > acc.1 { (i, d) } else { acc },
                    );
                if fd > 0.0 {
                    centers[c * dim..(c + 1) * dim].copy_from_slice(row(far));
                    dist[far] = 0.0;
                }
            }
        }
        if !assign(&centers, &mut labels, &mut dist) {
            break;
        }
    }
    let inertia = dist.iter().sum();
    (labels, inertia)
}

/// Renumber labels by first appearance in token order; returns the count.
pub(crate) fn canonical_relabel(labels: &mut [u32]) -> usize {
    let mut map: HashMap<u32, u32> = HashMap::new();
    for l in labels.iter_mut() {
        let next = map.len() as u32;
        *l = *map.entry(*l).or_insert(next);
    }
    map.len()
}
