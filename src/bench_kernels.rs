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

use anyhow::{anyhow, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::backend::gpu::Cmd;
use crate::backend::{Gpu, Shader};
use crate::backend::{open_device, Buf, Ctx, Device, DeviceKind};
use crate::exec::{self, Executor, Layout};
use crate::graph::{Graph, Var, VarKind};
use crate::model::ModelConfig;
use crate::ops::matmul::GemmKernel;
use crate::ops::optim::{Adam, AdamConfig};
use crate::ops::SlotOps;

const PEAK: Shader = Shader::new("peak", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/peak.wgsl")));

slotforge_engine::kernel_params! {
    /// `n` threads that write a result (fma) or vec4s to copy (copy); `iters` FMA loop trips;
    /// `a`, `b` from the uniform so that nothing constant-folds.
    pub struct PeakParams in "peak" { n: u32, iters: u32, a: f32, b: f32 }
}

/// Keep repeating a measurement until this much time has passed (at least `MIN_REPS`).
const CPU_BUDGET_S: f64 = 1.0;
const GPU_BUDGET_S: f64 = 2.0;
const MIN_REPS: usize = 3;
const MAX_REPS: usize = 50;

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
        let c = crate::bench::reference_config();
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
        ModelConfig { n_tokens: self.n, ..crate::bench::reference_config() }
    }
}

// ---------------------------------------------------------------------------------------
// cases

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Rated in GFLOP/s against the FMA peak.
    Compute,
    /// Rated in GB/s (bytes read + written) against the copy peak.
    Memory,
}

type Build = Box<dyn Fn(&mut Graph, GemmKernel) -> Var>;

/// One op at one site of the model.
pub struct Case {
    pub op: &'static str,
    /// Where in the model this op runs at this shape.
    pub site: &'static str,
    pub shape: String,
    pub bound: Bound,
    /// A GEMM: on wgpu it runs once per kernel variant.
    pub gemm: bool,
    /// Inputs drawn from (0, 1] instead of (-1, 1).
    pub positive: bool,
    /// Floats read + written by (forward, backward) when the generic count is wrong.
    pub traffic: Option<(usize, usize)>,
    pub build: Build,
}

impl Case {
    fn new(op: &'static str, site: &'static str, shape: String, bound: Bound, build: impl Fn(&mut Graph, GemmKernel) -> Var + 'static) -> Case {
        Case { op, site, shape, bound, gemm: false, positive: false, traffic: None, build: Box::new(build) }
    }
    fn gemm(mut self) -> Case {
        self.gemm = true;
        self
    }
    fn positive(mut self) -> Case {
        self.positive = true;
        self
    }
    fn traffic(mut self, fwd: usize, bwd: usize) -> Case {
        self.traffic = Some((fwd, bwd));
        self
    }
}

/// Input x, with a gradient when `grad` (matching whether the model needs dL/dx there).
fn x_in(g: &mut Graph, name: &str, shape: &[usize], grad: bool) -> Var {
    if grad { g.input_with_grad(name, shape) } else { g.input(name, shape) }
}

/// Every kernel family at the shapes the feature model runs it at, in model order.
pub fn cases(d: &Dims) -> Vec<Case> {
    use Bound::*;
    let Dims { batch: b, n, f, d: sd, k, mlp, dec, .. } = *d;
    let rows = b * n; // token rows
    let srows = b * k; // slot rows
    let prows = b * k * n; // decoder rows: every (slot, position) pair
    let mut v = Vec::new();

    let ln = |site: &'static str, r: usize, c: usize, x_grad: bool| {
        Case::new("layer_norm", site, format!("x[{r},{c}]{}", if x_grad { "" } else { " (no dx)" }), Memory, move |g, _| {
            let x = x_in(g, "x", &[r, c], x_grad);
            let (w, bb) = (g.param("w", &[c]), g.param("b", &[c]));
            g.layer_norm(x, w, bb, 1e-5)
        })
    };
    let lin = |site: &'static str, r: usize, i: usize, o: usize, bias: bool, relu: bool, x_grad: bool| {
        let shape = format!(
            "x[{r},{i}] w[{o},{i}]{}{}{}",
            if bias { " +bias" } else { "" },
            if relu { " relu" } else { "" },
            if x_grad { "" } else { " (no dx)" }
        );
        // one output is a matrix-vector product (its own kernels, whatever the GEMM choice):
        // 2 flops per float of x streamed, so it is rated against the copy ceiling
        let bound = if o == 1 { Memory } else { Compute };
        let case = Case::new("linear", site, shape, bound, move |g, kern| {
            let x = x_in(g, "x", &[r, i], x_grad);
            let w = g.param("w", &[o, i]);
            let bv = if bias { Some(g.param("bias", &[o])) } else { None };
            g.linear_with(x, w, bv, relu, kern)
        });
        if o == 1 { case } else { case.gemm() }
    };

    // encoder (the features need no gradient)
    v.push(ln("encoder_norm", rows, f, false));
    v.push(lin("encoder.layers.0", rows, f, sd, true, true, false));
    v.push(lin("encoder.layers.1", rows, sd, sd, true, false, true));
    v.push(ln("slot_attention.norm_inputs", rows, sd, true));
    // Slot Attention iteration
    v.push(
        Case::new("matmul", "attn logits k q^T", format!("k[{b},{n},{sd}] q[{b},{k},{sd}]^T"), Compute, move |g, kern| {
            let keys = g.input_with_grad("keys", &[b, n, sd]);
            let q = g.input_with_grad("q", &[b, k, sd]);
            g.matmul_with(keys, q, false, true, kern)
        })
        .gemm(),
    );
    v.push(Case::new("softmax", "attn over slots", format!("[{b},{n},{k}] axis 2"), Memory, move |g, _| {
        let x = g.input_with_grad("logits", &[b, n, k]);
        g.softmax(x, 2)
    }));
    v.push(
        Case::new("attn_renorm", "attn weighted mean", format!("[{b},{n},{k}]"), Memory, move |g, _| {
            let a = g.input_with_grad("attn", &[b, n, k]);
            g.attn_renorm(a, 1e-8)
        })
        .positive(),
    );
    v.push(
        Case::new("matmul", "updates w^T v", format!("w[{b},{n},{k}]^T v[{b},{n},{sd}]"), Compute, move |g, kern| {
            let w = g.input_with_grad("w", &[b, n, k]);
            let vals = g.input_with_grad("v", &[b, n, sd]);
            g.matmul_with(w, vals, true, false, kern)
        })
        .gemm(),
    );
    v.push(lin("gru.weight_ih", srows, sd, 3 * sd, true, false, true));
    v.push(Case::new("gru_gates", "gru cell", format!("gi,gh[{srows},{}] h[{srows},{sd}]", 3 * sd), Memory, move |g, _| {
        let gi = g.input_with_grad("gi", &[srows, 3 * sd]);
        let gh = g.input_with_grad("gh", &[srows, 3 * sd]);
        let h = g.input_with_grad("h", &[srows, sd]);
        g.gru_gates(gi, gh, h)
    }));
    v.push(ln("slot_attention.norm_mlp", srows, sd, true));
    v.push(lin("slot mlp.layers.0", srows, sd, mlp, true, true, true));
    v.push(lin("slot mlp.layers.1", srows, mlp, sd, true, false, true));
    // decoder
    v.push(Case::new("add", "decoder slot + pos (broadcast)", format!("[{b},{k},1,{dec}] + [1,1,{n},{dec}]"), Memory, move |g, _| {
        let s = g.input_with_grad("per_slot", &[b, k, 1, dec]);
        let p = g.input_with_grad("per_pos", &[1, 1, n, dec]);
        g.add(s, p)
    }));
    v.push(Case::new("relu", "decoder.layers.0 relu", format!("[{b},{k},{n},{dec}]"), Memory, move |g, _| {
        let x = g.input_with_grad("h", &[b, k, n, dec]);
        g.relu(x)
    }));
    v.push(lin("decoder.layers.1/2", prows, dec, dec, true, true, true));
    // the last layer as the model runs it (model::feature): one alpha-logit row per pair,
    // softmax over slots, the hidden layer mixed by alpha, then the F value rows per position
    v.push(lin("decoder.layers.3 alpha logit", prows, dec, 1, true, false, true));
    let bkn = b * k * n;
    // alpha_softmax reads the logits and writes alpha; backward reads alpha and gy and
    // updates the logits' gradient
    v.push(
        Case::new("alpha_softmax", "decoder masks", format!("logit[{b},{k},{n},1]"), Memory, move |g, _| {
            let x = g.input_with_grad("logit", &[b, k, n, 1]);
            g.alpha_softmax(x)
        })
        .traffic(2 * bkn, 4 * bkn),
    );
    v.push(Case::new("alpha_combine", "decoder mixture", format!("h[{b},{k},{n},{dec}] alpha[{b},{k},{n}]"), Memory, move |g, _| {
        let x = g.input_with_grad("h", &[b, k, n, dec]);
        let a = g.input_with_grad("alpha", &[b, k, n]);
        g.mix_slots(x, a)
    }));
    v.push(lin("decoder.layers.3 values", rows, dec, f, true, false, true));
    // losses
    v.push(Case::new("mse", "reconstruction loss", format!("[{b},{n},{f}] x2"), Memory, move |g, _| {
        let x = g.input_with_grad("recon", &[b, n, f]);
        let t = g.input("target", &[b, n, f]);
        g.mse(x, t)
    }));
    v.push(Case::new("sum", "reduce (mean/sum)", format!("[{b},{n},{f}]"), Memory, move |g, _| {
        let x = g.input_with_grad("x", &[b, n, f]);
        g.sum(x)
    }));
    v.push(Case::new("pairwise_cosine_mean", "diversity loss", format!("[{b},{k},{sd}] clamp"), Memory, move |g, _| {
        let s = g.input_with_grad("slots", &[b, k, sd]);
        g.pairwise_cosine_mean(s, true)
    }));
    // not in the feature model: one layer of the image model's CNN encoder
    let (cb, hw, c) = (d.conv_batch, d.conv_hw, d.conv_c);
    v.push(
        Case::new("conv2d", "image encoder 5x5 (not in feature model)", format!("x[{cb},{hw},{hw},{c}] w[{c},{c},5,5] pad 2 +bias"), Compute, move |g, _| {
            let x = g.input_with_grad("x", &[cb, hw, hw, c]);
            let w = g.param("w", &[c, c, 5, 5]);
            let bias = g.param("b", &[c]);
            g.conv2d(x, w, Some(bias), 1, 2)
        }),
    );
    v
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
// timing

#[derive(Clone, Copy, Debug)]
struct Timing {
    /// Median kernel time: timestamp queries on wgpu when available, else wall time.
    median_s: f64,
    /// Median wall time (wgpu: submit until the queue is idle).
    wall_s: f64,
    /// Fastest kernel time: other load on the machine only ever slows a run down.
    min_s: f64,
    reps: usize,
    timestamps: bool,
}

/// Repeat `once` (returning kernel and wall seconds) for the time budget.
fn repeat(budget_s: f64, mut once: impl FnMut() -> Result<(f64, f64)>) -> Result<Timing> {
    let start = Instant::now();
    let (mut ks, mut ws) = (Vec::new(), Vec::new());
    while ks.len() < MIN_REPS || (ks.len() < MAX_REPS && start.elapsed().as_secs_f64() < budget_s) {
        let (k, w) = once()?;
        ks.push(k);
        ws.push(w);
    }
    let min_s = ks.iter().cloned().fold(f64::INFINITY, f64::min);
    Ok(Timing { median_s: median(&mut ks), wall_s: median(&mut ws), min_s, reps: ks.len(), timestamps: false })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Time program `name` (`f`) of `ex`: one untimed run (records and compiles on wgpu), then
/// repetitions.
fn time_program(ex: &mut Executor, name: &'static str, f: fn(&mut Ctx, &Graph, &Layout)) -> Result<Timing> {
    match ex.device().clone() {
        Device::Cpu => {
            ex.run(name, f)?;
            repeat(CPU_BUDGET_S, || {
                let t = Instant::now();
                ex.run(name, f)?;
                let s = t.elapsed().as_secs_f64();
                Ok((s, s))
            })
        }
        Device::Gpu(gpu) => {
            ex.run(name, f)?;
            wait(&gpu)?;
            let (bufs, cmds) = ex.recorded(name).ok_or_else(|| anyhow!("program {name} was not recorded"))?;
            time_gpu_cmds(&gpu, bufs, cmds)
        }
    }
}

fn wait(gpu: &Gpu) -> Result<()> {
    Ok(gpu.wait()?)
}

fn time_gpu_cmds(gpu: &Gpu, bufs: &[wgpu::Buffer], cmds: &[Cmd]) -> Result<Timing> {
    let timer = if gpu.has_timestamps() { Some(Timer::new(gpu, count_passes(cmds))) } else { None };
    let t = repeat(GPU_BUDGET_S, || submit_timed(gpu, bufs, cmds, timer.as_ref()))?;
    Ok(Timing { timestamps: timer.is_some(), ..t })
}

/// Compute passes `encode` makes of `cmds`: one per run of consecutive dispatches.
fn count_passes(cmds: &[Cmd]) -> u32 {
    let mut passes = 0;
    let mut in_pass = false;
    for c in cmds {
        let d = matches!(c, Cmd::Dispatch { .. });
        if d && !in_pass {
            passes += 1;
        }
        in_pass = d;
    }
    passes
}

/// Timestamp queries at the start and end of every compute pass of a program.
struct Timer {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    passes: u32,
    period_ns: f64,
}

impl Timer {
    fn new(gpu: &Gpu, passes: u32) -> Timer {
        let passes = passes.clamp(1, wgpu::QUERY_SET_MAX_QUERIES / 2);
        let set = gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bench timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * passes,
        });
        let size = 16 * passes as u64;
        let resolve = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamp resolve"),
            size,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamp readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Timer { set, resolve, readback, passes, period_ns: gpu.queue().get_timestamp_period() as f64 }
    }
}

/// `backend::gpu::encode` with a timestamp pair around every compute pass. Returns the passes.
fn encode_timed(enc: &mut wgpu::CommandEncoder, bufs: &[wgpu::Buffer], cmds: &[Cmd], timer: Option<&Timer>) -> u32 {
    crate::backend::gpu::encode_with_timestamps(enc, bufs, cmds, |pass_index| {
        timer.filter(|t| pass_index < t.passes).map(|t| wgpu::ComputePassTimestampWrites {
            query_set: &t.set,
            beginning_of_pass_write_index: Some(2 * pass_index),
            end_of_pass_write_index: Some(2 * pass_index + 1),
        })
    })
}

/// One submission of `cmds`: (kernel seconds = sum of the timed passes, or wall; wall seconds).
fn submit_timed(gpu: &Gpu, bufs: &[wgpu::Buffer], cmds: &[Cmd], timer: Option<&Timer>) -> Result<(f64, f64)> {
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    let passes = encode_timed(&mut enc, bufs, cmds, timer).min(timer.map_or(0, |t| t.passes));
    if let Some(t) = timer.filter(|_| passes > 0) {
        enc.resolve_query_set(&t.set, 0..2 * passes, &t.resolve, 0);
        enc.copy_buffer_to_buffer(&t.resolve, 0, &t.readback, 0, 16 * passes as u64);
    }
    let start = Instant::now();
    gpu.queue().submit([enc.finish()]);
    wait(gpu)?;
    let wall = start.elapsed().as_secs_f64();
    let Some(t) = timer.filter(|_| passes > 0) else { return Ok((wall, wall)) };
    let (tx, rx) = std::sync::mpsc::channel();
    t.readback.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    wait(gpu)?;
    rx.recv()?.map_err(|e| anyhow!("map timestamps: {e}"))?;
    let ticks: Vec<u64> = {
        let view = t.readback.get_mapped_range(..).map_err(|e| anyhow!("mapped range: {e:?}"))?;
        bytemuck::cast_slice::<u8, u64>(&view).to_vec()
    };
    t.readback.unmap();
    let total: u64 = (0..passes as usize).map(|p| ticks[2 * p + 1].saturating_sub(ticks[2 * p])).sum();
    Ok((total as f64 * t.period_ns * 1e-9, wall))
}

// ---------------------------------------------------------------------------------------
// ceilings

/// Measured device ceilings.
#[derive(Clone, Copy, Debug)]
pub struct Peaks {
    pub gflops: f64,
    pub gbs: f64,
}

/// CPU: FMA rate (every rayon thread runs independent vector FMA chains) and the bandwidth
/// of a large parallel memcpy.
fn cpu_peaks(device: &str) -> Result<Peaks> {
    let threads = rayon::current_num_threads();
    let (isa, flops_per_iter) = cpu_fma_isa();
    // calibrate to ~0.2 s
    let mut iters = 1u64 << 16;
    loop {
        let t = Instant::now();
        let _ = cpu_fma_all(iters);
        if t.elapsed().as_secs_f64() > 0.05 || iters >= 1 << 34 {
            iters = (iters as f64 * 0.2 / t.elapsed().as_secs_f64().max(1e-9)) as u64;
            break;
        }
        iters *= 4;
    }
    // ceilings take the fastest run: other load on the machine only ever slows a run down
    let mut s = f64::INFINITY;
    let mut on_cpu_rate = 0f64; // best sum over threads of flops per on-CPU second
    let per_thread = iters as f64 * flops_per_iter as f64;
    for _ in 0..7 {
        let t = Instant::now();
        let cpu = cpu_fma_all(iters);
        s = s.min(t.elapsed().as_secs_f64());
        if cpu.iter().all(|c| c.is_some_and(|c| c > 0.0)) {
            on_cpu_rate = on_cpu_rate.max(cpu.iter().map(|c| per_thread / c.unwrap()).sum());
        }
    }
    let gflops = threads as f64 * per_thread / s / 1e9;
    println!(
        "{}",
        json!({"bench": "peak", "device": device, "what": "fma", "gflops": gflops, "threads": threads, "loadavg": loadavg(),
               "detail": format!("{isa}: {} independent accumulators per thread, {iters} trips, rayon broadcast", CPU_CHAINS)})
    );
    if on_cpu_rate > 0.0 {
        println!(
            "{}",
            json!({"bench": "peak", "device": device, "what": "fma_on_cpu_time", "gflops": on_cpu_rate / 1e9, "threads": threads,
                   "detail": "the same loop rated per second each thread actually ran (schedstat): the rate without other load on the machine (information only, not a ceiling)"})
        );
    }

    // 256 MiB each way, far beyond the caches: the ceiling. Also 4 MiB each way (cache
    // resident on most CPUs), for information: memory-bound kernels whose tensors fit in
    // cache can exceed the DRAM ceiling.
    let gbs = cpu_copy_gbs(64 << 20, 7);
    println!(
        "{}",
        json!({"bench": "peak", "device": device, "what": "copy", "gbs": gbs, "threads": threads, "loadavg": loadavg(),
               "detail": "memcpy of 256 MiB in 1 MiB chunks over rayon; bytes = read + written"})
    );
    let cached = cpu_copy_gbs(1 << 20, 51);
    println!(
        "{}",
        json!({"bench": "peak", "device": device, "what": "copy_cache_resident", "gbs": cached, "threads": threads,
               "detail": "the same copy of 4 MiB (information only, not a ceiling)"})
    );
    Ok(Peaks { gflops, gbs })
}

/// Bandwidth (read + written) of a parallel copy of `n` floats; fastest of `reps`.
fn cpu_copy_gbs(n: usize, reps: usize) -> f64 {
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let chunk = (n / (4 * rayon::current_num_threads())).clamp(1 << 12, 1 << 18);
    let mut copy = || {
        let t = Instant::now();
        dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s));
        t.elapsed().as_secs_f64()
    };
    copy(); // page in dst
    let best = (0..reps).map(|_| copy()).fold(f64::INFINITY, f64::min);
    std::hint::black_box(&dst);
    2.0 * (n * 4) as f64 / best / 1e9
}

/// The 1-minute load average (Linux): other work on the machine skews CPU numbers.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Independent accumulators (vector registers) per thread: enough to cover FMA latency x
/// throughput (4-5 cycles x 2 pipes on current x86).
const CPU_CHAINS: usize = 12;

/// The instruction set used and flops per loop trip of one thread.
fn cpu_fma_isa() -> (&'static str, u64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("fma") {
        return ("avx2+fma 8-lane", (CPU_CHAINS * 8 * 2) as u64);
    }
    ("portable 8-lane mul+add", (CPU_CHAINS * 8 * 2) as u64)
}

/// Run the FMA loop on every rayon thread. Returns each thread's on-CPU seconds for it
/// (Linux; None elsewhere), which other load on the machine does not inflate.
fn cpu_fma_all(iters: u64) -> Vec<Option<f64>> {
    rayon::broadcast(|ctx| {
        let before = thread_cpu_ns();
        std::hint::black_box(cpu_fma_thread(iters, ctx.index() as f32 * 1e-3));
        Some((thread_cpu_ns()? - before?) as f64 * 1e-9)
    })
}

/// Nanoseconds the calling thread has run on a CPU (Linux schedstat).
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

fn cpu_fma_thread(iters: u64, seed: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for (checked above).
        return unsafe { fma_avx(iters, seed) };
    }
    fma_portable(iters, seed)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,fma")]
unsafe fn fma_avx(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm256_set1_ps(std::hint::black_box(0.999));
    let c = _mm256_set1_ps(std::hint::black_box(1e-3));
    let mut acc = [_mm256_setzero_ps(); CPU_CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm256_set1_ps(seed + i as f32);
    }
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    let mut out = [0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}

fn fma_portable(iters: u64, seed: f32) -> f32 {
    let m = std::hint::black_box(0.999f32);
    let c = std::hint::black_box(1e-3f32);
    let mut acc = [[seed; 8]; CPU_CHAINS];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            for x in a.iter_mut() {
                *x = *x * m + c;
            }
        }
    }
    acc.iter().flatten().sum()
}

/// wgpu: shaders/peak.wgsl, ALU-only vec4 FMA loop and vec4 copy.
fn gpu_peaks(gpu: &std::sync::Arc<Gpu>, device: &str) -> Result<Peaks> {
    let dev = Device::Gpu(gpu.clone());
    let emulated = gpu.is_cpu_emulated();
    // FMA: enough threads to fill a big GPU; calibrate the trip count to ~0.1-0.3 s.
    let groups: u32 = if emulated { 64 } else { 4096 };
    let threads = groups as u64 * 256;
    let run_fma = |iters: u32| -> Result<Timing> {
        let mut ex = Executor::new(Graph::new(), dev.clone())?;
        let out = ex.alloc(threads as usize * 4);
        let params = PeakParams { n: threads as u32, iters, a: 0.999, b: 1e-3 };
        let grid = gpu.split_groups(groups);
        record_and_time(&mut ex, "peak_fma", &|cx| {
            if let Ctx::Gpu(r) = cx {
                r.dispatch(PEAK, "fma_peak", &params, &[out], grid)
            }
        })
    };
    let mut iters = 16u32;
    let target = if emulated { 0.3 } else { 0.1 };
    let mut t = run_fma(iters)?;
    while t.median_s < target / 8.0 && iters < 1 << 24 {
        iters = ((iters as f64 * target / t.median_s.max(1e-6)) as u32).clamp(iters * 2, 1 << 24);
        t = run_fma(iters)?;
    }
    let flops = threads as f64 * iters as f64 * 128.0;
    let gflops = flops / t.min_s / 1e9;
    println!(
        "{}",
        json!({"bench": "peak", "device": device, "what": "fma", "gflops": gflops, "timestamps": t.timestamps, "loadavg": loadavg(),
               "median_ms": t.median_s * 1e3, "min_ms": t.min_s * 1e3, "wall_ms": t.wall_s * 1e3,
               "detail": format!("peak.wgsl fma_peak: {threads} threads x {iters} trips x 8 vec4 chains x 2 fma")})
    );

    let max = gpu.limits().max_storage_buffer_binding_size.min(gpu.limits().max_buffer_size) as usize;
    let bytes = (if emulated { 64usize << 20 } else { 256 << 20 }).min(max / 16 * 16);
    let n = bytes / 4;
    let mut ex = Executor::new(Graph::new(), dev.clone())?;
    let (src, dst) = (ex.alloc(n), ex.alloc(n));
    ex.write(src, &vec![1.0; n])?;
    let vec4s = n / 4;
    let params = PeakParams { n: vec4s as u32, ..Default::default() };
    let grid = gpu.split_groups((vec4s as u32).div_ceil(256));
    let t = record_and_time(&mut ex, "peak_copy", &|cx| {
        if let Ctx::Gpu(r) = cx {
            r.dispatch(PEAK, "copy_peak", &params, &[src, dst], grid)
        }
    })?;
    let gbs = 2.0 * bytes as f64 / t.min_s / 1e9;
    println!(
        "{}",
        json!({"bench": "peak", "device": device, "what": "copy", "gbs": gbs, "timestamps": t.timestamps, "loadavg": loadavg(),
               "median_ms": t.median_s * 1e3, "min_ms": t.min_s * 1e3, "wall_ms": t.wall_s * 1e3,
               "detail": format!("peak.wgsl copy_peak: {} MiB vec4 copy; bytes = read + written", bytes >> 20)})
    );
    Ok(Peaks { gflops, gbs })
}

/// Record a custom program once on `ex` (wgpu) and time its replays.
fn record_and_time(ex: &mut Executor, name: &'static str, f: &dyn Fn(&mut Ctx)) -> Result<Timing> {
    let Device::Gpu(gpu) = ex.device().clone() else { anyhow::bail!("record_and_time needs a GPU executor") };
    ex.run(name, |cx, _, _| f(cx))?;
    wait(&gpu)?;
    let (bufs, cmds) = ex.recorded(name).ok_or_else(|| anyhow!("program {name} was not recorded"))?;
    time_gpu_cmds(&gpu, bufs, cmds)
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
