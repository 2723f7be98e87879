// Softmax along an axis of a tensor viewed as [outer, len, inner], and its backward
// gx += y * (gy - sum_axis(gy * y)).
// _line kernels: one thread per (outer, inner) line; neighbouring threads take
//   neighbouring inner positions, so loads coalesce when inner > 1 (e.g. softmax over
//   the slot axis of [B, K, N] attention logits), and short lines (K ~ 11) stay cheap.
// _wg kernels: one workgroup per contiguous line (inner == 1, long len) with tree
//   reductions for the max and the sums.

struct SoftmaxParams {
    outer: u32,
    len: u32,
    inner: u32,
}

@group(0) @binding(0) var<uniform> p: SoftmaxParams;


fn tree_max(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            partial[lid] = max(partial[lid], partial[lid + s]);
        }
        workgroupBarrier();
    }
    let r = partial[0];
    workgroupBarrier(); // everyone has read partial[0] before it is reused
    return r;
}

fn block_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            partial[lid] = partial[lid] + partial[lid + s];
        }
        workgroupBarrier();
    }
    let r = partial[0];
    workgroupBarrier();
    return r;
}

// -3.4e38: the identity of max for finite inputs (no inf literal in WGSL)
const NEG_BIG: f32 = -3.4028235e38;

// ---- forward
@group(0) @binding(1) var<storage, read> fx: array<f32>;
@group(0) @binding(2) var<storage, read_write> fy: array<f32>;

@compute @workgroup_size(256)
fn softmax_forward_line(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (t >= p.outer * p.inner) {
        return;
    }
    let o = t / p.inner;
    let base = o * p.len * p.inner + (t - o * p.inner);
    var m = NEG_BIG;
    for (var k = 0u; k < p.len; k = k + 1u) {
        m = max(m, fx[base + k * p.inner]);
    }
    var sum = 0.0;
    for (var k = 0u; k < p.len; k = k + 1u) {
        let e = exp(fx[base + k * p.inner] - m);
        fy[base + k * p.inner] = e;
        sum = sum + e;
    }
    let inv = 1.0 / sum;
    for (var k = 0u; k < p.len; k = k + 1u) {
        fy[base + k * p.inner] = fy[base + k * p.inner] * inv;
    }
}

@compute @workgroup_size(256)
fn softmax_forward_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= p.outer) {
        return; // uniform across the workgroup
    }
    let base = t * p.len;
    var m = NEG_BIG;
    for (var k = lid; k < p.len; k = k + 256u) {
        m = max(m, fx[base + k]);
    }
    m = tree_max(lid, m);
    var sum = 0.0;
    for (var k = lid; k < p.len; k = k + 256u) {
        let e = exp(fx[base + k] - m);
        fy[base + k] = e;
        sum = sum + e;
    }
    let inv = 1.0 / block_sum(lid, sum);
    // each lane rescales exactly the elements it wrote: no barrier needed on fy
    for (var k = lid; k < p.len; k = k + 256u) {
        fy[base + k] = fy[base + k] * inv;
    }
}

// ---- backward
@group(0) @binding(1) var<storage, read> by: array<f32>;
@group(0) @binding(2) var<storage, read> bgy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bgx: array<f32>;

@compute @workgroup_size(256)
fn softmax_backward_line(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (t >= p.outer * p.inner) {
        return;
    }
    let o = t / p.inner;
    let base = o * p.len * p.inner + (t - o * p.inner);
    var dot = 0.0;
    for (var k = 0u; k < p.len; k = k + 1u) {
        let i = base + k * p.inner;
        dot = dot + by[i] * bgy[i];
    }
    for (var k = 0u; k < p.len; k = k + 1u) {
        let i = base + k * p.inner;
        bgx[i] = bgx[i] + by[i] * (bgy[i] - dot);
    }
}

@compute @workgroup_size(256)
fn softmax_backward_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= p.outer) {
        return; // uniform across the workgroup
    }
    let base = t * p.len;
    var dot = 0.0;
    for (var k = lid; k < p.len; k = k + 256u) {
        dot = dot + by[base + k] * bgy[base + k];
    }
    dot = block_sum(lid, dot);
    for (var k = lid; k < p.len; k = k + 256u) {
        let i = base + k;
        bgx[i] = bgx[i] + by[i] * (bgy[i] - dot);
    }
}
