//! slotforge: Slot Attention training on the `slotforge-engine` (hand-written WGSL kernels
//! on wgpu and a native CPU backend, reverse-mode autograd over a recorded graph).
//!
//! This crate is the application: the models, the Slot Attention ops (added to the engine
//! through its public `Op` trait), data, training, metrics, pictures and the CLI. The
//! engine's modules are re-exported under their names (`slotforge::exec`, `crate::graph`,
//! ...) so that application code names them the same way as its own.
//!
//! ```
//! use slotforge::graph::Graph;
//! use slotforge::ops::SlotOps; // the Slot Attention ops as graph methods
//! let mut g = Graph::new();
//! let attn = g.input_with_grad("attn", &[2, 16, 4]); // [B, N, K], softmaxed over K
//! let w = g.attn_renorm(attn, 1e-8); // each slot's weights over the N tokens sum to 1
//! assert_eq!(g.shape(w), &[2, 16, 4]);
//! assert!(g.check().is_ok());
//! ```

pub use slotforge_engine::{backend, exec, graph};
pub use slotforge_spectral as spectral;

pub mod bench;
pub mod bench_data;
pub mod checkpoint;
pub mod data;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod train;
pub mod viz;
