//! Timing and ceilings of `slotforge bench kernels`: repetitions for a time budget, GPU
//! timestamp queries around every compute pass, and the device's own ceilings (an FMA loop
//! and a copy, `shaders/peak.wgsl` on wgpu), which the kernels' rates are compared with.

use std::time::Instant;

use anyhow::{anyhow, Result};
use rayon::prelude::*;
use serde_json::json;

use crate::backend::gpu::Cmd;
use crate::backend::{Ctx, Device, Gpu, Shader};
use crate::exec::{Executor, Layout};
use crate::graph::Graph;

const PEAK: Shader = Shader::new("peak", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/peak.wgsl")));

slotforge_engine::kernel_params! {
    /// `n` threads that write a result (fma) or vec4s to copy (copy); `iters` FMA loop trips;
    /// `a`, `b` from the uniform so that nothing constant-folds.
    pub struct PeakParams in "peak" { n: u32, iters: u32, a: f32, b: f32 }
}

/// Keep repeating a measurement until this much time has passed (at least `MIN_REPS`).
pub(crate) const CPU_BUDGET_S: f64 = 1.0;
const GPU_BUDGET_S: f64 = 2.0;
const MIN_REPS: usize = 3;
const MAX_REPS: usize = 50;

// ---------------------------------------------------------------------------------------
// timing

#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// Median kernel time: timestamp queries on wgpu when available, else wall time.
    pub median_s: f64,
    /// Median wall time (wgpu: submit until the queue is idle).
    pub wall_s: f64,
    /// Fastest kernel time: other load on the machine only ever slows a run down.
    pub min_s: f64,
    pub reps: usize,
    pub timestamps: bool,
}

/// Repeat `once` (returning kernel and wall seconds) for the time budget.
pub(crate) fn repeat(budget_s: f64, mut once: impl FnMut() -> Result<(f64, f64)>) -> Result<Timing> {
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

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Time program `name` (`f`) of `ex`: one untimed run (records and compiles on wgpu), then
/// repetitions.
pub(crate) fn time_program(ex: &mut Executor, name: &'static str, f: fn(&mut Ctx, &Graph, &Layout)) -> Result<Timing> {
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

pub(crate) fn wait(gpu: &Gpu) -> Result<()> {
    Ok(gpu.wait()?)
}

pub(crate) fn time_gpu_cmds(gpu: &Gpu, bufs: &[wgpu::Buffer], cmds: &[Cmd]) -> Result<Timing> {
    let timer = if gpu.has_timestamps() { Some(Timer::new(gpu, count_passes(cmds))) } else { None };
    let t = repeat(GPU_BUDGET_S, || submit_timed(gpu, bufs, cmds, timer.as_ref()))?;
    Ok(Timing { timestamps: timer.is_some(), ..t })
}

/// Compute passes `encode` makes of `cmds`: one per run of consecutive dispatches.
pub(crate) fn count_passes(cmds: &[Cmd]) -> u32 {
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
pub(crate) struct Timer {
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
pub(crate) fn encode_timed(enc: &mut wgpu::CommandEncoder, bufs: &[wgpu::Buffer], cmds: &[Cmd], timer: Option<&Timer>) -> u32 {
    crate::backend::gpu::encode_with_timestamps(enc, bufs, cmds, |pass_index| {
        timer.filter(|t| pass_index < t.passes).map(|t| wgpu::ComputePassTimestampWrites {
            query_set: &t.set,
            beginning_of_pass_write_index: Some(2 * pass_index),
            end_of_pass_write_index: Some(2 * pass_index + 1),
        })
    })
}

/// One submission of `cmds`: (kernel seconds = sum of the timed passes, or wall; wall seconds).
pub(crate) fn submit_timed(gpu: &Gpu, bufs: &[wgpu::Buffer], cmds: &[Cmd], timer: Option<&Timer>) -> Result<(f64, f64)> {
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
pub(crate) fn cpu_peaks(device: &str) -> Result<Peaks> {
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
pub(crate) fn cpu_copy_gbs(n: usize, reps: usize) -> f64 {
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
pub(crate) fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Independent accumulators (vector registers) per thread: enough to cover FMA latency x
/// throughput (4-5 cycles x 2 pipes on current x86).
pub(crate) const CPU_CHAINS: usize = 12;

/// The instruction set used and flops per loop trip of one thread.
pub(crate) fn cpu_fma_isa() -> (&'static str, u64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("fma") {
        return ("avx2+fma 8-lane", (CPU_CHAINS * 8 * 2) as u64);
    }
    ("portable 8-lane mul+add", (CPU_CHAINS * 8 * 2) as u64)
}

/// Run the FMA loop on every rayon thread. Returns each thread's on-CPU seconds for it
/// (Linux; None elsewhere), which other load on the machine does not inflate.
pub(crate) fn cpu_fma_all(iters: u64) -> Vec<Option<f64>> {
    rayon::broadcast(|ctx| {
        let before = thread_cpu_ns();
        std::hint::black_box(cpu_fma_thread(iters, ctx.index() as f32 * 1e-3));
        Some((thread_cpu_ns()? - before?) as f64 * 1e-9)
    })
}

/// Nanoseconds the calling thread has run on a CPU (Linux schedstat).
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

pub(crate) fn cpu_fma_thread(iters: u64, seed: f32) -> f32 {
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

pub(crate) fn fma_portable(iters: u64, seed: f32) -> f32 {
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
pub(crate) fn gpu_peaks(gpu: &std::sync::Arc<Gpu>, device: &str) -> Result<Peaks> {
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
pub(crate) fn record_and_time(ex: &mut Executor, name: &'static str, f: &dyn Fn(&mut Ctx)) -> Result<Timing> {
    let Device::Gpu(gpu) = ex.device().clone() else { anyhow::bail!("record_and_time needs a GPU executor") };
    ex.run(name, |cx, _, _| f(cx))?;
    wait(&gpu)?;
    let (bufs, cmds) = ex.recorded(name).ok_or_else(|| anyhow!("program {name} was not recorded"))?;
    time_gpu_cmds(&gpu, bufs, cmds)
}

