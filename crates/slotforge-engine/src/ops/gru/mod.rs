//! `gru_cell`: PyTorch's GRUCell, gates ordered (r, z, n). gi = x W_ih^T + b_ih and
//! gh = h W_hh^T + b_hh are `linear`s; `gru_gates` does the rest in one fused pass.
//! WGSL: `shaders/gru.wgsl`.
//!
//! Derivatives of h' = (1 - z) n + z h: dh = G z (+ through gh), dn = G (1 - z),
//! dz = G (h - n), then through the gates: da_n = dn (1 - n^2), dgh_n = da_n r,
//! dr = da_n gh_n, da_r = dr r (1 - r), da_z = dz z (1 - z); dgi = (da_r, da_z, da_n),
//! dgh = (da_r, da_z, dgh_n).

use rayon::iter::{Either, IndexedParallelIterator, IntoParallelIterator, ParallelIterator};
use rayon::slice::{ParallelSlice, ParallelSliceMut};

use crate::par::rows_per_task;
use crate::backend::{shader, Buf, Ctx, Shader};
use crate::graph::{ensure, Graph, Op, Var};
use crate::bench::{Bound, Case};

const WGSL: Shader = shader!("gru");

crate::kernel_params! {
    /// `n` = rows * D elements of h, `d` = D.
    pub struct GruParams in "gru" { n: u32, d: u32 }
}


/// r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r * gh_n),
/// h' = (1 - z) * n + z * h. Saved: the planes r, z, n, each [rows * dim].
#[derive(Debug)]
pub struct GruGates {
    pub rows: usize,
    pub dim: usize,
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// tanh to a few f32 ulps at a fifth of libm's `tanhf` cost (which dominated the cell):
/// an odd Taylor polynomial near 0 (the next term is < 1e-8 relative at 0.25), and
/// (1 - e^-2|x|) / (1 + e^-2|x|) elsewhere, where the subtraction loses at most ~2 ulps.
/// The shader computes the same.
#[inline(always)]
pub fn tanh_fast(x: f32) -> f32 {
    let a = x.abs();
    if a < 0.25 {
        let x2 = x * x;
        x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))))
    } else {
        let t = (-2.0 * a).exp();
        ((1.0 - t) / (1.0 + t)).copysign(x)
    }
}

/// Rows of an optional gradient buffer: `Some(row)` per row, or `None` for every row.
fn opt_rows(buf: Option<&mut [f32]>, width: usize, rows: usize) -> impl IndexedParallelIterator<Item = Option<&mut [f32]>> {
    match buf {
        Some(b) => Either::Left(b.par_chunks_mut(width).map(Some)),
        None => Either::Right((0..rows).into_par_iter().map(|_| None)),
    }
}

impl Op for GruGates {
    fn name(&self) -> &'static str {
        "gru_gates"
    }
    fn saved_len(&self) -> usize {
        3 * self.rows * self.dim
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, saved: Buf) {
        let (rows, d) = (self.rows, self.dim);
        let n = rows * d;
        if n == 0 {
            return;
        }
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0], x[1], x[2]], &[y, saved], |r, w| {
                let (gi, gh, h) = (r[0], r[1], r[2]);
                let [ys, sv] = w else { unreachable!() };
                let (rs, rest) = sv.split_at_mut(n);
                let (zs, ns) = rest.split_at_mut(n);
                (gi.par_chunks(3 * d), gh.par_chunks(3 * d), h.par_chunks(d), ys.par_chunks_mut(d), rs.par_chunks_mut(d), zs.par_chunks_mut(d), ns.par_chunks_mut(d))
                    .into_par_iter()
                    .with_min_len(rows_per_task(rows, d))
                    .for_each(|(gi, gh, h, y, r, z, nn)| {
                        let (gi_r, gi_z, gi_n) = (&gi[..d], &gi[d..2 * d], &gi[2 * d..]);
                        let (gh_r, gh_z, gh_n) = (&gh[..d], &gh[d..2 * d], &gh[2 * d..]);
                        for j in 0..d {
                            let rj = sigmoid(gi_r[j] + gh_r[j]);
                            let zj = sigmoid(gi_z[j] + gh_z[j]);
                            let nj = tanh_fast(gi_n[j] + rj * gh_n[j]);
                            y[j] = (1.0 - zj) * nj + zj * h[j];
                            (r[j], z[j], nn[j]) = (rj, zj, nj);
                        }
                    });
            }),
            Ctx::Gpu(r) => r.dispatch_1d(WGSL, "gru_forward", &GruParams { n: n as u32, d: d as u32 }, &[x[0], x[1], x[2], y, saved], n),
        }
    }
    fn backward(&self, cx: &mut Ctx, x: &[Buf], _: Buf, saved: Buf, gy: Buf, gx: &[Option<Buf>]) {
        let (rows, d) = (self.rows, self.dim);
        let n = rows * d;
        if n == 0 {
            return;
        }
        match cx {
            Ctx::Cpu(s) => {
                let writes: Vec<Buf> = gx.iter().flatten().copied().collect();
                s.run(&[x[1], x[2], saved, gy], &writes, |r, w| {
                    let (gh, h, sv, gys) = (r[0], r[1], r[2], r[3]);
                    let (rs, zs, ns) = (&sv[..n], &sv[n..2 * n], &sv[2 * n..]);
                    let mut w = w.iter_mut();
                    let dgi = gx[0].map(|_| &mut **w.next().unwrap());
                    let dgh = gx[1].map(|_| &mut **w.next().unwrap());
                    let dh = gx[2].map(|_| &mut **w.next().unwrap());
                    (
                        gh.par_chunks(3 * d),
                        h.par_chunks(d),
                        rs.par_chunks(d),
                        zs.par_chunks(d),
                        ns.par_chunks(d),
                        gys.par_chunks(d),
                        opt_rows(dgi, 3 * d, rows),
                        opt_rows(dgh, 3 * d, rows),
                        opt_rows(dh, d, rows),
                    )
                        .into_par_iter()
                        .with_min_len(rows_per_task(rows, d))
                        .for_each(|(gh, h, r, z, nn, g, dgi, dgh, dh)| {
                            let gh_n = &gh[2 * d..];
                            // pre-activation gradients of the row, gate by gate
                            let da_r = |j: usize| {
                                let rj = r[j];
                                g[j] * (1.0 - z[j]) * (1.0 - nn[j] * nn[j]) * gh_n[j] * rj * (1.0 - rj)
                            };
                            let da_z = |j: usize| g[j] * (h[j] - nn[j]) * z[j] * (1.0 - z[j]);
                            let da_n = |j: usize| g[j] * (1.0 - z[j]) * (1.0 - nn[j] * nn[j]);
                            for (k, dst) in [dgi, dgh].into_iter().enumerate() {
                                let Some(dst) = dst else { continue };
                                let (dr, rest) = dst.split_at_mut(d);
                                let (dz, dn) = rest.split_at_mut(d);
                                for j in 0..d {
                                    dr[j] += da_r(j);
                                    dz[j] += da_z(j);
                                    // gh_n enters as r * gh_n
                                    dn[j] += if k == 0 { da_n(j) } else { da_n(j) * r[j] };
                                }
                            }
                            if let Some(dh) = dh {
                                for j in 0..d {
                                    dh[j] += g[j] * z[j];
                                }
                            }
                        });
                })
            }
            Ctx::Gpu(r) => {
                let p = GruParams { n: n as u32, d: d as u32 };
                match (gx[0], gx[1], gx[2]) {
                    // the usual training case: one fused pass
                    (Some(dgi), Some(dgh), Some(dh)) => {
                        r.dispatch_1d(WGSL, "gru_backward_all", &p, &[x[1], x[2], saved, gy, dgi, dgh, dh], n)
                    }
                    (dgi, dgh, dh) => {
                        if let Some(dgi) = dgi {
                            r.dispatch_1d(WGSL, "gru_backward_gi", &p, &[x[1], x[2], saved, gy, dgi], n);
                        }
                        if let Some(dgh) = dgh {
                            r.dispatch_1d(WGSL, "gru_backward_gh", &p, &[x[1], x[2], saved, gy, dgh], n);
                        }
                        if let Some(dh) = dh {
                            r.dispatch_1d(WGSL, "gru_backward_h", &p, &[saved, gy, dh], n);
                        }
                    }
                }
            }
        }
    }
}

impl Graph {
    /// PyTorch's GRUCell, gates (r, z, n): h' = (1 - z) n + z h with
    /// r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r gh_n), where
    /// gi = x w_ih^T + b_ih and gh = h w_hh^T + b_hh are two `linear`s (GEMMs) and the rest
    /// is [`Graph::gru_gates`]. x [..., In], h [..., D], w_ih [3D, In], w_hh [3D, D].
    pub fn gru_cell(&mut self, x: Var, h: Var, w_ih: Var, w_hh: Var, b_ih: Var, b_hh: Var) -> Var {
        let gi = self.linear(x, w_ih, Some(b_ih), false);
        let gh = self.linear(h, w_hh, Some(b_hh), false);
        self.gru_gates(gi, gh, h)
    }

    /// Fused GRU cell (PyTorch GRUCell, gates r, z, n) from the two projections
    /// gi = x W_ih^T + b_ih and gh = h W_hh^T + b_hh, both [..., 3D], and the state h [..., D].
    /// Returns h' [..., D] (the shape of h).
    pub fn gru_gates(&mut self, gi: Var, gh: Var, h: Var) -> Var {
        let (gi_s, gh_s, h_s) = (self.shape(gi).to_vec(), self.shape(gh).to_vec(), self.shape(h).to_vec());
        ensure!(self, !h_s.is_empty(), "gru_gates: h must have at least one dimension, got a scalar");
        ensure!(self, gi_s == gh_s, "gru_gates: gi {gi_s:?} and gh {gh_s:?} must have the same shape");
        let d = *h_s.last().unwrap();
        ensure!(self, gi_s.last().copied() == Some(3 * d), "gru_gates: last dim of gi/gh {gi_s:?} must be 3 * D where h is {h_s:?} (D = {d})");
        let rows: usize = h_s[..h_s.len() - 1].iter().product();
        let gi_rows: usize = gi_s[..gi_s.len() - 1].iter().product();
        ensure!(self, gi_rows == rows, "gru_gates: gi/gh {gi_s:?} and h {h_s:?} have different row counts");
        ensure!(self, 3 * self.len(h) < u32::MAX as usize, "gru_gates: tensors too large for 32-bit GPU indexing");
        self.push(GruGates { rows, dim: d }, &[gi, gh, h], &h_s)
    }
}

/// Bench case: the fused GRU gates of `rows` states of `d` dims.
pub fn bench_case(rows: usize, d: usize) -> Case {
    Case::new("gru_gates", format!("gi,gh[{rows},{}] h[{rows},{d}]", 3 * d), Bound::Memory, move |g, _| {
        let gi = g.input_with_grad("gi", &[rows, 3 * d]);
        let gh = g.input_with_grad("gh", &[rows, 3 * d]);
        let h = g.input_with_grad("h", &[rows, d]);
        g.gru_gates(gi, gh, h)
    })
}
