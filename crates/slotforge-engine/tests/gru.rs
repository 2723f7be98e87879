use slotforge_engine::testing::*;

/// gru_gates with h of `h_shape` (gi, gh: same leading dims, last 3D); each of gi, gh, h
/// with or without a gradient.
fn build(g: &mut slotforge_engine::graph::Graph, h_shape: &[usize], grads: [bool; 3]) -> slotforge_engine::graph::Var {
    let mut gate_shape = h_shape.to_vec();
    *gate_shape.last_mut().unwrap() *= 3;
    let mut var = |name: &str, shape: &[usize], grad: bool| if grad { g.input_with_grad(name, shape) } else { g.input(name, shape) };
    let gi = var("gi", &gate_shape, grads[0]);
    let gh = var("gh", &gate_shape, grads[1]);
    let h = var("h", h_shape, grads[2]);
    g.gru_gates(gi, gh, h)
}

fn check_gru(h_shape: &[usize], grads: [bool; 3]) {
    check_op(&format!("gru_gates h={h_shape:?} d(gi,gh,h)={grads:?}"), |g| build(g, h_shape, grads), Check::default());
}

#[test]
fn gru_gates_shapes() {
    // D = 1, a single row, awkward D and row counts, a 3-D batch, many rows of D = 1
    for shape in [&[1, 1][..], &[1], &[3, 5], &[2, 11, 13], &[7, 33], &[1000, 1]] {
        check_gru(shape, [true, true, true]);
    }
}

#[test]
fn gru_gates_empty() {
    check_gru(&[0, 4], [true, true, true]);
}

#[test]
fn gru_gates_frozen_inputs() {
    // every subset of inputs needing a gradient, including none (forward only)
    for mask in 0..8u32 {
        let grads = [mask & 1 != 0, mask & 2 != 0, mask & 4 != 0];
        check_gru(&[3, 5], grads);
    }
}

#[test]
fn gru_gates_big_enough_for_cpu_threads() {
    // 39000 elements of h: over the CPU's 32k threshold for splitting rows across threads
    check_gru(&[300, 130], [true, true, true]);
}

#[test]
fn gru_gates_saturated() {
    // pre-activations up to ~+-100: sigmoid/tanh saturate; no inf/inf NaN on the GPU
    check_op_with("gru_gates saturated", |g| build(g, &[4, 9], [true, true, true]), Check::default(), |_, n, rng| {
        Some(randn(rng, n).iter().map(|v| 30.0 * v).collect())
    });
}

#[test]
fn gru_gates_state_gradient_accumulates() {
    // h feeds both the cell (the z * h path) and the loss: dh is the sum of both
    check_op("mse(gru_gates(gi, gh, h), h)", |g| {
        let gi = g.input_with_grad("gi", &[4, 18]);
        let gh = g.input_with_grad("gh", &[4, 18]);
        let h = g.input_with_grad("h", &[4, 6]);
        let y = g.gru_gates(gi, gh, h);
        g.mse(y, h)
    }, Check::default());
}

#[test]
fn gru_gates_match_pytorch_grucell_formula() {
    // check_op compares the devices with each other; this pins the semantics (gate
    // order r, z, n; r scales all of gh_n) against the GRUCell formula written out.
    use slotforge_engine::backend::Device;
    use slotforge_engine::exec::Executor;
    let (rows, d) = (3, 4);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
    let (gi_v, gh_v, h_v) = (randn(&mut rng, rows * 3 * d), randn(&mut rng, rows * 3 * d), randn(&mut rng, rows * d));
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mut want = vec![0f64; rows * d];
    for row in 0..rows {
        for j in 0..d {
            let gate = |v: &[f32], k: usize| v[row * 3 * d + k * d + j] as f64;
            let r = sig(gate(&gi_v, 0) + gate(&gh_v, 0));
            let z = sig(gate(&gi_v, 1) + gate(&gh_v, 1));
            let n = (gate(&gi_v, 2) + r * gate(&gh_v, 2)).tanh();
            want[row * d + j] = (1.0 - z) * n + z * h_v[row * d + j] as f64;
        }
    }
    for device in [Device::Cpu, gpu()] {
        let mut g = slotforge_engine::graph::Graph::new();
        let gi = g.input("gi", &[rows, 3 * d]);
        let gh = g.input("gh", &[rows, 3 * d]);
        let h = g.input("h", &[rows, d]);
        let y = g.gru_gates(gi, gh, h);
        let mut ex = Executor::new(g, device.clone()).unwrap();
        ex.set(gi, &gi_v).unwrap();
        ex.set(gh, &gh_v).unwrap();
        ex.set(h, &h_v).unwrap();
        ex.forward().unwrap();
        for (got, want) in ex.get(y).unwrap().iter().zip(&want) {
            assert!((*got as f64 - want).abs() < 1e-5, "{}: {got} vs {want}", device.name());
        }
    }
}
