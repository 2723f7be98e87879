use slotforge_engine::testing::*;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use slotforge_engine::backend::Device;
use slotforge_engine::exec::{self, Executor};
use slotforge_engine::graph::{Graph, Var};
use slotforge_engine::ops::optim::{Adam, AdamConfig};

/// Awkward sizes: a scalar, a tail-only vector, a few workgroups, and one above the CPU
/// parallel threshold (and with many norm workgroups on the GPU).
const SIZES: [usize; 4] = [1, 7, 1000, 40_000];

fn params_graph(sizes: &[usize]) -> (Graph, Vec<Var>) {
    let mut g = Graph::new();
    let vars = sizes.iter().enumerate().map(|(i, &n)| g.param(&format!("p{i}"), &[n])).collect();
    (g, vars)
}

/// Learning rate schedule of the tests: changes every step so `set_step` is exercised.
fn lr_at(t: u64) -> f32 {
    1e-2 * (1.0 + 0.5 * (t as f32).sin())
}

/// Gradients of step t: alternately large (norm ~ 200, clipped at 1) and small (norm ~ 0.02).
fn grads_at(sizes: &[usize], seed: u64, t: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed * 1000 + t);
    let mag = if t % 2 == 1 { 1.0 } else { 1e-4 };
    sizes.iter().map(|&n| randn(&mut rng, n).iter().map(|x| x * mag).collect()).collect()
}

fn init_params(sizes: &[usize], seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    sizes.iter().map(|&n| randn(&mut rng, n)).collect()
}

/// PyTorch `clip_grad_norm_` + `Adam` in f64.
struct RefAdam {
    cfg: AdamConfig,
    p: Vec<Vec<f64>>,
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
}

impl RefAdam {
    fn new(cfg: AdamConfig, p: &[Vec<f32>]) -> RefAdam {
        let p: Vec<Vec<f64>> = p.iter().map(|x| x.iter().map(|&v| v as f64).collect()).collect();
        let z: Vec<Vec<f64>> = p.iter().map(|x| vec![0.0; x.len()]).collect();
        RefAdam { cfg, p, m: z.clone(), v: z }
    }

    /// Returns the pre-clip gradient norm.
    fn step(&mut self, t: u64, lr: f64, grads: &[Vec<f32>]) -> f64 {
        let norm = grads.iter().flatten().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
        let scale = match self.cfg.max_grad_norm {
            Some(c) => (c as f64 / (norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        let (b1, b2, eps) = (self.cfg.beta1 as f64, self.cfg.beta2 as f64, self.cfg.eps as f64);
        let bc1 = 1.0 - b1.powi(t as i32);
        let bc2 = 1.0 - b2.powi(t as i32);
        for (k, g) in grads.iter().enumerate() {
            for (i, &g) in g.iter().enumerate() {
                let g = g as f64 * scale;
                self.m[k][i] = b1 * self.m[k][i] + (1.0 - b1) * g;
                self.v[k][i] = b2 * self.v[k][i] + (1.0 - b2) * g * g;
                let m_hat = self.m[k][i] / bc1;
                let v_hat = self.v[k][i] / bc2;
                self.p[k][i] -= lr * m_hat / (v_hat.sqrt() + eps);
            }
        }
        norm
    }
}

struct Run {
    ex: Executor,
    vars: Vec<Var>,
    adam: Adam,
}

fn setup(device: Device, sizes: &[usize], cfg: AdamConfig, seed: u64) -> Run {
    let (g, vars) = params_graph(sizes);
    let mut ex = Executor::new(g, device).unwrap();
    for (v, p) in vars.iter().zip(init_params(sizes, seed)) {
        ex.set(*v, &p).unwrap();
    }
    let adam = Adam::new(&mut ex, &vars, cfg).unwrap();
    Run { ex, vars, adam }
}

/// One optimizer step with the given gradients written straight into the grad buffers.
fn step(r: &mut Run, t: u64, grads: &[Vec<f32>]) {
    for (v, g) in r.vars.iter().zip(grads) {
        let b = r.ex.layout().grad(*v).unwrap();
        r.ex.write(b, g).unwrap();
    }
    r.adam.set_step(&mut r.ex, t, lr_at(t)).unwrap();
    let adam = &r.adam;
    r.ex.run("adam", |cx, _g, l| adam.record(cx, l)).unwrap();
}

fn params_of(r: &Run) -> Vec<Vec<f32>> {
    r.vars.iter().map(|v| r.ex.get(*v).unwrap()).collect()
}

/// Largest |a - b| / (rel * (|b| + max|b|) + tiny): elements near zero are judged against
/// the tensor's scale, since their error comes from cancelling terms of that size.
fn worst(a: &[f32], b: &[f64], rel: f64) -> f64 {
    let scale = b.iter().fold(0f64, |m, y| m.max(y.abs()));
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).abs() / (rel * (y.abs() + scale) + 1e-30)).fold(0.0, f64::max)
}

fn configs() -> Vec<(&'static str, AdamConfig)> {
    vec![
        ("clip=1", AdamConfig::default()),
        ("noclip", AdamConfig { max_grad_norm: None, ..AdamConfig::default() }),
        ("clip=5 b=(0.5,0.9) eps=1e-3", AdamConfig { lr: 1e-2, beta1: 0.5, beta2: 0.9, eps: 1e-3, max_grad_norm: Some(5.0) }),
    ]
}

#[test]
fn cpu_matches_f64_pytorch_adam() {
    for (name, cfg) in configs() {
        let mut run = setup(Device::Cpu, &SIZES, cfg, 1);
        let mut reference = RefAdam::new(cfg, &init_params(&SIZES, 1));
        let mut clipped = [false, false];
        let mut worst_p = 0f64;
        let mut worst_mv = 0f64;
        for t in 1..=6 {
            let grads = grads_at(&SIZES, 1, t);
            step(&mut run, t, &grads);
            let norm = reference.step(t, lr_at(t) as f64, &grads);
            let got = run.adam.last_grad_norm(&run.ex).unwrap() as f64;
            assert!((got - norm).abs() <= 1e-6 * norm, "{name} step {t}: grad norm {got} vs {norm}");
            let scale = run.adam.last_clip_scale(&run.ex).unwrap();
            clipped[(scale < 1.0) as usize] = true;
            // Params: f32 storage rounds to ~6e-8 relative per step and the update (~lr) carries
            // f32 relative error ~1e-6. m, v: f32 recurrences of a few steps, ~1e-7 each.
            for (k, p) in params_of(&run).iter().enumerate() {
                worst_p = worst_p.max(worst(p, &reference.p[k], 1e-6));
            }
            let state = run.adam.state(&run.ex).unwrap();
            for (k, _) in SIZES.iter().enumerate() {
                let m = &state.iter().find(|(n, _)| *n == format!("adam/m/p{k}")).unwrap().1;
                let v = &state.iter().find(|(n, _)| *n == format!("adam/v/p{k}")).unwrap().1;
                worst_mv = worst_mv.max(worst(m, &reference.m[k], 1e-6));
                worst_mv = worst_mv.max(worst(v, &reference.v[k], 1e-6));
            }
        }
        // tolerance 1e-6 relative to (|ref| + max|ref|): print that relative error
        println!("ERR op=adam {name} cpu_vs_f64_ref_rel params={:.3e} m_v={:.3e}", worst_p * 1e-6, worst_mv * 1e-6);
        assert!(worst_p <= 1.0, "{name}: params differ from the f64 reference (ratio {worst_p})");
        assert!(worst_mv <= 1.0, "{name}: m/v differ from the f64 reference (ratio {worst_mv})");
        if cfg.max_grad_norm.is_some() {
            assert!(clipped[0] && clipped[1], "{name}: steps should include clipped and unclipped ones");
        } else {
            assert!(!clipped[1], "{name}: no clipping configured but scale < 1");
        }
    }
}

#[test]
fn gpu_matches_cpu() {
    for (name, cfg) in configs() {
        let mut cpu = setup(Device::Cpu, &SIZES, cfg, 2);
        let mut gpu_run = setup(gpu(), &SIZES, cfg, 2);
        let mut worst_norm = 0f32;
        for t in 1..=5 {
            let grads = grads_at(&SIZES, 2, t);
            step(&mut cpu, t, &grads);
            step(&mut gpu_run, t, &grads);
            let (a, b) = (gpu_run.adam.last_grad_norm(&gpu_run.ex).unwrap(), cpu.adam.last_grad_norm(&cpu.ex).unwrap());
            // f32 partial sums on the GPU vs f64 on the CPU over 41k squares
            assert!((a - b).abs() <= 1e-5 * b, "{name} step {t}: GPU norm {a} vs CPU {b}");
            worst_norm = worst_norm.max((a - b).abs() / b);
        }
        assert_eq!(gpu_run.ex.dispatch_count("adam"), 2 * SIZES.len() + 1, "one norm + one update dispatch per param, one finalize");
        let mut worst_rel = 0f32;
        for (a, b) in params_of(&gpu_run).iter().zip(params_of(&cpu)) {
            let (w, r) = compare(a, &b, 1e-5, 1e-6);
            assert!(w <= 1.0, "{name}: GPU params differ from CPU (ratio {w}, rel {r})");
            worst_rel = worst_rel.max(r);
        }
        for ((na, a), (_, b)) in gpu_run.adam.state(&gpu_run.ex).unwrap().iter().zip(cpu.adam.state(&cpu.ex).unwrap()) {
            // m, v: the clip scale differs in the last bits (f32 vs f64 norm), nothing else
            let (w, r) = compare(a, &b, 1e-5, 1e-9);
            assert!(w <= 1.0, "{name}: GPU {na} differs from CPU (ratio {w}, rel {r})");
            worst_rel = worst_rel.max(r);
        }
        println!("ERR op=adam {name} gpu_vs_cpu_rel={worst_rel:.3e} norm_rel={worst_norm:.3e}");
    }
}

#[test]
fn state_round_trip_continues_identically() {
    let cfg = AdamConfig::default();
    for device in [Device::Cpu, gpu()] {
        let dev_name = device.name();
        let mut a = setup(device.clone(), &SIZES, cfg, 3);
        for t in 1..=3 {
            step(&mut a, t, &grads_at(&SIZES, 3, t));
        }
        let state = a.adam.state(&a.ex).unwrap();
        assert_eq!(a.adam.step(), 3);
        let saved_params = params_of(&a);

        // A fresh executor and optimizer, resumed from the checkpoint.
        let mut b = setup(device.clone(), &SIZES, cfg, 99);
        for (v, p) in b.vars.clone().iter().zip(&saved_params) {
            b.ex.set(*v, p).unwrap();
        }
        b.adam.load_state(&mut b.ex, &state).unwrap();
        assert_eq!(b.adam.step(), 3);
        assert_eq!(b.adam.state(&b.ex).unwrap(), state);
        for t in 4..=6 {
            let grads = grads_at(&SIZES, 3, t);
            step(&mut a, t, &grads);
            let next = b.adam.step() + 1;
            step(&mut b, next, &grads);
        }
        // Same device, same inputs, same kernels: bit-identical.
        assert_eq!(params_of(&a), params_of(&b), "{dev_name}: resumed run diverged");
        assert_eq!(a.adam.state(&a.ex).unwrap(), b.adam.state(&b.ex).unwrap(), "{dev_name}: resumed state diverged");
        println!("ERR op=adam state_round_trip device={dev_name} resumed_vs_continuous=0 (bitwise)");

        // Bad checkpoints are rejected without touching the state.
        let mut missing = state.clone();
        missing.retain(|(n, _)| n != "adam/v/p2");
        let err = b.adam.load_state(&mut b.ex, &missing).unwrap_err().to_string();
        assert!(err.contains("adam/v/p2"), "{err}");
        let mut short = state.clone();
        short[1].1.pop();
        assert!(b.adam.load_state(&mut b.ex, &short).is_err());
        assert_eq!(b.adam.step(), 6);
    }
}

#[test]
fn large_step_counts_survive_the_checkpoint() {
    let cfg = AdamConfig::default();
    let a = setup(Device::Cpu, &[3], cfg, 4);
    let mut ex = a.ex;
    let t = (1u64 << 30) + 12345;
    a.adam.set_step(&mut ex, t, 1e-3).unwrap();
    let state = a.adam.state(&ex).unwrap();
    let b = setup(Device::Cpu, &[3], cfg, 4);
    let mut ex_b = b.ex;
    b.adam.load_state(&mut ex_b, &state).unwrap();
    assert_eq!(b.adam.step(), t);
}

/// The intended use: forward, backward and the update as one recorded program (one GPU
/// submission per step, no readback), here minimizing mse(w, target).
#[test]
fn one_program_training_step() {
    let mut finals = Vec::new();
    for device in [Device::Cpu, gpu()] {
        let mut g = Graph::new();
        let w = g.param("w", &[37]);
        // not connected to the loss: its gradient is zero and Adam must leave it alone
        let u = g.param("u", &[1]);
        let target = g.input("target", &[37]);
        let l = g.mse(w, target);
        let mut ex = Executor::new(g, device).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let tv = randn(&mut rng, 37);
        ex.set(target, &tv).unwrap();
        ex.set(w, &[0.0; 37]).unwrap();
        ex.set(u, &[0.5]).unwrap();
        let adam = Adam::new(&mut ex, &[w, u], AdamConfig { lr: 0.05, ..AdamConfig::default() }).unwrap();
        let seed_buf = ex.layout().seed();
        let mut seed = vec![0.0; seed_buf.len];
        seed[0] = 1.0;
        ex.write(seed_buf, &seed).unwrap();
        let mut losses = Vec::new();
        for t in 1..=40 {
            adam.set_step(&mut ex, t, 0.05).unwrap();
            ex.run("step", |cx, g, lay| {
                exec::forward(cx, g, lay);
                exec::backward(cx, g, lay, l);
                adam.record(cx, lay);
            }).unwrap();
            losses.push(ex.get(l).unwrap()[0]);
        }
        assert_eq!(ex.get(u).unwrap(), vec![0.5]);
        assert!(losses[39] < 0.05 * losses[0], "loss did not drop: {} -> {}", losses[0], losses[39]);
        finals.push((ex.get(w).unwrap(), losses));
    }
    let (w, r) = compare(&finals[1].0, &finals[0].0, 1e-4, 1e-5);
    assert!(w <= 1.0, "GPU training diverged from CPU (ratio {w}, rel {r})");
    println!("ERR op=adam one_program_40_steps gpu_vs_cpu_rel={r:.3e}");
}
