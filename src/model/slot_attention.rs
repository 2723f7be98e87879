//! What the feature and the pixel model share: the Slot Attention module (Locatello et al.
//! 2020) with its parameters, the reparameterized slot init, and the losses.
//!
//!   slots_0 = mu + exp(log_sigma) * z
//!   x = LN(inputs);  k = x Wk^T;  v = x Wv^T
//!   T times:  q = LN(slots) Wq^T / sqrt(D);  attn = softmax_slots(k q^T)
//!             w = (attn + eps) / sum_N(attn + eps);  slots = GRU(w^T v, slots)
//!             slots = slots + MLP(LN(slots))
//!   recon = MSE(recon, target);  diversity = mean_{i != j} max(cos(slot_i, slot_j), 0)
//!   total = recon + w_div * diversity   (both terms >= 0 by construction)

use std::collections::HashMap;

use crate::exec::Executor;
use crate::graph::{Graph, Var};
pub(crate) use crate::ops::SlotOps;

/// LayerNorm eps, as PyTorch's default.
pub const LN_EPS: f32 = 1e-5;

/// PyTorch modules built from their named parameters (`{name}.weight`, ...), so that the
/// model code reads like the PyTorch module it mirrors and its checkpoints keep PyTorch names.
pub(crate) trait Modules {
    /// LayerNorm with parameters `{name}.{weight,bias}`.
    fn ln(&mut self, x: Var, p: &HashMap<String, Var>, name: &str) -> Var;
    /// Linear with parameters `{name}.weight` and, if present, `{name}.bias`.
    fn dense(&mut self, x: Var, p: &HashMap<String, Var>, name: &str, relu: bool) -> Var;
    /// GRUCell with parameters `{name}.{weight_ih,weight_hh,bias_ih,bias_hh}`.
    fn gru(&mut self, x: Var, h: Var, p: &HashMap<String, Var>, name: &str) -> Var;
}

impl Modules for Graph {
    fn ln(&mut self, x: Var, p: &HashMap<String, Var>, name: &str) -> Var {
        self.layer_norm(x, p[&format!("{name}.weight")], p[&format!("{name}.bias")], LN_EPS)
    }
    fn dense(&mut self, x: Var, p: &HashMap<String, Var>, name: &str, relu: bool) -> Var {
        self.linear(x, p[&format!("{name}.weight")], p.get(&format!("{name}.bias")).copied(), relu)
    }
    fn gru(&mut self, x: Var, h: Var, p: &HashMap<String, Var>, name: &str) -> Var {
        let w = |s: &str| p[&format!("{name}.{s}")];
        self.gru_cell(x, h, w("weight_ih"), w("weight_hh"), w("bias_ih"), w("bias_hh"))
    }
}

/// The Slot Attention module's parameters (`slot_attention.*`, PyTorch names and shapes) for
/// slots of `d` dims and an MLP of `mlp_hidden` units, in the order initialization draws them.
pub fn param_shapes(d: usize, mlp_hidden: usize) -> Vec<(String, Vec<usize>)> {
    let h = mlp_hidden;
    let mut p: Vec<(String, Vec<usize>)> = vec![
        ("slot_attention.slots_mu".into(), vec![1, 1, d]),
        ("slot_attention.slots_log_sigma".into(), vec![1, 1, d]),
    ];
    for norm in ["norm_inputs", "norm_slots", "norm_mlp"] {
        p.push((format!("slot_attention.{norm}.weight"), vec![d]));
        p.push((format!("slot_attention.{norm}.bias"), vec![d]));
    }
    for w in ["to_q", "to_k", "to_v"] {
        p.push((format!("slot_attention.{w}.weight"), vec![d, d]));
    }
    p.push(("slot_attention.gru.weight_ih".into(), vec![3 * d, d]));
    p.push(("slot_attention.gru.weight_hh".into(), vec![3 * d, d]));
    p.push(("slot_attention.gru.bias_ih".into(), vec![3 * d]));
    p.push(("slot_attention.gru.bias_hh".into(), vec![3 * d]));
    p.push(("slot_attention.mlp.layers.0.weight".into(), vec![h, d]));
    p.push(("slot_attention.mlp.layers.0.bias".into(), vec![h]));
    p.push(("slot_attention.mlp.layers.1.weight".into(), vec![d, h]));
    p.push(("slot_attention.mlp.layers.1.bias".into(), vec![d]));
    p
}

/// The reparameterized init `mu + exp(log_sigma) * z` ([B, K, D] from z [B, K, D]).
pub fn init_slots(g: &mut Graph, p: &HashMap<String, Var>, z: Var) -> Var {
    let sigma = g.exp(p["slot_attention.slots_log_sigma"]);
    let spread = g.mul(sigma, z);
    g.add(p["slot_attention.slots_mu"], spread)
}

/// `iters` rounds of Slot Attention of `slots` [B, K, D] over `inputs` [B, N, D].
/// Returns the final slots and the last round's attention [B, N, K] (softmax over slots).
pub fn slot_attention(g: &mut Graph, p: &HashMap<String, Var>, inputs: Var, slots: Var, iters: usize, eps: f32) -> (Var, Var) {
    let d = *g.shape(slots).last().expect("slots must be [B, K, D]");
    let mut slots = slots;
    let xi = g.ln(inputs, p, "slot_attention.norm_inputs");
    let keys = g.dense(xi, p, "slot_attention.to_k", false);
    let values = g.dense(xi, p, "slot_attention.to_v", false);
    let mut attn = keys;
    for _ in 0..iters {
        let s = g.ln(slots, p, "slot_attention.norm_slots");
        let q = g.dense(s, p, "slot_attention.to_q", false);
        let q = g.scale(q, (d as f32).powf(-0.5));
        let logits = g.matmul(keys, q, false, true); // [B, N, K]
        attn = g.softmax(logits, 2); // over slots: slots compete for tokens
        let w = g.attn_renorm(attn, eps); // weighted mean over tokens
        let updates = g.matmul(w, values, true, false); // [B, K, D]
        slots = g.gru(updates, slots, p, "slot_attention.gru");
        let m = g.ln(slots, p, "slot_attention.norm_mlp");
        let m = g.dense(m, p, "slot_attention.mlp.layers.0", true);
        let m = g.dense(m, p, "slot_attention.mlp.layers.1", false);
        slots = g.add(slots, m);
    }
    (slots, attn)
}

/// The loss terms (scalars).
#[derive(Clone, Copy, Debug)]
pub struct Losses {
    pub mse: Var,
    pub diversity: Var,
    pub total: Var,
    /// Mean raw pairwise cosine of the slots (not clamped; a diagnostic, not a loss).
    pub similarity: Var,
}

/// `mse = mean((recon - target)^2)`, `diversity = mean_{i != j} max(cos, 0)` over the slots,
/// `total = mse + diversity_weight * diversity` (`diversity_weight` is a [1] input).
pub fn losses(g: &mut Graph, recon: Var, target: Var, slots: Var, diversity_weight: Var) -> Losses {
    let mse = g.mse(recon, target);
    let diversity = g.pairwise_cosine_mean(slots, true);
    let weighted = g.mul(diversity, diversity_weight);
    let total = g.add(mse, weighted);
    let similarity = g.pairwise_cosine_mean(slots, false);
    Losses { mse, diversity, total, similarity }
}

/// Mask-guidance inputs for a batch: the one-hot slot-group targets T, pre-scaled by the
/// per-token scale s and mixed within families, `F (s * T)`, as [B, K, N] (for the masks) and
/// [B, N, K] (for the attention); s [B, 1, N]; the family matrix F [B, K, K] (the identity
/// unless groups are guided by family). The model takes `mean((F (s * alpha) - F (s * T))^2)`.
pub struct GuideTargets {
    pub masks: Vec<f32>,
    pub attn: Vec<f32>,
    pub scale: Vec<f32>,
    pub family: Vec<f32>,
}

/// The inputs of the spectral slot init and of the mask guidance (see
/// `train::spectral_init`), the same in both models.
#[derive(Clone, Copy, Debug)]
pub struct SpectralVars {
    /// [B, N, K]: per-scene segment-mean weights S; zeros for the random init.
    pub segments: Var,
    /// [D] ones and [D] zeros: the (fixed) affine of the LayerNorm of the spectral init.
    pub init_norm: (Var, Var),
    /// One-hot slot targets, pre-scaled, as [B, K, N] (for the masks) and [B, N, K] (for the
    /// attention); the per-token scale [B, 1, N]; the family matrix F [B, K, K] (pieces of
    /// one region guided as one; the identity by default); the term's weight [1] (0: off).
    pub guide_masks: Var,
    pub guide_attn: Var,
    pub guide_scale: Var,
    pub guide_family: Var,
    pub guide_weight: Var,
}

impl SpectralVars {
    /// Record the inputs for `b` scenes of `n` tokens, `k` slots of `d` dims.
    pub fn record(g: &mut Graph, b: usize, n: usize, k: usize, d: usize) -> SpectralVars {
        SpectralVars {
            segments: g.input("input.segments", &[b, n, k]),
            init_norm: (g.input("input.init_norm.weight", &[d]), g.input("input.init_norm.bias", &[d])),
            guide_masks: g.input("input.guide_masks", &[b, k, n]),
            guide_attn: g.input("input.guide_attn", &[b, n, k]),
            guide_scale: g.input("input.guide_scale", &[b, 1, n]),
            guide_family: g.input("input.guide_family", &[b, k, k]),
            guide_weight: g.input("input.guide_weight", &[1]),
        }
    }

    /// `mu + exp(log_sigma) * (noise + LN(S^T enc))` for the encoder output `enc` [B, N, D].
    /// The spectral init (S^T enc, the centered segment means of enc) enters in place of the
    /// noise, normalized per slot to per-element RMS 1 like the noise (unnormalized it is small
    /// next to mu and every slot starts near mu: raw cosine 0.85 on generated CLEVR-like
    /// scenes). S = 0 gives LN(0) = 0 exactly, so without spectral init this is the plain
    /// `mu + exp(log_sigma) * noise`.
    pub fn init_slots(&self, g: &mut Graph, p: &HashMap<String, Var>, enc: Var, noise: Var) -> Var {
        let seg_means = g.matmul(self.segments, enc, true, false);
        let seg_init = g.layer_norm(seg_means, self.init_norm.0, self.init_norm.1, LN_EPS);
        let z = g.add(noise, seg_init);
        init_slots(g, p, z)
    }

    /// The guide term `mean((F s (alpha - T))^2) + mean((F s (attn - T^T))^2) >= 0`: the
    /// decoder's masks `alpha` [B, K, N] and the last iteration's attention `attn` [B, N, K]
    /// pulled toward the slot groups (each slot toward the group its init came from), each
    /// token weighted by s^2, the slots of one family (F) as one (the targets come pre-scaled
    /// and mixed). Returns (guide, weight * guide).
    pub fn guide(&self, g: &mut Graph, alpha: Var, attn: Var) -> (Var, Var) {
        let (b, n) = (g.shape(attn)[0], g.shape(attn)[1]);
        let scaled_alpha = g.mul(alpha, self.guide_scale);
        let family_alpha = g.matmul(self.guide_family, scaled_alpha, false, false);
        let guide_alpha = g.mse(family_alpha, self.guide_masks);
        let scale_nk = g.reshape(self.guide_scale, &[b, n, 1]);
        let scaled_attn = g.mul(attn, scale_nk);
        let family_attn = g.matmul(scaled_attn, self.guide_family, false, true);
        let guide_att = g.mse(family_attn, self.guide_attn);
        let guide = g.add(guide_alpha, guide_att);
        let weighted = g.mul(guide, self.guide_weight);
        (guide, weighted)
    }

    /// Set the constant: the init LayerNorm's affine (ones, zeros). Once, after building.
    pub fn set_constants(&self, ex: &mut Executor) -> slotforge_engine::Result<()> {
        let d = ex.graph().len(self.init_norm.0);
        ex.set(self.init_norm.0, &vec![1.0; d])?;
        ex.set(self.init_norm.1, &vec![0.0; d])
    }

    /// Feed a batch's spectral segment weights (None: zeros, the random init), guidance off.
    pub fn feed_defaults(&self, ex: &mut Executor, segments: Option<&[f32]>) -> slotforge_engine::Result<()> {
        let seg_len = ex.graph().len(self.segments);
        match segments {
            Some(s) => ex.set(self.segments, s)?,
            None => ex.set(self.segments, &vec![0.0; seg_len])?,
        }
        ex.set(self.guide_weight, &[0.0])?;
        let scale_len = ex.graph().len(self.guide_scale);
        ex.set(self.guide_scale, &vec![1.0; scale_len])?;
        let shape = ex.graph().shape(self.guide_family).to_vec();
        let (b, k) = (shape[0], shape[1]);
        let identity: Vec<f32> = (0..b * k * k).map(|i| if i % k == (i / k) % k { 1.0 } else { 0.0 }).collect();
        ex.set(self.guide_family, &identity)
    }

    /// Turn on mask guidance for this batch (after the inputs): the targets, scale and family
    /// matrix of [`GuideTargets`] (from `SegmentCache::guide_targets`), and the weight.
    pub fn feed_guide(&self, ex: &mut Executor, targets: &GuideTargets, weight: f32) -> slotforge_engine::Result<()> {
        ex.set(self.guide_scale, &targets.scale)?;
        ex.set(self.guide_masks, &targets.masks)?;
        ex.set(self.guide_attn, &targets.attn)?;
        ex.set(self.guide_family, &targets.family)?;
        ex.set(self.guide_weight, &[weight])
    }
}
