// The kernels of `linear` beyond the GEMM (matmul.wgsl) and its split sums (sum_partials):
// the bias gradient's column sums and the one-output linear's matrix-vector products.

// ---- column sums: out[chunk, c] (+)= sum of g[r, c] * weight[r] over the chunk's rows.
// Unweighted (bias gradients): weight 1, g masked by (mask[r, c] > 0) when asked. Weighted
// (the weight gradient of a one-output linear: g = x, weight = G [rows]): the mask [rows]
// zeroes the weight. 64 columns x 4 row lanes per workgroup.

struct ColsumParams {
    rows: u32,
    cols: u32,
    chunk_rows: u32,
    chunks: u32,
    accumulate: u32,
    mask: u32,
    weighted: u32,
}

@group(0) @binding(0) var<uniform> cp: ColsumParams;
@group(0) @binding(1) var<storage, read> cs_g: array<f32>;
@group(0) @binding(2) var<storage, read> cs_weight: array<f32>;
@group(0) @binding(3) var<storage, read> cs_mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> cs_out: array<f32>;

var<workgroup> cs_part: array<f32, 256>;

@compute @workgroup_size(64, 4)
fn colsum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let col_groups = (cp.cols + 63u) / 64u;
    for (var ch = wid.y; ch < cp.chunks; ch = ch + nwg.y) {
        for (var cg = wid.x; cg < col_groups; cg = cg + nwg.x) {
            let col = cg * 64u + lid.x;
            let r0 = ch * cp.chunk_rows;
            let r1 = min(cp.rows, r0 + cp.chunk_rows);
            var s = 0.0;
            if (col < cp.cols) {
                for (var r = r0 + lid.y; r < r1; r = r + 4u) {
                    let i = r * cp.cols + col;
                    var v = cs_g[i];
                    if (cp.weighted != 0u) {
                        var wr = cs_weight[r];
                        if (cp.mask != 0u && cs_mask[r] <= 0.0) {
                            wr = 0.0;
                        }
                        v = v * wr;
                    } else if (cp.mask != 0u && cs_mask[i] <= 0.0) {
                        v = 0.0;
                    }
                    s = s + v;
                }
            }
            cs_part[lid.y * 64u + lid.x] = s;
            workgroupBarrier();
            if (lid.y == 0u && col < cp.cols) {
                let t = (cs_part[lid.x] + cs_part[64u + lid.x]) + (cs_part[128u + lid.x] + cs_part[192u + lid.x]);
                let o = ch * cp.cols + col;
                if (cp.accumulate != 0u) {
                    cs_out[o] = cs_out[o] + t;
                } else {
                    cs_out[o] = t;
                }
            }
            workgroupBarrier();
        }
    }
}

// ---- one-output linear (the decoder's alpha logit): matrix-vector products.
// A 64x64 GEMM tile would waste 63 of its 64 columns. Workgroups of 8 lanes x 32 rows:
// lane l of a row touches columns l, l + 8, ... (vec4 columns when `in` is a multiple of 4),
// so the 8 lanes of a row read 32 contiguous bytes at a time (128 with vec4); row blocks
// are spread over x and y past 65535 groups (`split_groups`). Few lanes per row keep the
// reduction to one barrier (costly on CPU-emulated adapters: 8 lanes measured ~1.5x faster
// than 64 on lavapipe).
//  * matvec(4):       y[r] = relu?(dot(x[r, :], w) + bias), lanes summed in workgroup memory
//  * matvec_outer(4): dx[r, :] += G[r] w, G = gy masked by (y > 0) for a ReLU

struct MatvecParams {
    rows: u32,
    inp: u32,
    has_bias: u32,
    relu: u32,  // matvec: max(., 0) last; matvec_outer: G masked by (mv_mask > 0)
}

const MV_LANES: u32 = 8u;
const MV_ROWS: u32 = 32u;

@group(0) @binding(0) var<uniform> mv: MatvecParams;
@group(0) @binding(1) var<storage, read> mv_x: array<f32>;     // matvec: x; matvec_outer: gy
@group(0) @binding(2) var<storage, read> mv_w: array<f32>;
@group(0) @binding(3) var<storage, read> mv_bias: array<f32>;  // matvec
@group(0) @binding(3) var<storage, read> mv_mask: array<f32>;  // matvec_outer: y
@group(0) @binding(4) var<storage, read_write> mv_out: array<f32>;
// vec4 views for matvec4 / matvec_outer4 (same bindings)
@group(0) @binding(1) var<storage, read> mv_x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> mv_w4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> mv_out4: array<vec4<f32>>;

// The workgroup's first row, or none past the end (uniform: every lane returns together).
fn mv_block(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * MV_ROWS;
}

// Sum the 8 lanes of each row and store y with the epilogue. Call from uniform control flow.
fn mv_finish(r: u32, lid: vec3<u32>, s: f32) {
    let row0 = lid.y * MV_LANES;
    partial[row0 + lid.x] = s;
    workgroupBarrier();
    if (lid.x == 0u && r < mv.rows) {
        var t = ((partial[row0] + partial[row0 + 1u]) + (partial[row0 + 2u] + partial[row0 + 3u]))
              + ((partial[row0 + 4u] + partial[row0 + 5u]) + (partial[row0 + 6u] + partial[row0 + 7u]));
        if (mv.has_bias != 0u) {
            t = t + mv_bias[0];
        }
        if (mv.relu != 0u) {
            t = max(t, 0.0);
        }
        mv_out[r] = t;
    }
}

@compute @workgroup_size(8, 32)
fn matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r0 = mv_block(wid, nwg);
    if (r0 >= mv.rows) {
        return;
    }
    let r = r0 + lid.y;
    var s = 0.0;
    if (r < mv.rows) {
        let base = r * mv.inp;
        for (var c = lid.x; c < mv.inp; c = c + MV_LANES) {
            s = s + mv_x[base + c] * mv_w[c];
        }
    }
    mv_finish(r, lid, s);
}

@compute @workgroup_size(8, 32)
fn matvec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r0 = mv_block(wid, nwg);
    if (r0 >= mv.rows) {
        return;
    }
    let r = r0 + lid.y;
    var s = vec4<f32>(0.0);
    if (r < mv.rows) {
        let n4 = mv.inp / 4u;
        let base = r * n4;
        for (var c = lid.x; c < n4; c = c + MV_LANES) {
            s = s + mv_x4[base + c] * mv_w4[c];
        }
    }
    mv_finish(r, lid, (s.x + s.y) + (s.z + s.w));
}

// G[r], masked for a ReLU.
fn mv_grad(r: u32) -> f32 {
    var g = mv_x[r];
    if (mv.relu != 0u && mv_mask[r] <= 0.0) {
        g = 0.0;
    }
    return g;
}

@compute @workgroup_size(8, 32)
fn matvec_outer(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = mv_block(wid, nwg) + lid.y;
    if (r >= mv.rows) {
        return;
    }
    let g = mv_grad(r);
    let base = r * mv.inp;
    for (var c = lid.x; c < mv.inp; c = c + MV_LANES) {
        mv_out[base + c] = mv_out[base + c] + g * mv_w[c];
    }
}

@compute @workgroup_size(8, 32)
fn matvec_outer4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = mv_block(wid, nwg) + lid.y;
    if (r >= mv.rows) {
        return;
    }
    let g = mv_grad(r);
    let n4 = mv.inp / 4u;
    let base = r * n4;
    for (var c = lid.x; c < n4; c = c + MV_LANES) {
        mv_out4[base + c] = mv_out4[base + c] + g * mv_w4[c];
    }
}
