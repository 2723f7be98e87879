//! The application's shaders validate and translate for every backend, its kernel parameter
//! structs match the WGSL ones, and every file in `shaders/` belongs to one crate's op.

#[path = "../crates/slotforge-engine/tests/support/shaders.rs"]
mod shaders;

use slotforge::ops::{app_kernel_params, APP_SHADERS};

#[test]
fn app_shaders_translate_and_params_match() {
    let mut names = APP_SHADERS.to_vec();
    names.push("peak");
    let mut params = app_kernel_params();
    params.push(slotforge_engine::params::ParamsLayout::of::<slotforge::bench::PeakParams>());
    shaders::check_all(&names, &params);
}

#[test]
fn every_shader_file_is_embedded_by_one_crate() {
    let mut owned: Vec<&str> = slotforge_engine::ops::SHADERS.iter().chain(APP_SHADERS).copied().collect();
    owned.extend(["peak", "common"]);
    owned.sort();
    let mut files: Vec<String> = std::fs::read_dir(shaders::shader_dir())
        .unwrap()
        .filter_map(|e| e.unwrap().path().file_stem().map(|s| s.to_string_lossy().to_string()))
        .collect();
    files.sort();
    assert_eq!(files, owned, "shaders/ and the crates' shader lists differ");
}
