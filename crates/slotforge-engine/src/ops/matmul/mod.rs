//! `matmul`: batched matrix products, either operand transposed, the right operand
//! optionally shared across the batch. WGSL: `shaders/matmul.wgsl` (see [`gemm`]).
//!
//! Derivatives, with G = dL/dY and Y = op(A) op(B): dop(A) = G op(B)^T, dop(B) = op(A)^T G
//! (transposed back when the operand is stored transposed; summed over the batch for a
//! shared B).

pub(crate) mod gemm;

use crate::backend::{Buf, Ctx, Recorder};
use crate::graph::{ensure, Graph, Op, Var};
use crate::bench::{Bound, Case};
use gemm::{gpu_gemm, Epilogue, Gemm};
pub use gemm::{sgemm, MatmulParams, SumPartialsParams};

/// Which GPU GEMM kernel an op records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// `Registers` on CPU-emulated adapters (lavapipe: barriers are expensive, measured
    /// 1.1 vs 0.17 GFLOP/s), `SharedTiles` on real GPUs.
    Auto,
    /// 4x4 outputs per thread from global memory, no workgroup memory, 64x64 tile.
    Registers,
    /// 64x64 workgroup tiles staged through workgroup memory, 4x4 outputs per thread.
    SharedTiles,
}

impl GemmKernel {
    fn shared_tiles(self, r: &Recorder) -> bool {
        match self {
            GemmKernel::Auto => r.gpu.info.device_type != wgpu::DeviceType::Cpu,
            GemmKernel::Registers => false,
            GemmKernel::SharedTiles => true,
        }
    }
}

// ---------------------------------------------------------------------------------------
// matmul

/// y[z] = op(a[z]) op(b[z]) (b shared across z when it is 2-D).
#[derive(Debug)]
pub struct MatMul {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    /// b is 2-D and multiplies every batch element of a
    pub shared_b: bool,
    pub kernel: GemmKernel,
}

impl MatMul {
    /// Shared b with a not transposed: the batch folds into M (one big product).
    fn folds(&self) -> bool {
        self.shared_b && !self.trans_a
    }
    fn forward_gemm(&self) -> Gemm {
        let (bt, m, n, k) = (self.batch, self.m, self.n, self.k);
        if self.folds() {
            Gemm::new(1, bt * m, n, k, false, self.trans_b, false, true, false)
        } else {
            Gemm::new(bt, m, n, k, self.trans_a, self.trans_b, false, self.shared_b, false)
        }
    }
    /// dA as a product (lhs, rhs) = (G, B) when a is not transposed, (B, G) when it is.
    fn grad_a_gemm(&self) -> Gemm {
        let (bt, m, n, k) = (self.batch, self.m, self.n, self.k);
        if !self.trans_a {
            // dA [M,K] = G op(B)^T
            let rows = if self.folds() { bt * m } else { m };
            let batch = if self.folds() { 1 } else { bt };
            Gemm::new(batch, rows, k, n, false, !self.trans_b, false, self.shared_b, false)
        } else {
            // dA [K,M] = op(B) G^T
            Gemm::new(bt, k, m, n, self.trans_b, true, self.shared_b, false, false)
        }
    }
    /// dB as a product (lhs, rhs) = (A, G) when b is not transposed, (G, A) when it is.
    fn grad_b_gemm(&self) -> Gemm {
        let (bt, m, n, k) = (self.batch, self.m, self.n, self.k);
        let (batch, inner) = if self.folds() { (1, bt * m) } else { (bt, m) };
        if !self.trans_b {
            // dB [K,N] = op(A)^T G
            Gemm::new(batch, k, n, inner, !self.trans_a, false, false, false, self.shared_b)
        } else {
            // dB [N,K] = G^T op(A)
            Gemm::new(batch, n, k, inner, true, self.trans_a, false, false, self.shared_b)
        }
    }
}

impl Op for MatMul {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn flops(&self) -> u64 {
        2 * (self.batch * self.m * self.n * self.k) as u64
    }
    fn saved_len(&self) -> usize {
        [self.forward_gemm(), self.grad_a_gemm(), self.grad_b_gemm()]
            .iter()
            .map(|g| g.cpu_scratch().max(g.gpu_scratch()))
            .max()
            .unwrap()
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, saved: Buf) {
        let g = self.forward_gemm();
        match cx {
            Ctx::Cpu(s) => s.run(&[x[0], x[1]], &[y, saved], |r, w| {
                let [y, scratch] = w else { unreachable!() };
                g.cpu(r[0], r[1], y, false, scratch);
            }),
            Ctx::Gpu(r) => gpu_gemm(r, self.kernel, &g, x[0], x[1], y, None, Epilogue::default(), saved),
        }
    }
    fn backward(&self, cx: &mut Ctx, x: &[Buf], _: Buf, saved: Buf, gy: Buf, gx: &[Option<Buf>]) {
        let (a, b) = (x[0], x[1]);
        if let Some(ga) = gx[0] {
            let g = self.grad_a_gemm();
            let (lhs, rhs) = if self.trans_a { (b, gy) } else { (gy, b) };
            self.run(cx, &g, lhs, rhs, ga, saved);
        }
        if let Some(gb) = gx[1] {
            let g = self.grad_b_gemm();
            let (lhs, rhs) = if self.trans_b { (gy, a) } else { (a, gy) };
            self.run(cx, &g, lhs, rhs, gb, saved);
        }
    }
}

impl MatMul {
    /// out += lhs rhs
    fn run(&self, cx: &mut Ctx, g: &Gemm, lhs: Buf, rhs: Buf, out: Buf, scratch: Buf) {
        let acc = Epilogue { accumulate: true, ..Default::default() };
        match cx {
            Ctx::Cpu(s) => s.run(&[lhs, rhs], &[out, scratch], |r, w| {
                let [out, scratch] = w else { unreachable!() };
                g.cpu(r[0], r[1], out, true, scratch);
            }),
            Ctx::Gpu(r) => gpu_gemm(r, self.kernel, g, lhs, rhs, out, None, acc, scratch),
        }
    }
}

// ---------------------------------------------------------------------------------------
// builders

impl Graph {
    /// Batched matrix product. a: [batch..., M, K] ([batch..., K, M] if `trans_a`);
    /// b: [batch..., K, N] ([batch..., N, K] if `trans_b`) with the same batch dims as a, or
    /// 2-D and shared across a's batch. Output [batch..., M, N].
    pub fn matmul(&mut self, a: Var, b: Var, trans_a: bool, trans_b: bool) -> Var {
        self.matmul_with(a, b, trans_a, trans_b, GemmKernel::Auto)
    }

    /// [`Graph::matmul`] with an explicit GPU kernel.
    pub fn matmul_with(&mut self, a: Var, b: Var, trans_a: bool, trans_b: bool, kernel: GemmKernel) -> Var {
        let sa = self.shape(a).to_vec();
        let sb = self.shape(b).to_vec();
        ensure!(self, sa.len() >= 2, "matmul: a must have rank >= 2, got {sa:?}");
        ensure!(self, sb.len() >= 2, "matmul: b must have rank >= 2, got {sb:?}");
        let (ra, rb) = (sa.len(), sb.len());
        let (m, k) = if trans_a { (sa[ra - 1], sa[ra - 2]) } else { (sa[ra - 2], sa[ra - 1]) };
        let (kb, n) = if trans_b { (sb[rb - 1], sb[rb - 2]) } else { (sb[rb - 2], sb[rb - 1]) };
        ensure!(self, k == kb, "matmul: inner dims differ: a {sa:?} (trans_a={trans_a}) vs b {sb:?} (trans_b={trans_b})");
        let batch_dims = &sa[..ra - 2];
        let shared_b = rb == 2;
        ensure!(self, shared_b || batch_dims == &sb[..rb - 2], "matmul: batch dims differ: a {sa:?} vs b {sb:?} (b must be 2-D or have a's batch dims)");
        let batch = batch_dims.iter().product();
        let mut shape = batch_dims.to_vec();
        shape.extend([m, n]);
        let op = MatMul { batch, m, n, k, trans_a, trans_b, shared_b, kernel };
        ensure!(self, op.saved_len().max(batch * m * n.max(k)).max(k * n) < u32::MAX as usize, "matmul: {sa:?} x {sb:?} too large for 32-bit GPU indexing");
        self.push(op, &[a, b], &shape)
    }
}

/// Bench case: matmul of a by b (both with gradients), named and shaped as at the site.
pub fn bench_case(a: (&'static str, [usize; 3]), b: (&'static str, [usize; 3]), trans_a: bool, trans_b: bool) -> Case {
    let t = |on: bool| if on { "^T" } else { "" };
    let shape = format!("{}{:?}{} {}{:?}{}", a.0, a.1, t(trans_a), b.0, b.1, t(trans_b)).replace(", ", ",");
    Case::new("matmul", shape, Bound::Compute, move |g, kern| {
        let x = g.input_with_grad(a.0, &a.1);
        let y = g.input_with_grad(b.0, &b.1);
        g.matmul_with(x, y, trans_a, trans_b, kern)
    })
    .gemm()
}
