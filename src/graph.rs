//! The model as a graph: variables (inputs, parameters, computed values) and the ops
//! that connect them. Recorded once; the executor replays it every step.

use crate::backend::{Buf, Ctx};

/// A variable in a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(pub usize);

#[derive(Clone, Debug, PartialEq)]
pub enum VarKind {
    /// Data fed in every step (features, noise). Gets a gradient only if asked for.
    Input,
    /// A learned parameter: always gets a gradient.
    Param,
    /// The output of node `n`.
    Computed(usize),
}

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

#[derive(Debug)]
pub struct Node {
    pub op: Box<dyn Op>,
    pub inputs: Vec<Var>,
    pub output: Var,
}

#[derive(Debug, Default)]
pub struct Graph {
    pub vars: Vec<VarInfo>,
    pub nodes: Vec<Node>,
}

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
            assert!(
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

    pub fn shape(&self, v: Var) -> &[usize] {
        &self.vars[v.0].shape
    }

    pub fn len(&self, v: Var) -> usize {
        self.vars[v.0].len()
    }

    pub fn params(&self) -> Vec<Var> {
        (0..self.vars.len()).filter(|&i| self.vars[i].kind == VarKind::Param).map(Var).collect()
    }

    pub fn find(&self, name: &str) -> Option<Var> {
        self.vars.iter().position(|v| v.name == name).map(Var)
    }
}
