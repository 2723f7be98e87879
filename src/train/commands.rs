//! `eval`, `infer`, `score` and `debug-spectral`: thin layers over the model, the metrics
//! and the spectral module.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::run::{randn, step_rng};
use crate::backend::{open_device, Device, DeviceKind};
use crate::checkpoint::{write_atomic, TensorFile};
use crate::data::{npy, Dataset};
use crate::model::init::init_params;
use crate::model::{AnyConfig, FeatureModel, Model};
use super::config::TrainConfig;

/// Either model from its checkpoint (the kind is in its `slotforge.config`).
fn load_model(checkpoint: &Path, batch: usize, device: DeviceKind) -> Result<Model> {
    let params = TensorFile::load(checkpoint)?;
    let cfg = AnyConfig::from_checkpoint(&params)?;
    let (dev, why) = open_device(device)?;
    eprintln!("device: {} ({why}); {} model", dev.name(), cfg.name());
    let mut model = Model::new(&cfg, batch, dev)?;
    model.set_params(&params)?;
    Ok(model)
}

pub fn eval(checkpoint: &Path, data_dir: &Path, out: &Path, device: DeviceKind, seed: u64) -> Result<serde_json::Value> {
    let data = Dataset::load(data_dir)?;
    ensure!(data.masks.is_some(), "{}: no masks.npy, nothing to score against", data_dir.display());
    std::fs::create_dir_all(out).with_context(|| format!("cannot create output directory {}", out.display()))?;
    let mut model = load_model(checkpoint, data.count.min(32), device)?;
    model.config().check_data(&data).with_context(|| format!("checkpoint {} vs data {}", checkpoint.display(), data_dir.display()))?;
    let k = model.num_slots();
    let alpha = super::eval::predict(&mut model, &data, seed, None, 1.0);
    let metrics = super::eval::score(&model, &alpha, &data)?;
    let (mh, mw) = data.mask_hw;
    let pred: Vec<u8> = super::eval::pixel_labels(&alpha, k, &data).iter().map(|&v| v as u8).collect();
    npy::write_u8(&out.join("pred_masks.npy"), &pred, &[data.count, mh, mw])?;
    super::eval::draw_masks(&alpha, k, &data, 8, &out.join("masks.png"))?;
    write_atomic(&out.join("metrics.json"), serde_json::to_string_pretty(&metrics)?.as_bytes())?;
    Ok(metrics)
}

pub fn infer(checkpoint: &Path, features: &Path, noise: Option<&Path>, out: &Path, device: DeviceKind) -> Result<()> {
    let (feats, shape) = npy::read_f32(features)?;
    ensure!(shape.len() == 3, "{}: features must be [B, N, F], got shape {shape:?}", features.display());
    let b = shape[0];
    ensure!(b >= 1, "{}: no scenes", features.display());
    let Model::Feature(mut model) = load_model(checkpoint, b, device)? else {
        anyhow::bail!("{}: a pixel-model checkpoint; `infer` runs the feature model on features (use `eval` on an image dataset)", checkpoint.display());
    };
    let (n, f, k, d) = (model.cfg.n_tokens, model.cfg.feat_dim, model.cfg.num_slots, model.cfg.slot_dim);
    ensure!(shape[1] == n && shape[2] == f, "{}: features are {shape:?}, the checkpoint expects [B, {n}, {f}]", features.display());
    let z = match noise {
        Some(p) => {
            let (z, zs) = npy::read_f32(p)?;
            ensure!(zs == [b, k, d], "{}: noise must be [{b}, {k}, {d}], got {zs:?}", p.display());
            z
        }
        None => randn(&mut step_rng(0, 3, 0), b * k * d, 1.0),
    };
    model.set_inputs(&feats, &z, None, 0.0);
    model.ex.forward();
    let v = model.vars.clone();
    let mut t = TensorFile::default();
    t.insert("slots", &[b, k, d], model.ex.get(v.slots));
    t.insert("attn", &[b, n, k], model.ex.get(v.attn));
    t.insert("alpha", &[b, k, n], model.ex.get(v.alpha));
    t.insert("recon", &[b, n, f], model.ex.get(v.recon));
    t.save(out)?;
    eprintln!("wrote slots, attn, alpha, recon to {}", out.display());
    Ok(())
}

pub fn score(pred: &Path, truth: &Path) -> Result<serde_json::Value> {
    let (p, ps) = npy::read_labels(pred)?;
    let (t, ts) = npy::read_labels(truth)?;
    ensure!(ps == ts, "label maps differ in shape: pred {ps:?}, true {ts:?}");
    ensure!(ps.len() == 2 || ps.len() == 3, "label maps must be [S, H, W] or [S, P], got {ps:?}");
    let per: usize = ps[1..].iter().product();
    let s = crate::metrics::score_batch(&t, &p, per);
    Ok(json!({"ari": s.ari, "fg_ari": s.fg_ari, "mbo": s.mbo, "images": s.count}))
}

/// `slotforge debug-spectral`: the spectral init diagnostics
/// ([`super::spectral_init::diagnose`]) of the first batch of `data` (the default training batch
/// size, or fewer scenes) with a freshly initialized model (`init_params(seed)`) on the CPU.
/// Prints one JSON line on stdout and a summary on stderr; writes JSON and PNGs into `out`.
/// Fails when the initial slots have collapsed.
pub fn debug_spectral(data: &Path, k: usize, out: &Path, seed: u64) -> Result<super::spectral_init::SpectralDiagnostics> {
    let ds = Dataset::load(data)?;
    ensure!(ds.kind_is_features(), "{}: debug-spectral needs features.npy (the feature model)", data.display());
    let cfg = TrainConfig { num_slots: k, seed, ..TrainConfig::default() };
    cfg.validate()?;
    let mcfg = cfg.model(ds.tokens(), ds.feat_dim);
    mcfg.validate()?;
    let scenes: Vec<usize> = (0..ds.count.min(cfg.batch_size)).collect();
    let mut model = FeatureModel::new(&mcfg, scenes.len().min(8), Device::Cpu)?;
    model.set_params(&init_params(&mcfg, seed))?;
    let segs = super::spectral_init::segment_scenes(&ds, &scenes, k, &super::spectral_init::spectral_config(&cfg));
    let diag = super::spectral_init::diagnose(&mut model, &ds, &scenes, &segs, out)?;
    println!("{}", serde_json::to_string(&diag)?);
    eprintln!("{}", diag.summary());
    super::spectral_init::check_collapse(diag.similarity_raw, diag.similarity_centered, diag.scenes)?;
    Ok(diag)
}
