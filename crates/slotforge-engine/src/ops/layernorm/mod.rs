//! `layer_norm`: PyTorch LayerNorm over the last dimension (biased variance, eps inside
//! the square root), with a learned scale `w` and shift `b`. WGSL: `shaders/layernorm.wgsl`.
//!
//! y = w xhat + b with xhat = (x - mean) rstd, rstd = 1 / sqrt(var + eps). Derivatives per
//! row of C columns, with g = gy w: dx = rstd (g - mean(g) - xhat mean(g xhat)),
//! dw = sum over rows of gy xhat, db = sum over rows of gy.

use rayon::iter::{Either, IndexedParallelIterator, IntoParallelIterator, ParallelIterator};
use rayon::slice::{ParallelSlice, ParallelSliceMut};

use crate::par::rows_per_task;
use crate::backend::{shader, Buf, Ctx, Shader};
use crate::graph::{ensure, Graph, Op, Var};
use crate::bench::{self, Bound, Case};

const WGSL: Shader = shader!("layernorm");

crate::kernel_params! {
    pub struct LayerNormParams in "layernorm" {
        rows: u32,
        cols: u32,
        eps: f32,
        /// row chunks of the dw/db reduction
        chunks: u32,
        rows_per_chunk: u32,
        /// wb_reduce: 0 = dw, 1 = db
        which: u32,
    }
}

/// Columns per workgroup of the dw/db partial-sum kernel (must match `COL_WG`).
const COL_WG: usize = 64;
/// The GPU reduces dw/db over rows in two stages: at most this many row chunks, each
/// of at least `MIN_CHUNK_ROWS` rows, write partial sums that a second pass adds up.
const MAX_CHUNKS: usize = 128;
const MIN_CHUNK_ROWS: usize = 16;

/// y = (x - mean) * rstd * w + b per row of the last dimension.
/// Saved: mean[rows], rstd[rows], then the GPU's dw/db partials [chunks][2][cols].
#[derive(Debug)]
pub struct LayerNorm {
    pub rows: usize,
    pub cols: usize,
    pub eps: f32,
}

impl LayerNorm {
    fn chunks(&self) -> usize {
        self.rows.div_ceil(MIN_CHUNK_ROWS).clamp(1, MAX_CHUNKS)
    }
    fn rows_per_chunk(&self) -> usize {
        self.rows.div_ceil(self.chunks()).max(1)
    }
    /// Shader params: rows, cols, eps, chunks, rows_per_chunk, which (0 = dw, 1 = db).
    fn params(&self, which: u32) -> LayerNormParams {
        LayerNormParams {
            rows: self.rows as u32,
            cols: self.cols as u32,
            eps: self.eps,
            chunks: self.chunks() as u32,
            rows_per_chunk: self.rows_per_chunk() as u32,
            which,
        }
    }
}

/// K sums of f(a[i], b[i], c[i]) over three rows of equal length, each kept in eight f64
/// lanes: accurate for long rows, and the lanes vectorize.
#[inline(always)]
fn lane_sums<const K: usize>(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> [f64; K]) -> [f64; K] {
    let n = a.len();
    let (a8, a_tail) = a.as_chunks::<8>();
    let (b8, b_tail) = b[..n].as_chunks::<8>();
    let (c8, c_tail) = c[..n].as_chunks::<8>();
    let mut acc = [[0f64; 8]; K];
    for ((a, b), c) in a8.iter().zip(b8).zip(c8) {
        for l in 0..8 {
            let v = f(a[l], b[l], c[l]);
            for k in 0..K {
                acc[k][l] += v[k];
            }
        }
    }
    let mut out = [0f64; K];
    for k in 0..K {
        let l = &acc[k];
        out[k] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    }
    for ((a, b), c) in a_tail.iter().zip(b_tail).zip(c_tail) {
        let v = f(*a, *b, *c);
        for k in 0..K {
            out[k] += v[k];
        }
    }
    out
}

/// One row's forward; returns (mean, rstd). xhat in f64: the reference rounds only once.
fn forward_row(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f64;
    let [sum] = lane_sums(x, x, x, |x, _, _| [x as f64]);
    let mean = sum / n;
    let [ss] = lane_sums(x, x, x, |x, _, _| [(x as f64 - mean).powi(2)]);
    let rstd = 1.0 / (ss / n + eps as f64).sqrt();
    for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
        *y = ((x as f64 - mean) * rstd) as f32 * w + b;
    }
    (mean as f32, rstd as f32)
}

/// One row's backward: dx += rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * w,
/// and the row's contribution to dw (acc[..C]) and db (acc[C..]) when `acc` is non-empty.
///
/// The saved mean is rounded to f32, so the recomputed xhat' = (x - mean) * rstd is off
/// by a constant c = mean(xhat') (the exact xhat sums to 0). Left alone, that error
/// reaches dx as ~rstd^2 * |mean rounding| (1e-3 at rstd 100): so dx uses xhat' - c.
fn backward_row(x: &[f32], w: &[f32], gy: &[f32], mean: f32, rstd: f32, dx: Option<&mut [f32]>, acc: &mut [f64]) {
    let n = x.len() as f64;
    if let Some(dx) = dx {
        let [sg, sgx, sx] = lane_sums(x, w, gy, |x, w, gy| {
            let (g, xhat) = (gy * w, (x - mean) * rstd);
            [g as f64, (g * xhat) as f64, xhat as f64]
        });
        let (sg, sgx, sx) = (sg / n, sgx / n, sx / n);
        let (a, c, b) = (sg as f32, sx as f32, (sgx - sg * sx) as f32);
        for (((dx, &x), &w), &gy) in dx.iter_mut().zip(x).zip(w).zip(gy) {
            *dx += rstd * (gy * w - a - ((x - mean) * rstd - c) * b);
        }
    }
    if !acc.is_empty() {
        let (aw, ab) = acc.split_at_mut(x.len());
        for (((aw, ab), &x), &gy) in aw.iter_mut().zip(ab.iter_mut()).zip(x).zip(gy) {
            *aw += (gy * ((x - mean) * rstd)) as f64;
            *ab += gy as f64;
        }
    }
}

impl Op for LayerNorm {
    fn name(&self) -> &'static str {
        "layer_norm"
    }
    fn saved_len(&self) -> usize {
        2 * self.rows + 2 * self.cols * self.chunks()
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, saved: Buf) {
        let (rows, cols, eps) = (self.rows, self.cols, self.eps);
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0], x[1], x[2]], &[y, saved], |r, w| {
                let (xs, ws, bs) = (r[0], r[1], r[2]);
                let [ys, sv] = w else { unreachable!() };
                let (mean, rest) = sv.split_at_mut(rows);
                let rstd = &mut rest[..rows];
                (xs.par_chunks(cols), ys.par_chunks_mut(cols), mean, rstd)
                    .into_par_iter()
                    .with_min_len(rows_per_task(rows, cols))
                    .for_each(|(xr, yr, m, rs)| (*m, *rs) = forward_row(xr, ws, bs, yr, eps));
            }),
            Ctx::Gpu(r) => {
                let groups = r.gpu.split_groups(rows as u32);
                r.dispatch(WGSL, "ln_forward", &self.params(0), &[x[0], x[1], x[2], y, saved], groups);
            }
        }
    }
    fn backward(&self, cx: &mut Ctx, x: &[Buf], _: Buf, saved: Buf, gy: Buf, gx: &[Option<Buf>]) {
        let (rows, cols) = (self.rows, self.cols);
        if rows == 0 {
            return;
        }
        match cx {
            Ctx::Cpu(s) => {
                let writes: Vec<Buf> = gx.iter().flatten().copied().collect();
                s.run(&[x[0], x[1], saved, gy], &writes, |r, w| {
                    let (xs, ws, sv, gys) = (r[0], r[1], r[2], r[3]);
                    let (mean, rstd) = (&sv[..rows], &sv[rows..2 * rows]);
                    let mut w = w.iter_mut();
                    let dx = gx[0].map(|_| &mut **w.next().unwrap());
                    let dw = gx[1].map(|_| &mut **w.next().unwrap());
                    let db = gx[2].map(|_| &mut **w.next().unwrap());
                    let acc_len = if dw.is_some() || db.is_some() { 2 * cols } else { 0 };
                    let dx_rows = match dx {
                        Some(d) => Either::Left(d.par_chunks_mut(cols).map(Some)),
                        None => Either::Right((0..rows).into_par_iter().map(|_| None)),
                    };
                    // dx row by row; dw/db as per-thread partial sums added at the end
                    let acc = (xs.par_chunks(cols), gys.par_chunks(cols), mean, rstd, dx_rows)
                        .into_par_iter()
                        .with_min_len(rows_per_task(rows, cols))
                        .fold(
                            || vec![0f64; acc_len],
                            |mut acc, (xr, gr, &m, &rs, dxr)| {
                                backward_row(xr, ws, gr, m, rs, dxr, &mut acc);
                                acc
                            },
                        )
                        .reduce(
                            || vec![0f64; acc_len],
                            |mut a, b| {
                                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                                a
                            },
                        );
                    if let Some(dw) = dw {
                        dw.iter_mut().zip(&acc[..cols]).for_each(|(d, a)| *d += *a as f32);
                    }
                    if let Some(db) = db {
                        db.iter_mut().zip(&acc[cols..]).for_each(|(d, a)| *d += *a as f32);
                    }
                })
            }
            Ctx::Gpu(r) => {
                if let Some(dx) = gx[0] {
                    let groups = r.gpu.split_groups(rows as u32);
                    r.dispatch(WGSL, "ln_backward_x", &self.params(0), &[x[0], x[1], saved, gy, dx], groups);
                }
                if gx[1].is_some() || gx[2].is_some() {
                    let max = r.gpu.limits.max_compute_workgroups_per_dimension as usize;
                    let col_groups = cols.div_ceil(COL_WG).min(max) as u32;
                    r.dispatch(WGSL, "ln_backward_wb_partial", &self.params(0), &[x[0], gy, saved], [col_groups, self.chunks() as u32, 1]);
                    for (which, g) in [(0u32, gx[1]), (1, gx[2])] {
                        if let Some(g) = g {
                            r.dispatch_1d(WGSL, "ln_backward_wb_reduce", &self.params(which), &[saved, g], cols);
                        }
                    }
                }
            }
        }
    }
}

impl Graph {
    /// LayerNorm over the last dimension C of `x` [..., C] with scale `w` [C] and shift `b` [C]:
    /// y = (x - mean) / sqrt(var + eps) * w + b, variance biased (PyTorch semantics).
    pub fn layer_norm(&mut self, x: Var, w: Var, b: Var, eps: f32) -> Var {
        let shape = self.shape(x).to_vec();
        ensure!(self, !shape.is_empty(), "layer_norm: x must have at least one dimension, got a scalar");
        let cols = *shape.last().unwrap();
        ensure!(self, cols > 0, "layer_norm: last dimension of x {shape:?} is 0");
        ensure!(self, self.shape(w) == &[cols], "layer_norm: w must be [{cols}] for x {shape:?}");
        ensure!(self, self.shape(b) == &[cols], "layer_norm: b must be [{cols}] for x {shape:?}");
        ensure!(self, eps >= 0.0, "layer_norm: eps must be >= 0, got {eps}");
        let rows = self.len(x) / cols;
        ensure!(self, self.len(x) < u32::MAX as usize, "layer_norm: x too large for 32-bit GPU indexing");
        self.push(LayerNorm { rows, cols, eps }, &[x, w, b], &shape)
    }
}

/// Bench case: layer_norm of x [rows, cols] with affine parameters.
pub fn bench_case(rows: usize, cols: usize, x_grad: bool) -> Case {
    let shape = format!("x[{rows},{cols}]{}", if x_grad { "" } else { " (no dx)" });
    Case::new("layer_norm", shape, Bound::Memory, move |g, _| {
        let x = bench::input(g, "x", &[rows, cols], x_grad);
        let (w, b) = (g.param("w", &[cols]), g.param("b", &[cols]));
        g.layer_norm(x, w, b, 1e-5)
    })
}
