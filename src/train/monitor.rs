//! What the slots do, measured on the host from values read back at log time.
//!
//! Raw cosine between slots is dominated by the component every slot shares (the scene's
//! mean): it can read 0.97 for slots that segment the scene perfectly well. So collapse is
//! judged on the masks: how many slots win a real share of tokens, and how much the slots'
//! masks overlap. The centered similarity (per-scene slot mean removed) is logged beside
//! the raw one.

/// Mean off-diagonal cosine of `slots` [B, K, D], raw and with each scene's mean slot removed.
pub fn slot_similarity(slots: &[f32], b: usize, k: usize, d: usize) -> (f32, f32) {
    if k < 2 || b == 0 {
        return (0.0, 0.0);
    }
    let mut raw = 0.0f64;
    let mut centered = 0.0f64;
    for s in slots.chunks_exact(k * d).take(b) {
        let mut mean = vec![0f32; d];
        for row in s.chunks_exact(d) {
            mean.iter_mut().zip(row).for_each(|(m, x)| *m += x / k as f32);
        }
        let c: Vec<f32> = s.chunks_exact(d).flat_map(|row| row.iter().zip(&mean).map(|(x, m)| x - m)).collect();
        raw += mean_offdiag_cosine(s, k, d);
        centered += mean_offdiag_cosine(&c, k, d);
    }
    ((raw / b as f64) as f32, (centered / b as f64) as f32)
}

fn mean_offdiag_cosine(s: &[f32], k: usize, d: usize) -> f64 {
    let rows: Vec<&[f32]> = s.chunks_exact(d).collect();
    let norms: Vec<f64> = rows.iter().map(|r| r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()).collect();
    let mut acc = 0.0;
    for i in 0..k {
        for j in 0..k {
            if i != j {
                let dot: f64 = rows[i].iter().zip(rows[j]).map(|(a, b)| *a as f64 * *b as f64).sum();
                acc += dot / (norms[i] * norms[j]).max(1e-8);
            }
        }
    }
    acc / (k * (k - 1)) as f64
}

/// Per-scene means over `masks` [B, K, N] (soft masks summing to 1 over K):
/// the number of slots that win at least `min_share` of the tokens, and the mean pairwise
/// soft IoU of the slots' masks (sum min / sum max; 1 = identical masks, 0 = disjoint).
pub fn mask_stats(masks: &[f32], b: usize, k: usize, n: usize, min_share: f32) -> (f32, f32) {
    let mut active = 0.0f64;
    let mut overlap = 0.0f64;
    for m in masks.chunks_exact(k * n).take(b) {
        let mut wins = vec![0usize; k];
        for t in 0..n {
            let best = (0..k).max_by(|&i, &j| m[i * n + t].total_cmp(&m[j * n + t])).unwrap();
            wins[best] += 1;
        }
        active += wins.iter().filter(|&&w| w as f32 >= min_share * n as f32).count() as f64;
        if k >= 2 {
            let mut acc = 0.0;
            for i in 0..k {
                for j in i + 1..k {
                    let (mut lo, mut hi) = (0.0f64, 0.0f64);
                    for t in 0..n {
                        let (a, c) = (m[i * n + t] as f64, m[j * n + t] as f64);
                        lo += a.min(c);
                        hi += a.max(c);
                    }
                    acc += if hi > 0.0 { lo / hi } else { 0.0 };
                }
            }
            overlap += acc / (k * (k - 1) / 2) as f64;
        }
    }
    ((active / b.max(1) as f64) as f32, (overlap / b.max(1) as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centered_similarity_removes_the_shared_component() {
        // two orthogonal slots plus a large shared offset: raw cosine near 1, centered -1
        let d = 3;
        let slots = [10.0, 1.0, 0.0, 10.0, 0.0, 1.0];
        let (raw, centered) = slot_similarity(&slots, 1, 2, d);
        assert!(raw > 0.98, "raw {raw}");
        assert!((centered + 1.0).abs() < 1e-5, "centered {centered}");
    }

    #[test]
    fn mask_stats_tell_collapse_from_segmentation() {
        let (k, n) = (4, 100);
        let uniform = vec![0.25f32; k * n];
        let (active, overlap) = mask_stats(&uniform, 1, k, n, 0.02);
        assert!((overlap - 1.0).abs() < 1e-6);
        assert!(active <= 1.0);
        let mut hard = vec![0f32; k * n];
        for t in 0..n {
            hard[(t % k) * n + t] = 1.0;
        }
        let (active, overlap) = mask_stats(&hard, 1, k, n, 0.02);
        assert_eq!(active, 4.0);
        assert_eq!(overlap, 0.0);
    }
}
