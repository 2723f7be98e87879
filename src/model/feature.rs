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

use anyhow::{bail, Result};

use super::ModelConfig;
use crate::backend::Device;
use crate::exec::Executor;
use crate::graph::{Graph, Var};

/// LayerNorm eps, as PyTorch's default.
const LN_EPS: f32 = 1e-5;

/// Handles to the variables a caller feeds or reads.
#[derive(Clone, Debug)]
pub struct ModelVars {
    /// [B, N, F]
    pub features: Var,
    /// [B, K, D]: the reparameterization noise.
    pub noise: Var,
    /// [B, N, K]: per-scene segment-mean weights (spectral init); zeros for the random init.
    pub segments: Var,
    /// [D] ones and [D] zeros: the (fixed) affine of the LayerNorm of the spectral init.
    pub init_norm: (Var, Var),
    /// [1]: the diversity weight of this step (schedules change it without re-recording).
    pub diversity_weight: Var,
    /// Spectral mask guidance (see `train::spectral_init`): one-hot slot targets as
    /// [B, K, N] (for alpha) and [B, N, K] (for attn), and the term's weight [1] (0: off).
    pub guide_masks: Var,
    pub guide_attn: Var,
    pub guide_weight: Var,
    pub params: Vec<(String, Var)>,
    /// [B, K, D]: the slots entering Slot Attention, `mu + exp(log_sigma) * (noise + LN(S^T enc))`
    /// (diagnostics read it; with zero noise it is the spectral init as training uses it).
    pub init_slots: Var,
    pub slots: Var,
    pub attn: Var,
    pub alpha: Var,
    pub recon: Var,
    pub mse: Var,
    pub diversity: Var,
    /// mean((alpha - T)^2) + mean((attn - T^T)^2) >= 0 against the guide targets.
    pub guide: Var,
    pub total: Var,
    pub similarity: Var,
}

impl Graph {
    fn ln(&mut self, x: Var, p: &HashMap<String, Var>, name: &str) -> Var {
        self.layer_norm(x, p[&format!("{name}.weight")], p[&format!("{name}.bias")], LN_EPS)
    }

    fn dense(&mut self, x: Var, p: &HashMap<String, Var>, name: &str, relu: bool) -> Var {
        self.linear(x, p[&format!("{name}.weight")], p.get(&format!("{name}.bias")).copied(), relu)
    }

    /// PyTorch's GRUCell, gates (r, z, n): the two projections are GEMMs, the rest one fused op.
    pub fn gru_cell(&mut self, x: Var, h: Var, p: &HashMap<String, Var>, name: &str) -> Var {
        let gi = self.linear(x, p[&format!("{name}.weight_ih")], Some(p[&format!("{name}.bias_ih")]), false);
        let gh = self.linear(h, p[&format!("{name}.weight_hh")], Some(p[&format!("{name}.bias_hh")]), false);
        self.gru_gates(gi, gh, h)
    }
}

/// Record the feature model for batch size `b`.
pub fn build(cfg: &ModelConfig, b: usize, features_grad: bool) -> (Graph, ModelVars) {
    let (n, f, d, k) = (cfg.n_tokens, cfg.feat_dim, cfg.slot_dim, cfg.num_slots);
    let mut g = Graph::new();
    let features = if features_grad { g.input_with_grad("input.features", &[b, n, f]) } else { g.input("input.features", &[b, n, f]) };
    let noise = g.input("input.noise", &[b, k, d]);
    let segments = g.input("input.segments", &[b, n, k]);
    let init_norm = (g.input("input.init_norm.weight", &[d]), g.input("input.init_norm.bias", &[d]));
    let diversity_weight = g.input("input.diversity_weight", &[1]);
    let guide_masks = g.input("input.guide_masks", &[b, k, n]);
    let guide_attn = g.input("input.guide_attn", &[b, n, k]);
    let guide_weight = g.input("input.guide_weight", &[1]);
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

    // slot init: reparameterized; the spectral init (S^T enc, the centered segment means of
    // enc, see train::spectral_init) enters in place of the noise, normalized per slot to
    // per-element RMS 1 like the noise (unnormalized it is small next to mu and every slot
    // starts near mu: raw cosine 0.85 on generated CLEVR-like scenes). S = 0 gives LN(0) = 0
    // exactly, so without spectral init this is the plain `mu + exp(log_sigma) * noise`.
    let sigma = g.exp(p["slot_attention.slots_log_sigma"]);
    let seg_means = g.matmul(segments, enc, true, false);
    let seg_init = g.layer_norm(seg_means, init_norm.0, init_norm.1, LN_EPS);
    let z = g.add(noise, seg_init);
    let spread = g.mul(sigma, z);
    let init_slots = g.add(p["slot_attention.slots_mu"], spread);
    let mut slots = init_slots;

    // Slot Attention
    let xi = g.ln(enc, &p, "slot_attention.norm_inputs");
    let keys = g.dense(xi, &p, "slot_attention.to_k", false);
    let values = g.dense(xi, &p, "slot_attention.to_v", false);
    let mut attn = keys;
    for _ in 0..cfg.iters {
        let s = g.ln(slots, &p, "slot_attention.norm_slots");
        let q = g.dense(s, &p, "slot_attention.to_q", false);
        let q = g.scale(q, (d as f32).powf(-0.5));
        let logits = g.matmul(keys, q, false, true); // [B, N, K]
        attn = g.softmax(logits, 2); // over slots: slots compete for tokens
        let w = g.attn_renorm(attn, cfg.eps); // weighted mean over tokens
        let updates = g.matmul(w, values, true, false); // [B, K, D]
        slots = g.gru_cell(updates, slots, &p, "slot_attention.gru");
        let m = g.ln(slots, &p, "slot_attention.norm_mlp");
        let m = g.dense(m, &p, "slot_attention.mlp.layers.0", true);
        let m = g.dense(m, &p, "slot_attention.mlp.layers.1", false);
        slots = g.add(slots, m);
    }

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
    let mse = g.mse(recon, features);
    let diversity = g.pairwise_cosine_mean(slots, true);
    let weighted = g.mul(diversity, diversity_weight);
    let total = g.add(mse, weighted);
    // guidance: the decoder's masks and the last iteration's attention pulled toward the
    // spectral segments (each slot toward the segment its init came from)
    let guide_alpha = g.mse(alpha, guide_masks);
    let guide_att = g.mse(attn, guide_attn);
    let guide = g.add(guide_alpha, guide_att);
    let weighted_guide = g.mul(guide, guide_weight);
    let total = g.add(total, weighted_guide);
    let similarity = g.pairwise_cosine_mean(slots, false);

    let vars = ModelVars {
        features,
        noise,
        segments,
        init_norm,
        diversity_weight,
        guide_masks,
        guide_attn,
        guide_weight,
        params,
        init_slots,
        slots,
        attn,
        alpha,
        recon,
        mse,
        diversity,
        guide,
        total,
        similarity,
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
        ex.set(vars.init_norm.0, &vec![1.0; cfg.slot_dim]);
        ex.set(vars.init_norm.1, &vec![0.0; cfg.slot_dim]);
        Ok(FeatureModel { cfg: cfg.clone(), batch, vars, ex })
    }

    /// Load parameters by PyTorch name; shapes must match exactly.
    pub fn set_params(&mut self, params: &crate::checkpoint::TensorFile) -> Result<()> {
        for (name, var) in self.vars.params.clone() {
            let t = params.get(&name)?;
            let want = self.ex.graph.shape(var).to_vec();
            if t.shape != want {
                bail!("parameter {name}: checkpoint shape {:?}, model expects {:?}", t.shape, want);
            }
            self.ex.set(var, &t.data);
        }
        Ok(())
    }

    pub fn get_params(&self) -> crate::checkpoint::TensorFile {
        let mut out = crate::checkpoint::TensorFile::default();
        for (name, var) in &self.vars.params {
            out.insert(name, &self.ex.graph.shape(*var).to_vec(), self.ex.get(*var));
        }
        out.metadata.insert("slotforge.config".into(), serde_json::to_string(&self.cfg).unwrap());
        out
    }

    /// Feed one batch of inputs.
    pub fn set_inputs(&mut self, features: &[f32], noise: &[f32], segments: Option<&[f32]>, diversity_weight: f32) {
        self.ex.set(self.vars.features, features);
        self.ex.set(self.vars.noise, noise);
        let seg_len = self.ex.graph.len(self.vars.segments);
        match segments {
            Some(s) => self.ex.set(self.vars.segments, s),
            None => self.ex.set(self.vars.segments, &vec![0.0; seg_len]),
        }
        self.ex.set(self.vars.diversity_weight, &[diversity_weight]);
        self.ex.set(self.vars.guide_weight, &[0.0]);
    }

    /// Turn on mask guidance for this batch (after `set_inputs`): targets [B, K, N] and
    /// their transpose [B, N, K], and the weight.
    pub fn set_guide(&mut self, masks: &[f32], attn: &[f32], weight: f32) {
        self.ex.set(self.vars.guide_masks, masks);
        self.ex.set(self.vars.guide_attn, attn);
        self.ex.set(self.vars.guide_weight, &[weight]);
    }
}
