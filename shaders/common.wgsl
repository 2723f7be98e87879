// Prepended to every shader by `Shader::source` (crates/slotforge-engine/src/backend/gpu.rs): what many kernels
// share. WGSL has no include; a module-scope item a kernel does not use costs nothing.

// The flat index of a 1-D kernel with @workgroup_size(256): dispatch_1d spreads large
// counts over x and y to respect the 65535-groups-per-dimension limit.
fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

// Scratch of workgroup reductions.
var<workgroup> partial: array<f32, 256>;

// Sum of partial[0..256] (each thread stored its value first); every thread gets it.
fn tree_sum(lid: u32) -> f32 {
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            partial[lid] = partial[lid] + partial[lid + s];
        }
        workgroupBarrier();
    }
    return partial[0];
}
