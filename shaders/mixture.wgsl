// The decoder's alpha-mask mixture. dec [B, K, N, C] (last channel = mask logit),
// alpha [B, K, N], recon [B, N, C-1]. A "row" is one (b, k, n): dec[row * C + c], alpha[row].
//   alpha_softmax_*: one thread per (b, n) looping over the K slots (the logits sit C
//     floats apart; K*B*N is small next to the mixture itself).
//   combine_forward: one thread per output (b, n, c), c fastest (coalesced), looping over k.
//   combine_backward_*: ddec is an elementwise axpy; dalpha is a dot over the cm mixed channels, done
//     by `lanes` threads per row (a power of two <= 64 fitted to cm, 256 / lanes rows per
//     workgroup) with a tree in workgroup memory. When both gradients are wanted one kernel
//     does both, reading gy once.

struct MixtureParams {
    nb: u32,   // scenes B
    k: u32,    // slots K
    n: u32,    // pixels N
    c: u32,    // channels C including the mask logit
    lanes: u32, // threads per row in the row kernels (power of two, <= 64)
    cm: u32,    // channels alpha_combine mixes: C - 1 (skip the mask logit) or C
}

@group(0) @binding(0) var<uniform> p: MixtureParams;



// ---- alpha_softmax
@group(0) @binding(1) var<storage, read> sf_dec: array<f32>;
@group(0) @binding(2) var<storage, read_write> sf_alpha: array<f32>;

@compute @workgroup_size(256)
fn alpha_softmax_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.nb * p.n || p.k == 0u) {
        return;
    }
    let b = i / p.n;
    let row0 = b * p.k * p.n + i % p.n;   // row of slot 0; slot k is row0 + k N
    var m = sf_dec[row0 * p.c + p.c - 1u];
    for (var k = 1u; k < p.k; k = k + 1u) {
        m = max(m, sf_dec[(row0 + k * p.n) * p.c + p.c - 1u]);
    }
    var z = 0.0;
    for (var k = 0u; k < p.k; k = k + 1u) {
        let e = exp(sf_dec[(row0 + k * p.n) * p.c + p.c - 1u] - m);
        sf_alpha[row0 + k * p.n] = e;
        z = z + e;
    }
    let inv = 1.0 / z;
    for (var k = 0u; k < p.k; k = k + 1u) {
        let r = row0 + k * p.n;
        sf_alpha[r] = sf_alpha[r] * inv;
    }
}

// ddec[row, C-1] += alpha[row] (gy[row] - sum_k alpha gy)
@group(0) @binding(1) var<storage, read> sb_alpha: array<f32>;
@group(0) @binding(2) var<storage, read> sb_gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> sb_gdec: array<f32>;

@compute @workgroup_size(256)
fn alpha_softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.nb * p.n) {
        return;
    }
    let row0 = (i / p.n) * p.k * p.n + i % p.n;
    var dot_ag = 0.0;
    for (var k = 0u; k < p.k; k = k + 1u) {
        let r = row0 + k * p.n;
        dot_ag = dot_ag + sb_alpha[r] * sb_gy[r];
    }
    for (var k = 0u; k < p.k; k = k + 1u) {
        let r = row0 + k * p.n;
        let j = r * p.c + p.c - 1u;
        sb_gdec[j] = sb_gdec[j] + sb_alpha[r] * (sb_gy[r] - dot_ag);
    }
}

// ---- alpha_combine forward: recon[b, n, c] = sum_k alpha[b,k,n] dec[b,k,n,c], c < cm
@group(0) @binding(1) var<storage, read> cf_dec: array<f32>;
@group(0) @binding(2) var<storage, read> cf_alpha: array<f32>;
@group(0) @binding(3) var<storage, read_write> cf_out: array<f32>;

@compute @workgroup_size(256)
fn combine_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let cm = p.cm;
    if (i >= p.nb * p.n * cm) {
        return;
    }
    let c = i % cm;
    let bn = i / cm;
    let row0 = (bn / p.n) * p.k * p.n + bn % p.n;
    var acc = 0.0;
    for (var k = 0u; k < p.k; k = k + 1u) {
        let r = row0 + k * p.n;
        acc = acc + cf_alpha[r] * cf_dec[r * p.c + c];
    }
    cf_out[i] = acc;
}

// index of gy[b, n, 0] for row (b, k, n)
fn gy_base(row: u32) -> u32 {
    return ((row / (p.k * p.n)) * p.n + row % p.n) * p.cm;
}

// ---- ddec only: one thread per (row, c < C-1)
@group(0) @binding(1) var<storage, read> bd_alpha: array<f32>;
@group(0) @binding(2) var<storage, read> bd_gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bd_gdec: array<f32>;

@compute @workgroup_size(256)
fn combine_backward_dec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let cm = p.cm;
    if (i >= p.nb * p.k * p.n * cm) {
        return;
    }
    let row = i / cm;
    let c = i % cm;
    let j = row * p.c + c;
    bd_gdec[j] = bd_gdec[j] + bd_alpha[row] * bd_gy[gy_base(row) + c];
}

// Sum partial[] over the lanes of each row segment; lane 0 ends with the total.
fn row_sum(lid: u32) -> f32 {
    workgroupBarrier();
    let lane = lid % p.lanes;
    for (var s = p.lanes >> 1u; s > 0u; s = s >> 1u) {
        if (lane < s) {
            partial[lid] = partial[lid] + partial[lid + s];
        }
        workgroupBarrier();
    }
    return partial[lid - lane];
}

// ---- dalpha only: `lanes` threads per row
@group(0) @binding(1) var<storage, read> ba_dec: array<f32>;
@group(0) @binding(2) var<storage, read> ba_gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> ba_galpha: array<f32>;

@compute @workgroup_size(256)
fn combine_backward_alpha(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * (256u / p.lanes) + lid / p.lanes;
    let lane = lid % p.lanes;
    let valid = row < p.nb * p.k * p.n;   // not uniform: every thread must reach the barriers
    let cm = p.cm;
    var acc = 0.0;
    if (valid) {
        let g0 = gy_base(row);
        let d0 = row * p.c;
        for (var c = lane; c < cm; c = c + p.lanes) {
            acc = acc + ba_gy[g0 + c] * ba_dec[d0 + c];
        }
    }
    partial[lid] = acc;
    let total = row_sum(lid);
    if (valid && lane == 0u) {
        ba_galpha[row] = ba_galpha[row] + total;
    }
}

// ---- both: the dot for dalpha and the axpy for ddec share the reads of gy
@group(0) @binding(1) var<storage, read> bb_dec: array<f32>;
@group(0) @binding(2) var<storage, read> bb_alpha: array<f32>;
@group(0) @binding(3) var<storage, read> bb_gy: array<f32>;
@group(0) @binding(4) var<storage, read_write> bb_gdec: array<f32>;
@group(0) @binding(5) var<storage, read_write> bb_galpha: array<f32>;

@compute @workgroup_size(256)
fn combine_backward_both(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * (256u / p.lanes) + lid / p.lanes;
    let lane = lid % p.lanes;
    let valid = row < p.nb * p.k * p.n;
    let cm = p.cm;
    var acc = 0.0;
    if (valid) {
        let g0 = gy_base(row);
        let d0 = row * p.c;
        let a = bb_alpha[row];
        for (var c = lane; c < cm; c = c + p.lanes) {
            let g = bb_gy[g0 + c];
            acc = acc + g * bb_dec[d0 + c];
            bb_gdec[d0 + c] = bb_gdec[d0 + c] + a * g;
        }
    }
    partial[lid] = acc;
    let total = row_sum(lid);
    if (valid && lane == 0u) {
        bb_galpha[row] = bb_galpha[row] + total;
    }
}
