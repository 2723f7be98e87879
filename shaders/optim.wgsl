// Adam with global gradient-norm clipping, entirely on the device (no readback):
//   sumsq_partial  (one dispatch per param): each workgroup writes the sum of squares of a
//                  strided slice of the gradient into its own slot of `partials`;
//   norm_finalize  (one workgroup): sums the slots in a fixed order (deterministic, no
//                  float atomics), stores norm, clip scale and this step's hyper-parameters;
//   adam_update    (one dispatch per param): element-wise update with the clipped gradient.
// stats = [norm, clip scale, lr / (1 - beta1^t), sqrt(1 - beta2^t)]; hyper = the last two,
// uploaded by the host once per step.

struct AdamParams {
    n: u32,         // elements (sumsq_partial, adam_update) or partial slots (norm_finalize)
    slot: u32,      // first partial slot of this param (sumsq_partial)
    max_norm: f32,  // clip threshold, 0 = no clipping (norm_finalize)
    beta1: f32,
    beta2: f32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: AdamParams;



// ---- partial sums of squares; the dispatch has at most 256 workgroups along x
@group(0) @binding(1) var<storage, read> sq_g: array<f32>;
@group(0) @binding(2) var<storage, read_write> sq_partials: array<f32>;

@compute @workgroup_size(256)
fn sumsq_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    let stride = nwg.x * 256u;
    for (var i = wid.x * 256u + lid; i < p.n; i = i + stride) {
        let g = sq_g[i];
        acc = acc + g * g;
    }
    partial[lid] = acc;
    let total = tree_sum(lid);
    if (lid == 0u) {
        sq_partials[p.slot + wid.x] = total;
    }
}

// ---- norm, clip scale (torch.nn.utils.clip_grad_norm_: min(1, max / (norm + 1e-6)))
@group(0) @binding(1) var<storage, read> fin_partials: array<f32>;
@group(0) @binding(2) var<storage, read> fin_hyper: array<f32>;
@group(0) @binding(3) var<storage, read_write> fin_stats: array<f32>;

@compute @workgroup_size(256)
fn norm_finalize(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < p.n; i = i + 256u) {
        acc = acc + fin_partials[i];
    }
    partial[lid] = acc;
    let total = tree_sum(lid);
    if (lid == 0u) {
        let norm = sqrt(total);
        var scale = 1.0;
        if (p.max_norm > 0.0) {
            scale = min(1.0, p.max_norm / (norm + 1e-6));
        }
        fin_stats[0] = norm;
        fin_stats[1] = scale;
        fin_stats[2] = fin_hyper[0];
        fin_stats[3] = fin_hyper[1];
    }
}

// ---- Adam update (PyTorch: eps added after the bias-corrected sqrt, no weight decay)
@group(0) @binding(1) var<storage, read_write> up_p: array<f32>;
@group(0) @binding(2) var<storage, read> up_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> up_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> up_v: array<f32>;
@group(0) @binding(5) var<storage, read> up_stats: array<f32>;

@compute @workgroup_size(256)
fn adam_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i < p.n) {
        let g = up_g[i] * up_stats[1];
        let m = p.beta1 * up_m[i] + (1.0 - p.beta1) * g;
        let v = p.beta2 * up_v[i] + (1.0 - p.beta2) * g * g;
        up_m[i] = m;
        up_v[i] = v;
        up_p[i] = up_p[i] - up_stats[2] * m / (sqrt(v) / up_stats[3] + p.eps);
    }
}
