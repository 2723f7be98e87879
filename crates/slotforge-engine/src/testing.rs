//! The test harness: one device-generic check for every op, the engine's and any op an
//! application adds through [`Op`](crate::Op).
//!
//! `check_op` builds a small graph, fills every input and parameter with seeded random
//! values, and checks three things:
//!   1. wgpu forward and backward against the CPU backend (same inputs, same upstream
//!      gradient);
//!   2. the CPU backward against central finite differences of L = sum(y * upstream);
//!   3. nothing non-finite anywhere.
//! It prints one `ERR` line per op and backend with the largest relative error, so
//! `cargo test -- --nocapture` lists them all.
//!
//! ```no_run
//! use slotforge_engine::testing::{check_op, Check};
//! // needs a wgpu adapter: the GPU half fails, never skips, without one
//! check_op("tanh", |g| { let x = g.input_with_grad("x", &[3, 4]); g.tanh(x) }, Check::default());
//! ```

use std::sync::{Arc, OnceLock};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::{Device, Gpu};
use crate::exec::Executor;
use crate::graph::{Graph, Var, VarKind};

/// The one GPU device every test shares (lavapipe leaks memory per device).
/// Panics, failing the test, when no adapter exists: GPU tests never skip.
pub fn gpu() -> Device {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    let g = GPU.get_or_init(|| {
        let g = crate::backend::open_any_gpu().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
        eprintln!("GPU tests run on: {} ({:?}, {:?})", g.info().name, g.info().backend, g.info().device_type);
        Arc::new(g)
    });
    Device::Gpu(g.clone())
}

#[derive(Clone, Debug)]
pub struct Check {
    /// GPU vs CPU: |gpu - cpu| <= abs + rel * |cpu|.
    pub gpu_rel: f32,
    pub gpu_abs: f32,
    /// Finite differences vs CPU analytic gradient, same form.
    pub fd_rel: f32,
    pub fd_abs: f32,
    /// Step of the central difference.
    pub fd_h: f32,
    /// Elements probed per input by finite differences.
    pub fd_probes: usize,
    pub fd: bool,
    pub seed: u64,
}

impl Default for Check {
    fn default() -> Self {
        // GPU vs CPU: both f32, differing only in summation order and in the exp/tanh
        // approximations of the driver: a few ulps per term, amplified by sums of up to a
        // few hundred terms, stays below 1e-4 relative; 1e-5 absolute covers values near 0.
        // Finite differences in f32 with h = 1e-2: truncation O(h^2) ~ 1e-4 and rounding
        // O(eps * |L| / h) ~ 1e-4 for |L| ~ 10, so 1e-2 relative + 1e-3 absolute.
        Check { gpu_rel: 1e-4, gpu_abs: 1e-5, fd_rel: 1e-2, fd_abs: 1e-3, fd_h: 1e-2, fd_probes: 24, fd: true, seed: 7 }
    }
}

pub fn randn(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    use rand_distr::{Distribution, StandardNormal};
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// Values for every input/param var. `init` may override a var by name.
pub fn fill(ex: &mut Executor, seed: u64, init: &dyn Fn(&str, usize, &mut ChaCha8Rng) -> Option<Vec<f32>>) -> Vec<(Var, Vec<f32>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut vals = Vec::new();
    let vars: Vec<(Var, crate::VarInfo)> = ex.graph().vars().map(|(v, i)| (v, i.clone())).collect();
    for (v, info) in vars {
        if info.kind == VarKind::Input || info.kind == VarKind::Param {
            let data = init(&info.name, info.len(), &mut rng).unwrap_or_else(|| randn(&mut rng, info.len()));
            ex.set(v, &data).unwrap();
            vals.push((v, data));
        }
    }
    vals
}

/// Largest |a - b| / (abs + rel * |b|) (must be <= 1) and largest plain relative error.
pub fn compare(a: &[f32], b: &[f32], rel: f32, abs: f32) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    let mut worst_rel = 0f32;
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    for (x, y) in a.iter().zip(b) {
        assert!(x.is_finite() && y.is_finite(), "non-finite value: {x} vs {y}");
        let d = (x - y).abs();
        worst = worst.max(d / (abs + rel * y.abs()));
        // relative to the element, floored at 1e-3 of the tensor's scale so zeros do not divide
        worst_rel = worst_rel.max(d / y.abs().max(1e-3 * scale));
    }
    (worst, worst_rel)
}

pub struct Outcome {
    pub y: Vec<f32>,
    pub grads: Vec<(String, Vec<f32>)>,
}

fn run(device: Device, build: &dyn Fn(&mut Graph) -> Var, c: &Check, init: &dyn Fn(&str, usize, &mut ChaCha8Rng) -> Option<Vec<f32>>) -> (Outcome, Executor, Var) {
    let mut g = Graph::new();
    let out = build(&mut g);
    let mut ex = Executor::new(g, device).unwrap();
    fill(&mut ex, c.seed, init);
    ex.forward().unwrap();
    let y = ex.get(out).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(c.seed ^ 0xdead);
    let up = randn(&mut rng, y.len());
    let mut grads = Vec::new();
    if ex.graph().info(out).needs_grad {
        ex.backward_with(out, &up).unwrap();
        for (v, info) in ex.graph().vars() {
            if matches!(info.kind, VarKind::Input | VarKind::Param) && info.needs_grad {
                grads.push((info.name.clone(), ex.get_grad(v).unwrap().unwrap()));
            }
        }
    }
    (Outcome { y, grads }, ex, out)
}

/// Check an op (or a small composition) built by `build` on both backends. Returns the
/// worst relative error GPU-vs-CPU and FD-vs-CPU.
pub fn check_op(name: &str, build: impl Fn(&mut Graph) -> Var, c: Check) -> (f32, f32) {
    check_op_with(name, build, c, |_, _, _| None)
}

pub fn check_op_with(
    name: &str,
    build: impl Fn(&mut Graph) -> Var,
    c: Check,
    init: impl Fn(&str, usize, &mut ChaCha8Rng) -> Option<Vec<f32>>,
) -> (f32, f32) {
    let (cpu, mut ex, out) = run(Device::Cpu, &build, &c, &init);
    let (gpu_res, _, _) = run(gpu(), &build, &c, &init);

    let mut gpu_worst = 0f32;
    let (w, r) = compare(&gpu_res.y, &cpu.y, c.gpu_rel, c.gpu_abs);
    assert!(w <= 1.0, "{name}: GPU forward differs from CPU (worst ratio {w}, rel {r})");
    gpu_worst = gpu_worst.max(r);
    for ((n, gg), (_, cg)) in gpu_res.grads.iter().zip(&cpu.grads) {
        let (w, r) = compare(gg, cg, c.gpu_rel, c.gpu_abs);
        assert!(w <= 1.0, "{name}: GPU gradient of {n} differs from CPU (worst ratio {w}, rel {r})");
        gpu_worst = gpu_worst.max(r);
    }

    let mut fd_worst = 0f32;
    if c.fd && !cpu.grads.is_empty() {
        let mut rng = ChaCha8Rng::seed_from_u64(c.seed ^ 0xdead);
        let up = randn(&mut rng, cpu.y.len());
        let loss = |ex: &mut Executor| -> f64 {
            ex.forward().unwrap();
            ex.get(out).unwrap().iter().zip(&up).map(|(a, b)| *a as f64 * *b as f64).sum()
        };
        let mut prng = ChaCha8Rng::seed_from_u64(c.seed ^ 0xbeef);
        for (gname, grad) in &cpu.grads {
            let v = ex.graph().find(gname).unwrap();
            let base = ex.get(v).unwrap();
            let scale = grad.iter().fold(0f32, |m, x| m.max(x.abs()));
            for _ in 0..c.fd_probes.min(base.len()) {
                let i = prng.random_range(0..base.len());
                let mut p = base.clone();
                p[i] = base[i] + c.fd_h;
                ex.set(v, &p).unwrap();
                let lp = loss(&mut ex);
                p[i] = base[i] - c.fd_h;
                ex.set(v, &p).unwrap();
                let lm = loss(&mut ex);
                ex.set(v, &base).unwrap();
                let fd = ((lp - lm) / (2.0 * c.fd_h as f64)) as f32;
                let d = (fd - grad[i]).abs();
                assert!(
                    d <= c.fd_abs + c.fd_rel * grad[i].abs().max(0.1 * scale),
                    "{name}: d/d {gname}[{i}]: finite difference {fd} vs analytic {}", grad[i]
                );
                fd_worst = fd_worst.max(d / grad[i].abs().max(1e-2 * scale).max(1e-6));
            }
        }
    }
    println!("ERR op={name} gpu_vs_cpu_rel={gpu_worst:.3e} fd_vs_cpu_rel={fd_worst:.3e}");
    (gpu_worst, fd_worst)
}

