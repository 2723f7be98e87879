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
