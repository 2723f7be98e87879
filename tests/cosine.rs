mod common;
use common::*;
use slotforge::ops::SlotOps;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use slotforge::backend::Device;
use slotforge::exec::Executor;
use slotforge::graph::Graph;

fn cos(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-8)
}

/// Random slots [B, K, D] whose pairwise cosines all stay clear of 0: a central difference
/// with step h moves c_ij by at most about h / |s_i|, so require |c_ij| min(|s_i|, |s_j|) > 5 h.
/// That keeps finite differences off the clamp's kink; for D = 1 it keeps entries off 0.
/// Cosines still take both signs, so the clamp matters.
fn clear_of_kink(b: usize, k: usize, d: usize) -> impl Fn(&str, usize, &mut ChaCha8Rng) -> Option<Vec<f32>> {
    move |_, len, rng| {
        assert_eq!(len, b * k * d);
        if len == 0 {
            return Some(Vec::new());
        }
        let h = Check::default().fd_h as f64;
        let mut out = Vec::with_capacity(len);
        for _ in 0..b {
            let mut scene: Vec<Vec<f32>> = Vec::new();
            while scene.len() < k {
                let s = randn(rng, d);
                let ns = s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                let ok = ns * ns > 5.0 * h
                    && scene.iter().all(|t| {
                        let nt = t.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                        cos(&s, t).abs() * ns.min(nt) > 5.0 * h
                    });
                if ok {
                    scene.push(s);
                }
            }
            out.extend(scene.into_iter().flatten());
        }
        Some(out)
    }
}

fn build(b: usize, k: usize, d: usize, clamp: bool) -> impl Fn(&mut Graph) -> slotforge::graph::Var {
    move |g| {
        let s = g.input_with_grad("slots", &[b, k, d]);
        g.pairwise_cosine_mean(s, clamp)
    }
}

#[test]
fn cosine_awkward_sizes_both_modes() {
    // K = 1 (no pairs), K = 2, K = 11, K = 64 (the GPU tile's limit: 16 Gram entries per
    // thread), D = 1 (cosines are +-1, gradient 0), D = 129 (five 32-wide tiles, the last
    // ragged), and zero-sized B and D.
    let cases = [(2, 1, 5), (3, 2, 7), (2, 11, 129), (4, 5, 1), (2, 11, 33), (1, 64, 20), (0, 3, 4), (2, 3, 0)];
    for (b, k, d) in cases {
        for clamp in [false, true] {
            check_op_with(
                &format!("pairwise_cosine_mean b={b} k={k} d={d} clamp={clamp}"),
                build(b, k, d, clamp),
                Check::default(),
                clear_of_kink(b, k, d),
            );
        }
    }
}

#[test]
fn cosine_plain_random_inputs() {
    // unfiltered Gaussian slots (cosines spread around 0) with the default seed
    for clamp in [false, true] {
        check_op(&format!("pairwise_cosine_mean random b=3 k=7 d=19 clamp={clamp}"), build(3, 7, 19, clamp), Check::default());
    }
}

#[test]
fn cosine_identical_slots() {
    // every slot of a scene equal: cos = 1 for every pair, the maximum, so the gradient is 0
    // (finite differences there are O(h^2)).
    let (b, k, d) = (2, 5, 13);
    for clamp in [false, true] {
        let (gpu_err, _) = check_op_with(
            &format!("pairwise_cosine_mean identical clamp={clamp}"),
            build(b, k, d, clamp),
            Check::default(),
            move |_, _, rng| {
                let mut out = Vec::new();
                for _ in 0..b {
                    let s = randn(rng, d);
                    (0..k).for_each(|_| out.extend_from_slice(&s));
                }
                Some(out)
            },
        );
        assert!(gpu_err.is_finite());
        for device in [Device::Cpu, gpu()] {
            let slots: Vec<f32> = (0..b * k * d).map(|i| ((i % d) as f32 - 5.5) * 0.3).collect();
            let (y, _) = value_and_grad(device, b, k, d, clamp, &slots);
            assert!((y - 1.0).abs() < 1e-5, "identical slots: mean cosine {y}, expected 1");
        }
    }
}

/// y and dy/dslots on `device` (the op's output is a scalar, so seed 1).
fn value_and_grad(device: Device, b: usize, k: usize, d: usize, clamp: bool, slots: &[f32]) -> (f32, Vec<f32>) {
    let mut g = Graph::new();
    let s = g.input_with_grad("slots", &[b, k, d]);
    let y = g.pairwise_cosine_mean(s, clamp);
    let mut ex = Executor::new(g, device).unwrap();
    ex.set(s, slots).unwrap();
    ex.forward_backward(y).unwrap();
    (ex.get(y).unwrap()[0], ex.get_grad(s).unwrap().unwrap())
}

#[test]
fn cosine_known_values_and_clamp() {
    // one scene, D = 2: s0 = (1, 0), s1 = (-1, 0), s2 = (1, 1)
    // cos01 = -1, cos02 = 1/sqrt2, cos12 = -1/sqrt2: raw mean over the 6 ordered pairs
    // = 2 (-1) / 6 = -1/3; clamped = 2 (1/sqrt2) / 6.
    let slots = [1.0, 0.0, -1.0, 0.0, 1.0, 1.0];
    for device in [Device::Cpu, gpu()] {
        let (raw, _) = value_and_grad(device.clone(), 1, 3, 2, false, &slots);
        let (clamped, gc) = value_and_grad(device.clone(), 1, 3, 2, true, &slots);
        assert!((raw - (-1.0 / 3.0)).abs() < 1e-6, "{}: raw {raw}", device.name());
        assert!((clamped - (2.0f32.sqrt() / 6.0)).abs() < 1e-6, "{}: clamped {clamped}", device.name());
        // only the pair (0, 2) passes the clamp: s1 gets no gradient at all
        assert!(gc[2..4].iter().all(|&v| v == 0.0), "{}: s1 gradient {:?}", device.name(), &gc[2..4]);
        // d/ds0 of (2/6) cos02 at s0 = (1,0), s2 = (1,1): (1/3) (s2/(|s0||s2|) - cos02 s0/|s0|^2) = (0, 1/(3 sqrt2))
        let want = 1.0 / (3.0 * 2.0f32.sqrt());
        assert!(gc[0].abs() < 1e-6 && (gc[1] - want).abs() < 1e-6, "{}: s0 gradient {:?}", device.name(), &gc[0..2]);
    }
}

#[test]
fn cosine_single_slot_is_zero() {
    for device in [Device::Cpu, gpu()] {
        for clamp in [false, true] {
            let slots: Vec<f32> = (0..3 * 6).map(|i| i as f32 * 0.1 - 0.7).collect();
            let (y, g) = value_and_grad(device.clone(), 3, 1, 6, clamp, &slots);
            assert_eq!(y, 0.0, "{}: K = 1 gives {y}", device.name());
            assert!(g.iter().all(|&v| v == 0.0), "{}: K = 1 gradient {g:?}", device.name());
        }
    }
}

#[test]
fn cosine_zero_slot() {
    // Slot 1 of each scene is the zero vector: its cosines are 0 (counted in the mean's
    // denominator: only the diagonal is masked). Unclamped, its gradient is the exact one of
    // <a,b> / max(|a||b|, 1e-8), i.e. sum_j s_j / 1e-8 (large but finite); clamped it is 0
    // (cos = 0 is not > 0). Finite differences are not valid at the zero slot (a kink), so:
    // GPU vs CPU everywhere, finite differences on the other slots only, and the zero slot's
    // gradient against the formula.
    let (b, k, d) = (2, 4, 9);
    let init = move |_: &str, len: usize, rng: &mut ChaCha8Rng| {
        let mut v = clear_of_kink(b, k, d)("", len, rng).unwrap();
        for bb in 0..b {
            v[(bb * k + 1) * d..(bb * k + 2) * d].fill(0.0);
        }
        Some(v)
    };
    for clamp in [false, true] {
        let fd_off = Check { fd: false, ..Check::default() };
        check_op_with(&format!("pairwise_cosine_mean zero slot clamp={clamp}"), build(b, k, d, clamp), fd_off, init);

        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let slots = init("", b * k * d, &mut rng).unwrap();
        let (y, grad) = value_and_grad(Device::Cpu, b, k, d, clamp, &slots);
        let scale = 1.0 / (b * k * (k - 1)) as f64;
        let mut want_y = 0.0;
        for bb in 0..b {
            for i in 0..k {
                for j in 0..k {
                    if i != j {
                        let c = cos(&slots[(bb * k + i) * d..][..d], &slots[(bb * k + j) * d..][..d]);
                        want_y += if clamp { c.max(0.0) } else { c };
                    }
                }
            }
        }
        assert!((y as f64 - want_y * scale).abs() < 1e-6, "zero slot: y = {y}, expected {}", want_y * scale);
        for bb in 0..b {
            for dd in 0..d {
                let g0 = grad[(bb * k + 1) * d + dd] as f64;
                let want = if clamp {
                    0.0
                } else {
                    2.0 * scale * (0..k).filter(|&j| j != 1).map(|j| slots[(bb * k + j) * d + dd] as f64 / 1e-8).sum::<f64>()
                };
                assert!(g0.is_finite() && (g0 - want).abs() <= 1e-5 * want.abs(), "zero slot gradient {g0}, expected {want}");
            }
        }
        // central differences on the non-zero slots
        let h = 1e-2f32;
        let mut worst = 0f32;
        for bb in 0..b {
            for i in [0, 2, 3] {
                for dd in [0, 4, 8] {
                    let at = (bb * k + i) * d + dd;
                    let mut p = slots.clone();
                    p[at] += h;
                    let (lp, _) = value_and_grad(Device::Cpu, b, k, d, clamp, &p);
                    p[at] -= 2.0 * h;
                    let (lm, _) = value_and_grad(Device::Cpu, b, k, d, clamp, &p);
                    let fd = (lp - lm) / (2.0 * h);
                    let c = Check::default();
                    assert!((fd - grad[at]).abs() <= c.fd_abs + c.fd_rel * grad[at].abs(), "d/d slots[{at}]: fd {fd} vs {}", grad[at]);
                    worst = worst.max((fd - grad[at]).abs() / grad[at].abs().max(1e-6));
                }
            }
        }
        println!("ERR op=pairwise_cosine_mean zero slot clamp={clamp} fd_vs_cpu_rel(non-zero slots)={worst:.3e}");
    }
}

#[test]
fn cpu_parallel_path_matches_per_scene() {
    // B * K * K * D = 6 * 16 * 16 * 40 is above the rayon threshold; one scene is below it.
    // The batch mean is the mean of the scene means; its gradient is the scene's / B.
    let (b, k, d) = (6, 16, 40);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let slots = randn(&mut rng, b * k * d);
    for clamp in [false, true] {
        let (y, g) = value_and_grad(Device::Cpu, b, k, d, clamp, &slots);
        let mut y_sum = 0.0f64;
        for s in 0..b {
            let r = s * k * d..(s + 1) * k * d;
            let (y1, g1) = value_and_grad(Device::Cpu, 1, k, d, clamp, &slots[r.clone()]);
            y_sum += y1 as f64;
            for (a, e) in g[r].iter().zip(&g1) {
                assert!((a * b as f32 - e).abs() <= 1e-6 * e.abs().max(1e-3), "scene {s}: gradient {a} * B vs {e}");
            }
        }
        assert!((y as f64 - y_sum / b as f64).abs() < 1e-6, "mean {y} vs mean of scene means {}", y_sum / b as f64);
    }
}
