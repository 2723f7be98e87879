// Elementwise ops: unary maps, broadcasting add/sub/mul with the gradient reduction over
// broadcast dims, and the row copies behind reshape / slice_last / concat_last.
// Broadcast shapes arrive collapsed (size-1 dims dropped, adjacent dims with the same
// broadcast pattern merged), so real cases have rank 1-3 and the index math is a few
// integer divisions at most; the outermost dim never needs one.
// Every 1-D kernel: workgroup_size 256, index (wid.x + wid.y * nwg.x) * 256 + lid.

// ---------------------------------------------------------------- unary
// kind: 0 relu, 1 sigmoid, 2 tanh, 3 exp, 4 square, 5 scale (by c)
struct UnaryParams {
    n: u32,
    kind: u32,
    c: f32,
}

@group(0) @binding(0) var<uniform> up: UnaryParams;

fn sigmoid_f(x: f32) -> f32 {
    // never exp of a large positive number: no inf/inf
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// Driver tanh precision varies (lavapipe's loses digits near 0, some overflow for large
// |x|): odd polynomial below 0.625 (Cephes tanhf, ~2e-7 relative), exp form above.
fn tanh_f(x: f32) -> f32 {
    let a = abs(x);
    if (a < 0.625) {
        let s = x * x;
        return x + x * s * ((((-5.70498872745e-3 * s + 2.06390887954e-2) * s - 5.37397155531e-2) * s + 1.33314422036e-1) * s - 3.33332819422e-1);
    }
    // exp(2a) may overflow to inf: 2 / inf = 0 gives exactly +-1
    return sign(x) * (1.0 - 2.0 / (exp(2.0 * a) + 1.0));
}

@group(0) @binding(1) var<storage, read> un_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> un_y: array<f32>;

@compute @workgroup_size(256)
fn unary_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= up.n) {
        return;
    }
    let x = un_x[i];
    var y: f32;
    switch up.kind {
        case 0u: { y = max(x, 0.0); }
        case 1u: { y = sigmoid_f(x); }
        case 2u: { y = tanh_f(x); }
        case 3u: { y = exp(x); }
        case 4u: { y = x * x; }
        default: { y = up.c * x; }
    }
    un_y[i] = y;
}

// gx += gy * f'(.), with f' taken from x (relu, square) or y (sigmoid, tanh, exp):
// each kind reads only the one it needs.
@group(0) @binding(1) var<storage, read> unb_x: array<f32>;
@group(0) @binding(2) var<storage, read> unb_y: array<f32>;
@group(0) @binding(3) var<storage, read> unb_gy: array<f32>;
@group(0) @binding(4) var<storage, read_write> unb_gx: array<f32>;

@compute @workgroup_size(256)
fn unary_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= up.n) {
        return;
    }
    var d: f32;
    switch up.kind {
        case 0u: { d = select(0.0, 1.0, unb_x[i] > 0.0); }
        case 1u: { let s = unb_y[i]; d = s * (1.0 - s); }
        case 2u: { let t = unb_y[i]; d = 1.0 - t * t; }
        case 3u: { d = unb_y[i]; }
        case 4u: { d = 2.0 * unb_x[i]; }
        default: { d = up.c; }
    }
    unb_gx[i] = unb_gx[i] + unb_gy[i] * d;
}

// ---------------------------------------------------------------- dst += c * src
struct AccScaledParams {
    n: u32,
    c: f32,
}

@group(0) @binding(0) var<uniform> ap: AccScaledParams;
@group(0) @binding(1) var<storage, read> acc_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc_dst: array<f32>;

@compute @workgroup_size(256)
fn acc_scaled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i < ap.n) {
        acc_dst[i] = acc_dst[i] + ap.c * acc_src[i];
    }
}

// ---------------------------------------------------------------- broadcasting forward
// y[i] = a[ia] op b[ib]; i decomposes over the collapsed output dims, and each operand
// has a stride per dim (0 where it broadcasts). Per-dim fields hold up to 8 dims.
struct BinaryParams {
    n: u32,
    rank: u32,
    kind: u32, // 0 add, 1 sub, 2 mul
    _pad: u32,
    dims: array<vec4<u32>, 2>,
    sa: array<vec4<u32>, 2>,
    sb: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> bp: BinaryParams;
@group(0) @binding(1) var<storage, read> bin_a: array<f32>;
@group(0) @binding(2) var<storage, read> bin_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> bin_y: array<f32>;

@compute @workgroup_size(256)
fn binary_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= bp.n) {
        return;
    }
    var rem = i;
    var ia = 0u;
    var ib = 0u;
    for (var k = bp.rank - 1u; k > 0u; k = k - 1u) {
        let d = bp.dims[k >> 2u][k & 3u];
        let c = rem % d;
        rem = rem / d;
        ia = ia + c * bp.sa[k >> 2u][k & 3u];
        ib = ib + c * bp.sb[k >> 2u][k & 3u];
    }
    ia = ia + rem * bp.sa[0].x;
    ib = ib + rem * bp.sb[0].x;
    let a = bin_a[ia];
    let b = bin_b[ib];
    var y: f32;
    switch bp.kind {
        case 0u: { y = a + b; }
        case 1u: { y = a - b; }
        default: { y = a * b; }
    }
    bin_y[i] = y;
}

// ---------------------------------------------------------------- broadcasting gradient
// g[j] += sign * sum over the output positions o that read operand element j of
//         gy[o] * (mul ? other[io] : 1).
// The collapsed dims split into kept dims (the operand varies along them; j decomposes
// over them) and reduced dims (it broadcasts; the sum runs over them). Each dim carries
// its size, its output stride and the other operand's stride.
struct BinaryGradParams {
    n: u32,  // gradient elements (product of kept dims)
    m: u32,  // positions summed per element (product of reduced dims)
    nk: u32, // number of kept dims
    nr: u32, // number of reduced dims
    mul: u32,
    sign: f32,
    _p0: u32,
    _p1: u32,
    k_size: array<vec4<u32>, 2>,
    k_out: array<vec4<u32>, 2>,
    k_oth: array<vec4<u32>, 2>,
    r_size: array<vec4<u32>, 2>,
    r_out: array<vec4<u32>, 2>,
    r_oth: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> rp: BinaryGradParams;
@group(0) @binding(1) var<storage, read> rg_gy: array<f32>;
@group(0) @binding(2) var<storage, read> rg_other: array<f32>;
@group(0) @binding(3) var<storage, read_write> rg_g: array<f32>;

// (output offset, other offset) of gradient element j over the kept dims
fn kept_offsets(j: u32) -> vec2<u32> {
    if (rp.nk == 0u) {
        return vec2<u32>(0u, 0u);
    }
    var rem = j;
    var o = vec2<u32>(0u, 0u);
    for (var k = rp.nk - 1u; k > 0u; k = k - 1u) {
        let d = rp.k_size[k >> 2u][k & 3u];
        let c = rem % d;
        rem = rem / d;
        o = o + c * vec2<u32>(rp.k_out[k >> 2u][k & 3u], rp.k_oth[k >> 2u][k & 3u]);
    }
    return o + rem * vec2<u32>(rp.k_out[0].x, rp.k_oth[0].x);
}

// (output offset, other offset) of reduced position r
fn reduced_offsets(r: u32) -> vec2<u32> {
    if (rp.nr == 0u) {
        return vec2<u32>(0u, 0u);
    }
    var rem = r;
    var o = vec2<u32>(0u, 0u);
    for (var k = rp.nr - 1u; k > 0u; k = k - 1u) {
        let d = rp.r_size[k >> 2u][k & 3u];
        let c = rem % d;
        rem = rem / d;
        o = o + c * vec2<u32>(rp.r_out[k >> 2u][k & 3u], rp.r_oth[k >> 2u][k & 3u]);
    }
    return o + rem * vec2<u32>(rp.r_out[0].x, rp.r_oth[0].x);
}

// partial sum over reduced positions first, first + step, ... of gradient element at base
fn grad_partial(base: vec2<u32>, first: u32, step: u32) -> f32 {
    var acc = 0.0;
    if (rp.mul != 0u) {
        for (var r = first; r < rp.m; r = r + step) {
            let o = base + reduced_offsets(r);
            acc = acc + rg_gy[o.x] * rg_other[o.y];
        }
    } else {
        for (var r = first; r < rp.m; r = r + step) {
            acc = acc + rg_gy[base.x + reduced_offsets(r).x];
        }
    }
    return acc;
}

// One thread per gradient element: neighbouring threads read neighbouring outputs when
// the kept dims are innermost (bias-like operands), so the loads coalesce.
@compute @workgroup_size(256)
fn binary_grad_thread(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (j >= rp.n) {
        return;
    }
    let acc = grad_partial(kept_offsets(j), 0u, 1u);
    rg_g[j] = rg_g[j] + rp.sign * acc;
}


// One workgroup per gradient element (few elements, long reductions: scalar weights).
@compute @workgroup_size(256)
fn binary_grad_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = wid.x + wid.y * nwg.x;
    if (j >= rp.n) {
        return; // uniform across the workgroup
    }
    partial[lid] = grad_partial(kept_offsets(j), lid, 256u);
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            partial[lid] = partial[lid] + partial[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        rg_g[j] = rg_g[j] + rp.sign * partial[0];
    }
}

// ---------------------------------------------------------------- row copies
// dst[r * dst_ld + dst_off + j] (= | +=) src[r * src_ld + src_off + j], j < cols
struct CopyColsParams {
    rows: u32,
    cols: u32,
    src_ld: u32,
    src_off: u32,
    dst_ld: u32,
    dst_off: u32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> cp: CopyColsParams;
@group(0) @binding(1) var<storage, read> cp_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> cp_dst: array<f32>;

@compute @workgroup_size(256)
fn copy_cols(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= cp.rows * cp.cols) {
        return;
    }
    let r = i / cp.cols;
    let j = i - r * cp.cols;
    let v = cp_src[r * cp.src_ld + cp.src_off + j];
    let o = r * cp.dst_ld + cp.dst_off + j;
    if (cp.accumulate != 0u) {
        cp_dst[o] = cp_dst[o] + v;
    } else {
        cp_dst[o] = v;
    }
}

// y[r, :] = [a[r, :] | b[r, :]]
struct ConcatParams {
    n: u32,
    da: u32,
    db: u32,
}

@group(0) @binding(0) var<uniform> ccp: ConcatParams;
@group(0) @binding(1) var<storage, read> cc_a: array<f32>;
@group(0) @binding(2) var<storage, read> cc_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> cc_y: array<f32>;

@compute @workgroup_size(256)
fn concat_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= ccp.n) {
        return;
    }
    let d = ccp.da + ccp.db;
    let r = i / d;
    let j = i - r * d;
    // branch, not select: select would read both sides, one of them out of range
    if (j < ccp.da) {
        cc_y[i] = cc_a[r * ccp.da + j];
    } else {
        cc_y[i] = cc_b[r * ccp.db + (j - ccp.da)];
    }
}
