//! `eval`, `infer`, `score`, `debug-spectral` and `plot`: thin layers over the model, the metrics,
//! the spectral module and the PNG writers.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::run::{checkpoint_spectral, scene_noise};
use crate::spectral::SpectralConfig;
use crate::backend::{open_device, Device, DeviceKind};
use crate::checkpoint::{write_atomic, TensorFile};
use crate::data::{npy, Dataset};
use crate::model::{AnyConfig, Model};
use super::config::TrainConfig;

/// Either model from its checkpoint (the kind is in its `slotforge.config`), and its spectral
/// settings if it was trained with spectral init.
fn load_model(checkpoint: &Path, batch: usize, device: DeviceKind) -> Result<(Model, Option<(SpectralConfig, f32)>)> {
    let params = TensorFile::load(checkpoint)?;
    let in_ckpt = || format!("checkpoint {}", checkpoint.display());
    let cfg = AnyConfig::from_checkpoint(&params).with_context(in_ckpt)?;
    let spectral = checkpoint_spectral(&params).with_context(in_ckpt)?;
    let (dev, why) = open_device(device)?;
    eprintln!("device: {} ({why}); {} model", dev.name(), cfg.name());
    let mut model = Model::new(&cfg, batch, dev)?;
    model.set_params(&params).with_context(in_ckpt)?;
    Ok((model, spectral))
}

/// `slotforge eval`: predict every scene of a dataset with a checkpoint; write
/// `pred_masks.npy` (the slot of each pixel), `masks.png` and `metrics.json` (the
/// unsupervised measures, and the scores where the data has masks).
pub fn eval(checkpoint: &Path, data_dir: &Path, out: &Path, device: DeviceKind, seed: u64) -> Result<serde_json::Value> {
    crate::checkpoint::check_output_dir(out)?;
    let ckpt_cfg = AnyConfig::from_checkpoint(&TensorFile::load(checkpoint)?).with_context(|| format!("checkpoint {}", checkpoint.display()))?;
    // image folders are resized to the size the pixel model was trained at
    let image_size = match &ckpt_cfg {
        AnyConfig::Pixel(p) => Some((p.height, p.width)),
        AnyConfig::Feature(_) => None,
    };
    let data = Dataset::open(data_dir, &crate::data::OpenOptions { image_size })?;
    let (mut model, spectral) = load_model(checkpoint, data.count.min(32), device)?;
    match &model {
        Model::Feature(m) => {
            ensure!(data.kind_is_features(), "{}: eval needs features (the checkpoint is a feature model)", data_dir.display());
            ensure!(
                m.cfg.n_tokens == data.tokens() && m.cfg.feat_dim == data.feat_dim,
                "checkpoint {} expects {} tokens x {} dims, the data in {} has {} x {}",
                checkpoint.display(), m.cfg.n_tokens, m.cfg.feat_dim, data_dir.display(), data.tokens(), data.feat_dim
            );
        }
        Model::Pixel(_) => {
            let what = || format!("checkpoint {} vs the data in {}", checkpoint.display(), data_dir.display());
            model.config().check_data(&data).with_context(what)?;
        }
    }
    let k = model.num_slots();
    // a spectral-init model starts its slots from the segments of each scene, as in training
    let (segments, noise_scale) = match &spectral {
        Some((scfg, noise)) => {
            let dir = super::segments::cache_dir(&data, "auto");
            (Some(super::spectral_init::segments_for(&data, k, scfg, dir.as_deref())?), *noise)
        }
        None => (None, 1.0),
    };
    let p = super::eval::predict(&mut model, &data, seed, segments.as_ref(), noise_scale)?;
    let mut metrics = serde_json::to_value(super::eval::measures(&model, &p, &data, segments.as_ref())?)?;
    for k in ["epoch", "step", "seconds"] {
        metrics.as_object_mut().unwrap().remove(k);
    }
    metrics["spectral_init"] = json!(spectral.is_some());
    metrics["has_masks"] = json!(data.has_masks());
    // created only now: a rejected input leaves nothing behind
    crate::checkpoint::create_output_dir(out)?;
    let (h, w) = super::eval::label_hw(&data);
    let pred: Vec<u8> = super::eval::pixel_labels(&p.alpha, k, &data).iter().map(|&v| v as u8).collect();
    npy::write_u8(&out.join("pred_masks.npy"), &pred, &[data.count, h, w])?;
    super::eval::draw_masks(&p.alpha, k, &data, 8, &out.join("masks.png"))?;
    write_atomic(&out.join("metrics.json"), serde_json::to_string_pretty(&metrics)?.as_bytes())?;
    Ok(metrics)
}

pub fn infer(checkpoint: &Path, features: &Path, noise: Option<&Path>, out: &Path, device: DeviceKind) -> Result<()> {
    crate::checkpoint::check_output_file(out)?;
    let npz = match out.extension().and_then(|e| e.to_str()) {
        Some("npz") => true,
        Some("safetensors") => false,
        _ => anyhow::bail!("--out {}: must end in .safetensors or .npz (the format is taken from the name)", out.display()),
    };
    let (feats, shape) = npy::read_f32(features)?;
    npy::expect_rank(features.display(), &shape, &[3, 4], "features [B, N, F] or [B, h, w, F]")?;
    crate::data::check_feature_values(features, &shape, &feats)?;
    // [B, h, w, F] is the same tokens in grid layout
    let shape = if shape.len() == 4 { vec![shape[0], shape[1] * shape[2], shape[3]] } else { shape };
    let b = shape[0];
    ensure!(b >= 1, "{}: shape {shape:?} holds no scenes", features.display());
    let (model, spectral) = load_model(checkpoint, b, device)?;
    let Model::Feature(mut model) = model else {
        anyhow::bail!("{}: a pixel-model checkpoint; `infer` runs the feature model on features (use `eval` on an image dataset)", checkpoint.display());
    };
    let (n, f, k, d) = (model.cfg.n_tokens, model.cfg.feat_dim, model.cfg.num_slots, model.cfg.slot_dim);
    ensure!(
        shape[1] == n && shape[2] == f,
        "{}: features are {shape:?}, the checkpoint {} expects [B, {n}, {f}]",
        features.display(),
        checkpoint.display()
    );
    let z = match noise {
        Some(p) => {
            let (z, zs) = npy::read_f32(p)?;
            ensure!(zs == [b, k, d], "{}: noise must be [{b}, {k}, {d}] (B, slots, slot dim), got {zs:?}", p.display());
            z
        }
        // scene i gets the noise `eval --seed 0` gives the i-th scene of a dataset
        None => scene_noise(0, &(0..b).collect::<Vec<_>>(), k * d, spectral.as_ref().map_or(1.0, |s| s.1)),
    };
    // spectral checkpoints: each scene's segment matrix, as training computed it
    let segments: Option<Vec<f32>> = spectral.as_ref().map(|(scfg, _)| {
        let side = (n as f64).sqrt().round() as usize;
        let grid = if side * side == n { (side, side) } else { (1, n) };
        (0..b)
            .flat_map(|s| {
                let seg = crate::spectral::segment(&feats[s * n * f..(s + 1) * n * f], n, f, grid, k, scfg);
                super::spectral_init::segment_weights(&seg, k)
            })
            .collect()
    });
    model.set_inputs(&feats, &z, segments.as_deref(), 0.0)?;
    let mut t = TensorFile::default();
    // the inputs drawn here, so another implementation (PyTorch) can reproduce the outputs
    t.insert("noise", &[b, k, d], z.clone());
    if let Some(s) = &segments {
        t.insert("spectral_weights", &[b, n, k], s.clone());
    }
    model.ex.forward()?;
    let v = model.vars.clone();
    t.insert("slots", &[b, k, d], model.ex.get(v.out.slots)?);
    t.insert("attn", &[b, n, k], model.ex.get(v.out.attn)?);
    t.insert("alpha", &[b, k, n], model.ex.get(v.out.alpha)?);
    t.insert("recon", &[b, n, f], model.ex.get(v.recon)?);
    if npz {
        npy::write_npz(out, &t.tensors.iter().map(|(k, v)| (k.as_str(), v.shape.as_slice(), v.data.as_slice())).collect::<Vec<_>>())?;
    } else {
        t.save(out)?;
    }
    eprintln!("wrote slots, attn, alpha, recon, noise (and spectral_weights) to {}", out.display());
    Ok(())
}

pub fn score(pred: &Path, truth: &Path) -> Result<serde_json::Value> {
    let (p, ps) = npy::read_labels(pred)?;
    let (t, ts) = npy::read_labels(truth)?;
    npy::expect_rank(pred.display(), &ps, &[2, 3], "a label map [S, H, W] or [S, P]")?;
    npy::expect_rank(truth.display(), &ts, &[2, 3], "a label map [S, H, W] or [S, P]")?;
    ensure!(
        ps == ts,
        "label maps differ in shape: --pred {} is {ps:?}, --true {} is {ts:?}",
        pred.display(),
        truth.display()
    );
    ensure!(ps.iter().all(|&x| x > 0), "{}: shape {ps:?} has an empty axis", pred.display());
    let per: usize = ps[1..].iter().product();
    let s = crate::metrics::score_batch(&t, &p, per);
    Ok(json!({"ari": s.ari, "fg_ari": s.fg_ari, "mbo": s.mbo, "images": s.count}))
}

/// `slotforge debug-spectral`: the spectral init diagnostics
/// ([`super::spectral_init::diagnose`]) of the first batch of `data` (the default training batch
/// size, or fewer scenes) with a freshly initialized model (`init_params(seed)`) on the CPU.
/// Prints one JSON line on stdout and a summary on stderr; writes JSON and PNGs into `out`.
/// Fails when the initial slots have collapsed.
pub fn debug_spectral(data: &Path, k: usize, out: &Path, seed: u64, config: Option<&Path>) -> Result<super::spectral_init::SpectralDiagnostics> {
    crate::checkpoint::check_output_dir(out)?;
    let base = match config {
        Some(p) => TrainConfig::from_file(p)?,
        None => TrainConfig::default(),
    };
    let cfg = TrainConfig { num_slots: k, seed, ..base };
    let ds = Dataset::open(data, &crate::data::OpenOptions { image_size: cfg.image_size.map(|[h, w]| (h, w)) })?;
    cfg.validate()?;
    // the model the data trains: the feature model over features, the pixel model over images
    let mcfg = super::run::model_config(&cfg, &ds)?;
    let scenes: Vec<usize> = (0..ds.count.min(cfg.batch_size)).collect();
    let mut model = Model::new(&mcfg, scenes.len().min(8), Device::Cpu)?;
    model.set_params(&mcfg.init_params(seed))?;
    let view = ds.select(&scenes);
    let dir = super::segments::cache_dir(&ds, &cfg.spectral_cache);
    let cached = super::spectral_init::segments_for(&view, k, &super::spectral_init::spectral_config(&cfg), dir.as_deref())?;
    let segs: Vec<_> = (0..scenes.len()).map(|i| cached.seg(i)).collect();
    let diag = super::spectral_init::diagnose(&mut model, &ds, &scenes, &segs, out)?;
    println!("{}", serde_json::to_string(&diag)?);
    eprintln!("{}", diag.summary());
    super::spectral_init::check_collapse(diag.similarity_raw, diag.similarity_centered, diag.scenes)?;
    Ok(diag)
}

/// `slotforge plot`: one metric of several runs as one PNG, e.g. token FG-ARI per epoch of the
/// arms and seeds of an init comparison. Each run is `DIR` (holding metrics.jsonl), a .jsonl
/// file, or `LABEL=` either; runs with the same label share a colour. The metric is taken from
/// the epoch lines when they have it, else from the step lines.
pub fn plot(runs: &[String], metric: &str, out: &Path, log_y: bool) -> Result<()> {
    ensure!(out.extension().is_some_and(|e| e == "png"), "--out {}: must end in .png", out.display());
    crate::checkpoint::check_output_file(out)?;
    let mut series = Vec::new();
    let mut level: Option<(&str, std::path::PathBuf)> = None;
    for run in runs {
        let (label, path) = match run.split_once('=') {
            Some((l, p)) if !l.is_empty() => (l.to_string(), Path::new(p).to_path_buf()),
            _ => (Path::new(run).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| run.clone()), Path::new(run).to_path_buf()),
        };
        let file = if path.is_dir() { path.join("metrics.jsonl") } else { path };
        let text = std::fs::read_to_string(&file).with_context(|| format!("{}: cannot read", file.display()))?;
        let mut lines = Vec::new();
        for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(l).with_context(|| format!("{}:{}: not a JSON line", file.display(), i + 1))?;
            lines.push(v);
        }
        let of_type = |ty: &str| -> Vec<&serde_json::Value> { lines.iter().filter(|v| v["type"] == ty && v.get(metric).is_some()).collect() };
        let (rows, ty) = match (of_type("epoch"), of_type("step")) {
            (e, _) if !e.is_empty() => (e, "epoch"),
            (_, s) if !s.is_empty() => (s, "step"),
            _ => anyhow::bail!("{}: no epoch or step line has \"{metric}\"", file.display()),
        };
        // one x axis: epochs and logged steps of different runs do not line up
        match level {
            None => level = Some((ty, file.clone())),
            Some((first, ref first_file)) => ensure!(
                first == ty,
                "{}: has \"{metric}\" per {ty} but {} has it per {first}; plot runs of one level",
                file.display(),
                first_file.display()
            ),
        }
        // a value that is not a number (NaN is written as null) leaves a gap
        series.push((label, rows.iter().map(|v| v[metric].as_f64().map_or(f32::NAN, |x| x as f32)).collect::<Vec<f32>>()));
    }
    let x_name = match level {
        Some(("step", _)) => "logged step",
        _ => "epoch",
    };
    crate::viz::plot_lines(metric, x_name, &series, log_y, out)
}
