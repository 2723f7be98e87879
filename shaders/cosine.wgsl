// Mean pairwise cosine similarity of slots [B, K, D] -> [1] (K <= 64), with backward.
//   c_ij = G_ij / m_ij,  G = S S^T,  m_ij = max(|s_i| |s_j|, 1e-8)
//   y = scale * sum_b sum_{i != j} f(c_ij),  f = max(., 0) if clamp else identity
// cos_forward: one workgroup per scene. D is walked in tiles of 32 columns staged in
//   workgroup memory (coalesced loads); each thread accumulates up to 16 Gram entries in
//   registers (K*K <= 4096 = 256 x 16). It writes the scene's sum and the backward's
//   per-pair coefficients to the saved buffer:
//     saved[b]                  scene sum of f(c_ij)
//     saved[B + (b K + i) K + j]        A_ij = f'(c_ij) / m_ij            (0 on the diagonal)
//     saved[B + B K K + (b K + i) K + j] C_ij = f'(c_ij) c_ij / |s_i|^2 if |s_i||s_j| > 1e-8
// cos_reduce: one workgroup sums the B scene sums (no float atomics).
// cos_backward: one thread per (b, i, d), coalesced over d:
//   ds_i[d] += 2 scale gy (sum_j A_ij s_j[d] - (sum_j C_ij) s_i[d])

struct CosineParams {
    nb: u32,      // scenes B
    k: u32,       // slots K
    d: u32,       // slot dim D
    clamp: u32,   // 1: f = max(c, 0)
    scale: f32,   // 1 / (B K (K-1)), 0 without pairs
}

@group(0) @binding(0) var<uniform> p: CosineParams;

const TD: u32 = 32u;
const EPS: f32 = 1e-8;

var<workgroup> tile: array<f32, 2048>;   // 64 slots x TD columns
var<workgroup> nrm: array<f32, 64>;


@group(0) @binding(1) var<storage, read> cf_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> cf_saved: array<f32>;

@compute @workgroup_size(256)
fn cos_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wid.x + wid.y * nwg.x;
    if (b >= p.nb) {
        return;   // uniform over the workgroup
    }
    let kk = p.k * p.k;
    let base = b * p.k * p.d;
    var gram: array<f32, 16>;
    for (var d0 = 0u; d0 < p.d; d0 = d0 + TD) {
        for (var e = lid; e < p.k * TD; e = e + 256u) {
            let d = d0 + e % TD;
            var v = 0.0;
            if (d < p.d) {
                v = cf_x[base + (e / TD) * p.d + d];
            }
            tile[e] = v;
        }
        workgroupBarrier();
        for (var r = 0u; r < 16u; r = r + 1u) {
            let e = lid + r * 256u;
            if (e < kk) {
                let ti = (e / p.k) * TD;
                let tj = (e % p.k) * TD;
                var acc = 0.0;
                for (var t = 0u; t < TD; t = t + 1u) {
                    acc = acc + tile[ti + t] * tile[tj + t];
                }
                gram[r] = gram[r] + acc;
            }
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < 16u; r = r + 1u) {
        let e = lid + r * 256u;
        if (e < kk && e / p.k == e % p.k) {
            nrm[e / p.k] = sqrt(gram[r]);
        }
    }
    workgroupBarrier();

    let a_off = p.nb + b * kk;
    let c_off = p.nb + p.nb * kk + b * kk;
    var sum = 0.0;
    for (var r = 0u; r < 16u; r = r + 1u) {
        let e = lid + r * 256u;
        if (e < kk) {
            let i = e / p.k;
            let j = e % p.k;
            var a = 0.0;
            var c = 0.0;
            if (i != j) {
                let nn = nrm[i] * nrm[j];
                let m = max(nn, EPS);
                let cs = gram[r] / m;
                let on = p.clamp == 0u || cs > 0.0;
                if (on) {
                    sum = sum + cs;
                    a = 1.0 / m;
                    if (nn > EPS) {
                        c = cs / (nrm[i] * nrm[i]);
                    }
                }
            }
            cf_saved[a_off + e] = a;
            cf_saved[c_off + e] = c;
        }
    }
    partial[lid] = sum;
    let total = tree_sum(lid);
    if (lid == 0u) {
        cf_saved[b] = total;
    }
}

@group(0) @binding(1) var<storage, read> cr_saved: array<f32>;
@group(0) @binding(2) var<storage, read_write> cr_y: array<f32>;

@compute @workgroup_size(256)
fn cos_reduce(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var b = lid; b < p.nb; b = b + 256u) {
        acc = acc + cr_saved[b];
    }
    partial[lid] = acc;
    let total = tree_sum(lid);
    if (lid == 0u) {
        cr_y[0] = p.scale * total;
    }
}

@group(0) @binding(1) var<storage, read> cb_x: array<f32>;
@group(0) @binding(2) var<storage, read> cb_saved: array<f32>;
@group(0) @binding(3) var<storage, read> cb_gy: array<f32>;
@group(0) @binding(4) var<storage, read_write> cb_gx: array<f32>;

@compute @workgroup_size(256)
fn cos_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (idx >= p.nb * p.k * p.d) {
        return;
    }
    let d = idx % p.d;
    let bi = idx / p.d;           // b * K + i
    let b = bi / p.k;
    let kk = p.k * p.k;
    let a_off = p.nb + bi * p.k;
    let c_off = p.nb + p.nb * kk + bi * p.k;
    let xb = b * p.k * p.d + d;
    var sa = 0.0;
    var sc = 0.0;
    for (var j = 0u; j < p.k; j = j + 1u) {
        sa = sa + cb_saved[a_off + j] * cb_x[xb + j * p.d];
        sc = sc + cb_saved[c_off + j];
    }
    cb_gx[idx] = cb_gx[idx] + 2.0 * p.scale * cb_gy[0] * (sa - sc * cb_x[idx]);
}
