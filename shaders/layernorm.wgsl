// LayerNorm over the last dimension (rows x cols, row-major), forward and backward.
// Forward and dx: one workgroup per row (rows are long: 768 features, 128 slot dims),
// threads stride the row (coalesced) and combine with a tree reduction in workgroup
// memory. dw/db reduce over rows without float atomics: a 2-D grid of (column tile,
// row chunk) writes per-chunk partial sums, then one thread per column adds the chunks.
// saved = [mean(rows) | rstd(rows) | partials(chunks x 2 x cols)].

struct LayerNormParams {
    rows: u32,
    cols: u32,
    eps: f32,
    chunks: u32,          // row chunks of the dw/db reduction
    rows_per_chunk: u32,
    which: u32,           // wb_reduce: 0 = dw, 1 = db
}

@group(0) @binding(0) var<uniform> p: LayerNormParams;

const ROW_WG: u32 = 128u;
const COL_WG: u32 = 64u;

var<workgroup> red1: array<f32, ROW_WG>;
var<workgroup> red3: array<vec3<f32>, ROW_WG>;

// Sum of v over the workgroup; every thread gets the result. Call in uniform control flow.
fn wg_sum(lid: u32, v: f32) -> f32 {
    red1[lid] = v;
    workgroupBarrier();
    for (var s = ROW_WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red1[lid] = red1[lid] + red1[lid + s];
        }
        workgroupBarrier();
    }
    let total = red1[0];
    workgroupBarrier(); // red1 may be reused right after
    return total;
}

fn wg_sum3(lid: u32, v: vec3<f32>) -> vec3<f32> {
    red3[lid] = v;
    workgroupBarrier();
    for (var s = ROW_WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red3[lid] = red3[lid] + red3[lid + s];
        }
        workgroupBarrier();
    }
    let total = red3[0];
    workgroupBarrier();
    return total;
}

// ---- forward: y = (x - mean) * rstd * w + b; saves mean, rstd
@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read> f_w: array<f32>;
@group(0) @binding(3) var<storage, read> f_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(5) var<storage, read_write> f_saved: array<f32>;

@compute @workgroup_size(128)
fn ln_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return; // uniform per workgroup
    }
    let base = row * p.cols;
    let n = f32(p.cols);
    // The sums run on x - x0 (x0 = the row's first element), so a large common offset
    // does not eat the f32 precision of the mean. Deviations are then (x - shift) - m
    // with shift + m = mean: the rounding error of either form is an ulp of its larger
    // part, |x - mean| plus |m|, so take shift = x0 when |mean - x0| < |mean| (an offset
    // row, where x - x0 is also exact) and shift = 0 otherwise (a centred row).
    let x0 = f_x[base];
    var s = 0.0;
    for (var c = lid; c < p.cols; c = c + ROW_WG) {
        s = s + (f_x[base + c] - x0);
    }
    let delta = wg_sum(lid, s) / n;
    let mean = x0 + delta;
    let offset_row = abs(delta) < abs(mean);
    let shift = select(0.0, x0, offset_row);
    let m = select(mean, delta, offset_row);
    // second pass over the (cached) row: no cancellation from E[x^2] - E[x]^2
    var q = 0.0;
    for (var c = lid; c < p.cols; c = c + ROW_WG) {
        let d = (f_x[base + c] - shift) - m;
        q = q + d * d;
    }
    let rstd = 1.0 / sqrt(wg_sum(lid, q) / n + p.eps);
    for (var c = lid; c < p.cols; c = c + ROW_WG) {
        f_y[base + c] = ((f_x[base + c] - shift) - m) * rstd * f_w[c] + f_b[c];
    }
    if (lid == 0u) {
        f_saved[row] = mean;
        f_saved[p.rows + row] = rstd;
    }
}

// ---- dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = gy * w.
// xhat' = (x - mean) * rstd with the f32-rounded saved mean is off by c = mean(xhat')
// (the exact xhat sums to 0); that error would reach dx as ~rstd^2 * |rounding|, so
// the formula uses xhat' - c (see backward_row in src/ops/layernorm.rs).
@group(0) @binding(1) var<storage, read> bx_x: array<f32>;
@group(0) @binding(2) var<storage, read> bx_w: array<f32>;
@group(0) @binding(3) var<storage, read> bx_saved: array<f32>;
@group(0) @binding(4) var<storage, read> bx_gy: array<f32>;
@group(0) @binding(5) var<storage, read_write> bx_gx: array<f32>;

@compute @workgroup_size(128)
fn ln_backward_x(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    let mean = bx_saved[row];
    let rstd = bx_saved[p.rows + row];
    var acc = vec3<f32>(0.0, 0.0, 0.0);
    for (var c = lid; c < p.cols; c = c + ROW_WG) {
        let g = bx_gy[base + c] * bx_w[c];
        let xhat = (bx_x[base + c] - mean) * rstd;
        acc = acc + vec3<f32>(g, g * xhat, xhat);
    }
    let m = wg_sum3(lid, acc) / f32(p.cols);
    let a = m.x;
    let cx = m.z;
    let b = m.y - m.x * m.z;
    for (var c = lid; c < p.cols; c = c + ROW_WG) {
        let g = bx_gy[base + c] * bx_w[c];
        let xhat = (bx_x[base + c] - mean) * rstd;
        bx_gx[base + c] = bx_gx[base + c] + rstd * (g - a - (xhat - cx) * b);
    }
}

// ---- dw/db stage 1: partials[chunk][0][c] = sum gy * xhat, partials[chunk][1][c] = sum gy
// over the chunk's rows. Grid: x = column tiles of COL_WG (looped if capped), y = chunks.
@group(0) @binding(1) var<storage, read> bp_x: array<f32>;
@group(0) @binding(2) var<storage, read> bp_gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bp_saved: array<f32>;

@compute @workgroup_size(64)
fn ln_backward_wb_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = wid.y;
    let r0 = chunk * p.rows_per_chunk;
    let r1 = min(p.rows, r0 + p.rows_per_chunk);
    let out = 2u * p.rows + chunk * 2u * p.cols;
    for (var c = wid.x * COL_WG + lid; c < p.cols; c = c + nwg.x * COL_WG) {
        var sw = 0.0;
        var sb = 0.0;
        for (var r = r0; r < r1; r = r + 1u) {
            let g = bp_gy[r * p.cols + c];
            // mean/rstd are the same for the whole workgroup: broadcast loads
            sw = sw + g * (bp_x[r * p.cols + c] - bp_saved[r]) * bp_saved[p.rows + r];
            sb = sb + g;
        }
        bp_saved[out + c] = sw;
        bp_saved[out + p.cols + c] = sb;
    }
}

// ---- dw/db stage 2: g[c] += sum over chunks of partials[chunk][which][c]
@group(0) @binding(1) var<storage, read> br_saved: array<f32>;
@group(0) @binding(2) var<storage, read_write> br_g: array<f32>;

@compute @workgroup_size(256)
fn ln_backward_wb_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (c >= p.cols) {
        return;
    }
    let start = 2u * p.rows + p.which * p.cols + c;
    var s = 0.0;
    for (var k = 0u; k < p.chunks; k = k + 1u) {
        s = s + br_saved[start + k * 2u * p.cols];
    }
    br_g[c] = br_g[c] + s;
}
