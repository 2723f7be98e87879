//! The spatial-broadcast decoder's alpha-mask mixture. Each slot decodes to dec [B, K, N, C]
//! whose last channel is a mask logit: `alpha_softmax` normalizes the logits over slots,
//! `alpha_combine` mixes the other channels with those masks, and `mix_slots` mixes every
//! channel of a tensor without a logit channel (the feature decoder mixes its last hidden
//! layer, see model::feature). WGSL: `shaders/mixture.wgsl`.

use rayon::prelude::*;

use slotforge_engine::ops::dot_f64;
use slotforge_engine::par::{for_chunks, min_rows, PAR_MIN};
use slotforge_engine::{ensure_shape, Buf, Ctx, Graph, Op, Shader, Var};
use slotforge_engine::bench::{Bound, Case};

const WGSL: Shader = Shader::new("mixture", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/mixture.wgsl")));

slotforge_engine::kernel_params! {
    pub struct MixtureParams in "mixture" {
        /// scenes B
        nb: u32,
        /// slots K
        k: u32,
        /// pixels N
        n: u32,
        /// channels C including the mask logit
        c: u32,
        /// threads per row in the row kernels (power of two, <= 64)
        lanes: u32,
        /// channels alpha_combine mixes: C - 1 (skip the mask logit) or C
        cm: u32,
    }
}

/// dec [B, K, N, C] -> alpha [B, K, N] = softmax over k of dec[b, k, n, C-1].
#[derive(Debug)]
pub struct AlphaSoftmax {
    pub b: usize,
    pub k: usize,
    pub n: usize,
    pub c: usize,
}

impl AlphaSoftmax {
    /// The shader's Params has six words; `lanes` and `cm` are unused here.
    fn params(&self) -> MixtureParams {
        MixtureParams { nb: self.b as u32, k: self.k as u32, n: self.n as u32, c: self.c as u32, lanes: 1, cm: 0 }
    }
}

impl Op for AlphaSoftmax {
    fn name(&self) -> &'static str {
        "alpha_softmax"
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, _: Buf) {
        let (k, n, c) = (self.k, self.n, self.c);
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0]], &[y], |r, w| {
                let scene = |b: usize, out: &mut [f32]| {
                    let dec = &r[0][b * k * n * c..(b + 1) * k * n * c];
                    let logit = |kk: usize, nn: usize| dec[(kk * n + nn) * c + c - 1];
                    for nn in 0..n {
                        let m = (0..k).map(|kk| logit(kk, nn)).fold(f32::NEG_INFINITY, f32::max);
                        let mut z = 0f64;
                        for kk in 0..k {
                            let e = (logit(kk, nn) - m).exp();
                            out[kk * n + nn] = e;
                            z += e as f64;
                        }
                        let inv = (1.0 / z) as f32;
                        for kk in 0..k {
                            out[kk * n + nn] *= inv;
                        }
                    }
                };
                for_chunks(w[0], k * n, self.b * k * n > PAR_MIN, scene);
            }),
            Ctx::Gpu(r) => r.dispatch_1d(WGSL, "alpha_softmax_forward", &self.params(), &[x[0], y], self.b * n),
        }
    }
    fn backward(&self, cx: &mut Ctx, _: &[Buf], y: Buf, _: Buf, gy: Buf, gx: &[Option<Buf>]) {
        // dlogit[k] = alpha[k] (gy[k] - sum_k' alpha[k'] gy[k']), into the last channel only
        let Some(gd) = gx[0] else { return };
        let (k, n, c) = (self.k, self.n, self.c);
        match cx {
            Ctx::Cpu(s) => s.run(&[y, gy], &[gd], |r, w| {
                let scene = |b: usize, out: &mut [f32]| {
                    let (alpha, g) = (&r[0][b * k * n..(b + 1) * k * n], &r[1][b * k * n..(b + 1) * k * n]);
                    for nn in 0..n {
                        let dot: f64 = (0..k).map(|kk| alpha[kk * n + nn] as f64 * g[kk * n + nn] as f64).sum();
                        for kk in 0..k {
                            let i = kk * n + nn;
                            out[i * c + c - 1] += (alpha[i] as f64 * (g[i] as f64 - dot)) as f32;
                        }
                    }
                };
                for_chunks(w[0], k * n * c, self.b * k * n > PAR_MIN, scene);
            }),
            Ctx::Gpu(r) => r.dispatch_1d(WGSL, "alpha_softmax_backward", &self.params(), &[y, gy, gd], self.b * n),
        }
    }
}

/// recon [B, N, cm] = sum_k alpha[b,k,n] dec[b,k,n,c] for c < cm, dec rows of C channels:
/// cm = C-1 (the last channel is the mask logit) or cm = C (mix everything).
#[derive(Debug)]
pub struct AlphaCombine {
    pub b: usize,
    pub k: usize,
    pub n: usize,
    pub c: usize,
    pub cm: usize,
}

impl AlphaCombine {
    /// Threads per (b, k, n) row in the GPU row kernels: a power of two fitted to the cm
    /// mixed channels (RGB rows get 4, feature rows 64), so few lanes idle.
    fn lanes(&self) -> usize {
        self.cm.next_power_of_two().clamp(1, 64)
    }
    fn params(&self) -> MixtureParams {
        let (nb, k, n, c) = (self.b as u32, self.k as u32, self.n as u32, self.c as u32);
        MixtureParams { nb, k, n, c, lanes: self.lanes() as u32, cm: self.cm as u32 }
    }
}

impl Op for AlphaCombine {
    fn name(&self) -> &'static str {
        "alpha_combine"
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, _: Buf) {
        let (k, n, c, cm) = (self.k, self.n, self.c, self.cm);
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0], x[1]], &[y], |r, w| {
                let (dec, alpha) = (r[0], r[1]);
                // one output row (b, n) at a time: K short contiguous axpys (vectorized)
                let row = |bn: usize, out: &mut [f32]| {
                    let (b, nn) = (bn / n, bn % n);
                    out.fill(0.0);
                    for kk in 0..k {
                        let i = (b * k + kk) * n + nn;
                        let a = alpha[i];
                        for (o, &v) in out.iter_mut().zip(&dec[i * c..i * c + cm]) {
                            *o += a * v;
                        }
                    }
                };
                for_chunks(w[0], cm, self.b * k * n * cm > PAR_MIN, row);
            }),
            Ctx::Gpu(r) => r.dispatch_1d(WGSL, "combine_forward", &self.params(), &[x[0], x[1], y], self.b * n * cm),
        }
    }
    fn backward(&self, cx: &mut Ctx, x: &[Buf], _: Buf, _: Buf, gy: Buf, gx: &[Option<Buf>]) {
        // ddec[b,k,n,c] += alpha[b,k,n] gy[b,n,c];  dalpha[b,k,n] += sum_c gy[b,n,c] dec[b,k,n,c]
        let (k, n, c, cm) = (self.k, self.n, self.c, self.cm);
        let rows = self.b * k * n;
        let par = rows * cm > PAR_MIN;
        let grow = move |row: usize| {
            let (b, nn) = (row / (k * n), row % n);
            (b * n + nn) * cm
        };
        match cx {
            Ctx::Cpu(s) => match (gx[0], gx[1]) {
                (None, None) => {}
                (Some(gd), None) => s.run(&[x[1], gy], &[gd], |r, w| {
                    let (alpha, g) = (r[0], r[1]);
                    for_chunks(w[0], c, par, |row, out: &mut [f32]| {
                        let a = alpha[row];
                        let gr = &g[grow(row)..grow(row) + cm];
                        for (o, &v) in out[..cm].iter_mut().zip(gr) {
                            *o += a * v;
                        }
                    });
                }),
                (None, Some(ga)) => s.run(&[x[0], gy], &[ga], |r, w| {
                    let (dec, g) = (r[0], r[1]);
                    for_chunks(w[0], 1, par, |row, out: &mut [f32]| {
                        out[0] += dot_f64(&dec[row * c..row * c + cm], &g[grow(row)..grow(row) + cm]) as f32;
                    });
                }),
                (Some(gd), Some(ga)) => s.run(&[x[0], x[1], gy], &[gd, ga], |r, w| {
                    let (dec, alpha, g) = (r[0], r[1], r[2]);
                    let [wd, wa] = w else { unreachable!() };
                    // one pass over each row: dalpha's dot and ddec's axpy share the reads of gy
                    let f = |row: usize, out: &mut [f32], ga: &mut f32| {
                        let gr = &g[grow(row)..grow(row) + cm];
                        *ga += dot_f64(&dec[row * c..row * c + cm], gr) as f32;
                        let a = alpha[row];
                        for (o, &v) in out[..cm].iter_mut().zip(gr) {
                            *o += a * v;
                        }
                    };
                    if par {
                        wd.par_chunks_mut(c).zip(wa.par_iter_mut()).enumerate().with_min_len(min_rows(c)).for_each(|(row, (o, a))| f(row, o, a));
                    } else {
                        wd.chunks_mut(c).zip(wa.iter_mut()).enumerate().for_each(|(row, (o, a))| f(row, o, a));
                    }
                }),
            },
            Ctx::Gpu(r) => {
                let row_groups = r.split_groups(rows.div_ceil(256 / self.lanes()));
                match (gx[0], gx[1]) {
                    (None, None) => {}
                    (Some(gd), None) => {
                        r.dispatch_1d(WGSL, "combine_backward_dec", &self.params(), &[x[1], gy, gd], rows * cm)
                    }
                    (None, Some(ga)) => {
                        r.dispatch(WGSL, "combine_backward_alpha", &self.params(), &[x[0], gy, ga], row_groups)
                    }
                    (Some(gd), Some(ga)) => r.dispatch(
                        WGSL,
                        "combine_backward_both",
                        &self.params(),
                        &[x[0], x[1], gy, gd, ga],
                        row_groups,
                    ),
                }
            }
        }
    }
}

/// Mask weights of the decoder mixture: dec [B, K, N, C] -> alpha [B, K, N], the softmax
/// over slots k of the last channel dec[b, k, n, C-1]. Backward reaches only that channel.
pub fn alpha_softmax(g: &mut Graph, dec: Var) -> Var {
    let shape = g.shape(dec).to_vec();
    ensure_shape!(g, shape.len() == 4, "alpha_softmax: dec must be [B, K, N, C], got {shape:?}");
    let (b, k, n, c) = (shape[0], shape[1], shape[2], shape[3]);
    ensure_shape!(g, c >= 1, "alpha_softmax: dec needs a mask channel (C >= 1), got {shape:?}");
    g.push(AlphaSoftmax { b, k, n, c }, &[dec], &[b, k, n])
}

/// The mixture: recon[b, n, c] = sum_k alpha[b, k, n] dec[b, k, n, c] for c < C-1
/// (the last channel of dec is the mask logit). dec [B, K, N, C], alpha [B, K, N]
/// -> recon [B, N, C-1].
pub fn alpha_combine(g: &mut Graph, dec: Var, alpha: Var) -> Var {
    let shape = g.shape(dec).to_vec();
    ensure_shape!(g, shape.len() == 4, "alpha_combine: dec must be [B, K, N, C], got {shape:?}");
    let (b, k, n, c) = (shape[0], shape[1], shape[2], shape[3]);
    ensure_shape!(g, c >= 2, "alpha_combine: dec needs C >= 2 (channels + mask logit), got {shape:?}");
    ensure_shape!(g, g.shape(alpha) == &[b, k, n], "alpha_combine: alpha must be [B, K, N] = {:?} to match dec {shape:?}", [b, k, n]);
    g.push(AlphaCombine { b, k, n, c, cm: c - 1 }, &[dec, alpha], &[b, n, c - 1])
}

/// The mixture of every channel: out[b, n, c] = sum_k alpha[b, k, n] x[b, k, n, c].
/// x [B, K, N, C], alpha [B, K, N] -> [B, N, C].
pub fn mix_slots(g: &mut Graph, x: Var, alpha: Var) -> Var {
    let shape = g.shape(x).to_vec();
    ensure_shape!(g, shape.len() == 4, "mix_slots: x must be [B, K, N, C], got {shape:?}");
    let (b, k, n, c) = (shape[0], shape[1], shape[2], shape[3]);
    ensure_shape!(g, g.shape(alpha) == &[b, k, n], "mix_slots: alpha must be [B, K, N] = {:?} to match x {shape:?}", [b, k, n]);
    g.push(AlphaCombine { b, k, n, c, cm: c }, &[x, alpha], &[b, n, c])
}

/// Bench case: alpha_softmax of the logit channel alone, [b, k, n, 1]. It reads the logits
/// and writes alpha; backward reads alpha and gy and updates the logits' gradient.
pub fn bench_alpha_softmax(b: usize, k: usize, n: usize) -> Case {
    let bkn = b * k * n;
    Case::new("alpha_softmax", format!("logit[{b},{k},{n},1]"), Bound::Memory, move |g, _| {
        let x = g.input_with_grad("logit", &[b, k, n, 1]);
        alpha_softmax(g, x)
    })
    .traffic(2 * bkn, 4 * bkn)
}

/// Bench case: mix_slots of h [b, k, n, c] by alpha [b, k, n].
pub fn bench_mix_slots(b: usize, k: usize, n: usize, c: usize) -> Case {
    Case::new("alpha_combine", format!("h[{b},{k},{n},{c}] alpha[{b},{k},{n}]"), Bound::Memory, move |g, _| {
        let x = g.input_with_grad("h", &[b, k, n, c]);
        let a = g.input_with_grad("alpha", &[b, k, n]);
        mix_slots(g, x, a)
    })
}
