//! Helpers of the application's tests: reading a run's metrics and checking its outputs.
//! The op harness (`check_op`) is the engine's: `slotforge_engine::testing`.
#![allow(dead_code)]

pub use slotforge_engine::testing::*;

/// The `type` = `kind` records ("step", "epoch") of a run's metrics.jsonl.
pub fn metrics_of(out: &std::path::Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == kind)
        .collect()
}

/// The logged reconstruction loss per step, asserting every logged term finite and >= 0.
pub fn recon_curve(out: &std::path::Path) -> Vec<f64> {
    metrics_of(out, "step")
        .iter()
        .map(|r| {
            for term in ["recon", "diversity", "total"] {
                let v = r[term].as_f64().unwrap();
                assert!(v.is_finite() && v >= 0.0, "{term} = {v}");
            }
            r["recon"].as_f64().unwrap()
        })
        .collect()
}

/// A finished run's directory holds its config, the last and best models, the checkpoint the
/// `last` pointer names (model and optimizer state), the PNGs and the report.
pub fn assert_run_outputs(out: &std::path::Path) {
    for f in ["config.toml", "model.safetensors", "best.safetensors", "loss.png", "scores.png", "masks.png", "report.html"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let last = std::fs::read_to_string(out.join("last")).unwrap();
    for f in ["model.safetensors", "optimizer.safetensors"] {
        assert!(out.join(last.trim()).join(f).is_file(), "{f} missing from the last checkpoint {last}");
    }
}

/// A CPU run and the same run on the GPU, from their output directories: both logged `steps`
/// steps, the CPU loss fell (mean of the last 4 steps below `fall` times the first 4), and the
/// two recon curves agree within 1e-5 relative at every step. Same data, noise and init, so
/// the curves differ by float32 summation order only (measured <= 1.1e-7 relative over 24
/// steps); 1e-5 leaves room for Adam amplifying that on other drivers and is far below any
/// real bug.
pub fn assert_learns_and_backends_agree(cpu_out: &std::path::Path, gpu_out: &std::path::Path, steps: usize, fall: f64) {
    let cpu = recon_curve(cpu_out);
    let gpu = recon_curve(gpu_out);
    assert_eq!(cpu.len(), steps);
    assert_eq!(gpu.len(), steps);
    let head: f64 = cpu[..4].iter().sum::<f64>() / 4.0;
    let tail: f64 = cpu[steps - 4..].iter().sum::<f64>() / 4.0;
    println!("recon: first steps {head:.4}, last steps {tail:.4}");
    assert!(tail < fall * head, "loss did not fall: {head} -> {tail}");
    let mut worst = 0f64;
    for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        let rel = (c - g).abs() / c.abs().max(1e-6);
        worst = worst.max(rel);
        assert!(rel < 1e-5, "step {i}: cpu recon {c} vs gpu {g}");
    }
    println!("ERR train cpu_vs_gpu worst relative recon difference {worst:.2e} over {steps} steps");
}
