//! Spectral slot initialization wired into training, and the diagnostics that show whether it
//! works.
//!
//! # The init
//! Each scene's tokens are segmented once on the CPU ([`crate::spectral::segment`] with
//! [`spectral_config`]; the features are frozen, so the segments never change) and cached as a
//! segment-mean matrix `S [N, K]`. The tokens are the feature model's features, or for the
//! pixel model each pixel's RGB in [-1, 1] ([`spectral_tokens`]); `enc` below is
//! either model's encoder output `[N, D]`. On the device the model computes
//! `slots_0 = mu + exp(log_sigma) * (noise + LN(S^T enc))` (`SpectralVars::init_slots`; the
//! noise is scaled by `spectral-noise`, 0.1 by default). Column `k` of `S` comes from slot group
//! `k` of the segmentation (`Segmentation::groups`: `num_groups = min(K, N)` non-empty groups
//! refining the segments), as in the spectral module's [`crate::spectral::slot_init`]:
//! * a group that is a segment (`k < num_segments`): `S[:, k] = 1[n in segment k] / |segment k|
//!   - 1/N`, the segment's mean encoded token minus the scene's mean token. Centering removes
//!   the component every slot would otherwise share (what made a user's spectral slots all have
//!   cosine 1.0);
//! * an extra group (a part `g` of segment `p`, made when there are fewer segments than slots):
//!   `S[:, k] = 1[n in g] / |g| - 1[n in p] / |p|`, how the part differs from its segment.
//!   Centering the part on the scene mean instead makes it a near-copy of its segment's slot
//!   (measured on 32 generated CLEVR-like scenes: mean closest-pair cosine 0.79-0.86 against
//!   0.71-0.79 with parts, over three encoder seeds).
//!
//! Every column sums to zero, and every slot gets a non-empty group, so no slot is left at the
//! learned mean (the previous matrix, built from the segment labels, left every slot beyond the
//! segment count at `mu`: all slots identical on a one-segment scene). The LayerNorm (no affine)
//! gives each slot's vector per-element RMS 1, the scale of the noise it stands in for: without
//! it `S^T enc` of a freshly initialized encoder is small next to `mu` and the raw cosine of the
//! initial slots was 0.85 on the same scenes (0.001 with it). A zero column stays exactly zero
//! (`LN(0) = 0`), so a run without spectral init (`S = 0`) is the plain reparameterized init.
//! Unlike `spectral::slot_init`, the vectors are not orthogonalized (that is not linear, and the
//! init is computed on the device each step from the current encoder output).
//!
//! # Gradients
//! None flow through the eigendecomposition: `S` is data, fed like the noise. They do flow
//! through `LN(S^T enc)` into the encoder, and into `mu` and `log_sigma` (the ops are part of
//! the recorded graph), so the encoder is also trained to make segment means good slot inits.
//! This differs from `spectral::slot_init`, a host-side constant that passes no gradient.
//!
//! # Diagnostics
//! [`diagnose`] (used by `slotforge debug-spectral` and `train --debug-spectral`) reads the
//! initial slots of a batch from the model with zero noise and reports their mean
//! off-diagonal cosine similarity (raw, and with each scene's slot mean removed) and their
//! closest pair, the FG-ARI of the spectral segmentation alone against the ground truth
//! (token level and pixel level, with the resolution ceiling), and PNGs of the segments and of
//! the slots' PCA. [`detect_collapse`] / [`check_collapse`] fail above a raw similarity of
//! [`COLLAPSE_SIMILARITY`].

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use serde::Serialize;

use super::config::TrainConfig;
use crate::data::Dataset;
use crate::metrics;
use crate::model::slot_attention::GuideTargets;
use crate::model::Model;
use crate::spectral::{Segmentation, SpectralConfig};

/// The initial slots count as collapsed when their mean raw pairwise cosine exceeds this.
pub const COLLAPSE_SIMILARITY: f64 = 0.8;
/// Scenes drawn in the diagnostic PNGs.
pub const PNG_SCENES: usize = 8;

/// The segmentation settings of a training run: the spectral module's defaults, with the run's
/// seed, affinity power (see `TrainConfig::spectral_affinity_power`) and pooling.
pub fn spectral_config(cfg: &TrainConfig) -> SpectralConfig {
    SpectralConfig {
        seed: cfg.data_seed(),
        affinity_power: cfg.spectral_affinity_power,
        pool: cfg.spectral_pool,
        ..SpectralConfig::default()
    }
}

pub use super::segments::{segment_scenes, segments_for, spectral_tokens, SceneSegments};

/// The segmentation of a dataset's scenes, as training uses it (see [`super::segments`]).
pub type SegmentCache = SceneSegments;

impl SceneSegments {
    /// S for a batch of scenes, [B, N, K].
    pub fn gather(&self, scenes: &[usize]) -> Vec<f32> {
        scenes.iter().flat_map(|&s| segment_weights(&self.seg(s), self.k)).collect()
    }

    /// Mask-guidance targets for a batch: slot `k` owns the tokens of slot group `k` (the
    /// group its init came from). See [`GuideTargets`].
    ///
    /// `balance` = p weighs each token by its group's size^-p (mean weight 1 per scene). With
    /// p = 0 every token counts the same, so a 150-token background outweighs a 6-token
    /// object 25 to 1: early on the decoder's cheapest move is to hand every position to the
    /// background's slot (one active slot for the first ~6 epochs at the clevr10 learning
    /// rate), and late in training small objects are the ones left merged with a neighbour.
    /// With p = 1 every group counts the same in total.
    ///
    /// `by_family`: the groups split from one region only so that every slot gets one (the
    /// background's pieces, `Segmentation::group_family`) are guided as one: their masks'
    /// sum is pulled toward the region, and balance weighs the region as one group. Without
    /// it each piece's slot must draw its piece's arbitrary outline inside the background.
    pub fn guide_targets(&self, scenes: &[usize], balance: f32, by_family: bool) -> GuideTargets {
        let segs: Vec<Segmentation> = scenes.iter().map(|&s| self.seg(s)).collect();
        guide_targets_of(&segs, self.n, self.k, balance, by_family)
    }
}

/// The model's own segmentation of a scene as a guide target (self-training): token `i` goes
/// to the slot that won it, `labels[i]` in `0..k`; no families.
pub fn own_segmentation(labels: &[u8], k: usize, grid: (usize, usize)) -> Segmentation {
    let wide: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
    let ids: Vec<u32> = (0..k as u32).collect();
    Segmentation { grid, labels: wide.clone(), num_segments: k, eigenvalues: vec![], groups: wide, num_groups: k, group_segment: ids.clone(), group_family: ids }
}

/// [`SceneSegments::guide_targets`] of given segmentations, one a scene of the batch.
pub fn guide_targets_of(segs: &[Segmentation], n: usize, k: usize, balance: f32, by_family: bool) -> GuideTargets {
    {
        let mut t = GuideTargets {
            masks: vec![0f32; segs.len() * k * n],
            attn: vec![0f32; segs.len() * n * k],
            scale: vec![1f32; segs.len() * n],
            family: vec![0f32; segs.len() * k * k],
        };
        for (b, seg) in segs.iter().enumerate() {
            // family of each slot: its group's family, or itself (also slots without a group)
            let fam: Vec<usize> = (0..k)
                .map(|j| if by_family && j < seg.num_groups { seg.group_family[j] as usize } else { j })
                .collect();
            let token_fam: Vec<usize> = seg.groups.iter().map(|&g| fam.get(g as usize).copied().unwrap_or(g as usize)).collect();
            let mut size = vec![0usize; token_fam.iter().max().map_or(0, |&f| f + 1).max(k)];
            for &f in &token_fam {
                size[f] += 1;
            }
            let w: Vec<f64> = token_fam.iter().map(|&f| (size[f] as f64).powf(-balance as f64)).collect();
            let mean = w.iter().sum::<f64>() / n as f64;
            // F[j, l] = 1 / sqrt(|family|) within a family: F * x repeats the family's sum
            // |family| times, so its squared error counts once
            let mut members = vec![0usize; k];
            for &f in &fam {
                members[f] += 1;
            }
            let fmat = &mut t.family[b * k * k..(b + 1) * k * k];
            for j in 0..k {
                for l in 0..k {
                    if fam[j] == fam[l] {
                        fmat[j * k + l] = 1.0 / (members[fam[j]] as f32).sqrt();
                    }
                }
            }
            // F (s T) with T one-hot: slot j's target at token i is F[j, group of i] * s_i
            for (i, &g) in seg.groups.iter().enumerate() {
                let st = (w[i] / mean).sqrt() as f32;
                t.scale[b * n + i] = st;
                let g = g as usize;
                if g < k {
                    for j in 0..k {
                        let v = fmat[j * k + g] * st;
                        t.masks[(b * k + j) * n + i] = v;
                        t.attn[(b * n + i) * k + j] = v;
                    }
                }
            }
        }
        t
    }
}

/// `S [N, k]` (row-major) of one scene from its slot groups; see the module docs. Column `j`
/// is zero only when `j >= num_groups`, which happens only when `k > N`.
pub fn segment_weights(seg: &Segmentation, k: usize) -> Vec<f32> {
    let n = seg.n();
    let count = |labels: &[u32], m: usize| {
        let mut c = vec![0usize; m];
        for &l in labels {
            if (l as usize) < m {
                c[l as usize] += 1;
            }
        }
        c
    };
    let seg_size = count(&seg.labels, seg.num_segments);
    let group_size = count(&seg.groups, seg.num_groups);
    let mut s = vec![0f32; n * k];
    for j in 0..k.min(seg.num_groups) {
        if group_size[j] == 0 {
            continue; // never happens: every group is non-empty
        }
        let in_group = 1.0 / group_size[j] as f64;
        if j < seg.num_segments {
            // the segment itself (group j is what is left of segment j after splits): its
            // full mean, centered on the scene mean
            let in_seg = 1.0 / seg_size[j].max(1) as f64;
            for t in 0..n {
                let member = if seg.labels[t] as usize == j { in_seg } else { 0.0 };
                s[t * k + j] = (member - 1.0 / n as f64) as f32;
            }
        } else {
            let p = seg.group_segment[j] as usize;
            let in_parent = 1.0 / seg_size[p].max(1) as f64;
            for t in 0..n {
                let a = if seg.groups[t] as usize == j { in_group } else { 0.0 };
                let b = if seg.labels[t] as usize == p { in_parent } else { 0.0 };
                s[t * k + j] = (a - b) as f32;
            }
        }
    }
    s
}

/// Initial slots `[scenes, K, D]` as training computes them (`init_slots` of the model) with
/// zero noise: `mu + LN(S^T enc)` for the given scenes of `data` and their segmentations.
/// Runs the model in batches of its own size (the last one padded).
pub fn initial_slots(model: &mut Model, data: &Dataset, scenes: &[usize], segs: &[Segmentation]) -> Result<Vec<f32>> {
    let (b, k, d) = (model.batch(), model.num_slots(), model.slot_dim());
    assert_eq!(segs.len(), scenes.len(), "one segmentation per scene");
    let mut out = Vec::with_capacity(scenes.len() * k * d);
    let noise = vec![0f32; b * k * d];
    for (chunk, chunk_segs) in scenes.chunks(b).zip(segs.chunks(b)) {
        // pad by repeating the last scene; the padding is dropped below
        let last = chunk.len() - 1;
        let padded: Vec<usize> = (0..b).map(|i| chunk[i.min(last)]).collect();
        let weights: Vec<f32> = (0..b).flat_map(|i| segment_weights(&chunk_segs[i.min(last)], k)).collect();
        model.feed(data, &padded, &noise, Some(&weights), 0.0)?;
        model.ex_mut().forward()?;
        out.extend_from_slice(&model.ex().get(model.init_slots())?[..chunk.len() * k * d]);
    }
    Ok(out)
}

/// Fails when the initial slots `[b, k, d]` have collapsed: mean raw off-diagonal cosine over
/// the batch above [`COLLAPSE_SIMILARITY`] (or not finite). Returns `(raw, centered)` otherwise.
pub fn detect_collapse(slots: &[f32], b: usize, k: usize, d: usize) -> Result<(f64, f64)> {
    let (raw, centered) = crate::spectral::slot_similarity_batch(slots, b, k, d);
    check_collapse(raw, centered, b)?;
    Ok((raw, centered))
}

/// The verdict of [`detect_collapse`] from already measured similarities.
pub fn check_collapse(raw: f64, centered: f64, scenes: usize) -> Result<()> {
    if !raw.is_finite() || raw > COLLAPSE_SIMILARITY {
        bail!(
            "spectral init collapsed: the initial slots have mean pairwise cosine {raw:.3} (limit {COLLAPSE_SIMILARITY}; \
             centered {centered:.3}) over {scenes} scenes. The slots start (nearly) identical and Slot Attention \
             cannot break the symmetry; check that the segment matrix is centered and gives every slot a group"
        );
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize)]
pub struct SceneDiagnostics {
    pub scene: usize,
    pub num_segments: usize,
    pub num_groups: usize,
    pub similarity_raw: f64,
    pub similarity_centered: f64,
    /// The largest raw cosine between two of the scene's initial slots.
    pub max_pair_similarity: f64,
    /// FG-ARI of the segments on the token grid (None: no masks, or no foreground)
    pub token_fg_ari: Option<f64>,
    /// FG-ARI of the segments upsampled to the mask (None: no masks, or no foreground)
    pub fg_ari: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SpectralDiagnostics {
    pub scenes: usize,
    pub num_slots: usize,
    pub slot_dim: usize,
    /// Mean over scenes of the mean off-diagonal cosine of the initial slots.
    pub similarity_raw: f64,
    /// The same with each scene's slot mean removed first.
    pub similarity_centered: f64,
    /// Mean over scenes of the largest raw cosine between two slots (the closest pair).
    pub max_pair_similarity: f64,
    pub collapsed: bool,
    pub mean_segments: f64,
    /// Scores of the spectral segmentation alone (None without masks).
    pub token_fg_ari: Option<f64>,
    pub token_ari: Option<f64>,
    pub fg_ari: Option<f64>,
    pub ari: Option<f64>,
    pub mbo: Option<f64>,
    pub fg_ari_ceiling: Option<f64>,
    /// Token FG-ARI of the slot groups (the segments, detached parts split off, the largest
    /// split while slots are left): what the init and the mask guidance use.
    pub groups_token_fg_ari: Option<f64>,
    pub per_scene: Vec<SceneDiagnostics>,
    /// Files written.
    pub files: Vec<String>,
}

impl SpectralDiagnostics {
    /// A few lines for a human.
    pub fn summary(&self) -> String {
        let f = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.3}"));
        let worst = self.per_scene.iter().map(|s| s.similarity_raw).fold(f64::NEG_INFINITY, f64::max);
        let mut s = format!(
            "spectral init diagnostics: {} scenes, {} slots of {} dims\n  \
             initial slot similarity: raw {:.3} (worst scene {:.3}), centered {:.3}, closest pair {:.3}  -> {}\n  \
             spectral segments: {:.1} per scene; token FG-ARI {} (ARI {}), pixel FG-ARI {} (ARI {}, mBO {}; ceiling {})\n  \
             slot groups: token FG-ARI {}",
            self.scenes,
            self.num_slots,
            self.slot_dim,
            self.similarity_raw,
            worst,
            self.similarity_centered,
            self.max_pair_similarity,
            if self.collapsed { format!("COLLAPSED (> {COLLAPSE_SIMILARITY})") } else { "ok".into() },
            self.mean_segments,
            f(self.token_fg_ari),
            f(self.token_ari),
            f(self.fg_ari),
            f(self.ari),
            f(self.mbo),
            f(self.fg_ari_ceiling),
            f(self.groups_token_fg_ari),
        );
        for file in &self.files {
            s.push_str(&format!("\n  wrote {file}"));
        }
        s
    }
}

/// Spectral init diagnostics of `scenes` of `data` with `model`'s current parameters, their
/// segmentations `segs` (one per scene). Writes `spectral_diagnostics.json`,
/// `spectral_segments.png` and `spectral_slots_pca.png` into `out`. Does not fail on a
/// collapsed init (see [`SpectralDiagnostics::collapsed`] and [`detect_collapse`]).
pub fn diagnose(
    model: &mut Model,
    data: &Dataset,
    scenes: &[usize],
    segs: &[Segmentation],
    out: &Path,
) -> Result<SpectralDiagnostics> {
    anyhow::ensure!(!scenes.is_empty(), "spectral diagnostics need at least one scene");
    anyhow::ensure!(segs.len() == scenes.len(), "one segmentation per scene");
    model.config().check_data(data)?;
    let (n, k, d) = (data.tokens(), model.num_slots(), model.slot_dim());
    std::fs::create_dir_all(out).with_context(|| format!("cannot create output directory {}", out.display()))?;
    let b = scenes.len();
    let slots = initial_slots(model, data, scenes, segs)?;
    let (raw, centered) = crate::spectral::slot_similarity_batch(&slots, b, k, d);
    let collapsed = check_collapse(raw, centered, b).is_err();

    // scores of the segmentation alone
    let grid = data.grid;
    let (mh, mw) = data.mask_hw;
    let masks = data.masks_batch(scenes)?;
    let mut per_scene = Vec::with_capacity(b);
    let (mut tok_t, mut tok_p, mut tok_g, mut pix_t, mut pix_p) = (vec![], vec![], vec![], vec![], vec![]);
    for (i, seg) in segs.iter().enumerate() {
        let scene_slots = &slots[i * k * d..(i + 1) * k * d];
        let (sr, sc) = crate::spectral::slot_similarity(scene_slots, k, d);
        let (mut tf, mut pf) = (None, None);
        if let Some(m) = &masks {
            let mask = &m[i * mh * mw..(i + 1) * mh * mw];
            let reduced = metrics::reduce_to_grid(mask, (mh, mw), grid);
            let up = metrics::upsample_labels(&seg.labels, grid, (mh, mw));
            let truth: Vec<u32> = mask.iter().map(|&v| v as u32).collect();
            if reduced.iter().any(|&l| l != 0) {
                tf = Some(metrics::fg_ari(&reduced, &seg.labels));
            }
            if truth.iter().any(|&l| l != 0) {
                pf = Some(metrics::fg_ari(&truth, &up));
            }
            tok_t.extend(reduced);
            tok_p.extend_from_slice(&seg.labels);
            tok_g.extend_from_slice(&seg.groups);
            pix_t.extend(truth);
            pix_p.extend(up);
        }
        per_scene.push(SceneDiagnostics {
            scene: scenes[i],
            num_segments: seg.num_segments,
            num_groups: seg.num_groups,
            similarity_raw: sr,
            similarity_centered: sc,
            max_pair_similarity: max_pair_cosine(scene_slots, k, d),
            token_fg_ari: tf,
            fg_ari: pf,
        });
    }
    let (token, groups, pixel, ceiling) = match &masks {
        Some(m) => (
            Some(metrics::score_batch(&tok_t, &tok_p, n)),
            Some(metrics::score_batch(&tok_t, &tok_g, n)),
            Some(metrics::score_batch(&pix_t, &pix_p, mh * mw)),
            Some(metrics::fg_ari_ceiling_batch(m, (mh, mw), grid)),
        ),
        None => (None, None, None, None),
    };

    // pictures
    let shown = b.min(PNG_SCENES);
    let seg_png = out.join("spectral_segments.png");
    let pca_png = out.join("spectral_slots_pca.png");
    write_segments_with_truth(&seg_png, data, &scenes[..shown], &segs[..shown])?;
    crate::viz::write_slot_pca_png(&pca_png, &slots[..shown * k * d], shown, k, d, 160)?;

    let json_path = out.join("spectral_diagnostics.json");
    let mut diag = SpectralDiagnostics {
        scenes: b,
        num_slots: k,
        slot_dim: d,
        similarity_raw: raw,
        similarity_centered: centered,
        max_pair_similarity: 0.0,
        collapsed,
        mean_segments: segs.iter().map(|s| s.num_segments as f64).sum::<f64>() / b as f64,
        token_fg_ari: token.map(|s| s.fg_ari),
        token_ari: token.map(|s| s.ari),
        fg_ari: pixel.map(|s| s.fg_ari),
        ari: pixel.map(|s| s.ari),
        mbo: pixel.map(|s| s.mbo),
        fg_ari_ceiling: ceiling,
        groups_token_fg_ari: groups.map(|s| s.fg_ari),
        per_scene,
        files: vec![],
    };
    diag.max_pair_similarity = diag.per_scene.iter().map(|s| s.max_pair_similarity).sum::<f64>() / b as f64;
    diag.files = [&json_path, &seg_png, &pca_png].iter().map(|p| p.display().to_string()).collect();
    crate::checkpoint::write_atomic(&json_path, serde_json::to_string_pretty(&diag)?.as_bytes())?;
    Ok(diag)
}

/// The largest cosine between two of `k` slots `[k, d]` (0 for `k < 2`; zero vectors count 0).
pub fn max_pair_cosine(slots: &[f32], k: usize, d: usize) -> f64 {
    let rows: Vec<&[f32]> = slots.chunks_exact(d.max(1)).take(k).collect();
    let norm = |r: &[f32]| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let mut best = if k < 2 { 0.0 } else { f64::NEG_INFINITY };
    for i in 0..rows.len() {
        for j in 0..i {
            let (ni, nj) = (norm(rows[i]), norm(rows[j]));
            let c = if ni > 0.0 && nj > 0.0 {
                rows[i].iter().zip(rows[j]).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() / (ni * nj)
            } else {
                0.0
            };
            best = best.max(c);
        }
    }
    best
}

/// One row per scene: the scene (if the dataset has images), the ground truth, the spectral
/// segments upsampled to the mask and blended over the scene, then the segments and the slot
/// groups on the token grid ([`crate::viz::render_segments`]; colour = segment / slot
/// index, as in the PCA picture).
pub fn write_segments_with_truth(path: &Path, data: &Dataset, scenes: &[usize], segs: &[Segmentation]) -> Result<()> {
    let grid = data.grid;
    let (mh, mw) = data.mask_hw;
    let (ih, iw) = data.image_hw;
    let mut rows = Vec::new();
    for (&s, seg) in scenes.iter().zip(segs) {
        let mut row = Vec::new();
        let scene_img = data.image(s)?.map(|px| RgbImage::from_raw(iw as u32, ih as u32, px).expect("image size"));
        if let Some(img) = &scene_img {
            row.push(img.clone());
        }
        let (ph, pw) = if mh > 0 { (mh, mw) } else if ih > 0 { (ih, iw) } else { (grid.0 * 8, grid.1 * 8) };
        if let Some(mask) = data.mask(s)? {
            let gt: Vec<u32> = mask.iter().map(|&v| v as u32).collect();
            row.push(crate::viz::labels_image(&gt, (mh, mw), 1));
        }
        let up = metrics::upsample_labels(&seg.labels, grid, (ph, pw));
        let mut over = RgbImage::new(pw as u32, ph as u32);
        for (i, &l) in up.iter().enumerate() {
            let (y, x) = ((i / pw) as u32, (i % pw) as u32);
            let c = crate::viz::palette(l as usize);
            let base = match &scene_img {
                Some(img) if img.width() as usize == pw && img.height() as usize == ph => img.get_pixel(x, y).0,
                _ => [255, 255, 255],
            };
            let mix = |a: u8, b: u8| (0.45 * a as f32 + 0.55 * b as f32) as u8;
            over.put_pixel(x, y, Rgb([mix(base[0], c[0]), mix(base[1], c[1]), mix(base[2], c[2])]));
        }
        row.push(over);
        let scale = (ph / grid.0).max(1) as u32;
        row.push(crate::viz::render_segments(seg, scale));
        rows.push(crate::viz::hconcat(&row));
    }
    crate::viz::save_png(&crate::viz::vconcat(&rows), path)
}
