//! `linear`: PyTorch Linear, y = relu?(x w^T + bias), x [rows, in], w [out, in], with the
//! bias and the ReLU fused into the product. The GEMM is matmul's ([`super::matmul`]); the
//! bias gradient is a column sum. A `linear` with one output (the decoder's alpha logit)
//! runs as matrix-vector products instead: row-chunked rayon loops on the CPU, `matvec*`
//! kernels and a weighted `colsum` on the GPU. WGSL: `shaders/linear.wgsl`.
//!
//! Derivatives, with G = dL/dy masked by y > 0 when `relu`: dx = G w, dw = G^T x,
//! dbias = sum over rows of G.

use rayon::prelude::*;

use super::matmul::gemm::{gpu_gemm, gpu_sum_partials, max_groups, Epilogue, Gemm, SPLIT_MAX, SPLIT_MIN_K, SPLIT_TARGET_GROUPS};
use super::matmul::GemmKernel;
use crate::backend::{shader, Buf, Ctx, CpuStore, Recorder, Shader};
use crate::graph::{ensure, Graph, Op, Var};
use crate::bench::{self, Bound, Case};
use crate::par::PAR_MIN;

const WGSL: Shader = shader!("linear");

crate::kernel_params! {
    /// out[chunk, c] (+)= sum over the chunk's rows of g[r, c] * weight[r].
    pub struct ColsumParams in "linear" { rows: u32, cols: u32, chunk_rows: u32, chunks: u32, accumulate: u32, mask: u32, weighted: u32 }
}

crate::kernel_params! {
    /// `relu`: matvec applies max(., 0) last; matvec_outer masks G by (mask > 0).
    pub struct MatvecParams in "linear" { rows: u32, inp: u32, has_bias: u32, relu: u32 }
}


/// y = relu?(x w^T + bias), x [rows, inp], w [out, inp].
#[derive(Debug)]
pub struct Linear {
    pub rows: usize,
    pub inp: usize,
    pub out: usize,
    pub bias: bool,
    pub relu: bool,
    pub kernel: GemmKernel,
}

impl Linear {
    fn forward_gemm(&self) -> Gemm {
        Gemm::new(1, self.rows, self.out, self.inp, false, true, false, false, false)
    }
    /// dx [rows, inp] = G w
    fn grad_x_gemm(&self) -> Gemm {
        Gemm::new(1, self.rows, self.inp, self.out, false, false, false, false, false)
    }
    /// dw [out, inp] = G^T x
    fn grad_w_gemm(&self) -> Gemm {
        Gemm::new(1, self.out, self.inp, self.rows, true, false, false, false, false)
    }
    /// CPU: the ReLU-masked gradient lives at the front of `saved`, scratch after it.
    fn masked_len(&self) -> usize {
        if self.relu { self.rows * self.out } else { 0 }
    }
    /// One output (the decoder's alpha logit): matrix-vector products instead of the GEMM,
    /// whose 64x64 GPU tiles would waste 63/64 of their work (and the `gemm` crate runs
    /// N = 1 and K = 1 on one thread). This path serves every `GemmKernel` choice: there is
    /// no tile to choose.
    fn matvec(&self) -> bool {
        self.out == 1
    }
}

impl Op for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn flops(&self) -> u64 {
        2 * (self.rows * self.inp * self.out) as u64
    }
    fn saved_len(&self) -> usize {
        let bias_grad = if self.bias { gpu_colsum_scratch(self.rows, self.out) } else { 0 };
        if self.matvec() {
            // CPU: the masked G only (f64 partials live in the tasks); GPU: row-chunk
            // partials of dw (a weighted column sum) and of db
            return self.masked_len().max(gpu_colsum_scratch(self.rows, self.inp)).max(bias_grad);
        }
        let gemms = [self.forward_gemm(), self.grad_x_gemm(), self.grad_w_gemm()];
        let cpu = self.masked_len() + gemms.iter().map(|g| g.cpu_scratch()).max().unwrap();
        let gpu = gemms.iter().map(|g| g.gpu_scratch()).max().unwrap();
        cpu.max(gpu.max(bias_grad))
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, saved: Buf) {
        if self.matvec() {
            return self.matvec_forward(cx, x, y);
        }
        let g = self.forward_gemm();
        match cx {
            Ctx::Cpu(s) => s.run(x, &[y, saved], |r, w| {
                let [y, scratch] = w else { unreachable!() };
                g.cpu(r[0], r[1], y, false, scratch);
                let bias = if self.bias { Some(r[2]) } else { None };
                cpu_bias_relu(y, self.out, bias, self.relu);
            }),
            Ctx::Gpu(r) => {
                let epi = Epilogue { accumulate: false, bias: x.get(2).copied(), relu: self.relu };
                gpu_gemm(r, self.kernel, &g, x[0], x[1], y, None, epi, saved);
            }
        }
    }
    fn backward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, saved: Buf, gy: Buf, gx: &[Option<Buf>]) {
        if gx.iter().all(|g| g.is_none()) {
            return;
        }
        if self.matvec() {
            return self.matvec_backward(cx, x, y, saved, gy, gx);
        }
        let (xb, wb) = (x[0], x[1]);
        let gb = gx.get(2).copied().flatten();
        match cx {
            Ctx::Cpu(s) => {
                let ml = self.masked_len();
                if self.relu {
                    s.run(&[gy, y], &[saved], |r, w| cpu_relu_mask(r[0], r[1], &mut w[0][..ml]));
                }
                // G is gy, or the masked copy at the front of saved
                let with_g = |s: &mut CpuStore, other: Buf, out: Buf, f: GradKernel| {
                    s.run(&[gy, other], &[out, saved], |r, w| {
                        let [out, sv] = w else { unreachable!() };
                        let (masked, scratch) = sv.split_at_mut(ml);
                        let g: &[f32] = if self.relu { masked } else { r[0] };
                        f(g, r[1], out, scratch);
                    })
                };
                if let Some(dx) = gx[0] {
                    let gm = self.grad_x_gemm();
                    with_g(s, wb, dx, &|g, w, dx, scratch| gm.cpu(g, w, dx, true, scratch));
                }
                if let Some(dw) = gx[1] {
                    let gm = self.grad_w_gemm();
                    with_g(s, xb, dw, &|g, x, dw, scratch| gm.cpu(g, x, dw, true, scratch));
                }
                if let Some(db) = gb {
                    with_g(s, xb, db, &|g, _, db, _| cpu_colsum(g, None, self.rows, self.out, db));
                }
            }
            Ctx::Gpu(r) => {
                // the ReLU mask is applied while loading G (no masked copy)
                let mask = if self.relu { Some(y) } else { None };
                let acc = Epilogue { accumulate: true, ..Default::default() };
                if let Some(dx) = gx[0] {
                    gpu_gemm(r, self.kernel, &self.grad_x_gemm(), gy, wb, dx, mask, acc, saved);
                }
                if let Some(dw) = gx[1] {
                    gpu_gemm(r, self.kernel, &self.grad_w_gemm(), gy, xb, dw, mask, acc, saved);
                }
                if let Some(db) = gb {
                    gpu_colsum(r, gy, None, mask, self.rows, self.out, db, saved);
                }
            }
        }
    }
}

impl Linear {
    /// y = relu?(x w + bias) with w [1, inp].
    fn matvec_forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf) {
        let (rows, inp) = (self.rows, self.inp);
        match cx {
            Ctx::Cpu(s) => s.run(x, &[y], |r, w| {
                let bias = if self.bias { Some(r[2][0]) } else { None };
                cpu_matvec(r[0], r[1], bias, self.relu, rows, inp, &mut w[0][..]);
            }),
            Ctx::Gpu(r) => gpu_matvec(r, x[0], x[1], x.get(2).copied(), self.relu, rows, inp, y),
        }
    }

    /// With G = gy (masked by y > 0 for a ReLU): dx += G w (outer product), dw += G^T x
    /// (a column sum of x weighted by G), db += sum G.
    fn matvec_backward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, saved: Buf, gy: Buf, gx: &[Option<Buf>]) {
        let (rows, inp) = (self.rows, self.inp);
        let (xb, wb) = (x[0], x[1]);
        let gb = gx.get(2).copied().flatten();
        match cx {
            Ctx::Cpu(s) => {
                if self.relu {
                    s.run(&[gy, y], &[saved], |r, w| cpu_relu_mask(r[0], r[1], &mut w[0][..rows]));
                }
                // G is gy, or the masked copy at the front of saved
                let g = if self.relu { saved } else { gy };
                if let Some(dx) = gx[0] {
                    s.run(&[g, wb], &[dx], |r, w| cpu_matvec_outer(r[0], r[1], rows, inp, &mut w[0][..]));
                }
                if let Some(dw) = gx[1] {
                    s.run(&[xb, g], &[dw], |r, w| cpu_colsum(r[0], Some(r[1]), rows, inp, &mut w[0][..]));
                }
                if let Some(db) = gb {
                    s.run(&[g], &[db], |r, w| cpu_colsum(r[0], None, rows, 1, &mut w[0][..]));
                }
            }
            Ctx::Gpu(r) => {
                // the ReLU mask is applied while loading G (no masked copy)
                let mask = if self.relu { Some(y) } else { None };
                if let Some(dx) = gx[0] {
                    gpu_matvec_outer(r, gy, wb, mask, rows, inp, dx);
                }
                if let Some(dw) = gx[1] {
                    gpu_colsum(r, xb, Some(gy), mask, rows, inp, dw, saved);
                }
                if let Some(db) = gb {
                    gpu_colsum(r, gy, None, mask, rows, 1, db, saved);
                }
            }
        }
    }
}

const COLSUM_COLS: usize = 64;

/// Row chunks of the GPU column sum.
fn colsum_chunks(rows: usize, cols: usize) -> usize {
    let col_groups = cols.div_ceil(COLSUM_COLS).max(1);
    SPLIT_TARGET_GROUPS.div_ceil(col_groups).min(rows / SPLIT_MIN_K).clamp(1, SPLIT_MAX)
}

/// out[c] += sum_r g[r, c] * weight[r] (weight 1 when None). `mask` zeroes the factor it
/// has the layout of: weight[r] where mask[r] <= 0 when weighted, else g[r, c] where
/// mask[r, c] <= 0 (the ReLU backward).
#[allow(clippy::too_many_arguments)]
fn gpu_colsum(r: &mut Recorder, g: Buf, weight: Option<Buf>, mask: Option<Buf>, rows: usize, cols: usize, out: Buf, scratch: Buf) {
    if rows == 0 || cols == 0 {
        return;
    }
    let chunks = colsum_chunks(rows, cols);
    let chunk_rows = rows.div_ceil(chunks);
    let chunks = rows.div_ceil(chunk_rows);
    let target = if chunks == 1 { out } else { scratch };
    let params = ColsumParams {
        rows: rows as u32,
        cols: cols as u32,
        chunk_rows: chunk_rows as u32,
        chunks: chunks as u32,
        accumulate: (chunks == 1) as u32,
        mask: mask.is_some() as u32,
        weighted: weight.is_some() as u32,
    };
    let maxg = max_groups(r);
    let groups = [cols.div_ceil(COLSUM_COLS).min(maxg) as u32, chunks.min(maxg) as u32, 1];
    r.dispatch(WGSL, "colsum", &params, &[g, weight.unwrap_or(g), mask.unwrap_or(g), target], groups);
    if chunks > 1 {
        gpu_sum_partials(r, scratch, 1, chunks, cols, cols, Epilogue { accumulate: true, ..Default::default() }, out);
    }
}

fn gpu_colsum_scratch(rows: usize, cols: usize) -> usize {
    let chunks = colsum_chunks(rows, cols);
    let chunks = rows.div_ceil(rows.div_ceil(chunks).max(1));
    if chunks > 1 { chunks * cols } else { 0 }
}

/// Rows per workgroup of the matvec kernels (`MV_ROWS` in matmul.wgsl, 8 lanes per row).
const MATVEC_ROWS: usize = 32;

/// Row blocks of the matvec kernels, spread over x and y past the per-dimension limit.
fn matvec_groups(r: &Recorder, rows: usize) -> [u32; 3] {
    let blocks = u32::try_from(rows.div_ceil(MATVEC_ROWS)).expect("matvec: rows exceed u32");
    r.gpu.split_groups(blocks)
}

fn matvec_params(rows: usize, inp: usize, has_bias: bool, relu: bool) -> MatvecParams {
    MatvecParams { rows: rows as u32, inp: inp as u32, has_bias: has_bias as u32, relu: relu as u32 }
}

/// Rows of x and w split into whole vec4s (a vec4 binding also needs >= 16 bytes).
fn matvec_vec4(inp: usize) -> bool {
    inp > 0 && inp.is_multiple_of(4)
}

/// y[r] = relu?(dot(x[r, :], w) + bias[0]), x [rows, inp], w [inp].
#[allow(clippy::too_many_arguments)]
fn gpu_matvec(r: &mut Recorder, x: Buf, w: Buf, bias: Option<Buf>, relu: bool, rows: usize, inp: usize, y: Buf) {
    if rows == 0 {
        return;
    }
    let params = matvec_params(rows, inp, bias.is_some(), relu);
    let entry = if matvec_vec4(inp) { "matvec4" } else { "matvec" };
    let groups = matvec_groups(r, rows);
    r.dispatch(WGSL, entry, &params, &[x, w, bias.unwrap_or(x), y], groups);
}

/// dx[r, :] += G[r] w with G = gy where mask > 0 (the ReLU backward) when `mask` is given.
fn gpu_matvec_outer(r: &mut Recorder, gy: Buf, w: Buf, mask: Option<Buf>, rows: usize, inp: usize, dx: Buf) {
    if rows == 0 || inp == 0 {
        return;
    }
    let params = matvec_params(rows, inp, false, mask.is_some());
    let entry = if matvec_vec4(inp) { "matvec_outer4" } else { "matvec_outer" };
    let groups = matvec_groups(r, rows);
    r.dispatch(WGSL, entry, &params, &[gy, w, mask.unwrap_or(gy), dx], groups);
}

// ---------------------------------------------------------------------------------------
// CPU helpers

/// A CPU kernel on (G, other operand, output, scratch).
type GradKernel<'a> = &'a dyn Fn(&[f32], &[f32], &mut [f32], &mut [f32]);

/// out[c] += sum over rows of g[r, c] * weight[r] (weight 1 when None): per-task f64
/// partial sums (the CPU is the reference).
fn cpu_colsum(g: &[f32], weight: Option<&[f32]>, rows: usize, cols: usize, out: &mut [f32]) {
    if rows == 0 || cols == 0 {
        return;
    }
    let rows_per_task = (PAR_MIN / cols).max(1);
    let sums = g[..rows * cols]
        .par_chunks(rows_per_task * cols)
        .enumerate()
        .map(|(task, blk)| {
            let mut s = vec![0f64; cols];
            let r0 = task * rows_per_task;
            let w = weight.map(|w| &w[r0..r0 + blk.len() / cols]);
            simd::colsum_rows(blk, w, cols, &mut s);
            s
        })
        .reduce(|| vec![0f64; cols], |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        });
    for (o, s) in out.iter_mut().zip(&sums) {
        *o = (*o as f64 + s) as f32;
    }
}

/// Rows per rayon task of the matvec loops: about `PAR_MIN` floats of x each.
fn matvec_rows_per_task(inp: usize) -> usize {
    (PAR_MIN / inp.max(1)).max(1)
}

/// y[r] = relu?(dot(x[r, :], w) + bias), x [rows, inp]: rayon over row chunks.
fn cpu_matvec(x: &[f32], w: &[f32], bias: Option<f32>, relu: bool, rows: usize, inp: usize, y: &mut [f32]) {
    let y = &mut y[..rows];
    let (w, bias) = (&w[..inp], bias.unwrap_or(0.0));
    let epilogue = |v: f32| if relu { (v + bias).max(0.0) } else { v + bias };
    if inp == 0 {
        return y.fill(epilogue(0.0));
    }
    let rpt = matvec_rows_per_task(inp);
    y.par_chunks_mut(rpt).zip(x[..rows * inp].par_chunks(rpt * inp)).for_each(|(yc, xc)| {
        simd::dot_rows(xc, w, yc);
        yc.iter_mut().for_each(|v| *v = epilogue(*v));
    });
}

/// dx[r, :] += g[r] w: rayon over row chunks.
fn cpu_matvec_outer(g: &[f32], w: &[f32], rows: usize, inp: usize, dx: &mut [f32]) {
    if rows == 0 || inp == 0 {
        return;
    }
    let rpt = matvec_rows_per_task(inp);
    dx[..rows * inp]
        .par_chunks_mut(rpt * inp)
        .zip(g[..rows].par_chunks(rpt))
        .for_each(|(dc, gc)| simd::outer_rows(gc, &w[..inp], dc));
}

/// The matvec loops, also compiled for AVX2 (picked at run time, the build targets SSE2):
/// they stream memory, yet on 2 cores shared with other work the SSE2 code measured 5-15%
/// slower. Same operations in the same order on both paths (no FMA): identical results.
mod simd {
    use multiversion::multiversion;

    /// out[r] = dot(x[r, :], w) for the rows of x [out.len(), w.len()].
    #[multiversion(targets("x86_64+avx2"))]
    pub fn dot_rows(x: &[f32], w: &[f32], out: &mut [f32]) {
        dot_rows_body(x, w, out)
    }
    /// dx[r, :] += g[r] w for the rows of dx [g.len(), w.len()].
    #[multiversion(targets("x86_64+avx2"))]
    pub fn outer_rows(g: &[f32], w: &[f32], dx: &mut [f32]) {
        outer_rows_body(g, w, dx)
    }
    /// s[c] += sum over the rows of g [.., cols] of g[r, c] * weight[r] (1 when None), in f64.
    #[multiversion(targets("x86_64+avx2"))]
    pub fn colsum_rows(g: &[f32], weight: Option<&[f32]>, cols: usize, s: &mut [f64]) {
        colsum_rows_body(g, weight, cols, s)
    }

    #[inline(always)]
    fn dot_rows_body(x: &[f32], w: &[f32], out: &mut [f32]) {
        for (o, xr) in out.iter_mut().zip(x.chunks_exact(w.len())) {
            *o = dot(xr, w);
        }
    }

    /// Independent accumulators, summed once at the end: no serial dependency, so the loop
    /// vectorizes. (A pairwise final sum made LLVM pack the loop 2 lanes wide.)
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        const LANES: usize = 16;
        let mut acc = [0f32; LANES];
        let (mut ac, mut bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        for (x, y) in (&mut ac).zip(&mut bc) {
            for j in 0..LANES {
                acc[j] += x[j] * y[j];
            }
        }
        let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
        acc.iter().sum::<f32>() + tail
    }

    #[inline(always)]
    fn outer_rows_body(g: &[f32], w: &[f32], dx: &mut [f32]) {
        for (dr, &gr) in dx.chunks_exact_mut(w.len()).zip(g) {
            for (d, &wv) in dr.iter_mut().zip(w) {
                *d += gr * wv;
            }
        }
    }

    #[inline(always)]
    fn colsum_rows_body(g: &[f32], weight: Option<&[f32]>, cols: usize, s: &mut [f64]) {
        match weight {
            Some(weight) => {
                for (row, &wr) in g.chunks_exact(cols).zip(weight) {
                    let wr = wr as f64;
                    for (a, &v) in s.iter_mut().zip(row) {
                        *a += wr * v as f64;
                    }
                }
            }
            None => {
                for row in g.chunks_exact(cols) {
                    for (a, &v) in s.iter_mut().zip(row) {
                        *a += v as f64;
                    }
                }
            }
        }
    }
}

/// out = gy where y > 0, else 0.
fn cpu_relu_mask(gy: &[f32], y: &[f32], out: &mut [f32]) {
    let f = |(o, (g, y)): (&mut [f32], (&[f32], &[f32]))| {
        for ((o, g), y) in o.iter_mut().zip(g).zip(y) {
            *o = if *y > 0.0 { *g } else { 0.0 };
        }
    };
    let chunk = PAR_MIN;
    if out.len() > chunk {
        out.par_chunks_mut(chunk).zip(gy.par_chunks(chunk).zip(y.par_chunks(chunk))).for_each(f);
    } else {
        f((out, (gy, y)));
    }
}

/// y[r, :] = relu?(y[r, :] + bias).
fn cpu_bias_relu(y: &mut [f32], cols: usize, bias: Option<&[f32]>, relu: bool) {
    if cols == 0 || (bias.is_none() && !relu) {
        return;
    }
    let row = |r: &mut [f32]| {
        if let Some(b) = bias {
            r.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
        if relu {
            r.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    };
    if y.len() >= PAR_MIN {
        y.par_chunks_mut(cols).for_each(row);
    } else {
        y.chunks_mut(cols).for_each(row);
    }
}

impl Graph {
    /// PyTorch Linear: x [..., in], w [out, in], bias [out]; y = x w^T + bias, then ReLU
    /// when `relu` (fused). Output [..., out].
    pub fn linear(&mut self, x: Var, w: Var, bias: Option<Var>, relu: bool) -> Var {
        self.linear_with(x, w, bias, relu, GemmKernel::Auto)
    }

    /// [`Graph::linear`] with an explicit GPU kernel.
    pub fn linear_with(&mut self, x: Var, w: Var, bias: Option<Var>, relu: bool, kernel: GemmKernel) -> Var {
        let sx = self.shape(x).to_vec();
        let sw = self.shape(w).to_vec();
        ensure!(self, !sx.is_empty(), "linear: x must have rank >= 1");
        ensure!(self, sw.len() == 2, "linear: w must be [out, in], got {sw:?}");
        let (out, inp) = (sw[0], sw[1]);
        ensure!(self, *sx.last().unwrap() == inp, "linear: x {sx:?} has last dim != in of w {sw:?}");
        if let Some(b) = bias {
            ensure!(self, self.shape(b) == &[out], "linear: bias must be [{out}]");
        }
        let rows: usize = sx[..sx.len() - 1].iter().product();
        ensure!(self, rows * inp.max(out) < u32::MAX as usize, "linear: x {sx:?} too large for 32-bit GPU indexing");
        let mut shape = sx[..sx.len() - 1].to_vec();
        shape.push(out);
        let op = Linear { rows, inp, out, bias: bias.is_some(), relu, kernel };
        match bias {
            Some(b) => self.push(op, &[x, w, b], &shape),
            None => self.push(op, &[x, w], &shape),
        }
    }
}

/// Bench case: linear of x [rows, inp] by w [out, inp]. One output is a matrix-vector
/// product (its own kernels, whatever the GEMM choice): 2 flops per float of x streamed,
/// so it is rated against the copy ceiling.
pub fn bench_case(rows: usize, inp: usize, out: usize, bias: bool, relu: bool, x_grad: bool) -> Case {
    let shape = format!(
        "x[{rows},{inp}] w[{out},{inp}]{}{}{}",
        if bias { " +bias" } else { "" },
        if relu { " relu" } else { "" },
        if x_grad { "" } else { " (no dx)" }
    );
    let bound = if out == 1 { Bound::Memory } else { Bound::Compute };
    let case = Case::new("linear", shape, bound, move |g, kern| {
        let x = bench::input(g, "x", &[rows, inp], x_grad);
        let w = g.param("w", &[out, inp]);
        let b = if bias { Some(g.param("bias", &[out])) } else { None };
        g.linear_with(x, w, b, relu, kern)
    });
    if out == 1 { case } else { case.gemm() }
}
