//! Softmax along any axis: the tensor is viewed as `[outer, len, inner]` and every
//! (outer, inner) line of `len` elements is normalized. WGSL: `shaders/softmax.wgsl`.
//!
//! Derivative along a line: dx_i = y_i (gy_i - sum_j gy_j y_j).

use crate::backend::{shader, Buf, Ctx, Shader};
use crate::graph::{ensure, Graph, Op, Var};
use crate::bench::{Bound, Case};
use crate::par::for_rows;

const WGSL: Shader = shader!("softmax");

crate::kernel_params! {
    /// The tensor as [outer, len, inner]; lines of `len` are normalized.
    pub struct SoftmaxParams in "softmax" { outer: u32, len: u32, inner: u32 }
}

/// Lines at least this long with `inner == 1` get a workgroup each on the GPU; shorter
/// (or strided) lines get a thread each.
const WG_MIN_LEN: usize = 64;

/// y = exp(x - max) / sum(exp(x - max)) along the axis.
#[derive(Debug)]
pub struct Softmax {
    pub outer: usize,
    pub len: usize,
    pub inner: usize,
}

impl Softmax {
    fn params(&self) -> SoftmaxParams {
        SoftmaxParams { outer: self.outer as u32, len: self.len as u32, inner: self.inner as u32 }
    }
    fn lines(&self) -> usize {
        self.outer * self.inner
    }
    fn use_wg(&self) -> bool {
        self.inner == 1 && self.len >= WG_MIN_LEN
    }
    fn dispatch(&self, r: &mut crate::backend::Recorder, line: &'static str, wg: &'static str, bufs: &[Buf]) {
        if self.use_wg() {
            let groups = r.split_groups(self.lines());
            r.dispatch(WGSL, wg, &self.params(), bufs, groups);
        } else {
            r.dispatch_1d(WGSL, line, &self.params(), bufs, self.lines());
        }
    }
}

/// Softmax of one contiguous line (f64 sum: the CPU backend is the reference).
fn softmax_line(x: &[f32], y: &mut [f32]) {
    let m = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f64;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (v - m).exp();
        sum += *o as f64;
    }
    let inv = (1.0 / sum) as f32;
    y.iter_mut().for_each(|o| *o *= inv);
}

impl Op for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, _: Buf) {
        let (len, inner) = (self.len, self.inner);
        if y.len == 0 {
            return;
        }
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0]], &[y], |r, w| {
                let x = r[0];
                if inner == 1 {
                    for_rows(w[0], len, |row, yr| softmax_line(&x[row * len..(row + 1) * len], yr));
                    return;
                }
                // strided lines: sweep a whole [len, inner] block row by row so every
                // access is contiguous, keeping per-column max and sum
                let block = len * inner;
                for_rows(w[0], block, |o, yb| {
                    let xb = &x[o * block..(o + 1) * block];
                    let mut m = xb[..inner].to_vec();
                    for xr in xb.chunks(inner).skip(1) {
                        m.iter_mut().zip(xr).for_each(|(m, &v)| *m = m.max(v));
                    }
                    let mut sum = vec![0f64; inner];
                    for (yr, xr) in yb.chunks_mut(inner).zip(xb.chunks(inner)) {
                        for (((o, &v), &m), s) in yr.iter_mut().zip(xr).zip(&m).zip(sum.iter_mut()) {
                            *o = (v - m).exp();
                            *s += *o as f64;
                        }
                    }
                    let inv: Vec<f32> = sum.iter().map(|&s| (1.0 / s) as f32).collect();
                    for yr in yb.chunks_mut(inner) {
                        yr.iter_mut().zip(&inv).for_each(|(o, &k)| *o *= k);
                    }
                })
            }),
            Ctx::Gpu(r) => self.dispatch(r, "softmax_forward_line", "softmax_forward_wg", &[x[0], y]),
        }
    }
    fn backward(&self, cx: &mut Ctx, _: &[Buf], y: Buf, _: Buf, gy: Buf, gx: &[Option<Buf>]) {
        let Some(gx) = gx[0] else { return };
        let (len, inner) = (self.len, self.inner);
        if gx.len == 0 {
            return;
        }
        // gx += y * (gy - sum_axis(gy * y))
        match cx {
            Ctx::Cpu(s) => s.run(&[y, gy], &[gx], |r, w| {
                let (y, gy) = (r[0], r[1]);
                if inner == 1 {
                    for_rows(w[0], len, |row, gr| {
                        let (yr, gyr) = (&y[row * len..(row + 1) * len], &gy[row * len..(row + 1) * len]);
                        let dot = yr.iter().zip(gyr).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32;
                        for ((o, &yv), &g) in gr.iter_mut().zip(yr).zip(gyr) {
                            *o += yv * (g - dot);
                        }
                    });
                    return;
                }
                let block = len * inner;
                for_rows(w[0], block, |o, gb| {
                    let (yb, gyb) = (&y[o * block..(o + 1) * block], &gy[o * block..(o + 1) * block]);
                    let mut dot = vec![0f64; inner];
                    for (yr, gr) in yb.chunks(inner).zip(gyb.chunks(inner)) {
                        for ((d, &a), &b) in dot.iter_mut().zip(yr).zip(gr) {
                            *d += a as f64 * b as f64;
                        }
                    }
                    let dot: Vec<f32> = dot.iter().map(|&d| d as f32).collect();
                    for ((out, yr), gr) in gb.chunks_mut(inner).zip(yb.chunks(inner)).zip(gyb.chunks(inner)) {
                        for (((o, &yv), &g), &d) in out.iter_mut().zip(yr).zip(gr).zip(&dot) {
                            *o += yv * (g - d);
                        }
                    }
                })
            }),
            Ctx::Gpu(r) => self.dispatch(r, "softmax_backward_line", "softmax_backward_wg", &[y, gy, gx]),
        }
    }
}

impl Graph {
    /// Softmax along `axis` (numerically stable: the line's max is subtracted first).
    pub fn softmax(&mut self, x: Var, axis: usize) -> Var {
        let shape = self.shape(x).to_vec();
        ensure!(self, axis < shape.len(), "softmax: axis {axis} out of range for shape {shape:?}");
        let outer = shape[..axis].iter().product();
        let inner = shape[axis + 1..].iter().product();
        self.push(Softmax { outer, len: shape[axis], inner }, &[x], &shape)
    }
}

/// Bench case: softmax of x along `axis`.
pub fn bench_case(shape: [usize; 3], axis: usize) -> Case {
    Case::new("softmax", format!("{shape:?} axis {axis}").replace(", ", ","), Bound::Memory, move |g, _| {
        let x = g.input_with_grad("logits", &shape);
        g.softmax(x, axis)
    })
}
