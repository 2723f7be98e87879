// Slot Attention's renormalization over inputs, attn [B, N, K] -> w [B, N, K]:
//   w[b,n,k] = (attn[b,n,k] + eps) / s[b,k],  s[b,k] = sum_n (attn[b,n,k] + eps)
// One workgroup per (scene, block of 16 slots): 16 slot lanes x 16 token lanes, so
// consecutive threads read consecutive floats of a row; the column sums reduce over
// the token lanes in workgroup memory and the same workgroup writes the result
// (one dispatch, no second pass over a sums buffer).

struct AttnRenormParams {
    nb: u32,       // scenes B
    n: u32,        // tokens N
    k: u32,        // slots K
    kblocks: u32,  // ceil(K / 16)
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: AttnRenormParams;

var<workgroup> col: array<f32, 256>;

// Sum col[] over the 16 token lanes; afterwards col[kl] holds slot lane kl's total.
fn column_sum(lid: u32) {
    workgroupBarrier();
    for (var s = 8u; s > 0u; s = s >> 1u) {
        if (lid / 16u < s) {
            col[lid] = col[lid] + col[lid + s * 16u];
        }
        workgroupBarrier();
    }
}

@group(0) @binding(1) var<storage, read> rf_attn: array<f32>;
@group(0) @binding(2) var<storage, read_write> rf_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> rf_sums: array<f32>;   // saved s[b,k]

@compute @workgroup_size(256)
fn renorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.nb * p.kblocks) {
        return;   // uniform over the workgroup
    }
    let b = g / p.kblocks;
    let kl = lid % 16u;
    let nl = lid / 16u;
    let k = (g % p.kblocks) * 16u + kl;
    let in_range = k < p.k;
    let base = b * p.n * p.k + k;

    var acc = 0.0;
    if (in_range) {
        for (var n = nl; n < p.n; n = n + 16u) {
            acc = acc + (rf_attn[base + n * p.k] + p.eps);
        }
    }
    col[lid] = acc;
    column_sum(lid);
    let s = col[kl];
    if (in_range) {
        if (nl == 0u) {
            rf_sums[b * p.k + k] = s;
        }
        for (var n = nl; n < p.n; n = n + 16u) {
            let i = base + n * p.k;
            rf_w[i] = (rf_attn[i] + p.eps) / s;
        }
    }
}

// da[b,n,k] += (gy[b,n,k] - sum_n' gy[b,n',k] w[b,n',k]) / s[b,k]
@group(0) @binding(1) var<storage, read> rb_w: array<f32>;
@group(0) @binding(2) var<storage, read> rb_sums: array<f32>;
@group(0) @binding(3) var<storage, read> rb_gy: array<f32>;
@group(0) @binding(4) var<storage, read_write> rb_ga: array<f32>;

@compute @workgroup_size(256)
fn renorm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.nb * p.kblocks) {
        return;
    }
    let b = g / p.kblocks;
    let kl = lid % 16u;
    let nl = lid / 16u;
    let k = (g % p.kblocks) * 16u + kl;
    let in_range = k < p.k;
    let base = b * p.n * p.k + k;

    var acc = 0.0;
    if (in_range) {
        for (var n = nl; n < p.n; n = n + 16u) {
            let i = base + n * p.k;
            acc = acc + rb_gy[i] * rb_w[i];
        }
    }
    col[lid] = acc;
    column_sum(lid);
    let gw = col[kl];
    if (in_range) {
        let s = rb_sums[b * p.k + k];
        for (var n = nl; n < p.n; n = n + 16u) {
            let i = base + n * p.k;
            rb_ga[i] = rb_ga[i] + (rb_gy[i] - gw) / s;
        }
    }
}
