//! What a run will need in memory, checked before it starts, and the process's own figures.
//!
//! The estimate counts what the executor allocates (every variable, its gradient where it has
//! one, the values kept for the backward pass, the optimizer's two moments), the data held in
//! memory (generated scenes, image folders, `in-memory`), the batches the loader reads ahead,
//! the segmentation and the validation's predictions. The limit is the smallest of the
//! address-space limit (`ulimit -v`, less what the process already maps), the cgroup's memory
//! limit and the memory the kernel reports available. A run that does not fit is refused with
//! both numbers before anything is written.

use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Result};

use super::config::TrainConfig;
use crate::data::Dataset;
use crate::model::AnyConfig;

static START: OnceLock<Instant> = OnceLock::new();

/// Mark the start of the process (the CLI calls it first thing).
pub fn mark_start() {
    START.get_or_init(Instant::now);
}

/// Seconds since [`mark_start`] (or since the first call).
pub fn process_seconds() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn status_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident memory of this process in MiB (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    status_kib("VmHWM:").map(|k| k as f64 / 1024.0)
}

/// Bytes the executor allocates for `mcfg` at batch `b`, with Adam's moments.
pub fn model_bytes(mcfg: &AnyConfig, b: usize) -> u64 {
    let g = match mcfg {
        AnyConfig::Feature(c) => crate::model::feature::build(c, b, false).0,
        AnyConfig::Pixel(c) => crate::model::pixel::build(c, b).0,
    };
    let vals: u64 = g.vars().map(|(_, v)| v.len() as u64 * (1 + v.needs_grad as u64)).sum();
    let saved: u64 = g.nodes().iter().map(|n| n.op().saved_len() as u64).sum();
    let params: u64 = g.params().iter().map(|&p| g.len(p) as u64).sum();
    let seed = g.vars().map(|(_, v)| v.len() as u64).max().unwrap_or(0);
    4 * (vals + saved + 2 * params + seed)
}

/// Bytes `scenes` scenes like `d`'s take as float32 features, images and masks in memory.
pub fn scene_bytes(d: &Dataset, scenes: usize) -> u64 {
    scenes as u64 * ((d.scene_len() * 4 + d.image_hw.0 * d.image_hw.1 * 3 + d.mask_hw.0 * d.mask_hw.1) as u64)
}

/// Bytes the data of a run needs beside what it already holds (`extra`: what is about to be
/// generated or read into memory): the loader's read-ahead, the segmentation records and the
/// validation's predictions.
fn data_bytes(cfg: &TrainConfig, mcfg: &AnyConfig, like: &Dataset, scenes: usize, val_scenes: usize) -> u64 {
    let per_scene = (like.scene_len().max(like.tokens() * 3) * 4) as u64;
    let read_ahead = 4 * cfg.batch_size as u64 * per_scene;
    let segments = if cfg.use_spectral { scenes as u64 * (2 * like.tokens() as u64 + 128) } else { 0 };
    let predictions = 2 * val_scenes as u64 * (mcfg.num_slots() * like.tokens()) as u64 * 4;
    read_ahead + segments + predictions
}

/// The memory new allocations can use, and what limits it.
pub fn available() -> Option<(u64, String)> {
    let mut limits: Vec<(u64, String)> = Vec::new();
    #[cfg(unix)]
    {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct it is given
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) } == 0 && r.rlim_cur != libc::RLIM_INFINITY {
            let used = status_kib("VmSize:").unwrap_or(0) * 1024;
            limits.push(((r.rlim_cur as u64).saturating_sub(used), format!("the address-space limit (ulimit -v) of {}", gib(r.rlim_cur as u64))));
        }
    }
    let cg = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok().and_then(|s| s.trim().parse::<u64>().ok());
    if let (Some(max), Some(cur)) = (cg("memory.max"), cg("memory.current")) {
        limits.push((max.saturating_sub(cur), format!("the cgroup's memory limit of {}", gib(max))));
    }
    if let Some(avail) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("MemAvailable:"))?.split_whitespace().nth(1)?.parse::<u64>().ok())
    {
        limits.push((avail * 1024, "the memory available (MemAvailable)".into()));
    }
    limits.into_iter().min_by_key(|(b, _)| *b)
}

pub fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Refuse a run whose estimate exceeds what the process can allocate. `like` is a dataset of
/// the run's shapes, `scenes` and `val_scenes` the run's counts, `extra` bytes about to be
/// allocated for data (scenes to generate, `in-memory` copies); what the process holds
/// already is counted by the limit itself.
pub fn check(cfg: &TrainConfig, mcfg: &AnyConfig, like: &Dataset, scenes: usize, val_scenes: usize, extra: u64) -> Result<()> {
    let model = model_bytes(mcfg, cfg.batch_size);
    let data = data_bytes(cfg, mcfg, like, scenes, val_scenes) + extra;
    // the CPU kernels' scratch, the allocator's slack, the libraries: a quarter more
    let need = (model + data) + (model + data) / 4;
    if let Some((avail, what)) = available() {
        if need > avail {
            bail!(
                "this run needs about {} (model and optimizer at batch {}: {}, data: {}) but only {} can be allocated, \
                 limited by {what}: lower --batch-size, num-slots or the data held in memory, or free memory",
                gib(need),
                cfg.batch_size,
                gib(model),
                gib(data),
                gib(avail)
            );
        }
    }
    Ok(())
}
