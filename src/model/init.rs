//! Parameter initialization for training from scratch, as PyTorch's defaults:
//! Linear, Conv2d and GRU weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in of a
//! conv weight [out, in, kh, kw] is in * kh * kw), LayerNorm (1, 0), slots_mu and
//! slots_log_sigma Xavier-uniform as in the reference implementation, decoder positions
//! N(0, 0.02^2).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::ModelConfig;
use crate::checkpoint::TensorFile;

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
        } else if name == "decoder_pos" {
            let nd = Normal::new(0.0, 0.02).unwrap();
            (0..len).map(|_| nd.sample(&mut rng)).collect()
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
