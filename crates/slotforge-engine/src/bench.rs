//! Benchmark cases: an op at one shape, declared in the op's folder (`bench_case`) and
//! placed at the sites of a model by the application's `bench kernels`, which times each
//! against the device's ceilings.

use crate::graph::{Graph, Var};
use crate::ops::matmul::GemmKernel;

/// What limits an op, and so which ceiling its rate is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Rated in GFLOP/s against the FMA peak.
    Compute,
    /// Rated in GB/s (bytes read + written) against the copy peak.
    Memory,
}

type Build = Box<dyn Fn(&mut Graph, GemmKernel) -> Var>;

/// One op at one shape: a one-node graph built by `build`.
pub struct Case {
    pub op: &'static str,
    /// Where in the model this op runs at this shape (set by [`Case::at`]).
    pub site: &'static str,
    pub shape: String,
    pub bound: Bound,
    /// A GEMM: on wgpu it runs once per kernel variant.
    pub gemm: bool,
    /// Inputs drawn from (0, 1] instead of (-1, 1).
    pub positive: bool,
    /// Floats read + written by (forward, backward) when the generic count is wrong.
    pub traffic: Option<(usize, usize)>,
    pub build: Build,
}

impl Case {
    pub fn new(op: &'static str, shape: String, bound: Bound, build: impl Fn(&mut Graph, GemmKernel) -> Var + 'static) -> Case {
        Case { op, site: "", shape, bound, gemm: false, positive: false, traffic: None, build: Box::new(build) }
    }
    pub fn at(mut self, site: &'static str) -> Case {
        self.site = site;
        self
    }
    pub fn gemm(mut self) -> Case {
        self.gemm = true;
        self
    }
    pub fn positive(mut self) -> Case {
        self.positive = true;
        self
    }
    pub fn traffic(mut self, fwd: usize, bwd: usize) -> Case {
        self.traffic = Some((fwd, bwd));
        self
    }
}

/// Input `name`, with a gradient when `grad` (matching whether the model needs dL/dx there).
pub fn input(g: &mut Graph, name: &str, shape: &[usize], grad: bool) -> Var {
    if grad { g.input_with_grad(name, shape) } else { g.input(name, shape) }
}
