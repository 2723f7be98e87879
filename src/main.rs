//! The `slotforge` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use slotforge::backend::DeviceKind;
use slotforge::train::config::{Schedule, TrainConfig};

#[derive(Parser)]
#[command(name = "slotforge", version, about = "Slot Attention training on WGSL kernels (wgpu) and a native CPU backend")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model (defaults: the quick built-in synthetic CLEVR-features run).
    Train(TrainArgs),
    /// Score a checkpoint on a dataset: metrics.json, pred_masks.npy and PNG overlays.
    #[command(allow_negative_numbers = true)]
    Eval {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "runs/eval")]
        out: PathBuf,
        #[arg(long, default_value = "auto", value_parser = device_kind())]
        device: DeviceKind,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Run a checkpoint on features: writes slots, attn, alpha, recon as safetensors.
    Infer {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        features: PathBuf,
        /// Slot noise [B, K, D] (.npy); default: scene i gets the draw `eval --seed 0` gives scene i
        #[arg(long)]
        noise: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "auto", value_parser = device_kind())]
        device: DeviceKind,
    },
    /// ARI, FG-ARI and mBO of two label maps ([S,H,W] or [S,P], any integer dtype).
    Score {
        #[arg(long)]
        pred: PathBuf,
        #[arg(long = "true")]
        truth: PathBuf,
    },
    /// Write a built-in synthetic dataset to disk.
    #[command(allow_negative_numbers = true)]
    GenData {
        #[arg(long)]
        synthetic: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 768)]
        feat_dim: usize,
        /// Write only scenes SKIP..COUNT (scene i is the same whatever COUNT is), e.g. a run's
        /// held-out scenes: `train` generates train-count + val-count scenes with seed SEED xor
        /// 0x5eed and holds out the last val-count
        #[arg(long, default_value_t = 0)]
        skip: usize,
    },
    /// Spectral init diagnostics on a dataset: similarity, segmentation scores, PNGs.
    #[command(allow_negative_numbers = true)]
    DebugSpectral {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 11)]
        num_slots: usize,
        #[arg(long, default_value = "runs/debug-spectral")]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The run config whose init to diagnose (model sizes, affinity power); default: the
        /// default run's.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Benchmarks: `kernels` (every kernel family), `step` (one training step) or `spectral`
    /// (the spectral init per scene: full vs Lanczos, batch, share of a step); JSON lines.
    #[command(allow_negative_numbers = true)]
    Bench {
        what: String,
        #[arg(long, default_value = "cpu", value_parser = device_kind())]
        device: DeviceKind,
        /// Timed steps (step benchmark), after one untimed warm-up step.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Step benchmark on the CPU: also print each op's forward/backward time per step.
        #[arg(long)]
        profile: bool,
        /// Step benchmark: time the model this run config trains (e.g. configs/tetrominoes.toml)
        /// instead of the reference feature model. Spectral benchmark: the config whose data
        /// to segment and whose step to compare with (default: the default run's).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// One metric of several runs as one PNG (e.g. token FG-ARI per epoch, spectral vs random).
    Plot {
        /// Runs: DIR (with metrics.jsonl), a .jsonl file, or LABEL=either; one label, one colour.
        #[arg(required = true)]
        runs: Vec<String>,
        #[arg(long, default_value = "token_fg_ari")]
        metric: String,
        #[arg(long)]
        out: PathBuf,
        /// Log-scale y axis (for losses).
        #[arg(long)]
        log_y: bool,
    },
    /// List every wgpu adapter with its backend, type and limits.
    Devices,
}

/// Flags override the config file; each has a TOML key of the same name.
/// Negative numbers are taken as values, so e.g. `--learning-rate -0.1` gets the range check's
/// message rather than "unexpected argument".
#[derive(Parser, Debug)]
#[command(allow_negative_numbers = true)]
struct TrainArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    synthetic: Option<String>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    subset_percent: Option<f32>,
    #[arg(long)]
    num_slots: Option<usize>,
    #[arg(long)]
    use_spectral: bool,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    warmup_epochs: Option<f32>,
    #[arg(long)]
    learning_rate: Option<f32>,
    #[arg(long, allow_hyphen_values = true)]
    diversity_weight: Option<f32>,
    #[arg(long)]
    diversity_schedule: Option<Schedule>,
    #[arg(long, value_parser = device_kind())]
    device: Option<DeviceKind>,
    #[arg(long)]
    debug_spectral: bool,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Start from this checkpoint's parameters (e.g. one written by PyTorch) with a fresh optimizer
    #[arg(long)]
    init: Option<PathBuf>,
    #[arg(long)]
    log_every: Option<usize>,
    #[arg(long)]
    time_limit_minutes: Option<f32>,
}

impl TrainArgs {
    fn into_config(self) -> Result<TrainConfig> {
        let mut c = match (&self.config, self.synthetic.as_deref().and_then(slotforge::train::presets::preset)) {
            (Some(p), _) => TrainConfig::from_file(p)?,
            // an image dataset without a config: its built-in config (the pixel model's)
            (None, Some(preset)) => preset?,
            (None, None) => TrainConfig::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        over!(synthetic, batch_size, subset_percent, num_slots, epochs, warmup_epochs, learning_rate,
              diversity_weight, diversity_schedule, device, seed, out, log_every, time_limit_minutes);
        if self.data.is_some() {
            c.data = self.data;
        }
        if self.resume.is_some() {
            c.resume = self.resume;
        }
        if self.init.is_some() {
            c.init = self.init;
        }
        c.use_spectral |= self.use_spectral;
        c.debug_spectral |= self.debug_spectral;
        c.validate()?;
        Ok(c)
    }
}

/// `--device`: one of the engine's device names, listed in `--help` and in the error.
fn device_kind() -> impl clap::builder::TypedValueParser<Value = DeviceKind> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(DeviceKind::ALL.map(DeviceKind::name)).map(|s| s.parse::<DeviceKind>().expect("a listed device name"))
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Train(args) => {
            let cfg = args.into_config()?;
            let summary = slotforge::train::run::train(cfg)?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Cmd::Eval { checkpoint, data, out, device, seed } => {
            let metrics = slotforge::train::commands::eval(&checkpoint, &data, &out, device, seed)?;
            println!("{metrics}");
        }
        Cmd::Infer { checkpoint, features, noise, out, device } => {
            slotforge::train::commands::infer(&checkpoint, &features, noise.as_deref(), &out, device)?;
        }
        Cmd::Score { pred, truth } => {
            println!("{}", slotforge::train::commands::score(&pred, &truth)?);
        }
        Cmd::GenData { synthetic, count, out, seed, feat_dim, skip } => {
            anyhow::ensure!(count >= 1, "--count must be >= 1 (got {count})");
            anyhow::ensure!(feat_dim >= 1, "--feat-dim must be >= 1 (got {feat_dim})");
            anyhow::ensure!(skip < count, "--skip must be below --count: skipping {skip} of {count} scenes leaves none");
            slotforge::checkpoint::check_output_dir(&out)?;
            let (_, ds) = slotforge::data::synthetic::generate(&synthetic, count, seed, feat_dim)?.split(count - skip);
            ds.save_new(&out).with_context(|| format!("writing dataset to {}", out.display()))?;
            println!("wrote {} {synthetic} scenes ({skip}..{count}) to {}", count - skip, out.display());
        }
        Cmd::DebugSpectral { data, num_slots, out, seed, config } => {
            slotforge::train::commands::debug_spectral(&data, num_slots, &out, seed, config.as_deref())?;
        }
        Cmd::Bench { what, device, steps, batch, profile, config } => slotforge::bench::run(&what, device, steps, batch, profile, config.as_deref())?,
        Cmd::Plot { runs, metric, out, log_y } => {
            slotforge::train::commands::plot(&runs, &metric, &out, log_y)?;
            println!("wrote {}", out.display());
        }
        Cmd::Devices => {
            let list = slotforge::backend::list_adapters();
            if list.is_empty() {
                println!("no wgpu adapters found (the native CPU backend is always available)");
            }
            for line in list {
                println!("{line}");
            }
            println!("Cpu\tnative\tslotforge CPU backend ({} threads)", rayon::current_num_threads());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
