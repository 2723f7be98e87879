//! `infer` on the PyTorch reference vectors, written as a checkpoint plus .npy inputs,
//! reproduces `output.*` on both backends; `score` agrees with the metrics module.

use std::path::PathBuf;

use slotforge::backend::DeviceKind;
use slotforge::checkpoint::TensorFile;
use slotforge::data::npy;
use slotforge::train::commands;

fn reference(name: &str) -> TensorFile {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference").join(name);
    TensorFile::load(&p).unwrap()
}

#[test]
fn infer_reproduces_the_reference_outputs_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["feature_model_a.safetensors", "feature_model_b.safetensors"] {
        let refs = reference(file);
        // the checkpoint: parameters only, with the config metadata, as `train` writes it
        let mut ckpt = TensorFile::default();
        for (name, t) in &refs.tensors {
            if name.starts_with("input.") || name.starts_with("output.") || name.starts_with("loss.") || name.starts_with("grad.") {
                continue;
            }
            ckpt.insert(name, &t.shape, t.data.clone());
        }
        ckpt.metadata.insert("slotforge.config".into(), refs.metadata["slotforge.config"].clone());
        let ckpt_path = dir.path().join("model.safetensors");
        ckpt.save(&ckpt_path).unwrap();
        let feats = refs.get("input.features").unwrap();
        let noise = refs.get("input.noise").unwrap();
        let (fp, np) = (dir.path().join("features.npy"), dir.path().join("noise.npy"));
        npy::write_f32(&fp, &feats.data, &feats.shape).unwrap();
        npy::write_f32(&np, &noise.data, &noise.shape).unwrap();
        for device in [DeviceKind::Cpu, DeviceKind::Vulkan] {
            let out = dir.path().join(format!("out-{device:?}.safetensors"));
            commands::infer(&ckpt_path, &fp, Some(&np), &out, device).unwrap();
            let got = TensorFile::load(&out).unwrap();
            for name in ["slots", "attn", "alpha", "recon"] {
                let (g, w) = (&got.get(name).unwrap(), refs.get(&format!("output.{name}")).unwrap());
                assert_eq!(g.shape, w.shape, "{name} shape");
                let scale = w.data.iter().fold(0f32, |m, x| m.max(x.abs()));
                let err = g.data.iter().zip(&w.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale;
                println!("REF infer {file} {device:?} {name}: max_rel_err={err:.2e}");
                assert!(err < 1e-5, "{file} {device:?}: {name} off by {err:.2e}");
            }
        }
    }
}

#[test]
fn infer_rejects_features_of_the_wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    let refs = reference("feature_model_a.safetensors");
    let mut ckpt = TensorFile::default();
    for (name, t) in &refs.tensors {
        if !(name.starts_with("input.") || name.starts_with("output.") || name.starts_with("loss.") || name.starts_with("grad.")) {
            ckpt.insert(name, &t.shape, t.data.clone());
        }
    }
    ckpt.metadata.insert("slotforge.config".into(), refs.metadata["slotforge.config"].clone());
    let ckpt_path = dir.path().join("model.safetensors");
    ckpt.save(&ckpt_path).unwrap();
    let fp = dir.path().join("features.npy");
    npy::write_f32(&fp, &vec![0.0; 2 * 15 * 24], &[2, 15, 24]).unwrap();
    let out = dir.path().join("out.safetensors");
    let e = commands::infer(&ckpt_path, &fp, None, &out, DeviceKind::Cpu).unwrap_err().to_string();
    assert!(e.contains("[2, 15, 24]") && e.contains("16"), "{e}");
    assert!(!out.exists(), "nothing may be written on error");
}

#[test]
fn score_matches_the_metrics_module() {
    let dir = tempfile::tempdir().unwrap();
    let truth: Vec<u8> = (0..2 * 36).map(|i| ((i % 36) / 12) as u8).collect();
    let pred: Vec<u8> = (0..2 * 36).map(|i| ((i % 36) / 9) as u8).collect();
    let (tp, pp) = (dir.path().join("t.npy"), dir.path().join("p.npy"));
    npy::write_u8(&tp, &truth, &[2, 6, 6]).unwrap();
    npy::write_u8(&pp, &pred, &[2, 6, 6]).unwrap();
    let got = commands::score(&pp, &tp).unwrap();
    let t32: Vec<u32> = truth.iter().map(|&v| v as u32).collect();
    let p32: Vec<u32> = pred.iter().map(|&v| v as u32).collect();
    let want = slotforge::metrics::score_batch(&t32, &p32, 36);
    assert!((got["ari"].as_f64().unwrap() - want.ari).abs() < 1e-12);
    assert!((got["fg_ari"].as_f64().unwrap() - want.fg_ari).abs() < 1e-12);
    assert!(want.ari < 1.0 && want.ari > 0.0);
}
