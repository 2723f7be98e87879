//! Parameter initialization for training from scratch, as PyTorch's defaults:
//! Linear and GRU weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), LayerNorm (1, 0),
//! slots_mu and slots_log_sigma Xavier-uniform as in the reference implementation, decoder
//! positions N(0, 0.02^2).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::ModelConfig;
use crate::checkpoint::TensorFile;

pub fn init_params(cfg: &ModelConfig, seed: u64) -> TensorFile {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = TensorFile::default();
    for (name, shape) in cfg.param_shapes() {
        let len: usize = shape.iter().product();
        let uniform = |rng: &mut ChaCha8Rng, bound: f32| -> Vec<f32> { (0..len).map(|_| rng.random_range(-bound..=bound)).collect() };
        let data = if name.contains("norm") {
            if name.ends_with("weight") { vec![1.0; len] } else { vec![0.0; len] }
        } else if name.starts_with("slot_attention.slots_") {
            let bound = (6.0 / (1.0 + cfg.slot_dim as f32)).sqrt();
            uniform(&mut rng, bound)
        } else if name == "decoder_pos" {
            let nd = Normal::new(0.0, 0.02).unwrap();
            (0..len).map(|_| nd.sample(&mut rng)).collect()
        } else if name.contains(".gru.") {
            uniform(&mut rng, 1.0 / (cfg.slot_dim as f32).sqrt())
        } else {
            // Linear: fan_in is the weight's second dim; the bias shares its layer's bound.
            let fan_in = cfg
                .param_shapes()
                .into_iter()
                .find(|(n, _)| *n == name.replace(".bias", ".weight"))
                .map(|(_, s)| s[1])
                .unwrap_or(1);
            uniform(&mut rng, 1.0 / (fan_in as f32).sqrt())
        };
        out.insert(&name, &shape, data);
    }
    out.metadata.insert("slotforge.config".into(), serde_json::to_string(cfg).unwrap());
    out
}
