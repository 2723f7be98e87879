//! slotforge-engine: a small reverse-mode autograd engine. A model is recorded once as a
//! [`Graph`] of [`Op`]s; an [`Executor`] owns every buffer and runs the graph's programs
//! (forward, backward, an optimizer step) on the native CPU backend or on wgpu, where each
//! op dispatches a hand-written WGSL kernel (`shaders/<op>.wgsl` in the repository).
//!
//! ```
//! use slotforge_engine::{Device, Executor, Graph};
//!
//! let mut g = Graph::new();
//! let x = g.input("x", &[2, 3]);
//! let w = g.param("w", &[4, 3]);
//! let y = g.linear(x, w, None, true); // relu(x w^T), [2, 4]
//! let loss = g.mean(y);
//! let mut ex = Executor::new(g, Device::Cpu)?;
//! ex.set(x, &[1.0, 2.0, 3.0, -1.0, 0.5, 0.0])?;
//! ex.set(w, &[0.1; 12])?;
//! ex.forward_backward(loss)?;
//! assert_eq!(ex.get(y)?.len(), 8);
//! assert!(ex.get_grad(w)?.is_some());
//! # Ok::<(), slotforge_engine::Error>(())
//! ```
//!
//! Errors are typed ([`Error`]): a shape that does not fit an op is kept by the graph and
//! returned by [`Executor::new`] (so the model code stays a plain list of ops); a shader or
//! bind-group failure while recording, or a failed readback, is returned by the call that
//! ran the program.

// `kernel_params!` names this crate by its name, also from inside it.
extern crate self as slotforge_engine;

pub mod backend;
pub mod bench;
mod error;
pub mod exec;
pub mod graph;
pub mod ops;
pub mod par;
pub mod params;
pub mod testing;

pub use backend::{Buf, Ctx, Device, DeviceKind, Gpu, Recorder, Shader};
pub use error::{Error, Result};
pub use exec::{Executor, Layout};
pub use graph::{Graph, Op, Var, VarInfo, VarKind};

/// For [`kernel_params!`]: parameter structs derive bytemuck's `Pod`.
pub use bytemuck;
