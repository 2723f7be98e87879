//! The engine's ops, one folder each: `ops/<op>/` holds the graph builder (documented with
//! its derivative), the CPU kernel and the wgpu dispatch of its kernels in
//! `shaders/<op>.wgsl`; the op's tests are `tests/<op>.rs`. Ops outside the engine (the
//! application's Slot Attention ops) implement the same [`Op`](crate::Op) trait.

pub mod conv;
pub mod elementwise;
pub mod gru;
pub mod layernorm;
pub mod linear;
pub mod matmul;
pub mod optim;
pub mod reduce;
pub mod softmax;

use crate::params::ParamsLayout;

/// Every WGSL file the engine embeds (`shaders/<name>.wgsl`), for the shader tests.
pub const SHADERS: &[&str] = &["conv", "elementwise", "gru", "layernorm", "linear", "matmul", "optim", "reduce", "softmax"];

/// Every kernel parameter struct of the engine, checked against its WGSL struct by a test.
pub fn kernel_params() -> Vec<ParamsLayout> {
    vec![
        ParamsLayout::of::<conv::ConvParams>(),
        ParamsLayout::of::<elementwise::UnaryParams>(),
        ParamsLayout::of::<elementwise::AccScaledParams>(),
        ParamsLayout::of::<elementwise::BinaryParams>(),
        ParamsLayout::of::<elementwise::BinaryGradParams>(),
        ParamsLayout::of::<elementwise::CopyColsParams>(),
        ParamsLayout::of::<elementwise::ConcatParams>(),
        ParamsLayout::of::<gru::GruParams>(),
        ParamsLayout::of::<layernorm::LayerNormParams>(),
        ParamsLayout::of::<linear::ColsumParams>(),
        ParamsLayout::of::<linear::MatvecParams>(),
        ParamsLayout::of::<matmul::MatmulParams>(),
        ParamsLayout::of::<matmul::SumPartialsParams>(),
        ParamsLayout::of::<optim::AdamParams>(),
        ParamsLayout::of::<reduce::ReduceParams>(),
        ParamsLayout::of::<softmax::SoftmaxParams>(),
    ]
}

/// Dot product with four f64 accumulators (vectorizes; the CPU backend is the reference).
pub fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x as f64 * y as f64).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] as f64 * y[l] as f64;
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}
