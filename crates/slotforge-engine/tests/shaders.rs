//! The engine's shaders validate and translate for every backend, and its kernel
//! parameter structs match the WGSL ones (see `support/shaders.rs`).

#[path = "support/shaders.rs"]
mod shaders;

#[test]
fn engine_shaders_translate_and_params_match() {
    shaders::check_all(slotforge_engine::ops::SHADERS, &slotforge_engine::ops::kernel_params());
}
