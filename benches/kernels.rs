//! Criterion benchmarks of the CPU backend's kernels at the reference feature model's shapes
//! (batch 16): the GEMMs (matmul / linear, forward and backward) and a few other ops.
//! Throughput is in "elements" = flops for the GEMMs, floats of the main tensor otherwise.
//! `cargo bench --bench kernels` (~1 minute). The same cases, on any device and against
//! measured ceilings: `slotforge bench kernels`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use slotforge::backend::Device;
use slotforge::bench::kernels::{cases, Dims, Prepared};
use slotforge::ops::matmul::GemmKernel;

/// (site, op, backward too): the cases benchmarked, by site name in `bench::kernels::cases`.
const SELECTED: &[(&str, &str, bool)] = &[
    ("encoder.layers.0", "linear", true),
    ("encoder.layers.1", "linear", true),
    ("attn logits k q^T", "matmul", true),
    ("updates w^T v", "matmul", true),
    ("gru.weight_ih", "linear", true),
    // the biggest product of the model (every (slot, position) pair through a 512x512 layer);
    // ~2 s per forward + backward on two cores, so it dominates this file's runtime
    ("decoder.layers.1/2", "linear", true),
    ("encoder_norm", "layer_norm", true),
    ("attn over slots", "softmax", true),
    ("gru cell", "gru_gates", true),
    ("decoder mixture", "alpha_combine", false),
];

fn kernels(c: &mut Criterion) {
    let dims = Dims::reference();
    let all = cases(&dims);
    for &(site, op, backward) in SELECTED {
        let case = all.iter().find(|c| c.site == site && c.op == op).unwrap_or_else(|| panic!("no bench case {op} at {site}"));
        let mut prep = Prepared::new(case, &Device::Cpu, GemmKernel::Auto).expect("prepare case");
        let g = prep.ex.graph();
        let node = &g.nodes()[0];
        let flops = node.op().flops();
        let main_len = g.len(node.inputs()[0]) as u64;
        let grads = node.inputs().iter().take(2).filter(|&&v| g.info(v).needs_grad).count() as u64;

        let mut group = c.benchmark_group(format!("{op} {site} {}", case.shape));
        group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
        if flops > 1 << 28 {
            // >~10 ms per run: a fixed count per sample instead of criterion's 1..10 ramp
            group.sampling_mode(SamplingMode::Flat);
        }
        group.throughput(Throughput::Elements(if flops > 0 { flops } else { main_len }));
        group.bench_function("forward", |b| b.iter(|| prep.forward().unwrap()));
        if backward {
            prep.forward().unwrap();
            group.throughput(Throughput::Elements(if flops > 0 { flops * grads } else { main_len }));
            group.bench_function("backward", |b| b.iter(|| prep.backward().unwrap()));
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
