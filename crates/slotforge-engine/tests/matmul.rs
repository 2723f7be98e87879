use slotforge_engine::testing::*;

use rand::Rng;
use slotforge_engine::ops::matmul::{sgemm, GemmKernel};

const KERNELS: [GemmKernel; 2] = [GemmKernel::Registers, GemmKernel::SharedTiles];
const TRANS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// Check `matmul` on a [batch.., M, K] x b ([batch.., K, N], or [K, N] if `shared`).
#[allow(clippy::too_many_arguments)]
fn mm_case(batch: &[usize], shared: bool, m: usize, k: usize, n: usize, ta: bool, tb: bool, kernel: GemmKernel, c: Check) {
    let name = format!("matmul batch={batch:?} shared_b={shared} {m}x{k}x{n} ta={ta} tb={tb} {kernel:?}");
    check_op(&name, |g| {
        let mut sa = batch.to_vec();
        sa.extend(if ta { [k, m] } else { [m, k] });
        let mut sb = if shared { vec![] } else { batch.to_vec() };
        sb.extend(if tb { [n, k] } else { [k, n] });
        let a = g.input_with_grad("a", &sa);
        let b = g.param("b", &sb);
        g.matmul_with(a, b, ta, tb, kernel)
    }, c);
}

#[test]
fn matmul_2d_every_transpose_awkward_shapes() {
    for kernel in KERNELS {
        for (ta, tb) in TRANS {
            for (m, k, n) in [(1, 1, 1), (7, 13, 5), (33, 17, 65)] {
                mm_case(&[], true, m, k, n, ta, tb, kernel, Check::default());
            }
        }
    }
}

#[test]
fn matmul_vec4_paths() {
    // contiguous dims multiples of 4 select the vec4 kernels; M, N not multiples of the
    // 32-wide tile, and K = 13 with ta && !tb exercises the vec4 kernel's K tail
    for (ta, tb) in TRANS {
        for (m, k, n) in [(4, 4, 4), (36, 20, 44), (8, 12, 20)] {
            mm_case(&[], true, m, k, n, ta, tb, GemmKernel::Registers, Check::default());
        }
    }
    mm_case(&[], true, 8, 13, 12, true, false, GemmKernel::Registers, Check::default());
    mm_case(&[2], false, 12, 13, 4, true, false, GemmKernel::Registers, Check::default());
}

#[test]
fn matmul_batched_per_batch_and_shared_b() {
    for kernel in KERNELS {
        for (ta, tb) in TRANS {
            mm_case(&[2, 3], false, 5, 6, 7, ta, tb, kernel, Check::default());
            // shared b: batch folds into M (ta = false) or dB sums over the batch (ta = true)
            mm_case(&[3, 2], true, 5, 6, 7, ta, tb, kernel, Check::default());
        }
    }
    // enough total work for the CPU to run one product per task
    for (ta, tb) in TRANS {
        mm_case(&[8], false, 40, 41, 39, ta, tb, GemmKernel::Auto, Check::default());
    }
    // vec4 path with per-batch and shared operands
    for (ta, tb) in TRANS {
        mm_case(&[3], false, 8, 4, 12, ta, tb, GemmKernel::Registers, Check::default());
        mm_case(&[3], true, 8, 4, 12, ta, tb, GemmKernel::Registers, Check::default());
    }
}

#[test]
fn matmul_split_k() {
    // Small M x N with long K: the GPU splits K over several workgroups and sums the
    // partials. GPU and CPU then sum ~1000 terms in different orders: the absolute error
    // grows like sqrt(K) * |partial sums| ~ 30 * 6e-8 * 30, so outputs near 0 need
    // gpu_abs ~ 1e-4 instead of 1e-5.
    let c = Check { gpu_abs: 2e-4, ..Check::default() };
    for kernel in KERNELS {
        for (ta, tb) in TRANS {
            mm_case(&[], true, 3, 1100, 5, ta, tb, kernel, c.clone());
        }
        // vec4 tn with splits whose last chunk has a K tail
        mm_case(&[], true, 8, 1030, 12, true, false, kernel, c.clone());
        mm_case(&[2], false, 4, 600, 8, false, true, kernel, c.clone());
    }
}

#[test]
fn matmul_zero_sized() {
    for kernel in KERNELS {
        for (ta, tb) in TRANS {
            // empty batch: the shared b's gradient is an empty sum
            mm_case(&[0], true, 3, 4, 5, ta, tb, kernel, Check::default());
            mm_case(&[0, 2], false, 3, 4, 5, ta, tb, kernel, Check::default());
            // K = 0: y = 0
            mm_case(&[], true, 3, 0, 4, ta, tb, kernel, Check::default());
            mm_case(&[2], false, 3, 0, 4, ta, tb, kernel, Check::default());
            // M = 0 and N = 0
            mm_case(&[2], true, 0, 3, 4, ta, tb, kernel, Check::default());
            mm_case(&[], true, 3, 4, 0, ta, tb, kernel, Check::default());
        }
    }
}

/// Inputs whose ReLU pre-activations stay at least 0.125 from 0, exactly representable:
/// x and w are odd multiples of 0.5 (each product an odd multiple of 0.25), the bias is
/// 0.125 + a multiple of 0.25. Without a bias, `in` is odd so the sum of products is an odd
/// multiple of 0.25. One finite-difference step (h = 1e-2 times a value <= 1.5) moves a
/// pre-activation by < 0.02, so it never crosses 0.
fn relu_safe(name: &str, len: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Option<Vec<f32>> {
    let odd_half = |rng: &mut rand_chacha::ChaCha8Rng| {
        let v = [0.5f32, 1.5][rng.random_range(0..2)];
        if rng.random_bool(0.5) { v } else { -v }
    };
    Some(match name {
        "bias" => (0..len).map(|_| 0.125 + 0.25 * rng.random_range(-3..3) as f32).collect(),
        _ => (0..len).map(|_| odd_half(rng)).collect(),
    })
}

fn linear_case(xshape: &[usize], out: usize, bias: bool, relu: bool, kernel: GemmKernel, c: Check) {
    let name = format!("linear x={xshape:?} out={out} bias={bias} relu={relu} {kernel:?}");
    let inp = *xshape.last().unwrap();
    let build = |g: &mut slotforge_engine::graph::Graph| {
        let x = g.input_with_grad("x", xshape);
        let w = g.param("w", &[out, inp]);
        let b = if bias { Some(g.param("bias", &[out])) } else { None };
        g.linear_with(x, w, b, relu, kernel)
    };
    if relu {
        assert!(bias || inp % 2 == 1, "relu test without bias needs an odd `in`");
        check_op_with(&name, build, c, relu_safe);
    } else {
        check_op(&name, build, c);
    }
}

#[test]
fn linear_bias_relu_variants() {
    for kernel in [GemmKernel::Auto, GemmKernel::Registers, GemmKernel::SharedTiles] {
        for bias in [false, true] {
            for relu in [false, true] {
                linear_case(&[13], 5, bias, relu, kernel, Check::default());
                linear_case(&[5, 7, 13], 9, bias, relu, kernel, Check::default());
                linear_case(&[33, 17], 65, bias, relu, kernel, Check::default());
                // in = 16, out = 12: vec4 loads in every product (x w^T, G w, G^T x)
                if bias || !relu {
                    linear_case(&[2, 9, 16], 12, bias, relu, kernel, Check::default());
                }
            }
        }
        linear_case(&[1], 1, true, true, kernel, Check::default());
        linear_case(&[1, 1], 1, false, true, kernel, Check::default());
    }
}

#[test]
fn linear_many_rows_split_k_and_chunked_bias_grad() {
    // rows = K of dW: the GPU splits it, the CPU too on multi-core machines, and the bias
    // gradient sums row chunks. Same sqrt(K) rounding argument as matmul_split_k.
    let c = Check { gpu_abs: 2e-4, ..Check::default() };
    for kernel in KERNELS {
        linear_case(&[1100, 7], 5, true, true, kernel, c.clone());
        linear_case(&[4, 1030], 16, true, false, kernel, c.clone());
        linear_case(&[2, 2048], 12, true, true, kernel, c.clone());
        // vec4 G^T x (tn) for dW with split K and a K tail
        linear_case(&[1030, 8], 12, true, true, kernel, c.clone());
        // dW big enough (8 x 16 x 2048) for the CPU to split K over its cores
        linear_case(&[2048, 16], 8, true, true, kernel, c.clone());
    }
}

#[test]
fn linear_zero_sized() {
    for kernel in KERNELS {
        linear_case(&[0, 4], 3, true, false, kernel, Check::default());
        linear_case(&[5, 0], 3, true, false, kernel, Check::default());
        linear_case(&[5, 4], 0, true, true, kernel, Check::default());
    }
}

#[test]
fn linear_one_output_matvec_awkward_shapes() {
    // out = 1 runs as matrix-vector products (the alpha logit); on the GPU 8 lanes per row,
    // 32 rows per workgroup, vec4 loads when `in` is a multiple of 4: rows not multiples of
    // 32, `in` below, at and past the lanes, multiples of 4 or not, `in` = 1
    let shapes: [&[usize]; 11] = [&[1], &[1, 1], &[7, 1], &[7, 13], &[67, 5], &[3, 65, 129], &[70, 130], &[33, 4], &[5, 9, 12], &[2, 9, 64], &[37, 516]];
    for bias in [false, true] {
        for relu in [false, true] {
            for xshape in shapes {
                let inp = *xshape.last().unwrap();
                if relu && !bias && inp % 2 == 0 {
                    continue; // relu_safe needs an odd `in` without a bias
                }
                linear_case(xshape, 1, bias, relu, GemmKernel::Auto, Check::default());
            }
        }
    }
    // the matvec path serves every GEMM kernel choice
    for kernel in KERNELS {
        linear_case(&[67, 13], 1, true, true, kernel, Check::default());
        linear_case(&[67, 12], 1, true, true, kernel, Check::default());
    }
}

#[test]
fn linear_one_output_many_rows() {
    // dw = G^T x and db sum every row: f64 on the CPU, 64 row chunks of f32 partials on the
    // GPU. Their rounding error grows like sqrt(rows) * eps * |lane partial| (the argument of
    // matmul_split_k): 265 * 6e-8 * 17 ~ 3e-4 at 70001 rows, 1450 * 6e-8 * 90 ~ 8e-3 at 2M,
    // but these gradients are themselves ~ sqrt(rows) (265, 1450), so the default 1e-4
    // relative tolerance covers it.
    linear_case(&[70001, 13], 1, true, true, GemmKernel::Auto, Check::default());
    linear_case(&[70001, 13], 1, false, false, GemmKernel::Auto, Check::default());
    linear_case(&[70001, 16], 1, true, false, GemmKernel::Auto, Check::default());
    // 2097153 rows = 65537 workgroups of 32 rows: the grid wraps past 65535 groups into y
    linear_case(&[2097153, 1], 1, true, true, GemmKernel::Auto, Check::default());
    linear_case(&[2097153, 4], 1, false, false, GemmKernel::Auto, Check::default());
}

#[test]
fn linear_one_output_zero_sized() {
    linear_case(&[0, 4], 1, true, false, GemmKernel::Auto, Check::default());
    linear_case(&[0, 5], 1, true, true, GemmKernel::Auto, Check::default());
    linear_case(&[5, 0], 1, true, false, GemmKernel::Auto, Check::default());
    linear_case(&[5, 0], 1, false, false, GemmKernel::Auto, Check::default());
}

#[test]
fn matmul_then_linear_composition() {
    // the same variable through two products: gradients accumulate
    for kernel in KERNELS {
        check_op(&format!("attention-like composition {kernel:?}"), |g| {
            let q = g.input_with_grad("q", &[2, 5, 8]);
            let k = g.input_with_grad("k", &[2, 7, 8]);
            let w = g.param("w", &[6, 8]);
            let logits = g.matmul_with(q, k, false, true, kernel); // [2, 5, 7]
            let mixed = g.matmul_with(logits, k, false, false, kernel); // [2, 5, 8]
            g.linear_with(mixed, w, None, false, kernel)
        }, Check::default());
    }
}

/// Straightforward f64 reference for sgemm.
fn naive(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for l in 0..k {
                let av = if ta { a[l * m + i] } else { a[i * k + l] };
                let bv = if tb { b[j * k + l] } else { b[l * n + j] };
                s += av as f64 * bv as f64;
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

#[test]
fn sgemm_matches_reference() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for (m, n, k) in [(1, 1, 1), (7, 5, 13), (33, 65, 17), (130, 70, 90), (3, 4, 0), (0, 4, 3)] {
        for (ta, tb) in TRANS {
            let a = randn(&mut rng, m * k);
            let b = randn(&mut rng, k * n);
            let want = naive(m, n, k, &a, ta, &b, tb);
            let mut c = randn(&mut rng, m * n);
            let before = c.clone();
            sgemm(m, n, k, &a, ta, &b, tb, &mut c, true);
            for i in 0..m * n {
                let w = before[i] + want[i];
                assert!((c[i] - w).abs() <= 1e-4 * (1.0 + w.abs()), "accumulate {m}x{n}x{k} ta={ta} tb={tb}: {} vs {w}", c[i]);
            }
            sgemm(m, n, k, &a, ta, &b, tb, &mut c, false);
            for i in 0..m * n {
                assert!((c[i] - want[i]).abs() <= 1e-4 * (1.0 + want[i].abs()), "overwrite {m}x{n}x{k} ta={ta} tb={tb}");
            }
        }
    }
}
