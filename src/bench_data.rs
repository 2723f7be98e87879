//! `slotforge bench data`: training from a dataset on disk against a copy of part of it held
//! in memory, back to back, each in its own process (so each has its own peak memory): the
//! in-memory copy; the disk set with the segmentation cache cold (time to the first step
//! includes segmenting every scene); the disk set with the cache warm and the page cache
//! emptied of the data (cold reads); the same again with the page cache warm. One JSON line
//! each, then a table.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Ask the kernel to drop the page cache of every file under `dir` (posix_fadvise
/// DONTNEED): the next reads come from the disk.
fn drop_page_cache(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_file() {
            let f = std::fs::File::open(&p)?;
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd;
                // SAFETY: a valid open descriptor; the call only advises the kernel
                unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            }
            drop(f);
            n += 1;
        }
    }
    Ok(n)
}

struct Outcome {
    first_step_s: f64,
    median_step_s: f64,
    steps: usize,
    peak_rss_mib: f64,
}

fn train(config: Option<&Path>, data: &Path, steps: usize, batch: usize, extra: &[String], out: &Path) -> Result<Outcome> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("train");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("--data").arg(data).arg("--out").arg(out).arg("--overwrite").args(["--device", "cpu", "--log-every", "1", "--time-limit-minutes", "0"]);
    cmd.args(["--steps", &steps.to_string(), "--batch-size", &batch.to_string()]);
    // checkpoints at the end only: the benchmark times reading and stepping
    cmd.args(["--set", &format!("checkpoint-every={}", steps + 1)]);
    cmd.args(extra);
    eprintln!("bench data: slotforge train {}", cmd.get_args().skip(1).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    let o = cmd.output()?;
    if !o.status.success() {
        bail!("the training run failed:\n{}", String::from_utf8_lossy(&o.stderr));
    }
    let summary: serde_json::Value = serde_json::from_slice(o.stdout.split(|&b| b == b'\n').rfind(|l| !l.is_empty()).unwrap_or(b"{}"))
        .context("reading the run's summary")?;
    let log = std::fs::read_to_string(out.join("metrics.jsonl"))?;
    let secs: Vec<f64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "step")
        .filter_map(|v| v["seconds"].as_f64())
        .collect();
    // the first two steps warm up (allocation, the loader's first reads)
    let diffs: Vec<f64> = secs.windows(2).skip(2).map(|w| w[1] - w[0]).collect();
    Ok(Outcome {
        first_step_s: summary["first_step_seconds"].as_f64().unwrap_or(f64::NAN),
        median_step_s: median(diffs),
        steps: summary["steps"].as_u64().unwrap_or(0) as usize,
        peak_rss_mib: summary["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
    })
}

pub fn run(config: Option<&Path>, data: &Path, steps: usize, batch: usize, memory_scenes: usize, reps: usize) -> Result<()> {
    let ds = crate::data::Dataset::load(data)?;
    let tmp = std::env::temp_dir().join(format!("slotforge-bench-data-{}", std::process::id()));
    let tc = match config {
        Some(p) => crate::train::config::TrainConfig::from_file(p)?,
        None => crate::train::config::TrainConfig::default(),
    };
    let val = tc.val_count_for(ds.count);
    let percent = 100.0 * memory_scenes as f64 / (ds.count - val) as f64;
    eprintln!("bench data: {} ({}), {} GB of features", data.display(), ds.describe(), ds.feature_bytes() as f64 / 1e9);
    let mem_args = vec!["--in-memory".to_string(), "--subset-percent".to_string(), format!("{percent:.6}")];
    let cache = data.join(".slotforge-cache");
    // every training scene of the set (a config's subset-percent would segment a part)
    let disk_args = vec!["--subset-percent".to_string(), "100".to_string()];
    let mut rows = Vec::new();
    let mut record = |name: &str, o: Outcome| {
        let line = json!({"bench": "data", "run": name, "first_step_s": o.first_step_s, "median_step_s": o.median_step_s, "steps": o.steps, "peak_rss_mib": o.peak_rss_mib});
        println!("{line}");
        rows.push((name.to_string(), o));
    };
    record("memory copy", train(config, data, steps, batch, &mem_args, &tmp.join("mem"))?);
    let _ = std::fs::remove_dir_all(&cache);
    drop_page_cache(data)?;
    record("disk, segmentation cache cold", train(config, data, steps, batch, &disk_args, &tmp.join("cold"))?);
    drop_page_cache(data)?;
    record("disk, page cache cold", train(config, data, steps, batch, &disk_args, &tmp.join("pc-cold"))?);
    record("disk, page cache warm", train(config, data, steps, batch, &disk_args, &tmp.join("warm"))?);
    // step times move by 10-20% between runs here (other tenants of the host): alternate the
    // two and compare medians of runs, not one run each
    for rep in 2..=reps {
        record(&format!("memory copy ({rep})"), train(config, data, steps, batch, &mem_args, &tmp.join("mem"))?);
        record(&format!("disk, page cache warm ({rep})"), train(config, data, steps, batch, &disk_args, &tmp.join("warm"))?);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let med = |prefix: &str, f: fn(&Outcome) -> f64| median(rows.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, o)| f(o)).collect());
    let (m_step, d_step) = (med("memory copy", |o| o.median_step_s), med("disk, page cache warm", |o| o.median_step_s));
    let (m_rss, d_rss) = (med("memory copy", |o| o.peak_rss_mib), med("disk, page cache warm", |o| o.peak_rss_mib));
    println!(
        "{}",
        json!({"bench": "data", "summary": true, "runs_each": reps, "memory_median_step_s": m_step, "disk_warm_median_step_s": d_step,
               "step_ratio": d_step / m_step, "memory_peak_rss_mib": m_rss, "disk_peak_rss_mib": d_rss})
    );
    let mem = &rows[0].1;
    println!("\nwarm disk against memory, median of {reps} runs each: step {d_step:.3} s against {m_step:.3} s ({:+.1}%), peak RSS {d_rss:.0} MiB against {m_rss:.0} MiB", 100.0 * (d_step / m_step - 1.0));
    println!("\n| run | time to first step | median step | peak RSS | step vs memory | RSS vs memory |");
    println!("|---|---|---|---|---|---|");
    for (name, o) in &rows {
        println!(
            "| {name} | {:.1} s | {:.3} s | {:.0} MiB | {:+.1}% | {:+.0} MiB |",
            o.first_step_s,
            o.median_step_s,
            o.peak_rss_mib,
            100.0 * (o.median_step_s / mem.median_step_s - 1.0),
            o.peak_rss_mib - mem.peak_rss_mib
        );
    }
    Ok(())
}
