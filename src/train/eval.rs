//! Validation: what a model predicts on a dataset, the unsupervised measures that need no
//! labels (reconstruction error, active slots, mask overlap, slot similarity), and, where the
//! data has masks, the segmentation scores: at pixel level (masks upsampled bilinearly then
//! argmaxed, as the literature does) and at token level, with the resolution ceiling beside
//! them. The pixel model's masks are at image resolution: they are scored directly.

use std::path::Path;

use anyhow::Result;
use image::RgbImage;
use serde_json::json;

use super::records::EvalRecord;
use super::monitor::{mask_stats, slot_similarity};
use super::run::scene_noise;
use super::spectral_init::SegmentCache;
use crate::data::Dataset;
use crate::metrics;
use crate::model::Model;

/// A model's output on every scene of a dataset.
pub struct Prediction {
    /// [S, K, N]: the decoder's masks (tokens, or pixels of the pixel model)
    pub alpha: Vec<f32>,
    /// [S, K, N]: the last iteration's attention, transposed
    pub attn: Vec<f32>,
    /// The unsupervised measures, means over the scenes.
    pub recon: f64,
    pub active_slots: f64,
    pub mask_overlap: f64,
    pub slot_similarity: f64,
    pub slot_similarity_centered: f64,
}

/// Run `model` over every scene of `data` in batches of its size (the last padded by
/// repeating its last scene; the padding is dropped). The slot noise of scene `i` depends on
/// (seed, i) alone, so the result does not depend on the batch size.
pub fn predict(model: &mut Model, data: &Dataset, seed: u64, segments: Option<&SegmentCache>, noise_scale: f32) -> Result<Prediction> {
    let (b, k, d, n) = (model.batch(), model.num_slots(), model.slot_dim(), data.tokens());
    let mut p = Prediction {
        alpha: Vec::with_capacity(data.count * k * n),
        attn: Vec::with_capacity(data.count * k * n),
        recon: 0.0,
        active_slots: 0.0,
        mask_overlap: 0.0,
        slot_similarity: 0.0,
        slot_similarity_centered: 0.0,
    };
    let idx: Vec<usize> = (0..data.count).collect();
    for chunk in idx.chunks(b) {
        let mut padded = chunk.to_vec();
        padded.resize(b, *chunk.last().unwrap());
        let noise = scene_noise(seed, &padded, k * d, noise_scale);
        let segs = segments.map(|c| c.gather(&padded));
        let inputs = data.model_inputs(&padded)?;
        model.feed_inputs(&inputs, &noise, segs.as_deref(), 0.0)?;
        model.ex_mut().forward()?;
        let c = chunk.len();
        let (out, ex) = (model.out(), model.ex());
        let alpha = ex.get(out.alpha)?;
        p.alpha.extend_from_slice(&alpha[..c * k * n]);
        let attn = ex.get(out.attn)?; // [B, N, K]
        for bi in 0..c {
            p.attn.extend((0..k * n).map(|i| attn[(bi * n + i % n) * k + i / n]));
        }
        // per-scene measures of the real scenes only
        let recon = ex.get(model.recon())?;
        let target = if model.is_pixel() { crate::model::pixel::scale_images(&inputs) } else { inputs };
        let per = recon.len() / b;
        let sq: f64 = recon[..c * per].iter().zip(&target[..c * per]).map(|(&r, &t)| ((r - t) as f64).powi(2)).sum();
        p.recon += sq / per as f64;
        let (active, overlap) = mask_stats(&alpha[..c * k * n], c, k, n, 0.02);
        let (raw, centered) = slot_similarity(&ex.get(out.slots)?[..c * k * d], c, k, d);
        p.active_slots += active as f64 * c as f64;
        p.mask_overlap += overlap as f64 * c as f64;
        p.slot_similarity += raw as f64 * c as f64;
        p.slot_similarity_centered += centered as f64 * c as f64;
    }
    let s = data.count.max(1) as f64;
    for v in [&mut p.recon, &mut p.active_slots, &mut p.mask_overlap, &mut p.slot_similarity, &mut p.slot_similarity_centered] {
        *v /= s;
    }
    Ok(p)
}

/// Scores of masks [S, K, N] on the data's token grid against its masks.
pub fn score_masks(alpha: &[f32], k: usize, data: &Dataset, masks: &[u8]) -> serde_json::Value {
    let (gh, gw) = data.grid;
    let n = gh * gw;
    let (mh, mw) = data.mask_hw;
    let (mut pix_t, mut pix_p, mut tok_t, mut tok_p, mut ceil_p) = (vec![], vec![], vec![], vec![], vec![]);
    for s in 0..data.count {
        let a = &alpha[s * k * n..(s + 1) * k * n];
        let mask = &masks[s * mh * mw..(s + 1) * mh * mw];
        pix_p.extend(metrics::upsample_argmax(a, k, (gh, gw), (mh, mw)));
        pix_t.extend(mask.iter().map(|&v| v as u32));
        let reduced = metrics::reduce_to_grid(mask, (mh, mw), (gh, gw));
        tok_p.extend(metrics::argmax_maps(a, k));
        ceil_p.extend(metrics::upsample_labels(&reduced, (gh, gw), (mh, mw)));
        tok_t.extend(reduced);
    }
    let pixel = metrics::score_batch(&pix_t, &pix_p, mh * mw);
    let token = metrics::score_batch(&tok_t, &tok_p, n);
    let ceiling = metrics::score_batch(&pix_t, &ceil_p, mh * mw);
    json!({
        "fg_ari": pixel.fg_ari, "ari": pixel.ari, "mbo": pixel.mbo,
        "token_fg_ari": token.fg_ari, "token_ari": token.ari,
        "fg_ari_ceiling": ceiling.fg_ari,
    })
}

/// Scores of the pixel model's masks [S, K, H W] against the data's masks.
pub fn score_pixel_masks(alpha: &[f32], k: usize, data: &Dataset, masks: &[u8]) -> serde_json::Value {
    let pred = pixel_labels(alpha, k, data);
    let truth: Vec<u32> = masks.iter().map(|&v| v as u32).collect();
    let s = metrics::score_batch(&truth, &pred, data.mask_hw.0 * data.mask_hw.1);
    json!({"fg_ari": s.fg_ari, "ari": s.ari, "mbo": s.mbo})
}

/// The resolution predicted labels are written at: the masks', else the images', else the
/// token grid.
pub fn label_hw(data: &Dataset) -> (usize, usize) {
    if data.has_masks() {
        data.mask_hw
    } else if data.has_images() {
        data.image_hw
    } else {
        data.grid
    }
}

/// The predicted slot per pixel, [S, H, W] at [`label_hw`], from masks [S, K, N] on `data.grid`.
pub fn pixel_labels(alpha: &[f32], k: usize, data: &Dataset) -> Vec<u32> {
    let grid = data.grid;
    let n = grid.0 * grid.1;
    let hw = label_hw(data);
    (0..data.count).flat_map(|s| metrics::upsample_argmax(&alpha[s * k * n..(s + 1) * k * n], k, grid, hw)).collect()
}

fn score(model: &Model, alpha: &[f32], data: &Dataset, masks: &[u8]) -> serde_json::Value {
    if model.is_pixel() {
        score_pixel_masks(alpha, model.num_slots(), data, masks)
    } else {
        score_masks(alpha, model.num_slots(), data, masks)
    }
}

/// The measures of a prediction: always the unsupervised ones; where the data has masks, the
/// scores of the decoder's masks and, beside them, of the attention (`attn_*`) and, with
/// spectral init, of the slot groups the slots start from (`spectral_*`, the teacher).
pub fn measures(model: &Model, p: &Prediction, data: &Dataset, segments: Option<&SegmentCache>) -> Result<EvalRecord> {
    let mut m = EvalRecord {
        images: data.count,
        recon: p.recon,
        active_slots: p.active_slots,
        mask_overlap: p.mask_overlap,
        slot_similarity: p.slot_similarity,
        slot_similarity_centered: p.slot_similarity_centered,
        ..Default::default()
    };
    let Some(masks) = data.all_masks()? else { return Ok(m) };
    let s = score(model, &p.alpha, data, &masks);
    let get = |k: &str| s.get(k).and_then(|v| v.as_f64());
    (m.fg_ari, m.ari, m.mbo, m.token_fg_ari, m.token_ari, m.fg_ari_ceiling) =
        (get("fg_ari"), get("ari"), get("mbo"), get("token_fg_ari"), get("token_ari"), get("fg_ari_ceiling"));
    let key = if model.is_pixel() { "fg_ari" } else { "token_fg_ari" };
    let attn = score(model, &p.attn, data, &masks)[key].as_f64();
    let teacher = segments.map(|c| {
        let all: Vec<usize> = (0..data.count).collect();
        score(model, &c.guide_targets(&all, 0.0, false).masks, data, &masks)[key].as_f64()
    });
    if model.is_pixel() {
        (m.attn_fg_ari, m.spectral_fg_ari) = (attn, teacher.flatten());
    } else {
        (m.attn_token_fg_ari, m.spectral_token_fg_ari) = (attn, teacher.flatten());
    }
    Ok(m)
}

/// Predict and measure the validation set; optionally draw the first scenes' masks.
pub fn evaluate(
    model: &mut Model,
    data: &Dataset,
    seed: u64,
    segments: Option<&SegmentCache>,
    noise_scale: f32,
    png: Option<&Path>,
) -> Result<EvalRecord> {
    let p = predict(model, data, seed, segments, noise_scale)?;
    if let Some(path) = png {
        draw_masks(&p.alpha, model.num_slots(), data, 4, path)?;
    }
    measures(model, &p, data, segments)
}

/// One row per scene, each panel titled: the input image (where the data has one), the
/// ground truth (where it has masks), the predicted masks at mask resolution and, for
/// features, on the token grid.
pub fn draw_masks(alpha: &[f32], k: usize, data: &Dataset, scenes: usize, path: &Path) -> Result<()> {
    let (gh, gw) = data.grid;
    let n = gh * gw;
    let hw = label_hw(data);
    // at least 128 px a panel, so the titles fit
    let zoom = (128 / hw.0.max(1)).max(1) as u32;
    let mut rows = Vec::new();
    for s in 0..scenes.min(data.count) {
        let a = &alpha[s * k * n..(s + 1) * k * n];
        let mut row: Vec<(String, RgbImage)> = Vec::new();
        if let Some(px) = data.image(s)? {
            let (ih, iw) = data.image_hw;
            let rgb = RgbImage::from_raw(iw as u32, ih as u32, px).expect("image size");
            let (zw, zh) = (hw.1 as u32 * zoom, hw.0 as u32 * zoom);
            row.push(("input".into(), image::imageops::resize(&rgb, zw, zh, image::imageops::FilterType::Nearest)));
        }
        if let Some(m) = data.mask(s)? {
            let gt: Vec<u32> = m.iter().map(|&v| v as u32).collect();
            row.push(("truth".into(), crate::viz::labels_image(&gt, hw, zoom)));
        }
        let pred: Vec<u32> = metrics::upsample_argmax(a, k, (gh, gw), hw).iter().map(|v| v + 1).collect();
        row.push(("masks".into(), crate::viz::labels_image(&pred, hw, zoom)));
        if data.kind_is_features() {
            let tokens: Vec<u32> = metrics::argmax_maps(a, k).iter().map(|v| v + 1).collect();
            row.push(("token masks".into(), crate::viz::labels_image(&tokens, (gh, gw), (hw.0 as u32 * zoom / gh as u32).max(1))));
        }
        rows.push(crate::viz::titled_row(&row));
    }
    crate::viz::save_png(&crate::viz::vconcat(&rows), path)
}
