// Reductions to a scalar: sum, mean and the mean squared error, with backward.
// One workgroup per output scalar walks the input with a strided loop and a tree
// reduction in workgroup memory; the inputs are small enough (<= a few M floats) that
// one pass is cheaper than a multi-pass tree of dispatches.

struct ReduceParams {
    n: u32,       // element count
    scale: f32,   // 1 for sum, 1/n for mean and mse
}

@group(0) @binding(0) var<uniform> p: ReduceParams;



// ---- sum / mean: y = scale * sum(x)
@group(0) @binding(1) var<storage, read> sum_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sum_y: array<f32>;

@compute @workgroup_size(256)
fn sum_forward(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < p.n; i = i + 256u) {
        acc = acc + sum_x[i];
    }
    partial[lid] = acc;
    let total = tree_sum(lid);
    if (lid == 0u) {
        sum_y[0] = p.scale * total;
    }
}

// dx += scale * dy
@group(0) @binding(1) var<storage, read> sumb_gy: array<f32>;
@group(0) @binding(2) var<storage, read_write> sumb_gx: array<f32>;

@compute @workgroup_size(256)
fn sum_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i < p.n) {
        sumb_gx[i] = sumb_gx[i] + p.scale * sumb_gy[0];
    }
}

// ---- mse: y = scale * sum((a - b)^2)
@group(0) @binding(1) var<storage, read> mse_a: array<f32>;
@group(0) @binding(2) var<storage, read> mse_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> mse_y: array<f32>;

@compute @workgroup_size(256)
fn mse_forward(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < p.n; i = i + 256u) {
        let d = mse_a[i] - mse_b[i];
        acc = acc + d * d;
    }
    partial[lid] = acc;
    let total = tree_sum(lid);
    if (lid == 0u) {
        mse_y[0] = p.scale * total;
    }
}

// d a += 2 scale (a - b) dy, written to one gradient at a time (sign = +1 for a, -1 for b)
@group(0) @binding(1) var<storage, read> mseb_a: array<f32>;
@group(0) @binding(2) var<storage, read> mseb_b: array<f32>;
@group(0) @binding(3) var<storage, read> mseb_gy: array<f32>;
@group(0) @binding(4) var<storage, read_write> mseb_g: array<f32>;

@compute @workgroup_size(256)
fn mse_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i < p.n) {
        // p.scale carries sign * 2 / n
        mseb_g[i] = mseb_g[i] + p.scale * (mseb_a[i] - mseb_b[i]) * mseb_gy[0];
    }
}
