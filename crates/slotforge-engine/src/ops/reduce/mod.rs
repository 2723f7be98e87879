//! Reductions to a scalar: `sum`, `mean`, and `mse` (the reconstruction loss).
//! WGSL: `shaders/reduce.wgsl`.
//!
//! Derivatives: d sum / dx_i = 1, d mean / dx_i = 1/n, d mse / da_i = 2 (a_i - b_i) / n
//! and d mse / db_i = -2 (a_i - b_i) / n.

use crate::backend::{shader, Buf, Ctx, Shader};
use crate::graph::{ensure, Graph, Op, Var};
use crate::bench::{Bound, Case};

const WGSL: Shader = shader!("reduce");

crate::kernel_params! {
    pub struct ReduceParams in "reduce" { n: u32, scale: f32 }
}

/// y = scale * sum(x); scale = 1 (sum) or 1/n (mean).
#[derive(Debug)]
pub struct Sum {
    pub scale: f32,
}

impl Op for Sum {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, _: Buf) {
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0]], &[y], |r, w| {
                // f64 accumulation: the CPU backend is the reference.
                w[0][0] = (self.scale as f64 * r[0].iter().map(|&v| v as f64).sum::<f64>()) as f32;
            }),
            Ctx::Gpu(r) => r.dispatch(WGSL, "sum_forward", &ReduceParams { n: x[0].len as u32, scale: self.scale }, &[x[0], y], [1, 1, 1]),
        }
    }
    fn backward(&self, cx: &mut Ctx, x: &[Buf], _: Buf, _: Buf, gy: Buf, gx: &[Option<Buf>]) {
        let Some(gx) = gx[0] else { return };
        match cx {
            Ctx::Cpu(s) => s.run(&[gy], &[gx], |r, w| {
                let g = self.scale * r[0][0];
                w[0].iter_mut().for_each(|v| *v += g);
            }),
            Ctx::Gpu(r) => r.dispatch_1d(WGSL, "sum_backward", &ReduceParams { n: x[0].len as u32, scale: self.scale }, &[gy, gx], x[0].len),
        }
    }
}

/// y = mean((a - b)^2) over all elements.
#[derive(Debug)]
pub struct Mse;

impl Op for Mse {
    fn name(&self) -> &'static str {
        "mse"
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, _: Buf) {
        let n = x[0].len;
        let scale = 1.0 / n.max(1) as f32;
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0], x[1]], &[y], |r, w| {
                let ss: f64 = r[0].iter().zip(r[1]).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
                w[0][0] = (ss * scale as f64) as f32;
            }),
            Ctx::Gpu(r) => r.dispatch(WGSL, "mse_forward", &ReduceParams { n: n as u32, scale }, &[x[0], x[1], y], [1, 1, 1]),
        }
    }
    fn backward(&self, cx: &mut Ctx, x: &[Buf], _: Buf, _: Buf, gy: Buf, gx: &[Option<Buf>]) {
        let n = x[0].len;
        for (i, sign) in [(0, 1.0f32), (1, -1.0)] {
            let Some(g) = gx[i] else { continue };
            let scale = sign * 2.0 / n.max(1) as f32;
            match cx {
                Ctx::Cpu(s) => s.run(&[x[0], x[1], gy], &[g], |r, w| {
                    let k = scale * r[2][0];
                    for ((o, a), b) in w[0].iter_mut().zip(r[0]).zip(r[1]) {
                        *o += k * (a - b);
                    }
                }),
                Ctx::Gpu(r) => r.dispatch_1d(WGSL, "mse_backward", &ReduceParams { n: n as u32, scale }, &[x[0], x[1], gy, g], n),
            }
        }
    }
}

impl Graph {
    pub fn sum(&mut self, x: Var) -> Var {
        self.push(Sum { scale: 1.0 }, &[x], &[1])
    }
    pub fn mean(&mut self, x: Var) -> Var {
        let n = self.len(x).max(1);
        self.push(Sum { scale: 1.0 / n as f32 }, &[x], &[1])
    }
    /// Mean squared error between two tensors of the same shape.
    pub fn mse(&mut self, a: Var, b: Var) -> Var {
        ensure!(self, self.shape(a) == self.shape(b), "mse: shapes differ: {:?} vs {:?}", self.shape(a), self.shape(b));
        self.push(Mse, &[a, b], &[1])
    }
}

/// Bench case: mse of x against a target without gradient.
pub fn bench_mse(shape: [usize; 3]) -> Case {
    Case::new("mse", format!("{shape:?} x2").replace(", ", ","), Bound::Memory, move |g, _| {
        let x = g.input_with_grad("recon", &shape);
        let t = g.input("target", &shape);
        g.mse(x, t)
    })
}

/// Bench case: sum of x.
pub fn bench_sum(shape: [usize; 3]) -> Case {
    Case::new("sum", format!("{shape:?}").replace(", ", ","), Bound::Memory, move |g, _| {
        let x = g.input_with_grad("x", &shape);
        g.sum(x)
    })
}
