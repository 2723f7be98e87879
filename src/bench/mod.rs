//! `slotforge bench step|kernels|spectral`: one JSON line per result.

use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::json;

use crate::backend::{open_device, Device, DeviceKind};
use crate::model::init::init_params;
use crate::model::{AnyConfig, Model, ModelConfig};
use crate::ops::optim::{Adam, AdamConfig};
use crate::train::config::TrainConfig;

pub mod kernels;
mod timing;

pub use timing::PeakParams;

/// The reference-scale feature model of the step benchmark (and of the PyTorch baseline in
/// `benches/torch_step.py`): N = 256, F = 768, D = 128, K = 11, T = 3, MLP 512, decoder 3 x 512.
pub fn reference_config() -> ModelConfig {
    ModelConfig { n_tokens: 256, feat_dim: 768, slot_dim: 128, num_slots: 11, mlp_hidden: 512, dec_hidden: 512, dec_layers: 3, iters: 3, eps: 1e-8, encoder_pos: false }
}

pub fn run(what: &str, device: DeviceKind, steps: usize, batch: usize, profile: bool, config: Option<&std::path::Path>) -> Result<()> {
    match what {
        "step" => {
            let run = config.map(|p| bench_data(Some(p), batch)).transpose()?;
            bench_step(device, steps, batch, profile, run.as_ref()).map(|_| ())
        }
        "kernels" => kernels::run(device),
        "spectral" => bench_spectral(device, steps, batch, config),
        other => bail!("unknown benchmark {other:?}: expected `step`, `kernels` or `spectral`"),
    }
}

/// Peak resident memory of this process in bytes (Linux: VmHWM).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A run config to benchmark, its data, and where it came from (for messages).
pub struct BenchRun {
    pub source: String,
    pub config: TrainConfig,
    pub data: crate::data::Dataset,
}

/// The run config at `path` (default: the default run's) and its data: the data dir it names,
/// else `batch` scenes of its synthetic set. At least `batch` scenes, or an error.
pub fn bench_data(path: Option<&std::path::Path>, batch: usize) -> Result<BenchRun> {
    let tc = match path {
        Some(p) => TrainConfig::from_file(p)?,
        None => TrainConfig::default(),
    };
    tc.validate()?;
    let data = match &tc.data {
        Some(dir) => crate::data::Dataset::load(dir)?,
        None => crate::data::synthetic::generate(&tc.synthetic, batch, tc.seed, tc.feat_dim)?,
    };
    let source = path.map_or("the default run".to_string(), |p| p.display().to_string());
    anyhow::ensure!(data.count >= batch, "{source}: {} scenes, fewer than the batch of {batch}", data.count);
    Ok(BenchRun { source, config: tc, data })
}

/// One training step of the reference feature model on random features, or with `run` (from
/// [`bench_data`]) of the model that run trains (feature or pixel) on a batch of its data.
/// Returns the median step time in seconds.
pub fn bench_step(kind: DeviceKind, steps: usize, batch: usize, profile: bool, run: Option<&BenchRun>) -> Result<f64> {
    let (device, why) = open_device(kind)?;
    eprintln!("device: {} ({why})", device.name());
    let mut model = match run {
        None => {
            let cfg = reference_config();
            let mut model = Model::new(&AnyConfig::Feature(cfg.clone()), batch, device.clone())?;
            model.set_params(&init_params(&cfg, 0))?;
            let mut rng = crate::train::run::step_rng(0, 9, 0);
            let feats = crate::train::run::randn(&mut rng, batch * cfg.n_tokens * cfg.feat_dim, 1.0);
            let noise = crate::train::run::randn(&mut rng, batch * cfg.num_slots * cfg.slot_dim, 1.0);
            if let Some(m) = model.as_feature_mut() {
                m.set_inputs(&feats, &noise, None, 1e-4)?;
            }
            model
        }
        Some(BenchRun { source, config: tc, data }) => {
            let cfg = crate::train::run::model_config(tc, data)?;
            eprintln!("{} model of {source}: {}", cfg.name(), cfg.to_json());
            let mut model = Model::new(&cfg, batch, device.clone())?;
            model.set_params(&cfg.init_params(0))?;
            let mut rng = crate::train::run::step_rng(0, 9, 0);
            let noise = crate::train::run::randn(&mut rng, batch * cfg.num_slots() * cfg.slot_dim(), 1.0);
            let scenes: Vec<usize> = (0..batch).collect();
            model.feed(data, &scenes, &noise, None, 1e-4)?;
            model
        }
    };
    let params: Vec<_> = model.params().iter().map(|(_, v)| *v).collect();
    let adam = Adam::new(model.ex_mut(), &params, AdamConfig::default())?;
    let total = model.out().total;
    let flops: u64 = model.ex().graph().nodes().iter().map(|n| n.op().flops()).sum::<u64>() * 3; // forward + two backward products
    let mut times = Vec::new();
    for i in 0..steps + 1 {
        adam.set_step(model.ex_mut(), i as u64 + 1, 1e-4)?;
        let t = Instant::now();
        model.ex_mut().train_step("train_step", total, |cx, l| adam.record(cx, l))?;
        // the loss readback waits for the device: the step is complete when it returns
        let loss = model.ex().get(total)?[0];
        anyhow::ensure!(loss.is_finite(), "benchmark step produced a non-finite loss");
        if i > 0 {
            times.push(t.elapsed().as_secs_f64()); // step 0 records pipelines and warms caches
        } else if profile {
            crate::exec::profile_start();
        }
    }
    if profile {
        // one JSON line per op: seconds per step, slowest first
        for (op, fwd, bwd, calls) in crate::exec::profile_take() {
            let per = |t: f64| t / steps as f64;
            println!("{}", json!({"bench": "step_profile", "op": op, "forward_s": per(fwd), "backward_s": per(bwd), "calls_per_step": calls / steps.max(1)}));
        }
    }
    let med = median(&mut times);
    let rec = json!({
        "bench": "step", "device": device.name(), "batch": batch, "steps": steps,
        "median_s": med, "min_s": times.iter().cloned().fold(f64::MAX, f64::min),
        "gflop_per_step": flops as f64 / 1e9, "gflops": flops as f64 / 1e9 / med,
        "peak_rss_mib": peak_rss_bytes().map(|b| b as f64 / 1048576.0),
        "model": model.config().name(),
        "device_buffers_mib": model.ex().allocated_bytes() as f64 / 1048576.0,
        "dispatches_per_step": if matches!(device, Device::Gpu(_)) { Some(model.ex().dispatch_count("train_step")) } else { None },
        "threads": rayon::current_num_threads(),
    });
    println!("{rec}");
    Ok(med)
}

/// min and median of `reps` timings of `f`, in milliseconds.
fn time_ms(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let min = t.iter().cloned().fold(f64::MAX, f64::min);
    (min, median(&mut t))
}

/// What the spectral init costs, on `batch` scenes of the run config's data (default: the
/// default run's): per scene on one thread, the affinity, the K smallest nontrivial eigenpairs
/// with the full decomposition and with Lanczos, and a whole segmentation with each; then the
/// batch segmented in parallel as training does it, and that time against one training step of
/// the same config and batch. Training segments each scene once (the features are frozen) and
/// caches it, so per step the init is only the segment means inside the step's graph.
pub fn bench_spectral(kind: DeviceKind, steps: usize, batch: usize, config: Option<&std::path::Path>) -> Result<()> {
    use crate::spectral::{normalized_affinity, segment, smallest_nontrivial, Solver};
    use crate::train::spectral_init::{segment_scenes, spectral_config, spectral_tokens};
    let run = bench_data(config, batch)?;
    let (tc, data) = (&run.config, &run.data);
    let (n, k, cfg) = (data.tokens(), tc.num_slots, spectral_config(tc));
    let m = k.min(n - 1);
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut rows: Vec<[(f64, f64); 5]> = Vec::new();
    single.install(|| -> Result<()> {
        for s in 0..batch {
            let (tokens, f) = spectral_tokens(data, s)?;
            let aff = normalized_affinity(&tokens, n, f, data.grid, &cfg);
            let with = |solver| crate::spectral::SpectralConfig { solver, ..cfg.clone() };
            let (full, lanczos) = (with(Solver::Full), with(Solver::Lanczos));
            rows.push([
                time_ms(3, || drop(normalized_affinity(&tokens, n, f, data.grid, &cfg))),
                time_ms(3, || drop(smallest_nontrivial(&aff, m, Solver::Full, cfg.seed))),
                time_ms(3, || drop(smallest_nontrivial(&aff, m, Solver::Lanczos, cfg.seed))),
                time_ms(3, || drop(segment(&tokens, n, f, data.grid, k, &full))),
                time_ms(3, || drop(segment(&tokens, n, f, data.grid, k, &lanczos))),
            ]);
        }
        Ok(())
    })?;
    let names = ["affinity", "eigs_full", "eigs_lanczos", "segment_full", "segment_lanczos"];
    let scenes: Vec<usize> = (0..batch).collect();
    let (_, batch_ms) = time_ms(3, || drop(segment_scenes(data, &scenes, k, &cfg)));
    let mut rec = serde_json::Map::new();
    rec.insert("bench".into(), json!("spectral"));
    rec.insert("tokens".into(), json!(n));
    rec.insert("feat_dim".into(), json!(data.feat_dim));
    rec.insert("eigenpairs".into(), json!(m));
    rec.insert("scenes".into(), json!(batch));
    for (i, name) in names.iter().enumerate() {
        // per scene: the min over repeats, then min and median over scenes
        let mut per: Vec<f64> = rows.iter().map(|r| r[i].0).collect();
        rec.insert(format!("{name}_ms_min"), json!(per.iter().cloned().fold(f64::MAX, f64::min)));
        rec.insert(format!("{name}_ms_median"), json!(median(&mut per)));
    }
    rec.insert("batch_segment_ms".into(), json!(batch_ms));
    rec.insert("batch_segment_ms_per_scene".into(), json!(batch_ms / batch as f64));
    rec.insert("threads".into(), json!(rayon::current_num_threads()));
    if steps > 0 {
        // the step of the same run's model on the same scenes
        let step_s = bench_step(kind, steps, batch, false, Some(&run))?;
        rec.insert("step_s".into(), json!(step_s));
        // uncached (every step segmenting its batch) against cached (once per scene per run)
        rec.insert("segment_share_of_step_uncached".into(), json!(batch_ms / 1e3 / (step_s + batch_ms / 1e3)));
    }
    println!("{}", serde_json::Value::Object(rec));
    Ok(())
}
