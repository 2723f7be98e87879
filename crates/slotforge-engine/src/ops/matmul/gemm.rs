//! The GEMM behind `matmul` and `linear`: on the CPU the `gemm` crate ([`sgemm`]), with
//! K split over threads for skinny products; on the GPU `shaders/matmul.wgsl`, a
//! register-blocked kernel (4x4 outputs per thread, vec4 loads when the layout allows) and a
//! shared-memory tiled kernel, both with split-K for the skinny products of weight gradients
//! (small M x N, K = every row of the batch), whose partials `sum_partials` adds up.

use gemm::Parallelism;
use rayon::prelude::*;

use super::GemmKernel;
use crate::backend::{shader, Buf, Recorder, Shader};

const WGSL: Shader = shader!("matmul");

crate::kernel_params! {
    /// C (+)= op(A) op(B) over z < nz = batch * splits (see matmul.wgsl).
    pub struct MatmulParams in "matmul" {
        m: u32,
        n: u32,
        k: u32,
        /// batch * splits
        nz: u32,
        splits: u32,
        /// K per split (a multiple of 4 when splits > 1)
        kc: u32,
        /// batch strides of A, B (0 = shared) and C (per z)
        sa: u32,
        sb: u32,
        sc: u32,
        /// C += result instead of C = result
        accumulate: u32,
        /// + bias[col]
        has_bias: u32,
        /// max(., 0) last
        relu: u32,
        /// A *= (amask > 0): the ReLU backward applied while loading
        mask: u32,
        ta: u32,
        tb: u32,
    }
}

crate::kernel_params! {
    /// out[b, i] (+)= sum_s part[b, s, i] (+ bias[i % cols], ReLU).
    pub struct SumPartialsParams in "matmul" { total: u32, mn: u32, splits: u32, cols: u32, accumulate: u32, has_bias: u32, relu: u32 }
}

/// Output tile side of a workgroup (must match `RT` / `TT` in matmul.wgsl).
pub(crate) const REG_TILE: usize = 64;
pub(crate) const SHARED_TILE: usize = 64;
/// Split K until about this many workgroups run...
pub(crate) const SPLIT_TARGET_GROUPS: usize = 128;
/// ...but give each split at least this many K steps, and use at most this many splits.
pub(crate) const SPLIT_MIN_K: usize = 256;
pub(crate) const SPLIT_MAX: usize = 64;
/// Below this many multiply-adds a product runs on the calling thread.
pub(crate) const PAR_MIN_MACS: usize = 1 << 17;


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
pub(crate) fn sgemm_with(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32], accumulate: bool, par: Parallelism) {
    assert!(a.len() >= m * k, "sgemm: A holds {} floats, needs {m}x{k}", a.len());
    assert!(b.len() >= k * n, "sgemm: B holds {} floats, needs {k}x{n}", b.len());
    assert!(c.len() >= m * n, "sgemm: C holds {} floats, needs {m}x{n}", c.len());
    let (a_rs, a_cs) = if ta { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if tb { (1, k) } else { (n, 1) };
    gemm_strided(m, n, k, a, 0, a_rs, a_cs, b, 0, b_rs, b_cs, c, accumulate, par);
}

/// C[m, n] (+)= A B where A[i, l] = a[a_off + i a_rs + l a_cs] and B[l, j] = b[b_off + l b_rs + j b_cs].
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_strided(
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
pub(crate) struct Gemm {
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
    pub(crate) fn new(batch: usize, m: usize, n: usize, k: usize, ta: bool, tb: bool, shared_a: bool, shared_b: bool, shared_c: bool) -> Gemm {
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
    pub(crate) fn cpu_scratch(&self) -> usize {
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
    pub(crate) fn gpu_scratch(&self) -> usize {
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
    pub(crate) fn cpu(&self, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool, scratch: &mut [f32]) {
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
pub(crate) struct Epilogue {
    pub(crate) accumulate: bool,
    pub(crate) bias: Option<Buf>,
    pub(crate) relu: bool,
}

pub(crate) fn max_groups(r: &Recorder) -> usize {
    r.gpu.limits.max_compute_workgroups_per_dimension.max(1) as usize
}

/// Record C (+)= op(A) op(B) with the epilogue; `mask` (same layout as A) zeroes A where
/// mask <= 0 (the ReLU backward). `scratch` must hold `g.gpu_scratch()` floats.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gpu_gemm(r: &mut Recorder, kernel: GemmKernel, g: &Gemm, a: Buf, b: Buf, c: Buf, mask: Option<Buf>, epi: Epilogue, scratch: Buf) {
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
    // the builders checked that every size fits the kernels' u32 indexing
    let params = MatmulParams {
        m: g.m as u32,
        n: g.n as u32,
        k: g.k as u32,
        nz: nz as u32,
        splits: splits as u32,
        kc: kc as u32,
        sa: g.sa as u32,
        sb: g.sb as u32,
        sc: sc as u32,
        accumulate: out.accumulate as u32,
        has_bias: out.bias.is_some() as u32,
        relu: out.relu as u32,
        mask: mask.is_some() as u32,
        ta: g.ta as u32,
        tb: g.tb as u32,
    };
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
pub(crate) fn gpu_sum_partials(r: &mut Recorder, part: Buf, nb: usize, splits: usize, mn: usize, cols: usize, epi: Epilogue, out: Buf) {
    let total = nb * mn;
    let params = SumPartialsParams {
        total: total as u32,
        mn: mn as u32,
        splits: splits as u32,
        cols: cols as u32,
        accumulate: epi.accumulate as u32,
        has_bias: epi.bias.is_some() as u32,
        relu: epi.relu as u32,
    };
    r.dispatch_1d(WGSL, "sum_partials", &params, &[part, epi.bias.unwrap_or(part), out], total);
}
