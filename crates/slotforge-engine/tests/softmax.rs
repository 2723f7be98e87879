use slotforge_engine::testing::*;

fn check_softmax(shape: &[usize], axis: usize) {
    check_op(&format!("softmax {shape:?} axis={axis}"), |g| {
        let x = g.input_with_grad("x", shape);
        let y = g.softmax(x, axis);
        assert_eq!(g.shape(y), shape);
        y
    }, Check::default());
}

#[test]
fn softmax_every_axis_of_3d() {
    for axis in 0..3 {
        check_softmax(&[3, 5, 7], axis);
    }
}

#[test]
fn softmax_axis_of_length_one() {
    check_softmax(&[4, 1, 3], 1);
    check_softmax(&[6, 1], 1);
    check_softmax(&[1], 0);
}

#[test]
fn softmax_long_axis() {
    // contiguous long lines: a workgroup per line on the GPU
    check_softmax(&[2, 300], 1);
    check_softmax(&[1, 1000], 1);
    check_softmax(&[3, 64], 1);
    // strided long lines: a thread per line
    check_softmax(&[300, 3], 0);
    // short lines (slot axis of [B, K, N] attention logits)
    check_softmax(&[2, 11, 37], 1);
    check_softmax(&[5, 11], 1);
}

#[test]
fn softmax_big_enough_for_parallel_cpu() {
    check_softmax(&[64, 600], 1);
    check_softmax(&[200, 11, 16], 1);
}

#[test]
fn softmax_large_logits_stay_finite() {
    // exp(1000) overflows: the max must be subtracted first
    check_op_with("softmax large logits", |g| {
        let x = g.input_with_grad("x", &[3, 4]);
        g.softmax(x, 1)
    }, Check::default(), |_, n, rng| Some(randn(rng, n).into_iter().map(|v| 1000.0 + v).collect()));
}

#[test]
fn softmax_zero_sized() {
    check_softmax(&[0, 5], 1);
    check_softmax(&[3, 0], 1);
    check_softmax(&[2, 0, 3], 0);
    check_softmax(&[2, 0, 3], 1);
}

#[test]
fn softmax_rejects_bad_axis() {
    let mut g = slotforge_engine::graph::Graph::new();
    let x = g.input("x", &[3, 4]);
    g.softmax(x, 2);
    let err = slotforge_engine::Executor::new(g, slotforge_engine::Device::Cpu).err().expect("a shape error");
    assert!(matches!(err, slotforge_engine::Error::Shape(ref m) if m.contains("axis 2 out of range")), "{err}");
}
