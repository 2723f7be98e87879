//! Ops: the engine's generic ones (`slotforge_engine::ops`, re-exported here) and the Slot
//! Attention ones this application adds through the engine's [`Op`](slotforge_engine::Op)
//! trait, one folder each like the engine's: `ops/<op>/` with the builder, the CPU kernel
//! and the GPU dispatch, `shaders/<op>.wgsl`, and the tests in `tests/<op>.rs`.

pub use slotforge_engine::ops::*;

pub mod attn_renorm;
pub mod cosine;
pub mod mixture;

use slotforge_engine::params::ParamsLayout;
use slotforge_engine::{Graph, Var};

/// Every WGSL file this crate embeds, for the shader tests.
pub const APP_SHADERS: &[&str] = &["attn_renorm", "cosine", "mixture"];

/// The kernel parameter structs of this crate's ops, checked against the WGSL by a test.
pub fn app_kernel_params() -> Vec<ParamsLayout> {
    vec![
        ParamsLayout::of::<attn_renorm::AttnRenormParams>(),
        ParamsLayout::of::<cosine::CosineParams>(),
        ParamsLayout::of::<mixture::MixtureParams>(),
    ]
}

/// The Slot Attention ops as graph methods, like the engine's builders
/// (`use slotforge::ops::SlotOps;`). Each one is documented at its op.
pub trait SlotOps {
    /// [`attn_renorm::attn_renorm`]
    fn attn_renorm(&mut self, attn: Var, eps: f32) -> Var;
    /// [`mixture::alpha_softmax`]
    fn alpha_softmax(&mut self, dec: Var) -> Var;
    /// [`mixture::alpha_combine`]
    fn alpha_combine(&mut self, dec: Var, alpha: Var) -> Var;
    /// [`mixture::mix_slots`]
    fn mix_slots(&mut self, x: Var, alpha: Var) -> Var;
    /// [`cosine::pairwise_cosine_mean`]
    fn pairwise_cosine_mean(&mut self, slots: Var, clamp: bool) -> Var;
}

impl SlotOps for Graph {
    fn attn_renorm(&mut self, attn: Var, eps: f32) -> Var {
        attn_renorm::attn_renorm(self, attn, eps)
    }
    fn alpha_softmax(&mut self, dec: Var) -> Var {
        mixture::alpha_softmax(self, dec)
    }
    fn alpha_combine(&mut self, dec: Var, alpha: Var) -> Var {
        mixture::alpha_combine(self, dec, alpha)
    }
    fn mix_slots(&mut self, x: Var, alpha: Var) -> Var {
        mixture::mix_slots(self, x, alpha)
    }
    fn pairwise_cosine_mean(&mut self, slots: Var, clamp: bool) -> Var {
        cosine::pairwise_cosine_mean(self, slots, clamp)
    }
}
