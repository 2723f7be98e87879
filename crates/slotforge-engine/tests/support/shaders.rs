//! Shader checks shared by the engine's and the application's shader tests (each includes
//! this file): every WGSL file parses and validates with naga, every entry point translates
//! to MSL, HLSL and SPIR-V (the SPIR-V read back and validated, and passed to `spirv-val`
//! where installed), and every kernel parameter struct of the Rust side has the layout of
//! the WGSL struct of the same name. A shader that the Metal or DX12 path cannot take fails
//! here, on a machine without any GPU.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use slotforge_engine::params::ParamsLayout;

/// `shaders/` of the repository.
pub fn shader_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().find(|d| d.join("shaders/common.wgsl").exists()).expect("shaders/ above the crate").join("shaders")
}

/// The module as the engine compiles it: `common.wgsl`, then `shaders/<name>.wgsl`.
pub fn source(name: &str) -> String {
    let dir = shader_dir();
    let common = std::fs::read_to_string(dir.join("common.wgsl")).unwrap();
    let own = std::fs::read_to_string(dir.join(format!("{name}.wgsl"))).unwrap_or_else(|e| panic!("shaders/{name}.wgsl: {e}"));
    common + &own
}

fn parse(name: &str, src: &str) -> Result<naga::Module, String> {
    naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string_with_path(src, &format!("{name}.wgsl")))
}

fn validate(name: &str, src: &str, module: &naga::Module, caps: Capabilities, target: &str) -> Result<naga::valid::ModuleInfo, String> {
    Validator::new(ValidationFlags::all(), caps).validate(module).map_err(|e| format!("{name}.wgsl for {target}: {}", e.emit_to_string(src)))
}

/// Parse, validate and translate every entry point of `shaders/<name>.wgsl` to MSL, HLSL and
/// SPIR-V. Returns the number of entry points.
pub fn check_shader(name: &str) -> Result<usize, String> {
    let src = source(name);
    let module = parse(name, &src)?;
    validate(name, &src, &module, Capabilities::default(), "wgpu")?;
    let entries: Vec<String> = module.entry_points.iter().map(|e| e.name.clone()).collect();
    if entries.is_empty() {
        return Err(format!("{name}.wgsl has no entry point"));
    }
    let stage = naga::ShaderStage::Compute;
    // Metal
    let info = validate(name, &src, &module, msl::supported_capabilities(), "Metal")?;
    for e in &entries {
        let pipeline = msl::PipelineOptions { entry_point: Some((stage, e.clone())), ..Default::default() };
        let opts = msl::Options { lang_version: (2, 1), ..Default::default() };
        msl::write_string(&module, &info, &opts, &pipeline).map_err(|err| format!("{name}.wgsl {e} -> MSL: {err}"))?;
    }
    // DX12
    let info = validate(name, &src, &module, hlsl::supported_capabilities(), "DX12")?;
    for e in &entries {
        let pipeline = hlsl::PipelineOptions { entry_point: Some((stage, e.clone())) };
        let opts = hlsl::Options { shader_model: hlsl::ShaderModel::V6_0, ..Default::default() };
        let mut out = String::new();
        hlsl::Writer::new(&mut out, &opts, &pipeline).write(&module, &info, None).map_err(|err| format!("{name}.wgsl {e} -> HLSL: {err}"))?;
    }
    // Vulkan
    let info = validate(name, &src, &module, spv::supported_capabilities(), "Vulkan")?;
    for e in &entries {
        let pipeline = spv::PipelineOptions { shader_stage: stage, entry_point: e.clone() };
        let words = spv::write_vec(&module, &info, &spv::Options::default(), Some(&pipeline)).map_err(|err| format!("{name}.wgsl {e} -> SPIR-V: {err}"))?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let back = naga::front::spv::parse_u8_slice(&bytes, &Default::default()).map_err(|err| format!("{name}.wgsl {e}: SPIR-V does not read back: {err}"))?;
        Validator::new(ValidationFlags::all(), Capabilities::all()).validate(&back).map_err(|err| format!("{name}.wgsl {e}: SPIR-V read back is invalid: {err}"))?;
        spirv_val(&format!("{name}-{e}"), &bytes)?;
    }
    Ok(entries.len())
}

/// The Khronos validator, where installed (`scripts/test.sh` installs it and sets
/// SLOTFORGE_REQUIRE_SPIRV_VAL, so there it is never left out).
fn spirv_val(what: &str, bytes: &[u8]) -> Result<(), String> {
    let required = std::env::var_os("SLOTFORGE_REQUIRE_SPIRV_VAL").is_some();
    let path = std::env::temp_dir().join(format!("slotforge-{}-{what}.spv", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("spirv-val").args(["--target-env", "vulkan1.1"]).arg(&path).output();
    let _ = std::fs::remove_file(&path);
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("spirv-val {what}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))),
        Err(_) if required => Err("spirv-val not found (apt-get install spirv-tools)".into()),
        Err(_) => Ok(()),
    }
}

/// The Rust layout of a kernel parameter struct equals the WGSL struct of the same name:
/// same fields in the same order, at the same offsets, of the same size and scalar type.
pub fn check_params(p: &ParamsLayout) -> Result<(), String> {
    let src = source(p.shader);
    let module = parse(p.shader, &src)?;
    let gctx = module.to_ctx();
    let (_, ty) = module.types.iter().find(|(_, t)| t.name.as_deref() == Some(p.name)).ok_or_else(|| format!("{}.wgsl has no struct {}", p.shader, p.name))?;
    let naga::TypeInner::Struct { members, span } = &ty.inner else { return Err(format!("{} is not a struct", p.name)) };
    let wgsl: Vec<(String, usize, usize, String)> = members
        .iter()
        .map(|m| {
            let inner = &module.types[m.ty].inner;
            let ty = match inner {
                naga::TypeInner::Scalar(s) if *s == naga::Scalar::U32 => "u32".to_string(),
                naga::TypeInner::Scalar(s) if *s == naga::Scalar::F32 => "f32".to_string(),
                naga::TypeInner::Array { base, size: naga::ArraySize::Constant(n), .. } => match module.types[*base].inner {
                    naga::TypeInner::Vector { size: naga::VectorSize::Quad, scalar } if scalar == naga::Scalar::U32 => format!("[[u32; 4]; {n}]"),
                    ref other => format!("array of {other:?}"),
                },
                other => format!("{other:?}"),
            };
            (m.name.clone().unwrap_or_default(), m.offset as usize, inner.size(gctx) as usize, ty)
        })
        .collect();
    let rust: Vec<(String, usize, usize, String)> =
        p.fields.iter().map(|f| (f.name.to_string(), f.offset, f.size, f.ty.replace("Dims8", "[[u32; 4]; 2]"))).collect();
    if wgsl != rust {
        return Err(format!("{} ({}.wgsl) differs:\n  WGSL {wgsl:?}\n  Rust {rust:?}", p.name, p.shader));
    }
    if p.size > *span as usize {
        return Err(format!("{}: Rust struct of {} bytes, WGSL of {span}", p.name, p.size));
    }
    Ok(())
}

/// Run both checks over `shaders` and `params`, reporting every failure at once.
pub fn check_all(shaders: &[&str], params: &[ParamsLayout]) {
    let mut failures = Vec::new();
    for name in shaders {
        match check_shader(name) {
            Ok(n) => println!("shader {name}.wgsl: {n} entry points validated and translated to MSL, HLSL, SPIR-V"),
            Err(e) => failures.push(e),
        }
    }
    for p in params {
        match check_params(p) {
            Ok(()) => println!("params {} matches {}.wgsl ({} fields)", p.name, p.shader, p.fields.len()),
            Err(e) => failures.push(e),
        }
    }
    assert!(!shaders.is_empty() && !params.is_empty(), "nothing to check");
    assert!(failures.is_empty(), "shader errors:\n{}", failures.join("\n"));
}
