mod common;
use common::*;
use slotforge::ops::SlotOps;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use slotforge::backend::Device;
use slotforge::exec::Executor;
use slotforge::graph::Graph;

/// Attention after a softmax over slots is positive: keep the column sums well away from 0.
fn positive(_: &str, len: usize, rng: &mut ChaCha8Rng) -> Option<Vec<f32>> {
    Some((0..len).map(|_| rng.random_range(0.05f32..1.0)).collect())
}

#[test]
fn attn_renorm_awkward_sizes() {
    // (B, N, K, eps): one element, N = 1, K = 1, N > 256 (token lanes loop), K > 16 (several
    // slot blocks per scene), a large eps so its gradient path shows, zero-sized B and N.
    let cases: &[(usize, usize, usize, f32)] = &[
        (2, 37, 11, 1e-8),
        (1, 1, 1, 1e-8),
        (3, 1, 7, 1e-8),
        (2, 37, 1, 1e-8),
        (2, 5, 2, 0.5),
        (1, 300, 3, 1e-8),
        (2, 9, 17, 1e-8),
        (1, 20, 33, 0.1),
        (0, 5, 3, 1e-8),
        (2, 0, 3, 1e-8),
    ];
    for &(b, n, k, eps) in cases {
        check_op_with(
            &format!("attn_renorm b={b} n={n} k={k} eps={eps}"),
            |g| {
                let a = g.input_with_grad("attn", &[b, n, k]);
                g.attn_renorm(a, eps)
            },
            Check::default(),
            positive,
        );
    }
}

#[test]
fn attn_renorm_chained() {
    // backward of one renorm feeding another (the second reads the first's output and saved sums)
    check_op_with(
        "attn_renorm twice",
        |g| {
            let a = g.input_with_grad("attn", &[3, 19, 5]);
            let w = g.attn_renorm(a, 1e-8);
            g.attn_renorm(w, 0.05)
        },
        Check::default(),
        positive,
    );
}

#[test]
fn attn_renorm_columns_sum_to_one() {
    let (b, n, k) = (2, 23, 6);
    for device in [Device::Cpu, gpu()] {
        let mut g = Graph::new();
        let a = g.input("attn", &[b, n, k]);
        let w = g.attn_renorm(a, 1e-8);
        let mut ex = Executor::new(g, device.clone()).unwrap();
        let mut rng = rand::SeedableRng::seed_from_u64(3);
        let data = positive("", b * n * k, &mut rng).unwrap();
        ex.set(a, &data).unwrap();
        ex.forward().unwrap();
        let y = ex.get(w).unwrap();
        for bb in 0..b {
            for kk in 0..k {
                let s: f32 = (0..n).map(|nn| y[(bb * n + nn) * k + kk]).sum();
                assert!((s - 1.0).abs() < 1e-5, "{}: column ({bb},{kk}) sums to {s}", device.name());
                let expect = data[(bb * n + 4) * k + kk] / (0..n).map(|nn| data[(bb * n + nn) * k + kk]).sum::<f32>();
                assert!((y[(bb * n + 4) * k + kk] - expect).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn cpu_parallel_path_matches_per_scene() {
    // B * N * K = 4 * 700 * 13 is above the rayon threshold; one scene is below it
    let (b, n, k) = (4, 700, 13);
    let mut rng: ChaCha8Rng = rand::SeedableRng::seed_from_u64(9);
    let a_v = positive("", b * n * k, &mut rng).unwrap();
    let up = randn(&mut rng, b * n * k);
    let run = |bb: usize, a: &[f32], u: &[f32]| {
        let mut g = Graph::new();
        let x = g.input_with_grad("attn", &[bb, n, k]);
        let w = g.attn_renorm(x, 1e-8);
        let mut ex = Executor::new(g, Device::Cpu).unwrap();
        ex.set(x, a).unwrap();
        ex.forward().unwrap();
        let y = ex.get(w).unwrap();
        ex.backward_with(w, u).unwrap();
        (y, ex.get_grad(x).unwrap().unwrap())
    };
    let (y, ga) = run(b, &a_v, &up);
    for s in 0..b {
        let r = s * n * k..(s + 1) * n * k;
        let (y1, ga1) = run(1, &a_v[r.clone()], &up[r.clone()]);
        assert_eq!(&y[r.clone()], &y1[..], "scene {s}: forward");
        assert_eq!(&ga[r], &ga1[..], "scene {s}: gradient");
    }
}
