//! Metrics: ARI / FG-ARI against scikit-learn values, properties, mBO, batch averaging,
//! and the resolution helpers against PyTorch's bilinear interpolation.

use slotforge::metrics::*;

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    #[serde(rename = "true")]
    true_: Vec<u32>,
    pred: Vec<u32>,
    ari: f64,
    fg_ari: f64,
}

#[derive(serde::Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

fn load_cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/ari_cases.json");
    let text = std::fs::read_to_string(path).expect("../shared/testdata/ari_cases.json beside the repository");
    let c: Cases = serde_json::from_str(&text).unwrap();
    assert!(c.cases.len() >= 10, "expected the full case list");
    c.cases
}

#[test]
fn ari_matches_sklearn_cases() {
    for c in load_cases() {
        let a = ari(&c.true_, &c.pred);
        let f = fg_ari(&c.true_, &c.pred);
        assert!((a - c.ari).abs() < 1e-9, "{}: ari {a} vs sklearn {}", c.name, c.ari);
        assert!((f - c.fg_ari).abs() < 1e-9, "{}: fg_ari {f} vs sklearn {}", c.name, c.fg_ari);
    }
}

/// Simple deterministic generator for property tests.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}

#[test]
fn ari_invariant_to_label_permutation_and_renaming() {
    let mut rng = Lcg(7);
    for trial in 0..50 {
        let n = 50 + rng.below(500) as usize;
        let kt = 1 + rng.below(8);
        let kp = 1 + rng.below(12);
        let t: Vec<u32> = (0..n).map(|_| rng.below(kt)).collect();
        let p: Vec<u32> = (0..n)
            .map(|_| if rng.below(3) == 0 { rng.below(kp) } else { t[rng.below(n as u32) as usize % n] })
            .collect();
        let base = ari(&t, &p);
        let fbase = fg_ari(&t, &p);
        // rename predicted labels with an arbitrary injective map (including huge labels)
        let p2: Vec<u32> = p.iter().map(|&l| 4_000_000_000 - l * 977).collect();
        // permute true labels except background, so FG-ARI keeps the same foreground
        let t2: Vec<u32> = t.iter().map(|&l| if l == 0 { 0 } else { 100 + (kt - l) }).collect();
        assert!((ari(&t2, &p2) - base).abs() < 1e-12, "trial {trial}");
        assert!((fg_ari(&t2, &p2) - fbase).abs() < 1e-12, "trial {trial}");
        // symmetry
        assert!((ari(&p, &t) - base).abs() < 1e-12, "trial {trial}: ari not symmetric");
        // perfect prediction under any renaming
        let perfect: Vec<u32> = t.iter().map(|&l| l * 3 + 5).collect();
        assert_eq!(ari(&t, &perfect), 1.0);
        assert_eq!(mbo(&t, &perfect), 1.0);
        assert!((-1.0..=1.0).contains(&base));
    }
}

#[test]
fn ari_edge_cases_follow_sklearn() {
    // empty input, singletons, both single cluster: 1.0
    assert_eq!(ari(&[], &[]), 1.0);
    assert_eq!(ari(&[3], &[9]), 1.0);
    assert_eq!(ari(&[0, 1, 2, 3], &[5, 6, 7, 8]), 1.0);
    assert_eq!(ari(&[2; 10], &[7; 10]), 1.0);
    // one side single cluster, the other not: 0.0
    assert_eq!(ari(&[0, 0, 1, 1], &[0, 0, 0, 0]), 0.0);
    // hand-computed: sklearn gives -0.5 for [0,0,1,1] vs [0,1,0,1]
    assert!((ari(&[0, 0, 1, 1], &[0, 1, 0, 1]) + 0.5).abs() < 1e-12);
    // sklearn docs example: adjusted_rand_score([0, 0, 1, 2], [0, 0, 1, 1]) = 0.5714285714285715
    assert!((ari(&[0, 0, 1, 2], &[0, 0, 1, 1]) - 0.5714285714285715).abs() < 1e-12);
    // FG-ARI with no foreground pixel: sklearn's empty-input case
    assert_eq!(fg_ari(&[0, 0, 0], &[1, 2, 3]), 1.0);
    // FG-ARI ignores what happens on background pixels entirely
    assert_eq!(fg_ari(&[0, 0, 1, 1, 2, 2], &[9, 8, 1, 1, 2, 2]), 1.0);
    assert!(ari(&[0, 0, 1, 1, 2, 2], &[9, 8, 1, 1, 2, 2]) < 1.0);
}

#[test]
fn ari_large_image_no_overflow() {
    // 256x256 pixels x 4 images worth of labels: pair counts ~ 1e18 products
    let n = 262_144usize;
    let t: Vec<u32> = (0..n).map(|i| (i / 30_000) as u32).collect();
    let p: Vec<u32> = (0..n).map(|i| ((i + 5_000) / 30_000) as u32).collect();
    let a = ari(&t, &p);
    assert!(a > 0.5 && a < 1.0, "{a}");
    assert_eq!(ari(&t, &t), 1.0);
}

#[test]
fn mbo_values() {
    // true: 0 0 1 1 1 1 2 2 ; pred: 0 0 0 0 1 1 1 1
    let t = [0, 0, 1, 1, 1, 1, 2, 2];
    let p = [0, 0, 0, 0, 1, 1, 1, 1];
    // obj 1 (4 px): IoU with pred0 = 2/6, with pred1 = 2/6 -> 1/3
    // obj 2 (2 px): IoU with pred1 = 2/4 -> 1/2
    let m = mbo(&t, &p);
    assert!((m - (1.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12, "{m}");
    // background is not an object; predicted background segment can still match an object
    assert_eq!(mbo(&[0, 1, 1], &[5, 3, 3]), 1.0);
    // no foreground object: defined as 1.0, and None from mbo_opt
    assert_eq!(mbo(&[0, 0], &[1, 2]), 1.0);
    assert_eq!(mbo_opt(&[0, 0], &[1, 2]), None);
    // a single predicted segment for two objects of 2 px in 4 px: IoU 0.5 each
    assert!((mbo(&[1, 1, 2, 2], &[0, 0, 0, 0]) - 0.5).abs() < 1e-12);
}

#[test]
fn score_batch_averages_per_image() {
    let t1 = [0u32, 1, 1, 2, 2, 2];
    let p1 = [3u32, 1, 1, 2, 2, 2];
    let t2 = [0u32, 0, 1, 1, 2, 2];
    let p2 = [0u32, 1, 0, 1, 0, 1];
    let t3 = [0u32; 6]; // no foreground: counts for ARI only
    let p3 = [1u32, 1, 1, 2, 2, 2];
    let t: Vec<u32> = [t1, t2, t3].concat();
    let p: Vec<u32> = [p1, p2, p3].concat();
    let s = score_batch(&t, &p, 6);
    assert_eq!(s.count, 3);
    assert_eq!(s.fg_count, 2);
    let want_ari = (ari(&t1, &p1) + ari(&t2, &p2) + ari(&t3, &p3)) / 3.0;
    let want_fg = (fg_ari(&t1, &p1) + fg_ari(&t2, &p2)) / 2.0;
    let want_mbo = (mbo(&t1, &p1) + mbo(&t2, &p2)) / 2.0;
    assert!((s.ari - want_ari).abs() < 1e-12);
    assert!((s.fg_ari - want_fg).abs() < 1e-12);
    assert!((s.mbo - want_mbo).abs() < 1e-12);
    assert_eq!(fg_ari(&t1, &p1), 1.0);
    assert!(s.fg_ari < 1.0);
    // a batch is not one big image
    assert!((s.ari - ari(&t, &p)).abs() > 1e-6);
}

#[test]
#[should_panic(expected = "not a multiple")]
fn score_batch_rejects_ragged() {
    score_batch(&[0, 1, 2], &[0, 1, 2], 2);
}

type UpCase = (usize, (usize, usize), (usize, usize), &'static [f32], &'static [u32]);

/// PyTorch 2.15: F.interpolate(a[None], size=(H, W), mode='bilinear', align_corners=False)[0]
/// with a[s, i, j] = sin(1.3 s + 0.7 i + 0.31 j^2) (float32), values rounded to 7 decimals,
/// and argmax over dim 0.
const TORCH_CASES: &[UpCase] = &[
    (
        3,
        (4, 5),
        (9, 13),
        &[
            0.0, 0.0234661, 0.1407963, 0.2581265, 0.4529184, 0.6993512, 0.945784, 0.7144799, 0.4831758, 0.1422558,
            -0.3630882, -0.8684322, -0.9695007, 0.1073696, 0.1295223, 0.2402856, 0.3510489, 0.52187, 0.7327296,
            0.9435892, 0.6691681, 0.3947469, 0.0554354, -0.3812117, -0.8178589, -0.905188, 0.3936886, 0.4123389,
            0.5055903, 0.5988417, 0.7057409, 0.8217386, 0.9377363, 0.5483364, 0.1589365, -0.1760856, -0.4295411,
            -0.6829966, -0.7336876, 0.663175, 0.6779158, 0.751619, 0.8253224, 0.866968, 0.8872418, 0.9075154, 0.41594,
            -0.0756355, -0.3977125, -0.4655422, -0.5333719, -0.5469378, 0.8148337, 0.8228142, 0.8627163, 0.9026185,
            0.8696885, 0.7882037, 0.7067188, 0.2025902, -0.3015384, -0.5500812, -0.4152455, -0.2804098, -0.2534427,
            0.9664924, 0.9677126, 0.9738135, 0.9799145, 0.8724089, 0.6891655, 0.5059222, -0.0107596, -0.5274414,
            -0.7024498, -0.3649488, -0.0274478, 0.0400523, 0.9379118, 0.9323031, 0.9042597, 0.8762164, 0.7155031,
            0.466343, 0.2171829, -0.2172637, -0.6517103, -0.7228565, -0.2490527, 0.2247511, 0.3195117, 0.8835828,
            0.8711355, 0.8088987, 0.7466621, 0.5357935, 0.2258369, -0.0841197, -0.4227899, -0.7614601, -0.7244115,
            -0.1237852, 0.476841, 0.596966, 0.8632094, 0.8481976, 0.7731383, 0.6980792, 0.4684024, 0.135647,
            -0.1971082, -0.4998622, -0.8026163, -0.7249945, -0.0768099, 0.5713747, 0.7010114, 0.9635582, 0.9663023,
            0.9800228, 0.9937434, 0.899245, 0.7326006, 0.5659562, 0.0357853, -0.4943856, -0.6910565, -0.3874777,
            -0.0838988, -0.0231832, 0.9545147, 0.9546183, 0.9551358, 0.9556535, 0.8403363, 0.6477958, 0.4552554,
            -0.0441653, -0.543586, -0.7004221, -0.3433819, 0.0136583, 0.0850661, 0.9303988, 0.9234608, 0.8887706,
            0.8540804, 0.6832464, 0.4216498, 0.1600533, -0.2573669, -0.6747871, -0.7253973, -0.2257934, 0.2738106,
            0.3737311, 0.8825242, 0.8688869, 0.8007002, 0.7325137, 0.5118958, 0.1896569, -0.1325818, -0.4589696,
            -0.7853574, -0.730848, -0.1049935, 0.5208609, 0.6460314, 0.6683387, 0.650398, 0.5606943, 0.4709907,
            0.2407193, -0.083264, -0.4072471, -0.5793793, -0.7515115, -0.599626, 0.0382854, 0.6761968, 0.8037788,
            0.4541531, 0.431909, 0.3206883, 0.2094677, -0.0304572, -0.3561849, -0.6819124, -0.699789, -0.7176656,
            -0.4684041, 0.1815643, 0.8315327, 0.961526, 0.1617995, 0.1394188, 0.0275154, -0.084388, -0.2898632,
            -0.5577197, -0.8255761, -0.6894541, -0.5533321, -0.2545108, 0.2883594, 0.8312296, 0.9398033, -0.1417209,
            -0.1636429, -0.2732527, -0.3828626, -0.5475878, -0.7490565, -0.9505252, -0.6604414, -0.3703576, -0.0288074,
            0.3899424, 0.8086922, 0.8924419, -0.2555411, -0.2772911, -0.3860408, -0.4947906, -0.6442345, -0.8208078,
            -0.9973811, -0.6495616, -0.3017421, 0.0558314, 0.428036, 0.8002407, 0.8746814, 0.5155014, 0.4935034,
            0.3835136, 0.2735239, 0.0281756, -0.3074116, -0.6429988, -0.6953349, -0.747671, -0.5119694, 0.1557886,
            0.8235465, 0.9570977, 0.4032935, 0.3811963, 0.2707099, 0.1602235, -0.072292, -0.3861603, -0.7000286,
            -0.6927964, -0.6855642, -0.4301596, 0.1975032, 0.8251659, 0.9506982, 0.1040726, 0.0817105, -0.0301001,
            -0.1419106, -0.3402056, -0.5961569, -0.8521081, -0.6860271, -0.519946, -0.2120003, 0.3087422, 0.8294846,
            0.9336329, -0.1910266, -0.2130633, -0.3232463, -0.4334293, -0.593105, -0.7857757, -0.9784463, -0.6614876,
            -0.3445288, 0.0067106, 0.4093709, 0.8120313, 0.892563, -0.4572741, -0.4748528, -0.5627462, -0.6506395,
            -0.7409042, -0.8327496, -0.924595, -0.5125567, -0.1005184, 0.2292827, 0.4357281, 0.6421735, 0.6834625,
            -0.7235215, -0.7366423, -0.802246, -0.8678498, -0.8887033, -0.8797235, -0.8707437, -0.3636259, 0.143492,
            0.4518547, 0.4620853, 0.4723158, 0.4743619, -0.8513495, -0.8577144, -0.8895391, -0.9213638, -0.8705792,
            -0.7647216, -0.6588641, -0.1515926, 0.3556789, 0.5866938, 0.4033242, 0.2199547, 0.1832809, -0.9594031,
            -0.958684, -0.9550883, -0.9514927, -0.8287516, -0.6265803, -0.4244091, 0.0694553, 0.5633196, 0.7089996,
            0.3324035, -0.0441926, -0.1195117, -0.9999232, -0.9965476, -0.9796693, -0.962791, -0.8130663, -0.5747774,
            -0.3364884, 0.1523483, 0.641185, 0.7548643, 0.3058082, -0.1432479, -0.2330589,
        ],
        &[
            1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 2, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
            2, 2, 2, 1, 1, 1, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0,
            0, 2, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 1, 1, 1, 0, 0, 0, 0,
            0, 0, 0, 2, 2, 2, 1, 1, 1,
        ],
    ),
    (
        2,
        (3, 3),
        (8, 8),
        &[
            0.0, 0.0190662, 0.1334631, 0.2478601, 0.4251946, 0.6654666, 0.9057387, 0.945784, 0.0402636, 0.0589296,
            0.1709255, 0.2829215, 0.4525522, 0.6798178, 0.9070833, 0.9449609, 0.2818452, 0.2981102, 0.3956999,
            0.4932896, 0.6166978, 0.7659246, 0.9151514, 0.9400225, 0.5234268, 0.5372908, 0.6204742, 0.7036576,
            0.7808434, 0.8520315, 0.9232196, 0.9350842, 0.7081987, 0.7185448, 0.7806218, 0.8426987, 0.8688934,
            0.859206, 0.8495186, 0.847904, 0.8361607, 0.8418725, 0.8761426, 0.9104127, 0.8808479, 0.7874482, 0.6940484,
            0.6784818, 0.9641227, 0.9651999, 0.9716633, 0.9781267, 0.8928024, 0.7156903, 0.5385783, 0.5090597,
            0.9854497, 0.9857545, 0.9875835, 0.9894124, 0.8947948, 0.7037308, 0.5126666, 0.4808226, 0.9635582,
            0.9657878, 0.9791653, 0.9925429, 0.9179925, 0.7555142, 0.5930359, 0.5659562, 0.9601669, 0.9615919,
            0.9701421, 0.9786924, 0.8969943, 0.7250477, 0.5531012, 0.5244434, 0.9398191, 0.9364168, 0.9160031,
            0.8955895, 0.7710046, 0.5422486, 0.3134926, 0.2753666, 0.9194713, 0.9112417, 0.8618641, 0.8124865,
            0.645015, 0.3594495, 0.073884, 0.0262898, 0.8189379, 0.8068196, 0.7341095, 0.6613993, 0.4677004, 0.1530127,
            -0.1616751, -0.214123, 0.6382188, 0.6231503, 0.532739, 0.4423278, 0.2390608, -0.077062, -0.3931848,
            -0.4458719, 0.4574997, 0.439481, 0.3313687, 0.2232563, 0.0104213, -0.3071366, -0.6246945, -0.6776208,
            0.4273799, 0.4088694, 0.2978069, 0.1867444, -0.0276853, -0.3454823, -0.6632794, -0.7162456,
        ],
        &[
            1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    ),
];

fn torch_input(k: usize, h: usize, w: usize) -> Vec<f32> {
    let mut v = Vec::new();
    for s in 0..k {
        for i in 0..h {
            for j in 0..w {
                v.push((1.3 * s as f64 + 0.7 * i as f64 + 0.31 * (j * j) as f64).sin() as f32);
            }
        }
    }
    v
}

#[test]
fn upsample_matches_torch_bilinear() {
    for &(k, from, to, vals, am) in TORCH_CASES {
        let a = torch_input(k, from.0, from.1);
        let up = upsample_bilinear(&a, k, from, to);
        assert_eq!(up.len(), vals.len());
        for (i, (x, y)) in up.iter().zip(vals.iter()).enumerate() {
            assert!((x - y).abs() < 2e-6, "case {from:?}->{to:?} value {i}: {x} vs torch {y}");
        }
        assert_eq!(upsample_argmax(&a, k, from, to), am.to_vec(), "argmax {from:?}->{to:?}");
    }
}

#[test]
fn upsample_identity_and_constant() {
    // same size: identity
    let a: Vec<f32> = (0..2 * 4 * 4).map(|i| (i as f32 * 0.37).sin()).collect();
    assert_eq!(upsample_bilinear(&a, 2, (4, 4), (4, 4)), a);
    // 16 -> 128: first pixel copies the corner, pixel 4 mixes 15/16 : 1/16
    let row: Vec<f32> = (0..16).map(|j| j as f32).collect();
    let up = upsample_bilinear(&row, 1, (1, 16), (1, 128));
    assert_eq!(up[0], 0.0);
    assert!((up[4] - 0.0625).abs() < 1e-6);
    assert_eq!(up[127], 15.0);
}

#[test]
fn reduce_to_grid_majority() {
    // 4x4 mask to 2x2: each patch 2x2
    #[rustfmt::skip]
    let m: [u8; 16] = [
        1, 1, 0, 2,
        1, 0, 2, 2,
        0, 0, 3, 3,
        0, 3, 3, 0,
    ];
    assert_eq!(reduce_to_grid(&m, (4, 4), (2, 2)), vec![1, 2, 0, 3]);
    // tie 2:2 goes to the smaller label
    let t: [u8; 4] = [5, 2, 5, 2];
    assert_eq!(reduce_to_grid(&t, (2, 2), (1, 1)), vec![2]);
    // non-divisible sizes cover every pixel exactly once
    let big: Vec<u8> = (0..35 * 35).map(|i| (i % 7) as u8).collect();
    assert_eq!(reduce_to_grid(&big, (35, 35), (4, 4)).len(), 16);
}

/// Reference values from an independent numpy + torch pipeline: majority per patch (ties to
/// the smaller label), one-hot, F.interpolate(bilinear, align_corners=False), argmax, ARI by
/// the pair-confusion formula over foreground pixels.
#[test]
fn ceiling_matches_torch_pipeline() {
    // patch-aligned rectangles: bilinear upsampling still erodes corners where three patches
    // of another label meet, so even an aligned mask scores below 1
    let (hh, ww) = (32, 32);
    let mut m = vec![0u8; hh * ww];
    for y in 8..16 {
        for x in 8..24 {
            m[y * ww + x] = 1;
        }
    }
    for y in 16..32 {
        for x in 0..8 {
            m[y * ww + x] = 2;
        }
    }
    let aligned = fg_ari_ceiling(&m, (hh, ww), (4, 4));
    assert!((aligned - 0.8071536213566949).abs() < 1e-12, "aligned ceiling {aligned}");
    // two overlapping small discs at 128x128 seen through a 16x16 grid
    let mut c = vec![0u8; 128 * 128];
    for y in 0..128 {
        for x in 0..128 {
            let (dx, dy) = (x as f32 - 40.0, y as f32 - 60.0);
            if dx * dx + dy * dy < 100.0 {
                c[y * 128 + x] = 1;
            }
            let (dx, dy) = (x as f32 - 52.0, y as f32 - 66.0);
            if dx * dx + dy * dy < 64.0 {
                c[y * 128 + x] = 2;
            }
        }
    }
    let ceil = fg_ari_ceiling(&c, (128, 128), (16, 16));
    assert!((ceil - 0.4224701263086662).abs() < 1e-12, "disc ceiling {ceil}");
    let both = fg_ari_ceiling_batch(&[m.clone(), m, vec![0u8; hh * ww]].concat(), (hh, ww), (4, 4));
    assert!((both - aligned).abs() < 1e-12, "batch ceiling skips empty masks: {both}");
}

#[test]
fn upsample_labels_roundtrip_on_grid() {
    let labels: Vec<u32> = (0..16).map(|i| (i % 5) as u32).collect();
    // upsampling by 1 is the identity
    assert_eq!(upsample_labels(&labels, (4, 4), (4, 4)), labels);
    // upsampling by 8 then reducing back recovers the labels
    let up = upsample_labels(&labels, (4, 4), (32, 32));
    let up8: Vec<u8> = up.iter().map(|&v| v as u8).collect();
    assert_eq!(reduce_to_grid(&up8, (32, 32), (4, 4)), labels);
}

#[test]
fn token_scores_against_reduced_truth() {
    let mut m = vec![0u8; 16 * 16];
    for y in 0..8 {
        for x in 0..8 {
            m[y * 16 + x] = 1;
        }
    }
    // prediction on a 2x2 grid: perfect
    let s = token_scores(&m, (16, 16), &[7, 3, 3, 3], (2, 2));
    assert_eq!(s.count, 1);
    assert_eq!(s.ari, 1.0);
    assert_eq!(s.fg_ari, 1.0);
}
