//! Validation: segmentation scores of the alpha masks against ground truth, at pixel level
//! (masks upsampled bilinearly then argmaxed, as the literature does) and at token level,
//! with the resolution ceiling beside them. The pixel model's masks are at image resolution:
//! they are scored directly (no token grid, so no token FG-ARI and no ceiling).

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::run::scene_noise;
use super::spectral_init::SegmentCache;
use crate::data::Dataset;
use crate::metrics;
use crate::model::Model;

/// Per-scene predictions of a model: alpha masks [S, K, N] (N tokens, or pixels of the pixel model).
pub fn predict(model: &mut Model, data: &Dataset, seed: u64, segments: Option<&SegmentCache>, noise_scale: f32) -> Result<Vec<f32>> {
    Ok(predict_with_attn(model, data, seed, segments, noise_scale)?.0)
}

/// Alpha masks [S, K, N] and the last iteration's attention, transposed to [S, K, N].
pub fn predict_with_attn(
    model: &mut Model,
    data: &Dataset,
    seed: u64,
    segments: Option<&SegmentCache>,
    noise_scale: f32,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (b, k, d, n) = (model.batch(), model.num_slots(), model.slot_dim(), data.tokens());
    let mut out = Vec::with_capacity(data.count * k * n);
    let mut attn_kn = Vec::with_capacity(data.count * k * n);
    let idx: Vec<usize> = (0..data.count).collect();
    for chunk in idx.chunks(b) {
        // pad the last batch by repeating its last scene; the padding is dropped below
        let mut padded = chunk.to_vec();
        padded.resize(b, *chunk.last().unwrap());
        // fixed noise per scene: evaluation is deterministic and the same at any batch size
        let noise = scene_noise(seed, &padded, k * d, noise_scale);
        let segs = segments.map(|c| c.gather(&padded));
        model.feed(data, &padded, &noise, segs.as_deref(), 0.0)?;
        model.ex_mut().forward()?;
        let alpha = model.ex().get(model.out().alpha)?;
        out.extend_from_slice(&alpha[..chunk.len() * k * n]);
        let attn = model.ex().get(model.out().attn)?; // [B, N, K]
        for bi in 0..chunk.len() {
            attn_kn.extend((0..k * n).map(|i| attn[(bi * n + i % n) * k + i / n]));
        }
    }
    Ok((out, attn_kn))
}

/// Scores of alpha masks [S, K, N] against the dataset's masks.
pub fn score_masks(alpha: &[f32], k: usize, data: &Dataset) -> Result<serde_json::Value> {
    let masks = data.masks.as_ref().ok_or_else(|| anyhow::anyhow!("the dataset has no masks.npy: cannot score segmentation"))?;
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
        tok_p.extend((0..n).map(|t| (0..k).max_by(|&i, &j| a[i * n + t].total_cmp(&a[j * n + t])).unwrap() as u32));
        ceil_p.extend(metrics::upsample_labels(&reduced, (gh, gw), (mh, mw)));
        tok_t.extend(reduced);
    }
    let pixel = metrics::score_batch(&pix_t, &pix_p, mh * mw);
    let token = metrics::score_batch(&tok_t, &tok_p, n);
    let ceiling = metrics::score_batch(&pix_t, &ceil_p, mh * mw);
    Ok(json!({
        "fg_ari": pixel.fg_ari, "ari": pixel.ari, "mbo": pixel.mbo,
        "token_fg_ari": token.fg_ari, "token_ari": token.ari,
        "fg_ari_ceiling": ceiling.fg_ari, "images": data.count,
    }))
}

/// Scores of the pixel model's alpha masks [S, K, H W] (image resolution) against the
/// dataset's masks (bilinearly resized first if the masks have another size).
pub fn score_pixel_masks(alpha: &[f32], k: usize, data: &Dataset) -> Result<serde_json::Value> {
    let masks = data.masks.as_ref().ok_or_else(|| anyhow::anyhow!("the dataset has no masks.npy: cannot score segmentation"))?;
    let pred = pixel_labels(alpha, k, data);
    let truth: Vec<u32> = masks.iter().map(|&v| v as u32).collect();
    let (mh, mw) = data.mask_hw;
    let s = metrics::score_batch(&truth, &pred, mh * mw);
    Ok(json!({
        "fg_ari": s.fg_ari, "ari": s.ari, "mbo": s.mbo, "images": data.count, "model": "pixel",
        "note": "masks scored at image resolution; token_fg_ari and fg_ari_ceiling do not apply to the pixel model",
    }))
}

/// The predicted slot per mask pixel, [S, Hm, Wm], from alpha masks [S, K, N] on `data.grid`.
pub fn pixel_labels(alpha: &[f32], k: usize, data: &Dataset) -> Vec<u32> {
    let grid = data.grid;
    let n = grid.0 * grid.1;
    (0..data.count).flat_map(|s| metrics::upsample_argmax(&alpha[s * k * n..(s + 1) * k * n], k, grid, data.mask_hw)).collect()
}

/// Scores of alpha masks [S, K, N] of either model (see [`score_masks`], [`score_pixel_masks`]).
pub fn score(model: &Model, alpha: &[f32], data: &Dataset) -> Result<serde_json::Value> {
    if model.is_pixel() {
        score_pixel_masks(alpha, model.num_slots(), data)
    } else {
        score_masks(alpha, model.num_slots(), data)
    }
}

/// Predict and score the validation set; optionally draw the first scenes' masks.
pub fn evaluate(
    model: &mut Model,
    data: &Dataset,
    seed: u64,
    segments: Option<&SegmentCache>,
    noise_scale: f32,
    png: Option<&Path>,
) -> Result<serde_json::Value> {
    let k = model.num_slots();
    let (alpha, attn) = predict_with_attn(model, data, seed, segments, noise_scale)?;
    if let Some(path) = png {
        draw_masks(&alpha, k, data, 4, path)?;
    }
    score_all(model, &alpha, &attn, data, segments)
}

/// Scores of a prediction: the decoder's masks `alpha` (see [`score`]) and, beside them, the
/// attention's segmentation `attn` (both [S, K, N]) and, with spectral init, the slot groups
/// the slots start from (what mask guidance pulls toward): `attn_*` and `spectral_*` fields.
pub fn score_all(model: &Model, alpha: &[f32], attn: &[f32], data: &Dataset, segments: Option<&SegmentCache>) -> Result<serde_json::Value> {
    let all: Vec<usize> = (0..data.count).collect();
    let teacher = segments.map(|c| c.guide_targets(&all, 0.0, false).masks);
    // the pixel model's masks are at image resolution (FG-ARI), the feature model's on the grid
    let key = if model.is_pixel() { "fg_ari" } else { "token_fg_ari" };
    let mut scores = score(model, alpha, data)?;
    scores[format!("attn_{key}")] = score(model, attn, data)?[key].clone();
    if let Some(t) = teacher {
        scores[format!("spectral_{key}")] = score(model, &t, data)?[key].clone();
    }
    Ok(scores)
}

/// One row per scene: ground truth, predicted pixel masks, predicted token masks; for image
/// data (the pixel model, whose tokens are the pixels): ground truth, the image, prediction,
/// enlarged to at least 128 px.
pub fn draw_masks(alpha: &[f32], k: usize, data: &Dataset, scenes: usize, path: &Path) -> Result<()> {
    let (gh, gw) = data.grid;
    let n = gh * gw;
    let (mh, mw) = data.mask_hw;
    let zoom = if data.kind_is_features() { 1 } else { (128 / mh.max(1)).max(1) as u32 };
    let mut rows = Vec::new();
    for s in 0..scenes.min(data.count) {
        let a = &alpha[s * k * n..(s + 1) * k * n];
        let pred: Vec<u32> = metrics::upsample_argmax(a, k, (gh, gw), (mh, mw)).iter().map(|v| v + 1).collect();
        let mut row = vec![crate::viz::labels_image(&pred, (mh, mw), zoom)];
        if data.kind_is_features() {
            let tokens: Vec<u32> =
                (0..n).map(|t| (0..k).max_by(|&i, &j| a[i * n + t].total_cmp(&a[j * n + t])).unwrap() as u32 + 1).collect();
            row.push(crate::viz::labels_image(&tokens, (gh, gw), (mh / gh).max(1) as u32));
        } else {
            let (ih, iw) = data.image_hw;
            let per = ih * iw * 3;
            let rgb = image::RgbImage::from_raw(iw as u32, ih as u32, data.images[s * per..(s + 1) * per].to_vec()).expect("image size");
            let (zw, zh) = (mw as u32 * zoom, mh as u32 * zoom);
            row.insert(0, image::imageops::resize(&rgb, zw, zh, image::imageops::FilterType::Nearest));
        }
        if let Some(m) = &data.masks {
            let gt: Vec<u32> = m[s * mh * mw..(s + 1) * mh * mw].iter().map(|&v| v as u32).collect();
            row.insert(0, crate::viz::labels_image(&gt, (mh, mw), zoom));
        }
        rows.push(crate::viz::hconcat(&row));
    }
    crate::viz::save_png(&crate::viz::vconcat(&rows), path)
}
