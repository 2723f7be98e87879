// Matrix products C (+)= op(A) op(B) (+ bias, ReLU), batched over z, with split-K.
//
// op(A) is [M, K] (A stored [K, M] when ta), op(B) is [K, N] (B stored [N, K] when tb).
// The z index runs over batch * splits: split s of batch b multiplies K rows
// [s * kc, min(K, (s + 1) * kc)) and writes C at z * sc (the host points C at a scratch
// buffer of partials when splits > 1 and sums them with `sum_partials`).
// Every kernel loops over tiles and z so the grid can be capped at the per-dimension limit.
//
// Two kernels:
//  * register-blocked (mm_regs, mm4_*): 16x16 threads, each computes 4x4 outputs straight
//    from global memory; no workgroup memory and no barriers (fastest on lavapipe).
//    mm4_* bind the operands as vec4 arrays, for when the contiguous dim of each operand is
//    a multiple of 4 (the host checks); mm_regs is the scalar fallback for any shape.
//  * shared-memory tiled (mm_tiled): 16x16 threads, 64x64 tile, K staged 16 at a time
//    through workgroup memory (what real GPUs want).
// Edges: rows/columns past M/N are clamped to the last one (valid reads, results dropped);
// K tails are handled by a scalar loop, never by reading past the end.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    nz: u32,          // batch * splits
    splits: u32,
    kc: u32,          // K per split (multiple of 4 when splits > 1)
    sa: u32,          // batch strides of A, B (0 = shared) and C (per z)
    sb: u32,
    sc: u32,
    accumulate: u32,  // C += result instead of C = result
    has_bias: u32,    // + bias[col]
    relu: u32,        // max(., 0) last
    mask: u32,        // A *= (amask > 0): the ReLU backward applied while loading
    ta: u32,
    tb: u32,
}

@group(0) @binding(0) var<uniform> p: MatmulParams;

@group(0) @binding(1) var<storage, read> mat_a: array<f32>;
@group(0) @binding(2) var<storage, read> mat_b: array<f32>;
@group(0) @binding(3) var<storage, read> mat_bias: array<f32>;
@group(0) @binding(4) var<storage, read> mat_mask: array<f32>;
@group(0) @binding(5) var<storage, read_write> mat_c: array<f32>;

// vec4 views for mm4_* (same bindings)
@group(0) @binding(1) var<storage, read> mat_a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> mat_b4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> mat_mask4: array<vec4<f32>>;

const RT: u32 = 64u;  // output tile side of the register kernels (16 threads x 4)

// One output with the epilogue.
fn store_one(idx: u32, col: u32, v: f32) {
    var r = v;
    if (p.accumulate != 0u) {
        r = r + mat_c[idx];
    }
    if (p.has_bias != 0u) {
        r = r + mat_bias[col];
    }
    if (p.relu != 0u) {
        r = max(r, 0.0);
    }
    mat_c[idx] = r;
}

// Row m of a thread's 4x4 block: columns n0..n0+3, those < N.
fn store_row(coff: u32, m: u32, n0: u32, v: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    let base = coff + m * p.n;
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (n0 + j < p.n) {
            store_one(base + n0 + j, n0 + j, v[j]);
        }
    }
}

fn store_block(coff: u32, m0: u32, n0: u32, c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>) {
    store_row(coff, m0, n0, c0);
    store_row(coff, m0 + 1u, n0, c1);
    store_row(coff, m0 + 2u, n0, c2);
    store_row(coff, m0 + 3u, n0, c3);
}

// ---- scalar register kernel: any shape, any transposes (strides from the flags)

fn lda(i: u32) -> f32 {
    var v = mat_a[i];
    if (p.mask != 0u && mat_mask[i] <= 0.0) {
        v = 0.0;
    }
    return v;
}

@compute @workgroup_size(16, 16)
fn mm_regs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // storage strides of op(A)[m, k] and op(B)[k, n]
    let a_sm = select(p.k, 1u, p.ta != 0u);
    let a_sk = select(1u, p.m, p.ta != 0u);
    let b_sk = select(p.n, 1u, p.tb != 0u);
    let b_sn = select(1u, p.k, p.tb != 0u);
    let tiles_m = (p.m + RT - 1u) / RT;
    let tiles_n = (p.n + RT - 1u) / RT;
    let lane = vec4<u32>(0u, 1u, 2u, 3u);
    for (var z = wid.z; z < p.nz; z = z + nwg.z) {
        let bi = z / p.splits;
        let k0 = (z - bi * p.splits) * p.kc;
        let k1 = min(p.k, k0 + p.kc);
        for (var tm = wid.y; tm < tiles_m; tm = tm + nwg.y) {
            for (var tn = wid.x; tn < tiles_n; tn = tn + nwg.x) {
                let m0 = tm * RT + lid.y * 4u;
                let n0 = tn * RT + lid.x * 4u;
                if (m0 >= p.m || n0 >= p.n) {
                    continue;
                }
                let ra = bi * p.sa + min(vec4<u32>(m0) + lane, vec4<u32>(p.m - 1u)) * a_sm;
                let cb = bi * p.sb + min(vec4<u32>(n0) + lane, vec4<u32>(p.n - 1u)) * b_sn;
                var c0 = vec4<f32>(0.0);
                var c1 = vec4<f32>(0.0);
                var c2 = vec4<f32>(0.0);
                var c3 = vec4<f32>(0.0);
                var k = k0;
                for (; k + 4u <= k1; k = k + 4u) {
                    let ka = k * a_sk;
                    let kb = k * b_sk;
                    let kk = vec4<u32>(0u, a_sk, 2u * a_sk, 3u * a_sk);
                    // a_i: row i of the block, 4 consecutive k
                    let a0 = vec4<f32>(lda(ra.x + ka + kk.x), lda(ra.x + ka + kk.y), lda(ra.x + ka + kk.z), lda(ra.x + ka + kk.w));
                    let a1 = vec4<f32>(lda(ra.y + ka + kk.x), lda(ra.y + ka + kk.y), lda(ra.y + ka + kk.z), lda(ra.y + ka + kk.w));
                    let a2 = vec4<f32>(lda(ra.z + ka + kk.x), lda(ra.z + ka + kk.y), lda(ra.z + ka + kk.z), lda(ra.z + ka + kk.w));
                    let a3 = vec4<f32>(lda(ra.w + ka + kk.x), lda(ra.w + ka + kk.y), lda(ra.w + ka + kk.z), lda(ra.w + ka + kk.w));
                    // b_j: row k + j of op(B), 4 columns
                    let b0 = vec4<f32>(mat_b[cb.x + kb], mat_b[cb.y + kb], mat_b[cb.z + kb], mat_b[cb.w + kb]);
                    let b1 = vec4<f32>(mat_b[cb.x + kb + b_sk], mat_b[cb.y + kb + b_sk], mat_b[cb.z + kb + b_sk], mat_b[cb.w + kb + b_sk]);
                    let b2 = vec4<f32>(mat_b[cb.x + kb + 2u * b_sk], mat_b[cb.y + kb + 2u * b_sk], mat_b[cb.z + kb + 2u * b_sk], mat_b[cb.w + kb + 2u * b_sk]);
                    let b3 = vec4<f32>(mat_b[cb.x + kb + 3u * b_sk], mat_b[cb.y + kb + 3u * b_sk], mat_b[cb.z + kb + 3u * b_sk], mat_b[cb.w + kb + 3u * b_sk]);
                    c0 = c0 + a0.x * b0 + a0.y * b1 + a0.z * b2 + a0.w * b3;
                    c1 = c1 + a1.x * b0 + a1.y * b1 + a1.z * b2 + a1.w * b3;
                    c2 = c2 + a2.x * b0 + a2.y * b1 + a2.z * b2 + a2.w * b3;
                    c3 = c3 + a3.x * b0 + a3.y * b1 + a3.z * b2 + a3.w * b3;
                }
                for (; k < k1; k = k + 1u) {
                    let ka = k * a_sk;
                    let kb = k * b_sk;
                    let av = vec4<f32>(lda(ra.x + ka), lda(ra.y + ka), lda(ra.z + ka), lda(ra.w + ka));
                    let bv = vec4<f32>(mat_b[cb.x + kb], mat_b[cb.y + kb], mat_b[cb.z + kb], mat_b[cb.w + kb]);
                    c0 = c0 + av.x * bv;
                    c1 = c1 + av.y * bv;
                    c2 = c2 + av.z * bv;
                    c3 = c3 + av.w * bv;
                }
                store_block(z * p.sc, m0, n0, c0, c1, c2, c3);
            }
        }
    }
}

// ---- vec4 register kernels. Contiguous dims: K of A (or M when ta), N of B (or K when tb);
// each is a multiple of 4, so every vec4 below is whole and in range. `ta`/`tb` are
// constants at each entry point, so the branches fold away.

fn lda4(i: u32) -> vec4<f32> {
    var v = mat_a4[i];
    if (p.mask != 0u) {
        v = select(vec4<f32>(0.0), v, mat_mask4[i] > vec4<f32>(0.0));
    }
    return v;
}

// one scalar of A or B from a vec4 view (K tails)
fn lda4_1(i: u32) -> f32 {
    var v = mat_a4[i >> 2u][i & 3u];
    if (p.mask != 0u && mat_mask4[i >> 2u][i & 3u] <= 0.0) {
        v = 0.0;
    }
    return v;
}

fn ldb4_1(i: u32) -> f32 {
    return mat_b4[i >> 2u][i & 3u];
}

fn mm4(ta: bool, tb: bool, wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) {
    let tiles_m = (p.m + RT - 1u) / RT;
    let tiles_n = (p.n + RT - 1u) / RT;
    let lane = vec4<u32>(0u, 1u, 2u, 3u);
    let m4 = p.m >> 2u;  // vec4 row strides
    let n4 = p.n >> 2u;
    let k4 = p.k >> 2u;
    for (var z = wid.z; z < p.nz; z = z + nwg.z) {
        let bi = z / p.splits;
        let k0 = (z - bi * p.splits) * p.kc;
        let k1 = min(p.k, k0 + p.kc);
        let aoff = bi * p.sa;
        let boff = bi * p.sb;
        for (var tm = wid.y; tm < tiles_m; tm = tm + nwg.y) {
            for (var tn = wid.x; tn < tiles_n; tn = tn + nwg.x) {
                let m0 = tm * RT + lid.y * 4u;
                let n0 = tn * RT + lid.x * 4u;
                if (m0 >= p.m || n0 >= p.n) {
                    continue;
                }
                let mr = min(vec4<u32>(m0) + lane, vec4<u32>(p.m - 1u));
                let nc = min(vec4<u32>(n0) + lane, vec4<u32>(p.n - 1u));
                var c0 = vec4<f32>(0.0);
                var c1 = vec4<f32>(0.0);
                var c2 = vec4<f32>(0.0);
                var c3 = vec4<f32>(0.0);
                var k = k0;
                for (; k + 4u <= k1; k = k + 4u) {
                    // a_i: row i of the block over k..k+3
                    var a0: vec4<f32>;
                    var a1: vec4<f32>;
                    var a2: vec4<f32>;
                    var a3: vec4<f32>;
                    if (ta) {
                        let i = (aoff + k * p.m + m0) >> 2u;
                        let t0 = lda4(i);
                        let t1 = lda4(i + m4);
                        let t2 = lda4(i + 2u * m4);
                        let t3 = lda4(i + 3u * m4);
                        a0 = vec4<f32>(t0.x, t1.x, t2.x, t3.x);
                        a1 = vec4<f32>(t0.y, t1.y, t2.y, t3.y);
                        a2 = vec4<f32>(t0.z, t1.z, t2.z, t3.z);
                        a3 = vec4<f32>(t0.w, t1.w, t2.w, t3.w);
                    } else {
                        let i = (aoff + k) >> 2u;
                        a0 = lda4(i + mr.x * k4);
                        a1 = lda4(i + mr.y * k4);
                        a2 = lda4(i + mr.z * k4);
                        a3 = lda4(i + mr.w * k4);
                    }
                    // b_j: row k + j of op(B) over the 4 columns
                    var b0: vec4<f32>;
                    var b1: vec4<f32>;
                    var b2: vec4<f32>;
                    var b3: vec4<f32>;
                    if (tb) {
                        let i = (boff + k) >> 2u;
                        let u0 = mat_b4[i + nc.x * k4];
                        let u1 = mat_b4[i + nc.y * k4];
                        let u2 = mat_b4[i + nc.z * k4];
                        let u3 = mat_b4[i + nc.w * k4];
                        b0 = vec4<f32>(u0.x, u1.x, u2.x, u3.x);
                        b1 = vec4<f32>(u0.y, u1.y, u2.y, u3.y);
                        b2 = vec4<f32>(u0.z, u1.z, u2.z, u3.z);
                        b3 = vec4<f32>(u0.w, u1.w, u2.w, u3.w);
                    } else {
                        let i = (boff + k * p.n + n0) >> 2u;
                        b0 = mat_b4[i];
                        b1 = mat_b4[i + n4];
                        b2 = mat_b4[i + 2u * n4];
                        b3 = mat_b4[i + 3u * n4];
                    }
                    c0 = c0 + a0.x * b0 + a0.y * b1 + a0.z * b2 + a0.w * b3;
                    c1 = c1 + a1.x * b0 + a1.y * b1 + a1.z * b2 + a1.w * b3;
                    c2 = c2 + a2.x * b0 + a2.y * b1 + a2.z * b2 + a2.w * b3;
                    c3 = c3 + a3.x * b0 + a3.y * b1 + a3.z * b2 + a3.w * b3;
                }
                // K tail: only when neither operand is contiguous along K (ta && !tb)
                for (; k < k1; k = k + 1u) {
                    var av: vec4<f32>;
                    if (ta) {
                        av = lda4((aoff + k * p.m + m0) >> 2u);
                    } else {
                        let i = aoff + k;
                        av = vec4<f32>(lda4_1(i + mr.x * p.k), lda4_1(i + mr.y * p.k), lda4_1(i + mr.z * p.k), lda4_1(i + mr.w * p.k));
                    }
                    var bv: vec4<f32>;
                    if (tb) {
                        let i = boff + k;
                        bv = vec4<f32>(ldb4_1(i + nc.x * p.k), ldb4_1(i + nc.y * p.k), ldb4_1(i + nc.z * p.k), ldb4_1(i + nc.w * p.k));
                    } else {
                        bv = mat_b4[(boff + k * p.n + n0) >> 2u];
                    }
                    c0 = c0 + av.x * bv;
                    c1 = c1 + av.y * bv;
                    c2 = c2 + av.z * bv;
                    c3 = c3 + av.w * bv;
                }
                store_block(z * p.sc, m0, n0, c0, c1, c2, c3);
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn mm4_nn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    mm4(false, false, wid, nwg, lid);
}

@compute @workgroup_size(16, 16)
fn mm4_nt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    mm4(false, true, wid, nwg, lid);
}

@compute @workgroup_size(16, 16)
fn mm4_tn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    mm4(true, false, wid, nwg, lid);
}

@compute @workgroup_size(16, 16)
fn mm4_tt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    mm4(true, true, wid, nwg, lid);
}

// ---- shared-memory tiled kernel: 16x16 threads, 64x64 outputs, K in steps of 16.
// Tiles are stored k-major as vec4 over 4 consecutive m (or n): a thread's 4 rows and
// 4 columns are one vec4 read each.

const TT: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> tile_a: array<vec4<f32>, 256>;  // [TK][TT / 4]
var<workgroup> tile_b: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16)
fn mm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let a_sm = select(p.k, 1u, p.ta != 0u);
    let a_sk = select(1u, p.m, p.ta != 0u);
    let b_sk = select(p.n, 1u, p.tb != 0u);
    let b_sn = select(1u, p.k, p.tb != 0u);
    let tiles_m = (p.m + TT - 1u) / TT;
    let tiles_n = (p.n + TT - 1u) / TT;
    // All loops below are uniform across the workgroup (barriers inside).
    for (var z = wid.z; z < p.nz; z = z + nwg.z) {
        let bi = z / p.splits;
        let k0 = (z - bi * p.splits) * p.kc;
        let k1 = min(p.k, k0 + p.kc);
        let aoff = bi * p.sa;
        let boff = bi * p.sb;
        for (var tm = wid.y; tm < tiles_m; tm = tm + nwg.y) {
            for (var tn = wid.x; tn < tiles_n; tn = tn + nwg.x) {
                let mb = tm * TT;
                let nb = tn * TT;
                var c0 = vec4<f32>(0.0);
                var c1 = vec4<f32>(0.0);
                var c2 = vec4<f32>(0.0);
                var c3 = vec4<f32>(0.0);
                for (var kt = k0; kt < k1; kt = kt + TK) {
                    // stage 64x16 of A and 16x64 of B, 4 elements per thread; consecutive
                    // threads walk the dim that is contiguous in memory (coalesced)
                    for (var e = 0u; e < 4u; e = e + 1u) {
                        let idx = li + e * 256u;
                        var mm: u32;
                        var ka: u32;
                        if (p.ta != 0u) {
                            ka = idx / TT;
                            mm = idx % TT;
                        } else {
                            mm = idx / TK;
                            ka = idx % TK;
                        }
                        var av = 0.0;
                        if (mb + mm < p.m && kt + ka < k1) {
                            av = lda(aoff + (mb + mm) * a_sm + (kt + ka) * a_sk);
                        }
                        tile_a[ka * 16u + mm / 4u][mm % 4u] = av;
                        var nn: u32;
                        var kb: u32;
                        if (p.tb != 0u) {
                            nn = idx / TK;
                            kb = idx % TK;
                        } else {
                            kb = idx / TT;
                            nn = idx % TT;
                        }
                        var bv = 0.0;
                        if (nb + nn < p.n && kt + kb < k1) {
                            bv = mat_b[boff + (kt + kb) * b_sk + (nb + nn) * b_sn];
                        }
                        tile_b[kb * 16u + nn / 4u][nn % 4u] = bv;
                    }
                    workgroupBarrier();
                    for (var kk = 0u; kk < TK; kk = kk + 1u) {
                        let av = tile_a[kk * 16u + lid.y];
                        let bv = tile_b[kk * 16u + lid.x];
                        c0 = c0 + av.x * bv;
                        c1 = c1 + av.y * bv;
                        c2 = c2 + av.z * bv;
                        c3 = c3 + av.w * bv;
                    }
                    workgroupBarrier();
                }
                store_block(z * p.sc, mb + lid.y * 4u, nb + lid.x * 4u, c0, c1, c2, c3);
            }
        }
    }
}

// ---- out[b, i] (+)= sum_s part[b, s, i] (+ bias[i % cols], ReLU): split-K partials,
// per-batch products of a shared operand's gradient, column-sum chunks.

struct SumPartialsParams {
    total: u32,   // nb * mn
    mn: u32,
    splits: u32,
    cols: u32,
    accumulate: u32,
    has_bias: u32,
    relu: u32,
}

@group(0) @binding(0) var<uniform> sp: SumPartialsParams;
@group(0) @binding(1) var<storage, read> sum_part: array<f32>;
@group(0) @binding(2) var<storage, read> sum_bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> sum_out: array<f32>;

@compute @workgroup_size(256)
fn sum_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= sp.total) {
        return;
    }
    let b = i / sp.mn;
    let e = i - b * sp.mn;
    let base = b * sp.splits * sp.mn + e;
    var s = 0.0;
    for (var j = 0u; j < sp.splits; j = j + 1u) {
        s = s + sum_part[base + j * sp.mn];
    }
    if (sp.accumulate != 0u) {
        s = s + sum_out[i];
    }
    if (sp.has_bias != 0u) {
        s = s + sum_bias[e % sp.cols];
    }
    if (sp.relu != 0u) {
        s = max(s, 0.0);
    }
    sum_out[i] = s;
}
