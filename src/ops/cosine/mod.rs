//! Mean pairwise cosine similarity between the slots of each scene: the slot diversity
//! loss (clamped at 0) and the similarity monitor (raw). WGSL: `shaders/cosine.wgsl`.
//!
//! y = 1 / (B K (K-1)) * sum_b sum_{i != j} f(c_ij),  c_ij = <s_i, s_j> / max(|s_i| |s_j|, 1e-8),
//! f(c) = max(c, 0) when clamped, else c. The diagonal is excluded, not averaged in.
//! The gradient is the exact one of this formula: where |s_i| |s_j| <= 1e-8 the denominator
//! is the constant 1e-8, so a zero slot gets s_j * 1e8 from an unclamped pair (finite),
//! and nothing from a clamped one (c = 0 is not > 0).

use rayon::prelude::*;

use slotforge_engine::ops::dot_f64;
use slotforge_engine::par::PAR_MIN;
use slotforge_engine::{Buf, Ctx, Graph, Op, Shader, Var};
use slotforge_engine::bench::{Bound, Case};

const WGSL: Shader = Shader::new("cosine", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/cosine.wgsl")));

slotforge_engine::kernel_params! {
    pub struct CosineParams in "cosine" {
        /// scenes B
        nb: u32,
        /// slots K
        k: u32,
        /// slot dim D
        d: u32,
        /// 1: f = max(c, 0)
        clamp: u32,
        /// 1 / (B K (K-1)), 0 without pairs
        scale: f32,
    }
}

/// Floor of |s_i| |s_j| (as in torch's cosine_similarity).
pub const COS_EPS: f64 = 1e-8;
/// The GPU kernel keeps a scene's K x K Gram matrix in registers, 16 entries per thread.
pub const MAX_SLOTS: usize = 64;

#[derive(Debug)]
pub struct PairwiseCosineMean {
    pub b: usize,
    pub k: usize,
    pub d: usize,
    pub clamp: bool,
}

/// One scene's cosine matrix (f64): norms and c_ij, with the denominators m_ij.
struct SceneCos {
    norm: Vec<f64>,
    cos: Vec<f64>,
    denom: Vec<f64>,
}

fn scene_cos(s: &[f32], k: usize, d: usize) -> SceneCos {
    let mut gram = vec![0f64; k * k];
    for i in 0..k {
        let si = &s[i * d..(i + 1) * d];
        for j in i..k {
            let sj = &s[j * d..(j + 1) * d];
            let v = dot_f64(si, sj);
            gram[i * k + j] = v;
            gram[j * k + i] = v;
        }
    }
    let norm: Vec<f64> = (0..k).map(|i| gram[i * k + i].sqrt()).collect();
    let mut cos = vec![0f64; k * k];
    let mut denom = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..k {
            let m = (norm[i] * norm[j]).max(COS_EPS);
            denom[i * k + j] = m;
            cos[i * k + j] = gram[i * k + j] / m;
        }
    }
    SceneCos { norm, cos, denom }
}


impl PairwiseCosineMean {
    /// 1 / (B K (K-1)); 0 when there are no pairs (K <= 1 or B = 0).
    fn scale(&self) -> f32 {
        let pairs = self.b * self.k * self.k.saturating_sub(1);
        if pairs == 0 { 0.0 } else { 1.0 / pairs as f32 }
    }
    fn params(&self) -> CosineParams {
        CosineParams { nb: self.b as u32, k: self.k as u32, d: self.d as u32, clamp: self.clamp as u32, scale: self.scale() }
    }
}

impl Op for PairwiseCosineMean {
    fn name(&self) -> &'static str {
        "pairwise_cosine_mean"
    }
    /// GPU only: per-scene sums [B], then per-pair backward coefficients A [B,K,K] and C [B,K,K].
    fn saved_len(&self) -> usize {
        self.b * (1 + 2 * self.k * self.k)
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, saved: Buf) {
        let (k, d, clamp) = (self.k, self.d, self.clamp);
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0]], &[y], |r, w| {
                let scene = |b: usize| -> f64 {
                    let sc = scene_cos(&r[0][b * k * d..(b + 1) * k * d], k, d);
                    let mut acc = 0.0;
                    for i in 0..k {
                        for j in 0..k {
                            let c = sc.cos[i * k + j];
                            if i != j {
                                acc += if clamp { c.max(0.0) } else { c };
                            }
                        }
                    }
                    acc
                };
                let total: f64 = if self.b * k * k * d > PAR_MIN {
                    (0..self.b).into_par_iter().map(scene).sum()
                } else {
                    (0..self.b).map(scene).sum()
                };
                w[0][0] = (total * self.scale() as f64) as f32;
            }),
            Ctx::Gpu(r) => {
                let groups = r.split_groups(self.b);
                r.dispatch(WGSL, "cos_forward", &self.params(), &[x[0], saved], groups);
                r.dispatch(WGSL, "cos_reduce", &self.params(), &[saved, y], [1, 1, 1]);
            }
        }
    }
    fn backward(&self, cx: &mut Ctx, x: &[Buf], _: Buf, saved: Buf, gy: Buf, gx: &[Option<Buf>]) {
        // dL/ds_i = 2 scale gy sum_{j != i} f'(c_ij) (s_j / m_ij - c_ij s_i / |s_i|^2 [m_ij > eps])
        // (each unordered pair appears twice and c_ij = c_ji).
        let Some(gs) = gx[0] else { return };
        let (k, d, clamp) = (self.k, self.d, self.clamp);
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0], gy], &[gs], |r, w| {
                let coef = 2.0 * self.scale() as f64 * r[1][0] as f64;
                let scene = |b: usize, out: &mut [f32]| {
                    let sv = &r[0][b * k * d..(b + 1) * k * d];
                    let sc = scene_cos(sv, k, d);
                    let mut grad = vec![0f64; d];
                    for i in 0..k {
                        grad.fill(0.0);
                        let mut self_coef = 0.0;
                        for j in 0..k {
                            let c = sc.cos[i * k + j];
                            if i == j || (clamp && c <= 0.0) {
                                continue;
                            }
                            let m = sc.denom[i * k + j];
                            let a = 1.0 / m;
                            for (g, &v) in grad.iter_mut().zip(&sv[j * d..(j + 1) * d]) {
                                *g += a * v as f64;
                            }
                            if sc.norm[i] * sc.norm[j] > COS_EPS {
                                self_coef += c / (sc.norm[i] * sc.norm[i]);
                            }
                        }
                        let si = &sv[i * d..(i + 1) * d];
                        for ((o, g), &v) in out[i * d..(i + 1) * d].iter_mut().zip(&grad).zip(si) {
                            *o += (coef * (g - self_coef * v as f64)) as f32;
                        }
                    }
                };
                if k * d == 0 {
                    return;
                }
                if self.b * k * k * d > PAR_MIN {
                    w[0].par_chunks_mut(k * d).enumerate().for_each(|(b, o)| scene(b, o));
                } else {
                    w[0].chunks_mut(k * d).enumerate().for_each(|(b, o)| scene(b, o));
                }
            }),
            Ctx::Gpu(r) => {
                let n = self.b * k * d;
                r.dispatch_1d(WGSL, "cos_backward", &self.params(), &[x[0], saved, gy, gs], n);
            }
        }
    }
}

/// slots [B, K, D] -> [1]: mean over scenes and the K (K-1) ordered pairs i != j of
/// cos(slot_i, slot_j); `clamp` takes max(cos, 0) per pair (the diversity loss, >= 0).
/// K = 1 gives 0. K <= 64 (the GPU kernel's register tile).
pub fn pairwise_cosine_mean(g: &mut Graph, slots: Var, clamp: bool) -> Var {
    let shape = g.shape(slots).to_vec();
    if shape.len() != 3 {
        return g.shape_error(format!("pairwise_cosine_mean: slots must be [B, K, D], got {shape:?}"));
    }
    let (b, k, d) = (shape[0], shape[1], shape[2]);
    if k > MAX_SLOTS {
        return g.shape_error(format!("pairwise_cosine_mean: K = {k} slots, at most {MAX_SLOTS} supported"));
    }
    g.push(PairwiseCosineMean { b, k, d, clamp }, &[slots], &[1])
}

/// Bench case: the clamped mean pairwise cosine of slots [b, k, d].
pub fn bench_case(b: usize, k: usize, d: usize) -> Case {
    Case::new("pairwise_cosine_mean", format!("[{b},{k},{d}] clamp"), Bound::Memory, move |g, _| {
        let s = g.input_with_grad("slots", &[b, k, d]);
        pairwise_cosine_mean(g, s, true)
    })
}
