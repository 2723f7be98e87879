//! slotforge: Slot Attention training on hand-written WGSL kernels (wgpu) and a native
//! CPU backend, with reverse-mode autograd over a recorded graph.

pub mod backend;
pub mod bench;
pub mod bench_data;
pub mod bench_kernels;
pub mod checkpoint;
pub mod data;
pub mod exec;
pub mod graph;
pub mod metrics;
pub mod model;
pub mod ops;
mod simd;
pub mod spectral;
pub mod train;
pub mod viz;
