//! 2-D convolution: NHWC activations, PyTorch weight layout. WGSL: `shaders/conv.wgsl`.
//!
//! x [B, H, W, Cin], w [Cout, Cin, kh, kw], b [Cout] -> y [B, Ho, Wo, Cout],
//! Ho = (H + 2 pad - kh) / stride + 1 (same for W), zero padding.
//!
//! Derivatives: dx is the transposed convolution of gy with w, dw[co, ci, ky, kx] = sum
//! over b and output pixels of gy[.., co] x[.. shifted by (ky, kx), ci], db = sum of gy.
//!
//! CPU: im2col over blocks of output pixels + GEMM (`gemm` crate). The im2col column
//! order is (ky, kx, ci), so each kernel row is one contiguous copy out of an NHWC row;
//! the weight is repacked once per call to match ([K, Cout], K = kh kw Cin). 1x1 convs
//! with stride 1 and no padding skip im2col (x already is the column matrix).
//! GPU: direct kernels, see the shader.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::backend::{shader, Buf, Ctx, Shader};
use crate::graph::{ensure, Graph, Op, Var};
use crate::bench::{Bound, Case};

const WGSL: Shader = shader!("conv");

crate::kernel_params! {
    pub struct ConvParams in "conv" {
        batch: u32,
        h: u32,
        w: u32,
        cin: u32,
        cout: u32,
        kh: u32,
        kw: u32,
        stride: u32,
        pad: u32,
        ho: u32,
        wo: u32,
        /// threads (forward, dx) or weight tiles (dw)
        n: u32,
    }
}

/// Below this many multiply-adds a conv runs on one thread.
const PAR_MIN_WORK: usize = 1 << 20;
/// Target floats in one im2col block (~4 MB): bounds memory, keeps the block in cache.
const COLS_BLOCK: usize = 1 << 20;
/// Tile edge of the GPU weight-gradient kernel (must match `DW_T` in the shader).
const DW_TILE: usize = 16;
/// Output channels per thread in the GPU forward, input channels per thread in dx.
const CH_BLOCK: usize = 4;

#[derive(Clone, Copy, Debug)]
pub struct Conv2d {
    pub batch: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
    pub bias: bool,
}

impl Conv2d {
    /// Columns of the im2col matrix (= rows of the repacked weight).
    fn k(&self) -> usize {
        self.kh * self.kw * self.cin
    }

    /// Rows of the im2col matrix: every output pixel of every image.
    fn rows(&self) -> usize {
        self.batch * self.ho * self.wo
    }

    /// x itself is the column matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// Output pixels per im2col block.
    fn block_rows(&self) -> usize {
        (COLS_BLOCK / self.k()).max(1)
    }

    fn params(&self, threads: usize) -> ConvParams {
        ConvParams {
            batch: self.batch as u32,
            h: self.h as u32,
            w: self.w as u32,
            cin: self.cin as u32,
            cout: self.cout as u32,
            kh: self.kh as u32,
            kw: self.kw as u32,
            stride: self.stride as u32,
            pad: self.pad as u32,
            ho: self.ho as u32,
            wo: self.wo as u32,
            n: threads as u32,
        }
    }

    /// How to spread `units` independent pieces of work: over rayon (one GEMM thread
    /// each) when there are enough of them, else one after another with a parallel GEMM.
    fn plan(&self, units: usize) -> (bool, Parallelism) {
        if self.rows() * self.k() * self.cout < PAR_MIN_WORK {
            (false, Parallelism::None)
        } else if units >= rayon::current_num_threads() {
            (true, Parallelism::None)
        } else {
            (false, Parallelism::Rayon(0))
        }
    }

    /// w [Cout, Cin, kh, kw] -> [K, Cout] with k = (ky kw + kx) Cin + ci.
    fn weight_kc(&self, w: &[f32]) -> Vec<f32> {
        let (cin, cout, khw) = (self.cin, self.cout, self.kh * self.kw);
        let mut out = vec![0.0; self.k() * cout];
        for co in 0..cout {
            for ci in 0..cin {
                for tap in 0..khw {
                    out[(tap * cin + ci) * cout + co] = w[(co * cin + ci) * khw + tap];
                }
            }
        }
        out
    }

    /// For output pixel (oy, ox) and kernel row ky: the input row iy, the non-empty range
    /// [lo, hi) of kx that lands inside the image, and the input column of kx = lo.
    /// None when the whole kernel row lies in the padding.
    #[inline]
    fn span(&self, oy: usize, ox: usize, ky: usize) -> Option<(usize, usize, usize, usize)> {
        let iy = (oy * self.stride + ky).checked_sub(self.pad).filter(|&iy| iy < self.h)?;
        let x0 = ox * self.stride; // = input column of kx = 0, plus pad
        let lo = self.pad.saturating_sub(x0);
        let hi = (self.w + self.pad).saturating_sub(x0).min(self.kw);
        (lo < hi).then(|| (iy, lo, hi, x0 + lo - self.pad))
    }

    /// Output rows `r0..r1` as GEMM rows of patches: `x` itself for a pointwise conv, else
    /// unfolded into `cols`.
    fn patch_rows<'a>(&self, x: &'a [f32], r0: usize, r1: usize, cols: &'a mut Vec<f32>) -> &'a [f32] {
        let k = self.k();
        if self.pointwise() {
            &x[r0 * k..r1 * k]
        } else {
            cols.resize((r1 - r0) * k, 0.0);
            self.im2col(x, r0, r1, cols);
            &cols[..]
        }
    }

    /// cols[r - r0, :] for global output rows r in [r0, r1), from all of x.
    fn im2col(&self, x: &[f32], r0: usize, r1: usize, cols: &mut [f32]) {
        let (k, cin, kw) = (self.k(), self.cin, self.kw);
        let pix = self.ho * self.wo;
        for (r, row) in (r0..r1).zip(cols.chunks_exact_mut(k)) {
            let (b, o) = (r / pix, r % pix);
            let (oy, ox) = (o / self.wo, o % self.wo);
            for ky in 0..self.kh {
                let seg = &mut row[ky * kw * cin..(ky + 1) * kw * cin];
                match self.span(oy, ox, ky) {
                    None => seg.fill(0.0),
                    Some((iy, lo, hi, ix)) => {
                        seg[..lo * cin].fill(0.0);
                        let src = ((b * self.h + iy) * self.w + ix) * cin;
                        seg[lo * cin..hi * cin].copy_from_slice(&x[src..src + (hi - lo) * cin]);
                        seg[hi * cin..].fill(0.0);
                    }
                }
            }
        }
    }

    /// gx_img += col2im(cols) for rows [r0, r1) of image `b` (rows are image-local here).
    fn col2im_add(&self, cols: &[f32], r0: usize, r1: usize, gx_img: &mut [f32]) {
        let (k, cin, kw) = (self.k(), self.cin, self.kw);
        for (r, row) in (r0..r1).zip(cols.chunks_exact(k)) {
            let (oy, ox) = (r / self.wo, r % self.wo);
            for ky in 0..self.kh {
                if let Some((iy, lo, hi, ix)) = self.span(oy, ox, ky) {
                    let dst = (iy * self.w + ix) * cin;
                    let src = &row[(ky * kw + lo) * cin..(ky * kw + hi) * cin];
                    for (d, s) in gx_img[dst..dst + src.len()].iter_mut().zip(src) {
                        *d += s;
                    }
                }
            }
        }
    }

    fn forward_cpu(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
        let (k, cout) = (self.k(), self.cout);
        if self.rows() == 0 {
            return;
        }
        let wk = self.weight_kc(w);
        let blk = self.block_rows();
        let (par_blocks, par) = self.plan(self.rows().div_ceil(blk));
        let block = |bi: usize, yb: &mut [f32], cols: &mut Vec<f32>| {
            let (r0, r1) = (bi * blk, bi * blk + yb.len() / cout);
            match bias {
                Some(b) => yb.chunks_exact_mut(cout).for_each(|row| row.copy_from_slice(b)),
                None => yb.fill(0.0),
            }
            let lhs = self.patch_rows(x, r0, r1, cols);
            mm(r1 - r0, cout, k, yb, (cout, 1), true, lhs, (k, 1), &wk, (cout, 1), par);
        };
        if par_blocks {
            y.par_chunks_mut(blk * cout).enumerate().for_each_init(Vec::new, |cols, (bi, yb)| block(bi, yb, cols));
        } else {
            let mut cols = Vec::new();
            y.chunks_mut(blk * cout).enumerate().for_each(|(bi, yb)| block(bi, yb, &mut cols));
        }
    }

    /// gx += conv_transpose(gy, w): per block, dcols = gy · W^T then col2im.
    fn backward_x_cpu(&self, gy: &[f32], w: &[f32], gx: &mut [f32]) {
        let (k, cout) = (self.k(), self.cout);
        if self.rows() == 0 {
            return;
        }
        let wk = self.weight_kc(w);
        let blk = self.block_rows();
        if self.pointwise() {
            // rows of gx and gy correspond one to one: GEMM straight into gx
            let (par_blocks, par) = self.plan(self.rows().div_ceil(blk));
            let block = |bi: usize, gxb: &mut [f32]| {
                let r0 = bi * blk;
                let n = gxb.len() / k;
                mm(n, k, cout, gxb, (k, 1), true, &gy[r0 * cout..(r0 + n) * cout], (cout, 1), &wk, (1, cout), par);
            };
            if par_blocks {
                gx.par_chunks_mut(blk * k).enumerate().for_each(|(bi, gxb)| block(bi, gxb));
            } else {
                gx.chunks_mut(blk * k).enumerate().for_each(|(bi, gxb)| block(bi, gxb));
            }
            return;
        }
        // Blocks of one image scatter into overlapping parts of its gx: parallel over images.
        let pix = self.ho * self.wo;
        let img_len = self.h * self.w * self.cin;
        let (par_images, par) = self.plan(self.batch);
        let image = |b: usize, gx_img: &mut [f32], dcols: &mut Vec<f32>| {
            for r0 in (0..pix).step_by(blk) {
                let r1 = (r0 + blk).min(pix);
                dcols.resize((r1 - r0) * k, 0.0);
                let g = &gy[(b * pix + r0) * cout..(b * pix + r1) * cout];
                mm(r1 - r0, k, cout, dcols, (k, 1), false, g, (cout, 1), &wk, (1, cout), par);
                self.col2im_add(dcols, r0, r1, gx_img);
            }
        };
        if img_len == 0 {
            return;
        }
        if par_images {
            gx.par_chunks_mut(img_len).enumerate().for_each_init(Vec::new, |d, (b, gi)| image(b, gi, d));
        } else {
            let mut dcols = Vec::new();
            gx.chunks_mut(img_len).enumerate().for_each(|(b, gi)| image(b, gi, &mut dcols));
        }
    }

    /// gw += sum over output pixels of cols^T · gy, accumulated across blocks in f64.
    fn backward_w_cpu(&self, x: &[f32], gy: &[f32], gw: &mut [f32]) {
        let (k, cout) = (self.k(), self.cout);
        let rows = self.rows();
        let blk = self.block_rows();
        let nblocks = rows.div_ceil(blk);
        let (par_blocks, par) = self.plan(nblocks);
        // per-block GEMM in f32 (sums of <= blk terms), blocks summed in f64
        let block = |bi: usize, acc: &mut Vec<f64>, cols: &mut Vec<f32>, part: &mut Vec<f32>| {
            let (r0, r1) = (bi * blk, ((bi + 1) * blk).min(rows));
            let lhs = self.patch_rows(x, r0, r1, cols);
            part.resize(k * cout, 0.0);
            mm(k, cout, r1 - r0, part, (cout, 1), false, lhs, (1, k), &gy[r0 * cout..r1 * cout], (cout, 1), par);
            acc.iter_mut().zip(part.iter()).for_each(|(a, &p)| *a += p as f64);
        };
        let zero = || vec![0f64; k * cout];
        let dwk = if par_blocks {
            (0..nblocks)
                .into_par_iter()
                .fold(
                    || (zero(), Vec::new(), Vec::new()),
                    |(mut acc, mut cols, mut part), bi| {
                        block(bi, &mut acc, &mut cols, &mut part);
                        (acc, cols, part)
                    },
                )
                .map(|(acc, _, _)| acc)
                .reduce(zero, |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                })
        } else {
            let (mut acc, mut cols, mut part) = (zero(), Vec::new(), Vec::new());
            (0..nblocks).for_each(|bi| block(bi, &mut acc, &mut cols, &mut part));
            acc
        };
        let (cin, khw) = (self.cin, self.kh * self.kw);
        for co in 0..cout {
            for ci in 0..cin {
                for tap in 0..khw {
                    gw[(co * cin + ci) * khw + tap] += dwk[(tap * cin + ci) * cout + co] as f32;
                }
            }
        }
    }

    fn backward_b_cpu(&self, gy: &[f32], gb: &mut [f32]) {
        let cout = self.cout;
        let sum_rows = |rows: &[f32]| {
            let mut acc = vec![0f64; cout];
            for row in rows.chunks_exact(cout) {
                acc.iter_mut().zip(row).for_each(|(a, &g)| *a += g as f64);
            }
            acc
        };
        let acc = if gy.len() >= PAR_MIN_WORK / 16 {
            gy.par_chunks(4096 * cout).map(sum_rows).reduce(
                || vec![0f64; cout],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            )
        } else {
            sum_rows(gy)
        };
        gb.iter_mut().zip(&acc).for_each(|(g, &a)| *g += a as f32);
    }
}

/// dst[m, n] (+)= lhs[m, k] · rhs[k, n]; each operand given with its (row, column) strides.
#[allow(clippy::too_many_arguments)]
fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // The raw-pointer GEMM below must stay inside the slices.
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, n, dst_rs, dst_cs) < dst.len(), "mm: dst too small");
    assert!(last(m, k, lhs_rs, lhs_cs) < lhs.len(), "mm: lhs too small");
    assert!(last(k, n, rhs_rs, rhs_cs) < rhs.len(), "mm: rhs too small");
    // SAFETY: bounds checked above; dst does not alias lhs/rhs (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

impl Op for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn flops(&self) -> u64 {
        2 * (self.rows() * self.cout * self.k()) as u64
    }

    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, _: Buf) {
        match cx {
            Ctx::Cpu(s) => s.run(x, &[y], |r, w| self.forward_cpu(r[0], r[1], r.get(2).copied(), w[0])),
            Ctx::Gpu(r) => {
                let n = self.rows() * self.cout.div_ceil(CH_BLOCK);
                let (entry, bufs) = if self.bias {
                    ("conv_forward_bias", vec![x[0], x[1], y, x[2]])
                } else {
                    ("conv_forward", vec![x[0], x[1], y])
                };
                r.dispatch_1d(WGSL, entry, &self.params(n), &bufs, n);
            }
        }
    }

    fn backward(&self, cx: &mut Ctx, x: &[Buf], _: Buf, _: Buf, gy: Buf, gx: &[Option<Buf>]) {
        match cx {
            Ctx::Cpu(s) => {
                if let Some(g) = gx[0] {
                    s.run(&[gy, x[1]], &[g], |r, w| self.backward_x_cpu(r[0], r[1], w[0]));
                }
                if let Some(g) = gx[1] {
                    s.run(&[x[0], gy], &[g], |r, w| self.backward_w_cpu(r[0], r[1], w[0]));
                }
                if let Some(g) = gx.get(2).copied().flatten() {
                    s.run(&[gy], &[g], |r, w| self.backward_b_cpu(r[0], w[0]));
                }
            }
            Ctx::Gpu(r) => {
                if let Some(g) = gx[0] {
                    let n = self.batch * self.h * self.w * self.cin.div_ceil(CH_BLOCK);
                    r.dispatch_1d(WGSL, "conv_dx", &self.params(n), &[gy, x[1], g], n);
                }
                if let Some(g) = gx[1] {
                    let tiles = self.kh * self.kw * self.cin.div_ceil(DW_TILE) * self.cout.div_ceil(DW_TILE);
                    let groups = r.gpu.split_groups(tiles as u32);
                    r.dispatch(WGSL, "conv_dw", &self.params(tiles), &[x[0], gy, g], groups);
                }
                if let Some(g) = gx.get(2).copied().flatten() {
                    let groups = self.cout.div_ceil(DW_TILE) as u32;
                    r.dispatch(WGSL, "conv_db", &self.params(0), &[gy, g], r.gpu.split_groups(groups));
                }
            }
        }
    }
}

impl Graph {
    /// 2-D convolution with zero padding: x [B, H, W, Cin] (NHWC), w [Cout, Cin, kh, kw]
    /// (PyTorch layout), optional bias [Cout] -> [B, Ho, Wo, Cout] with
    /// Ho = (H + 2 padding - kh) / stride + 1, Wo likewise.
    pub fn conv2d(&mut self, x: Var, w: Var, b: Option<Var>, stride: usize, padding: usize) -> Var {
        let xs = self.shape(x).to_vec();
        let ws = self.shape(w).to_vec();
        ensure!(self, xs.len() == 4, "conv2d: x must be [B, H, W, Cin], got {xs:?}");
        ensure!(self, ws.len() == 4, "conv2d: w must be [Cout, Cin, kh, kw], got {ws:?}");
        let [batch, h, wd, cin] = [xs[0], xs[1], xs[2], xs[3]];
        let [cout, wcin, kh, kw] = [ws[0], ws[1], ws[2], ws[3]];
        ensure!(self, wcin == cin, "conv2d: x has {cin} channels (shape {xs:?}) but w expects {wcin} (shape {ws:?})");
        ensure!(self, cin > 0 && cout > 0 && kh > 0 && kw > 0, "conv2d: zero-sized weight {ws:?}");
        ensure!(self, stride >= 1, "conv2d: stride must be >= 1");
        ensure!(self, h + 2 * padding >= kh && wd + 2 * padding >= kw, "conv2d: kernel {kh}x{kw} larger than the padded input {}x{}", h + 2 * padding, wd + 2 * padding);
        if let Some(b) = b {
            ensure!(self, self.shape(b) == [cout], "conv2d: bias must be [{cout}]");
        }
        let ho = (h + 2 * padding - kh) / stride + 1;
        let wo = (wd + 2 * padding - kw) / stride + 1;
        // GPU kernels index with u32
        for len in [batch * h * wd * cin, batch * ho * wo * cout, cout * cin * kh * kw] {
            ensure!(self, len < u32::MAX as usize, "conv2d: tensor of {len} elements exceeds u32 indexing");
        }
        let op = Conv2d { batch, h, w: wd, cin, cout, kh, kw, stride, pad: padding, ho, wo, bias: b.is_some() };
        let inputs: Vec<Var> = [x, w].into_iter().chain(b).collect();
        self.push(op, &inputs, &[batch, ho, wo, cout])
    }
}

/// Bench case: a `c`-channel k x k conv2d with bias and "same" padding on x [batch, hw, hw, c].
pub fn bench_case(batch: usize, hw: usize, c: usize, k: usize) -> Case {
    let pad = k / 2;
    let shape = format!("x[{batch},{hw},{hw},{c}] w[{c},{c},{k},{k}] pad {pad} +bias");
    Case::new("conv2d", shape, Bound::Compute, move |g, _| {
        let x = g.input_with_grad("x", &[batch, hw, hw, c]);
        let w = g.param("w", &[c, c, k, k]);
        let bias = g.param("b", &[c]);
        g.conv2d(x, w, Some(bias), 1, pad)
    })
}
