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

use crate::graph::{Graph, Var};

/// LayerNorm eps, as PyTorch's default.
pub const LN_EPS: f32 = 1e-5;

impl Graph {
    /// PyTorch LayerNorm with parameters `{name}.{weight,bias}`.
    pub(crate) fn ln(&mut self, x: Var, p: &HashMap<String, Var>, name: &str) -> Var {
        self.layer_norm(x, p[&format!("{name}.weight")], p[&format!("{name}.bias")], LN_EPS)
    }

    /// PyTorch Linear with parameters `{name}.weight` and, if present, `{name}.bias`.
    pub(crate) fn dense(&mut self, x: Var, p: &HashMap<String, Var>, name: &str, relu: bool) -> Var {
        self.linear(x, p[&format!("{name}.weight")], p.get(&format!("{name}.bias")).copied(), relu)
    }

    /// PyTorch's GRUCell, gates (r, z, n): the two projections are GEMMs, the rest one fused op.
    pub fn gru_cell(&mut self, x: Var, h: Var, p: &HashMap<String, Var>, name: &str) -> Var {
        let gi = self.linear(x, p[&format!("{name}.weight_ih")], Some(p[&format!("{name}.bias_ih")]), false);
        let gh = self.linear(h, p[&format!("{name}.weight_hh")], Some(p[&format!("{name}.bias_hh")]), false);
        self.gru_gates(gi, gh, h)
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
        slots = g.gru_cell(updates, slots, p, "slot_attention.gru");
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
