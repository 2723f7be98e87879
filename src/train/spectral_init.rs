//! Spectral slot initialization wired into training: each scene's tokens are segmented
//! once on the CPU (the features are frozen, so the segments never change) and cached as
//! a segment-mean matrix S [N, K]. On the device the model computes slots_0 += S^T enc,
//! i.e. each slot starts at its segment's mean encoded token minus the scene's mean token.
//!
//! Gradients: none flow through the eigendecomposition (S is data), but they do flow
//! through the segment means into the encoder, so the encoder learns features whose
//! segment means are good slot inits. Centering (subtracting the scene mean) removes the
//! component every slot would otherwise share, which is what made a user's spectral
//! slots all have cosine 1.0.

use anyhow::Result;
use rayon::prelude::*;

use crate::data::Dataset;
use crate::spectral::{segment, SpectralConfig};

pub struct SegmentCache {
    pub n: usize,
    pub k: usize,
    /// Per scene, S [N, K] row-major.
    pub weights: Vec<Vec<f32>>,
    pub labels: Vec<Vec<u32>>,
}

impl SegmentCache {
    pub fn build(data: &Dataset, num_slots: usize, seed: u64) -> Result<SegmentCache> {
        let n = data.tokens();
        let f = data.feat_dim;
        let cfg = SpectralConfig { seed, ..SpectralConfig::default() };
        let labels: Vec<Vec<u32>> = (0..data.count)
            .into_par_iter()
            .map(|s| segment(&data.features[s * n * f..(s + 1) * n * f], n, f, data.grid, num_slots, &cfg).labels)
            .collect();
        let weights = labels.iter().map(|l| segment_weights(l, num_slots)).collect();
        Ok(SegmentCache { n, k: num_slots, weights, labels })
    }

    /// Multiply every segment matrix by `c` (the trainer scales the init to the noise's norm).
    pub fn scale(&mut self, c: f32) {
        self.weights.iter_mut().flat_map(|w| w.iter_mut()).for_each(|v| *v *= c);
    }

    /// S for a batch of scenes, [B, N, K].
    pub fn gather(&self, scenes: &[usize]) -> Vec<f32> {
        scenes.iter().flat_map(|&s| self.weights[s].iter().copied()).collect()
    }
}

/// S[n, k] = [n in segment k] / |segment k| - 1/N; an empty segment's column is zero (its
/// slot starts from the learned mean plus noise).
pub fn segment_weights(labels: &[u32], k: usize) -> Vec<f32> {
    let n = labels.len();
    let mut sizes = vec![0usize; k];
    for &l in labels {
        if (l as usize) < k {
            sizes[l as usize] += 1;
        }
    }
    let mut s = vec![0f32; n * k];
    for (t, &l) in labels.iter().enumerate() {
        for j in 0..k {
            if sizes[j] > 0 {
                let member = if l as usize == j { 1.0 / sizes[j] as f32 } else { 0.0 };
                s[t * k + j] = member - 1.0 / n as f32;
            }
        }
    }
    s
}
