//! `slotforge bench kernels`: every kernel family, forward and backward, at the sizes of the
//! reference feature model, next to the device's own ceilings measured by built-in peak
//! kernels (FMA rate and copy bandwidth). One JSON line per result on stdout, a table on stderr.
//!
//! Each case is a one-op graph in an [`Executor`]. "forward" is the executor's forward
//! program; "backward" is only the op's backward with a fixed upstream gradient: no
//! gradient clearing and no seed upload (those belong to the executor, not the kernel).
//! Gradients accumulate across repetitions, which does not change the work.
//! On wgpu every repetition is one submission of the recorded program, timed with timestamp
//! queries around each compute pass when the adapter has TIMESTAMP_QUERY, else by wall time
//! around submit + wait. Rates use the median time; the ceilings use their fastest run (other
//! load on the machine only slows runs down; each line records the load average).
//! CPU-emulated adapters (lavapipe, ~1 GFLOP/s) get smaller shapes, said in each line's `note`.
//!
//! Bytes are the compulsory traffic: forward reads every input and writes the output once;
//! backward reads gy and the inputs and reads + writes every gradient it accumulates. On the
//! CPU a memory-bound kernel can pass 100% of the copy ceiling: its tensors may stay in the
//! last-level cache between repetitions, and a copy's write-allocate reads are not counted.

use std::time::Instant;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::backend::Gpu;
use crate::backend::{open_device, Buf, Ctx, Device, DeviceKind};
use crate::exec::{self, Executor, Layout};
use crate::graph::{Graph, Var, VarKind};
use crate::model::ModelConfig;
use crate::ops::matmul::GemmKernel;
use crate::ops::optim::{Adam, AdamConfig};
use slotforge_engine::bench::{Bound, Case};

use super::timing::{cpu_peaks, gpu_peaks, loadavg, record_and_time, repeat, time_program, Peaks, CPU_BUDGET_S};

// ---------------------------------------------------------------------------------------
// sizes

/// The model sizes the cases are built from.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub batch: usize,
    /// tokens N, features F, slot dim D, slots K, slot MLP hidden, decoder hidden
    pub n: usize,
    pub f: usize,
    pub d: usize,
    pub k: usize,
    pub mlp: usize,
    pub dec: usize,
    pub dec_layers: usize,
    /// conv2d (not in the feature model): x [conv_batch, conv_hw, conv_hw, conv_c], 5x5, pad 2
    pub conv_batch: usize,
    pub conv_hw: usize,
    pub conv_c: usize,
}

impl Dims {
    /// The reference-scale feature model of `bench step`, batch 16.
    pub fn reference() -> Dims {
        let c = super::reference_config();
        Dims {
            batch: 16,
            n: c.n_tokens,
            f: c.feat_dim,
            d: c.slot_dim,
            k: c.num_slots,
            mlp: c.mlp_hidden,
            dec: c.dec_hidden,
            dec_layers: c.dec_layers,
            // one 64-channel 5x5 layer of the Slot Attention paper's CNN encoder at 64x64
            conv_batch: 8,
            conv_hw: 64,
            conv_c: 64,
        }
    }

    /// For CPU-emulated adapters: batch 1 and a quarter of the tokens (F, D, K, hidden sizes kept).
    pub fn small() -> Dims {
        Dims { batch: 1, n: 64, conv_batch: 1, conv_hw: 16, conv_c: 32, ..Dims::reference() }
    }

    pub fn describe(&self) -> String {
        format!(
            "batch {} N {} F {} D {} K {} mlp {} dec {}x{}",
            self.batch, self.n, self.f, self.d, self.k, self.mlp, self.dec_layers, self.dec
        )
    }

    fn model_config(&self) -> ModelConfig {
        ModelConfig { n_tokens: self.n, ..super::reference_config() }
    }
}

// ---------------------------------------------------------------------------------------
// cases: each op's case is declared in its folder (`bench_case`), placed here at its sites

/// Every kernel family at the shapes the feature model runs it at, in model order.
pub fn cases(d: &Dims) -> Vec<Case> {
    use crate::ops::{attn_renorm, conv, cosine, elementwise, gru, layernorm, linear, matmul, mixture, reduce, softmax};
    let Dims { batch: b, n, f, d: sd, k, mlp, dec, .. } = *d;
    let rows = b * n; // token rows
    let srows = b * k; // slot rows
    let prows = b * k * n; // decoder rows: every (slot, position) pair
    vec![
        // encoder (the features need no gradient)
        layernorm::bench_case(rows, f, false).at("encoder_norm"),
        linear::bench_case(rows, f, sd, true, true, false).at("encoder.layers.0"),
        linear::bench_case(rows, sd, sd, true, false, true).at("encoder.layers.1"),
        layernorm::bench_case(rows, sd, true).at("slot_attention.norm_inputs"),
        // Slot Attention iteration
        matmul::bench_case(("k", [b, n, sd]), ("q", [b, k, sd]), false, true).at("attn logits k q^T"),
        softmax::bench_case([b, n, k], 2).at("attn over slots"),
        attn_renorm::bench_case(b, n, k).at("attn weighted mean"),
        matmul::bench_case(("w", [b, n, k]), ("v", [b, n, sd]), true, false).at("updates w^T v"),
        linear::bench_case(srows, sd, 3 * sd, true, false, true).at("gru.weight_ih"),
        gru::bench_case(srows, sd).at("gru cell"),
        layernorm::bench_case(srows, sd, true).at("slot_attention.norm_mlp"),
        linear::bench_case(srows, sd, mlp, true, true, true).at("slot mlp.layers.0"),
        linear::bench_case(srows, mlp, sd, true, false, true).at("slot mlp.layers.1"),
        // decoder
        elementwise::bench_add(("per_slot", [b, k, 1, dec]), ("per_pos", [1, 1, n, dec])).at("decoder slot + pos (broadcast)"),
        elementwise::bench_relu([b, k, n, dec]).at("decoder.layers.0 relu"),
        linear::bench_case(prows, dec, dec, true, true, true).at("decoder.layers.1/2"),
        // the last layer as the model runs it (model::feature): one alpha-logit row per pair,
        // softmax over slots, the hidden layer mixed by alpha, then the F value rows per position
        linear::bench_case(prows, dec, 1, true, false, true).at("decoder.layers.3 alpha logit"),
        mixture::bench_alpha_softmax(b, k, n).at("decoder masks"),
        mixture::bench_mix_slots(b, k, n, dec).at("decoder mixture"),
        linear::bench_case(rows, dec, f, true, false, true).at("decoder.layers.3 values"),
        // losses
        reduce::bench_mse([b, n, f]).at("reconstruction loss"),
        reduce::bench_sum([b, n, f]).at("reduce (mean/sum)"),
        cosine::bench_case(b, k, sd).at("diversity loss"),
        // not in the feature model: one layer of the image model's CNN encoder
        conv::bench_case(d.conv_batch, d.conv_hw, d.conv_c, 5).at("image encoder 5x5 (not in feature model)"),
    ]
}

// ---------------------------------------------------------------------------------------
// one case, ready to run

/// A case's executor with every input, parameter and the upstream gradient filled.
pub struct Prepared {
    pub ex: Executor,
    pub out: Var,
}

impl Prepared {
    pub fn new(case: &Case, device: &Device, kernel: GemmKernel) -> Result<Prepared> {
        let mut g = Graph::new();
        let out = (case.build)(&mut g, kernel);
        g.check()?;
        anyhow::ensure!(g.nodes().len() == 1, "bench case {} must be one op", case.site);
        if let Device::Gpu(gpu) = device {
            check_fits(&g, gpu)?;
        }
        let mut ex = Executor::new(g, device.clone())?;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let lo = if case.positive { 0.05 } else { -1.0 };
        let inputs: Vec<(Var, usize)> =
            ex.graph().vars().filter(|(_, i)| matches!(i.kind, VarKind::Input | VarKind::Param)).map(|(v, i)| (v, i.len())).collect();
        for (v, len) in inputs {
            let data: Vec<f32> = (0..len).map(|_| rng.random_range(lo..1.0)).collect();
            ex.set(v, &data)?;
        }
        if let Some(gy) = ex.layout().grad(out) {
            let data: Vec<f32> = (0..gy.len).map(|_| rng.random_range(-1.0..1.0)).collect();
            ex.write(gy, &data)?;
        }
        Ok(Prepared { ex, out })
    }

    /// Run the forward program (on wgpu: submit it, without waiting).
    pub fn forward(&mut self) -> Result<()> {
        Ok(self.ex.run("forward", exec::forward)?)
    }

    /// Run the op's backward only (on wgpu: submit it, without waiting).
    pub fn backward(&mut self) -> Result<()> {
        Ok(self.ex.run("op_backward", op_backward)?)
    }
}

/// The backward of the graph's one node from the upstream gradient already in its grad buffer.
fn op_backward(cx: &mut Ctx, g: &Graph, l: &Layout) {
    let node = &g.nodes()[0];
    let x: Vec<Buf> = node.inputs().iter().map(|&v| l.value(v)).collect();
    let gx: Vec<Option<Buf>> = node.inputs().iter().map(|&v| l.grad(v)).collect();
    let Some(gy) = l.grad(node.output()) else { return };
    node.op().backward(cx, &x, l.value(node.output()), l.saved(0), gy, &gx);
}

fn check_fits(g: &Graph, gpu: &Gpu) -> Result<()> {
    let max = gpu.limits().max_storage_buffer_binding_size.min(gpu.limits().max_buffer_size);
    let saved = g.nodes().iter().map(|n| n.op().saved_len()).max().unwrap_or(0);
    let biggest = g.vars().map(|(_, v)| v.len()).max().unwrap_or(0).max(saved);
    anyhow::ensure!(
        (biggest * 4) as u64 <= max,
        "a buffer of {} MiB exceeds the adapter's binding limit of {} MiB",
        (biggest * 4) >> 20,
        max >> 20
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// the benchmark

struct Row {
    op: String,
    site: String,
    direction: &'static str,
    kernel: &'static str,
    ms: f64,
    rate: f64,
    unit: &'static str,
    share: f64,
}

pub fn run(kind: DeviceKind) -> Result<()> {
    let (device, why) = open_device(kind)?;
    let name = device.name();
    eprintln!("device: {name} ({why})");
    let (dims, note) = match &device {
        Device::Gpu(g) if g.is_cpu_emulated() => {
            let d = Dims::small();
            (d, Some(format!("CPU-emulated adapter: shapes scaled down to {} (reference: {})", d.describe(), Dims::reference().describe())))
        }
        _ => (Dims::reference(), None),
    };
    eprintln!("sizes: {}", dims.describe());
    let peaks = match &device {
        Device::Cpu => cpu_peaks(&name)?,
        Device::Gpu(g) => gpu_peaks(g, &name)?,
    };
    eprintln!("ceilings: FMA {:.1} GFLOP/s, copy {:.1} GB/s (load average {:?})", peaks.gflops, peaks.gbs, loadavg());

    let mut rows = Vec::new();
    for case in cases(&dims) {
        let kernels: Vec<(GemmKernel, &'static str)> = match (&device, case.gemm) {
            (Device::Gpu(_), true) => vec![(GemmKernel::Registers, "registers"), (GemmKernel::SharedTiles, "shared_tiles")],
            (Device::Gpu(_), false) => vec![(GemmKernel::Auto, "wgsl")],
            (Device::Cpu, true) => vec![(GemmKernel::Auto, "gemm crate")],
            (Device::Cpu, false) => vec![(GemmKernel::Auto, "native")],
        };
        for (kernel, kname) in kernels {
            bench_case(&case, &device, kernel, kname, &peaks, note.as_deref(), &mut rows)?;
        }
    }
    bench_adam(&dims, &device, &peaks, note.as_deref(), &mut rows)?;

    eprintln!("\n{:<22} {:<40} {:<9} {:<13} {:>10} {:>14} {:>8}", "op", "site", "dir", "kernel", "ms", "rate", "ceiling");
    for r in &rows {
        eprintln!(
            "{:<22} {:<40} {:<9} {:<13} {:>10.3} {:>9.2} {:<4} {:>7.1}%",
            r.op, r.site, r.direction, r.kernel, r.ms, r.rate, r.unit, 100.0 * r.share
        );
    }
    Ok(())
}

fn bench_case(case: &Case, device: &Device, kernel: GemmKernel, kname: &'static str, peaks: &Peaks, note: Option<&str>, rows: &mut Vec<Row>) -> Result<()> {
    let base = json!({
        "bench": "kernel", "device": device.name(), "op": case.op, "site": case.site,
        "shape": case.shape, "kernel": kname, "note": note,
    });
    let mut prep = match Prepared::new(case, device, kernel) {
        Ok(p) => p,
        Err(e) => {
            println!("{}", merge(&base, json!({"skipped": format!("{e:#}")})));
            return Ok(());
        }
    };
    let g = prep.ex.graph();
    let node = &g.nodes()[0];
    let fwd_flops = node.op().flops() as f64;
    // each GEMM operand's gradient is one product of the forward's size
    let gemm_grads = node.inputs().iter().take(2).filter(|&&v| g.info(v).needs_grad).count() as f64;
    let bwd_flops = fwd_flops * gemm_grads;
    let (fwd_floats, bwd_floats) = case.traffic.unwrap_or_else(|| {
        // compulsory traffic: forward reads every input and writes the output once; backward
        // reads gy and the inputs and read-modify-writes every gradient it accumulates
        let ins: usize = node.inputs().iter().map(|&v| g.len(v)).sum();
        let grads: usize = node.inputs().iter().filter(|&&v| g.info(v).needs_grad).map(|&v| g.len(v)).sum();
        let out = g.len(node.output());
        (ins + out, out + ins + 2 * grads)
    });
    for (direction, flops, floats) in [("forward", fwd_flops, fwd_floats), ("backward", bwd_flops, bwd_floats)] {
        let t = if direction == "forward" {
            time_program(&mut prep.ex, "forward", exec::forward)?
        } else {
            time_program(&mut prep.ex, "op_backward", op_backward)?
        };
        let bytes = floats as f64 * 4.0;
        let gflops = flops / t.median_s / 1e9;
        let gbs = bytes / t.median_s / 1e9;
        let (rate, unit, share, ceiling) = match case.bound {
            Bound::Compute => (gflops, "GF/s", gflops / peaks.gflops, "fma"),
            Bound::Memory => (gbs, "GB/s", gbs / peaks.gbs, "copy"),
        };
        let rec = merge(
            &base,
            json!({
                "direction": direction, "median_ms": t.median_s * 1e3, "min_ms": t.min_s * 1e3, "wall_ms": t.wall_s * 1e3,
                "timing": if t.timestamps { "timestamp" } else { "wall" }, "reps": t.reps,
                "bound": if case.bound == Bound::Compute { "compute" } else { "memory" },
                "gflop": flops / 1e9, "gflops": if flops > 0.0 { Some(gflops) } else { None },
                "mb": bytes / 1e6, "gbs": gbs,
                "ceiling": ceiling, "ceiling_value": if ceiling == "fma" { peaks.gflops } else { peaks.gbs },
                "share_of_ceiling": share, "loadavg": loadavg(),
            }),
        );
        println!("{rec}");
        rows.push(Row { op: case.op.into(), site: case.site.into(), direction, kernel: kname, ms: t.median_s * 1e3, rate, unit, share });
    }
    Ok(())
}

/// Adam with clipping over the model's parameters (one executor program, no graph op).
fn bench_adam(dims: &Dims, device: &Device, peaks: &Peaks, note: Option<&str>, rows: &mut Vec<Row>) -> Result<()> {
    let mut g = Graph::new();
    let params: Vec<Var> = dims.model_config().param_shapes().iter().map(|(n, s)| g.param(n, s)).collect();
    let count: usize = params.iter().map(|p| g.len(*p)).sum();
    let mut ex = Executor::new(g, device.clone())?;
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for &p in &params {
        let len = ex.graph().len(p);
        let v: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        ex.set(p, &v)?;
        let grad = ex.layout().grad(p).context("a parameter has a gradient")?;
        ex.write(grad, &v)?;
    }
    let adam = Adam::new(&mut ex, &params, AdamConfig::default())?;
    adam.set_step(&mut ex, 1, 1e-4)?;
    let t = match ex.device().clone() {
        Device::Cpu => {
            let mut step = || -> Result<f64> {
                let t = Instant::now();
                ex.run("adam", |cx, _, l| adam.record(cx, l))?;
                Ok(t.elapsed().as_secs_f64())
            };
            step()?;
            repeat(CPU_BUDGET_S, || {
                let s = step()?;
                Ok((s, s))
            })?
        }
        Device::Gpu(_) => {
            let f = |cx: &mut Ctx, l: &Layout| adam.record(cx, l);
            let layout = ex.layout().clone();
            record_and_time(&mut ex, "adam", &|cx| f(cx, &layout))?
        }
    };
    // gradient read twice (norm, update); param, m, v read and written
    let bytes = count as f64 * 4.0 * 8.0;
    let gbs = bytes / t.median_s / 1e9;
    let rec = json!({
        "bench": "kernel", "device": device.name(), "op": "adam", "site": "optimizer step (clip + update)",
        "shape": format!("{} params in {} tensors", count, params.len()), "kernel": if device.is_gpu() { "wgsl" } else { "native" },
        "direction": "step", "median_ms": t.median_s * 1e3, "min_ms": t.min_s * 1e3, "wall_ms": t.wall_s * 1e3,
        "timing": if t.timestamps { "timestamp" } else { "wall" }, "reps": t.reps, "bound": "memory",
        "gflop": 0.0, "gflops": Value::Null, "mb": bytes / 1e6, "gbs": gbs,
        "ceiling": "copy", "ceiling_value": peaks.gbs, "share_of_ceiling": gbs / peaks.gbs, "note": note, "loadavg": loadavg(),
    });
    println!("{rec}");
    rows.push(Row {
        op: "adam".into(),
        site: format!("{count} params"),
        direction: "step",
        kernel: if device.is_gpu() { "wgsl" } else { "native" },
        ms: t.median_s * 1e3,
        rate: gbs,
        unit: "GB/s",
        share: gbs / peaks.gbs,
    });
    Ok(())
}

fn merge(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    if let (Value::Object(o), Value::Object(e)) = (&mut out, extra) {
        o.extend(e);
    }
    out
}
