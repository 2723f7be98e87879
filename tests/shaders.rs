//! Every file in `shaders/` parses and validates with naga, so a WGSL error fails
//! `cargo test` even on a machine without any adapter.

use std::path::Path;

#[test]
fn every_shader_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut count = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        count += 1;
        // as the `shader!` macro builds them: shaders/common.wgsl, then the file
        let common = std::fs::read_to_string(dir.join("common.wgsl")).unwrap();
        let own = std::fs::read_to_string(&path).unwrap();
        let src = if path.ends_with("common.wgsl") { own } else { common + &own };
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let module = match naga::front::wgsl::parse_str(&src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(e.emit_to_string_with_path(&src, &name));
                continue;
            }
        };
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default());
        if let Err(e) = v.validate(&module) {
            failures.push(format!("{name}: {}", e.emit_to_string(&src)));
            continue;
        }
        let entries = module.entry_points.len();
        assert!(entries > 0 || name == "common.wgsl", "{name} has no entry point");
        println!("validated {name}: {entries} entry points");
    }
    assert!(count > 0, "no shaders found in {}", dir.display());
    assert!(failures.is_empty(), "shader errors:\n{}", failures.join("\n"));
}
