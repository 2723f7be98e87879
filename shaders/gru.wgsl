// Fused GRU cell gates (PyTorch GRUCell, gate order r, z, n), one thread per element
// of h. gi, gh: [rows, 3D]; h, y: [rows, D]. saved = planes r | z | n, each [rows * D].
// Consecutive threads take consecutive j within a row, so every gate read is coalesced.

struct GruParams {
    n: u32,   // rows * D
    d: u32,
}

@group(0) @binding(0) var<uniform> p: GruParams;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// tanh as on the CPU (tanh_fast in src/ops/gru.rs): an odd Taylor polynomial near 0,
// (1 - e^-2|x|) / (1 + e^-2|x|) elsewhere; e^-2|x| <= 1, so never inf/inf at large |x|.
fn tanh_stable(x: f32) -> f32 {
    let x2 = x * x;
    let poly = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))));
    let t = exp(-2.0 * abs(x));
    let far = sign(x) * (1.0 - t) / (1.0 + t);
    return select(far, poly, abs(x) < 0.25);
}

fn thread_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

// Offset of gate 0 of element i in a [rows, 3D] tensor.
fn gate_base(i: u32) -> u32 {
    let row = i / p.d;
    return row * 3u * p.d + (i - row * p.d);
}

// ---- forward
@group(0) @binding(1) var<storage, read> f_gi: array<f32>;
@group(0) @binding(2) var<storage, read> f_gh: array<f32>;
@group(0) @binding(3) var<storage, read> f_h: array<f32>;
@group(0) @binding(4) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(5) var<storage, read_write> f_saved: array<f32>;

@compute @workgroup_size(256)
fn gru_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = thread_index(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let g = gate_base(i);
    let r = sigmoid(f_gi[g] + f_gh[g]);
    let z = sigmoid(f_gi[g + p.d] + f_gh[g + p.d]);
    let nn = tanh_stable(f_gi[g + 2u * p.d] + r * f_gh[g + 2u * p.d]);
    f_y[i] = (1.0 - z) * nn + z * f_h[i];
    f_saved[i] = r;
    f_saved[p.n + i] = z;
    f_saved[2u * p.n + i] = nn;
}

// Gradients w.r.t. the gate pre-activations (a_r, a_z, a_n) of element i, and r.
struct GateGrads {
    da_r: f32,
    da_z: f32,
    da_n: f32,
    r: f32,
}

fn gate_grads(r: f32, z: f32, nn: f32, g: f32, gh_n: f32, h: f32) -> GateGrads {
    let da_n = g * (1.0 - z) * (1.0 - nn * nn);
    let da_z = g * (h - nn) * z * (1.0 - z);
    let da_r = da_n * gh_n * r * (1.0 - r);
    return GateGrads(da_r, da_z, da_n, r);
}

// ---- backward, all three gradients in one pass
@group(0) @binding(1) var<storage, read> ba_gh: array<f32>;
@group(0) @binding(2) var<storage, read> ba_h: array<f32>;
@group(0) @binding(3) var<storage, read> ba_saved: array<f32>;
@group(0) @binding(4) var<storage, read> ba_gy: array<f32>;
@group(0) @binding(5) var<storage, read_write> ba_dgi: array<f32>;
@group(0) @binding(6) var<storage, read_write> ba_dgh: array<f32>;
@group(0) @binding(7) var<storage, read_write> ba_dh: array<f32>;

@compute @workgroup_size(256)
fn gru_backward_all(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = thread_index(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let gb = gate_base(i);
    let z = ba_saved[p.n + i];
    let g = ba_gy[i];
    let d = gate_grads(ba_saved[i], z, ba_saved[2u * p.n + i], g, ba_gh[gb + 2u * p.d], ba_h[i]);
    ba_dgi[gb] = ba_dgi[gb] + d.da_r;
    ba_dgi[gb + p.d] = ba_dgi[gb + p.d] + d.da_z;
    ba_dgi[gb + 2u * p.d] = ba_dgi[gb + 2u * p.d] + d.da_n;
    ba_dgh[gb] = ba_dgh[gb] + d.da_r;
    ba_dgh[gb + p.d] = ba_dgh[gb + p.d] + d.da_z;
    ba_dgh[gb + 2u * p.d] = ba_dgh[gb + 2u * p.d] + d.da_n * d.r;
    ba_dh[i] = ba_dh[i] + g * z;
}

// ---- backward, one gradient at a time (when some inputs are frozen)
@group(0) @binding(1) var<storage, read> bg_gh: array<f32>;
@group(0) @binding(2) var<storage, read> bg_h: array<f32>;
@group(0) @binding(3) var<storage, read> bg_saved: array<f32>;
@group(0) @binding(4) var<storage, read> bg_gy: array<f32>;
@group(0) @binding(5) var<storage, read_write> bg_out: array<f32>;

fn grads_for(i: u32, gb: u32) -> GateGrads {
    return gate_grads(bg_saved[i], bg_saved[p.n + i], bg_saved[2u * p.n + i], bg_gy[i], bg_gh[gb + 2u * p.d], bg_h[i]);
}

@compute @workgroup_size(256)
fn gru_backward_gi(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = thread_index(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let gb = gate_base(i);
    let d = grads_for(i, gb);
    bg_out[gb] = bg_out[gb] + d.da_r;
    bg_out[gb + p.d] = bg_out[gb + p.d] + d.da_z;
    bg_out[gb + 2u * p.d] = bg_out[gb + 2u * p.d] + d.da_n;
}

@compute @workgroup_size(256)
fn gru_backward_gh(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = thread_index(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let gb = gate_base(i);
    let d = grads_for(i, gb);
    bg_out[gb] = bg_out[gb] + d.da_r;
    bg_out[gb + p.d] = bg_out[gb + p.d] + d.da_z;
    bg_out[gb + 2u * p.d] = bg_out[gb + 2u * p.d] + d.da_n * d.r;
}

@group(0) @binding(1) var<storage, read> bh_saved: array<f32>;
@group(0) @binding(2) var<storage, read> bh_gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bh_dh: array<f32>;

@compute @workgroup_size(256)
fn gru_backward_h(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = thread_index(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    bh_dh[i] = bh_dh[i] + bh_gy[i] * bh_saved[p.n + i];
}
