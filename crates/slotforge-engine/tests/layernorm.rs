use slotforge_engine::testing::*;

const EPS: f32 = 1e-5;

/// layer_norm on `shape`; x with or without a gradient, w/b learned or frozen.
fn check_ln(shape: &[usize], x_grad: bool, w_grad: bool, b_grad: bool) {
    let name = format!("layer_norm {shape:?} dx={x_grad} dw={w_grad} db={b_grad}");
    let c = *shape.last().unwrap();
    check_op(&name, |g| {
        let x = if x_grad { g.input_with_grad("x", shape) } else { g.input("x", shape) };
        let w = if w_grad { g.param("w", &[c]) } else { g.input("w", &[c]) };
        let b = if b_grad { g.param("b", &[c]) } else { g.input("b", &[c]) };
        g.layer_norm(x, w, b, EPS)
    }, Check::default());
}

#[test]
fn layer_norm_shapes_with_and_without_dx() {
    // C = 1 (y = b, dx = 0), rows not multiples of anything, C below / above / not a
    // multiple of the 128-thread workgroup, 1-D x, and an empty batch
    for shape in [&[1, 1][..], &[3, 1], &[5, 7], &[2, 3, 129], &[4, 300], &[768], &[0, 5]] {
        check_ln(shape, true, true, true);
        check_ln(shape, false, true, true);
    }
}

#[test]
fn layer_norm_dw_db_reduction_over_many_rows() {
    // 70 rows: 5 chunks of 14 in the GPU's two-stage dw/db reduction;
    // 2100 rows: the capped 128 chunks of 17, the last ones empty
    check_ln(&[70, 13], true, true, true);
    check_ln(&[2100, 3], true, true, true);
}

#[test]
fn layer_norm_frozen_scale_or_shift() {
    for shape in [&[5, 7][..], &[70, 13]] {
        check_ln(shape, true, false, true);
        check_ln(shape, true, true, false);
        check_ln(shape, false, false, true);
        check_ln(shape, false, true, false);
    }
}

#[test]
fn layer_norm_big_enough_for_cpu_threads() {
    // 33540 elements: over the CPU's 32k threshold for splitting rows across threads
    check_ln(&[260, 129], true, true, true);
}

#[test]
fn layer_norm_large_mean_small_spread() {
    // rows centred at 300: the variance must come from (x - mean)^2, not E[x^2] - mean^2
    check_op_with("layer_norm offset 300", |g| {
        let x = g.input_with_grad("x", &[6, 129]);
        let w = g.param("w", &[129]);
        let b = g.param("b", &[129]);
        g.layer_norm(x, w, b, EPS)
    }, Check::default(), |name, n, rng| (name == "x").then(|| randn(rng, n).iter().map(|v| 300.0 + v).collect()));
}

#[test]
fn layer_norm_gradient_accumulates_into_shared_input() {
    // x feeds both the norm and the loss: dx must be the sum of both paths
    check_op("mse(layer_norm(x), x)", |g| {
        let x = g.input_with_grad("x", &[9, 17]);
        let w = g.param("w", &[17]);
        let b = g.param("b", &[17]);
        let y = g.layer_norm(x, w, b, EPS);
        g.mse(y, x)
    }, Check::default());
}

#[test]
fn layer_norm_matches_pytorch_formula() {
    // check_op compares the devices with each other; this pins the semantics (biased
    // variance, eps inside the square root) against the formula written out in f64.
    use slotforge_engine::backend::Device;
    use slotforge_engine::exec::Executor;
    let (rows, c, eps) = (4, 6, 0.1f32); // a large eps, so "inside the sqrt" shows
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5);
    let (x_v, w_v, b_v) = (randn(&mut rng, rows * c), randn(&mut rng, c), randn(&mut rng, c));
    let mut want = vec![0f64; rows * c];
    for r in 0..rows {
        let xs: Vec<f64> = x_v[r * c..(r + 1) * c].iter().map(|&v| v as f64).collect();
        let mean = xs.iter().sum::<f64>() / c as f64;
        let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c as f64;
        for i in 0..c {
            want[r * c + i] = (xs[i] - mean) / (var + eps as f64).sqrt() * w_v[i] as f64 + b_v[i] as f64;
        }
    }
    for device in [Device::Cpu, gpu()] {
        let mut g = slotforge_engine::graph::Graph::new();
        let x = g.input("x", &[rows, c]);
        let w = g.input("w", &[c]);
        let b = g.input("b", &[c]);
        let y = g.layer_norm(x, w, b, eps);
        let mut ex = Executor::new(g, device.clone()).unwrap();
        ex.set(x, &x_v).unwrap();
        ex.set(w, &w_v).unwrap();
        ex.set(b, &b_v).unwrap();
        ex.forward().unwrap();
        for (got, want) in ex.get(y).unwrap().iter().zip(&want) {
            assert!((*got as f64 - want).abs() < 1e-5, "{}: {got} vs {want}", device.name());
        }
    }
}
