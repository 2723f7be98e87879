//! Parameter initialization for training from scratch, as PyTorch's defaults:
//! Linear, Conv2d and GRU weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in of a
//! conv weight [out, in, kh, kw] is in * kh * kw), LayerNorm (1, 0), slots_mu and
//! slots_log_sigma Xavier-uniform as in the reference implementation. The feature model's
//! decoder positions are the one departure: a 2-D sine-cosine embedding of the token grid (as
//! MAE's fixed one), not DINOSAUR's N(0, 0.02^2). At 0.02 every position looks the same to the
//! decoder, so it cannot draw different masks for different places until Adam has grown
//! the embedding ~50x (about a thousand steps at lr 4e-4); with sine-cosine it can from the
//! first step. The embedding stays a trained parameter. (The pixel model's soft position
//! embeddings are Linear layers of the coordinate grid, initialized as Linear.)

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ModelConfig;
use crate::checkpoint::TensorFile;

/// [N, D] sine-cosine embedding of the token grid (square grids; else of the token index):
/// the first half of the channels encodes the row, the second the column, each as sin/cos
/// pairs at frequencies 1/10000^(2i/(D/2)) (MAE, Transformer). Per-element RMS ~0.7.
pub fn sincos_positions(n: usize, d: usize) -> Vec<f32> {
    let side = (n as f64).sqrt().round() as usize;
    let (h, w) = if side * side == n { (side, side) } else { (1, n) };
    let half = d / 2;
    let mut out = vec![0f32; n * d];
    for t in 0..n {
        let coords = [(t / w) as f64, (t % w) as f64];
        let row = &mut out[t * d..(t + 1) * d];
        for (a, &c) in coords.iter().enumerate() {
            let (start, len) = if h == 1 { (0, d) } else if a == 0 { (0, half) } else { (half, d - half) };
            if h == 1 && a == 0 {
                continue; // 1-D: the index alone, over all channels
            }
            let pairs = len / 2;
            for i in 0..pairs {
                let freq = 1.0 / 10000f64.powf(i as f64 / pairs.max(1) as f64);
                row[start + 2 * i] = (c * freq).sin() as f32;
                row[start + 2 * i + 1] = (c * freq).cos() as f32;
            }
        }
    }
    out
}

pub fn init_params(cfg: &ModelConfig, seed: u64) -> TensorFile {
    let mut out = init_named(&cfg.param_shapes(), cfg.slot_dim, seed);
    out.metadata.insert("slotforge.config".into(), serde_json::to_string(cfg).unwrap());
    out
}

/// Initialize the named parameters `shapes` (drawn in this order) of a model with slots of
/// `slot_dim` dims. No metadata.
pub fn init_named(shapes: &[(String, Vec<usize>)], slot_dim: usize, seed: u64) -> TensorFile {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = TensorFile::default();
    for (name, shape) in shapes {
        let len: usize = shape.iter().product();
        let uniform = |rng: &mut ChaCha8Rng, bound: f32| -> Vec<f32> { (0..len).map(|_| rng.random_range(-bound..=bound)).collect() };
        let data = if name.contains("norm") {
            if name.ends_with("weight") { vec![1.0; len] } else { vec![0.0; len] }
        } else if name.starts_with("slot_attention.slots_") {
            let bound = (6.0 / (1.0 + slot_dim as f32)).sqrt();
            uniform(&mut rng, bound)
        } else if name == "decoder_pos" || name == "encoder_pos" {
            // [1, (1,) N, D]
            let d = *shape.last().unwrap();
            sincos_positions(len / d, d)
        } else if name.contains(".gru.") {
            uniform(&mut rng, 1.0 / (slot_dim as f32).sqrt())
        } else {
            // Linear / Conv2d: fan_in is the product of the weight's dims after the first;
            // the bias shares its layer's bound.
            let fan_in: usize = shapes
                .iter()
                .find(|(n, _)| *n == name.replace(".bias", ".weight"))
                .map(|(_, s)| s[1..].iter().product())
                .unwrap_or(1);
            uniform(&mut rng, 1.0 / (fan_in as f32).sqrt())
        };
        out.insert(name, shape, data);
    }
    out
}
