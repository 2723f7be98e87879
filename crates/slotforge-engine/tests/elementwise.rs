use slotforge_engine::testing::*;

use slotforge_engine::graph::{Graph, Var};

/// Standard normal values pushed at least 0.1 away from 0, so the finite differences
/// (step 1e-2) never straddle relu's kink.
fn away_from_zero(_: &str, n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Option<Vec<f32>> {
    Some(randn(rng, n).into_iter().map(|v| v + 0.1 * v.signum()).collect())
}

const SIZES: [&[usize]; 6] = [&[1], &[7], &[257], &[1000], &[3, 5, 7], &[40_000]];

#[test]
fn unary_every_kind_awkward_sizes() {
    type Build = fn(&mut Graph, Var) -> Var;
    let kinds: [(&str, Build); 6] = [
        ("relu", |g, x| g.relu(x)),
        ("sigmoid", |g, x| g.sigmoid(x)),
        ("tanh", |g, x| g.tanh(x)),
        ("exp", |g, x| g.exp(x)),
        ("square", |g, x| g.square(x)),
        ("scale", |g, x| g.scale(x, -2.5)),
    ];
    for (name, op) in kinds {
        for shape in SIZES {
            check_op_with(
                &format!("{name} {shape:?}"),
                |g| {
                    let x = g.input_with_grad("x", shape);
                    op(g, x)
                },
                Check::default(),
                away_from_zero,
            );
        }
    }
}

#[test]
fn unary_large_inputs_stay_finite() {
    // sigmoid/tanh of +-80: exp-based formulas would overflow to inf/inf = NaN
    for (name, tanh) in [("sigmoid", false), ("tanh", true)] {
        check_op_with(
            &format!("{name} saturated"),
            |g| {
                let x = g.input_with_grad("x", &[9]);
                if tanh { g.tanh(x) } else { g.sigmoid(x) }
            },
            // the slopes are ~0 or exact; finite differences across 80 +- 1e-2 are meaningless
            Check { fd: false, ..Check::default() },
            |_, _, _| Some(vec![-80.0, -30.0, -16.0, -9.0, 0.0, 9.0, 16.0, 30.0, 80.0]),
        );
    }
}

#[test]
fn unary_zero_sized() {
    for shape in [&[0usize][..], &[3, 0]] {
        check_op(&format!("relu {shape:?}"), |g| { let x = g.input_with_grad("x", shape); g.relu(x) }, Check::default());
        check_op(&format!("tanh {shape:?}"), |g| { let x = g.input_with_grad("x", shape); g.tanh(x) }, Check::default());
        check_op(&format!("scale {shape:?}"), |g| { let x = g.input_with_grad("x", shape); g.scale(x, 3.0) }, Check::default());
    }
}

type BinBuild = fn(&mut Graph, Var, Var) -> Var;
const BINARY: [(&str, BinBuild); 3] = [("add", |g, a, b| g.add(a, b)), ("sub", |g, a, b| g.sub(a, b)), ("mul", |g, a, b| g.mul(a, b))];

fn check_binary(a: &[usize], b: &[usize], out: &[usize]) {
    for (name, op) in BINARY {
        check_op(
            &format!("{name} {a:?} {b:?}"),
            |g| {
                let x = g.input_with_grad("a", a);
                let y = g.input_with_grad("b", b);
                let z = op(g, x, y);
                assert_eq!(g.shape(z), out, "{name}: broadcast shape of {a:?} and {b:?}");
                z
            },
            Check::default(),
        );
    }
}

#[test]
fn binary_same_shape() {
    for shape in SIZES {
        check_binary(shape, shape, shape);
    }
}

#[test]
fn binary_broadcast_patterns() {
    let cases: &[(&[usize], &[usize], &[usize])] = &[
        // slot attention: [B,K,1,H] + [1,1,N,H]
        (&[2, 3, 1, 5], &[1, 1, 4, 5], &[2, 3, 4, 5]),
        // per-feature weight over a batch: [B,K,D] * [1,1,D], and a missing leading dim
        (&[3, 4, 7], &[1, 1, 7], &[3, 4, 7]),
        (&[6], &[2, 3, 6], &[2, 3, 6]),
        // scalar runtime weight
        (&[2, 3], &[1], &[2, 3]),
        (&[1], &[5, 7], &[5, 7]),
        (&[1], &[1], &[1]),
        // both operands broadcast
        (&[4, 1], &[1, 5], &[4, 5]),
        (&[3, 1, 6], &[5, 1], &[3, 5, 6]),
        (&[1, 7, 1], &[9, 1, 3], &[9, 7, 3]),
        // size-1 dims on both sides that cancel out
        (&[1, 7, 1], &[7, 1], &[1, 7, 1]),
        (&[5, 1, 3], &[1, 1, 1], &[5, 1, 3]),
        // alternating pattern: 5 collapsed dims (uses the second vec4 of the WGSL params)
        (&[2, 1, 3, 1, 2], &[1, 2, 1, 3, 1], &[2, 2, 3, 3, 2]),
        // long reductions: a workgroup per gradient element on the GPU
        (&[2000], &[1], &[2000]),
        (&[600, 3], &[1, 3], &[600, 3]),
        // big enough for the parallel CPU paths (>= 32k outputs)
        (&[128, 300], &[300], &[128, 300]),
        (&[40_000], &[1], &[40_000]),
        (&[1, 300], &[128, 1], &[128, 300]),
    ];
    for (a, b, out) in cases {
        check_binary(a, b, out);
    }
}

#[test]
fn binary_zero_sized() {
    check_binary(&[0, 3], &[1, 3], &[0, 3]);
    check_binary(&[2, 0], &[1], &[2, 0]);
    check_binary(&[3, 1], &[3, 0], &[3, 0]);
}

#[test]
fn binary_one_side_frozen() {
    for (name, op) in BINARY {
        check_op(&format!("{name} frozen b"), |g| {
            let a = g.input_with_grad("a", &[4, 6]);
            let b = g.input("b", &[6]);
            op(g, a, b)
        }, Check::default());
        check_op(&format!("{name} frozen a"), |g| {
            let a = g.input("a", &[4, 6]);
            let b = g.input_with_grad("b", &[4, 1]);
            op(g, a, b)
        }, Check::default());
    }
}

#[test]
fn gradient_accumulates_over_uses() {
    // x feeds three ops: its gradient must be the sum of all three
    check_op("x*w + x^2 - tanh(x)", |g| {
        let x = g.input_with_grad("x", &[5, 3]);
        let w = g.param("w", &[3]);
        let a = g.mul(x, w);
        let b = g.square(x);
        let c = g.tanh(x);
        let s = g.add(a, b);
        g.sub(s, c)
    }, Check::default());
}

#[test]
fn binary_rejects_incompatible_shapes() {
    let mut g = Graph::new();
    let a = g.input("a", &[3, 4]);
    let b = g.input("b", &[3]);
    g.add(a, b);
    let err = slotforge_engine::Executor::new(g, slotforge_engine::Device::Cpu).err().expect("a shape error");
    assert!(matches!(err, slotforge_engine::Error::Shape(ref m) if m.contains("do not broadcast")), "{err}");
}

#[test]
fn reshape_copies_and_adds_back() {
    for (from, to) in [(&[3usize, 4, 5][..], &[12usize, 5][..]), (&[7], &[7, 1]), (&[1], &[1, 1, 1]), (&[0, 4], &[4, 0]), (&[40_000], &[200, 200])] {
        check_op(&format!("reshape {from:?}->{to:?}"), |g| {
            let x = g.input_with_grad("x", from);
            g.reshape(x, to)
        }, Check::default());
    }
}

#[test]
fn slice_last_ranges() {
    let cases: &[(&[usize], usize, usize)] = &[
        (&[3, 4, 10], 2, 5),
        (&[3, 4, 10], 0, 10),
        (&[3, 4, 10], 9, 1),
        (&[3, 4, 10], 10, 0),
        (&[7], 3, 4),
        (&[0, 5], 1, 2),
        (&[300, 257], 100, 131),
    ];
    for &(shape, start, len) in cases {
        check_op(&format!("slice_last {shape:?} {start}+{len}"), |g| {
            let x = g.input_with_grad("x", shape);
            g.slice_last(x, start, len)
        }, Check::default());
    }
}

#[test]
fn concat_last_shapes() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 4, 2], &[3, 4, 5]),
        (&[7, 1], &[7, 3]),
        (&[1], &[1]),
        (&[2, 0], &[2, 3]),
        (&[2, 3], &[2, 0]),
        (&[0, 3], &[0, 2]),
        (&[300, 100], &[300, 31]),
    ];
    for &(a, b) in cases {
        check_op(&format!("concat_last {a:?} {b:?}"), |g| {
            let x = g.input_with_grad("a", a);
            let y = g.input_with_grad("b", b);
            g.concat_last(x, y)
        }, Check::default());
    }
}

#[test]
fn slice_then_concat_round_trip() {
    // split a tensor in two along the last dim and put it back together
    check_op("slice+concat", |g| {
        let x = g.input_with_grad("x", &[5, 9]);
        let a = g.slice_last(x, 0, 4);
        let b = g.slice_last(x, 4, 5);
        g.concat_last(b, a)
    }, Check::default());
}
