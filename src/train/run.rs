//! One training run.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::{final_lr_fraction, guide_weight, learning_rate, DiversitySchedule, TrainConfig};
use super::monitor::{mask_stats, slot_similarity};
use crate::backend::{open_device, Device};
use crate::checkpoint::TensorFile;
use crate::data::Dataset;
use crate::model::{AnyConfig, Model, ModelConfig};
use crate::ops::optim::{Adam, AdamConfig};
use super::spectral_init::{self, SegmentCache};

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub steps: usize,
    pub epochs: usize,
    pub seconds: f64,
    pub last: serde_json::Value,
    pub best_token_fg_ari: f64,
    /// Best pixel-level FG-ARI of an epoch (both models).
    pub best_fg_ari: f64,
}

/// Trainer state saved beside the checkpoint so `--resume` continues the same trajectory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    epoch: usize,
    step: usize,
    diversity_weight: f32,
    config: TrainConfig,
    /// Wall seconds spent over every sitting so far, so a resumed run's "seconds" go on
    /// counting instead of restarting at 0 (absent in older checkpoints: 0).
    #[serde(default)]
    seconds: f64,
}

/// Noise for step `t`: derived from (seed, t) alone, so a resumed run draws the same.
pub fn step_rng(seed: u64, stream: u64, t: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng.set_word_pos(t as u128 * (1 << 24));
    rng
}

/// The order of the training scenes in `epoch`: derived from (seed, epoch) alone.
pub fn epoch_order(count: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(&mut step_rng(seed, 1, epoch));
    order
}

/// Slot noise for evaluation, `per_scene` values for each of `scenes`: scene `i`'s draw comes
/// from (seed, i) alone, so a score does not depend on the batch it was computed in (`train`
/// evaluates in its training batches, `eval` in batches of up to 32, `infer` in one).
pub fn scene_noise(seed: u64, scenes: &[usize], per_scene: usize, scale: f32) -> Vec<f32> {
    scenes.iter().flat_map(|&i| randn(&mut step_rng(seed, 3, i), per_scene, scale)).collect()
}

pub fn randn(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    use rand_distr::{Distribution, StandardNormal};
    (0..n)
        .map(|_| {
            let z: f32 = StandardNormal.sample(&mut *rng);
            scale * z
        })
        .collect()
}

pub fn load_data(cfg: &TrainConfig) -> Result<(Dataset, Dataset)> {
    let all = match &cfg.data {
        Some(dir) => Dataset::load(dir)?,
        None => crate::data::synthetic::generate(&cfg.synthetic, cfg.train_count + cfg.val_count, cfg.seed ^ 0x5eed, cfg.feat_dim)?,
    };
    anyhow::ensure!(
        all.count > cfg.val_count,
        "{}: the dataset has {} scenes; need more than the {} held out for validation (val-count)",
        cfg.data.as_ref().map_or(cfg.synthetic.clone(), |d| d.display().to_string()),
        all.count,
        cfg.val_count
    );
    let (train, val) = all.split(cfg.val_count);
    let train = if cfg.subset_percent < 100.0 { train.subset(cfg.subset_percent, cfg.seed) } else { train };
    Ok((train, val))
}

pub fn train(cfg: TrainConfig) -> Result<Summary> {
    cfg.validate()?;
    let (device, why) = open_device(cfg.device)?;
    eprintln!("device: {} ({why})", device.name());
    train_on(cfg, device)
}

/// Train on an already opened device (tests share one GPU device).
pub fn train_on(cfg: TrainConfig, device: Device) -> Result<Summary> {
    cfg.validate()?;
    let start = Instant::now();
    // checked now, created once the inputs are loaded: a rejected input leaves nothing behind
    crate::checkpoint::check_output_dir(&cfg.out)?;

    let (train_set, val_set) = load_data(&cfg)?;
    let mcfg = model_config(&cfg, &train_set)?;
    let n_tokens = train_set.tokens();
    let b = cfg.batch_size.min(train_set.count);
    eprintln!(
        "data: {} training scenes, {} validation, {}; {} model: {} slots of {} dims, batch {b}",
        train_set.count, val_set.count,
        if train_set.kind_is_features() { format!("{n_tokens} tokens x {} dims", train_set.feat_dim) } else { format!("{}x{} images", train_set.image_hw.0, train_set.image_hw.1) },
        mcfg.name(), mcfg.num_slots(), mcfg.slot_dim()
    );
    let mut model = Model::new(&mcfg, b, device.clone())?;
    let params: Vec<_> = model.params().iter().map(|(_, v)| *v).collect();
    let adam = Adam::new(
        model.ex_mut(),
        &params,
        AdamConfig { lr: cfg.learning_rate, max_grad_norm: Some(cfg.max_grad_norm), ..Default::default() },
    )?;

    let mut schedule = DiversitySchedule::new(&cfg);
    let (mut epoch0, mut step, mut seconds_before) = (0, 0, 0.0);
    if let Some(ckpt) = &cfg.resume {
        let saved = load_checkpoint(ckpt, &mut model, &adam)?;
        (epoch0, step, schedule.weight, seconds_before) = (saved.epoch, saved.step, saved.diversity_weight, saved.seconds);
        eprintln!("resumed from {} at epoch {epoch0}, step {step}", ckpt.display());
    } else if let Some(init) = &cfg.init {
        let params = TensorFile::load(init)?;
        let saved = AnyConfig::from_checkpoint(&params).with_context(|| format!("--init {}", init.display()))?;
        anyhow::ensure!(
            saved == mcfg,
            "--init {}: the checkpoint's model ({}) differs from the one this run trains ({})",
            init.display(), saved.to_json(), mcfg.to_json()
        );
        model.set_params(&params).with_context(|| format!("--init {}", init.display()))?;
        eprintln!("initial parameters from {}", init.display());
    } else {
        model.set_params(&mcfg.init_params(cfg.seed))?;
    }
    // the time limit counts this sitting (`start`); the logged seconds count every sitting
    let seconds = || seconds_before + start.elapsed().as_secs_f64();
    crate::checkpoint::create_output_dir(&cfg.out)?;

    let (spectral, val_segments) = if cfg.use_spectral {
        let t = Instant::now();
        let scfg = spectral_init::spectral_config(&cfg);
        let train_cache = SegmentCache::build(&train_set, mcfg.num_slots(), &scfg)?;
        let val_cache = SegmentCache::build(&val_set, mcfg.num_slots(), &scfg)?;
        eprintln!("spectral init: {} scenes decomposed in {:.1} s", train_set.count + val_set.count, t.elapsed().as_secs_f32());
        (Some(train_cache), Some(val_cache))
    } else {
        (None, None)
    };

    if cfg.debug_spectral {
        // the diagnostics of the batch training starts with, with the parameters it starts from
        let first: Vec<usize> = epoch_order(train_set.count, cfg.seed, epoch0)[..b].to_vec();
        let segs = match &spectral {
            Some(c) => first.iter().map(|&s| c.segs[s].clone()).collect(),
            None => spectral_init::segment_scenes(&train_set, &first, mcfg.num_slots(), &spectral_init::spectral_config(&cfg)),
        };
        let diag = spectral_init::diagnose(&mut model, &train_set, &first, &segs, &cfg.out)?;
        eprintln!("{}", diag.summary());
        if diag.collapsed {
            let err = spectral_init::check_collapse(diag.similarity_raw, diag.similarity_centered, diag.scenes).unwrap_err();
            if cfg.use_spectral {
                return Err(err.context("--debug-spectral: not training from a collapsed init"));
            }
            eprintln!("WARNING: {err:#} (the run does not use the spectral init: --use-spectral is off)");
        }
    }

    let steps_per_epoch = train_set.count / b;
    let total_steps = steps_per_epoch * cfg.epochs;
    let end_lr = final_lr_fraction(&cfg, steps_per_epoch);
    if end_lr < 0.01 {
        eprintln!(
            "WARNING: with decay-half-life {} the learning rate falls to {end_lr:.1e} of its peak by step {total_steps}: \
             most of the run would barely move (set decay-half-life to about a fifth of the run's steps, or 0 for none)",
            cfg.decay_half_life
        );
    }
    let metrics_path = cfg.out.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path)
        .with_context(|| format!("opening {}", metrics_path.display()))?;
    let bar = indicatif::ProgressBar::new(total_steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta} {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_position(step as u64);
    let mut history: Vec<serde_json::Value> = Vec::new();
    let mut collapse_streak = 0;
    let mut last = json!({});
    let mut best = 0.0f64;
    let mut best_fg_ari = 0.0f64;
    let (k, d, n) = (mcfg.num_slots(), mcfg.slot_dim(), n_tokens);
    let mut epochs_done = epoch0;

    // A run stopped by its time limit mid-epoch resumes at the batch where it stopped.
    let done_in_epoch0 = step.checked_sub(epoch0 * steps_per_epoch).filter(|&s| s < steps_per_epoch).unwrap_or(0);
    for epoch in epoch0..cfg.epochs {
        let order = epoch_order(train_set.count, cfg.seed, epoch);
        let skip = if epoch == epoch0 { done_in_epoch0 } else { 0 };
        for chunk in order.chunks_exact(b).skip(skip) {
            let lr = learning_rate(&cfg, step, steps_per_epoch);
            let w_div = schedule.weight_at(&cfg, epoch);
            let noise_scale = if spectral.is_some() { cfg.spectral_noise } else { 1.0 };
            let noise = randn(&mut step_rng(cfg.seed, 2, step), b * k * d, noise_scale);
            let segs = spectral.as_ref().map(|c| c.gather(chunk));
            model.feed(&train_set, chunk, &noise, segs.as_deref(), w_div)?;
            let w_guide = guide_weight(&cfg, step as f32 / steps_per_epoch as f32);
            // the targets also with the weight at 0: the logged guide is then still the
            // distance to the spectral groups
            if let Some(c) = &spectral {
                let targets = c.guide_targets(chunk, cfg.guide_balance, cfg.guide_family);
                model.set_guide(&targets, w_guide)?;
            }
            adam.set_step(model.ex_mut(), step as u64 + 1, lr)?;
            let total = model.out().total;
            model.ex_mut().train_step("train_step", total, |cx, l| adam.record(cx, l))?;
            step += 1;
            bar.inc(1);

            // Guards: on the CPU reading three floats is free, so every step is checked; on a
            // GPU only at log steps, to keep the step a single submission without readback.
            let log_now = step % cfg.log_every == 0 || step == total_steps;
            if matches!(device, Device::Cpu) || log_now {
                check_losses(&model, step)?;
            }
            if log_now {
                let (v, ex) = (model.out(), model.ex());
                let (mse, div, tot) = (ex.get(v.mse)?[0], ex.get(v.diversity)?[0], ex.get(v.total)?[0]);
                // the distance to the spectral groups (without spectral init there are none)
                let guide = if spectral.is_some() { ex.get(v.guide)?[0] } else { 0.0 };
                let sim_raw = ex.get(v.similarity)?[0];
                let slots = ex.get(v.slots)?;
                let alpha = ex.get(v.alpha)?;
                let (_, sim_centered) = slot_similarity(&slots, b, k, d);
                let (active, overlap) = mask_stats(&alpha, b, k, n, 0.02);
                schedule.observe(&cfg, sim_raw);
                let rec = json!({
                    "type": "step", "epoch": epoch, "step": step, "recon": mse, "diversity": div, "guide": guide, "guide_weight": w_guide, "total": tot,
                    "slot_similarity": sim_raw, "slot_similarity_centered": sim_centered,
                    "active_slots": active, "mask_overlap": overlap,
                    "lr": lr, "diversity_weight": w_div, "grad_norm": adam.last_grad_norm(model.ex())?,
                    "seconds": seconds(),
                });
                writeln!(metrics, "{rec}")?;
                bar.set_message(format!("recon {mse:.4} div {div:.3} sim {sim_raw:.2}/{sim_centered:.2} active {active:.1} overlap {overlap:.2}"));
                if overlap > cfg.collapse_overlap || active < 1.5 {
                    collapse_streak += 1;
                    if collapse_streak == cfg.collapse_checks {
                        bar.println(format!(
                            "WARNING: slot collapse at step {step}: {active:.1} active slots, mask overlap {overlap:.2} for {} checks in a row. \
                             The slots are decoding the same masks (raw similarity {sim_raw:.2}, centered {sim_centered:.2}).",
                            cfg.collapse_checks
                        ));
                    }
                } else {
                    collapse_streak = 0;
                }
                history.push(rec);
            }
            if cfg.time_limit_minutes > 0.0 && start.elapsed().as_secs_f32() > cfg.time_limit_minutes * 60.0 {
                break;
            }
        }
        // validation, checkpoint, pictures; a time limit can end the epoch early
        let finished = step == (epoch + 1) * steps_per_epoch;
        let noise_scale = if cfg.use_spectral { cfg.spectral_noise } else { 1.0 };
        let mut eval = crate::train::eval::evaluate(&mut model, &val_set, cfg.seed, val_segments.as_ref(), noise_scale, Some(&cfg.out.join("masks.png")))?;
        eval["type"] = json!(if finished { "epoch" } else { "stop" });
        eval["epoch"] = json!(epoch + 1);
        eval["step"] = json!(step);
        eval["seconds"] = json!(seconds());
        writeln!(metrics, "{eval}")?;
        let at = if finished { format!("epoch {}", epoch + 1) } else { format!("stopped in epoch {} at step {step}", epoch + 1) };
        if model.is_pixel() {
            // masks at image resolution: no token grid, no ceiling
            bar.println(format!("{at}: fg_ari {:.3} ari {:.3} mbo {:.3}", eval["fg_ari"], eval["ari"], eval["mbo"]));
        } else {
            bar.println(format!(
                "{at}: token_fg_ari {:.3} fg_ari {:.3} (ceiling {:.3}) ari {:.3} mbo {:.3}",
                eval["token_fg_ari"], eval["fg_ari"], eval["fg_ari_ceiling"], eval["ari"], eval["mbo"]
            ));
        }
        best = best.max(eval["token_fg_ari"].as_f64().unwrap_or(0.0));
        best_fg_ari = best_fg_ari.max(eval["fg_ari"].as_f64().unwrap_or(0.0));
        history.push(eval.clone());
        last = eval;
        let state_epoch = if finished { epoch + 1 } else { epoch };
        save_checkpoint(&cfg.out, &model, &adam, &TrainerState { epoch: state_epoch, step, diversity_weight: schedule.weight, config: cfg.clone(), seconds: seconds() })?;
        plot_history(&history, &cfg.out)?;
        epochs_done = state_epoch;
        if cfg.time_limit_minutes > 0.0 && start.elapsed().as_secs_f32() > cfg.time_limit_minutes * 60.0 {
            bar.println(format!("time limit of {} minutes reached", cfg.time_limit_minutes));
            break;
        }
    }
    bar.finish();
    Ok(Summary { steps: step, epochs: epochs_done, seconds: seconds(), last, best_token_fg_ari: best, best_fg_ari })
}

/// Stop on a negative or non-finite loss term, naming it, the step and every term's value.
pub fn check_losses(model: &Model, step: usize) -> Result<()> {
    let (v, ex) = (model.out(), model.ex());
    let terms = [
        ("recon", ex.get(v.mse)?[0]),
        ("diversity", ex.get(v.diversity)?[0]),
        ("guide", ex.get(v.guide)?[0]),
        ("total", ex.get(v.total)?[0]),
    ];
    for &(name, val) in &terms {
        if !val.is_finite() || val < 0.0 {
            let all: Vec<String> = terms.iter().map(|(n, x)| format!("{n}={x}")).collect();
            bail!(
                "loss term `{name}` is {} at step {step} ({}); training stopped, the last good checkpoint is kept",
                if val.is_finite() { "negative" } else { "non-finite" },
                all.join(", ")
            );
        }
    }
    Ok(())
}

pub fn save_checkpoint(out: &Path, model: &Model, adam: &Adam, state: &TrainerState) -> Result<()> {
    let mut opt = TensorFile::default();
    for (name, data) in adam.state(model.ex())? {
        let len = data.len();
        opt.insert(&name, &[len], data);
    }
    opt.metadata.insert("slotforge.trainer".into(), serde_json::to_string(state)?);
    // optimizer first: the model file is the one users look for, so it lands last
    opt.save(&out.join("optimizer.safetensors"))?;
    let mut params = model.get_params()?;
    if state.config.use_spectral {
        // eval and infer must start the slots the way training did
        let c = &state.config;
        let spectral = json!({"affinity_power": c.spectral_affinity_power, "seed": c.seed, "noise": c.spectral_noise, "pool": c.spectral_pool});
        params.metadata.insert(SPECTRAL_METADATA.into(), spectral.to_string());
    }
    params.save(&out.join("model.safetensors"))
}

/// Checkpoint metadata key of a model trained with spectral init: its segmentation settings.
pub const SPECTRAL_METADATA: &str = "slotforge.spectral";

/// The spectral settings a checkpoint was trained with (None: random init) and its noise scale.
pub fn checkpoint_spectral(params: &TensorFile) -> Result<Option<(crate::spectral::SpectralConfig, f32)>> {
    let Some(text) = params.metadata.get(SPECTRAL_METADATA) else { return Ok(None) };
    let v: serde_json::Value = serde_json::from_str(text).with_context(|| format!("parsing {SPECTRAL_METADATA} metadata"))?;
    let num = |k: &str| v[k].as_f64().with_context(|| format!("{SPECTRAL_METADATA} metadata lacks `{k}`"));
    let cfg = crate::spectral::SpectralConfig {
        affinity_power: num("affinity_power")? as f32,
        seed: num("seed")? as u64,
        // absent in checkpoints from before pooling existed: they segmented every token
        pool: v["pool"].as_u64().unwrap_or(1) as usize,
        ..Default::default()
    };
    Ok(Some((cfg, num("noise")? as f32)))
}

fn load_checkpoint(path: &Path, model: &mut Model, adam: &Adam) -> Result<TrainerState> {
    let params = TensorFile::load(path)?;
    let saved = AnyConfig::from_checkpoint(&params).with_context(|| format!("--resume {}", path.display()))?;
    anyhow::ensure!(
        saved.name() == model.config().name(),
        "--resume: {} holds a {} model, but this run trains the {} model",
        path.display(), saved.name(), model.config().name()
    );
    model.set_params(&params).with_context(|| format!("--resume {}", path.display()))?;
    let opt_path = path.with_file_name("optimizer.safetensors");
    let opt = TensorFile::load(&opt_path).with_context(|| format!("--resume needs {} next to the checkpoint", opt_path.display()))?;
    let state: Vec<(String, Vec<f32>)> = opt.tensors.iter().map(|(n, t)| (n.clone(), t.data.clone())).collect();
    adam.load_state(model.ex_mut(), &state)?;
    let state = opt.metadata.get("slotforge.trainer").context("optimizer file lacks trainer state")?;
    Ok(serde_json::from_str(state)?)
}

/// Read a checkpoint's model config.
pub fn checkpoint_config(params: &TensorFile) -> Result<ModelConfig> {
    let text = params.metadata.get("slotforge.config").context("checkpoint lacks slotforge.config metadata")?;
    let cfg: ModelConfig = serde_json::from_str(text).context("parsing slotforge.config")?;
    cfg.validate()?;
    Ok(cfg)
}

fn plot_history(history: &[serde_json::Value], out: &Path) -> Result<()> {
    let series = |ty: &str, key: &str| -> Vec<f32> {
        history.iter().filter(|r| r["type"] == ty).filter_map(|r| r[key].as_f64()).map(|v| v as f32).collect()
    };
    let loss = [("recon", series("step", "recon")), ("total", series("step", "total"))];
    crate::viz::plot_lines("training loss", "logged step", &loss, true, &out.join("loss.png"))?;
    crate::viz::plot_lines(
        "held-out scores",
        "epoch",
        &[("token_fg_ari", series("epoch", "token_fg_ari")), ("fg_ari", series("epoch", "fg_ari")), ("mbo", series("epoch", "mbo"))],
        false,
        &out.join("fg_ari.png"),
    )
}


/// The model a run trains: the feature model on features, the pixel model on images.
pub fn model_config(cfg: &TrainConfig, data: &Dataset) -> Result<AnyConfig> {
    if data.kind_is_features() {
        return Ok(AnyConfig::Feature(cfg.model(data.tokens(), data.feat_dim)));
    }
    let pcfg = cfg.pixel_model(data.image_hw);
    pcfg.validate()?;
    Ok(AnyConfig::Pixel(pcfg))
}
