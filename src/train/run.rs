//! One training run, as its phases: the run directory, the data, the memory check, the model
//! (fresh, from `--init`, or from the checkpoint a resumed run continues), the spectral
//! segmentation; then the loop of step, log, checkpoint and, at each epoch's end, validate.
//! Guards stop a run the moment a loss term goes negative or non-finite; a time limit, a step
//! budget or SIGINT / SIGTERM stop it with a checkpoint at the step it reached.

use std::io::IsTerminal;
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
use super::records::{EvalRecord, Record, StartRecord, StepRecord, StopRecord};
use super::rundir::{RunDir, STEP_KEY};
use super::segments::{cache_dir, SceneSegments};
use super::spectral_init;
use crate::backend::{open_device, Device};
use crate::checkpoint::TensorFile;
use crate::data::Dataset;
use crate::model::{AnyConfig, Model, ModelConfig};
use crate::ops::optim::{Adam, AdamConfig};

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub steps: usize,
    pub epochs: usize,
    pub seconds: f64,
    /// Why the run ended: "done", or a stop's reason.
    pub ended: String,
    pub last: Option<EvalRecord>,
    /// The best validation by [`EvalRecord::selection`], and its step.
    pub best: Option<Best>,
    pub best_token_fg_ari: Option<f64>,
    /// Best pixel-level FG-ARI of an epoch (both models; None without masks).
    pub best_fg_ari: Option<f64>,
    /// Seconds from the start of the process to the end of the first step of this sitting.
    pub first_step_seconds: Option<f64>,
    /// Peak resident memory of the process (Linux; MiB).
    pub peak_rss_mib: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub metric: String,
    pub value: f64,
    pub step: usize,
}

/// Trainer state saved with each checkpoint, so `--resume` continues the same trajectory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    /// Epochs completed (the epoch in progress at a mid-epoch stop).
    epoch: usize,
    step: usize,
    diversity_weight: f32,
    config: TrainConfig,
    /// Wall seconds over every sitting so far (absent in older checkpoints: 0).
    #[serde(default)]
    seconds: f64,
    #[serde(default)]
    best: Option<Best>,
    #[serde(default)]
    collapse_streak: usize,
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
/// from (seed, i) alone, so a score does not depend on the batch it was computed in.
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

/// The training and validation sets of a run: `data` split (the last `val-count` scenes
/// held out), or `data` and `val-data`, or the built-in scenes; then the training subset.
pub fn load_data(cfg: &TrainConfig) -> Result<(Dataset, Dataset)> {
    let opts = crate::data::OpenOptions { image_size: cfg.image_size.map(|[h, w]| (h, w)) };
    let open_val = |v: &Path| Dataset::open(v, &opts).with_context(|| format!("--val-data {}", v.display()));
    let (train, val) = match (&cfg.data, &cfg.val_data) {
        (Some(d), Some(v)) => (Dataset::open(d, &opts)?, open_val(v)?),
        (Some(d), None) => {
            let all = Dataset::open(d, &opts)?;
            let vc = cfg.val_count_for(all.count);
            anyhow::ensure!(
                all.count > vc,
                "{}: the dataset has {} scenes; need more than the {vc} held out for validation (--val-count, or --val-data DIR)",
                d.display(),
                all.count
            );
            all.split(vc)
        }
        (None, v) => {
            let vc = if v.is_some() { 0 } else if cfg.val_count > 0 { cfg.val_count } else { 100 };
            let all = crate::data::synthetic::generate(&cfg.synthetic, cfg.train_count + vc, cfg.data_seed() ^ 0x5eed, cfg.feat_dim)?;
            match v {
                Some(v) => (all, open_val(v)?),
                None => all.split(vc),
            }
        }
    };
    let train = if cfg.subset_percent < 100.0 { train.subset(cfg.subset_percent, cfg.data_seed()) } else { train };
    anyhow::ensure!(
        train.count >= cfg.batch_size,
        "{}: the training set has {} scenes, fewer than the batch size {} (lower --batch-size, or raise --subset-percent)",
        train.location(),
        train.count,
        cfg.batch_size
    );
    anyhow::ensure!(
        (train.kind, train.grid, train.feat_dim) == (val.kind, val.grid, val.feat_dim),
        "validation set {} ({}) does not match the training set {} ({})",
        val.location(),
        val.describe(),
        train.location(),
        train.describe()
    );
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
    Trainer::new(cfg, device)?.run()
}

/// What a run trains on: the datasets, the model they imply, their segmentations; made once
/// and shared by the seeds of `train --seeds`.
pub struct Prepared {
    pub train: Dataset,
    pub val: Dataset,
    pub mcfg: AnyConfig,
    pub segments: Option<SceneSegments>,
    pub val_segments: Option<SceneSegments>,
}

impl Prepared {
    /// The phases before the model: the run directory is checked to be free (nothing is
    /// created yet), the data read and checked, the memory estimated, the data segmented.
    pub fn new(cfg: &TrainConfig) -> Result<Prepared> {
        cfg.validate()?;
        if cfg.resume.is_none() {
            RunDir::check_new(&cfg.out, cfg.overwrite)?;
        }
        // data; generated scenes are estimated first (generating them is the allocation)
        if cfg.data.is_none() {
            let sample = crate::data::synthetic::generate_range(&cfg.synthetic, 0..1, cfg.data_seed(), cfg.feat_dim)?;
            let val = if cfg.val_count > 0 { cfg.val_count } else { 100 };
            let n = cfg.train_count + val;
            super::memory::check(cfg, &model_config(cfg, &sample)?, &sample, n, val, super::memory::scene_bytes(&sample, n))?;
        }
        let (train, val) = load_data(cfg)?;
        let mcfg = model_config(cfg, &train)?;
        eprintln!(
            "data: {} training scenes, {} validation{}; {}; {} model: {} slots of {} dims, batch {}",
            train.count,
            val.count,
            if val.has_masks() { "" } else { " (no masks: unsupervised measures only)" },
            train.describe(),
            mcfg.name(),
            mcfg.num_slots(),
            mcfg.slot_dim(),
            cfg.batch_size
        );
        // memory: the model, the data's read-ahead and records, and in-memory copies
        let copies = if cfg.in_memory { super::memory::scene_bytes(&train, train.count) + super::memory::scene_bytes(&val, val.count) } else { 0 };
        super::memory::check(cfg, &mcfg, &train, train.count + val.count, val.count, copies)?;
        let (train, val) = if cfg.in_memory { (train.to_memory()?, val.to_memory()?) } else { (train, val) };
        // the spectral segmentation, from the cache where it has it
        let (segments, val_segments) = if cfg.use_spectral {
            let scfg = spectral_init::spectral_config(cfg);
            let segs = |d: &Dataset| spectral_init::segments_for(d, mcfg.num_slots(), &scfg, cache_dir(d, &cfg.spectral_cache).as_deref());
            (Some(segs(&train)?), Some(segs(&val)?))
        } else {
            (None, None)
        };
        Ok(Prepared { train, val, mcfg, segments, val_segments })
    }
}

/// A training run in progress.
pub struct Trainer {
    cfg: TrainConfig,
    device: Device,
    run: RunDir,
    train: Dataset,
    val: Dataset,
    model: Model,
    adam: Adam,
    segments: Option<SceneSegments>,
    val_segments: Option<SceneSegments>,
    schedule: DiversitySchedule,
    state: TrainerState,
    /// The records of the run so far (for the pictures and the report).
    history: Vec<Record>,
    steps_per_epoch: usize,
    total_steps: usize,
    start: Instant,
    seconds_before: f64,
    progress: Progress,
}

impl Trainer {
    /// The phases before the first step. Nothing is written until the inputs have been read
    /// and checked, so a rejected input leaves nothing behind.
    pub fn new(cfg: TrainConfig, device: Device) -> Result<Trainer> {
        let start = Instant::now();
        let data = Prepared::new(&cfg)?;
        Self::with_data(cfg, device, data, start)
    }

    /// A run on data already prepared (several seeds of one dataset share it).
    pub fn with_data(cfg: TrainConfig, device: Device, data: Prepared, start: Instant) -> Result<Trainer> {
        cfg.validate()?;
        let resuming = cfg.resume.is_some();
        let Prepared { train, val, mcfg, segments, val_segments } = data;
        let b = cfg.batch_size;
        // 4. the model, and where it starts
        let mut model = Model::new(&mcfg, b, device.clone())?;
        let params: Vec<_> = model.params().iter().map(|(_, v)| *v).collect();
        let adam = Adam::new(model.ex_mut(), &params, AdamConfig { lr: cfg.learning_rate, max_grad_norm: Some(cfg.max_grad_norm), ..Default::default() })?;
        let mut schedule = DiversitySchedule::new(&cfg);
        let mut state = TrainerState { epoch: 0, step: 0, diversity_weight: schedule.weight, config: cfg.clone(), seconds: 0.0, best: None, collapse_streak: 0 };
        let mut history = Vec::new();
        let mut run = if resuming {
            let mut run = RunDir::open(&cfg.out)?;
            // runs written before run directories keep model + optimizer at the top
            let legacy = cfg.out.join("optimizer.safetensors").is_file();
            let ck = match run.last()? {
                Some(ck) => ck,
                None if legacy => super::rundir::Committed { dir: cfg.out.clone(), step: usize::MAX },
                None => bail!("--resume {}: the run has no checkpoint yet; start it again (with --overwrite)", cfg.out.display()),
            };
            state = load_checkpoint(&ck.dir, &mut model, &adam)?;
            if state.step != ck.step && ck.step != usize::MAX {
                bail!("--resume {}: checkpoint {} holds the state of step {}, not {}", cfg.out.display(), ck.dir.display(), state.step, ck.step);
            }
            schedule.weight = state.diversity_weight;
            history = run.truncate_log(state.step)?;
            eprintln!("resumed {} at step {} (epoch {})", cfg.out.display(), state.step, state.epoch + 1);
            run
        } else {
            match &cfg.init {
                Some(init) => {
                    let params = TensorFile::load(init)?;
                    let saved = AnyConfig::from_checkpoint(&params).with_context(|| format!("--init {}", init.display()))?;
                    anyhow::ensure!(
                        saved == mcfg,
                        "--init {}: the checkpoint's model ({}) differs from the one this run trains ({})",
                        init.display(),
                        saved.to_json(),
                        mcfg.to_json()
                    );
                    model.set_params(&params).with_context(|| format!("--init {}", init.display()))?;
                    eprintln!("initial parameters from {}", init.display());
                }
                None => model.set_params(&mcfg.init_params(cfg.seed))?,
            }
            RunDir::create(&cfg.out, &cfg.to_toml()?)?
        };
        let seconds_before = state.seconds;
        run.append(&Record::Start(StartRecord {
            step: state.step,
            resumed_from: resuming.then_some(state.step),
            seconds: seconds_before,
            version: env!("CARGO_PKG_VERSION").into(),
        }))?;
        let steps_per_epoch = train.count / b;
        let total_steps = super::config::total_steps(&cfg, steps_per_epoch);
        let end_lr = final_lr_fraction(&cfg, steps_per_epoch);
        if end_lr < 0.01 {
            eprintln!(
                "WARNING: with decay-half-life {} the learning rate falls to {end_lr:.1e} of its peak by step {}: \
                 most of the run would barely move (set decay-half-life to about a fifth of the run's steps, or 0 for none)",
                cfg.decay_half_life,
                total_steps
            );
        }
        let progress = Progress::new(total_steps, state.step, cfg.status_seconds);
        let mut t = Trainer {
            cfg,
            device,
            run,
            train,
            val,
            model,
            adam,
            segments,
            val_segments,
            schedule,
            state,
            history,
            steps_per_epoch,
            total_steps,
            start,
            seconds_before,
            progress,
        };
        if t.cfg.debug_spectral {
            t.debug_spectral()?;
        }
        Ok(t)
    }

    fn seconds(&self) -> f64 {
        self.seconds_before + self.start.elapsed().as_secs_f64()
    }

    /// `--debug-spectral`: the diagnostics of the batch training starts with.
    fn debug_spectral(&mut self) -> Result<()> {
        let (b, k) = (self.cfg.batch_size, self.model.num_slots());
        let first: Vec<usize> = epoch_order(self.train.count, self.cfg.seed, self.state.step / self.steps_per_epoch)[..b].to_vec();
        let segs = match &self.segments {
            Some(c) => first.iter().map(|&s| c.seg(s)).collect(),
            None => spectral_init::segment_scenes(&self.train, &first, k, &spectral_init::spectral_config(&self.cfg))?,
        };
        let diag = spectral_init::diagnose(&mut self.model, &self.train, &first, &segs, &self.cfg.out)?;
        eprintln!("{}", diag.summary());
        if diag.collapsed {
            let err = spectral_init::check_collapse(diag.similarity_raw, diag.similarity_centered, diag.scenes).unwrap_err();
            if self.cfg.use_spectral {
                return Err(err.context("--debug-spectral: not training from a collapsed init"));
            }
            eprintln!("WARNING: {err:#} (the run does not use the spectral init: --use-spectral is off)");
        }
        Ok(())
    }

    /// The loop: steps, logs, checkpoints, and a validation at the end of each epoch.
    pub fn run(mut self) -> Result<Summary> {
        let spe = self.steps_per_epoch;
        let mut first_step = None;
        let mut ended = "done".to_string();
        'epochs: while self.state.step < self.total_steps {
            let epoch = self.state.step / spe;
            let order = epoch_order(self.train.count, self.cfg.seed, epoch);
            let batches: Vec<Vec<usize>> = order.chunks_exact(self.cfg.batch_size).skip(self.state.step % spe).map(|c| c.to_vec()).collect();
            let mut loader = crate::data::loader::Prefetch::new(self.train.clone(), batches, 2);
            while let Some(batch) = loader.next_batch() {
                let batch = batch?;
                self.step(epoch, &batch)?;
                super::fault::point("step").context("after a step")?;
                super::fault::step_delay();
                first_step.get_or_insert_with(|| crate::train::memory::process_seconds());
                let step = self.state.step;
                let stop = self.stop_reason();
                let epoch_done = step % spe == 0;
                if epoch_done || stop.is_some() || step == self.total_steps {
                    self.state.epoch = if epoch_done { step / spe } else { epoch };
                    // a signal stops at once; the other stops and epoch ends validate first
                    let urgent = stop.as_deref().is_some_and(|r| r.starts_with("SIG"));
                    let eval = if urgent { None } else { Some(self.validate(epoch + 1)?) };
                    let rec = match &stop {
                        // an epoch's end, or the end of a run whose budget is in steps
                        None => Record::Epoch(eval.clone().expect("validated")),
                        Some(reason) => Record::Stop(StopRecord {
                            reason: reason.clone(),
                            evaluated: eval.is_some(),
                            eval: eval.clone().unwrap_or(EvalRecord { epoch: epoch + 1, step, seconds: self.seconds(), ..Default::default() }),
                        }),
                    };
                    let best = eval.as_ref().is_some_and(|e| self.is_best(e));
                    self.log(rec)?;
                    self.checkpoint(best, true)?;
                    self.draw()?;
                    if let Some(reason) = stop {
                        ended = reason;
                        break 'epochs;
                    }
                    if step == self.total_steps {
                        break 'epochs;
                    }
                } else if step % self.cfg.checkpoint_every == 0 {
                    self.checkpoint(false, false)?;
                }
            }
        }
        self.progress.finish();
        if ended.starts_with("SIG") {
            let msg = format!(
                "stopped by {ended} at step {} (checkpoint written); resume with: slotforge train --resume {}",
                self.state.step,
                self.cfg.out.display()
            );
            eprintln!("{msg}");
            return Err(super::signals::Interrupted { signal: ended, message: msg }.into());
        }
        if ended != "done" {
            eprintln!("stopped ({ended}) at step {}; resume with: slotforge train --resume {}", self.state.step, self.cfg.out.display());
        }
        self.run.sync_log()?;
        let evals: Vec<&EvalRecord> = self
            .history
            .iter()
            .filter_map(|r| match r {
                Record::Epoch(e) => Some(e),
                Record::Stop(s) if s.evaluated => Some(&s.eval),
                _ => None,
            })
            .collect();
        let best_of = |f: fn(&EvalRecord) -> Option<f64>| evals.iter().filter_map(|e| f(e)).reduce(f64::max);
        Ok(Summary {
            steps: self.state.step,
            epochs: self.state.epoch,
            seconds: self.seconds(),
            ended,
            last: evals.last().map(|e| (*e).clone()),
            best: self.state.best.clone(),
            best_token_fg_ari: best_of(|e| e.token_fg_ari),
            best_fg_ari: best_of(|e| e.fg_ari),
            first_step_seconds: first_step,
            peak_rss_mib: crate::train::memory::peak_rss_mib(),
        })
    }

    /// Why the run must stop after this step, if it must.
    fn stop_reason(&self) -> Option<String> {
        if let Some(sig) = super::signals::requested() {
            return Some(sig.into());
        }
        if self.cfg.time_limit_minutes > 0.0 && self.start.elapsed().as_secs_f32() > self.cfg.time_limit_minutes * 60.0 {
            return Some("time limit".into());
        }
        None
    }

    /// One optimizer step on `batch`, its guards, and its log record at log steps.
    fn step(&mut self, epoch: usize, batch: &crate::data::loader::Batch) -> Result<()> {
        let (cfg, spe) = (&self.cfg, self.steps_per_epoch);
        let (b, k, d) = (cfg.batch_size, self.model.num_slots(), self.model.slot_dim());
        let step = self.state.step;
        let lr = learning_rate(cfg, step, spe);
        let w_div = self.schedule.weight_at(cfg, epoch);
        let noise_scale = if self.segments.is_some() { cfg.spectral_noise } else { 1.0 };
        let noise = randn(&mut step_rng(cfg.seed, 2, step), b * k * d, noise_scale);
        let chunk = &batch.scenes[..];
        let segs = self.segments.as_ref().map(|c| c.gather(chunk));
        self.model.feed_inputs(&batch.inputs, &noise, segs.as_deref(), w_div)?;
        let w_guide = guide_weight(cfg, step, spe);
        // the targets also with the weight at 0: the logged guide is then still the distance
        // to the spectral groups (or, self-training, to the model's own attention)
        let (balance, by_family) = (cfg.guide_balance, cfg.guide_family);
        let own = cfg.self_training_steps > 0 && step >= cfg.self_training_steps;
        if self.segments.is_some() {
            let targets = if own {
                let segs = self.own_segmentations(chunk.len())?;
                let c = self.segments.as_ref().unwrap();
                spectral_init::guide_targets_of(&segs, c.n, c.k, balance, false)
            } else {
                self.segments.as_ref().unwrap().guide_targets(chunk, balance, by_family)
            };
            self.model.set_guide(&targets, w_guide)?;
        }
        let cfg = &self.cfg;
        self.adam.set_step(self.model.ex_mut(), step as u64 + 1, lr)?;
        let total = self.model.out().total;
        let adam = &self.adam;
        self.model.ex_mut().train_step("train_step", total, |cx, l| adam.record(cx, l))?;
        self.state.step += 1;
        let step = self.state.step;
        // Guards: on the CPU reading three floats is free, so every step is checked; on a GPU
        // only at log steps, to keep the step a single submission without readback.
        let log_now = step % cfg.log_every == 0 || step == self.total_steps;
        if matches!(self.device, Device::Cpu) || log_now {
            check_losses(&self.model, step)?;
        }
        if log_now {
            let rec = self.step_record(epoch, lr, w_div, w_guide)?;
            self.schedule.observe(&self.cfg, rec.slot_similarity);
            self.watch_collapse(&rec);
            self.progress.message(&rec);
            self.log(Record::Step(rec))?;
        }
        self.progress.tick(step);
        self.state.diversity_weight = self.schedule.weight;
        Ok(())
    }

    /// The model's own segmentation of the batch it was just fed: a forward pass, each token
    /// to the slot whose attention wins it.
    fn own_segmentations(&mut self, b: usize) -> Result<Vec<crate::spectral::Segmentation>> {
        self.model.ex_mut().forward()?;
        let (k, n) = (self.model.num_slots(), self.train.tokens());
        let attn = self.model.ex().get(self.model.out().attn)?; // [B, N, K]
        Ok((0..b)
            .map(|s| {
                let labels: Vec<u8> = attn[s * n * k..(s + 1) * n * k]
                    .chunks_exact(k)
                    .map(|a| (0..k).max_by(|&i, &j| a[i].total_cmp(&a[j])).unwrap() as u8)
                    .collect();
                spectral_init::own_segmentation(&labels, k, self.train.grid)
            })
            .collect())
    }

    fn step_record(&self, epoch: usize, lr: f32, w_div: f32, w_guide: f32) -> Result<StepRecord> {
        let (b, k, d, n) = (self.cfg.batch_size, self.model.num_slots(), self.model.slot_dim(), self.train.tokens());
        let (v, ex) = (self.model.out(), self.model.ex());
        let (_, sim_centered) = slot_similarity(&ex.get(v.slots)?, b, k, d);
        let (active, overlap) = mask_stats(&ex.get(v.alpha)?, b, k, n, 0.02);
        Ok(StepRecord {
            epoch,
            step: self.state.step,
            recon: ex.get(v.mse)?[0],
            diversity: ex.get(v.diversity)?[0],
            // the distance to the spectral groups (without spectral init there are none)
            guide: if self.segments.is_some() { ex.get(v.guide)?[0] } else { 0.0 },
            guide_weight: w_guide,
            total: ex.get(v.total)?[0],
            slot_similarity: ex.get(v.similarity)?[0],
            slot_similarity_centered: sim_centered,
            active_slots: active,
            mask_overlap: overlap,
            lr,
            diversity_weight: w_div,
            grad_norm: self.adam.last_grad_norm(ex)?,
            seconds: self.seconds(),
        })
    }

    /// Collapse warning: too few active slots, or masks that overlap, for several log steps.
    fn watch_collapse(&mut self, r: &StepRecord) {
        if r.mask_overlap > self.cfg.collapse_overlap || r.active_slots < 1.5 {
            self.state.collapse_streak += 1;
            if self.state.collapse_streak == self.cfg.collapse_checks {
                self.progress.println(&format!(
                    "WARNING: slot collapse at step {}: {:.1} active slots, mask overlap {:.2} for {} checks in a row. \
                     The slots are decoding the same masks (raw similarity {:.2}, centered {:.2}).",
                    r.step, r.active_slots, r.mask_overlap, self.cfg.collapse_checks, r.slot_similarity, r.slot_similarity_centered
                ));
            }
        } else {
            self.state.collapse_streak = 0;
        }
    }

    /// Measure the validation set (and draw its first scenes' masks).
    fn validate(&mut self, epoch: usize) -> Result<EvalRecord> {
        let noise_scale = if self.cfg.use_spectral { self.cfg.spectral_noise } else { 1.0 };
        let png = self.cfg.out.join("masks.png");
        let mut e = super::eval::evaluate(&mut self.model, &self.val, self.cfg.seed, self.val_segments.as_ref(), noise_scale, Some(&png))?;
        (e.epoch, e.step, e.seconds) = (epoch, self.state.step, self.seconds());
        let line = match (e.token_fg_ari, e.fg_ari) {
            (Some(t), Some(f)) => format!(
                "token_fg_ari {t:.3} fg_ari {f:.3} (ceiling {:.3}) ari {:.3} mbo {:.3}",
                e.fg_ari_ceiling.unwrap_or(f64::NAN),
                e.ari.unwrap_or(f64::NAN),
                e.mbo.unwrap_or(f64::NAN)
            ),
            (None, Some(f)) => format!("fg_ari {f:.3} ari {:.3} mbo {:.3}", e.ari.unwrap_or(f64::NAN), e.mbo.unwrap_or(f64::NAN)),
            _ => format!("(no masks) recon {:.5} active slots {:.1} mask overlap {:.3}", e.recon, e.active_slots, e.mask_overlap),
        };
        self.progress.println(&format!("epoch {epoch} (step {}): {line}", e.step));
        Ok(e)
    }

    fn is_best(&mut self, e: &EvalRecord) -> bool {
        let (metric, value) = e.selection();
        let better = self.state.best.as_ref().is_none_or(|b| b.metric != metric || value > b.value);
        if better {
            self.state.best = Some(Best { metric: metric.into(), value, step: e.step });
        }
        better
    }

    fn log(&mut self, rec: Record) -> Result<()> {
        self.run.append(&rec)?;
        self.history.push(rec);
        Ok(())
    }

    /// Commit a checkpoint at the current step (model, optimizer and trainer state as one).
    fn checkpoint(&mut self, best: bool, durable: bool) -> Result<()> {
        self.state.seconds = self.seconds();
        self.state.diversity_weight = self.schedule.weight;
        self.state.config = self.cfg.clone();
        if durable {
            self.run.sync_log()?;
        }
        let mut opt = TensorFile::default();
        for (name, data) in self.adam.state(self.model.ex())? {
            let len = data.len();
            opt.insert(&name, &[len], data);
        }
        opt.metadata.insert("slotforge.trainer".into(), serde_json::to_string(&self.state)?);
        let mut params = self.model.get_params()?;
        if self.cfg.use_spectral {
            // eval and infer must start the slots the way training did
            let c = &self.cfg;
            let spectral = json!({"affinity_power": c.spectral_affinity_power, "seed": c.data_seed(), "noise": c.spectral_noise, "pool": c.spectral_pool});
            params.metadata.insert(SPECTRAL_METADATA.into(), spectral.to_string());
        }
        self.run.commit(self.state.step, params, opt, best, durable)?;
        Ok(())
    }

    /// The pictures and the report, from the history.
    fn draw(&self) -> Result<()> {
        super::report::write(&self.cfg, &self.history, self.state.best.as_ref(), &self.cfg.out)
    }
}

/// Stop on a negative or non-finite loss term, naming it, the step and every term's value.
pub fn check_losses(model: &Model, step: usize) -> Result<()> {
    let (v, ex) = (model.out(), model.ex());
    let terms = [("recon", ex.get(v.mse)?[0]), ("diversity", ex.get(v.diversity)?[0]), ("guide", ex.get(v.guide)?[0]), ("total", ex.get(v.total)?[0])];
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

/// Load a committed checkpoint directory (model + optimizer) into the model and optimizer;
/// both files must carry the same step.
fn load_checkpoint(dir: &Path, model: &mut Model, adam: &Adam) -> Result<TrainerState> {
    let (mpath, opath) = (dir.join("model.safetensors"), dir.join("optimizer.safetensors"));
    let params = TensorFile::load(&mpath)?;
    let saved = AnyConfig::from_checkpoint(&params).with_context(|| format!("--resume {}", mpath.display()))?;
    anyhow::ensure!(
        saved.name() == model.config().name(),
        "--resume: {} holds a {} model, but this run trains the {} model",
        mpath.display(),
        saved.name(),
        model.config().name()
    );
    model.set_params(&params).with_context(|| format!("--resume {}", mpath.display()))?;
    let opt = TensorFile::load(&opath).with_context(|| format!("--resume needs {} beside the model", opath.display()))?;
    let (ms, os) = (params.metadata.get(STEP_KEY), opt.metadata.get(STEP_KEY));
    anyhow::ensure!(ms == os, "--resume: {} is from step {ms:?} but {} from step {os:?}: not one checkpoint", mpath.display(), opath.display());
    let state: Vec<(String, Vec<f32>)> = opt.tensors.iter().map(|(n, t)| (n.clone(), t.data.clone())).collect();
    adam.load_state(model.ex_mut(), &state)?;
    let text = opt.metadata.get("slotforge.trainer").context("optimizer file lacks trainer state")?;
    Ok(serde_json::from_str(text)?)
}

/// Read a checkpoint's model config.
pub fn checkpoint_config(params: &TensorFile) -> Result<ModelConfig> {
    let text = params.metadata.get("slotforge.config").context("checkpoint lacks slotforge.config metadata")?;
    let cfg: ModelConfig = serde_json::from_str(text).context("parsing slotforge.config")?;
    cfg.validate()?;
    Ok(cfg)
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

/// Progress on a terminal (a bar) or in a log (a status line every few seconds).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    every: f64,
    last_line: Instant,
    since: (Instant, usize),
    msg: String,
}

impl Progress {
    fn new(total: usize, at: usize, every: f64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta} {msg}")
                    .expect("progress template")
                    .progress_chars("=> "),
            );
            bar.set_position(at as u64);
            bar
        });
        Progress { bar, total, every, last_line: Instant::now(), since: (Instant::now(), at), msg: String::new() }
    }

    fn message(&mut self, r: &StepRecord) {
        self.msg = format!(
            "recon {:.4} total {:.4} div {:.3} active {:.1} overlap {:.2}",
            r.recon, r.total, r.diversity, r.active_slots, r.mask_overlap
        );
        if let Some(b) = &self.bar {
            b.set_message(self.msg.clone());
        }
    }

    fn tick(&mut self, step: usize) {
        if let Some(b) = &self.bar {
            b.set_position(step as u64);
            return;
        }
        if self.every > 0.0 && self.last_line.elapsed().as_secs_f64() >= self.every {
            let (t0, s0) = self.since;
            let rate = (step - s0) as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            let eta = (self.total.saturating_sub(step)) as f64 / rate.max(1e-9);
            eprintln!("step {step}/{} | {} | {rate:.2} steps/s | eta {}", self.total, self.msg, fmt_secs(eta));
            self.last_line = Instant::now();
        }
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

fn fmt_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}
