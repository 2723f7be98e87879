// Device ceilings for `slotforge bench kernels`: an ALU-only vec4 FMA loop (no memory
// traffic inside the loop) and a vec4 copy (pure bandwidth). The kernels' measured rates
// are reported as shares of these.

struct PeakParams {
    n: u32,      // threads that write a result (fma) / vec4 elements to copy (copy)
    iters: u32,  // loop trips of the FMA kernel
    a: f32,      // multiplier and addend come from the uniform so nothing constant-folds
    b: f32,
}

@group(0) @binding(0) var<uniform> p: PeakParams;

// ---- FMA rate: 8 independent vec4 chains, 2 FMAs each per trip = 64 multiply-adds
// (128 flops) per thread per trip. Independent chains hide the FMA latency.
@group(0) @binding(1) var<storage, read_write> fma_out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn fma_peak(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    let s = f32(i & 1023u) * 1e-3;
    let m = vec4<f32>(p.a);
    let c = vec4<f32>(p.b);
    var a0 = vec4<f32>(s, s + 0.1, s + 0.2, s + 0.3);
    var a1 = a0 + 0.01;
    var a2 = a0 + 0.02;
    var a3 = a0 + 0.03;
    var a4 = a0 + 0.04;
    var a5 = a0 + 0.05;
    var a6 = a0 + 0.06;
    var a7 = a0 + 0.07;
    for (var t = 0u; t < p.iters; t = t + 1u) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a4 = fma(a4, m, c);
        a5 = fma(a5, m, c);
        a6 = fma(a6, m, c);
        a7 = fma(a7, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a4 = fma(a4, m, c);
        a5 = fma(a5, m, c);
        a6 = fma(a6, m, c);
        a7 = fma(a7, m, c);
    }
    // the result is stored so the loop is live
    if (i < p.n) {
        fma_out[i] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
    }
}

// ---- copy bandwidth: one vec4 per thread, coalesced
@group(0) @binding(1) var<storage, read> copy_src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> copy_dst: array<vec4<f32>>;

@compute @workgroup_size(256)
fn copy_peak(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i < p.n) {
        copy_dst[i] = copy_src[i];
    }
}
