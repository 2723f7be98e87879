//! Matrix products: `matmul` (batched, either operand transposed, right operand optionally
//! shared across the batch) and `linear` (PyTorch Linear with bias and ReLU fused), with
//! backward. The CPU path is the `gemm` crate behind [`sgemm`]; the GPU path is
//! `shaders/matmul.wgsl`: a register-blocked kernel (4x4 outputs per thread, vec4 loads when
//! the layout allows) and a shared-memory tiled kernel, both with split-K for the skinny
//! products of weight gradients (small M x N, K = every row of the batch). A `linear` with
//! one output (the decoder's alpha logit) runs as matrix-vector products instead: row-chunked
//! rayon loops on the CPU, `matvec*` kernels and a weighted `colsum` on the GPU.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::backend::gpu::Shader;
use crate::backend::{Buf, Ctx, Recorder};
use crate::graph::{Graph, Op, Var};
use crate::shader;

const WGSL: Shader = shader!("matmul");

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

/// Output tile side of a workgroup (must match `RT` / `TT` in matmul.wgsl).
const REG_TILE: usize = 64;
const SHARED_TILE: usize = 64;
/// Split K until about this many workgroups run...
const SPLIT_TARGET_GROUPS: usize = 128;
/// ...but give each split at least this many K steps, and use at most this many splits.
const SPLIT_MIN_K: usize = 256;
const SPLIT_MAX: usize = 64;
/// Below this many multiply-adds a product runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 17;
/// Elementwise CPU loops go parallel above this many elements.
const PAR_MIN_ELEMS: usize = 1 << 15;

// ---------------------------------------------------------------------------------------
// CPU GEMM

/// Row-major C (+)= op(A) op(B) with op(A) [m, k] and op(B) [k, n]: A is stored [m, k]
/// ([k, m] if `trans_a`), B [k, n] ([n, k] if `trans_b`), C [m, n]. `accumulate` adds to C
/// instead of overwriting it. Only the first m*k / k*n / m*n elements of the slices are used.
/// Big products use every core.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(m: usize, n: usize, k: usize, a: &[f32], trans_a: bool, b: &[f32], trans_b: bool, c: &mut [f32], accumulate: bool) {
    let par = if m * n * k >= PAR_MIN_MACS { Parallelism::Rayon(0) } else { Parallelism::None };
    sgemm_with(m, n, k, a, trans_a, b, trans_b, c, accumulate, par);
}

#[allow(clippy::too_many_arguments)]
fn sgemm_with(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32], accumulate: bool, par: Parallelism) {
    assert!(a.len() >= m * k, "sgemm: A holds {} floats, needs {m}x{k}", a.len());
    assert!(b.len() >= k * n, "sgemm: B holds {} floats, needs {k}x{n}", b.len());
    assert!(c.len() >= m * n, "sgemm: C holds {} floats, needs {m}x{n}", c.len());
    let (a_rs, a_cs) = if ta { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if tb { (1, k) } else { (n, 1) };
    gemm_strided(m, n, k, a, 0, a_rs, a_cs, b, 0, b_rs, b_cs, c, accumulate, par);
}

/// C[m, n] (+)= A B where A[i, l] = a[a_off + i a_rs + l a_cs] and B[l, j] = b[b_off + l b_rs + j b_cs].
#[allow(clippy::too_many_arguments)]
fn gemm_strided(
    m: usize, n: usize, k: usize,
    a: &[f32], a_off: usize, a_rs: usize, a_cs: usize,
    b: &[f32], b_off: usize, b_rs: usize, b_cs: usize,
    c: &mut [f32], accumulate: bool, par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    // The crate takes raw pointers: check the furthest element of each operand.
    assert!(a_off + (m - 1) * a_rs + (k - 1) * a_cs < a.len(), "gemm: A out of range");
    assert!(b_off + (k - 1) * b_rs + (n - 1) * b_cs < b.len(), "gemm: B out of range");
    assert!(m * n <= c.len(), "gemm: C out of range");
    // SAFETY: every index the crate forms is within the bounds checked above; C is
    // exclusively borrowed and A, B are shared borrows, so nothing aliases a write.
    unsafe {
        gemm::gemm(
            m, n, k,
            c.as_mut_ptr(), 1, n as isize, accumulate,
            a.as_ptr().add(a_off), a_cs as isize, a_rs as isize,
            b.as_ptr().add(b_off), b_cs as isize, b_rs as isize,
            1.0, 1.0, false, false, false, par,
        );
    }
}

/// K splits the CPU uses for one product: the crate parallelizes over blocks of C, which
/// leaves cores idle on skinny products (weight gradients: 64x64 outputs, K = 64k rows).
fn cpu_splits(m: usize, n: usize, k: usize) -> usize {
    let threads = rayon::current_num_threads().min(16);
    if threads < 2 || k < 4 * SPLIT_MIN_K || k < 4 * m.max(n) || m * n > 256 * 256 || m * n * k < PAR_MIN_MACS {
        return 1;
    }
    threads.min(k / SPLIT_MIN_K)
}

/// A (possibly batched) product: C_z (+)= op(A_z) op(B_z), z < batch. Batch strides are
/// in elements; `sa`/`sb` = 0 shares an operand across the batch, `sc` = 0 sums the batch
/// into one C (gradient of a shared operand).
#[derive(Clone, Copy, Debug)]
struct Gemm {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    sa: usize,
    sb: usize,
    sc: usize,
}

impl Gemm {
    /// Plain batched product; `shared_*` makes that operand (or C) the same for every z.
    #[allow(clippy::too_many_arguments)]
    fn new(batch: usize, m: usize, n: usize, k: usize, ta: bool, tb: bool, shared_a: bool, shared_b: bool, shared_c: bool) -> Gemm {
        let one = batch == 1;
        Gemm {
            batch,
            m,
            n,
            k,
            ta,
            tb,
            sa: if shared_a || one { 0 } else { m * k },
            sb: if shared_b || one { 0 } else { k * n },
            sc: if shared_c || one { 0 } else { m * n },
        }
    }

    /// Floats of scratch the CPU path needs (split-K partials).
    fn cpu_scratch(&self) -> usize {
        if self.batch == 1 { (cpu_splits(self.m, self.n, self.k) - 1) * self.m * self.n } else { 0 }
    }

    /// (splits, K per split) of the GPU kernel with output tiles of side `tile`.
    fn gpu_splits(&self, tile: usize) -> (usize, usize) {
        let groups = self.batch * self.m.div_ceil(tile) * self.n.div_ceil(tile);
        if self.reduces_batch() || groups >= SPLIT_TARGET_GROUPS || self.k < 2 * SPLIT_MIN_K {
            return (1, self.k);
        }
        let s = SPLIT_TARGET_GROUPS.div_ceil(groups.max(1)).min(self.k / SPLIT_MIN_K).clamp(1, SPLIT_MAX);
        // K per split stays a multiple of 4 so vec4 loads along K never straddle splits.
        let kc = self.k.div_ceil(s).next_multiple_of(4);
        (self.k.div_ceil(kc), kc)
    }

    fn reduces_batch(&self) -> bool {
        self.sc == 0 && self.batch > 1
    }

    /// Floats of scratch the GPU path needs, for either kernel.
    fn gpu_scratch(&self) -> usize {
        if self.reduces_batch() {
            return self.batch * self.m * self.n;
        }
        [REG_TILE, SHARED_TILE]
            .iter()
            .map(|&t| {
                let (s, _) = self.gpu_splits(t);
                if s > 1 { s * self.batch * self.m * self.n } else { 0 }
            })
            .max()
            .unwrap()
    }

    fn strides(&self) -> (usize, usize, usize, usize) {
        let (a_rs, a_cs) = if self.ta { (1, self.m) } else { (self.k, 1) };
        let (b_rs, b_cs) = if self.tb { (1, self.k) } else { (self.n, 1) };
        (a_rs, a_cs, b_rs, b_cs)
    }

    /// Run on the CPU. `scratch` must hold `cpu_scratch()` floats.
    fn cpu(&self, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool, scratch: &mut [f32]) {
        let (m, n, k) = (self.m, self.n, self.k);
        let mn = m * n;
        if mn == 0 {
            return;
        }
        if self.batch == 0 {
            if self.sc == 0 && !accumulate {
                c[..mn].fill(0.0);
            }
            return;
        }
        if self.batch == 1 {
            return self.cpu_split_k(a, b, c, accumulate, scratch);
        }
        let (a_rs, a_cs, b_rs, b_cs) = self.strides();
        let one = |z: usize, cz: &mut [f32], acc: bool, par: Parallelism| {
            gemm_strided(m, n, k, a, z * self.sa, a_rs, a_cs, b, z * self.sb, b_rs, b_cs, cz, acc, par);
        };
        let big = m * n * k >= PAR_MIN_MACS;
        let par = if big { Parallelism::Rayon(0) } else { Parallelism::None };
        if self.sc == 0 {
            // every z adds into the same C: in order
            for z in 0..self.batch {
                one(z, c, accumulate || z > 0, par);
            }
        } else if self.batch * m * n * k < PAR_MIN_MACS || (big && self.batch < 2 * rayon::current_num_threads()) {
            // tiny in total, or few products big enough to parallelize inside
            for (z, cz) in c[..self.batch * mn].chunks_mut(mn).enumerate() {
                one(z, cz, accumulate, par);
            }
        } else {
            // enough products to keep every core busy: one per task
            c[..self.batch * mn].par_chunks_mut(mn).enumerate().for_each(|(z, cz)| one(z, cz, accumulate, Parallelism::None));
        }
    }

    fn cpu_split_k(&self, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool, scratch: &mut [f32]) {
        let (m, n, k) = (self.m, self.n, self.k);
        let mn = m * n;
        let (a_rs, a_cs, b_rs, b_cs) = self.strides();
        let mut s = cpu_splits(m, n, k).min(scratch.len() / mn.max(1) + 1);
        if s <= 1 {
            let par = if mn * k >= PAR_MIN_MACS { Parallelism::Rayon(0) } else { Parallelism::None };
            return gemm_strided(m, n, k, a, 0, a_rs, a_cs, b, 0, b_rs, b_cs, c, accumulate, par);
        }
        let kc = k.div_ceil(s);
        s = k.div_ceil(kc);
        // split 0 goes straight into C, the others into scratch, then C += partials
        let partials = &mut scratch[..(s - 1) * mn];
        let targets: Vec<&mut [f32]> = std::iter::once(&mut c[..mn]).chain(partials.chunks_mut(mn)).collect();
        targets.into_par_iter().enumerate().for_each(|(j, t)| {
            let k0 = j * kc;
            let kl = kc.min(k - k0);
            gemm_strided(m, n, kl, a, k0 * a_cs, a_rs, a_cs, b, k0 * b_rs, b_rs, b_cs, t, j == 0 && accumulate, Parallelism::None);
        });
        let partials = &scratch[..(s - 1) * mn];
        const CHUNK: usize = 4096;
        c[..mn].par_chunks_mut(CHUNK).enumerate().for_each(|(ci, cc)| {
            for p in partials.chunks(mn) {
                for (o, v) in cc.iter_mut().zip(&p[ci * CHUNK..]) {
                    *o += v;
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// GPU GEMM

/// What happens to each output of a product.
#[derive(Clone, Copy, Debug, Default)]
struct Epilogue {
    accumulate: bool,
    bias: Option<Buf>,
    relu: bool,
}

fn max_groups(r: &Recorder) -> usize {
    r.gpu.limits.max_compute_workgroups_per_dimension.max(1) as usize
}

/// Record C (+)= op(A) op(B) with the epilogue; `mask` (same layout as A) zeroes A where
/// mask <= 0 (the ReLU backward). `scratch` must hold `g.gpu_scratch()` floats.
#[allow(clippy::too_many_arguments)]
fn gpu_gemm(r: &mut Recorder, kernel: GemmKernel, g: &Gemm, a: Buf, b: Buf, c: Buf, mask: Option<Buf>, epi: Epilogue, scratch: Buf) {
    if g.m == 0 || g.n == 0 || g.batch == 0 {
        // an empty batch summed into C (sc = 0) only happens for gradients, which accumulate
        return;
    }
    let shared = kernel.shared_tiles(r);
    let tile = if shared { SHARED_TILE } else { REG_TILE };
    let (splits, kc) = g.gpu_splits(tile);
    let direct = splits == 1 && !g.reduces_batch();
    let mn = g.m * g.n;
    let nz = g.batch * splits;
    let (target, sc, out) = if direct {
        (c, g.sc, epi)
    } else {
        assert!(scratch.len >= nz * mn, "matmul: scratch of {} floats, needs {}", scratch.len, nz * mn);
        (scratch, mn, Epilogue::default())
    };
    let contiguous_a = if g.ta { g.m } else { g.k };
    let contiguous_b = if g.tb { g.k } else { g.n };
    let vec4 = g.k > 0 && contiguous_a % 4 == 0 && contiguous_b % 4 == 0;
    let entry = match (shared, vec4, g.ta, g.tb) {
        (true, ..) => "mm_tiled",
        (false, false, ..) => "mm_regs",
        (false, true, false, false) => "mm4_nn",
        (false, true, false, true) => "mm4_nt",
        (false, true, true, false) => "mm4_tn",
        (false, true, true, true) => "mm4_tt",
    };
    let params = [
        g.m, g.n, g.k, nz, splits, kc, g.sa, g.sb, sc,
        out.accumulate as usize, out.bias.is_some() as usize, out.relu as usize,
        mask.is_some() as usize, g.ta as usize, g.tb as usize,
    ]
    .map(|v| u32::try_from(v).expect("matmul: size exceeds u32"));
    let maxg = max_groups(r);
    let groups = [g.n.div_ceil(tile).min(maxg), g.m.div_ceil(tile).min(maxg), nz.min(maxg)].map(|v| v as u32);
    // unused bindings get A (read-only, never read: the flags are off)
    r.dispatch(WGSL, entry, &params, &[a, b, out.bias.unwrap_or(a), mask.unwrap_or(a), target], groups);
    if !direct {
        let (nb, s) = if g.reduces_batch() { (1, g.batch) } else { (g.batch, splits) };
        gpu_sum_partials(r, scratch, nb, s, mn, g.n, epi, c);
    }
}

/// out[b, i] (+)= sum_s part[b, s, i] (+ bias[i % cols], ReLU), i < mn, b < nb.
#[allow(clippy::too_many_arguments)]
fn gpu_sum_partials(r: &mut Recorder, part: Buf, nb: usize, splits: usize, mn: usize, cols: usize, epi: Epilogue, out: Buf) {
    let total = nb * mn;
    let params = [total, mn, splits, cols, epi.accumulate as usize, epi.bias.is_some() as usize, epi.relu as usize].map(|v| v as u32);
    r.dispatch_1d(WGSL, "sum_partials", &params, &[part, epi.bias.unwrap_or(part), out], total);
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
    let params = [rows, cols, chunk_rows, chunks, (chunks == 1) as usize, mask.is_some() as usize, weight.is_some() as usize]
        .map(|v| u32::try_from(v).expect("colsum: size exceeds u32"));
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

fn matvec_params(rows: usize, inp: usize, has_bias: bool, relu: bool) -> [u32; 4] {
    assert!(u32::try_from(rows * inp).is_ok(), "matvec: {rows}x{inp} exceeds u32 indexing");
    [rows, inp, has_bias as usize, relu as usize].map(|v| v as u32)
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
    let rows_per_task = (PAR_MIN_ELEMS / cols).max(1);
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

/// Rows per rayon task of the matvec loops: about `PAR_MIN_ELEMS` floats of x each.
fn matvec_rows_per_task(inp: usize) -> usize {
    (PAR_MIN_ELEMS / inp.max(1)).max(1)
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
    use crate::simd::avx2_dispatch;

    avx2_dispatch! {
        /// out[r] = dot(x[r, :], w) for the rows of x [out.len(), w.len()].
        pub fn dot_rows(x: &[f32], w: &[f32], out: &mut [f32]) => dot_rows_body
    }
    avx2_dispatch! {
        /// dx[r, :] += g[r] w for the rows of dx [g.len(), w.len()].
        pub fn outer_rows(g: &[f32], w: &[f32], dx: &mut [f32]) => outer_rows_body
    }
    avx2_dispatch! {
        /// s[c] += sum over the rows of g [.., cols] of g[r, c] * weight[r] (1 when None), in f64.
        pub fn colsum_rows(g: &[f32], weight: Option<&[f32]>, cols: usize, s: &mut [f64]) => colsum_rows_body
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
    let chunk = PAR_MIN_ELEMS;
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
    if y.len() >= PAR_MIN_ELEMS {
        y.par_chunks_mut(cols).for_each(row);
    } else {
        y.chunks_mut(cols).for_each(row);
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
// linear

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
                let with_g = |s: &mut crate::backend::CpuStore, other: Buf, out: Buf, f: GradKernel| {
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
        assert!(sa.len() >= 2, "matmul: a must have rank >= 2, got {sa:?}");
        assert!(sb.len() >= 2, "matmul: b must have rank >= 2, got {sb:?}");
        let (ra, rb) = (sa.len(), sb.len());
        let (m, k) = if trans_a { (sa[ra - 1], sa[ra - 2]) } else { (sa[ra - 2], sa[ra - 1]) };
        let (kb, n) = if trans_b { (sb[rb - 1], sb[rb - 2]) } else { (sb[rb - 2], sb[rb - 1]) };
        assert_eq!(k, kb, "matmul: inner dims differ: a {sa:?} (trans_a={trans_a}) vs b {sb:?} (trans_b={trans_b})");
        let batch_dims = &sa[..ra - 2];
        let shared_b = rb == 2;
        assert!(
            shared_b || batch_dims == &sb[..rb - 2],
            "matmul: batch dims differ: a {sa:?} vs b {sb:?} (b must be 2-D or have a's batch dims)"
        );
        let batch = batch_dims.iter().product();
        let mut shape = batch_dims.to_vec();
        shape.extend([m, n]);
        self.push(MatMul { batch, m, n, k, trans_a, trans_b, shared_b, kernel }, &[a, b], &shape)
    }

    /// PyTorch Linear: x [..., in], w [out, in], bias [out]; y = x w^T + bias, then ReLU
    /// when `relu` (fused). Output [..., out].
    pub fn linear(&mut self, x: Var, w: Var, bias: Option<Var>, relu: bool) -> Var {
        self.linear_with(x, w, bias, relu, GemmKernel::Auto)
    }

    /// [`Graph::linear`] with an explicit GPU kernel.
    pub fn linear_with(&mut self, x: Var, w: Var, bias: Option<Var>, relu: bool, kernel: GemmKernel) -> Var {
        let sx = self.shape(x).to_vec();
        let sw = self.shape(w).to_vec();
        assert!(!sx.is_empty(), "linear: x must have rank >= 1");
        assert!(sw.len() == 2, "linear: w must be [out, in], got {sw:?}");
        let (out, inp) = (sw[0], sw[1]);
        assert_eq!(*sx.last().unwrap(), inp, "linear: x {sx:?} has last dim != in of w {sw:?}");
        if let Some(b) = bias {
            assert_eq!(self.shape(b), &[out], "linear: bias must be [{out}]");
        }
        let rows = sx[..sx.len() - 1].iter().product();
        let mut shape = sx[..sx.len() - 1].to_vec();
        shape.push(out);
        let op = Linear { rows, inp, out, bias: bias.is_some(), relu, kernel };
        match bias {
            Some(b) => self.push(op, &[x, w, b], &shape),
            None => self.push(op, &[x, w], &shape),
        }
    }
}
