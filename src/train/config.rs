//! Run configuration: TOML files in `configs/`, overridden by command-line flags.
//! Every flag has a TOML key of the same name; unknown keys and out-of-range values are
//! rejected with a message naming them.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::backend::DeviceKind;
use crate::model::ModelConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The same weight every step.
    Constant,
    /// epoch < 10: 1e-4, < 30: 1e-3, then 5e-3 (thresholds and values configurable).
    Stepped,
    /// Closed loop on the measured slot similarity.
    Adaptive,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct TrainConfig {
    // data
    pub data: Option<PathBuf>,
    /// A separate validation set (then all of `data` trains).
    pub val_data: Option<PathBuf>,
    pub synthetic: String,
    pub train_count: usize,
    /// Scenes held out for validation from the end of `data` (0: the smaller of 100 and 10%).
    pub val_count: usize,
    /// Size [H, W] image folders are resized to (absent: every image must have one size).
    pub image_size: Option<[usize; 2]>,
    /// Where the spectral segmentation is cached: "auto" (beside the data), "off", or a directory.
    pub spectral_cache: String,
    pub feat_dim: usize,
    pub subset_percent: f32,
    // model
    pub num_slots: usize,
    pub slot_dim: usize,
    pub mlp_hidden: usize,
    pub dec_hidden: usize,
    pub dec_layers: usize,
    pub iters: usize,
    /// Learned position embedding added to the encoder output (`ModelConfig::encoder_pos`).
    pub encoder_pos: bool,
    pub use_spectral: bool,
    /// Scale of the reparameterization noise added on top of the spectral init.
    pub spectral_noise: f32,
    /// Exponent of the spectral affinity `max(cos, 0)^p` (see `SpectralConfig::affinity_power`).
    /// The spectral module's default (4) was tuned on scenes whose regions share nothing; ViT-like
    /// tokens share a large common component (unrelated tokens have cosine ~0.5), which the power
    /// has to suppress: on 48 generated CLEVR-like scenes (F = 768) token FG-ARI of the segments
    /// alone is 0.02 / 0.42 / 0.90 / 0.97 / 0.98 for p = 4 / 8 / 12 / 16 / 24 (ARI 0.06 / 0.62 /
    /// 0.82 / 0.83 / 0.84).
    pub spectral_affinity_power: f32,
    /// Segment `p x p` blocks (each its medoid token; outlines redrawn per token) instead of
    /// every token (`SpectralConfig::pool`; 1 = off):
    /// the segmentation's cost grows with N^2, and 64x64 images (N = 4096) take ~0.6 s a scene.
    pub spectral_pool: usize,
    /// Spectral mask guidance (needs `use-spectral`): weight of `guide`, the squared distance
    /// of the decoder masks and the attention from the spectral segments each slot starts
    /// from. Held for `guide-hold-epochs`, then faded linearly to 0 over `guide-fade-epochs`.
    pub guide_weight: f32,
    /// p in [0, 1]: each token's weight in the guide is its segment's size^-p (mean 1), so
    /// small objects are not outweighed by the background (see `SegmentCache::guide_targets`).
    pub guide_balance: f32,
    /// Guide the pieces a region was split into only to give every slot a group (usually
    /// the background's) as one region (see `SegmentCache::guide_targets`).
    pub guide_family: bool,
    pub guide_hold_epochs: f32,
    pub guide_fade_epochs: f32,
    // optimization
    pub batch_size: usize,
    pub epochs: usize,
    pub warmup_epochs: f32,
    pub learning_rate: f32,
    /// Exponential decay after warmup: lr halves every this many steps (0 = no decay).
    pub decay_half_life: usize,
    pub max_grad_norm: f32,
    pub diversity_weight: f32,
    pub diversity_schedule: Schedule,
    pub stepped_epochs: [usize; 2],
    pub stepped_weights: [f32; 3],
    /// Adaptive schedule: target band for the centered slot similarity, weight bounds, step factor.
    pub adaptive_target: f32,
    pub adaptive_bounds: [f32; 2],
    pub adaptive_factor: f32,
    // run
    pub device: DeviceKind,
    pub debug_spectral: bool,
    pub seed: u64,
    /// Seed of the data: generation, subset, split order and segmentation (absent: `seed`).
    /// The seeds of `train --seeds` share it, so they train on the same scenes.
    pub data_seed: Option<u64>,
    pub out: PathBuf,
    pub resume: Option<PathBuf>,
    /// Replace the run in `out` (a non-empty `out` is otherwise refused unless resumed).
    pub overwrite: bool,
    /// The run's length in steps (0: `epochs` passes over the training set). A budget in steps
    /// gives a small dataset as much training as a large one.
    pub steps: usize,
    /// Learning-rate warmup in steps (0: `warmup-epochs` decides).
    pub warmup_steps: usize,
    /// Guidance held for this many steps, then faded over `guide-fade-steps` (0: the
    /// `guide-*-epochs` keys decide).
    pub guide_hold_steps: usize,
    pub guide_fade_steps: usize,
    /// From this step on the guide's targets are the model's own attention (each token to the
    /// slot that wins it in this step's forward pass) instead of the spectral segments:
    /// self-training, which distils the attention into the decoder's masks and lets both leave
    /// the teacher behind (0: off).
    pub self_training_steps: usize,
    /// Commit a checkpoint every this many steps (1: a kill loses at most the step in progress).
    pub checkpoint_every: usize,
    /// Without a terminal, print a status line every this many seconds (0: never).
    pub status_seconds: f64,
    /// Read the datasets into memory as float32 before training.
    pub in_memory: bool,
    /// Initial parameters from a checkpoint (fresh optimizer, step 0).
    pub init: Option<PathBuf>,
    pub log_every: usize,
    /// Collapse warning: fewer than this share of slots active, or mask overlap above, for
    /// `collapse_checks` consecutive log steps.
    pub collapse_overlap: f32,
    pub collapse_checks: usize,
    /// Stop after this many minutes (0 = no limit); the last epoch is still evaluated.
    pub time_limit_minutes: f32,
    // pixel model (image data; `num-slots`, `slot-dim`, `mlp-hidden`, `iters` are shared):
    // CNN encoder of `enc-layers` convs, spatial-broadcast decoder of `dec-conv-layers` convs
    // then a 3x3 conv to RGB + alpha. Kernels odd ("same" padding).
    pub enc_channels: usize,
    pub enc_layers: usize,
    pub enc_kernel: usize,
    pub dec_channels: usize,
    pub dec_conv_layers: usize,
    pub dec_kernel: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            data: None,
            val_data: None,
            synthetic: "clevr-features".into(),
            train_count: 1000,
            val_count: 0,
            image_size: None,
            spectral_cache: "auto".into(),
            feat_dim: 384,
            subset_percent: 100.0,
            num_slots: 11,
            slot_dim: 256,
            mlp_hidden: 512,
            dec_hidden: 256,
            dec_layers: 2,
            iters: 3,
            encoder_pos: true,
            use_spectral: true,
            spectral_noise: 0.1,
            spectral_affinity_power: 16.0,
            spectral_pool: 1,
            guide_weight: 1.0,
            guide_balance: 1.0,
            guide_family: true,
            guide_hold_epochs: 8.0,
            guide_fade_epochs: 0.0,
            batch_size: 16,
            epochs: 8,
            warmup_epochs: 0.5,
            learning_rate: 2e-3,
            decay_half_life: 100,
            max_grad_norm: 1.0,
            diversity_weight: 1e-4,
            diversity_schedule: Schedule::Constant,
            stepped_epochs: [10, 30],
            stepped_weights: [1e-4, 1e-3, 5e-3],
            adaptive_target: 0.3,
            adaptive_bounds: [1e-5, 1e-1],
            adaptive_factor: 1.5,
            device: DeviceKind::Auto,
            debug_spectral: false,
            seed: 0,
            data_seed: None,
            out: PathBuf::from("runs/latest"),
            resume: None,
            overwrite: false,
            steps: 0,
            warmup_steps: 0,
            guide_hold_steps: 0,
            guide_fade_steps: 0,
            self_training_steps: 0,
            checkpoint_every: 1,
            status_seconds: 15.0,
            in_memory: false,
            init: None,
            log_every: 10,
            collapse_overlap: 0.5,
            collapse_checks: 5,
            time_limit_minutes: 0.0,
            enc_channels: 32,
            enc_layers: 4,
            enc_kernel: 5,
            dec_channels: 32,
            dec_conv_layers: 3,
            dec_kernel: 5,
        }
    }
}

/// Validation scenes held out of `count` when `val-count` is 0: the smaller of 100 and 10%
/// (at least 1).
pub fn auto_val_count(count: usize) -> usize {
    (count / 10).clamp(1, 100)
}

impl TrainConfig {
    /// The seed of the data (see `data_seed`).
    pub fn data_seed(&self) -> u64 {
        self.data_seed.unwrap_or(self.seed)
    }

    /// The validation scenes to hold out of a dataset of `count` scenes.
    pub fn val_count_for(&self, count: usize) -> usize {
        if self.val_count > 0 {
            self.val_count
        } else {
            auto_val_count(count)
        }
    }

    /// The config as TOML (what `config.toml` of a run holds).
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }

    pub fn from_file(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        let cfg: TrainConfig = toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(self.batch_size >= 1 && self.batch_size <= 4096, "batch-size must be in 1..=4096 (got {})", self.batch_size);
        ensure!(
            self.subset_percent > 0.0 && self.subset_percent <= 100.0,
            "subset-percent must be in (0, 100] (got {})",
            self.subset_percent
        );
        ensure!(self.num_slots >= 1 && self.num_slots <= 64, "num-slots must be in 1..=64 (got {})", self.num_slots);
        for (v, key) in [(self.slot_dim, "slot-dim"), (self.mlp_hidden, "mlp-hidden"), (self.dec_hidden, "dec-hidden"), (self.iters, "iters")] {
            ensure!(v >= 1, "{key} must be >= 1 (got {v})");
        }
        ensure!(self.epochs >= 1, "epochs must be >= 1 (got {})", self.epochs);
        ensure!(self.warmup_epochs >= 0.0, "warmup-epochs must be >= 0 (got {})", self.warmup_epochs);
        ensure!(
            self.learning_rate > 0.0 && self.learning_rate < 1.0 && self.learning_rate.is_finite(),
            "learning-rate must be in (0, 1) (got {})",
            self.learning_rate
        );
        ensure!(
            self.diversity_weight >= 0.0 && self.diversity_weight.is_finite(),
            "diversity-weight must be >= 0: a negative weight rewards identical slots and drives the total loss negative (got {})",
            self.diversity_weight
        );
        ensure!(self.stepped_weights.iter().all(|w| *w >= 0.0), "stepped-weights must be >= 0");
        ensure!(
            self.adaptive_bounds[0] >= 0.0 && self.adaptive_bounds[0] <= self.adaptive_bounds[1],
            "adaptive-bounds must be 0 <= low <= high"
        );
        ensure!(self.adaptive_factor > 1.0, "adaptive-factor must be > 1");
        ensure!(self.max_grad_norm > 0.0, "max-grad-norm must be > 0");
        ensure!(
            self.init.is_none() || self.resume.is_none(),
            "--init and --resume exclude each other: --resume continues a run (its optimizer too), --init starts a new one from a checkpoint's parameters"
        );
        ensure!(self.log_every >= 1, "log-every must be >= 1");
        ensure!(self.checkpoint_every >= 1, "checkpoint-every must be >= 1 (got {})", self.checkpoint_every);
        ensure!(self.status_seconds >= 0.0 && self.status_seconds.is_finite(), "status-seconds must be >= 0 (got {})", self.status_seconds);
        ensure!(
            self.time_limit_minutes >= 0.0,
            "time-limit-minutes must be >= 0 (0 = no limit; got {})",
            self.time_limit_minutes
        );
        ensure!(self.train_count >= 1, "train-count must be >= 1");
        if let Some([h, w]) = self.image_size {
            ensure!(h >= 1 && w >= 1 && h <= 4096 && w <= 4096, "image-size must be two sizes in 1..=4096 (got {h} {w})");
        }
        ensure!(self.feat_dim >= 1 && self.feat_dim <= 8192, "feat-dim must be in 1..=8192");
        ensure!(self.spectral_noise >= 0.0, "spectral-noise must be >= 0");
        ensure!(
            self.spectral_affinity_power >= 1.0 && self.spectral_affinity_power <= 64.0,
            "spectral-affinity-power must be in [1, 64] (got {})",
            self.spectral_affinity_power
        );
        ensure!((1..=8).contains(&self.spectral_pool), "spectral-pool must be in 1..=8 (got {})", self.spectral_pool);
        ensure!(
            self.guide_weight >= 0.0 && self.guide_weight.is_finite(),
            "guide-weight must be >= 0 (got {})",
            self.guide_weight
        );
        ensure!(
            self.guide_weight == 0.0 || self.use_spectral,
            "guide-weight > 0 needs use-spectral: the guide targets are the spectral segments"
        );
        ensure!(
            (0.0..=1.0).contains(&self.guide_balance),
            "guide-balance must be in [0, 1] (got {})",
            self.guide_balance
        );
        ensure!(
            self.guide_hold_epochs >= 0.0 && self.guide_fade_epochs >= 0.0,
            "guide-hold-epochs and guide-fade-epochs must be >= 0"
        );
        ensure!(
            self.collapse_overlap > 0.0 && self.collapse_overlap <= 1.0,
            "collapse-overlap must be in (0, 1]"
        );
        for (v, name) in [(self.enc_channels, "enc-channels"), (self.enc_layers, "enc-layers"), (self.dec_channels, "dec-channels"), (self.dec_conv_layers, "dec-conv-layers")] {
            ensure!((1..=1024).contains(&v), "{name} must be in 1..=1024 (got {v})");
        }
        for (v, name) in [(self.enc_kernel, "enc-kernel"), (self.dec_kernel, "dec-kernel")] {
            ensure!(v % 2 == 1 && v <= 9, "{name} must be odd and <= 9 (\"same\" padding; got {v})");
        }
        Ok(())
    }

    pub fn model(&self, n_tokens: usize, feat_dim: usize) -> ModelConfig {
        ModelConfig {
            n_tokens,
            feat_dim,
            slot_dim: self.slot_dim,
            num_slots: self.num_slots,
            mlp_hidden: self.mlp_hidden,
            dec_hidden: self.dec_hidden,
            dec_layers: self.dec_layers,
            iters: self.iters,
            eps: 1e-8,
            encoder_pos: self.encoder_pos,
        }
    }
}

impl TrainConfig {
    /// The pixel model this config trains on `hw` images.
    pub fn pixel_model(&self, hw: (usize, usize)) -> crate::model::PixelConfig {
        crate::model::PixelConfig {
            height: hw.0,
            width: hw.1,
            slot_dim: self.slot_dim,
            num_slots: self.num_slots,
            mlp_hidden: self.mlp_hidden,
            iters: self.iters,
            eps: 1e-8,
            enc_channels: self.enc_channels,
            enc_layers: self.enc_layers,
            enc_kernel: self.enc_kernel,
            dec_channels: self.dec_channels,
            dec_layers: self.dec_conv_layers,
            dec_kernel: self.dec_kernel,
            out_kernel: 3,
        }
    }
}

/// The run's length in steps.
pub fn total_steps(cfg: &TrainConfig, steps_per_epoch: usize) -> usize {
    if cfg.steps > 0 {
        cfg.steps
    } else {
        steps_per_epoch * cfg.epochs
    }
}

/// Learning rate at `step` (0-based): linear warmup, then exponential decay.
pub fn learning_rate(cfg: &TrainConfig, step: usize, steps_per_epoch: usize) -> f32 {
    let warmup = if cfg.warmup_steps > 0 { cfg.warmup_steps } else { (cfg.warmup_epochs * steps_per_epoch as f32).round() as usize };
    if step < warmup {
        return cfg.learning_rate * (step + 1) as f32 / warmup as f32;
    }
    if cfg.decay_half_life == 0 {
        return cfg.learning_rate;
    }
    cfg.learning_rate * 0.5f32.powf((step - warmup) as f32 / cfg.decay_half_life as f32)
}

/// The learning rate at the last step of an `epochs`-long run, as a fraction of the peak.
/// The half-life is in steps, so one that suits a 500-step run starves a 1500-step one
/// (half-life 100 ends the clevr10 recipe at 1e-4 of its peak): the trainer warns below 1%.
pub fn final_lr_fraction(cfg: &TrainConfig, steps_per_epoch: usize) -> f32 {
    let last = total_steps(cfg, steps_per_epoch).max(1) - 1;
    learning_rate(cfg, last, steps_per_epoch) / cfg.learning_rate
}

/// Weight of the spectral mask guidance at `step`: held, then faded linearly to 0.
pub fn guide_weight(cfg: &TrainConfig, step: usize, steps_per_epoch: usize) -> f32 {
    let (hold, fade) = if cfg.guide_hold_steps > 0 {
        (cfg.guide_hold_steps as f32, cfg.guide_fade_steps as f32)
    } else {
        (cfg.guide_hold_epochs * steps_per_epoch as f32, cfg.guide_fade_epochs * steps_per_epoch as f32)
    };
    let t = step as f32;
    if t < hold {
        return cfg.guide_weight;
    }
    if fade <= 0.0 {
        return 0.0;
    }
    cfg.guide_weight * (1.0 - (t - hold) / fade).max(0.0)
}

/// The diversity weight schedule. `adaptive` keeps state: it moves the weight by a factor
/// each log step, up while the slots are more alike than the target, down once they are
/// below half of it, within bounds.
#[derive(Clone, Debug)]
pub struct DiversitySchedule {
    pub weight: f32,
}

impl DiversitySchedule {
    pub fn new(cfg: &TrainConfig) -> Self {
        DiversitySchedule { weight: cfg.diversity_weight }
    }

    pub fn weight_at(&self, cfg: &TrainConfig, epoch: usize) -> f32 {
        match cfg.diversity_schedule {
            Schedule::Constant | Schedule::Adaptive => self.weight,
            Schedule::Stepped => {
                let [e1, e2] = cfg.stepped_epochs;
                let [w0, w1, w2] = cfg.stepped_weights;
                if epoch < e1 {
                    w0
                } else if epoch < e2 {
                    w1
                } else {
                    w2
                }
            }
        }
    }

    /// Feed back a measured similarity (adaptive only).
    pub fn observe(&mut self, cfg: &TrainConfig, similarity: f32) {
        if cfg.diversity_schedule != Schedule::Adaptive || !similarity.is_finite() {
            return;
        }
        let [lo, hi] = cfg.adaptive_bounds;
        if similarity > cfg.adaptive_target {
            self.weight = (self.weight.max(lo) * cfg.adaptive_factor).min(hi);
        } else if similarity < 0.5 * cfg.adaptive_target {
            self.weight = (self.weight / cfg.adaptive_factor).max(lo);
        }
    }
}

/// Every config key with its meaning, in the order `slotforge config --list` shows them.
/// A test checks that this lists exactly the keys of [`TrainConfig`].
pub const KEYS: &[(&str, &str)] = &[
    ("data", "dataset: a directory, an .npz or a manifest .json (absent: the built-in scenes)"),
    ("val-data", "a separate validation set (then all of data trains)"),
    ("val-count", "scenes held out of data for validation (0: the smaller of 100 and 10%)"),
    ("synthetic", "built-in scenes when there is no data: clevr-features, clevr6-features, tetrominoes, multi-dsprites"),
    ("train-count", "built-in scenes generated for training"),
    ("feat-dim", "token dimension of the built-in feature scenes"),
    ("image-size", "[H, W] image folders are resized to (absent: all images must have one size)"),
    ("subset-percent", "train on this percentage of the training scenes"),
    ("in-memory", "read the datasets into memory as float32 before training"),
    ("spectral-cache", "where the spectral segmentation is cached: auto (beside the data), off, or a directory"),
    ("num-slots", "slots K"),
    ("slot-dim", "slot dimension D"),
    ("mlp-hidden", "hidden width of the slot MLP"),
    ("dec-hidden", "hidden width of the feature decoder MLP"),
    ("dec-layers", "hidden layers of the feature decoder MLP"),
    ("iters", "Slot Attention iterations"),
    ("encoder-pos", "add a learned position embedding to the encoder output"),
    ("use-spectral", "start each slot from a spectral segment of its scene (off: the random init)"),
    ("spectral-noise", "scale of the noise added to the spectral init"),
    ("spectral-affinity-power", "exponent p of the spectral affinity max(cos, 0)^p"),
    ("spectral-pool", "segment p x p blocks of tokens instead of every token (1: off)"),
    ("guide-weight", "weight of the mask guidance toward the spectral segments (needs use-spectral)"),
    ("guide-balance", "p in [0, 1]: weigh each guided token by its segment's size^-p"),
    ("guide-family", "guide the pieces a region was split into as one region"),
    ("guide-hold-epochs", "epochs the guidance is held at its weight"),
    ("guide-fade-epochs", "epochs it then fades to 0 over (0: it stops at once)"),
    ("batch-size", "scenes per step"),
    ("epochs", "passes over the training set"),
    ("steps", "the run's length in steps (0: epochs x steps per epoch); a budget that does not shrink with the data"),
    ("warmup-steps", "learning-rate warmup in steps (0: warmup-epochs decides)"),
    ("guide-hold-steps", "guidance held for this many steps (0: guide-hold-epochs decides)"),
    ("guide-fade-steps", "then faded to 0 over this many steps"),
    ("self-training-steps", "from this step on, guide toward the model's own attention instead of the spectral segments (0: never)"),
    ("warmup-epochs", "linear learning-rate warmup, in epochs"),
    ("learning-rate", "peak learning rate of Adam"),
    ("decay-half-life", "after warmup the learning rate halves every this many steps (0: constant)"),
    ("max-grad-norm", "clip the global gradient norm to this"),
    ("diversity-weight", "weight of the diversity loss (>= 0)"),
    ("diversity-schedule", "constant, stepped or adaptive"),
    ("stepped-epochs", "stepped schedule: the two epochs where the weight changes"),
    ("stepped-weights", "stepped schedule: the three weights"),
    ("adaptive-target", "adaptive schedule: the slot similarity it aims below"),
    ("adaptive-bounds", "adaptive schedule: [low, high] weight bounds"),
    ("adaptive-factor", "adaptive schedule: the factor a weight moves by per log step"),
    ("device", "auto, cpu, vulkan, metal (mps), dx12 or gl"),
    ("debug-spectral", "report the spectral init's diagnostics before training; refuse a collapsed init"),
    ("seed", "seed of the init, the data order and the noise"),
    ("data-seed", "seed of the generated data, the subset and the segmentation (absent: seed)"),
    ("out", "the run directory"),
    ("resume", "the run directory to continue"),
    ("overwrite", "replace the run in out"),
    ("init", "start from this checkpoint's parameters with a fresh optimizer"),
    ("log-every", "log the losses every this many steps"),
    ("checkpoint-every", "commit a checkpoint every this many steps (1: a kill loses at most one step)"),
    ("status-seconds", "without a terminal, a status line every this many seconds (0: never)"),
    ("time-limit-minutes", "stop (validated, checkpointed, resumable) after this many minutes (0: no limit)"),
    ("collapse-overlap", "collapse warning: mask overlap above this"),
    ("collapse-checks", "collapse warning: for this many log steps in a row"),
    ("enc-channels", "pixel model: encoder channels"),
    ("enc-layers", "pixel model: encoder convolutions"),
    ("enc-kernel", "pixel model: encoder kernel size (odd)"),
    ("dec-channels", "pixel model: decoder channels"),
    ("dec-conv-layers", "pixel model: decoder convolutions"),
    ("dec-kernel", "pixel model: decoder kernel size (odd)"),
];

/// Keys a resumed run may change: how long and where it runs, not what it trains.
pub const RESUME_MAY_CHANGE: &[&str] =
    &["epochs", "steps", "time-limit-minutes", "device", "log-every", "checkpoint-every", "status-seconds", "debug-spectral", "resume", "out", "overwrite", "init", "in-memory"];

impl TrainConfig {
    /// The config as a TOML table.
    pub fn to_table(&self) -> Result<toml::Table> {
        // through the text: f32 values then read as written (0.002, not 0.0020000000949949026)
        Ok(toml::from_str(&self.to_toml()?)?)
    }

    /// Set `key` (a config key) to `value` (TOML syntax; a bare word is a string).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        anyhow::ensure!(KEYS.iter().any(|(k, _)| *k == key), "--set {key}: unknown config key (slotforge config --list shows them)");
        let v: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").unwrap(),
            Err(_) => toml::Value::String(value.to_string()),
        };
        let mut t = self.to_table()?;
        t.insert(key.to_string(), v);
        *self = t.try_into().map_err(|e| anyhow::anyhow!("--set {key}={value}: {e}"))?;
        Ok(())
    }

    /// The first key where `self` and `saved` differ that a resumed run may not change:
    /// (key, self's value, saved value).
    pub fn resume_conflict(&self, saved: &TrainConfig) -> Result<Option<(String, String, String)>> {
        let (a, b) = (self.to_table()?, saved.to_table()?);
        for (k, _) in KEYS {
            if RESUME_MAY_CHANGE.contains(k) {
                continue;
            }
            let show = |t: &toml::Table| t.get(*k).map_or("(none)".to_string(), |v| v.to_string());
            if a.get(*k) != b.get(*k) {
                return Ok(Some((k.to_string(), show(&a), show(&b))));
            }
        }
        Ok(None)
    }
}
