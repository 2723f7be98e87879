mod common;
use common::*;
use slotforge::ops::SlotOps;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use slotforge::backend::Device;
use slotforge::exec::Executor;
use slotforge::graph::Graph;

// (B, K, N, C): K = 1 (alpha = 1), K = 2, K = 11, N = 1, N = 37, C = 2 (one colour channel),
// C = 4 (RGB + mask: 4 lanes per row, one idle), C = 9, and C - 1 = 70 > 64 lanes so the
// row kernel's lanes loop.
const SHAPES: &[(usize, usize, usize, usize)] =
    &[(2, 3, 37, 9), (1, 1, 5, 2), (2, 11, 7, 2), (3, 2, 1, 9), (2, 11, 37, 9), (2, 5, 9, 4), (2, 3, 5, 71)];

#[test]
fn alpha_softmax_awkward_sizes() {
    // C = 1 (the mask logit only) and zero-sized B / K as well
    let extra = [(2, 4, 6, 1), (0, 3, 4, 5), (2, 0, 4, 5)];
    for &(b, k, n, c) in SHAPES.iter().chain(&extra) {
        check_op(
            &format!("alpha_softmax b={b} k={k} n={n} c={c}"),
            |g| {
                let dec = g.input_with_grad("dec", &[b, k, n, c]);
                g.alpha_softmax(dec)
            },
            Check::default(),
        );
    }
}

#[test]
fn alpha_combine_awkward_sizes() {
    let extra = [(0, 3, 4, 5), (2, 3, 0, 4)];
    for &(b, k, n, c) in SHAPES.iter().chain(&extra) {
        check_op(
            &format!("alpha_combine b={b} k={k} n={n} c={c}"),
            |g| {
                let dec = g.input_with_grad("dec", &[b, k, n, c]);
                let alpha = g.input_with_grad("alpha", &[b, k, n]);
                g.alpha_combine(dec, alpha)
            },
            Check::default(),
        );
    }
}

#[test]
fn mix_slots_awkward_sizes() {
    // every channel mixed (no mask logit): C = 1 and C = 65 > 64 lanes as well
    let extra = [(2, 3, 5, 1), (2, 4, 3, 65), (0, 3, 4, 5)];
    for &(b, k, n, c) in SHAPES.iter().chain(&extra) {
        check_op(
            &format!("mix_slots b={b} k={k} n={n} c={c}"),
            |g| {
                let x = g.input_with_grad("x", &[b, k, n, c]);
                let alpha = g.input_with_grad("alpha", &[b, k, n]);
                g.mix_slots(x, alpha)
            },
            Check::default(),
        );
        check_op(
            &format!("mix_slots frozen alpha b={b} k={k} n={n} c={c}"),
            |g| {
                let x = g.input_with_grad("x", &[b, k, n, c]);
                let alpha = g.input("alpha", &[b, k, n]);
                g.mix_slots(x, alpha)
            },
            Check::default(),
        );
    }
}

#[test]
fn alpha_combine_one_side_frozen() {
    // each of the three backward kernels: dec only, alpha only (and both, above)
    for &(b, k, n, c) in &[(2, 3, 37, 9), (1, 11, 3, 71)] {
        check_op(
            &format!("alpha_combine frozen alpha b={b} k={k} n={n} c={c}"),
            |g| {
                let dec = g.input_with_grad("dec", &[b, k, n, c]);
                let alpha = g.input("alpha", &[b, k, n]);
                g.alpha_combine(dec, alpha)
            },
            Check::default(),
        );
        check_op(
            &format!("alpha_combine frozen dec b={b} k={k} n={n} c={c}"),
            |g| {
                let dec = g.input("dec", &[b, k, n, c]);
                let alpha = g.input_with_grad("alpha", &[b, k, n]);
                g.alpha_combine(dec, alpha)
            },
            Check::default(),
        );
    }
}

#[test]
fn decoder_mixture_end_to_end() {
    // the decoder's use: dec feeds both ops, so its gradient is the sum of the mask-channel
    // part (alpha_softmax) and the colour part (alpha_combine)
    for &(b, k, n, c) in SHAPES {
        check_op(
            &format!("alpha_combine(dec, alpha_softmax(dec)) b={b} k={k} n={n} c={c}"),
            |g| {
                let dec = g.input_with_grad("dec", &[b, k, n, c]);
                let alpha = g.alpha_softmax(dec);
                g.alpha_combine(dec, alpha)
            },
            Check::default(),
        );
    }
}

#[test]
fn mixture_values() {
    let (b, k, n, c) = (2, 3, 5, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let dec_v = randn(&mut rng, b * k * n * c);
    for device in [Device::Cpu, gpu()] {
        let mut g = Graph::new();
        let dec = g.input("dec", &[b, k, n, c]);
        let alpha = g.alpha_softmax(dec);
        let recon = g.alpha_combine(dec, alpha);
        let mut ex = Executor::new(g, device.clone()).unwrap();
        ex.set(dec, &dec_v).unwrap();
        ex.forward().unwrap();
        let (a, r) = (ex.get(alpha).unwrap(), ex.get(recon).unwrap());
        let at = |bb: usize, kk: usize, nn: usize, cc: usize| dec_v[((bb * k + kk) * n + nn) * c + cc];
        for bb in 0..b {
            for nn in 0..n {
                let z: f32 = (0..k).map(|kk| at(bb, kk, nn, c - 1).exp()).sum();
                for kk in 0..k {
                    let want = at(bb, kk, nn, c - 1).exp() / z;
                    assert!((a[(bb * k + kk) * n + nn] - want).abs() < 1e-6, "{}: alpha", device.name());
                }
                for cc in 0..c - 1 {
                    let want: f32 = (0..k).map(|kk| at(bb, kk, nn, c - 1).exp() / z * at(bb, kk, nn, cc)).sum();
                    let got = r[(bb * n + nn) * (c - 1) + cc];
                    assert!((got - want).abs() < 1e-5, "{}: recon {got} vs {want}", device.name());
                }
            }
        }
    }
}

/// Forward output and input gradients on the CPU for upstream gradient `up`.
fn cpu_eval(g: Graph, out: slotforge::graph::Var, inputs: &[(slotforge::graph::Var, Vec<f32>)], up: &[f32]) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut ex = Executor::new(g, Device::Cpu).unwrap();
    for (v, d) in inputs {
        ex.set(*v, d).unwrap();
    }
    ex.forward().unwrap();
    let y = ex.get(out).unwrap();
    ex.backward_with(out, up).unwrap();
    (y, inputs.iter().map(|(v, _)| ex.get_grad(*v).unwrap().unwrap()).collect())
}

#[test]
fn cpu_parallel_path_matches_per_scene() {
    // B * K * N * (C-1) = 3 * 4 * 64 * 129 is above the rayon threshold; one scene is below it
    let (b, k, n, c) = (3, 4, 64, 130);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let dec_v = randn(&mut rng, b * k * n * c);
    let up = randn(&mut rng, b * n * (c - 1));
    let build = |bb: usize| {
        let mut g = Graph::new();
        let dec = g.input_with_grad("dec", &[bb, k, n, c]);
        let alpha = g.alpha_softmax(dec);
        let recon = g.alpha_combine(dec, alpha);
        (g, dec, recon)
    };
    let (g, dec, recon) = build(b);
    let (y, gr) = cpu_eval(g, recon, &[(dec, dec_v.clone())], &up);
    for s in 0..b {
        let (g1, dec1, recon1) = build(1);
        let d1 = dec_v[s * k * n * c..(s + 1) * k * n * c].to_vec();
        let u1 = &up[s * n * (c - 1)..(s + 1) * n * (c - 1)];
        let (y1, gr1) = cpu_eval(g1, recon1, &[(dec1, d1)], u1);
        assert_eq!(&y[s * n * (c - 1)..(s + 1) * n * (c - 1)], &y1[..], "scene {s}: forward");
        assert_eq!(&gr[0][s * k * n * c..(s + 1) * k * n * c], &gr1[0][..], "scene {s}: gradient");
    }
}
