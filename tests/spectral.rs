//! Tests of the spectral slot init (src/spectral.rs) on synthetic token scenes.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use slotforge::spectral::*;
use slotforge::viz::{render_segments, write_segments_png, write_slot_pca_png};

const H: usize = 16;
const W: usize = 16;
const N: usize = H * W;
const F: usize = 64;
const D: usize = 32;
const K: usize = 7;

fn gauss(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A 16x16 scene: a background code plus `objects` non-overlapping rectangles, each with its
/// own random code; every token is its region's code plus N(0, noise^2) per channel.
/// Returns tokens [N, f] and the true region of each token (0 = background).
fn blob_scene(seed: u64, objects: usize, noise: f32, f: usize) -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut truth = vec![0u32; N];
    let mut placed = 0;
    let mut attempts = 0;
    while placed < objects {
        attempts += 1;
        assert!(attempts < 10_000, "could not place objects");
        let (h, w) = (rng.random_range(3..6usize), rng.random_range(3..6usize));
        let (r0, c0) = (rng.random_range(0..=H - h), rng.random_range(0..=W - w));
        // keep a one-cell margin to every other object
        let clash = (r0.saturating_sub(1)..(r0 + h + 1).min(H))
            .any(|r| (c0.saturating_sub(1)..(c0 + w + 1).min(W)).any(|c| truth[r * W + c] != 0));
        if clash {
            continue;
        }
        placed += 1;
        for r in r0..r0 + h {
            for c in c0..c0 + w {
                truth[r * W + c] = placed as u32;
            }
        }
    }
    let codes: Vec<Vec<f32>> = (0..=objects)
        .map(|_| (0..f).map(|_| gauss(&mut rng)).collect())
        .collect();
    let mut tokens = vec![0.0f32; N * f];
    for i in 0..N {
        for c in 0..f {
            tokens[i * f + c] = codes[truth[i] as usize][c] + noise * gauss(&mut rng);
        }
    }
    (tokens, truth)
}

/// A random ReLU "encoder" [f] -> [D]: relu(x W + b), b > 0, so every output shares a large
/// positive common component (the situation of the reported bug).
struct Encoder {
    w: Vec<f32>,
    b: Vec<f32>,
    f: usize,
}

impl Encoder {
    fn new(seed: u64, f: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let s = 1.0 / (f as f32).sqrt();
        Encoder {
            w: (0..f * D).map(|_| gauss(&mut rng) * s).collect(),
            b: (0..D).map(|_| 0.5 + rng.random::<f32>()).collect(),
            f,
        }
    }
    fn encode(&self, tokens: &[f32]) -> Vec<f32> {
        let n = tokens.len() / self.f;
        let mut out = vec![0.0f32; n * D];
        for i in 0..n {
            for o in 0..D {
                let mut acc = self.b[o];
                for c in 0..self.f {
                    let x = tokens[i * self.f + c];
                    acc += if x.is_finite() { x } else { 0.0 } * self.w[c * D + o];
                }
                out[i * D + o] = acc.max(0.0);
            }
        }
        out
    }
}

/// Adjusted Rand index of two labelings.
fn ari(a: &[u32], b: &[u32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let ka = *a.iter().max().unwrap() as usize + 1;
    let kb = *b.iter().max().unwrap() as usize + 1;
    let mut table = vec![0u64; ka * kb];
    for (&x, &y) in a.iter().zip(b) {
        table[x as usize * kb + y as usize] += 1;
    }
    let c2 = |v: u64| (v * v.saturating_sub(1)) as f64 / 2.0;
    let sum_ij: f64 = table.iter().map(|&v| c2(v)).sum();
    let sum_a: f64 = (0..ka)
        .map(|i| c2((0..kb).map(|j| table[i * kb + j]).sum()))
        .sum();
    let sum_b: f64 = (0..kb)
        .map(|j| c2((0..ka).map(|i| table[i * kb + j]).sum()))
        .sum();
    let total = c2(a.len() as u64);
    let expected = sum_a * sum_b / total;
    let max = 0.5 * (sum_a + sum_b);
    if max == expected {
        return 1.0;
    }
    (sum_ij - expected) / (max - expected)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    d / (na * nb)
}

fn assert_healthy_slots(slots: &[f32], k: usize, d: usize, what: &str) {
    assert_eq!(slots.len(), k * d);
    assert!(
        slots.iter().all(|v| v.is_finite()),
        "{what}: non-finite slot values"
    );
    for s in 0..k {
        let row = &slots[s * d..(s + 1) * d];
        let nrm = row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!(
            (nrm - (d as f64).sqrt()).abs() < 1e-3,
            "{what}: slot {s} norm {nrm}"
        );
        for t in 0..s {
            let c = cosine(row, &slots[t * d..(t + 1) * d]);
            assert!(
                c < DUPLICATE_COS,
                "{what}: slots {t} and {s} are duplicates (cos {c})"
            );
        }
    }
}

fn check_segmentation_invariants(seg: &Segmentation, num_slots: usize) {
    let n = seg.grid.0 * seg.grid.1;
    assert_eq!(seg.labels.len(), n);
    assert_eq!(seg.groups.len(), n);
    assert!(seg.eigenvalues.iter().all(|v| v.is_finite()));
    assert_eq!(seg.eigenvalues[0], 0.0);
    assert!(seg.num_segments >= 1 && seg.num_segments <= num_slots);
    assert_eq!(seg.num_groups, num_slots.min(n));
    assert_eq!(seg.group_segment.len(), seg.num_groups);
    let mut counts = vec![0usize; seg.num_groups];
    for (&l, &g) in seg.labels.iter().zip(&seg.groups) {
        assert!((l as usize) < seg.num_segments);
        counts[g as usize] += 1;
        // every group lies inside its segment
        assert_eq!(seg.group_segment[g as usize], l);
    }
    assert!(counts.iter().all(|&c| c > 0), "empty group: {counts:?}");
    for s in 0..seg.num_segments {
        assert_eq!(seg.group_segment[s], s as u32);
    }
    // segments are numbered by first appearance in token order
    let mut next = 0;
    for &l in &seg.labels {
        assert!(l <= next, "segment {l} appears before segment {next}");
        next = next.max(l + 1);
    }
}

#[test]
fn eigengap_picks_the_largest_gap() {
    assert_eq!(eigengap_count(&[0.0, 0.01, 0.02, 0.9, 0.95]), 3);
    assert_eq!(eigengap_count(&[0.0, 0.8, 0.85, 0.9]), 1);
    assert_eq!(eigengap_count(&[0.0]), 1);
    assert_eq!(eigengap_count(&[0.0, 1.0, 1.0, 1.0]), 1);
}

#[test]
fn well_separated_blobs_are_recovered() {
    for (cfg_name, cfg) in [
        ("plain", SpectralConfig::default()),
        (
            "spatial",
            SpectralConfig {
                spatial_weight: 1.0,
                ..Default::default()
            },
        ),
        (
            "full solver",
            SpectralConfig {
                solver: Solver::Full,
                ..Default::default()
            },
        ),
    ] {
        for seed in 0..8u64 {
            let objects = 2 + (seed as usize % 4);
            let (tokens, truth) = blob_scene(100 + seed, objects, 0.5, F);
            let seg = segment(&tokens, N, F, (H, W), K, &cfg);
            check_segmentation_invariants(&seg, K);
            let score = ari(&seg.labels, &truth);
            assert!(
                score >= 0.9,
                "{cfg_name} seed {seed}: ARI {score:.3}, {} segments for {} regions, eigenvalues {:?}",
                seg.num_segments,
                objects + 1,
                seg.eigenvalues
            );
            assert_eq!(
                seg.num_segments,
                objects + 1,
                "{cfg_name} seed {seed}: eigengap count"
            );
        }
    }
}

#[test]
fn degenerate_scenes_give_distinct_fallback_slots() {
    let enc = Encoder::new(7, F);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let code: Vec<f32> = (0..F).map(|_| gauss(&mut rng)).collect();
    let identical: Vec<f32> = (0..N).flat_map(|_| code.iter().copied()).collect();
    let (single, _) = blob_scene(5, 0, 0.3, F); // one object filling the grid
    let zeros = vec![0.0f32; N * F];
    let mut with_nan = blob_scene(6, 3, 0.5, F).0;
    with_nan[17] = f32::NAN;
    with_nan[F * 40 + 3] = f32::INFINITY;
    for solver in [Solver::Lanczos, Solver::Full] {
        let cfg = SpectralConfig {
            solver,
            ..Default::default()
        };
        for (name, tokens, one_segment) in [
            ("identical", &identical, true),
            ("single object", &single, true),
            ("all zero", &zeros, true),
            ("non-finite values", &with_nan, false),
        ] {
            let what = format!("{name} ({solver:?})");
            let seg = segment(tokens, N, F, (H, W), K, &cfg);
            check_segmentation_invariants(&seg, K);
            if one_segment {
                assert_eq!(
                    seg.num_segments, 1,
                    "{what}: eigenvalues {:?}",
                    seg.eigenvalues
                );
            }
            let encoded = enc.encode(tokens);
            let slots = slot_init(&encoded, N, D, &seg, K);
            assert_healthy_slots(&slots, K, D, &what);
            // the encoder output itself as given, and an all-zero encoder output
            let slots0 = slot_init(&vec![0.0; N * D], N, D, &seg, K);
            assert_healthy_slots(&slots0, K, D, &format!("{what}, zero encoder output"));
            let (raw, _) = slot_similarity(&slots0, K, D);
            assert!(
                raw.abs() < 1e-6,
                "{what}: fallback slots are orthogonal, got mean cos {raw}"
            );
        }
    }
    // more slots than tokens: still finite, every token its own group
    let tiny: Vec<f32> = (0..4 * F).map(|_| gauss(&mut rng)).collect();
    let seg = segment(&tiny, 4, F, (2, 2), 6, &SpectralConfig::default());
    assert_eq!(seg.num_groups, 4);
    let slots = slot_init(&enc.encode(&tiny), 4, D, &seg, 6);
    assert_healthy_slots(&slots, 6, D, "6 slots, 4 tokens");
    // a one-token scene
    let seg = segment(&tiny[..F], 1, F, (1, 1), 3, &SpectralConfig::default());
    assert_eq!(seg.num_segments, 1);
    let slots = slot_init(&enc.encode(&tiny[..F]), 1, D, &seg, 3);
    assert_healthy_slots(&slots, 3, D, "one token");
}

#[test]
fn sign_fix_is_deterministic() {
    // hand-made: the largest magnitude wins, the first one on an exact tie
    let mut v = vec![0.1, -0.7, 0.3, /* second column */ -0.5, 0.5, 0.2];
    fix_signs(&mut v, 3, 2);
    assert_eq!(v, vec![-0.1, 0.7, -0.3, 0.5, -0.5, -0.2]);
    let mut w: Vec<f64> = v.iter().map(|x| -x).collect();
    fix_signs(&mut w, 3, 2);
    assert_eq!(v, w);

    // real eigenvectors: flipping any subset of columns is undone bit for bit, and the
    // clustering does not change
    let (tokens, truth) = blob_scene(42, 4, 0.5, F);
    let aff = normalized_affinity(&tokens, N, F, (H, W), &SpectralConfig::default());
    for solver in [Solver::Full, Solver::Lanczos] {
        let spec = smallest_nontrivial(&aff, 6, solver, 0);
        for i in 0..6 {
            let col = spec.vector(i);
            let (imax, _) = col.iter().enumerate().fold((0, 0.0f64), |a, (j, &x)| {
                if x.abs() > a.1 {
                    (j, x.abs())
                } else {
                    a
                }
            });
            assert!(
                col[imax] > 0.0,
                "column {i}: largest component is not positive"
            );
        }
        let labels = cluster_spectrum(&spec, 5, 0);
        assert!(ari(&labels, &truth) >= 0.9);
        for mask in 1u32..64 {
            let mut flipped = spec.clone();
            for i in 0..6 {
                if mask & (1 << i) != 0 {
                    flipped.eigenvectors[i * N..(i + 1) * N]
                        .iter_mut()
                        .for_each(|x| *x = -*x);
                }
            }
            assert_eq!(
                cluster_spectrum(&flipped, 5, 0),
                labels,
                "{solver:?} mask {mask:b}"
            );
            fix_signs(&mut flipped.eigenvectors, N, 6);
            assert_eq!(
                flipped.eigenvectors, spec.eigenvectors,
                "{solver:?} mask {mask:b}"
            );
        }
        // the eigenvectors are orthogonal to the trivial one D^1/2 1 (not to the constant)
        for i in 0..6 {
            let c: f64 = spec
                .vector(i)
                .iter()
                .zip(&aff.trivial)
                .map(|(a, b)| a * b)
                .sum();
            assert!(
                c.abs() < 1e-8,
                "{solver:?}: eigenvector {i} not orthogonal to D^1/2 1 ({c})"
            );
        }
    }
}

#[test]
fn raw_init_similarity_is_low_across_a_batch() {
    let b = 8;
    let enc = Encoder::new(11, F);
    let mut tokens = Vec::new();
    for s in 0..b as u64 {
        tokens.extend(blob_scene(200 + s, 1 + (s as usize % 5), 0.5, F).0);
    }
    let cfg = SpectralConfig::default();
    let segs = segment_batch(&tokens, b, N, F, (H, W), K, &cfg);
    let encoded = enc.encode(&tokens);
    let slots = slot_init_batch(&encoded, b, N, D, &segs, K);
    assert_eq!(slots.len(), b * K * D);
    for s in 0..b {
        assert_healthy_slots(
            &slots[s * K * D..(s + 1) * K * D],
            K,
            D,
            &format!("scene {s}"),
        );
        // the batch version is the per-scene version
        assert_eq!(
            &slots[s * K * D..(s + 1) * K * D],
            &slot_init(&encoded[s * N * D..(s + 1) * N * D], N, D, &segs[s], K)[..]
        );
    }
    let (raw, centered) = slot_similarity_batch(&slots, b, K, D);
    // the naive init of the bug report: uncentered segment means of the encoder output
    let mut naive = vec![0.0f32; b * K * D];
    for s in 0..b {
        let seg = &segs[s];
        for g in 0..seg.num_groups.min(K) {
            let members: Vec<usize> = (0..N).filter(|&i| seg.groups[i] as usize == g).collect();
            for c in 0..D {
                naive[(s * K + g) * D + c] = members
                    .iter()
                    .map(|&i| encoded[(s * N + i) * D + c])
                    .sum::<f32>()
                    / members.len() as f32;
            }
        }
    }
    let (naive_raw, naive_centered) = slot_similarity_batch(&naive, b, K, D);
    println!("init similarity: raw {raw:.3} centered {centered:.3}; naive uncentered means: raw {naive_raw:.3} centered {naive_centered:.3}");
    assert!(raw < 0.5, "raw mean pairwise cosine {raw}");
    assert!(
        naive_raw > 0.5,
        "the test scenes should reproduce the bug with the naive init ({naive_raw})"
    );
}

#[test]
fn full_and_lanczos_solvers_agree() {
    let mut scenes: Vec<Vec<f32>> = (0..6u64)
        .map(|s| blob_scene(300 + s, 1 + s as usize, 0.5, F).0)
        .collect();
    scenes.push(blob_scene(400, 4, 1.5, F).0); // noisy, weak structure
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    scenes.push((0..N * F).map(|_| gauss(&mut rng)).collect()); // pure noise
    for (i, tokens) in scenes.iter().enumerate() {
        for cfg in [
            SpectralConfig::default(),
            SpectralConfig {
                spatial_weight: 2.0,
                seed: 5,
                ..Default::default()
            },
        ] {
            let aff = normalized_affinity(tokens, N, F, (H, W), &cfg);
            let full = smallest_nontrivial(&aff, K, Solver::Full, cfg.seed);
            let lan = smallest_nontrivial(&aff, K, Solver::Lanczos, cfg.seed);
            for (a, b) in full.eigenvalues.iter().zip(&lan.eigenvalues) {
                assert!(
                    (a - b).abs() < 1e-8,
                    "scene {i}: eigenvalues {:?} vs {:?}",
                    full.eigenvalues,
                    lan.eigenvalues
                );
            }
            let seg_full = segment(
                tokens,
                N,
                F,
                (H, W),
                K,
                &SpectralConfig {
                    solver: Solver::Full,
                    ..cfg.clone()
                },
            );
            let seg_lan = segment(
                tokens,
                N,
                F,
                (H, W),
                K,
                &SpectralConfig {
                    solver: Solver::Lanczos,
                    ..cfg.clone()
                },
            );
            assert_eq!(seg_full.num_segments, seg_lan.num_segments, "scene {i}");
            let score = ari(&seg_full.labels, &seg_lan.labels);
            assert!(score > 0.999, "scene {i}: full vs Lanczos ARI {score}");
            if i < 6 {
                assert_eq!(seg_full.labels, seg_lan.labels, "scene {i}");
                assert_eq!(seg_full.groups, seg_lan.groups, "scene {i}");
            }
        }
    }
}

#[test]
fn results_are_deterministic() {
    let (tokens, _) = blob_scene(77, 3, 0.5, F);
    let enc = Encoder::new(1, F);
    let cfg = SpectralConfig::default();
    let a = segment(&tokens, N, F, (H, W), K, &cfg);
    let b = segment(&tokens, N, F, (H, W), K, &cfg);
    assert_eq!(a, b);
    let e = enc.encode(&tokens);
    assert_eq!(slot_init(&e, N, D, &a, K), slot_init(&e, N, D, &b, K));
}

#[test]
fn cache_decomposes_each_scene_once() {
    let cfg = SpectralConfig::default();
    let cache = SpectralCache::new(cfg.clone(), N, F, (H, W), K);
    let scenes: Vec<Vec<f32>> = (0..3u64)
        .map(|s| blob_scene(500 + s, 2 + s as usize, 0.5, F).0)
        .collect();
    // batch [scene 10, scene 11, scene 10, scene 12]
    let ids = [10usize, 11, 10, 12];
    let batch: Vec<f32> = [0usize, 1, 0, 2]
        .iter()
        .flat_map(|&i| scenes[i].iter().copied())
        .collect();
    let first = cache.get_batch(&ids, &batch);
    assert_eq!(cache.len(), 3);
    assert!(Arc::ptr_eq(&first[0], &first[2]));
    assert_eq!(*first[1], segment(&scenes[1], N, F, (H, W), K, &cfg));
    let again = cache.get_or_compute(11, &scenes[1]);
    assert!(Arc::ptr_eq(&again, &first[1]));
    let second = cache.get_batch(&ids, &batch);
    for (x, y) in first.iter().zip(&second) {
        assert!(Arc::ptr_eq(x, y));
    }
    let slots = slot_init_batch(&vec![0.5f32; 4 * N * D], 4, N, D, &second, K);
    assert!(slots.iter().all(|v| v.is_finite()));
    cache.clear();
    assert!(cache.is_empty());
}

#[test]
fn pictures_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let b = 3;
    let mut tokens = Vec::new();
    for s in 0..b as u64 {
        tokens.extend(blob_scene(600 + s, 2 + s as usize, 0.5, F).0);
    }
    let segs = segment_batch(&tokens, b, N, F, (H, W), K, &SpectralConfig::default());
    let slots = slot_init_batch(&Encoder::new(2, F).encode(&tokens), b, N, D, &segs, K);
    let seg_path = dir.path().join("segments.png");
    let pca_path = dir.path().join("slots_pca.png");
    write_segments_png(&seg_path, &segs, 8).unwrap();
    write_slot_pca_png(&pca_path, &slots, b, K, D, 160).unwrap();
    let seg_img = image::open(&seg_path).unwrap().to_rgb8();
    let pca_img = image::open(&pca_path).unwrap().to_rgb8();
    assert!(seg_img.width() >= 3 * 2 * W as u32 * 8 && seg_img.height() >= H as u32 * 8);
    assert!(pca_img.width() >= 3 * 160 && pca_img.height() >= 160);
    // the segments picture shows one colour per segment
    let panel = render_segments(&segs[2], 4);
    let mut colours = std::collections::HashSet::new();
    for r in 0..H as u32 {
        for c in 0..W as u32 {
            colours.insert(panel.get_pixel(c * 4 + 1, r * 4 + 1).0);
        }
    }
    assert_eq!(colours.len(), segs[2].num_segments);
    if let Ok(dir) = std::env::var("SPECTRAL_PNG_DIR") {
        std::fs::copy(&seg_path, format!("{dir}/segments.png")).unwrap();
        std::fs::copy(&pca_path, format!("{dir}/slots_pca.png")).unwrap();
    }
}

#[test]
fn guide_targets_weigh_segments_by_size() {
    use slotforge::train::spectral_init::SegmentCache;
    let (tokens, _) = blob_scene(31, 3, 0.3, F);
    let seg = segment(&tokens, N, F, (H, W), K, &SpectralConfig::default());
    let groups = seg.groups.clone();
    let cache = SegmentCache::from_segmentations(N, K, (H, W), std::slice::from_ref(&seg));
    let mut size = [0usize; K];
    for &g in &groups {
        size[g as usize] += 1;
    }
    assert!(size.iter().filter(|&&c| c > 0).copied().min() < size.iter().max().copied(), "need unequal groups");
    for balance in [0.0f32, 0.5, 1.0] {
        let targets = cache.guide_targets(&[0], balance, false);
        let (kn, nk, scale) = (&targets.masks, &targets.attn, &targets.scale);
        // no families: F is the identity
        for j in 0..K {
            for l in 0..K {
                assert_eq!(targets.family[j * K + l], if j == l { 1.0 } else { 0.0 });
            }
        }
        // the targets are the scaled one-hot masks, in both layouts
        for (t, &g) in groups.iter().enumerate() {
            for k in 0..K {
                let want = if k == g as usize { scale[t] } else { 0.0 };
                assert_eq!((kn[k * N + t], nk[t * K + k]), (want, want));
            }
        }
        // token weights s^2 have mean 1 and are size^-p up to that normalization
        let w: Vec<f64> = scale.iter().map(|&s| (s as f64).powi(2)).collect();
        assert!((w.iter().sum::<f64>() / N as f64 - 1.0).abs() < 1e-5);
        let total = |g: usize| -> f64 { (0..N).filter(|&t| groups[t] as usize == g).map(|t| w[t]).sum() };
        let (small, big) = ((0..K).filter(|&g| size[g] > 0).min_by_key(|&g| size[g]).unwrap(), (0..K).max_by_key(|&g| size[g]).unwrap());
        let ratio = total(big) / total(small);
        let want = (size[big] as f64 / size[small] as f64).powf(1.0 - balance as f64);
        assert!((ratio - want).abs() < 1e-4 * want, "balance {balance}: group weight ratio {ratio}, want {want}");
    }
}

/// Guided by family, the pieces of one region (groups split only to give every slot one)
/// share one target, their sum: F (s T) with F = 1/sqrt(m) within a family of m, and the
/// balance weighs the family as one group.
#[test]
fn guide_targets_by_family_treat_split_pieces_as_one() {
    use slotforge::train::spectral_init::SegmentCache;
    let (tokens, _) = blob_scene(31, 3, 0.3, F);
    let seg = segment(&tokens, N, F, (H, W), K, &SpectralConfig::default());
    let (groups, family) = (seg.groups.clone(), seg.group_family.clone());
    assert_eq!(family.len(), seg.num_groups);
    for (g, &f) in family.iter().enumerate() {
        // a family's root is a segment or a detached part, its own family, and it is split
        // only into later groups of the same segment
        assert_eq!(family[f as usize], f);
        assert!(f as usize <= g);
        assert_eq!(seg.group_segment[g], seg.group_segment[f as usize]);
    }
    let members = |f: u32| family.iter().filter(|&&x| x == f).count();
    let big = (0..K as u32).max_by_key(|&f| members(f)).unwrap();
    assert!(members(big) >= 2, "need a split region: 3 blobs and {K} slots");
    let cache = SegmentCache::from_segmentations(N, K, (H, W), std::slice::from_ref(&seg));
    let t = cache.guide_targets(&[0], 1.0, true);
    let fam_of = |t: usize| family[groups[t] as usize];
    for i in 0..N {
        for j in 0..K {
            let want = if family[j] == fam_of(i) { t.scale[i] / (members(family[j]) as f32).sqrt() } else { 0.0 };
            assert!((t.masks[j * N + i] - want).abs() < 1e-6 && t.attn[i * K + j] == t.masks[j * N + i]);
        }
    }
    // balance 1: every family carries the same total weight
    let totals: Vec<f64> = (0..K as u32)
        .filter(|&f| members(f) > 0 && family[f as usize] == f)
        .map(|f| (0..N).filter(|&i| fam_of(i) == f).map(|i| (t.scale[i] as f64).powi(2)).sum())
        .collect();
    for w in &totals {
        assert!((w - totals[0]).abs() < 1e-3 * totals[0], "family weights {totals:?}");
    }
}

#[test]
fn look_alike_objects_apart_get_their_own_groups() {
    // two rectangles with the same code far apart (one segment of the appearance affinity)
    // and a third with its own code: the groups split the look-alike pair
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut truth = vec![0u32; N];
    for (id, (r0, c0, h, w)) in [(1u32, (1, 1, 4, 4)), (2, (10, 11, 4, 3)), (3, (2, 10, 3, 4))] {
        for r in r0..r0 + h {
            for c in c0..c0 + w {
                truth[r * W + c] = id;
            }
        }
    }
    let code = |rng: &mut ChaCha8Rng| -> Vec<f32> { (0..F).map(|_| gauss(rng)).collect() };
    let (background, shared, third) = (code(&mut rng), code(&mut rng), code(&mut rng));
    let mut tokens = vec![0f32; N * F];
    for i in 0..N {
        let c = match truth[i] {
            0 => &background,
            3 => &third,
            _ => &shared,
        };
        for j in 0..F {
            tokens[i * F + j] = c[j] + 0.3 * gauss(&mut rng);
        }
    }
    let seg = segment(&tokens, N, F, (H, W), K, &SpectralConfig::default());
    check_segmentation_invariants(&seg, K);
    let (a, b) = (truth.iter().position(|&t| t == 1).unwrap(), truth.iter().position(|&t| t == 2).unwrap());
    assert_eq!(seg.labels[a], seg.labels[b], "premise: the look-alike objects share a segment");
    for id in 1..=3u32 {
        let groups: std::collections::BTreeSet<u32> = (0..N).filter(|&i| truth[i] == id).map(|i| seg.groups[i]).collect();
        assert_eq!(groups.len(), 1, "object {id} spans groups {groups:?}");
    }
    assert_ne!(seg.groups[a], seg.groups[b], "the look-alike objects share a group");
    // the detached object's group records the segment it came from
    assert_eq!(seg.group_segment[seg.groups[b] as usize], seg.labels[b]);
    assert_eq!(seg.group_segment[seg.groups[a] as usize], seg.labels[a]);
}

/// A 16x16 blob scene drawn at twice the resolution (32x32): each cell becomes a 2x2 block of
/// tokens, each with its own noise. Returns tokens [4N, f] and the truth per token.
fn blob_scene_2x(seed: u64, objects: usize, noise: f32, f: usize) -> (Vec<f32>, Vec<u32>) {
    let (tokens, truth) = blob_scene(seed, objects, 0.0, f);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x2222);
    let (h2, w2) = (2 * H, 2 * W);
    let mut out = vec![0f32; h2 * w2 * f];
    let mut out_truth = vec![0u32; h2 * w2];
    for t in 0..h2 * w2 {
        let cell = (t / w2 / 2) * W + (t % w2) / 2;
        out_truth[t] = truth[cell];
        for c in 0..f {
            out[t * f + c] = tokens[cell * f + c] + noise * gauss(&mut rng);
        }
    }
    (out, out_truth)
}

#[test]
fn pooled_segmentation_recovers_blobs_at_full_resolution() {
    // the pixel model's images are too large to segment every token (N^2 affinity): with
    // pool 2 a 32x32 scene is segmented at 16x16 and each token takes its block's segment
    let cfg = SpectralConfig { pool: 2, ..Default::default() };
    for seed in 0..6u64 {
        let (tokens, truth) = blob_scene_2x(100 + seed, 2 + seed as usize % 4, 0.4, F);
        let seg = segment(&tokens, 4 * N, F, (2 * H, 2 * W), K, &cfg);
        check_segmentation_invariants(&seg, K);
        let a = ari(&truth, &seg.labels);
        assert!(a >= 0.9, "seed {seed}: pooled segmentation ARI {a:.3}");
        // each 2x2 block carries one segment and one group
        for t in 0..4 * N {
            let first = (t / (2 * W) / 2 * 2) * (2 * W) + (t % (2 * W)) / 2 * 2;
            assert_eq!(seg.labels[t], seg.labels[first]);
            assert_eq!(seg.groups[t], seg.groups[first]);
        }
    }
}

#[test]
fn pooling_handles_grids_the_pool_does_not_divide() {
    // 35x35 (Tetrominoes) at pools 2 and 4: partial blocks at the last row and column, and a
    // coarse grid (9x9 = 81 tokens) still larger than the slot count; 3x3 at pool 4: a single
    // block, fewer tokens than slots
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (side, pool, slots) in [(35usize, 2usize, 4usize), (35, 4, 11), (3, 4, 4)] {
        let n = side * side;
        let tokens: Vec<f32> = (0..n * 3).map(|i| if (i / 3) % side < side / 2 { 1.0 } else { -1.0 } + 0.1 * gauss(&mut rng)).collect();
        let seg = segment(&tokens, n, 3, (side, side), slots, &SpectralConfig { pool, ..Default::default() });
        assert_eq!(seg.grid, (side, side));
        assert_eq!(seg.labels.len(), n);
        let coarse = side.div_ceil(pool).pow(2);
        assert_eq!(seg.num_groups, slots.min(coarse), "{side}x{side} pool {pool}");
        let mut counts = vec![0usize; seg.num_groups];
        for &g in &seg.groups {
            counts[g as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 0), "{side}x{side} pool {pool}: empty group {counts:?}");
        if side > pool {
            // left half and right half differ: never in one segment
            assert_ne!(seg.labels[0], seg.labels[side - 1], "{side}x{side} pool {pool}");
        }
    }
}

#[test]
fn pooled_outlines_are_redrawn_per_token() {
    // objects at any offset: blocks of 2x2 straddle the outlines, and the tokens there go to
    // the segment they resemble, so the outlines come out as exact as without pooling
    let pooled = SpectralConfig { pool: 2, ..Default::default() };
    let mut scores = (0.0, 0.0);
    for seed in 0..8u64 {
        let (tokens, truth) = blob_scene(200 + seed, 2 + seed as usize % 4, 0.4, F);
        let seg = segment(&tokens, N, F, (H, W), K, &pooled);
        check_segmentation_invariants(&seg, K);
        let full = segment(&tokens, N, F, (H, W), K, &SpectralConfig::default());
        scores.0 += ari(&truth, &seg.labels) / 8.0;
        scores.1 += ari(&truth, &full.labels) / 8.0;
    }
    println!("mean ARI: pooled {:.3}, every token {:.3}", scores.0, scores.1);
    assert!(scores.0 >= 0.95 && scores.0 >= scores.1 - 0.02, "pooled ARI {:.3}, unpooled {:.3}", scores.0, scores.1);
}
