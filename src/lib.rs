//! slotforge: Slot Attention training on hand-written WGSL kernels (wgpu) and a native
//! CPU backend, with reverse-mode autograd over a recorded graph.

pub mod backend;
pub mod exec;
pub mod graph;
pub mod ops;
pub mod spectral;
