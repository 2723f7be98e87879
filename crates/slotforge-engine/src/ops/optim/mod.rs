//! Adam with global gradient-norm clipping (PyTorch semantics: `clip_grad_norm_` then
//! `torch.optim.Adam`, no weight decay). Not a graph op: `record` runs inside the
//! executor's step program after the backward, so on wgpu a whole step stays one
//! submission and nothing is read back. WGSL: `shaders/optim.wgsl`.
//!
//! Device pipeline per step:
//!   1. per param, each workgroup writes the sum of squares of a strided slice of the
//!      gradient into its own slot of `partials` (no float atomics);
//!   2. one workgroup sums the slots in a fixed order, computes norm and clip scale and
//!      copies this step's hyper-parameters next to them into `stats`;
//!   3. per param, the element-wise Adam update reads the scale from `stats`.
//! The host only uploads `hyper` (step size and bias correction) in `set_step`.

use std::cell::Cell;

use rayon::prelude::*;

use crate::backend::{shader, Buf, Ctx, Shader};
use crate::error::{Error, Result};
use crate::exec::{Executor, Layout};
use crate::par::PAR_MIN;
use crate::graph::Var;

const WGSL: Shader = shader!("optim");

crate::kernel_params! {
    pub struct AdamParams in "optim" {
        /// elements (sumsq_partial, adam_update) or partial slots (norm_finalize)
        n: u32,
        /// first partial slot of this param (sumsq_partial)
        slot: u32,
        /// clip threshold, 0 = no clipping (norm_finalize)
        max_norm: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
    }
}

/// Fail with [`Error::Invalid`] unless `cond`.
fn check(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if cond { Ok(()) } else { Err(Error::Invalid(msg())) }
}

/// Threads per workgroup of the optimizer kernels.
const WG: usize = 256;
/// Each norm thread sums at least this many elements before the workgroup reduction.
const NORM_ELEMS_PER_THREAD: usize = 8;
/// Cap on workgroups (and so partial slots) per parameter.
const NORM_MAX_GROUPS: usize = 256;

// Layout of `stats` (written on the device every step).
const NORM: usize = 0;
const SCALE: usize = 1;
const STEP_SIZE: usize = 2;
const BC2_SQRT: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Clip the global L2 norm of all gradients to this value; `None` disables clipping
    /// (the norm is still computed for `last_grad_norm`).
    pub max_grad_norm: Option<f32>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, max_grad_norm: Some(1.0) }
    }
}

#[derive(Debug)]
struct Slot {
    var: Var,
    name: String,
    m: Buf,
    v: Buf,
    /// First partial-sum slot and number of workgroups of this param's norm kernel.
    first_slot: usize,
    groups: usize,
}

#[derive(Debug)]
pub struct Adam {
    pub cfg: AdamConfig,
    slots: Vec<Slot>,
    /// Host-written per step: [lr / (1 - beta1^t), sqrt(1 - beta2^t)].
    hyper: Buf,
    /// Device-written per step: [norm, clip scale, step size, sqrt bias correction 2].
    stats: Buf,
    partials: Buf,
    n_partials: usize,
    step: Cell<u64>,
}

impl Adam {
    /// Allocate m, v (zeros) for every param and the small per-step buffers.
    pub fn new(ex: &mut Executor, params: &[Var], cfg: AdamConfig) -> Result<Adam> {
        check(cfg.lr.is_finite() && cfg.lr >= 0.0, || format!("adam: lr must be finite and >= 0, got {}", cfg.lr))?;
        check((0.0..1.0).contains(&cfg.beta1), || format!("adam: beta1 must be in [0, 1), got {}", cfg.beta1))?;
        check((0.0..1.0).contains(&cfg.beta2), || format!("adam: beta2 must be in [0, 1), got {}", cfg.beta2))?;
        check(cfg.eps > 0.0, || format!("adam: eps must be > 0, got {}", cfg.eps))?;
        if let Some(c) = cfg.max_grad_norm {
            check(c > 0.0 && c.is_finite(), || format!("adam: max_grad_norm must be finite and > 0, got {c}"))?;
        }
        let mut slots = Vec::with_capacity(params.len());
        let mut n_partials = 0;
        for (i, &var) in params.iter().enumerate() {
            let name = ex.graph().info(var).name.clone();
            check(!params[..i].contains(&var), || format!("adam: parameter {name} listed twice"))?;
            check(!slots.iter().any(|s: &Slot| s.name == name), || {
                format!("adam: two parameters named {name:?}; optimizer state is keyed by name")
            })?;
            check(ex.layout().grad(var).is_some(), || format!("adam: {name} has no gradient buffer"))?;
            let len = ex.graph().len(var);
            let groups = len.div_ceil(WG * NORM_ELEMS_PER_THREAD).min(NORM_MAX_GROUPS);
            let m = ex.alloc(len);
            let v = ex.alloc(len);
            slots.push(Slot { var, name, m, v, first_slot: n_partials, groups });
            n_partials += groups;
        }
        let hyper = ex.alloc(2);
        let stats = ex.alloc(4);
        let partials = ex.alloc(n_partials);
        let adam = Adam { cfg, slots, hyper, stats, partials, n_partials, step: Cell::new(0) };
        // A record before any set_step must not divide by a zero bias correction.
        ex.write(adam.hyper, &adam.hyper_values(1, cfg.lr))?;
        Ok(adam)
    }

    fn hyper_values(&self, t: u64, lr: f32) -> [f32; 2] {
        // f64 on the host: 1 - beta^t loses digits in f32 for beta2 = 0.999 and small t.
        let t = t.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - (self.cfg.beta1 as f64).powi(t);
        let bc2 = 1.0 - (self.cfg.beta2 as f64).powi(t);
        [(lr as f64 / bc1) as f32, bc2.sqrt() as f32]
    }

    /// Upload this step's hyper-parameters: learning rate and bias corrections of step t >= 1.
    pub fn set_step(&self, ex: &mut Executor, t: u64, lr: f32) -> Result<()> {
        check(t >= 1, || format!("adam: steps count from 1, got {t}"))?;
        ex.write(self.hyper, &self.hyper_values(t, lr))?;
        self.step.set(t);
        Ok(())
    }

    /// The t of the last `set_step` (or of the loaded state); 0 before any.
    pub fn step(&self) -> u64 {
        self.step.get()
    }

    /// Record (GPU) or run (CPU) the clip + update of every parameter.
    pub fn record(&self, cx: &mut Ctx, layout: &Layout) {
        let max_norm = self.cfg.max_grad_norm.unwrap_or(0.0); // 0 = no clipping
        let (b1, b2, eps) = (self.cfg.beta1, self.cfg.beta2, self.cfg.eps);
        match cx {
            Ctx::Cpu(s) => {
                // f64 sum of squares: the CPU backend is the reference.
                let mut ss = 0f64;
                for sl in &self.slots {
                    let g = s.get(grad(layout, sl.var));
                    ss += if g.len() >= PAR_MIN {
                        g.par_chunks(4096).map(sum_sq).sum::<f64>()
                    } else {
                        sum_sq(g)
                    };
                }
                let norm = ss.sqrt();
                let scale = if max_norm > 0.0 { (max_norm as f64 / (norm + 1e-6)).min(1.0) } else { 1.0 };
                let hyper = s.get(self.hyper).to_vec();
                let stats = s.get_mut(self.stats);
                stats[NORM] = norm as f32;
                stats[SCALE] = scale as f32;
                stats[STEP_SIZE] = hyper[0];
                stats[BC2_SQRT] = hyper[1];
                let h = AdamStep { scale: scale as f32, step_size: hyper[0], bc2_sqrt: hyper[1], b1, b2, eps };
                for sl in &self.slots {
                    let (p, g) = (layout.value(sl.var), grad(layout, sl.var));
                    s.run(&[g], &[p, sl.m, sl.v], |r, w| {
                        let [p, m, v] = w else { unreachable!() };
                        if p.len() >= PAR_MIN {
                            p.par_chunks_mut(4096)
                                .zip(m.par_chunks_mut(4096))
                                .zip(v.par_chunks_mut(4096))
                                .zip(r[0].par_chunks(4096))
                                .for_each(|(((p, m), v), g)| h.apply(p, m, v, g));
                        } else {
                            h.apply(p, m, v, r[0]);
                        }
                    });
                }
            }
            Ctx::Gpu(r) => {
                for sl in &self.slots {
                    let g = grad(layout, sl.var);
                    let params = AdamParams { n: g.len as u32, slot: sl.first_slot as u32, ..Default::default() };
                    r.dispatch(WGSL, "sumsq_partial", &params, &[g, self.partials], [sl.groups as u32, 1, 1]);
                }
                let params = AdamParams { n: self.n_partials as u32, max_norm, ..Default::default() };
                r.dispatch(WGSL, "norm_finalize", &params, &[self.partials, self.hyper, self.stats], [1, 1, 1]);
                for sl in &self.slots {
                    let (p, g) = (layout.value(sl.var), grad(layout, sl.var));
                    let params = AdamParams { n: p.len as u32, slot: 0, max_norm: 0.0, beta1: b1, beta2: b2, eps };
                    r.dispatch_1d(WGSL, "adam_update", &params, &[p, g, sl.m, sl.v, self.stats], p.len);
                }
            }
        }
    }

    /// Gradient norm (before clipping) of the last recorded step; reads back one float.
    pub fn last_grad_norm(&self, ex: &Executor) -> Result<f32> {
        Ok(ex.read(self.stats)?[NORM])
    }

    /// Clip scale applied in the last recorded step (1 when no clipping happened).
    pub fn last_clip_scale(&self, ex: &Executor) -> Result<f32> {
        Ok(ex.read(self.stats)?[SCALE])
    }

    /// Optimizer state for checkpoints: `adam/step` (t as two exact f32 words, low and
    /// high 24 bits), then `adam/m/<param>` and `adam/v/<param>` per parameter.
    pub fn state(&self, ex: &Executor) -> Result<Vec<(String, Vec<f32>)>> {
        let t = self.step.get();
        let mut out = vec![("adam/step".to_string(), vec![(t & 0xff_ffff) as f32, (t >> 24) as f32])];
        for sl in &self.slots {
            out.push((format!("adam/m/{}", sl.name), ex.read(sl.m)?));
            out.push((format!("adam/v/{}", sl.name), ex.read(sl.v)?));
        }
        Ok(out)
    }

    /// Restore a `state()`. Every entry must be present with the right length; the step
    /// counter is restored but hyper-parameters are not uploaded: call `set_step(step()+1, lr)`.
    pub fn load_state(&self, ex: &mut Executor, state: &[(String, Vec<f32>)]) -> Result<()> {
        let find = |name: &str, len: usize| -> Result<&Vec<f32>> {
            let Some((_, data)) = state.iter().find(|(n, _)| n == name) else {
                return Err(Error::State(format!("adam state: missing {name}")));
            };
            if data.len() != len {
                return Err(Error::State(format!("adam state: {name} has {} floats, expected {len}", data.len())));
            }
            Ok(data)
        };
        // Validate everything before writing anything.
        let step = find("adam/step", 2)?;
        let (lo, hi) = (step[0], step[1]);
        if !(lo >= 0.0 && hi >= 0.0 && lo.fract() == 0.0 && hi.fract() == 0.0 && lo < (1 << 24) as f32) {
            return Err(Error::State(format!("adam state: invalid step words {step:?}")));
        }
        let mut tensors = Vec::with_capacity(2 * self.slots.len());
        for sl in &self.slots {
            tensors.push((sl.m, find(&format!("adam/m/{}", sl.name), sl.m.len)?));
            tensors.push((sl.v, find(&format!("adam/v/{}", sl.name), sl.v.len)?));
        }
        for (buf, data) in tensors {
            ex.write(buf, data)?;
        }
        self.step.set(lo as u64 | ((hi as u64) << 24));
        Ok(())
    }
}

/// The gradient of a parameter (Adam::new checked that it has one).
fn grad(layout: &Layout, v: Var) -> Buf {
    layout.grad(v).expect("Adam::new checked every parameter has a gradient")
}

fn sum_sq(g: &[f32]) -> f64 {
    g.iter().map(|&x| (x as f64) * (x as f64)).sum()
}

/// The element-wise update, in f32 exactly as the kernel computes it.
#[derive(Clone, Copy)]
struct AdamStep {
    scale: f32,
    step_size: f32,
    bc2_sqrt: f32,
    b1: f32,
    b2: f32,
    eps: f32,
}

impl AdamStep {
    #[inline]
    fn apply(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            let g = g * self.scale;
            *m = self.b1 * *m + (1.0 - self.b1) * g;
            *v = self.b2 * *v + (1.0 - self.b2) * g * g;
            *p -= self.step_size * *m / (v.sqrt() / self.bc2_sqrt + self.eps);
        }
    }
}
