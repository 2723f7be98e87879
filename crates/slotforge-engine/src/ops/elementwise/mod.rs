//! Elementwise ops: unary maps (`relu`, `sigmoid`, `tanh`, `exp`, `square`, `scale`),
//! NumPy-broadcasting `add` / `sub` / `mul`, and the layout ops `reshape`, `slice_last`,
//! `concat_last`. WGSL: `shaders/elementwise.wgsl`.
//!
//! Broadcasting is planned once at build time ([`Bcast`]): size-1 output dims are dropped
//! and adjacent dims with the same broadcast pattern are merged, so e.g.
//! `[B,K,1,H] + [1,1,N,H]` runs as a rank-3 problem and `[B,K,D] * [1,1,D]` as rank 2.
//! The backward of a broadcast operand reduces the gradient over its broadcast dims.
//!
//! Derivatives: relu' = (x > 0 ? 1 : 0), sigmoid' = y (1 - y), tanh' = 1 - y^2, exp' = y,
//! square' = 2x, scale' = c; d(a + b) = (g, g), d(a - b) = (g, -g), d(a b) = (g b, g a),
//! each summed over the dims the operand broadcasts along. Layout ops move the gradient
//! back to where the value came from.

use rayon::prelude::*;

use crate::par::{for_rows, CHUNK, PAR_MIN};

use crate::backend::{shader, Buf, Ctx, Recorder, Shader};
use crate::graph::{ensure, Graph, Op, Var};
use crate::bench::{Bound, Case};

const WGSL: Shader = shader!("elementwise");

crate::kernel_params! {
    pub struct UnaryParams in "elementwise" { n: u32, kind: u32, c: f32 }
}
crate::kernel_params! {
    /// dst += c * src
    pub struct AccScaledParams in "elementwise" { n: u32, c: f32 }
}
crate::kernel_params! {
    /// The collapsed broadcast plan of [`Bcast`]: dims and both operands' strides.
    pub struct BinaryParams in "elementwise" { n: u32, rank: u32, kind: u32, _pad: u32, dims: Dims8, sa: Dims8, sb: Dims8 }
}
crate::kernel_params! {
    /// The gradient of a broadcast operand: `n` kept elements, each a sum over `m` positions
    /// of the reduced dims; sizes and strides (in the output and in the other operand).
    pub struct BinaryGradParams in "elementwise" {
        n: u32,
        m: u32,
        nk: u32,
        nr: u32,
        mul: u32,
        sign: f32,
        _p0: u32,
        _p1: u32,
        k_size: Dims8,
        k_out: Dims8,
        k_oth: Dims8,
        r_size: Dims8,
        r_out: Dims8,
        r_oth: Dims8,
    }
}
crate::kernel_params! {
    pub struct CopyColsParams in "elementwise" { rows: u32, cols: u32, src_ld: u32, src_off: u32, dst_ld: u32, dst_off: u32, accumulate: u32 }
}
crate::kernel_params! {
    pub struct ConcatParams in "elementwise" { n: u32, da: u32, db: u32 }
}

/// Collapsed broadcast rank the WGSL params can describe (two vec4<u32> per field).
const MAX_RANK: usize = 8;

/// dst += c * src on either device.
fn acc_scaled(cx: &mut Ctx, src: Buf, dst: Buf, c: f32) {
    match cx {
        Ctx::Cpu(s) => s.run(&[src], &[dst], |r, w| {
            let src = r[0];
            for_rows(w[0], CHUNK, |ri, d| {
                let s = &src[ri * CHUNK..ri * CHUNK + d.len()];
                if c == 1.0 {
                    d.iter_mut().zip(s).for_each(|(o, v)| *o += v);
                } else {
                    d.iter_mut().zip(s).for_each(|(o, v)| *o += c * v);
                }
            })
        }),
        Ctx::Gpu(r) => acc_scaled_gpu(r, src, dst, c),
    }
}

fn acc_scaled_gpu(r: &mut Recorder, src: Buf, dst: Buf, c: f32) {
    r.dispatch_1d(WGSL, "acc_scaled", &AccScaledParams { n: dst.len as u32, c }, &[src, dst], dst.len);
}

// ---------------------------------------------------------------- unary

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryKind {
    Relu = 0,
    Sigmoid = 1,
    Tanh = 2,
    Exp = 3,
    Square = 4,
    Scale = 5,
}

/// y = f(x) elementwise; `c` is the factor of `Scale`.
#[derive(Debug)]
pub struct Unary {
    pub kind: UnaryKind,
    pub c: f32,
}

#[inline]
fn sigmoid_f(x: f32) -> f32 {
    // never exp of a large positive number: no overflow to inf/inf
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn map_rows(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    for_rows(y, CHUNK, |ri, ys| {
        let xs = &x[ri * CHUNK..ri * CHUNK + ys.len()];
        ys.iter_mut().zip(xs).for_each(|(o, &v)| *o = f(v));
    });
}

/// gx += gy * d(v) where v is x or y, whichever the derivative is cheapest in.
fn acc_deriv_rows(v: &[f32], gy: &[f32], gx: &mut [f32], d: impl Fn(f32) -> f32 + Sync) {
    for_rows(gx, CHUNK, |ri, gs| {
        let lo = ri * CHUNK;
        let vs = &v[lo..lo + gs.len()];
        let gys = &gy[lo..lo + gs.len()];
        for ((o, &v), &g) in gs.iter_mut().zip(vs).zip(gys) {
            *o += g * d(v);
        }
    });
}

impl Op for Unary {
    fn name(&self) -> &'static str {
        match self.kind {
            UnaryKind::Relu => "relu",
            UnaryKind::Sigmoid => "sigmoid",
            UnaryKind::Tanh => "tanh",
            UnaryKind::Exp => "exp",
            UnaryKind::Square => "square",
            UnaryKind::Scale => "scale",
        }
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, _: Buf) {
        let n = y.len;
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0]], &[y], |r, w| {
                let (x, y) = (r[0], &mut *w[0]);
                let c = self.c;
                // the match sits outside the loops so each loop is a tight, vectorizable map
                match self.kind {
                    UnaryKind::Relu => map_rows(x, y, |v| v.max(0.0)),
                    UnaryKind::Sigmoid => map_rows(x, y, sigmoid_f),
                    UnaryKind::Tanh => map_rows(x, y, f32::tanh),
                    UnaryKind::Exp => map_rows(x, y, f32::exp),
                    UnaryKind::Square => map_rows(x, y, |v| v * v),
                    UnaryKind::Scale => map_rows(x, y, |v| c * v),
                }
            }),
            Ctx::Gpu(r) => {
                r.dispatch_1d(WGSL, "unary_forward", &UnaryParams { n: n as u32, kind: self.kind as u32, c: self.c }, &[x[0], y], n)
            }
        }
    }
    fn backward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, _: Buf, gy: Buf, gx: &[Option<Buf>]) {
        let Some(gx) = gx[0] else { return };
        let n = gx.len;
        if self.kind == UnaryKind::Scale {
            return acc_scaled(cx, gy, gx, self.c);
        }
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0], y, gy], &[gx], |r, w| {
                let (x, y, gy, gx) = (r[0], r[1], r[2], &mut *w[0]);
                match self.kind {
                    UnaryKind::Relu => acc_deriv_rows(x, gy, gx, |v| if v > 0.0 { 1.0 } else { 0.0 }),
                    UnaryKind::Sigmoid => acc_deriv_rows(y, gy, gx, |s| s * (1.0 - s)),
                    UnaryKind::Tanh => acc_deriv_rows(y, gy, gx, |t| 1.0 - t * t),
                    UnaryKind::Exp => acc_deriv_rows(y, gy, gx, |e| e),
                    UnaryKind::Square => acc_deriv_rows(x, gy, gx, |v| 2.0 * v),
                    UnaryKind::Scale => unreachable!(),
                }
            }),
            Ctx::Gpu(r) => r.dispatch_1d(
                WGSL,
                "unary_backward",
                &UnaryParams { n: n as u32, kind: self.kind as u32, c: self.c },
                &[x[0], y, gy, gx],
                n,
            ),
        }
    }
}

// ---------------------------------------------------------------- broadcasting binary ops

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add = 0,
    Sub = 1,
    Mul = 2,
}

/// A broadcast plan: the output viewed as collapsed row-major `dims`, and for each
/// operand its element stride along every dim (0 where it broadcasts).
#[derive(Clone, Debug)]
pub struct Bcast {
    pub n: usize,
    pub dims: Vec<usize>,
    pub stride: [Vec<usize>; 2],
    /// Row-major strides of the output over `dims`.
    pub out_stride: Vec<usize>,
}

impl Bcast {
    /// NumPy rules: align trailing dims; a dim of 1 (or a missing one) broadcasts.
    /// Returns the output shape and the plan, or why the shapes do not broadcast.
    pub fn new(what: &str, a: &[usize], b: &[usize]) -> Result<(Vec<usize>, Bcast), String> {
        let rank = a.len().max(b.len());
        let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect() };
        let (pa, pb) = (pad(a), pad(b));
        if pa.iter().zip(&pb).any(|(&x, &y)| x != y && x != 1 && y != 1) {
            return Err(format!("{what}: shapes {a:?} and {b:?} do not broadcast"));
        }
        let out: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| if x == 1 { y } else { x }).collect();
        let n = out.iter().product();
        // merge runs of dims with the same (a kept, b kept) pattern; size-1 dims vanish
        let mut dims: Vec<usize> = Vec::new();
        let mut pats: Vec<(bool, bool)> = Vec::new();
        for k in 0..rank {
            if out[k] == 1 {
                continue;
            }
            let pat = (pa[k] == out[k], pb[k] == out[k]);
            if pats.last() == Some(&pat) {
                *dims.last_mut().unwrap() *= out[k];
            } else {
                dims.push(out[k]);
                pats.push(pat);
            }
        }
        if dims.is_empty() {
            dims.push(1);
            pats.push((true, true));
        }
        let strides = |keep: &dyn Fn(&(bool, bool)) -> bool| -> Vec<usize> {
            let mut s = vec![0; dims.len()];
            let mut acc = 1;
            for k in (0..dims.len()).rev() {
                if keep(&pats[k]) {
                    s[k] = acc;
                    acc *= dims[k];
                }
            }
            s
        };
        let sa = strides(&|p| p.0);
        let sb = strides(&|p| p.1);
        let so = strides(&|_| true);
        Ok((out, Bcast { n, dims, stride: [sa, sb], out_stride: so }))
    }

    fn inner(&self) -> usize {
        *self.dims.last().unwrap()
    }

    /// Element offset, under strides `s`, of the first element of output row `row`
    /// (a row = the last collapsed dim).
    #[inline]
    fn row_base(&self, row: usize, s: &[usize]) -> usize {
        let mut rem = row;
        let mut off = 0;
        for k in (0..self.dims.len() - 1).rev() {
            let d = self.dims[k];
            off += (rem % d) * s[k];
            rem /= d;
        }
        off
    }

    /// Operand `i` covers every output element (no reduction in its gradient).
    fn full(&self, i: usize) -> bool {
        self.stride[i].iter().all(|&s| s != 0)
    }
}

/// out[o] = f(out[o], xs[ix(o)], zs[iz(o)]) over the output of `plan`, where `sx` / `sz`
/// are the strides of the two sources (each either an operand's or the output's own).
fn zip_rows(plan: &Bcast, sx: &[usize], xs: &[f32], sz: &[usize], zs: &[f32], out: &mut [f32], f: impl Fn(&mut f32, f32, f32) + Sync) {
    let inner = plan.inner();
    let (ix, iz) = (sx[sx.len() - 1], sz[sz.len() - 1]);
    for_rows(out, inner, |row, o| {
        let xo = plan.row_base(row, sx);
        let zo = plan.row_base(row, sz);
        // inner strides are 0 or 1: specialize so the contiguous cases vectorize
        match (ix, iz) {
            (0, 0) => o.iter_mut().for_each(|v| f(v, xs[xo], zs[zo])),
            (0, _) => {
                let x = xs[xo];
                o.iter_mut().zip(&zs[zo..zo + inner]).for_each(|(v, &z)| f(v, x, z));
            }
            (_, 0) => {
                let z = zs[zo];
                o.iter_mut().zip(&xs[xo..xo + inner]).for_each(|(v, &x)| f(v, x, z));
            }
            _ => o.iter_mut().zip(&xs[xo..xo + inner]).zip(&zs[zo..zo + inner]).for_each(|((v, &x), &z)| f(v, x, z)),
        }
    });
}

/// acc[ix(o)] += gy[o] * (other[iz(o)] or 1) over output rows `rows`, in f64.
fn reduce_rows(plan: &Bcast, xi: usize, gy: &[f32], other: Option<&[f32]>, rows: std::ops::Range<usize>, acc: &mut [f64]) {
    let inner = plan.inner();
    let (sx, sz) = (&plan.stride[xi], &plan.stride[1 - xi]);
    let (ix, iz) = (sx[sx.len() - 1], sz[sz.len() - 1]);
    for row in rows {
        let g = &gy[row * inner..(row + 1) * inner];
        let xo = plan.row_base(row, sx);
        match (other, ix) {
            (None, 0) => acc[xo] += g.iter().map(|&v| v as f64).sum::<f64>(),
            (None, _) => acc[xo..xo + inner].iter_mut().zip(g).for_each(|(a, &v)| *a += v as f64),
            (Some(z), _) => {
                let zo = plan.row_base(row, sz);
                let zat = |j: usize| z[zo + j * iz] as f64;
                if ix == 0 {
                    acc[xo] += g.iter().enumerate().map(|(j, &v)| v as f64 * zat(j)).sum::<f64>();
                } else {
                    acc[xo..xo + inner].iter_mut().zip(g).enumerate().for_each(|(j, (a, &v))| *a += v as f64 * zat(j));
                }
            }
        }
    }
}

/// A WGSL `array<vec4<u32>, 2>` field: one word per collapsed dim.
type Dims8 = [[u32; 4]; 2];

fn vec8(v: impl IntoIterator<Item = usize>) -> Dims8 {
    let mut w = [[0u32; 4]; 2];
    for (k, x) in v.into_iter().enumerate() {
        w[k / 4][k % 4] = x as u32;
    }
    w
}

/// y = a (+|-|*) b with NumPy broadcasting.
#[derive(Debug)]
pub struct Binary {
    pub kind: BinaryKind,
    pub plan: Bcast,
}

impl Binary {
    /// Gradient of operand `xi` (0 = a, 1 = b) on the GPU.
    fn backward_gpu(&self, r: &mut Recorder, x: &[Buf], gy: Buf, g: Buf, xi: usize) {
        let p = &self.plan;
        let sign = if self.kind == BinaryKind::Sub && xi == 1 { -1.0 } else { 1.0 };
        let mul = self.kind == BinaryKind::Mul;
        if p.full(xi) && !mul {
            return acc_scaled_gpu(r, gy, g, sign);
        }
        let (sx, sz) = (&p.stride[xi], &p.stride[1 - xi]);
        // kept dims index the gradient; reduced dims are summed over
        let kept: Vec<usize> = (0..p.dims.len()).filter(|&k| sx[k] != 0).collect();
        let red: Vec<usize> = (0..p.dims.len()).filter(|&k| sx[k] == 0).collect();
        let n: usize = kept.iter().map(|&k| p.dims[k]).product();
        let m: usize = red.iter().map(|&k| p.dims[k]).product();
        let size = |dims: &[usize]| vec8(dims.iter().map(|&k| p.dims[k]));
        let out = |dims: &[usize]| vec8(dims.iter().map(|&k| p.out_stride[k]));
        let oth = |dims: &[usize]| vec8(dims.iter().map(|&k| sz[k]));
        let w = BinaryGradParams {
            n: n as u32,
            m: m as u32,
            nk: kept.len() as u32,
            nr: red.len() as u32,
            mul: mul as u32,
            sign,
            k_size: size(&kept),
            k_out: out(&kept),
            k_oth: oth(&kept),
            r_size: size(&red),
            r_out: out(&red),
            r_oth: oth(&red),
            ..Default::default()
        };
        let other = x[1 - xi];
        // Few gradient elements with long reductions (a scalar weight, a bias over a big
        // batch): a workgroup per element with a tree sum. Otherwise a thread per element.
        if m >= 256 && n < 16384 {
            let groups = r.gpu.split_groups(n as u32);
            r.dispatch(WGSL, "binary_grad_wg", &w, &[gy, other, g], groups);
        } else {
            r.dispatch_1d(WGSL, "binary_grad_thread", &w, &[gy, other, g], n);
        }
    }
}

impl Op for Binary {
    fn name(&self) -> &'static str {
        match self.kind {
            BinaryKind::Add => "add",
            BinaryKind::Sub => "sub",
            BinaryKind::Mul => "mul",
        }
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, _: Buf) {
        let p = &self.plan;
        if p.n == 0 {
            return;
        }
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0], x[1]], &[y], |r, w| {
                let (sa, sb) = (&p.stride[0], &p.stride[1]);
                match self.kind {
                    BinaryKind::Add => zip_rows(p, sa, r[0], sb, r[1], w[0], |o, a, b| *o = a + b),
                    BinaryKind::Sub => zip_rows(p, sa, r[0], sb, r[1], w[0], |o, a, b| *o = a - b),
                    BinaryKind::Mul => zip_rows(p, sa, r[0], sb, r[1], w[0], |o, a, b| *o = a * b),
                }
            }),
            Ctx::Gpu(r) => {
                let w = BinaryParams {
                    n: p.n as u32,
                    rank: p.dims.len() as u32,
                    kind: self.kind as u32,
                    _pad: 0,
                    dims: vec8(p.dims.iter().copied()),
                    sa: vec8(p.stride[0].iter().copied()),
                    sb: vec8(p.stride[1].iter().copied()),
                };
                r.dispatch_1d(WGSL, "binary_forward", &w, &[x[0], x[1], y], p.n);
            }
        }
    }
    fn backward(&self, cx: &mut Ctx, x: &[Buf], _: Buf, _: Buf, gy: Buf, gx: &[Option<Buf>]) {
        let p = &self.plan;
        if p.n == 0 {
            return;
        }
        for xi in 0..2 {
            let Some(g) = gx[xi] else { continue };
            let sign = if self.kind == BinaryKind::Sub && xi == 1 { -1.0f32 } else { 1.0 };
            let mul = self.kind == BinaryKind::Mul;
            match cx {
                Ctx::Gpu(r) => self.backward_gpu(r, x, gy, g, xi),
                Ctx::Cpu(_) if p.full(xi) && !mul => acc_scaled(cx, gy, g, sign),
                Ctx::Cpu(s) if p.full(xi) => s.run(&[gy, x[1 - xi]], &[g], |r, w| {
                    // g[o] += gy[o] * other[iz(o)]: the gradient is laid out like the output
                    zip_rows(p, &p.out_stride, r[0], &p.stride[1 - xi], r[1], w[0], |o, g, z| *o += g * z)
                }),
                Ctx::Cpu(s) => s.run(&[gy, x[1 - xi]], &[g], |r, w| {
                    let other = if mul { Some(r[1]) } else { None };
                    let rows = p.n / p.inner();
                    let len = g.len;
                    let acc = if p.n >= PAR_MIN {
                        // one private f64 accumulator per task (the gradient is the small
                        // operand, at most half the output), summed at the end
                        let tasks = rayon::current_num_threads().clamp(1, rows);
                        let per = rows.div_ceil(tasks);
                        (0..tasks)
                            .into_par_iter()
                            .map(|t| {
                                let mut acc = vec![0f64; len];
                                reduce_rows(p, xi, r[0], other, t * per..((t + 1) * per).min(rows), &mut acc);
                                acc
                            })
                            .reduce_with(|mut a, b| {
                                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                                a
                            })
                            .unwrap()
                    } else {
                        let mut acc = vec![0f64; len];
                        reduce_rows(p, xi, r[0], other, 0..rows, &mut acc);
                        acc
                    };
                    w[0].iter_mut().zip(&acc).for_each(|(o, &a)| *o += sign * a as f32);
                }),
            }
        }
    }
}

// ---------------------------------------------------------------- layout ops

/// Same data, another shape: forward copies, backward adds.
#[derive(Debug)]
pub struct Reshape;

impl Op for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, _: Buf) {
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0]], &[y], |r, w| w[0].copy_from_slice(r[0])),
            Ctx::Gpu(r) => r.copy(x[0], y),
        }
    }
    fn backward(&self, cx: &mut Ctx, _: &[Buf], _: Buf, _: Buf, gy: Buf, gx: &[Option<Buf>]) {
        if let Some(g) = gx[0] {
            acc_scaled(cx, gy, g, 1.0);
        }
    }
}

/// dst[r, dst_off + j] (= | +=) src[r, src_off + j] for every row r and j < cols, rows
/// of `src_ld` / `dst_ld` floats.
#[allow(clippy::too_many_arguments)]
fn copy_cols(cx: &mut Ctx, src: Buf, src_ld: usize, src_off: usize, dst: Buf, dst_ld: usize, dst_off: usize, cols: usize, accumulate: bool) {
    let rows = if dst_ld == 0 { 0 } else { dst.len / dst_ld };
    if rows == 0 || cols == 0 {
        return;
    }
    match cx {
        Ctx::Cpu(s) => s.run(&[src], &[dst], |r, w| {
            let src = r[0];
            for_rows(w[0], dst_ld, |row, d| {
                let d = &mut d[dst_off..dst_off + cols];
                let s = &src[row * src_ld + src_off..][..cols];
                if accumulate {
                    d.iter_mut().zip(s).for_each(|(o, v)| *o += v);
                } else {
                    d.copy_from_slice(s);
                }
            })
        }),
        Ctx::Gpu(r) => {
            let w = CopyColsParams {
                rows: rows as u32,
                cols: cols as u32,
                src_ld: src_ld as u32,
                src_off: src_off as u32,
                dst_ld: dst_ld as u32,
                dst_off: dst_off as u32,
                accumulate: accumulate as u32,
            };
            r.dispatch_1d(WGSL, "copy_cols", &w, &[src, dst], rows * cols);
        }
    }
}

/// y = x[..., start .. start + len].
#[derive(Debug)]
pub struct SliceLast {
    pub start: usize,
    pub len: usize,
    /// Last dim of x.
    pub dim: usize,
}

impl Op for SliceLast {
    fn name(&self) -> &'static str {
        "slice_last"
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, _: Buf) {
        copy_cols(cx, x[0], self.dim, self.start, y, self.len, 0, self.len, false);
    }
    fn backward(&self, cx: &mut Ctx, _: &[Buf], _: Buf, _: Buf, gy: Buf, gx: &[Option<Buf>]) {
        if let Some(g) = gx[0] {
            copy_cols(cx, gy, self.len, 0, g, self.dim, self.start, self.len, true);
        }
    }
}

/// y = [a | b] along the last dim.
#[derive(Debug)]
pub struct ConcatLast {
    pub da: usize,
    pub db: usize,
}

impl Op for ConcatLast {
    fn name(&self) -> &'static str {
        "concat_last"
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, _: Buf) {
        let (da, db) = (self.da, self.db);
        let d = da + db;
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0], x[1]], &[y], |r, w| {
                let (a, b) = (r[0], r[1]);
                for_rows(w[0], d, |row, o| {
                    o[..da].copy_from_slice(&a[row * da..(row + 1) * da]);
                    o[da..].copy_from_slice(&b[row * db..(row + 1) * db]);
                })
            }),
            Ctx::Gpu(r) => r.dispatch_1d(WGSL, "concat_forward", &ConcatParams { n: y.len as u32, da: da as u32, db: db as u32 }, &[x[0], x[1], y], y.len),
        }
    }
    fn backward(&self, cx: &mut Ctx, _: &[Buf], _: Buf, _: Buf, gy: Buf, gx: &[Option<Buf>]) {
        let d = self.da + self.db;
        if let Some(g) = gx[0] {
            copy_cols(cx, gy, d, 0, g, self.da, 0, self.da, true);
        }
        if let Some(g) = gx[1] {
            copy_cols(cx, gy, d, self.da, g, self.db, 0, self.db, true);
        }
    }
}

// ---------------------------------------------------------------- builders

impl Graph {
    fn elementwise_unary(&mut self, x: Var, kind: UnaryKind, c: f32) -> Var {
        let shape = self.shape(x).to_vec();
        self.push(Unary { kind, c }, &[x], &shape)
    }
    pub fn relu(&mut self, x: Var) -> Var {
        self.elementwise_unary(x, UnaryKind::Relu, 0.0)
    }
    pub fn sigmoid(&mut self, x: Var) -> Var {
        self.elementwise_unary(x, UnaryKind::Sigmoid, 0.0)
    }
    pub fn tanh(&mut self, x: Var) -> Var {
        self.elementwise_unary(x, UnaryKind::Tanh, 0.0)
    }
    pub fn exp(&mut self, x: Var) -> Var {
        self.elementwise_unary(x, UnaryKind::Exp, 0.0)
    }
    /// x * x (use this rather than `mul(x, x)`: an op may not take one variable twice).
    pub fn square(&mut self, x: Var) -> Var {
        self.elementwise_unary(x, UnaryKind::Square, 0.0)
    }
    /// c * x for a constant c.
    pub fn scale(&mut self, x: Var, c: f32) -> Var {
        self.elementwise_unary(x, UnaryKind::Scale, c)
    }

    fn elementwise_binary(&mut self, a: Var, b: Var, kind: BinaryKind) -> Var {
        let what = match kind {
            BinaryKind::Add => "add",
            BinaryKind::Sub => "sub",
            BinaryKind::Mul => "mul",
        };
        let (shape, plan) = match Bcast::new(what, self.shape(a), self.shape(b)) {
            Ok(p) => p,
            Err(msg) => return self.shape_error(msg),
        };
        ensure!(self, plan.dims.len() <= MAX_RANK, "{what}: shapes {:?} and {:?} need {} broadcast dims after merging (at most {MAX_RANK})", self.shape(a), self.shape(b), plan.dims.len());
        self.push(Binary { kind, plan }, &[a, b], &shape)
    }
    /// a + b with NumPy broadcasting.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        self.elementwise_binary(a, b, BinaryKind::Add)
    }
    /// a - b with NumPy broadcasting.
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        self.elementwise_binary(a, b, BinaryKind::Sub)
    }
    /// a * b with NumPy broadcasting.
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        self.elementwise_binary(a, b, BinaryKind::Mul)
    }

    /// The same elements under another shape (same count).
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Var {
        let n: usize = shape.iter().product();
        ensure!(self, n == self.len(x), "reshape: {:?} ({} elements) to {shape:?} ({n} elements)", self.shape(x), self.len(x));
        self.push(Reshape, &[x], shape)
    }

    /// x[..., start .. start + len] along the last dim.
    pub fn slice_last(&mut self, x: Var, start: usize, len: usize) -> Var {
        let mut shape = self.shape(x).to_vec();
        let dim = *shape.last().expect("slice_last: x is a scalar (rank 0)");
        ensure!(self, start + len <= dim, "slice_last: range {start}..{} out of last dim {dim} of {shape:?}", start + len);
        *shape.last_mut().unwrap() = len;
        self.push(SliceLast { start, len, dim }, &[x], &shape)
    }

    /// Concatenate along the last dim; all other dims must match.
    pub fn concat_last(&mut self, a: Var, b: Var) -> Var {
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        ensure!(self, !sa.is_empty() && sa.len() == sb.len() && sa[..sa.len() - 1] == sb[..sb.len() - 1], "concat_last: shapes {sa:?} and {sb:?} differ outside the last dim");
        let (da, db) = (*sa.last().unwrap(), *sb.last().unwrap());
        let mut shape = sa.clone();
        *shape.last_mut().unwrap() = da + db;
        self.push(ConcatLast { da, db }, &[a, b], &shape)
    }
}

/// Bench case: a + b with broadcasting.
pub fn bench_add(a: (&'static str, [usize; 4]), b: (&'static str, [usize; 4])) -> Case {
    Case::new("add", format!("{:?} + {:?}", a.1, b.1).replace(", ", ","), Bound::Memory, move |g, _| {
        let x = g.input_with_grad(a.0, &a.1);
        let y = g.input_with_grad(b.0, &b.1);
        g.add(x, y)
    })
}

/// Bench case: relu of x.
pub fn bench_relu(shape: [usize; 4]) -> Case {
    Case::new("relu", format!("{shape:?}").replace(", ", ","), Bound::Memory, move |g, _| {
        let x = g.input_with_grad("h", &shape);
        g.relu(x)
    })
}
