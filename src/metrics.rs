//! Segmentation metrics: ARI, FG-ARI, mBO, per-image averaging, and the resolution
//! helpers that put token-grid predictions and pixel masks side by side.
//!
//! Conventions (all documented here, and tested):
//! - [`ari`] is scikit-learn's `adjusted_rand_score` (Hubert & Arabie), computed from the
//!   pair-confusion matrix in exact integer arithmetic. Like sklearn it returns 1.0 when
//!   there are no disagreeing pairs: empty input, both labelings a single cluster, or both
//!   all-singletons.
//! - [`fg_ari`] is [`ari`] over the pixels whose true label is not 0. With no foreground
//!   pixels this is sklearn's empty-input case, 1.0.
//! - [`mbo`] (mean best overlap): for every true foreground object (label != 0 present in
//!   the true map) the best IoU with any predicted segment (predicted labels over all
//!   pixels, background included), averaged over objects. With no true foreground object
//!   it is undefined; the function returns 1.0 (nothing to find, nothing missed) and
//!   [`score_batch`] leaves such images out of the FG-ARI and mBO averages (see
//!   [`Scores::fg_count`]).
//! - [`upsample_argmax`] is torch's `F.interpolate(mode='bilinear', align_corners=False)`
//!   on each slot's map followed by argmax over slots (first maximum wins, as torch).
//! - [`reduce_to_grid`] is the majority label per patch (ties go to the smaller label).

use rayon::prelude::*;
use std::collections::HashMap;

/// Dense relabelling of arbitrary u32 labels to 0..n_unique (order of first appearance).
fn densify(labels: &[u32]) -> (Vec<u32>, usize) {
    let max = labels.iter().copied().max().unwrap_or(0) as usize;
    let mut out = Vec::with_capacity(labels.len());
    if max < 1 << 16 {
        let mut map = vec![u32::MAX; max + 1];
        let mut n = 0u32;
        for &l in labels {
            let m = &mut map[l as usize];
            if *m == u32::MAX {
                *m = n;
                n += 1;
            }
            out.push(*m);
        }
        (out, n as usize)
    } else {
        let mut map = HashMap::new();
        for &l in labels {
            let next = map.len() as u32;
            out.push(*map.entry(l).or_insert(next));
        }
        let n = map.len();
        (out, n)
    }
}

/// Contingency table [n_true x n_pred] (row-major) of two label vectors, plus sizes.
struct Contingency {
    table: Vec<u64>,
    rows: usize,
    cols: usize,
}

fn contingency(a: &[u32], b: &[u32]) -> Contingency {
    assert_eq!(a.len(), b.len(), "label maps differ in length: {} vs {}", a.len(), b.len());
    let (da, ra) = densify(a);
    let (db, cb) = densify(b);
    let mut table = vec![0u64; ra * cb];
    for (&i, &j) in da.iter().zip(&db) {
        table[i as usize * cb + j as usize] += 1;
    }
    Contingency { table, rows: ra, cols: cb }
}

fn ari_from_contingency(c: &Contingency) -> f64 {
    let n: u64 = c.table.iter().sum();
    let sum_sq: i128 = c.table.iter().map(|&v| (v as i128) * (v as i128)).sum();
    let mut row = vec![0u64; c.rows];
    let mut col = vec![0u64; c.cols];
    for i in 0..c.rows {
        for j in 0..c.cols {
            let v = c.table[i * c.cols + j];
            row[i] += v;
            col[j] += v;
        }
    }
    let sum_row_sq: i128 = row.iter().map(|&v| (v as i128) * (v as i128)).sum();
    let sum_col_sq: i128 = col.iter().map(|&v| (v as i128) * (v as i128)).sum();
    let n = n as i128;
    // sklearn's pair_confusion_matrix (ordered pairs)
    let tp = sum_sq - n;
    let fp = sum_col_sq - sum_sq; // C[0,1]
    let fn_ = sum_row_sq - sum_sq; // C[1,0]
    let tn = n * n - fp - fn_ - sum_sq;
    if fn_ == 0 && fp == 0 {
        return 1.0;
    }
    let num = tp * tn - fn_ * fp;
    let den = (tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn);
    2.0 * (num as f64) / (den as f64)
}

/// Adjusted Rand index, exactly as `sklearn.metrics.adjusted_rand_score`.
pub fn ari(true_labels: &[u32], pred: &[u32]) -> f64 {
    ari_from_contingency(&contingency(true_labels, pred))
}

/// ARI restricted to pixels whose true label is not 0 (background).
pub fn fg_ari(true_labels: &[u32], pred: &[u32]) -> f64 {
    assert_eq!(true_labels.len(), pred.len(), "label maps differ in length");
    let (t, p): (Vec<u32>, Vec<u32>) =
        true_labels.iter().zip(pred).filter(|(&t, _)| t != 0).map(|(&t, &p)| (t, p)).unzip();
    ari(&t, &p)
}

/// Mean best overlap: mean over true foreground objects of the best IoU with any predicted
/// segment. Returns 1.0 when the true map has no foreground object (see module docs).
pub fn mbo(true_labels: &[u32], pred: &[u32]) -> f64 {
    mbo_opt(true_labels, pred).unwrap_or(1.0)
}

/// [`mbo`], or `None` when the true map has no foreground object.
pub fn mbo_opt(true_labels: &[u32], pred: &[u32]) -> Option<f64> {
    assert_eq!(true_labels.len(), pred.len(), "label maps differ in length");
    let c = contingency(true_labels, pred);
    // rows follow first appearance; find which rows are background (true label 0)
    let (dense_true, _) = densify(true_labels);
    let mut bg_row = None;
    for (d, &t) in dense_true.iter().zip(true_labels) {
        if t == 0 {
            bg_row = Some(*d as usize);
            break;
        }
    }
    let col: Vec<u64> = (0..c.cols).map(|j| (0..c.rows).map(|i| c.table[i * c.cols + j]).sum()).collect();
    let mut total = 0.0;
    let mut objects = 0usize;
    for i in 0..c.rows {
        if Some(i) == bg_row {
            continue;
        }
        let r = &c.table[i * c.cols..(i + 1) * c.cols];
        let area: u64 = r.iter().sum();
        let best =
            r.iter().zip(&col).map(|(&inter, &pa)| inter as f64 / (area + pa - inter) as f64).fold(0.0f64, f64::max);
        total += best;
        objects += 1;
    }
    (objects > 0).then(|| total / objects as f64)
}

/// Per-image averaged scores over a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    /// mean ARI over all images
    pub ari: f64,
    /// mean FG-ARI over images with at least one foreground pixel (1.0 if there are none)
    pub fg_ari: f64,
    /// mean mBO over images with at least one foreground object (1.0 if there are none)
    pub mbo: f64,
    /// number of images
    pub count: usize,
    /// number of images with foreground, over which `fg_ari` and `mbo` are averaged
    pub fg_count: usize,
}

/// Score a batch of label maps laid out image after image, `per_image` labels each.
/// Panics if the lengths disagree or are not a multiple of `per_image`.
pub fn score_batch(true_labels: &[u32], pred: &[u32], per_image: usize) -> Scores {
    assert_eq!(true_labels.len(), pred.len(), "true and predicted label maps differ in length");
    assert!(per_image > 0, "per_image must be positive");
    assert_eq!(
        true_labels.len() % per_image,
        0,
        "label count {} is not a multiple of per_image {per_image}",
        true_labels.len()
    );
    let per: Vec<(f64, Option<(f64, f64)>)> = true_labels
        .par_chunks(per_image)
        .zip(pred.par_chunks(per_image))
        .map(|(t, p)| {
            let a = ari(t, p);
            let fg = if t.iter().any(|&l| l != 0) { Some((fg_ari(t, p), mbo_opt(t, p).unwrap())) } else { None };
            (a, fg)
        })
        .collect();
    let count = per.len();
    let fg: Vec<(f64, f64)> = per.iter().filter_map(|x| x.1).collect();
    let fg_count = fg.len();
    let mean = |v: &mut dyn Iterator<Item = f64>, n: usize| if n == 0 { 1.0 } else { v.sum::<f64>() / n as f64 };
    Scores {
        ari: mean(&mut per.iter().map(|x| x.0), count),
        fg_ari: mean(&mut fg.iter().map(|x| x.0), fg_count),
        mbo: mean(&mut fg.iter().map(|x| x.1), fg_count),
        count,
        fg_count,
    }
}

/// Source index and weight for torch's bilinear align_corners=False along one axis.
fn axis_weights(inp: usize, out: usize) -> Vec<(usize, usize, f32)> {
    let scale = inp as f32 / out as f32;
    (0..out)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(inp - 1);
            let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
            let lambda = src - i0 as f32;
            (i0, i1, lambda)
        })
        .collect()
}

/// Bilinear upsampling (torch `F.interpolate(mode='bilinear', align_corners=False)`) of
/// `k` maps `[k, h, w]` to `[k, H, W]`.
pub fn upsample_bilinear(maps: &[f32], k: usize, from: (usize, usize), to: (usize, usize)) -> Vec<f32> {
    let (h, w) = from;
    let (oh, ow) = to;
    assert_eq!(maps.len(), k * h * w, "maps length {} != k*h*w = {}", maps.len(), k * h * w);
    let ys = axis_weights(h, oh);
    let xs = axis_weights(w, ow);
    let mut out = vec![0f32; k * oh * ow];
    for s in 0..k {
        let m = &maps[s * h * w..(s + 1) * h * w];
        let o = &mut out[s * oh * ow..(s + 1) * oh * ow];
        for (y, &(y0, y1, ly)) in ys.iter().enumerate() {
            for (x, &(x0, x1, lx)) in xs.iter().enumerate() {
                let top = (1.0 - lx) * m[y0 * w + x0] + lx * m[y0 * w + x1];
                let bot = (1.0 - lx) * m[y1 * w + x0] + lx * m[y1 * w + x1];
                o[y * ow + x] = (1.0 - ly) * top + ly * bot;
            }
        }
    }
    out
}

/// Upsample each of `k` maps `[k, h, w]` bilinearly to `(H, W)` and take the argmax over
/// maps per pixel (first maximum wins). Returns `[H, W]` map indices.
pub fn upsample_argmax(alpha: &[f32], k: usize, from: (usize, usize), to: (usize, usize)) -> Vec<u32> {
    let up = upsample_bilinear(alpha, k, from, to);
    let n = to.0 * to.1;
    let mut best = vec![0u32; n];
    if k == 0 {
        return best;
    }
    let mut best_v = up[..n].to_vec();
    for s in 1..k {
        let m = &up[s * n..(s + 1) * n];
        for p in 0..n {
            if m[p] > best_v[p] {
                best_v[p] = m[p];
                best[p] = s as u32;
            }
        }
    }
    best
}

/// Argmax over the first axis of `[k, n]` maps (first maximum wins).
pub fn argmax_maps(maps: &[f32], k: usize) -> Vec<u32> {
    assert!(k > 0 && maps.len().is_multiple_of(k));
    let n = maps.len() / k;
    (0..n)
        .map(|p| {
            let mut b = 0;
            for s in 1..k {
                if maps[s * n + p] > maps[b * n + p] {
                    b = s;
                }
            }
            b as u32
        })
        .collect()
}

/// Majority label per patch: reduce a `[H, W]` mask to a `[h, w]` grid. Patch `(i, j)`
/// covers rows `floor(i*H/h)..floor((i+1)*H/h)` and likewise columns; ties go to the
/// smaller label.
pub fn reduce_to_grid(mask: &[u8], from: (usize, usize), to: (usize, usize)) -> Vec<u32> {
    let (hh, ww) = from;
    let (h, w) = to;
    assert_eq!(mask.len(), hh * ww, "mask length {} != H*W = {}", mask.len(), hh * ww);
    assert!(h > 0 && w > 0 && h <= hh && w <= ww, "grid {h}x{w} must be within the mask {hh}x{ww}");
    let mut out = Vec::with_capacity(h * w);
    let mut counts = [0u32; 256];
    for i in 0..h {
        let (r0, r1) = (i * hh / h, (i + 1) * hh / h);
        for j in 0..w {
            let (c0, c1) = (j * ww / w, (j + 1) * ww / w);
            counts.iter_mut().for_each(|c| *c = 0);
            for r in r0..r1 {
                for c in c0..c1 {
                    counts[mask[r * ww + c] as usize] += 1;
                }
            }
            let mut best = 0usize;
            for l in 1..256 {
                if counts[l] > counts[best] {
                    best = l;
                }
            }
            out.push(best as u32);
        }
    }
    out
}

/// One-hot maps `[k, n]` of labels `[n]` (labels must be < k).
pub fn one_hot(labels: &[u32], k: usize) -> Vec<f32> {
    let n = labels.len();
    let mut out = vec![0f32; k * n];
    for (p, &l) in labels.iter().enumerate() {
        assert!((l as usize) < k, "label {l} >= k = {k}");
        out[l as usize * n + p] = 1.0;
    }
    out
}

/// Upsample a token-grid labelling `[h, w]` to `(H, W)` the way predictions are: one-hot
/// maps, bilinear, argmax. Returned indices are the original labels.
pub fn upsample_labels(labels: &[u32], from: (usize, usize), to: (usize, usize)) -> Vec<u32> {
    let k = labels.iter().copied().max().map_or(1, |m| m as usize + 1);
    upsample_argmax(&one_hot(labels, k), k, from, to)
}

/// Resolution ceiling of one image: the ground truth `[H, W]` reduced to the `(h, w)` token
/// grid (majority per patch), upsampled back as predictions are, scored by FG-ARI against
/// the full mask. The best FG-ARI any token-level segmentation could reach.
pub fn fg_ari_ceiling(mask: &[u8], mask_hw: (usize, usize), grid: (usize, usize)) -> f64 {
    let reduced = reduce_to_grid(mask, mask_hw, grid);
    let up = upsample_labels(&reduced, grid, mask_hw);
    let t: Vec<u32> = mask.iter().map(|&v| v as u32).collect();
    fg_ari(&t, &up)
}

/// Mean of [`fg_ari_ceiling`] over a batch of masks `[S, H, W]`, over images with foreground.
pub fn fg_ari_ceiling_batch(masks: &[u8], mask_hw: (usize, usize), grid: (usize, usize)) -> f64 {
    let per = mask_hw.0 * mask_hw.1;
    assert!(per > 0 && masks.len().is_multiple_of(per));
    let v: Vec<f64> =
        masks.par_chunks(per).filter(|m| m.iter().any(|&l| l != 0)).map(|m| fg_ari_ceiling(m, mask_hw, grid)).collect();
    if v.is_empty() {
        1.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Token-level scores: predicted token labels `[S, h*w]` against the ground truth masks
/// `[S, H, W]` reduced to the grid (majority per patch).
pub fn token_scores(masks: &[u8], mask_hw: (usize, usize), pred_tokens: &[u32], grid: (usize, usize)) -> Scores {
    let per = mask_hw.0 * mask_hw.1;
    assert!(per > 0 && masks.len().is_multiple_of(per));
    let reduced: Vec<u32> = masks.par_chunks(per).flat_map_iter(|m| reduce_to_grid(m, mask_hw, grid)).collect();
    score_batch(&reduced, pred_tokens, grid.0 * grid.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_weights_match_torch_2x() {
        // torch: F.interpolate of [0,1] to size 4, align_corners=False -> [0, .25, .75, 1]
        let up = upsample_bilinear(&[0.0, 1.0], 1, (1, 2), (1, 4));
        assert_eq!(up, vec![0.0, 0.25, 0.75, 1.0]);
    }
}
