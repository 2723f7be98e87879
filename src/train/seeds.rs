//! `train --seeds N`: one recipe, N seeds, in one process. The data and its segmentation are
//! made once and shared (every seed trains on the same scenes: the data seed stays the first
//! seed's); each seed is a run directory `OUT/seed-S`. A seed counts as failed when its last
//! validation shows collapse (fewer than 1.5 active slots, or masks overlapping more than
//! `collapse-overlap`). Among the others the one with the lowest validation reconstruction
//! error is kept as `OUT/best.safetensors`: a criterion that needs no labels. `OUT/seeds.json`
//! holds every seed's last measures with their mean and spread.

use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

use super::config::TrainConfig;
use super::records::EvalRecord;
use super::run::{Prepared, Summary, Trainer};
use crate::backend::open_device;

#[derive(Serialize)]
struct SeedResult {
    seed: u64,
    out: String,
    failed: bool,
    last: Option<EvalRecord>,
    steps: usize,
    seconds: f64,
}

#[derive(Serialize)]
struct Spread {
    mean: f64,
    std: f64,
    min: f64,
    max: f64,
}

fn spread(v: &[f64]) -> Option<Spread> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    Some(Spread { mean, std, min: v.iter().copied().fold(f64::INFINITY, f64::min), max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max) })
}

pub fn run(cfg: TrainConfig, seeds: usize) -> Result<Vec<Summary>> {
    anyhow::ensure!(seeds >= 1, "--seeds must be >= 1");
    anyhow::ensure!(cfg.resume.is_none(), "--seeds starts new runs; resume each seed's run directory on its own");
    super::rundir::RunDir::check_new(&cfg.out, cfg.overwrite)?;
    let (device, why) = open_device(cfg.device)?;
    eprintln!("device: {} ({why})", device.name());
    let base = TrainConfig { data_seed: Some(cfg.data_seed()), ..cfg.clone() };
    let seed_cfg = |i: usize| TrainConfig { seed: cfg.seed + i as u64, out: cfg.out.join(format!("seed-{}", cfg.seed + i as u64)), ..base.clone() };
    let data = Prepared::new(&seed_cfg(0))?;
    std::fs::create_dir_all(&cfg.out)?;
    let (mut results, mut summaries) = (Vec::new(), Vec::new());
    for i in 0..seeds {
        let c = seed_cfg(i);
        eprintln!("== seed {} ({}/{seeds}) -> {}", c.seed, i + 1, c.out.display());
        let prepared = Prepared { train: data.train.clone(), val: data.val.clone(), mcfg: data.mcfg.clone(), segments: data.segments.clone(), val_segments: data.val_segments.clone() };
        let s = match Trainer::with_data(c.clone(), device.clone(), prepared, Instant::now()).and_then(|t| t.run()) {
            Ok(s) => s,
            Err(e) if e.downcast_ref::<super::signals::Interrupted>().is_some() => return Err(e),
            Err(e) => {
                // a guard or a write failure ends this seed, not the others
                eprintln!("seed {}: FAILED: {e:#}", c.seed);
                results.push(SeedResult { seed: c.seed, out: c.out.display().to_string(), failed: true, last: None, steps: 0, seconds: 0.0 });
                continue;
            }
        };
        let failed = s.last.as_ref().is_none_or(|e| e.active_slots < 1.5 || e.mask_overlap > c.collapse_overlap as f64);
        if failed {
            eprintln!("seed {}: FAILED (collapse: {:?} active slots, mask overlap {:?})", c.seed, s.last.as_ref().map(|e| e.active_slots), s.last.as_ref().map(|e| e.mask_overlap));
        }
        results.push(SeedResult { seed: c.seed, out: c.out.display().to_string(), failed, last: s.last.clone(), steps: s.steps, seconds: s.seconds });
        summaries.push(s);
    }
    let ok: Vec<&SeedResult> = results.iter().filter(|r| !r.failed).collect();
    let Some(best) = ok.iter().filter(|r| r.last.is_some()).min_by(|a, b| a.last.as_ref().unwrap().recon.total_cmp(&b.last.as_ref().unwrap().recon)) else {
        bail!("every seed failed (collapsed); see {}", cfg.out.join("seeds.json").display());
    };
    let link = cfg.out.join("best.safetensors");
    let _ = std::fs::remove_file(&link);
    std::fs::copy(std::path::Path::new(&best.out).join("best.safetensors"), &link)?;
    let field = |f: fn(&EvalRecord) -> Option<f64>| spread(&results.iter().filter_map(|r| f(r.last.as_ref()?)).collect::<Vec<_>>());
    let report = serde_json::json!({
        "seeds": results,
        "failed": results.iter().filter(|r| r.failed).map(|r| r.seed).collect::<Vec<_>>(),
        "kept": {"seed": best.seed, "by": "lowest validation reconstruction error among the seeds that did not collapse", "file": link.display().to_string()},
        "token_fg_ari": field(|e| e.token_fg_ari),
        "fg_ari": field(|e| e.fg_ari),
        "mbo": field(|e| e.mbo),
        "attn_token_fg_ari": field(|e| e.attn_token_fg_ari),
        "recon": field(|e| Some(e.recon)),
        "active_slots": field(|e| Some(e.active_slots)),
    });
    crate::checkpoint::write_atomic(&cfg.out.join("seeds.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    let f = |s: &Option<Spread>| s.as_ref().map_or("n/a".to_string(), |s| format!("{:.3} ± {:.3} ({:.3}..{:.3})", s.mean, s.std, s.min, s.max));
    eprintln!(
        "{seeds} seeds: token FG-ARI {}, FG-ARI {}, recon {}; failed {:?}; kept seed {} ({})",
        f(&field(|e| e.token_fg_ari)),
        f(&field(|e| e.fg_ari)),
        f(&field(|e| Some(e.recon))),
        report["failed"],
        best.seed,
        link.display()
    );
    Ok(summaries)
}
