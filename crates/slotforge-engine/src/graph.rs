//! The model as a graph: variables (inputs, parameters, computed values) and the ops
//! that connect them. Recorded once; the executor replays it every step.
//!
//! Building never panics on a shape that does not fit: the builder keeps the first such
//! error, returns a placeholder variable, and [`Graph::check`] (which [`Executor::new`]
//! calls) returns it. So model code stays a plain list of ops, as in the paper.
//!
//! [`Executor::new`]: crate::Executor::new

use crate::backend::{Buf, Ctx};
use crate::error::{Error, Result};

/// A variable in a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(usize);

impl Var {
    /// Position in [`Graph::vars`] (and in the executor's [`Layout`](crate::Layout)).
    pub fn index(self) -> usize {
        self.0
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum VarKind {
    /// Data fed in every step (features, noise). Gets a gradient only if asked for.
    Input,
    /// A learned parameter: always gets a gradient.
    Param,
    /// The output of node `n`.
    Computed(usize),
}

/// What the graph knows of a variable (read-only: the graph hands out `&VarInfo`).
#[derive(Clone, Debug)]
pub struct VarInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: VarKind,
    pub needs_grad: bool,
}

impl VarInfo {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One op: forward computes `y` from `x`; backward *adds* dL/dx_i into `gx[i]`
/// (accumulating is what makes a variable used twice get the sum of its gradients).
/// `gx[i]` is `None` when input i needs no gradient (frozen inputs).
///
/// On the CPU an op computes on slices at once; on wgpu it records dispatches through the
/// [`Recorder`](crate::Recorder), which keeps any device failure for the executor to return.
pub trait Op: std::fmt::Debug {
    fn name(&self) -> &'static str;
    /// Floats the forward pass keeps for the backward pass (LayerNorm's mean and rstd, ...).
    fn saved_len(&self) -> usize {
        0
    }
    /// Floating-point operations of the forward pass (for benchmarks; 0 if negligible).
    fn flops(&self) -> u64 {
        0
    }
    fn forward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, saved: Buf);
    fn backward(&self, cx: &mut Ctx, x: &[Buf], y: Buf, saved: Buf, gy: Buf, gx: &[Option<Buf>]);
}

/// An op applied to input variables.
#[derive(Debug)]
pub struct Node {
    op: Box<dyn Op>,
    inputs: Vec<Var>,
    output: Var,
}

impl Node {
    pub fn op(&self) -> &dyn Op {
        self.op.as_ref()
    }
    pub fn inputs(&self) -> &[Var] {
        &self.inputs
    }
    pub fn output(&self) -> Var {
        self.output
    }
}

#[derive(Debug, Default)]
pub struct Graph {
    vars: Vec<VarInfo>,
    nodes: Vec<Node>,
    error: Option<Error>,
}

/// In a graph builder: unless `cond`, keep a shape error in graph `g` and return a
/// placeholder variable (see [`Graph::shape_error`]).
#[macro_export]
macro_rules! ensure_shape {
    ($g:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            return $g.shape_error(format!($($msg)+));
        }
    };
}
pub(crate) use crate::ensure_shape as ensure;

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    fn var(&mut self, name: &str, shape: &[usize], kind: VarKind, needs_grad: bool) -> Var {
        self.vars.push(VarInfo { name: name.to_string(), shape: shape.to_vec(), kind, needs_grad });
        Var(self.vars.len() - 1)
    }

    /// Data fed each step; no gradient.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Var {
        self.var(name, shape, VarKind::Input, false)
    }

    /// Data fed each step whose gradient is wanted (gradient checks, d loss / d features).
    pub fn input_with_grad(&mut self, name: &str, shape: &[usize]) -> Var {
        self.var(name, shape, VarKind::Input, true)
    }

    pub fn param(&mut self, name: &str, shape: &[usize]) -> Var {
        self.var(name, shape, VarKind::Param, true)
    }

    /// Append `op` applied to `inputs`, producing a variable of `shape`.
    pub fn push(&mut self, op: impl Op + 'static, inputs: &[Var], shape: &[usize]) -> Var {
        for (i, a) in inputs.iter().enumerate() {
            ensure!(
                self,
                !inputs[..i].contains(a),
                "{}: the same variable twice as input; use a dedicated op (e.g. square)",
                op.name()
            );
        }
        let needs_grad = inputs.iter().any(|v| self.vars[v.0].needs_grad);
        let name = format!("{}#{}", op.name(), self.nodes.len());
        let out = self.var(&name, shape, VarKind::Computed(self.nodes.len()), needs_grad);
        self.nodes.push(Node { op: Box::new(op), inputs: inputs.to_vec(), output: out });
        out
    }

    /// Keep `msg` as the graph's error (the first one wins) and return a placeholder: an
    /// empty input, so that building can go on to the end without panicking.
    pub fn shape_error(&mut self, msg: String) -> Var {
        self.error.get_or_insert(Error::Shape(msg));
        self.var("<invalid>", &[0], VarKind::Input, false)
    }

    /// The first shape error met while building, if any.
    pub fn check(&self) -> Result<()> {
        match &self.error {
            Some(Error::Shape(m)) => Err(Error::Shape(m.clone())),
            _ => Ok(()),
        }
    }

    pub fn shape(&self, v: Var) -> &[usize] {
        &self.vars[v.0].shape
    }

    pub fn len(&self, v: Var) -> usize {
        self.vars[v.0].len()
    }

    pub fn info(&self, v: Var) -> &VarInfo {
        &self.vars[v.0]
    }

    /// Every variable with its info, in creation order.
    pub fn vars(&self) -> impl ExactSizeIterator<Item = (Var, &VarInfo)> {
        self.vars.iter().enumerate().map(|(i, v)| (Var(i), v))
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn params(&self) -> Vec<Var> {
        (0..self.vars.len()).filter(|&i| self.vars[i].kind == VarKind::Param).map(Var).collect()
    }

    pub fn find(&self, name: &str) -> Option<Var> {
        self.vars.iter().position(|v| v.name == name).map(Var)
    }
}
