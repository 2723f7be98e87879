//! The `slotforge` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use slotforge::backend::DeviceKind;
use slotforge::train::config::{Schedule, TrainConfig, KEYS, RESUME_MAY_CHANGE};

#[derive(Parser)]
#[command(
    name = "slotforge",
    version,
    about = "Slot Attention training for unsupervised object discovery, on WGSL kernels (wgpu) and a native CPU backend",
    after_help = "Start with `slotforge train` (the built-in scenes) or `slotforge train --data DIR`; `slotforge config --list` shows every setting."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--device`: PyTorch's `mps` is accepted as Metal.
fn parse_device(s: &str) -> Result<DeviceKind, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "auto" => DeviceKind::Auto,
        "cpu" => DeviceKind::Cpu,
        "vulkan" => DeviceKind::Vulkan,
        "metal" => DeviceKind::Metal,
        "mps" => {
            eprintln!("note: --device mps is PyTorch's name for Apple's GPU; slotforge reaches it through Metal (--device metal)");
            DeviceKind::Metal
        }
        "dx12" => DeviceKind::Dx12,
        "gl" => DeviceKind::Gl,
        "cuda" => return Err("slotforge has no CUDA backend: on an NVIDIA GPU use vulkan (auto picks it)".into()),
        _ => return Err(format!("unknown device '{s}' (auto, cpu, vulkan, metal or mps, dx12, gl)")),
    })
}

/// Refuse a device this operating system cannot have, naming what to use instead.
fn check_device_os(kind: DeviceKind) -> Result<()> {
    let os = std::env::consts::OS;
    match kind {
        DeviceKind::Metal if os != "macos" => bail!(
            "--device metal: Metal is Apple's GPU API and exists only on macOS; here ({os}) use --device vulkan \
             (your GPU's Vulkan driver{}) or --device cpu",
            if os == "linux" { ", or Mesa's: apt-get install mesa-vulkan-drivers" } else { "" }
        ),
        DeviceKind::Dx12 if os != "windows" => bail!("--device dx12: Direct3D 12 exists only on Windows; here ({os}) use --device vulkan or --device cpu"),
        DeviceKind::Vulkan if os == "macos" => bail!("--device vulkan: macOS has no native Vulkan; use --device metal (or cpu)"),
        _ => Ok(()),
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model (no arguments: the quick run on the built-in CLEVR-like feature scenes).
    Train(Box<TrainArgs>),
    /// Score a checkpoint on a dataset: metrics.json, pred_masks.npy and masks.png.
    #[command(allow_negative_numbers = true)]
    Eval {
        /// The model checkpoint (a run's model.safetensors or best.safetensors)
        #[arg(long)]
        checkpoint: PathBuf,
        /// The dataset (directory, .npz or manifest .json); masks are optional
        #[arg(long)]
        data: PathBuf,
        /// Output directory
        #[arg(long, default_value = "runs/eval")]
        out: PathBuf,
        /// auto, cpu, vulkan, metal (mps), dx12 or gl
        #[arg(long, default_value = "auto", value_parser = parse_device)]
        device: DeviceKind,
        /// Seed of the slot noise (scene i's noise depends on (seed, i) only)
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Run a feature checkpoint on features: writes slots, attn, alpha, recon, noise (.safetensors or .npz).
    Infer {
        /// The model checkpoint
        #[arg(long)]
        checkpoint: PathBuf,
        /// Features [B, N, F] or [B, h, w, F] (.npy)
        #[arg(long)]
        features: PathBuf,
        /// Slot noise [B, K, D] (.npy); default: scene i gets the draw `eval --seed 0` gives scene i
        #[arg(long)]
        noise: Option<PathBuf>,
        /// Output file: .safetensors or .npz
        #[arg(long)]
        out: PathBuf,
        /// auto, cpu, vulkan, metal (mps), dx12 or gl
        #[arg(long, default_value = "auto", value_parser = parse_device)]
        device: DeviceKind,
    },
    /// ARI, FG-ARI and mBO of two label maps ([S,H,W] or [S,P], any integer dtype).
    Score {
        /// Predicted labels (.npy)
        #[arg(long)]
        pred: PathBuf,
        /// True labels (.npy), 0 = background
        #[arg(long = "true")]
        truth: PathBuf,
    },
    /// Write a built-in synthetic dataset to disk (streamed: any size fits).
    #[command(allow_negative_numbers = true)]
    GenData {
        /// clevr-features, clevr6-features, tetrominoes or multi-dsprites
        #[arg(long)]
        synthetic: String,
        /// Number of scenes
        #[arg(long)]
        count: usize,
        /// Output directory (must not exist or be empty)
        #[arg(long)]
        out: PathBuf,
        /// Seed of the scenes
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Token dimension of the feature scenes
        #[arg(long, default_value_t = 768)]
        feat_dim: usize,
        /// Write only scenes SKIP..COUNT (scene i is the same whatever COUNT is), e.g. a run's
        /// held-out scenes (`train` generates train-count + val-count scenes with seed SEED xor 0x5eed)
        #[arg(long, default_value_t = 0)]
        skip: usize,
        /// Feature dtype: f32, f16 or bf16
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Scenes per shard (features-00000.npy, ...); 0 writes one file per array
        #[arg(long, default_value_t = 0)]
        shard_size: usize,
    },
    /// Spectral init diagnostics on a dataset: slot similarity, segmentation scores, PNGs.
    #[command(allow_negative_numbers = true)]
    DebugSpectral {
        /// The dataset
        #[arg(long)]
        data: PathBuf,
        /// Slots K
        #[arg(long, default_value_t = 11)]
        num_slots: usize,
        /// Output directory
        #[arg(long, default_value = "runs/debug-spectral")]
        out: PathBuf,
        /// Seed of the model init and the segmentation
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The run config whose init to diagnose (default: the default run's)
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Benchmarks (JSON lines): kernels, step, spectral, data.
    #[command(allow_negative_numbers = true)]
    Bench {
        /// kernels (every kernel family), step (one training step), spectral (the spectral init
        /// per scene) or data (training from a dataset on disk against a copy in memory)
        what: String,
        /// auto, cpu, vulkan, metal (mps), dx12 or gl
        #[arg(long, default_value = "cpu", value_parser = parse_device)]
        device: DeviceKind,
        /// Timed steps, after one untimed warm-up step
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Batch size
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Step benchmark on the CPU: also print each op's forward/backward time per step
        #[arg(long)]
        profile: bool,
        /// The run config whose model (step), data and step (spectral), or recipe (data) to time
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data benchmark: the dataset on disk
        #[arg(long)]
        data: Option<PathBuf>,
        /// Data benchmark: scenes of the in-memory copy
        #[arg(long, default_value_t = 1000)]
        memory_scenes: usize,
        /// Data benchmark: runs of the memory copy and of the warm disk set each (alternated)
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// One metric of several runs as one PNG (e.g. token FG-ARI per epoch, spectral vs random).
    Plot {
        /// Runs: DIR (with metrics.jsonl), a .jsonl file, or LABEL=either; one label, one colour
        #[arg(required = true)]
        runs: Vec<String>,
        /// The logged field to draw
        #[arg(long, default_value = "token_fg_ari")]
        metric: String,
        /// Output .png
        #[arg(long)]
        out: PathBuf,
        /// Log-scale y axis (for losses)
        #[arg(long)]
        log_y: bool,
    },
    /// List every wgpu adapter with its backend, type and limits.
    Devices,
    /// Every config key with its default and meaning (--list), or a resolved config as TOML.
    Config {
        /// A table of every key, its default and its meaning
        #[arg(long)]
        list: bool,
        /// Show this config file resolved (every key, defaults filled in)
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `slotforge train`. Flags override the config file (`--config`); every config key can be
/// set, the common ones by their flags and any by `--set key=value`.
#[derive(Parser, Debug)]
#[command(allow_negative_numbers = true)]
struct TrainArgs {
    /// A TOML run config (configs/*.toml); flags override it
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dataset: directory, .npz or manifest .json (none: the built-in scenes)
    #[arg(long)]
    data: Option<PathBuf>,
    /// A separate validation set (then all of --data trains)
    #[arg(long)]
    val_data: Option<PathBuf>,
    /// Scenes held out of --data for validation (0: the smaller of 100 and 10%)
    #[arg(long)]
    val_count: Option<usize>,
    /// Built-in scenes when there is no --data
    #[arg(long)]
    synthetic: Option<String>,
    /// Resize image folders to H W
    #[arg(long, num_args = 2, value_names = ["H", "W"])]
    image_size: Option<Vec<usize>>,
    /// Scenes per step
    #[arg(long)]
    batch_size: Option<usize>,
    /// Train on this percentage of the training scenes
    #[arg(long)]
    subset_percent: Option<f32>,
    /// Slots K
    #[arg(long)]
    num_slots: Option<usize>,
    /// Start slots from spectral segments (on by default)
    #[arg(long, overrides_with = "no_spectral")]
    use_spectral: bool,
    /// The random slot init instead (and no mask guidance)
    #[arg(long)]
    no_spectral: bool,
    /// Passes over the training set
    #[arg(long)]
    epochs: Option<usize>,
    /// The run's length in steps (0: epochs x steps per epoch)
    #[arg(long)]
    steps: Option<usize>,
    /// Learning-rate warmup in epochs
    #[arg(long)]
    warmup_epochs: Option<f32>,
    /// Peak learning rate
    #[arg(long)]
    learning_rate: Option<f32>,
    /// Weight of the diversity loss (>= 0)
    #[arg(long, allow_hyphen_values = true)]
    diversity_weight: Option<f32>,
    /// constant, stepped or adaptive
    #[arg(long)]
    diversity_schedule: Option<Schedule>,
    /// Weight of the mask guidance toward the spectral segments
    #[arg(long)]
    guide_weight: Option<f32>,
    /// auto, cpu, vulkan, metal (mps), dx12 or gl
    #[arg(long, value_parser = parse_device)]
    device: Option<DeviceKind>,
    /// Report the spectral init's diagnostics first; refuse a collapsed init
    #[arg(long)]
    debug_spectral: bool,
    /// Seed of the init, the data order and the noise
    #[arg(long)]
    seed: Option<u64>,
    /// Train N seeds on the same data in one process (OUT/seed-S each); report mean and spread,
    /// flag collapsed seeds, keep the best by validation reconstruction (no labels)
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// Run directory
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory (its settings; flags may only change how long and where it runs)
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Replace the run in --out
    #[arg(long)]
    overwrite: bool,
    /// Start from this checkpoint's parameters with a fresh optimizer (e.g. one saved from PyTorch)
    #[arg(long)]
    init: Option<PathBuf>,
    /// Log the losses every N steps
    #[arg(long)]
    log_every: Option<usize>,
    /// Stop after this many minutes, validated and resumable (0: no limit)
    #[arg(long)]
    time_limit_minutes: Option<f32>,
    /// Read the datasets into memory as float32 first
    #[arg(long)]
    in_memory: bool,
    /// Set any config key (repeatable), e.g. --set slot-dim=128 --set guide-family=false
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

/// Where a resumed run's settings are: its config.toml, or (runs from before run
/// directories) the trainer state in its optimizer file.
fn read_run_config(dir: &Path) -> Result<TrainConfig> {
    let file = dir.join(slotforge::train::rundir::CONFIG_FILE);
    if file.is_file() {
        return TrainConfig::from_file(&file);
    }
    let opt = dir.join("optimizer.safetensors");
    if opt.is_file() {
        let t = slotforge::checkpoint::TensorFile::load(&opt)?;
        let state: serde_json::Value = serde_json::from_str(t.metadata.get("slotforge.trainer").context("optimizer file lacks trainer state")?)?;
        return Ok(serde_json::from_value(state["config"].clone())?);
    }
    bail!("{}: not a run directory (no {} or optimizer.safetensors)", dir.display(), slotforge::train::rundir::CONFIG_FILE)
}

impl TrainArgs {
    /// Apply the flags to `c`.
    fn apply(&self, c: &mut TrainConfig) -> Result<()> {
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$f = v; } )* };
        }
        over!(synthetic, batch_size, subset_percent, num_slots, epochs, steps, warmup_epochs, learning_rate, diversity_weight,
              diversity_schedule, guide_weight, device, seed, out, log_every, time_limit_minutes, val_count);
        for (flag, field) in [(&self.data, &mut c.data), (&self.val_data, &mut c.val_data), (&self.init, &mut c.init)] {
            if flag.is_some() {
                field.clone_from(flag);
            }
        }
        if let Some(hw) = &self.image_size {
            c.image_size = Some([hw[0], hw[1]]);
        }
        if self.use_spectral {
            c.use_spectral = true;
        }
        if self.no_spectral {
            // the guidance pulls toward the spectral segments: without them it has no target
            (c.use_spectral, c.guide_weight) = (false, 0.0);
        }
        c.debug_spectral |= self.debug_spectral;
        c.overwrite |= self.overwrite;
        c.in_memory |= self.in_memory;
        for kv in &self.sets {
            let (k, v) = kv.split_once('=').with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
            c.set(k.trim(), v.trim())?;
        }
        Ok(())
    }

    fn into_config(self) -> Result<TrainConfig> {
        if let Some(r) = &self.resume {
            return self.resume_config(r);
        }
        let mut c = match (&self.config, self.synthetic.as_deref().and_then(slotforge::train::presets::preset)) {
            (Some(p), _) => TrainConfig::from_file(p)?,
            // an image dataset without a config: its built-in config (the pixel model's)
            (None, Some(preset)) => preset?,
            (None, None) => TrainConfig::default(),
        };
        self.apply(&mut c)?;
        c.validate()?;
        check_device_os(c.device)?;
        Ok(c)
    }

    /// The run's own settings, with the flags that may change; any other flag that
    /// disagrees with the run is an error naming both values.
    fn resume_config(&self, arg: &Path) -> Result<TrainConfig> {
        let dir = slotforge::train::rundir::resume_dir(arg);
        let saved = read_run_config(&dir).with_context(|| format!("--resume {}", arg.display()))?;
        let mut c = match &self.config {
            Some(p) => TrainConfig::from_file(p)?,
            None => saved.clone(),
        };
        self.apply(&mut c)?;
        if let Some(out) = &self.out {
            anyhow::ensure!(*out == dir, "--out {} differs from --resume {}: a resumed run writes to its own directory", out.display(), dir.display());
        }
        if let Some((k, mine, theirs)) = c.resume_conflict(&saved)? {
            bail!(
                "--resume {}: {k} = {mine} conflicts with the run's {k} = {theirs} ({}): a resumed run keeps its settings; \
                 only {} may change (start a new run to change {k})",
                dir.display(),
                dir.join("config.toml").display(),
                RESUME_MAY_CHANGE.join(", ")
            );
        }
        c.resume = Some(dir.clone());
        c.out = dir;
        c.overwrite = false;
        c.validate()?;
        check_device_os(c.device)?;
        Ok(c)
    }
}

/// Append "[default: X]" to each train flag that sets a config key, from the defaults
/// themselves (so the help cannot drift from them).
fn with_config_defaults(cmd: clap::Command) -> clap::Command {
    let defaults = TrainConfig::default().to_table().expect("defaults serialize");
    cmd.mut_subcommand("train", |mut sc| {
        let ids: Vec<String> = sc.get_arguments().map(|a| a.get_id().to_string()).collect();
        for id in ids {
            let key = id.replace('_', "-");
            let shown = match key.as_str() {
                "data" => Some("the built-in scenes".to_string()),
                "no-spectral" => Some("false".to_string()),
                "out" => defaults.get("out").map(|v| v.as_str().unwrap_or_default().to_string()),
                _ => defaults.get(&key).map(|v| v.to_string().trim_matches('"').to_string()),
            };
            if let Some(d) = shown {
                sc = sc.mut_arg(&id, |a| {
                    let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                    a.help(format!("{help} [default: {d}]"))
                });
            }
        }
        sc
    })
}

/// Mesa's Vulkan drivers (lavapipe) complain on every device creation when
/// XDG_RUNTIME_DIR is unset or unusable; give them a private directory.
fn quiet_mesa() {
    let ok = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).is_dir());
    if ok {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: getuid has no preconditions
        let dir = std::env::temp_dir().join(format!("slotforge-runtime-{}", unsafe { libc::getuid() }));
        if std::fs::create_dir_all(&dir).is_ok() && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_ok() {
            // SAFETY: single-threaded here, before anything reads the environment
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Train(args) => {
            let seeds = args.seeds;
            let cfg = args.into_config()?;
            slotforge::train::signals::install()?;
            if seeds > 1 {
                let summaries = slotforge::train::seeds::run(cfg, seeds)?;
                println!("{}", serde_json::to_string(&summaries)?);
            } else {
                let summary = slotforge::train::run::train(cfg)?;
                println!("{}", serde_json::to_string(&summary)?);
            }
        }
        Cmd::Eval { checkpoint, data, out, device, seed } => {
            check_device_os(device)?;
            let metrics = slotforge::train::commands::eval(&checkpoint, &data, &out, device, seed)?;
            println!("{metrics}");
        }
        Cmd::Infer { checkpoint, features, noise, out, device } => {
            check_device_os(device)?;
            slotforge::train::commands::infer(&checkpoint, &features, noise.as_deref(), &out, device)?;
        }
        Cmd::Score { pred, truth } => {
            println!("{}", slotforge::train::commands::score(&pred, &truth)?);
        }
        Cmd::GenData { synthetic, count, out, seed, feat_dim, skip, dtype, shard_size } => {
            anyhow::ensure!(count >= 1, "--count must be >= 1 (got {count})");
            anyhow::ensure!(feat_dim >= 1, "--feat-dim must be >= 1 (got {feat_dim})");
            anyhow::ensure!(skip < count, "--skip must be below --count: skipping {skip} of {count} scenes leaves none");
            let dtype = slotforge::data::npy::DType::parse_float(&dtype).context("--dtype")?;
            // refuse a bad name before creating anything
            slotforge::data::synthetic::generate_range(&synthetic, 0..1, seed, feat_dim)?;
            slotforge::checkpoint::check_output_dir(&out)?;
            anyhow::ensure!(
                !out.exists() || std::fs::read_dir(&out).map(|mut d| d.next().is_none()).unwrap_or(false),
                "--out {}: the directory exists and is not empty; give a new directory",
                out.display()
            );
            let _ = std::fs::remove_dir(&out);
            let write = |dir: &Path| slotforge::data::synthetic::write_range(&synthetic, skip..count, seed, feat_dim, dir, dtype, shard_size);
            slotforge::data::with_new_dir(&out, write).with_context(|| format!("writing dataset to {}", out.display()))?;
            println!("wrote {} {synthetic} scenes ({skip}..{count}) to {}", count - skip, out.display());
        }
        Cmd::DebugSpectral { data, num_slots, out, seed, config } => {
            slotforge::train::commands::debug_spectral(&data, num_slots, &out, seed, config.as_deref())?;
        }
        Cmd::Bench { what, device, steps, batch, profile, config, data, memory_scenes, reps } => {
            if what == "data" {
                let data = data.context("bench data needs --data DIR (e.g. gen-data --count 70000 --dtype f16 --shard-size 5000)")?;
                slotforge::bench_data::run(config.as_deref(), &data, steps, batch, memory_scenes, reps)?;
            } else {
                slotforge::bench::run(&what, device, steps, batch, profile, config.as_deref())?;
            }
        }
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
        Cmd::Config { list, config } => {
            let c = match &config {
                Some(p) => TrainConfig::from_file(p)?,
                None => TrainConfig::default(),
            };
            if list {
                let t = c.to_table()?;
                println!("{:<26} {:<22} meaning", "key", if config.is_some() { "value" } else { "default" });
                for (k, meaning) in KEYS {
                    let v = t.get(*k).map_or("(none)".to_string(), |v| v.to_string());
                    println!("{k:<26} {v:<22} {meaning}");
                }
                println!("\nset any key in a TOML file (--config) or with `slotforge train --set key=value`");
            } else {
                print!("{}", c.to_toml()?);
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    slotforge::train::memory::mark_start();
    quiet_mesa();
    let matches = with_config_defaults(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(i) = e.downcast_ref::<slotforge::train::signals::Interrupted>() {
                return ExitCode::from(i.exit_code());
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of every subcommand says what it does; every train flag that sets a config
    /// key shows the key's default.
    #[test]
    fn every_flag_has_help_and_train_flags_show_defaults() {
        let cmd = with_config_defaults(Cli::command());
        for sc in cmd.get_subcommands() {
            for a in sc.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(!help.trim().is_empty(), "slotforge {} --{id} has no help", sc.get_name());
                if sc.get_name() == "train" && TrainConfig::default().to_table().unwrap().contains_key(&id.replace('_', "-")) {
                    assert!(help.contains("[default: "), "train --{id}: {help}");
                }
            }
            if let Some(bench) = sc.get_subcommands().next() {
                let _ = bench;
            }
        }
    }

    /// The key table lists exactly the config's keys, so `config --list` and `--set` cover all.
    #[test]
    fn key_table_matches_the_config() {
        let t = TrainConfig { data: Some("d".into()), val_data: Some("v".into()), image_size: Some([1, 1]), resume: Some("r".into()), init: Some("i".into()), data_seed: Some(1), ..TrainConfig::default() }
            .to_table()
            .unwrap();
        let listed: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        for k in t.keys() {
            assert!(listed.contains(&k.as_str()), "config key {k} is missing from KEYS");
        }
        for k in &listed {
            assert!(t.contains_key(*k), "KEYS lists {k}, which is not a config key");
        }
        let mut c = TrainConfig::default();
        c.set("slot-dim", "128").unwrap();
        c.set("guide-family", "false").unwrap();
        c.set("synthetic", "tetrominoes").unwrap();
        assert_eq!((c.slot_dim, c.guide_family, c.synthetic.as_str()), (128, false, "tetrominoes"));
        assert!(format!("{:#}", c.set("slot_dim", "3").unwrap_err()).contains("unknown config key"));
    }
}
