use slotforge_engine::testing::*;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use slotforge_engine::backend::Device;
use slotforge_engine::exec::Executor;
use slotforge_engine::graph::Graph;

#[derive(Clone, Copy, Debug)]
struct Case {
    b: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    bias: bool,
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    const fn new(b: usize, h: usize, w: usize, cin: usize, cout: usize, k: (usize, usize), stride: usize, pad: usize, bias: bool) -> Case {
        Case { b, h, w, cin, cout, kh: k.0, kw: k.1, stride, pad, bias }
    }
    fn name(&self) -> String {
        format!(
            "conv2d x=[{},{},{},{}] w=[{},{},{},{}] s={} p={} bias={}",
            self.b, self.h, self.w, self.cin, self.cout, self.cin, self.kh, self.kw, self.stride, self.pad, self.bias
        )
    }
    fn ho(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }
    fn wo(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }
}

/// Awkward shapes: odd sizes, Cin/Cout of 1 and 3, 1x1 / 3x3 / 5x5 / non-square kernels,
/// stride 1 and 2, padding 0..2 (including padding >= kernel, where border outputs see only
/// padding), channel counts that straddle the GPU's 4-channel blocks and 16-channel tiles.
const CASES: &[Case] = &[
    Case::new(2, 5, 5, 3, 4, (3, 3), 1, 1, true),
    Case::new(1, 7, 6, 1, 1, (5, 5), 1, 2, true),
    Case::new(2, 7, 6, 3, 4, (3, 3), 2, 1, false),
    Case::new(1, 5, 5, 3, 4, (1, 1), 1, 0, true), // pointwise path (no im2col on the CPU)
    Case::new(2, 6, 7, 1, 4, (1, 1), 2, 1, true), // 1x1 with stride and padding >= kernel
    Case::new(1, 5, 5, 3, 1, (5, 5), 2, 0, true),
    Case::new(1, 5, 5, 3, 4, (5, 5), 1, 0, false), // 1x1 output
    Case::new(1, 7, 6, 3, 4, (3, 5), 2, 2, true),  // non-square kernel
    Case::new(2, 5, 5, 1, 4, (3, 3), 2, 2, true),
    Case::new(1, 4, 5, 5, 6, (3, 3), 1, 1, true),
    Case::new(1, 5, 4, 17, 18, (3, 3), 1, 1, true), // crosses the 16-channel dw tiles
];

fn build(c: Case, x_grad: bool) -> impl Fn(&mut Graph) -> slotforge_engine::graph::Var {
    move |g| {
        let x = if x_grad { g.input_with_grad("x", &[c.b, c.h, c.w, c.cin]) } else { g.input("x", &[c.b, c.h, c.w, c.cin]) };
        let w = g.param("w", &[c.cout, c.cin, c.kh, c.kw]);
        let b = c.bias.then(|| g.param("b", &[c.cout]));
        g.conv2d(x, w, b, c.stride, c.pad)
    }
}

#[test]
fn conv2d_awkward_shapes() {
    for &c in CASES {
        check_op(&c.name(), build(c, true), Check::default());
    }
}

#[test]
fn conv2d_frozen_input() {
    // the image fed to the encoder needs no gradient: only dw and db are computed
    let c = Case::new(2, 5, 6, 3, 4, (3, 3), 2, 1, true);
    check_op(&format!("{} frozen x", c.name()), build(c, false), Check::default());
}

#[test]
fn conv2d_empty_batch() {
    let c = Case::new(0, 5, 5, 3, 4, (3, 3), 1, 1, true);
    check_op(&c.name(), build(c, true), Check::default());
}

#[test]
fn conv2d_output_shape() {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 7, 6, 3]);
    let w = g.param("w", &[4, 3, 3, 5]);
    let y = g.conv2d(x, w, None, 2, 2);
    assert_eq!(g.shape(y), [2, (7 + 4 - 3) / 2 + 1, (6 + 4 - 5) / 2 + 1, 4]);
}

#[test]
fn conv2d_rejects_channel_mismatch() {
    let mut g = Graph::new();
    let x = g.input("x", &[1, 5, 5, 3]);
    let w = g.param("w", &[4, 2, 3, 3]);
    g.conv2d(x, w, None, 1, 1);
    let err = slotforge_engine::Executor::new(g, slotforge_engine::Device::Cpu).err().expect("a shape error");
    assert!(matches!(err, slotforge_engine::Error::Shape(ref m) if m.contains("channels")), "{err}");
}

/// Direct f64 convolution and its gradients, the textbook loops.
struct Reference {
    y: Vec<f64>,
    gx: Vec<f64>,
    gw: Vec<f64>,
    gb: Vec<f64>,
}

fn reference(c: Case, x: &[f32], w: &[f32], b: &[f32], up: &[f32]) -> Reference {
    let (ho, wo) = (c.ho(), c.wo());
    let mut r = Reference {
        y: vec![0.0; c.b * ho * wo * c.cout],
        gx: vec![0.0; x.len()],
        gw: vec![0.0; w.len()],
        gb: vec![0.0; c.cout],
    };
    for bi in 0..c.b {
        for oy in 0..ho {
            for ox in 0..wo {
                for co in 0..c.cout {
                    let yi = ((bi * ho + oy) * wo + ox) * c.cout + co;
                    let u = up[yi] as f64;
                    let mut acc = if c.bias { b[co] as f64 } else { 0.0 };
                    r.gb[co] += u;
                    for ky in 0..c.kh {
                        for kx in 0..c.kw {
                            let (iy, ix) = ((oy * c.stride + ky) as isize - c.pad as isize, (ox * c.stride + kx) as isize - c.pad as isize);
                            if iy < 0 || ix < 0 || iy >= c.h as isize || ix >= c.w as isize {
                                continue;
                            }
                            for ci in 0..c.cin {
                                let xi = ((bi * c.h + iy as usize) * c.w + ix as usize) * c.cin + ci;
                                let wi = ((co * c.cin + ci) * c.kh + ky) * c.kw + kx;
                                acc += x[xi] as f64 * w[wi] as f64;
                                r.gx[xi] += u * w[wi] as f64;
                                r.gw[wi] += u * x[xi] as f64;
                            }
                        }
                    }
                    r.y[yi] = acc;
                }
            }
        }
    }
    r
}

fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).abs() / scale).fold(0.0, f64::max)
}

/// The CPU backend against direct f64 loops, on sizes big enough to take the parallel
/// paths: several im2col blocks, blocks that straddle two images, parallel GEMMs.
#[test]
fn cpu_matches_direct_f64_convolution() {
    let cases = [
        // K = 1600: im2col blocks of 655 pixels over 2 x 576 pixels (a block straddles images)
        Case::new(2, 24, 24, 64, 8, (5, 5), 1, 2, true),
        // fewer blocks than threads: sequential blocks, parallel GEMM
        Case::new(3, 21, 19, 16, 24, (3, 3), 2, 1, true),
        // pointwise, big enough for rayon
        Case::new(4, 33, 31, 32, 40, (1, 1), 1, 0, false),
        // tiny: single-threaded everything
        Case::new(2, 7, 6, 3, 4, (3, 5), 2, 2, true),
    ];
    for c in cases {
        let mut g = Graph::new();
        let out = build(c, true)(&mut g);
        let mut ex = Executor::new(g, Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let x = randn(&mut rng, c.b * c.h * c.w * c.cin);
        let w = randn(&mut rng, c.cout * c.cin * c.kh * c.kw);
        let b = randn(&mut rng, c.cout);
        let up = randn(&mut rng, c.b * c.ho() * c.wo() * c.cout);
        let (vx, vw) = (ex.graph().find("x").unwrap(), ex.graph().find("w").unwrap());
        ex.set(vx, &x).unwrap();
        ex.set(vw, &w).unwrap();
        if c.bias {
            let vb = ex.graph().find("b").unwrap();
            ex.set(vb, &b).unwrap();
        }
        ex.forward().unwrap();
        ex.backward_with(out, &up).unwrap();
        let r = reference(c, &x, &w, &b, &up);
        let errs = [
            ("y", rel_err(&ex.get(out).unwrap(), &r.y)),
            ("dx", rel_err(&ex.get_grad(vx).unwrap().unwrap(), &r.gx)),
            ("dw", rel_err(&ex.get_grad(vw).unwrap().unwrap(), &r.gw)),
            ("db", if c.bias { rel_err(&ex.get_grad(ex.graph().find("b").unwrap()).unwrap().unwrap(), &r.gb) } else { 0.0 }),
        ];
        let worst = errs.iter().fold(0f64, |m, e| m.max(e.1));
        println!("ERR op={} cpu_vs_f64_direct_rel={worst:.3e} {errs:?}", c.name());
        // f32 sums of up to K = 1600 products (forward, dx) or B Ho Wo = 1152 terms per
        // block (dw): ~sqrt(n) * 6e-8 relative to the largest output, well below 1e-5
        for (what, e) in errs {
            assert!(e < 1e-5, "{}: {what} differs from the f64 direct convolution by {e:.3e}", c.name());
        }
    }
}
