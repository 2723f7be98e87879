//! The feature model as a graph, reading like the paper:
//!   encoder:  enc = Linear(ReLU(Linear(LN(features))))  (+ encoder_pos, if configured)
//!   slots_0 = mu + exp(log_sigma) * (noise + LN(S^T enc))  (S = 0 unless spectral init)
//!   T times:  attn = softmax_slots(k q^T / sqrt(D));  w = (attn + eps) / sum_N(attn + eps)
//!             slots = GRU(w^T v, slots);  slots = slots + MLP(LN(slots))
//!   decoder:  per slot and position MLP(slot + pos) -> (values, alpha logit); alpha = softmax_slots;
//!             recon = sum_k alpha_k values_k
//!   losses:   recon = MSE;  diversity = mean_{i != j} max(cos, 0);  total = recon + w_div * diversity
//!             (+ w_guide * guide, the spectral mask guidance, off unless enabled)

use std::collections::HashMap;

use anyhow::Result;

use super::slot_attention as sa;
use sa::GuideTargets;
use super::any::Outputs;
use super::ModelConfig;
use crate::backend::Device;
use crate::exec::Executor;
use crate::graph::{Graph, Var};
use sa::{Modules, SlotOps};

/// Handles to the variables a caller feeds or reads.
#[derive(Clone, Debug)]
pub struct ModelVars {
    /// [B, N, F]
    pub features: Var,
    /// [B, K, D]: the reparameterization noise.
    pub noise: Var,
    /// [1]: the diversity weight of this step (schedules change it without re-recording).
    pub diversity_weight: Var,
    /// The spectral init's segment weights and the mask guidance's targets and weight
    /// (zeros and off unless training uses them).
    pub spectral: sa::SpectralVars,
    pub params: Vec<(String, Var)>,
    /// [B, K, D]: the slots entering Slot Attention, `mu + exp(log_sigma) * (noise + LN(S^T enc))`
    /// (diagnostics read it; with zero noise it is the spectral init as training uses it).
    pub init_slots: Var,
    /// [B, N, F]
    pub recon: Var,
    /// slots, masks, attention and the loss terms; `out.guide` is
    /// mean((s * (alpha - T))^2) + mean((s * (attn - T^T))^2) >= 0 against the guide
    /// targets T, with per-token scale s (1 unless `guide-balance` > 0).
    pub out: Outputs,
}

/// Record the feature model for batch size `b`.
pub fn build(cfg: &ModelConfig, b: usize, features_grad: bool) -> (Graph, ModelVars) {
    let (n, f, d, k) = (cfg.n_tokens, cfg.feat_dim, cfg.slot_dim, cfg.num_slots);
    let mut g = Graph::new();
    let features = if features_grad { g.input_with_grad("input.features", &[b, n, f]) } else { g.input("input.features", &[b, n, f]) };
    let noise = g.input("input.noise", &[b, k, d]);
    let diversity_weight = g.input("input.diversity_weight", &[1]);
    let spectral = sa::SpectralVars::record(&mut g, b, n, k, d);
    let params: Vec<(String, Var)> =
        cfg.param_shapes().into_iter().map(|(name, shape)| (name.clone(), g.param(&name, &shape))).collect();
    let p: HashMap<String, Var> = params.iter().cloned().collect();

    // encoder
    let x = g.ln(features, &p, "encoder_norm");
    let x = g.dense(x, &p, "encoder.layers.0", true);
    let enc = g.dense(x, &p, "encoder.layers.1", false);
    let enc = match p.get("encoder_pos") {
        Some(&pos) => g.add(enc, pos), // [B, N, D] + [1, N, D]
        None => enc,
    };

    // slot init: reparameterized, the spectral init (if any) in place of the noise
    let init_slots = spectral.init_slots(&mut g, &p, enc, noise);

    // Slot Attention
    let (slots, attn) = sa::slot_attention(&mut g, &p, enc, init_slots, cfg.iters, cfg.eps);

    // decoder: layer 0 of MLP(slot + pos) = W slot + (W pos + bias), computed per slot and per
    // position instead of per (slot, position) pair: K + N rows instead of K * N.
    let per_slot = g.linear(slots, p["decoder.layers.0.weight"], None, false); // [B, K, H]
    let per_pos = g.dense(p["decoder_pos"], &p, "decoder.layers.0", false); // [1, 1, N, H]
    let hd = cfg.dec_hidden;
    let per_slot = g.reshape(per_slot, &[b, k, 1, hd]);
    let h = g.add(per_slot, per_pos);
    let mut h = g.relu(h); // [B, K, N, H]
    for l in 1..cfg.dec_layers {
        h = g.dense(h, &p, &format!("decoder.layers.{l}"), true);
    }
    // last layer: out_k = W h_k + b, split into F values and one alpha logit. The mixture
    // sum_k alpha_k (W_val h_k + b_val) = W_val (sum_k alpha_k h_k) + b_val, because the
    // alphas sum to 1: so the values are computed once per position from the mixed hidden
    // layer, N rows instead of K * N (the largest GEMM of the model, 11x smaller). Exactly
    // the same function and gradients as decoding every slot's values.
    let last = format!("decoder.layers.{}", cfg.dec_layers);
    let (w_val, w_alpha) = split_last_row(&mut g, p[&format!("{last}.weight")]);
    let (b_val, b_alpha) = split_last_row(&mut g, p[&format!("{last}.bias")]);
    let logit = g.linear(h, w_alpha, Some(b_alpha), false); // [B, K, N, 1]
    let alpha = g.alpha_softmax(logit); // [B, K, N]
    let mixed = g.mix_slots(h, alpha); // [B, N, H]
    let recon = g.linear(mixed, w_val, Some(b_val), false); // [B, N, F]

    // losses: both terms >= 0 by construction
    let sa::Losses { mse, diversity, total, similarity } = sa::losses(&mut g, recon, features, slots, diversity_weight);
    // guidance: the decoder's masks and the attention pulled toward the slot groups
    let (guide, weighted_guide) = spectral.guide(&mut g, alpha, attn);
    let total = g.add(total, weighted_guide);

    let vars = ModelVars {
        features,
        noise,
        diversity_weight,
        spectral,
        params,
        init_slots,
        recon,
        out: Outputs { slots, alpha, attn, mse, diversity, total, similarity, guide },
    };
    (g, vars)
}

/// A Linear's weight [out, in] (or bias [out]) as (rows 0..out-1, the last row): the last
/// decoder layer's F value rows and its alpha-logit row. Row-major, so both are contiguous.
fn split_last_row(g: &mut Graph, w: Var) -> (Var, Var) {
    let shape = g.shape(w).to_vec();
    let (rows, cols) = (shape[0], shape[1..].iter().product::<usize>());
    let flat = g.reshape(w, &[rows * cols]);
    let head = g.slice_last(flat, 0, (rows - 1) * cols);
    let last = g.slice_last(flat, (rows - 1) * cols, cols);
    let mut head_shape = shape.clone();
    head_shape[0] = rows - 1;
    let mut last_shape = shape;
    last_shape[0] = 1;
    if last_shape.len() == 1 {
        // a bias: the logit's bias has one element
        return (g.reshape(head, &head_shape), g.reshape(last, &[1]));
    }
    (g.reshape(head, &head_shape), g.reshape(last, &last_shape))
}

/// A feature model bound to a device: the recorded graph, its executor and its variables.
pub struct FeatureModel {
    pub cfg: ModelConfig,
    pub batch: usize,
    pub vars: ModelVars,
    pub ex: Executor,
}

impl FeatureModel {
    pub fn new(cfg: &ModelConfig, batch: usize, device: Device) -> Result<FeatureModel> {
        Self::build_on(cfg, batch, device, false)
    }

    /// Also computes d loss / d features (reference checks; training never needs it).
    pub fn new_with_input_grad(cfg: &ModelConfig, batch: usize, device: Device) -> Result<FeatureModel> {
        Self::build_on(cfg, batch, device, true)
    }

    fn build_on(cfg: &ModelConfig, batch: usize, device: Device, features_grad: bool) -> Result<FeatureModel> {
        cfg.validate()?;
        let (g, vars) = build(cfg, batch, features_grad);
        let mut ex = Executor::new(g, device)?;
        vars.spectral.set_constants(&mut ex)?;
        vars.spectral.feed_defaults(&mut ex, None)?;
        Ok(FeatureModel { cfg: cfg.clone(), batch, vars, ex })
    }

    /// Load parameters by PyTorch name; shapes must match exactly.
    pub fn set_params(&mut self, params: &crate::checkpoint::TensorFile) -> Result<()> {
        super::load_params(&mut self.ex, &self.vars.params, params)
    }

    pub fn get_params(&self) -> Result<crate::checkpoint::TensorFile> {
        super::save_params(&self.ex, &self.vars.params, serde_json::to_string(&self.cfg).unwrap())
    }

    /// Feed one batch of inputs.
    pub fn set_inputs(&mut self, features: &[f32], noise: &[f32], segments: Option<&[f32]>, diversity_weight: f32) -> Result<()> {
        self.ex.set(self.vars.features, features)?;
        self.ex.set(self.vars.noise, noise)?;
        self.ex.set(self.vars.diversity_weight, &[diversity_weight])?;
        Ok(self.vars.spectral.feed_defaults(&mut self.ex, segments)?)
    }

    /// Turn on mask guidance for this batch (after `set_inputs`); see [`sa::SpectralVars::feed_guide`].
    pub fn set_guide(&mut self, targets: &GuideTargets, weight: f32) -> Result<()> {
        Ok(self.vars.spectral.feed_guide(&mut self.ex, targets, weight)?)
    }
}
