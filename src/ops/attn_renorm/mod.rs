//! Slot Attention's renormalization of the attention over inputs:
//! `w[b,n,k] = (attn[b,n,k] + eps) / sum_n' (attn[b,n',k] + eps)`, so each slot's
//! update is a weighted mean of the values. WGSL: `shaders/attn_renorm.wgsl`.
//!
//! Derivative, with s_k = sum_n (attn[n,k] + eps): dL/dattn[n,k] = (gy[n,k] - sum_n' gy[n',k] w[n',k]) / s_k.

use rayon::prelude::*;

use slotforge_engine::par::{for_chunks, PAR_MIN};
use slotforge_engine::{Buf, Ctx, Graph, Op, Recorder, Shader, Var};
use slotforge_engine::bench::{Bound, Case};

const WGSL: Shader = Shader::new("attn_renorm", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/attn_renorm.wgsl")));

slotforge_engine::kernel_params! {
    pub struct AttnRenormParams in "attn_renorm" {
        /// scenes B
        nb: u32,
        /// tokens N
        n: u32,
        /// slots K
        k: u32,
        /// ceil(K / 16)
        kblocks: u32,
        eps: f32,
    }
}

/// Slot columns per workgroup in the GPU kernels (16 slot lanes x 16 token lanes).
const K_LANES: usize = 16;

/// attn [B, N, K] -> w [B, N, K], columns over N summing to 1. Saves the column sums s[b,k].
#[derive(Debug)]
pub struct AttnRenorm {
    pub b: usize,
    pub n: usize,
    pub k: usize,
    pub eps: f32,
}

impl AttnRenorm {
    fn params(&self) -> AttnRenormParams {
        let (nb, n, k, kblocks) = (self.b as u32, self.n as u32, self.k as u32, self.k.div_ceil(K_LANES) as u32);
        AttnRenormParams { nb, n, k, kblocks, eps: self.eps }
    }
    fn groups(&self, r: &mut Recorder) -> [u32; 3] {
        r.split_groups(self.b * self.k.div_ceil(K_LANES))
    }
}

impl Op for AttnRenorm {
    fn name(&self) -> &'static str {
        "attn_renorm"
    }
    fn saved_len(&self) -> usize {
        self.b * self.k
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, saved: Buf) {
        let (n, k, eps) = (self.n, self.k, self.eps as f64);
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0]], &[y, saved], |r, w| {
                let attn = r[0];
                let [wy, ws] = w else { unreachable!() };
                // per scene: f64 column sums (kept for the backward), then the scaled copy
                let scene = |src: &[f32], out: &mut [f32], sums: &mut [f32]| {
                    let mut acc = vec![0f64; k];
                    for row in src.chunks_exact(k) {
                        for (a, &v) in acc.iter_mut().zip(row) {
                            *a += v as f64 + eps;
                        }
                    }
                    for (orow, arow) in out.chunks_exact_mut(k).zip(src.chunks_exact(k)) {
                        for ((o, &a), &sk) in orow.iter_mut().zip(arow).zip(&acc) {
                            *o = ((a as f64 + eps) / sk) as f32;
                        }
                    }
                    for (s, a) in sums.iter_mut().zip(&acc) {
                        *s = *a as f32;
                    }
                };
                if n * k == 0 {
                    ws.fill((n as f64 * eps) as f32);
                } else if self.b * n * k > PAR_MIN {
                    attn.par_chunks(n * k)
                        .zip(wy.par_chunks_mut(n * k))
                        .zip(ws.par_chunks_mut(k))
                        .for_each(|((src, out), sums)| scene(src, out, sums));
                } else {
                    for ((src, out), sums) in attn.chunks(n * k).zip(wy.chunks_mut(n * k)).zip(ws.chunks_mut(k)) {
                        scene(src, out, sums);
                    }
                }
            }),
            Ctx::Gpu(r) => {
                let groups = self.groups(r);
                r.dispatch(WGSL, "renorm_forward", &self.params(), &[x[0], y, saved], groups)
            }
        }
    }
    fn backward(&self, cx: &mut Ctx, _: &[Buf], y: Buf, saved: Buf, gy: Buf, gx: &[Option<Buf>]) {
        // da[n,k] = (gy[n,k] - sum_n' gy[n',k] w[n',k]) / s[k]
        let Some(ga) = gx[0] else { return };
        let (n, k) = (self.n, self.k);
        match cx {
            Ctx::Cpu(s) => s.run(&[y, saved, gy], &[ga], |r, w| {
                let (wv, sums, g) = (r[0], r[1], r[2]);
                let par = self.b * n * k > PAR_MIN;
                for_chunks(w[0], n * k, par, |b, out| {
                    let range = b * n * k..(b + 1) * n * k;
                    let (wb, gb) = (&wv[range.clone()], &g[range]);
                    let mut dot = vec![0f64; k];
                    for (wrow, grow) in wb.chunks_exact(k).zip(gb.chunks_exact(k)) {
                        for ((d, &wv), &gv) in dot.iter_mut().zip(wrow).zip(grow) {
                            *d += wv as f64 * gv as f64;
                        }
                    }
                    let s = &sums[b * k..(b + 1) * k];
                    for (orow, grow) in out.chunks_exact_mut(k).zip(gb.chunks_exact(k)) {
                        for (((o, &gv), d), &sk) in orow.iter_mut().zip(grow).zip(&dot).zip(s) {
                            *o += ((gv as f64 - d) / sk as f64) as f32;
                        }
                    }
                });
            }),
            Ctx::Gpu(r) => {
                let groups = self.groups(r);
                r.dispatch(WGSL, "renorm_backward", &self.params(), &[y, saved, gy, ga], groups)
            }
        }
    }
}

/// Slot Attention's weighted-mean normalization: attn [B, N, K] (already softmaxed
/// over K) -> w [B, N, K] with w[b,n,k] = (attn[b,n,k] + eps) / sum_n' (attn[b,n',k] + eps).
pub fn attn_renorm(g: &mut Graph, attn: Var, eps: f32) -> Var {
    let shape = g.shape(attn).to_vec();
    if shape.len() != 3 {
        return g.shape_error(format!("attn_renorm: attn must be [B, N, K], got {shape:?}"));
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return g.shape_error(format!("attn_renorm: eps must be finite and >= 0, got {eps}"));
    }
    let (b, n, k) = (shape[0], shape[1], shape[2]);
    g.push(AttnRenorm { b, n, k, eps }, &[attn], &shape)
}

/// Bench case: attn_renorm of attn [b, n, k] (positive, as a softmax gives it).
pub fn bench_case(b: usize, n: usize, k: usize) -> Case {
    Case::new("attn_renorm", format!("[{b},{n},{k}]"), Bound::Memory, move |g, _| {
        let a = g.input_with_grad("attn", &[b, n, k]);
        attn_renorm(g, a, 1e-8)
    })
    .positive()
}
