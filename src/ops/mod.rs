//! Ops, one file per family: the graph builder method, forward and backward, the CPU
//! kernel and the wgpu dispatch (WGSL in `shaders/<family>.wgsl`) side by side.

pub mod conv;
pub mod cosine;
pub mod elementwise;
pub mod gru;
pub mod layernorm;
pub mod matmul;
pub mod mixture;
pub mod optim;
pub mod reduce;
pub mod slot_attention;
pub mod softmax;

/// Dot product with four f64 accumulators (vectorizes; the CPU backend is the reference).
pub(crate) fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
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
