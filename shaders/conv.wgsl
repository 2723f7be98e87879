// 2-D convolution, NHWC activations, weight [Cout, Cin, kh, kw], zero padding.
//   conv_forward[_bias]: one thread per output pixel and block of 4 output channels: each
//                        input value is loaded once for 4 FMAs; neighbouring threads share
//                        the pixel (its input is a broadcast read).
//   conv_dx:             transposed conv by index math, one thread per input pixel and block
//                        of 4 input channels; only the taps with (i + pad - k) % stride == 0
//                        are visited.
//   conv_dw:             per kernel tap, a 16 (ci) x 16 (co) tile of the weight gradient per
//                        workgroup; 64 output pixels at a time are staged in workgroup memory
//                        (coalesced channel-contiguous loads), each thread owns one weight
//                        element: a reduction over B*Ho*Wo without atomics.
//   conv_db:             16 channels per workgroup, 16 lanes over the pixels, tree reduction.

struct ConvParams {
    batch: u32,
    h: u32,
    w: u32,
    cin: u32,
    cout: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    ho: u32,
    wo: u32,
    n: u32,   // threads (forward, dx) or weight tiles (dw)
}

@group(0) @binding(0) var<uniform> p: ConvParams;


// ---- forward
@group(0) @binding(1) var<storage, read> fx: array<f32>;
@group(0) @binding(2) var<storage, read> fw: array<f32>;
@group(0) @binding(3) var<storage, read_write> fy: array<f32>;
@group(0) @binding(4) var<storage, read> fb: array<f32>;

// Output channels co0..co0+3 of output pixel `pix`; lanes past Cout repeat the last channel.
fn forward_block(pix: u32, co0: u32) -> vec4<f32> {
    let ox = pix % p.wo;
    let r = pix / p.wo;
    let oy = r % p.ho;
    let b = r / p.ho;
    let kk = p.kh * p.kw;
    let wco = p.cin * kk;
    let last = p.cout - 1u;
    let w0 = min(co0, last) * wco;
    let w1 = min(co0 + 1u, last) * wco;
    let w2 = min(co0 + 2u, last) * wco;
    let w3 = min(co0 + 3u, last) * wco;
    var acc = vec4<f32>(0.0);
    for (var ky = 0u; ky < p.kh; ky = ky + 1u) {
        let iy = i32(oy * p.stride + ky) - i32(p.pad);
        if (iy < 0 || iy >= i32(p.h)) {
            continue;
        }
        for (var kx = 0u; kx < p.kw; kx = kx + 1u) {
            let ix = i32(ox * p.stride + kx) - i32(p.pad);
            if (ix < 0 || ix >= i32(p.w)) {
                continue;
            }
            let xb = ((b * p.h + u32(iy)) * p.w + u32(ix)) * p.cin;
            let tap = ky * p.kw + kx;
            for (var ci = 0u; ci < p.cin; ci = ci + 1u) {
                let wi = ci * kk + tap;
                acc = acc + fx[xb + ci] * vec4<f32>(fw[w0 + wi], fw[w1 + wi], fw[w2 + wi], fw[w3 + wi]);
            }
        }
    }
    return acc;
}

fn store_y(pix: u32, co0: u32, v: vec4<f32>) {
    let base = pix * p.cout + co0;
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (co0 + j < p.cout) {
            fy[base + j] = v[j];
        }
    }
}

@compute @workgroup_size(256)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (t >= p.n) {
        return;
    }
    let ncb = (p.cout + 3u) / 4u;
    let pix = t / ncb;
    let co0 = (t % ncb) * 4u;
    store_y(pix, co0, forward_block(pix, co0));
}

@compute @workgroup_size(256)
fn conv_forward_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (t >= p.n) {
        return;
    }
    let ncb = (p.cout + 3u) / 4u;
    let pix = t / ncb;
    let co0 = (t % ncb) * 4u;
    let last = p.cout - 1u;
    let bias = vec4<f32>(fb[min(co0, last)], fb[min(co0 + 1u, last)], fb[min(co0 + 2u, last)], fb[min(co0 + 3u, last)]);
    store_y(pix, co0, forward_block(pix, co0) + bias);
}

// ---- dx += conv_transpose(dy, w)
@group(0) @binding(1) var<storage, read> dx_gy: array<f32>;
@group(0) @binding(2) var<storage, read> dx_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx_gx: array<f32>;

@compute @workgroup_size(256)
fn conv_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (t >= p.n) {
        return;
    }
    let ncb = (p.cin + 3u) / 4u;
    let pix = t / ncb;
    let ci0 = (t % ncb) * 4u;
    let ix = pix % p.w;
    let r = pix / p.w;
    let iy = r % p.h;
    let b = r / p.h;
    let kk = p.kh * p.kw;
    let wco = p.cin * kk;
    let last = p.cin - 1u;
    let c0 = min(ci0, last) * kk;
    let c1 = min(ci0 + 1u, last) * kk;
    let c2 = min(ci0 + 2u, last) * kk;
    let c3 = min(ci0 + 3u, last) * kk;
    // Output row oy reads input row oy * stride + ky - pad = iy: ky runs over the residue
    // class of iy + pad and ky <= iy + pad keeps oy >= 0.
    let ky_end = min(p.kh, iy + p.pad + 1u);
    let kx_end = min(p.kw, ix + p.pad + 1u);
    var acc = vec4<f32>(0.0);
    for (var ky = (iy + p.pad) % p.stride; ky < ky_end; ky = ky + p.stride) {
        let oy = (iy + p.pad - ky) / p.stride;
        if (oy >= p.ho) {
            continue;
        }
        for (var kx = (ix + p.pad) % p.stride; kx < kx_end; kx = kx + p.stride) {
            let ox = (ix + p.pad - kx) / p.stride;
            if (ox >= p.wo) {
                continue;
            }
            let gb = ((b * p.ho + oy) * p.wo + ox) * p.cout;
            let tap = ky * p.kw + kx;
            for (var co = 0u; co < p.cout; co = co + 1u) {
                let wb = co * wco + tap;
                acc = acc + dx_gy[gb + co] * vec4<f32>(dx_w[wb + c0], dx_w[wb + c1], dx_w[wb + c2], dx_w[wb + c3]);
            }
        }
    }
    let base = pix * p.cin + ci0;
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (ci0 + j < p.cin) {
            dx_gx[base + j] = dx_gx[base + j] + acc[j];
        }
    }
}

// ---- dw += sum over output pixels of x(shifted by the tap) * dy
const DW_T: u32 = 16u;   // tile edge (ci and co); 16 x 16 = 256 threads
const DW_P: u32 = 64u;   // output pixels staged per round

@group(0) @binding(1) var<storage, read> dw_x: array<f32>;
@group(0) @binding(2) var<storage, read> dw_gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw_gw: array<f32>;

var<workgroup> dw_xs: array<f32, 1024>;   // [DW_P][DW_T] input channels
var<workgroup> dw_gs: array<f32, 1024>;   // [DW_P][DW_T] output channels

@compute @workgroup_size(256)
fn conv_dw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.n) {
        return; // whole workgroup: uniform
    }
    let nci = (p.cin + DW_T - 1u) / DW_T;
    let nco = (p.cout + DW_T - 1u) / DW_T;
    let tap = g / (nci * nco);
    let rem = g % (nci * nco);
    let ci0 = (rem / nco) * DW_T;
    let co0 = (rem % nco) * DW_T;
    let ky = tap / p.kw;
    let kx = tap % p.kw;
    let rows = p.batch * p.ho * p.wo;
    // load role: channel lane ld_c of pixel ld_p (+ 16 s); compute role: (ci_l, co_l)
    let ld_c = lid % DW_T;
    let ld_p = lid / DW_T;
    let ci_l = lid / DW_T;
    let co_l = lid % DW_T;
    let ci_ld = ci0 + ld_c;
    let co_ld = co0 + ld_c;
    var acc = 0.0;
    for (var r0 = 0u; r0 < rows; r0 = r0 + DW_P) {
        for (var s = 0u; s < DW_P / DW_T; s = s + 1u) {
            let pl = ld_p + s * DW_T;
            let r = r0 + pl;
            var xv = 0.0;
            var gv = 0.0;
            if (r < rows) {
                let ox = r % p.wo;
                let t = r / p.wo;
                let oy = t % p.ho;
                let b = t / p.ho;
                let iy = i32(oy * p.stride + ky) - i32(p.pad);
                let ix = i32(ox * p.stride + kx) - i32(p.pad);
                if (ci_ld < p.cin && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                    xv = dw_x[((b * p.h + u32(iy)) * p.w + u32(ix)) * p.cin + ci_ld];
                }
                if (co_ld < p.cout) {
                    gv = dw_gy[r * p.cout + co_ld];
                }
            }
            dw_xs[pl * DW_T + ld_c] = xv;
            dw_gs[pl * DW_T + ld_c] = gv;
        }
        workgroupBarrier();
        for (var j = 0u; j < DW_P; j = j + 1u) {
            acc = acc + dw_xs[j * DW_T + ci_l] * dw_gs[j * DW_T + co_l];
        }
        workgroupBarrier();
    }
    let ci = ci0 + ci_l;
    let co = co0 + co_l;
    if (ci < p.cin && co < p.cout) {
        let i = (co * p.cin + ci) * p.kh * p.kw + tap;
        dw_gw[i] = dw_gw[i] + acc;
    }
}

// ---- db += sum over output pixels of dy
@group(0) @binding(1) var<storage, read> db_gy: array<f32>;
@group(0) @binding(2) var<storage, read_write> db_gb: array<f32>;

var<workgroup> db_red: array<f32, 256>;

@compute @workgroup_size(256)
fn conv_db(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let co0 = (wid.x + wid.y * nwg.x) * DW_T;
    if (co0 >= p.cout) {
        return; // whole workgroup: uniform
    }
    let lane = lid / DW_T;
    let c = lid % DW_T;
    let co = co0 + c;
    let rows = p.batch * p.ho * p.wo;
    var acc = 0.0;
    if (co < p.cout) {
        for (var r = lane; r < rows; r = r + 16u) {
            acc = acc + db_gy[r * p.cout + co];
        }
    }
    db_red[lid] = acc;
    workgroupBarrier();
    for (var s = 8u; s > 0u; s = s >> 1u) {
        if (lane < s) {
            db_red[lid] = db_red[lid] + db_red[lid + s * DW_T];
        }
        workgroupBarrier();
    }
    if (lane == 0u && co < p.cout) {
        db_gb[co] = db_gb[co] + db_red[c];
    }
}
