//! Bad input on the command line: every subcommand that reads user input, against every
//! bad-input class (malformed / truncated / empty .npy, wrong dtype, wrong shapes, NaN / Inf,
//! malformed checkpoints, config errors, out-of-range values, unwritable outputs).
//!
//! Each case runs the real binary and asserts: a non-zero exit that is not a panic (1 for our
//! errors, 2 for clap's), stderr naming the problem (and the file), no panic or backtrace, and
//! that nothing was written: the whole fixture tree (names, sizes, mtimes) is the same after
//! the run as before it, so no output directory, no metrics.json, no *.safetensors, no *.npy,
//! no *.tmp leftovers. A control run per subcommand shows the same fixture is accepted when the
//! input is good, so each failure is caused by the one thing that was broken.
//! See docs/errors.md for the messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use slotforge::checkpoint::TensorFile;
use slotforge::data::npy::{encode_header, DType};
use slotforge::data::synthetic::generate;
use slotforge::model::init::init_params;
use slotforge::model::ModelConfig;
use slotforge::train::config::TrainConfig;

// ---------------------------------------------------------------------------------------
// fixture

const S: usize = 6; // scenes
const N: usize = 256; // tokens (16 x 16)
const F: usize = 8; // feature dim
const K: usize = 3; // slots
const D: usize = 8; // slot dim

fn npy<T: Copy>(dtype: DType, shape: &[usize], data: &[T], le: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    let mut b = encode_header(dtype, shape);
    data.iter().for_each(|&v| b.extend(le(v)));
    b
}
/// float32 .npy bytes, without the writer's finiteness check (so NaN / Inf can be planted)
fn npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    npy(DType::F32, shape, data, |v| v.to_le_bytes().to_vec())
}
fn npy_f64(shape: &[usize], data: &[f64]) -> Vec<u8> {
    npy(DType::F64, shape, data, |v| v.to_le_bytes().to_vec())
}
fn npy_u8(shape: &[usize], data: &[u8]) -> Vec<u8> {
    npy(DType::U8, shape, data, |v| vec![v])
}
fn npy_i64(shape: &[usize], data: &[i64]) -> Vec<u8> {
    npy(DType::I64, shape, data, |v| v.to_le_bytes().to_vec())
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length: the header
/// length field stays right).
fn replace_bytes(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from).expect("pattern not found");
    let mut b = bytes.to_vec();
    b[at..at + to.len()].copy_from_slice(to);
    b
}

fn put(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// The model of TINY_TOML (through TrainConfig, so new config fields keep their defaults).
fn model_config() -> ModelConfig {
    let cfg = TrainConfig { slot_dim: D, num_slots: K, mlp_hidden: 8, dec_hidden: 8, dec_layers: 2, iters: 3, ..TrainConfig::default() };
    cfg.model(N, F)
}

const TINY_TOML: &str = "val-count = 2\nslot-dim = 8\nmlp-hidden = 8\ndec-hidden = 8\nnum-slots = 3\nbatch-size = 2\nepochs = 1\ndevice = \"cpu\"\n";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// Everything the cases read, in one temporary directory (the commands run inside it, so
/// messages carry the short relative paths the cases look for).
fn fixture() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let ds = generate("clevr-features", S, 0, F).unwrap();
    ds.save(r.join("good")).unwrap();
    let all: Vec<usize> = (0..ds.count).collect();
    let feats = ds.features_batch(&all).unwrap();
    let masks = ds.masks_batch(&all).unwrap().unwrap();
    let (mh, mw) = ds.mask_hw;
    let good_f = npy_f32(&[S, N, F], &feats);
    let good_m = npy_u8(&[S, mh, mw], &masks);
    let with = |f: &[f32], at: usize, v: f32| {
        let mut x = f.to_vec();
        x[at] = v;
        x
    };

    // datasets: one broken thing each, next to good masks
    let dsets: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("bad_magic", b"NOTNUMPY this is not an npy file".to_vec(), good_m.clone()),
        ("empty", Vec::new(), good_m.clone()),
        ("truncated", good_f[..good_f.len() - 100].to_vec(), good_m.clone()),
        ("trailing", [good_f.clone(), vec![0u8; 4]].concat(), good_m.clone()),
        ("bad_header", replace_bytes(&good_f, b"{'descr'", b"{descr: "), good_m.clone()),
        ("int_features", npy_i64(&[S, N, F], &vec![1; S * N * F]), good_m.clone()),
        ("fortran", replace_bytes(&good_f, b"'fortran_order': False", b"'fortran_order': True "), good_m.clone()),
        ("rank2", npy_f32(&[S, N * F], &feats), good_m.clone()),
        ("not_square", npy_f32(&[S, 200, F], &feats[..S * 200 * F]), good_m.clone()),
        ("no_scenes", npy_f32(&[0, N, F], &[]), good_m.clone()),
        ("nan", npy_f32(&[S, N, F], &with(&feats, 100, f32::NAN)), good_m.clone()),
        ("inf", npy_f32(&[S, N, F], &with(&feats, 7, f32::INFINITY)), good_m.clone()),
        ("huge", npy_f32(&[S, N, F], &with(&feats, 5, 1e30)), good_m.clone()),
        ("mask_count", good_f.clone(), npy_u8(&[S - 1, mh, mw], &masks[..(S - 1) * mh * mw])),
        ("mask_rank", good_f.clone(), npy_u8(&[S, mh, mw, 1], &masks)),
        ("mask_small", good_f.clone(), npy_u8(&[S, 8, 8], &vec![1; S * 64])),
        ("mask_float", good_f.clone(), npy_f32(&[S, mh, mw], &masks.iter().map(|&v| v as f32).collect::<Vec<_>>())),
        ("feat4", npy_f32(&[S, N, 4], &feats[..S * N * 4]), good_m.clone()),
    ];
    for (name, f, m) in &dsets {
        put(r, &format!("{name}/features.npy"), f);
        put(r, &format!("{name}/masks.npy"), m);
    }
    put(r, "no_masks/features.npy", &good_f);
    put(r, "images_f64/features.npy", &good_f);
    put(r, "images_f64/images.npy", &npy_f64(&[S, 4, 4, 3], &vec![0.5; S * 48]));
    put(r, "images_count/features.npy", &good_f);
    put(r, "images_count/images.npy", &npy_u8(&[S - 2, 4, 4, 3], &vec![0; (S - 2) * 48]));

    // checkpoints
    let mcfg = model_config();
    let ckpt = init_params(&mcfg, 0);
    ckpt.save(&r.join("model.safetensors")).unwrap();
    let bytes = std::fs::read(r.join("model.safetensors")).unwrap();
    put(r, "ckpt_truncated.safetensors", &bytes[..bytes.len() - 50]);
    put(r, "ckpt_empty.safetensors", b"");
    put(r, "ckpt_garbage.safetensors", b"hello, this is not a checkpoint at all");
    let mut c = ckpt.clone();
    c.tensors.remove("slot_attention.to_q.weight");
    c.save(&r.join("ckpt_missing.safetensors")).unwrap();
    let mut c = ckpt.clone();
    c.insert("slot_attention.to_q.weight", &[D, 4], vec![0.1; D * 4]);
    c.save(&r.join("ckpt_shape.safetensors")).unwrap();
    let mut c = ckpt.clone();
    c.metadata.clear();
    c.save(&r.join("ckpt_nometa.safetensors")).unwrap();
    let mut c = ckpt.clone();
    c.metadata.insert("slotforge.config".into(), serde_json::to_string(&ModelConfig { num_slots: 0, ..mcfg.clone() }).unwrap());
    c.save(&r.join("ckpt_badcfg.safetensors")).unwrap();

    // infer inputs
    put(r, "x.npy", &good_f);
    put(r, "x_grid.npy", &npy_f32(&[S, 16, 16, F], &feats));
    put(r, "x_n.npy", &npy_f32(&[S, 100, F], &feats[..S * 100 * F]));
    put(r, "x_f.npy", &npy_f32(&[S, N, 4], &feats[..S * N * 4]));
    put(r, "x_rank2.npy", &npy_f32(&[N, F], &feats[..N * F]));
    put(r, "x_nan.npy", &npy_f32(&[S, N, F], &with(&feats, 3, f32::NAN)));
    put(r, "x_truncated.npy", &good_f[..good_f.len() - 4]);
    let z = vec![0.0f32; S * K * D];
    put(r, "z.npy", &npy_f32(&[S, K, D], &z));
    put(r, "z_shape.npy", &npy_f32(&[S, K, 4], &z[..S * K * 4]));
    put(r, "z_nan.npy", &npy_f32(&[S, K, D], &with(&z, 43, f32::NAN)));
    put(r, "z_inf.npy", &npy_f32(&[S, K, D], &with(&z, 43, f32::NEG_INFINITY)));
    put(r, "z_truncated.npy", &npy_f32(&[S, K, D], &z)[..npy_f32(&[S, K, D], &z).len() - 4]);
    put(r, "z_int.npy", &npy_i64(&[S, K, D], &vec![0; S * K * D]));

    // score inputs
    put(r, "true.npy", &good_m);
    put(r, "pred.npy", &good_m);
    put(r, "pred_small.npy", &npy_u8(&[S, 64, mw], &masks[..S * 64 * mw]));
    put(r, "pred_float.npy", &npy_f32(&[S, mh, mw], &masks.iter().map(|&v| v as f32).collect::<Vec<_>>()));
    put(r, "pred_neg.npy", &npy_i64(&[S, mh, mw], &masks.iter().map(|&v| v as i64 - 1).collect::<Vec<_>>()));
    put(r, "pred_rank1.npy", &npy_u8(&[S * mh * mw], &masks));
    put(r, "pred_rank4.npy", &npy_u8(&[S, mh, mw, 1], &masks));
    put(r, "pred_truncated.npy", &good_m[..good_m.len() - 7]);
    put(r, "pred_empty.npy", b"");

    // configs
    put(r, "tiny.toml", TINY_TOML.as_bytes());

    // runs to resume, one broken thing each (copies of a real run)
    let o = run(r, &["train", "--config", "tiny.toml", "--data", "good", "--out", "run_ok"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ck = "checkpoints/step-00000002";
    for name in ["run_trunc", "run_missing", "run_shape", "run_noopt", "run_mixed", "run_badlast"] {
        copy_dir(&r.join("run_ok"), &r.join(name));
    }
    let model = |run: &str| r.join(run).join(ck).join("model.safetensors");
    let bytes = std::fs::read(model("run_ok")).unwrap();
    put(r, &format!("run_trunc/{ck}/model.safetensors"), &bytes[..bytes.len() - 50]);
    let ok = TensorFile::load(&model("run_ok")).unwrap();
    let mut c = ok.clone();
    c.tensors.remove("slot_attention.to_q.weight");
    c.save(&model("run_missing")).unwrap();
    let mut c = ok.clone();
    c.insert("slot_attention.to_q.weight", &[D, 4], vec![0.1; D * 4]);
    c.save(&model("run_shape")).unwrap();
    std::fs::remove_file(r.join("run_noopt").join(ck).join("optimizer.safetensors")).unwrap();
    let opt = r.join("run_mixed").join(ck).join("optimizer.safetensors");
    let mut o = TensorFile::load(&opt).unwrap();
    o.metadata.insert("slotforge.step".into(), "3".into());
    o.save(&opt).unwrap();
    put(r, "run_badlast/last", b"checkpoints/step-00000009\n");
    for (name, extra) in [
        ("unknown_key", "foo = 1\n"),
        ("wrong_type", "epochs = \"many\"\n"),
        ("negative_int", "epochs = -3\n"),
        ("malformed", "[model\n"),
        ("no_value", "seed =\n"),
        ("neg_lr", "learning-rate = -0.1\n"),
        ("lr_nan", "learning-rate = nan\n"),
        ("zero_batch", "batch-size = 0\n"),
        ("subset_0", "subset-percent = 0\n"),
        ("subset_150", "subset-percent = 150\n"),
        ("zero_slots", "num-slots = 0\n"),
        ("zero_slot_dim", "slot-dim = 0\n"),
        ("zero_iters", "iters = 0\n"),
        ("zero_epochs", "epochs = 0\n"),
        ("neg_div", "diversity-weight = -1.0\n"),
        ("bad_device", "device = \"nonsense\"\n"),
        ("bad_schedule", "diversity-schedule = \"sometimes\"\n"),
        ("pool_0", "spectral-pool = 0\n"),
        ("val_all", "val-count = 6\n"),
        ("duplicate", "epochs = 2\n"),
    ] {
        // the tiny config with one line replaced, or appended if the key is new to it (or, for
        // "duplicate", appended on purpose: a repeated key is a TOML error)
        let key = extra.split('=').next().unwrap().trim();
        let old = TINY_TOML.lines().find(|l| l.split('=').next().unwrap().trim() == key);
        let text = match old {
            Some(line) if name != "duplicate" => TINY_TOML.replace(&format!("{line}\n"), extra),
            _ => format!("{TINY_TOML}{extra}"),
        };
        put(r, &format!("cfg_{name}.toml"), text.as_bytes());
    }

    // run logs for `plot`: two runs, a malformed one
    let epoch = |e: usize, v: f64| format!("{{\"type\":\"epoch\",\"epoch\":{e},\"token_fg_ari\":{v}}}\n");
    put(r, "run_a/metrics.jsonl", (1..=5).map(|e| epoch(e, 0.1 * e as f64)).collect::<String>().as_bytes());
    put(r, "run_b/metrics.jsonl", (1..=3).map(|e| epoch(e, 0.9)).collect::<String>().as_bytes());
    put(r, "bad.jsonl", format!("{}{{\"type\":\"epoch\",\n", epoch(1, 0.5)).as_bytes());
    put(r, "bench.toml", format!("{TINY_TOML}data = \"good\"\n").as_bytes());
    put(r, "steps.jsonl", b"{\"type\":\"step\",\"step\":1,\"token_fg_ari\":0.2}\n");

    // a regular file where an output directory would go
    put(r, "afile", b"I am a file\n");
    std::fs::create_dir_all(r.join("adir")).unwrap();
    t
}

// ---------------------------------------------------------------------------------------
// running and checking

fn run(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slotforge"))
        .args(args)
        .current_dir(root)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

/// Every file and directory under `root`: relative path -> (size, mtime) (directories: None).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<(u64, std::time::SystemTime)>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<(u64, std::time::SystemTime)>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if m.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                out.insert(rel, Some((m.len(), m.modified().unwrap())));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// One bad-input case: arguments (run inside the fixture) and phrases stderr must contain.
struct Case {
    args: &'static [&'static str],
    expect: &'static [&'static str],
}

macro_rules! cases {
    ($( [$($a:expr),*] => [$($e:expr),*] ;)*) => { vec![$( Case { args: &[$($a),*], expect: &[$($e),*] } ),*] };
}

/// Run every case; collect all failures so one run reports the whole matrix.
fn check_cases(root: &Path, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let before = snapshot(root);
        let o = run(root, c.args);
        let after = snapshot(root);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let cmd = c.args.join(" ");
        println!("$ slotforge {cmd}\n  exit {:?}: {}", o.status.code(), stderr.trim().replace('\n', "\n  "));
        let mut why = Vec::new();
        match o.status.code() {
            Some(1) | Some(2) => {}
            other => why.push(format!("exit code {other:?}, expected 1 (error) or 2 (usage error)")),
        }
        for phrase in c.expect {
            if !stderr.contains(phrase) {
                why.push(format!("stderr lacks {phrase:?}"));
            }
        }
        for bad in ["panicked", "RUST_BACKTRACE", "unwrap()", "stack backtrace"] {
            if stderr.contains(bad) {
                why.push(format!("stderr shows a panic ({bad:?})"));
            }
        }
        if before != after {
            let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
            let removed: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
            let changed: Vec<_> = after.iter().filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v)).map(|(k, _)| k).collect();
            why.push(format!("the file tree changed: added {added:?}, removed {removed:?}, changed {changed:?}"));
        }
        if !why.is_empty() {
            failures.push(format!("slotforge {cmd}\n    {}\n    stderr: {}", why.join("\n    "), stderr.trim()));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// The good input is accepted (so each failing case fails for the one thing it breaks).
fn check_ok(root: &Path, args: &[&str]) {
    let o = run(root, args);
    assert!(o.status.success(), "control run failed: slotforge {}\n{}", args.join(" "), String::from_utf8_lossy(&o.stderr));
}

// ---------------------------------------------------------------------------------------
// the matrix, one test per subcommand

#[test]
fn train_data_errors() {
    let t = fixture();
    let r = t.path();
    check_ok(r, &["train", "--config", "tiny.toml", "--data", "good", "--out", "ctl"]);
    assert!(r.join("ctl/model.safetensors").is_file());
    check_cases(r, &cases![
        ["train", "--config", "tiny.toml", "--data", "bad_magic", "--out", "o"] => ["bad_magic/features.npy", "not an .npy file"];
        ["train", "--config", "tiny.toml", "--data", "empty", "--out", "o"] => ["empty/features.npy", "empty file (0 bytes)"];
        ["train", "--config", "tiny.toml", "--data", "truncated", "--out", "o"] => ["truncated/features.npy", "truncated data", "needs 49152 bytes, the file has 49052"];
        ["train", "--config", "tiny.toml", "--data", "trailing", "--out", "o"] => ["trailing/features.npy", "4 unexpected trailing bytes"];
        ["train", "--config", "tiny.toml", "--data", "bad_header", "--out", "o"] => ["bad_header/features.npy", "malformed .npy header"];
        ["train", "--config", "tiny.toml", "--data", "int_features", "--out", "o"] => ["int_features/features.npy", "wrong dtype int64: expected float32"];
        ["train", "--config", "tiny.toml", "--data", "fortran", "--out", "o"] => ["fortran/features.npy", "fortran_order arrays are not supported"];
        ["train", "--config", "tiny.toml", "--data", "rank2", "--out", "o"] => ["rank2/features.npy", "wrong rank 2", "[6, 2048]"];
        ["train", "--config", "tiny.toml", "--data", "not_square", "--out", "o"] => ["not_square/features.npy", "N = 200 tokens is not a perfect square"];
        ["train", "--config", "tiny.toml", "--data", "no_scenes", "--out", "o"] => ["no_scenes/features.npy", "holds no scenes"];
        ["train", "--config", "tiny.toml", "--data", "nan", "--out", "o"] => ["nan/features.npy", "non-finite value NaN at index [0, 12, 4]"];
        ["train", "--config", "tiny.toml", "--data", "inf", "--out", "o"] => ["inf/features.npy", "non-finite value inf at index [0, 0, 7]"];
        ["train", "--config", "tiny.toml", "--data", "huge", "--out", "o"] => ["huge/features.npy", "value 1e30 at index [0, 0, 5]", "out of range"];
        ["train", "--config", "tiny.toml", "--data", "mask_count", "--out", "o"] => ["scene count mismatch", "mask_count/masks.npy has 5 scenes", "features.npy has 6"];
        ["train", "--config", "tiny.toml", "--data", "mask_rank", "--out", "o"] => ["mask_rank/masks.npy", "wrong rank 4"];
        ["train", "--config", "tiny.toml", "--data", "mask_small", "--out", "o"] => ["mask_small/masks.npy", "smaller than the 16x16 token grid"];
        ["train", "--config", "tiny.toml", "--data", "mask_float", "--out", "o"] => ["mask_float/masks.npy", "wrong dtype float32", "integer dtype"];
        ["train", "--config", "tiny.toml", "--data", "images_f64", "--out", "o"] => ["images_f64/images.npy", "wrong dtype float64: expected uint8"];
        ["train", "--config", "tiny.toml", "--data", "images_count", "--out", "o"] => ["images_count/images.npy has 4 scenes"];
        ["train", "--config", "tiny.toml", "--data", "nowhere", "--out", "o"] => ["nowhere: not a dataset directory"];
        ["train", "--config", "cfg_val_all.toml", "--data", "good", "--out", "o"] => ["good: the dataset has 6 scenes; need more than the 6 held out for validation"];
        ["train", "--resume", "run_trunc"] => ["run_trunc/checkpoints/step-00000002/model.safetensors", "truncated"];
        ["train", "--resume", "run_missing"] => ["run_missing/checkpoints/step-00000002/model.safetensors", "tensor \"slot_attention.to_q.weight\" is missing"];
        ["train", "--resume", "run_shape"] => ["run_shape/checkpoints/step-00000002/model.safetensors", "checkpoint shape [8, 4], model expects [8, 8]"];
        ["train", "--resume", "run_noopt"] => ["--resume needs run_noopt/checkpoints/step-00000002/optimizer.safetensors beside the model"];
        ["train", "--resume", "run_mixed"] => ["run_mixed/checkpoints/step-00000002/model.safetensors is from step Some(\"2\") but", "not one checkpoint"];
        ["train", "--resume", "run_badlast"] => ["run_badlast/last: names", "holds no model.safetensors"];
        ["train", "--resume", "run_ok", "--batch-size", "4"] => ["--resume run_ok: batch-size = 4 conflicts with the run's batch-size = 2", "a resumed run keeps its settings"];
        ["train", "--resume", "run_ok", "--out", "elsewhere"] => ["--out elsewhere differs from --resume run_ok"];
        ["train", "--resume", "nowhere"] => ["--resume nowhere", "not a run directory"];
        ["train", "--resume", "model.safetensors"] => ["--resume model.safetensors", "not a run directory"];
        ["train", "--config", "tiny.toml", "--data", "good", "--out", "afile/sub"] => ["cannot create output directory afile/sub: afile is a file, not a directory"];
        ["train", "--config", "tiny.toml", "--data", "good", "--out", "afile"] => ["output directory afile: the path exists and is not a directory"];
    ]);
}

#[test]
fn train_config_errors() {
    let t = fixture();
    let r = t.path();
    check_cases(r, &cases![
        ["train", "--config", "cfg_unknown_key.toml", "--data", "good", "--out", "o"] => ["config cfg_unknown_key.toml", "unknown field `foo`", "line 9"];
        ["train", "--config", "cfg_wrong_type.toml", "--data", "good", "--out", "o"] => ["config cfg_wrong_type.toml", "invalid type: string \"many\", expected usize"];
        ["train", "--config", "cfg_negative_int.toml", "--data", "good", "--out", "o"] => ["config cfg_negative_int.toml", "invalid value: integer `-3`, expected usize"];
        ["train", "--config", "cfg_malformed.toml", "--data", "good", "--out", "o"] => ["config cfg_malformed.toml", "TOML parse error", "unclosed table"];
        ["train", "--config", "cfg_no_value.toml", "--data", "good", "--out", "o"] => ["config cfg_no_value.toml", "TOML parse error at line 9"];
        ["train", "--config", "cfg_duplicate.toml", "--data", "good", "--out", "o"] => ["config cfg_duplicate.toml", "duplicate key"];
        ["train", "--config", "cfg_neg_lr.toml", "--data", "good", "--out", "o"] => ["learning-rate must be in (0, 1) (got -0.1)"];
        ["train", "--config", "cfg_lr_nan.toml", "--data", "good", "--out", "o"] => ["learning-rate must be in (0, 1) (got NaN)"];
        ["train", "--config", "cfg_zero_batch.toml", "--data", "good", "--out", "o"] => ["batch-size must be in 1..=4096 (got 0)"];
        ["train", "--config", "cfg_subset_0.toml", "--data", "good", "--out", "o"] => ["subset-percent must be in (0, 100] (got 0)"];
        ["train", "--config", "cfg_subset_150.toml", "--data", "good", "--out", "o"] => ["subset-percent must be in (0, 100] (got 150)"];
        ["train", "--config", "cfg_zero_slots.toml", "--data", "good", "--out", "o"] => ["num-slots must be in 1..=64 (got 0)"];
        ["train", "--config", "cfg_zero_slot_dim.toml", "--data", "good", "--out", "o"] => ["slot-dim must be >= 1 (got 0)"];
        ["train", "--config", "cfg_zero_iters.toml", "--data", "good", "--out", "o"] => ["iters must be >= 1 (got 0)"];
        ["train", "--config", "cfg_zero_epochs.toml", "--data", "good", "--out", "o"] => ["epochs must be >= 1 (got 0)"];
        ["train", "--config", "cfg_neg_div.toml", "--data", "good", "--out", "o"] => ["diversity-weight must be >= 0"];
        ["train", "--config", "cfg_bad_device.toml", "--data", "good", "--out", "o"] => ["config cfg_bad_device.toml", "unknown variant `nonsense`", "`cpu`"];
        ["train", "--config", "cfg_bad_schedule.toml", "--data", "good", "--out", "o"] => ["unknown variant `sometimes`", "`constant`, `stepped`, `adaptive`"];
        ["train", "--config", "cfg_pool_0.toml", "--data", "good", "--out", "o"] => ["spectral-pool must be in 1..=8 (got 0)"];
        ["train", "--config", "nothere.toml", "--data", "good", "--out", "o"] => ["reading config nothere.toml", "No such file"];
        // the same checks through flags
        ["train", "--config", "tiny.toml", "--data", "good", "--learning-rate", "-0.1", "--out", "o"] => ["learning-rate must be in (0, 1) (got -0.1)"];
        ["train", "--config", "tiny.toml", "--data", "good", "--learning-rate", "0", "--out", "o"] => ["learning-rate must be in (0, 1) (got 0)"];
        ["train", "--config", "tiny.toml", "--data", "good", "--batch-size", "0", "--out", "o"] => ["batch-size must be in 1..=4096 (got 0)"];
        ["train", "--config", "tiny.toml", "--data", "good", "--subset-percent", "0", "--out", "o"] => ["subset-percent must be in (0, 100] (got 0)"];
        ["train", "--config", "tiny.toml", "--data", "good", "--subset-percent", "100.5", "--out", "o"] => ["subset-percent must be in (0, 100] (got 100.5)"];
        ["train", "--config", "tiny.toml", "--data", "good", "--num-slots", "0", "--out", "o"] => ["num-slots must be in 1..=64 (got 0)"];
        ["train", "--config", "tiny.toml", "--data", "good", "--num-slots", "65", "--out", "o"] => ["num-slots must be in 1..=64 (got 65)"];
        ["train", "--config", "tiny.toml", "--data", "good", "--warmup-epochs", "-1", "--out", "o"] => ["warmup-epochs must be >= 0 (got -1)"];
        ["train", "--config", "tiny.toml", "--data", "good", "--diversity-weight", "-1", "--out", "o"] => ["diversity-weight must be >= 0"];
        ["train", "--config", "tiny.toml", "--data", "good", "--time-limit-minutes", "-1", "--out", "o"] => ["time-limit-minutes must be >= 0 (0 = no limit; got -1)"];
        ["train", "--config", "tiny.toml", "--data", "good", "--log-every", "0", "--out", "o"] => ["log-every must be >= 1"];
        ["train", "--config", "tiny.toml", "--data", "good", "--batch-size", "-2", "--out", "o"] => ["invalid value '-2' for '--batch-size <BATCH_SIZE>'"];
        ["train", "--config", "tiny.toml", "--data", "good", "--epochs", "abc", "--out", "o"] => ["invalid value 'abc' for '--epochs <EPOCHS>'"];
        ["train", "--config", "tiny.toml", "--data", "good", "--device", "nonsense", "--out", "o"] => ["invalid value 'nonsense' for '--device <DEVICE>'", "unknown device 'nonsense'"];
        ["train", "--config", "tiny.toml", "--data", "good", "--diversity-schedule", "sometimes", "--out", "o"] => ["invalid value 'sometimes' for '--diversity-schedule"];
        ["train", "--config", "tiny.toml", "--data", "good", "--foo", "--out", "o"] => ["unexpected argument '--foo'"];
        ["train", "--config", "tiny.toml", "--synthetic", "nonsense", "--out", "o"] => ["unknown synthetic dataset 'nonsense'"];
    ]);
}

#[test]
fn eval_errors() {
    let t = fixture();
    let r = t.path();
    check_ok(r, &["eval", "--checkpoint", "model.safetensors", "--data", "good", "--out", "ctl", "--device", "cpu"]);
    assert!(r.join("ctl/metrics.json").is_file() && r.join("ctl/pred_masks.npy").is_file());
    // without masks: the predictions and the unsupervised measures, no scores
    check_ok(r, &["eval", "--checkpoint", "model.safetensors", "--data", "no_masks", "--out", "nm", "--device", "cpu"]);
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(r.join("nm/metrics.json")).unwrap()).unwrap();
    assert!(m["recon"].as_f64().unwrap() > 0.0 && m["active_slots"].as_f64().unwrap() >= 1.0, "{m}");
    assert!(m.get("fg_ari").is_none() && m["has_masks"] == false, "{m}");
    assert!(r.join("nm/pred_masks.npy").is_file() && r.join("nm/masks.png").is_file());
    check_cases(r, &cases![
        ["eval", "--checkpoint", "model.safetensors", "--data", "bad_magic", "--out", "o", "--device", "cpu"] => ["bad_magic/features.npy", "not an .npy file"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "empty", "--out", "o", "--device", "cpu"] => ["empty/features.npy", "empty file (0 bytes)"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "truncated", "--out", "o", "--device", "cpu"] => ["truncated/features.npy", "truncated data"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "int_features", "--out", "o", "--device", "cpu"] => ["int_features/features.npy", "wrong dtype int64"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "fortran", "--out", "o", "--device", "cpu"] => ["fortran/features.npy", "fortran_order"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "rank2", "--out", "o", "--device", "cpu"] => ["rank2/features.npy", "wrong rank 2"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "nan", "--out", "o", "--device", "cpu"] => ["nan/features.npy", "non-finite value NaN"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "inf", "--out", "o", "--device", "cpu"] => ["inf/features.npy", "non-finite value inf"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "mask_count", "--out", "o", "--device", "cpu"] => ["scene count mismatch", "mask_count/masks.npy has 5 scenes"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "mask_small", "--out", "o", "--device", "cpu"] => ["mask_small/masks.npy", "smaller than the 16x16 token grid"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "feat4", "--out", "o", "--device", "cpu"] => ["checkpoint model.safetensors expects 256 tokens x 8 dims, the data in feat4 has 256 x 4"];
        ["eval", "--checkpoint", "ckpt_truncated.safetensors", "--data", "good", "--out", "o", "--device", "cpu"] => ["ckpt_truncated.safetensors: truncated"];
        ["eval", "--checkpoint", "ckpt_empty.safetensors", "--data", "good", "--out", "o", "--device", "cpu"] => ["ckpt_empty.safetensors: empty file (0 bytes)"];
        ["eval", "--checkpoint", "ckpt_garbage.safetensors", "--data", "good", "--out", "o", "--device", "cpu"] => ["ckpt_garbage.safetensors: not a valid safetensors file"];
        ["eval", "--checkpoint", "ckpt_missing.safetensors", "--data", "good", "--out", "o", "--device", "cpu"] => ["checkpoint ckpt_missing.safetensors", "tensor \"slot_attention.to_q.weight\" is missing"];
        ["eval", "--checkpoint", "ckpt_shape.safetensors", "--data", "good", "--out", "o", "--device", "cpu"] => ["checkpoint ckpt_shape.safetensors", "parameter slot_attention.to_q.weight: checkpoint shape [8, 4], model expects [8, 8]"];
        ["eval", "--checkpoint", "ckpt_nometa.safetensors", "--data", "good", "--out", "o", "--device", "cpu"] => ["checkpoint ckpt_nometa.safetensors", "lacks slotforge.config metadata"];
        ["eval", "--checkpoint", "ckpt_badcfg.safetensors", "--data", "good", "--out", "o", "--device", "cpu"] => ["checkpoint ckpt_badcfg.safetensors", "num_slots must be >= 1 (got 0)"];
        ["eval", "--checkpoint", "nothere.safetensors", "--data", "good", "--out", "o", "--device", "cpu"] => ["nothere.safetensors: cannot read"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "good", "--out", "afile/sub", "--device", "cpu"] => ["cannot create output directory afile/sub: afile is a file, not a directory"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "good", "--out", "afile", "--device", "cpu"] => ["output directory afile: the path exists and is not a directory"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "good", "--out", "o", "--device", "nonsense"] => ["invalid value 'nonsense' for '--device <DEVICE>'"];
    ]);
}

#[test]
fn infer_errors() {
    let t = fixture();
    let r = t.path();
    check_ok(r, &["infer", "--checkpoint", "model.safetensors", "--features", "x.npy", "--noise", "z.npy", "--out", "ctl.safetensors", "--device", "cpu"]);
    let got = TensorFile::load(&r.join("ctl.safetensors")).unwrap();
    assert_eq!(got.get("slots").unwrap().shape, vec![S, K, D]);
    // [B, h, w, F] is the same tokens in grid layout
    check_ok(r, &["infer", "--checkpoint", "model.safetensors", "--features", "x_grid.npy", "--out", "ctl_grid.safetensors", "--device", "cpu"]);
    check_cases(r, &cases![
        ["infer", "--checkpoint", "model.safetensors", "--features", "x_n.npy", "--out", "o.safetensors", "--device", "cpu"] => ["x_n.npy: features are [6, 100, 8], the checkpoint model.safetensors expects [B, 256, 8]"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x_f.npy", "--out", "o.safetensors", "--device", "cpu"] => ["x_f.npy: features are [6, 256, 4]", "expects [B, 256, 8]"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x_rank2.npy", "--out", "o.safetensors", "--device", "cpu"] => ["x_rank2.npy: wrong rank 2 (shape [256, 8])"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x_nan.npy", "--out", "o.safetensors", "--device", "cpu"] => ["x_nan.npy: non-finite value NaN at index [0, 0, 3]"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x_truncated.npy", "--out", "o.safetensors", "--device", "cpu"] => ["x_truncated.npy: truncated data"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "pred_empty.npy", "--out", "o.safetensors", "--device", "cpu"] => ["pred_empty.npy: empty file (0 bytes)"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "bad_magic/features.npy", "--out", "o.safetensors", "--device", "cpu"] => ["bad_magic/features.npy: not an .npy file"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "int_features/features.npy", "--out", "o.safetensors", "--device", "cpu"] => ["int_features/features.npy: wrong dtype int64"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "huge/features.npy", "--out", "o.safetensors", "--device", "cpu"] => ["huge/features.npy: value 1e30", "out of range"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x.npy", "--noise", "z_shape.npy", "--out", "o.safetensors", "--device", "cpu"] => ["z_shape.npy: noise must be [6, 3, 8]", "got [6, 3, 4]"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x.npy", "--noise", "z_nan.npy", "--out", "o.safetensors", "--device", "cpu"] => ["z_nan.npy: non-finite value NaN at index [1, 2, 3]"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x.npy", "--noise", "z_inf.npy", "--out", "o.safetensors", "--device", "cpu"] => ["z_inf.npy: non-finite value -inf at index [1, 2, 3]"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x.npy", "--noise", "z_truncated.npy", "--out", "o.safetensors", "--device", "cpu"] => ["z_truncated.npy: truncated data"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x.npy", "--noise", "z_int.npy", "--out", "o.safetensors", "--device", "cpu"] => ["z_int.npy: wrong dtype int64: expected float32"];
        ["infer", "--checkpoint", "ckpt_truncated.safetensors", "--features", "x.npy", "--out", "o.safetensors", "--device", "cpu"] => ["ckpt_truncated.safetensors: truncated"];
        ["infer", "--checkpoint", "ckpt_empty.safetensors", "--features", "x.npy", "--out", "o.safetensors", "--device", "cpu"] => ["ckpt_empty.safetensors: empty file (0 bytes)"];
        ["infer", "--checkpoint", "ckpt_garbage.safetensors", "--features", "x.npy", "--out", "o.safetensors", "--device", "cpu"] => ["ckpt_garbage.safetensors: not a valid safetensors file"];
        ["infer", "--checkpoint", "ckpt_missing.safetensors", "--features", "x.npy", "--out", "o.safetensors", "--device", "cpu"] => ["checkpoint ckpt_missing.safetensors", "tensor \"slot_attention.to_q.weight\" is missing"];
        ["infer", "--checkpoint", "ckpt_shape.safetensors", "--features", "x.npy", "--out", "o.safetensors", "--device", "cpu"] => ["checkpoint ckpt_shape.safetensors", "checkpoint shape [8, 4], model expects [8, 8]"];
        ["infer", "--checkpoint", "ckpt_nometa.safetensors", "--features", "x.npy", "--out", "o.safetensors", "--device", "cpu"] => ["checkpoint ckpt_nometa.safetensors", "lacks slotforge.config metadata"];
        ["infer", "--checkpoint", "nothere.safetensors", "--features", "x.npy", "--out", "o.safetensors", "--device", "cpu"] => ["nothere.safetensors: cannot read"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "nothere.npy", "--out", "o.safetensors", "--device", "cpu"] => ["nothere.npy: cannot open"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x.npy", "--out", "afile/sub.safetensors", "--device", "cpu"] => ["cannot write afile/sub.safetensors: afile is a file, not a directory"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x.npy", "--out", "nodir/o.safetensors", "--device", "cpu"] => ["cannot write nodir/o.safetensors: the directory nodir does not exist"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x.npy", "--out", "adir", "--device", "cpu"] => ["output file adir: the path is a directory"];
        ["infer", "--checkpoint", "model.safetensors", "--features", "x.npy", "--out", "o.safetensors", "--device", "nonsense"] => ["invalid value 'nonsense' for '--device <DEVICE>'"];
    ]);
    assert!(!r.join("o.safetensors").exists() && !r.join("o.safetensors.tmp").exists());
}

#[test]
fn score_errors() {
    let t = fixture();
    let r = t.path();
    check_ok(r, &["score", "--pred", "pred.npy", "--true", "true.npy"]);
    check_cases(r, &cases![
        ["score", "--pred", "pred_small.npy", "--true", "true.npy"] => ["label maps differ in shape: --pred pred_small.npy is [6, 64, 128], --true true.npy is [6, 128, 128]"];
        ["score", "--pred", "pred_rank1.npy", "--true", "true.npy"] => ["pred_rank1.npy: wrong rank 1"];
        ["score", "--pred", "pred_rank4.npy", "--true", "true.npy"] => ["pred_rank4.npy: wrong rank 4"];
        ["score", "--pred", "pred_float.npy", "--true", "true.npy"] => ["pred_float.npy: wrong dtype float32: a label map must have an integer dtype"];
        ["score", "--pred", "pred_neg.npy", "--true", "true.npy"] => ["pred_neg.npy: label -1 at index [0, 0, 0]", "out of range"];
        ["score", "--pred", "pred_truncated.npy", "--true", "true.npy"] => ["pred_truncated.npy: truncated data"];
        ["score", "--pred", "pred.npy", "--true", "pred_empty.npy"] => ["pred_empty.npy: empty file (0 bytes)"];
        ["score", "--pred", "pred.npy", "--true", "bad_magic/features.npy"] => ["bad_magic/features.npy: not an .npy file"];
        ["score", "--pred", "pred.npy", "--true", "nothere.npy"] => ["nothere.npy: cannot open"];
        ["score", "--pred", "pred.npy"] => ["the following required arguments were not provided", "--true"];
    ]);
}

#[test]
fn debug_spectral_errors() {
    let t = fixture();
    let r = t.path();
    check_ok(r, &["debug-spectral", "--data", "good", "--num-slots", "3", "--out", "ctl"]);
    check_cases(r, &cases![
        ["debug-spectral", "--data", "truncated", "--num-slots", "3", "--out", "o"] => ["truncated/features.npy", "truncated data"];
        ["debug-spectral", "--data", "empty", "--num-slots", "3", "--out", "o"] => ["empty/features.npy", "empty file (0 bytes)"];
        ["debug-spectral", "--data", "bad_header", "--num-slots", "3", "--out", "o"] => ["bad_header/features.npy", "malformed .npy header"];
        ["debug-spectral", "--data", "int_features", "--num-slots", "3", "--out", "o"] => ["int_features/features.npy", "wrong dtype int64"];
        ["debug-spectral", "--data", "rank2", "--num-slots", "3", "--out", "o"] => ["rank2/features.npy", "wrong rank 2"];
        ["debug-spectral", "--data", "nan", "--num-slots", "3", "--out", "o"] => ["nan/features.npy", "non-finite value NaN"];
        ["debug-spectral", "--data", "no_scenes", "--num-slots", "3", "--out", "o"] => ["no_scenes/features.npy", "holds no scenes"];
        ["debug-spectral", "--data", "mask_small", "--num-slots", "3", "--out", "o"] => ["mask_small/masks.npy", "smaller than the 16x16 token grid"];
        ["debug-spectral", "--data", "mask_count", "--num-slots", "3", "--out", "o"] => ["scene count mismatch"];
        ["debug-spectral", "--data", "good", "--num-slots", "0", "--out", "o"] => ["num-slots must be in 1..=64 (got 0)"];
        ["debug-spectral", "--data", "good", "--num-slots", "-1", "--out", "o"] => ["invalid value '-1' for '--num-slots <NUM_SLOTS>'"];
        ["debug-spectral", "--data", "nowhere", "--out", "o"] => ["nowhere: not a dataset directory"];
        ["debug-spectral", "--data", "good", "--num-slots", "3", "--out", "afile/sub"] => ["cannot create output directory afile/sub: afile is a file, not a directory"];
        ["debug-spectral", "--data", "good", "--num-slots", "3", "--out", "afile"] => ["output directory afile: the path exists and is not a directory"];
    ]);
}

#[test]
fn gen_data_errors() {
    let t = fixture();
    let r = t.path();
    check_ok(r, &["gen-data", "--synthetic", "clevr-features", "--count", "2", "--feat-dim", "8", "--out", "ctl"]);
    // written through a temporary sibling directory that was renamed into place
    assert!(r.join("ctl/features.npy").is_file() && r.join("ctl/masks.npy").is_file());
    for e in std::fs::read_dir(r).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp"), "temporary left behind: {name}");
    }
    // --skip writes the last scenes, the ones `train` holds out of the same count
    check_ok(r, &["gen-data", "--synthetic", "clevr-features", "--count", "5", "--feat-dim", "8", "--skip", "3", "--out", "tail"]);
    let tail = slotforge::data::Dataset::load(r.join("tail")).unwrap();
    let (_, held_out) = generate("clevr-features", 5, 0, 8).unwrap().split(2);
    assert_eq!(tail.count, 2);
    assert!(tail == held_out, "gen-data --skip writes the held-out scenes");
    check_cases(r, &cases![
        ["gen-data", "--synthetic", "clevr-features", "--count", "2", "--feat-dim", "8", "--skip", "2", "--out", "o"] => ["--skip must be below --count: skipping 2 of 2 scenes leaves none"];
        ["gen-data", "--synthetic", "clevr-features", "--count", "2", "--feat-dim", "8", "--out", "afile/sub"] => ["cannot create output directory afile/sub: afile is a file, not a directory"];
        ["gen-data", "--synthetic", "clevr-features", "--count", "2", "--feat-dim", "8", "--out", "afile"] => ["output directory afile: the path exists and is not a directory"];
        ["gen-data", "--synthetic", "nonsense", "--count", "2", "--out", "o"] => ["unknown synthetic dataset 'nonsense'", "clevr-features"];
        ["gen-data", "--synthetic", "clevr-features", "--count", "0", "--out", "o"] => ["--count must be >= 1 (got 0)"];
        ["gen-data", "--synthetic", "clevr-features", "--count", "-1", "--out", "o"] => ["invalid value '-1' for '--count <COUNT>'"];
        ["gen-data", "--synthetic", "clevr-features", "--count", "2", "--feat-dim", "0", "--out", "o"] => ["--feat-dim must be >= 1 (got 0)"];
        ["gen-data", "--synthetic", "clevr-features", "--count", "2"] => ["the following required arguments were not provided", "--out"];
    ]);
}

#[test]
fn plot_errors() {
    let t = fixture();
    let r = t.path();
    check_ok(r, &["plot", "random=run_a", "spectral=run_b/metrics.jsonl", "--out", "ctl.png"]);
    // the control's picture: both labels' colours are drawn, and the y axis spans the values
    let img = image::open(r.join("ctl.png")).unwrap().to_rgb8();
    let has = |c: [u8; 3]| img.pixels().any(|p| p.0 == c);
    assert!(has([230, 25, 75]) && has([0, 130, 200]), "two runs with two labels should draw two colours");
    assert!(!has([60, 180, 75]), "no third colour for two labels");
    check_cases(r, &cases![
        ["plot", "nothere", "--out", "o.png"] => ["nothere: cannot read"];
        ["plot", "bad.jsonl", "--out", "o.png"] => ["bad.jsonl:2: not a JSON line"];
        ["plot", "run_a", "--metric", "nonsense", "--out", "o.png"] => ["run_a/metrics.jsonl: no epoch or step line has \"nonsense\""];
        ["plot", "run_a", "steps.jsonl", "--out", "o.png"] => ["steps.jsonl: has \"token_fg_ari\" per step but run_a/metrics.jsonl has it per epoch"];
        ["plot", "run_a", "--out", "o.jpg"] => ["--out o.jpg: must end in .png"];
        ["plot", "run_a", "--out", "afile/o.png"] => ["cannot write afile/o.png: afile is a file, not a directory"];
        ["plot", "run_a", "--out", "nodir/o.png"] => ["cannot write nodir/o.png: the directory nodir does not exist"];
        ["plot", "--out", "o.png"] => ["the following required arguments were not provided", "<RUNS>"];
    ]);
}

/// `bench`: an unknown benchmark, and a batch larger than the config's data.
#[test]
fn bench_errors() {
    let t = fixture();
    let r = t.path();
    check_ok(r, &["bench", "step", "--config", "bench.toml", "--batch", "2", "--steps", "1"]);
    check_cases(r, &cases![
        ["bench", "nonsense"] => ["unknown benchmark \"nonsense\": expected `step`, `kernels` or `spectral`"];
        ["bench", "step", "--config", "bench.toml", "--batch", "7"] => ["bench.toml: 6 scenes, fewer than the batch of 7"];
        ["bench", "spectral", "--config", "bench.toml", "--batch", "7"] => ["bench.toml: 6 scenes, fewer than the batch of 7"];
        ["bench", "step", "--config", "nothere.toml"] => ["nothere.toml"];
    ]);
}

/// A failure after training has started writing: the first checkpoint's model file cannot be
/// written (the error a full disk gives, injected). The error names the file; no temporary
/// file or directory is left; the log holds whole lines only.
#[test]
fn train_write_failure_mid_run_leaves_no_partial_file() {
    let t = fixture();
    let r = t.path();
    let o = Command::new(env!("CARGO_BIN_EXE_slotforge"))
        .args(["train", "--config", "tiny.toml", "--data", "good", "--out", "busy"])
        .current_dir(r)
        .env("SLOTFORGE_FAULT", "commit.model:1:fail")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("{stderr}");
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("busy/checkpoints/.step-00000001.tmp/model.safetensors: write failed") && stderr.contains("No space left"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mut all = Vec::new();
    fn walk(d: &Path, all: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            all.push(p.display().to_string());
            if p.is_dir() {
                walk(&p, all);
            }
        }
    }
    walk(&r.join("busy"), &mut all);
    assert!(all.iter().all(|p| !p.ends_with(".tmp")), "temporary left behind: {all:?}");
    let log = std::fs::read_to_string(r.join("busy/metrics.jsonl")).unwrap();
    assert!(log.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()) && log.ends_with('\n'), "{log}");
}

/// The new input paths: shards, image folders, manifests, the segmentation cache. Each bad
/// input names the file and the problem and writes nothing; the good shards (with and without
/// masks) train and evaluate to the end.
#[test]
fn shard_folder_and_cache_errors() {
    use image::{GrayImage, Luma, Rgb, RgbImage};
    let t = fixture();
    let r = t.path();
    let ds = generate("clevr-features", S, 0, F).unwrap();
    let all: Vec<usize> = (0..S).collect();
    let feats = ds.features_batch(&all).unwrap();
    let masks = ds.masks_batch(&all).unwrap().unwrap();
    let (mh, mw) = ds.mask_hw;
    let half = S / 2;
    let (fa, fb) = (npy_f32(&[half, N, F], &feats[..half * N * F]), npy_f32(&[half, N, F], &feats[half * N * F..]));
    let (ma, mb) = (npy_u8(&[half, mh, mw], &masks[..half * mh * mw]), npy_u8(&[half, mh, mw], &masks[half * mh * mw..]));
    let shards = |name: &str, b: &[u8], with_masks: (bool, bool)| {
        put(r, &format!("{name}/features-00000.npy"), &fa);
        put(r, &format!("{name}/features-00001.npy"), b);
        if with_masks.0 {
            put(r, &format!("{name}/masks-00000.npy"), &ma);
        }
        if with_masks.1 {
            put(r, &format!("{name}/masks-00001.npy"), &mb);
        }
    };
    shards("sh_good", &fb, (true, true));
    shards("sh_nomask", &fb, (false, false));
    shards("sh_truncated", &fb[..fb.len() - 40], (true, true));
    shards("sh_dims", &npy_f32(&[half, N, 4], &feats[..half * N * 4]), (true, true));
    let f16: Vec<u8> = feats[half * N * F..].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    shards("sh_dtype", &[encode_header(DType::F16, &[half, N, F]), f16].concat(), (true, true));
    shards("sh_masks_some", &fb, (true, false));
    put(r, "sh_mixed/features.npy", &npy_f32(&[S, N, F], &feats));
    put(r, "sh_mixed/features-00000.npy", &fa);
    put(r, "man_missing/manifest.json", br#"{"shards": [{"features": "nothere.npy"}]}"#);
    put(r, "man_bad/manifest.json", br#"{"shards": [{"feature": "a.npy"}]}"#);

    // image folders: 8x6 images with masks
    let img = |dir: &str, name: &str, w: u32, h: u32| {
        std::fs::create_dir_all(r.join(dir).join("images")).unwrap();
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 30) as u8, (y * 40) as u8, 90])).save(r.join(dir).join("images").join(name)).unwrap();
    };
    let mask = |dir: &str, name: &str, w: u32, h: u32| {
        std::fs::create_dir_all(r.join(dir).join("masks")).unwrap();
        GrayImage::from_fn(w, h, |x, _| Luma([(x >= w / 2) as u8])).save(r.join(dir).join("masks").join(name)).unwrap();
    };
    for d in ["img_good", "img_size", "img_corrupt", "img_truncated", "img_mask_some", "img_mask_size"] {
        for i in 0..4 {
            img(d, &format!("s{i}.png"), 8, 6);
            mask(d, &format!("s{i}.png"), 8, 6);
        }
    }
    img("img_size", "s2.png", 9, 6);
    put(r, "img_corrupt/images/s1.png", b"\x89PNG but not really an image");
    let png = std::fs::read(r.join("img_good/images/s0.png")).unwrap();
    put(r, "img_truncated/images/s3.png", &png[..png.len() - 30]);
    std::fs::remove_file(r.join("img_mask_some/masks/s1.png")).unwrap();
    mask("img_mask_size", "s2.png", 4, 6);
    let pixel_toml = "val-count = 1\nslot-dim = 8\nmlp-hidden = 8\nnum-slots = 3\nbatch-size = 2\nepochs = 1\ndevice = \"cpu\"\n\
                      enc-channels = 4\nenc-layers = 1\nenc-kernel = 3\ndec-channels = 4\ndec-conv-layers = 1\ndec-kernel = 3\nspectral-cache = \"off\"\n";
    put(r, "pixel.toml", pixel_toml.as_bytes());

    // good input trains and evaluates to the end, with and without masks
    check_ok(r, &["train", "--config", "tiny.toml", "--data", "sh_good", "--out", "ctl_sh"]);
    check_ok(r, &["train", "--config", "tiny.toml", "--data", "sh_nomask", "--out", "ctl_nm"]);
    assert!(r.join("ctl_nm/model.safetensors").is_file());
    let log = std::fs::read_to_string(r.join("ctl_nm/metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert!(last["type"] == "epoch" && last["recon"].as_f64().is_some() && last.get("token_fg_ari").is_none(), "{last}");
    check_ok(r, &["eval", "--checkpoint", "ctl_nm/model.safetensors", "--data", "sh_nomask", "--out", "ev_nm", "--device", "cpu"]);
    let (pred, shape) = slotforge::data::npy::read_labels(&r.join("ev_nm/pred_masks.npy")).unwrap();
    assert_eq!((shape, pred.iter().all(|&l| l < K as u32)), (vec![S, 16, 16], true), "predicted at the token grid without masks or images");
    check_ok(r, &["train", "--config", "pixel.toml", "--data", "img_good", "--out", "ctl_img"]);

    check_cases(r, &cases![
        ["train", "--config", "tiny.toml", "--data", "sh_truncated", "--out", "o"] => ["sh_truncated/features-00001.npy", "truncated data"];
        ["train", "--config", "tiny.toml", "--data", "sh_dims", "--out", "o"] => ["sh_dims/features-00001.npy", "[3, 256, 4] float32 differs from sh_dims/features-00000.npy [3, 256, 8] float32"];
        ["train", "--config", "tiny.toml", "--data", "sh_dtype", "--out", "o"] => ["sh_dtype/features-00001.npy", "float16 differs from", "same token count, feature dim and dtype"];
        ["train", "--config", "tiny.toml", "--data", "sh_masks_some", "--out", "o"] => ["masks for only some shards", "features-00001.npy has no masks-00001.npy"];
        ["train", "--config", "tiny.toml", "--data", "sh_mixed", "--out", "o"] => ["sh_mixed", "both features.npy and features-00000.npy"];
        ["train", "--config", "tiny.toml", "--data", "man_missing", "--out", "o"] => ["man_missing/nothere.npy", "cannot open"];
        ["train", "--config", "tiny.toml", "--data", "man_bad", "--out", "o"] => ["man_bad/manifest.json", "not a valid manifest"];
        ["train", "--config", "tiny.toml", "--data", "sh_good", "--batch-size", "64", "--out", "o"] => ["the training set has 4 scenes, fewer than the batch size 64"];
        ["eval", "--checkpoint", "model.safetensors", "--data", "sh_dims", "--out", "o", "--device", "cpu"] => ["sh_dims/features-00001.npy", "differs from"];
        ["train", "--config", "pixel.toml", "--data", "img_size", "--out", "o"] => ["img_size/images/s2.png", "size 6x9 differs from", "image-size"];
        ["train", "--config", "pixel.toml", "--data", "img_corrupt", "--out", "o"] => ["img_corrupt/images/s1.png", "corrupt"];
        ["train", "--config", "pixel.toml", "--data", "img_truncated", "--out", "o"] => ["img_truncated/images/s3.png", "corrupt or truncated"];
        ["train", "--config", "pixel.toml", "--data", "img_mask_some", "--out", "o"] => ["masks for only some images", "img_mask_some/images/s1.png has no masks/s1.png"];
        ["train", "--config", "pixel.toml", "--data", "img_mask_size", "--out", "o"] => ["img_mask_size/masks/s2.png", "mask of 6x4 but its image", "is 6x8"];
    ]);
}

/// The spectral segmentation cache: written beside the data on the first run, used by the
/// next, rebuilt (with a message naming the file) when the data changed or the file is
/// corrupt; never trusted.
#[test]
fn spectral_cache_is_reused_and_rebuilt_when_stale_or_corrupt() {
    let t = fixture();
    let r = t.path();
    let train = |out: &str| {
        let o = run(r, &["train", "--config", "tiny.toml", "--data", "good", "--out", out]);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{stderr}");
        stderr
    };
    let _ = std::fs::remove_dir_all(r.join("good/.slotforge-cache"));
    let first = train("c1");
    assert!(first.contains("segmented in"), "{first}");
    let cache: Vec<_> = std::fs::read_dir(r.join("good/.slotforge-cache")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(cache.len(), 1, "one cache file: {cache:?}");
    let second = train("c2");
    assert!(second.contains("from the cache"), "{second}");
    // the same losses from the cached segmentation as from a fresh one
    let losses = |d: &str| -> Vec<String> {
        std::fs::read_to_string(r.join(d).join("metrics.jsonl")).unwrap().lines().filter(|l| l.contains("\"step\"")).map(|l| l.split("\"seconds\"").next().unwrap().to_string()).collect()
    };
    assert_eq!(losses("c1"), losses("c2"));
    // corrupt: one flipped byte
    let mut bytes = std::fs::read(&cache[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&cache[0], &bytes).unwrap();
    let third = train("c3");
    assert!(third.contains(&format!("{}: checksum mismatch", cache[0].strip_prefix(r).unwrap().display())) || third.contains("checksum mismatch"), "{third}");
    assert!(third.contains("rebuilding"), "{third}");
    assert_eq!(losses("c3"), losses("c1"));
    // stale: the features change (same shape), so the cache must not be used
    let feats = std::fs::read(r.join("good/features.npy")).unwrap();
    let mut changed = feats.clone();
    let n = changed.len();
    changed[n - 4..].copy_from_slice(&0.25f32.to_le_bytes());
    std::fs::write(r.join("good/features.npy"), &changed).unwrap();
    let fourth = train("c4");
    assert!(fourth.contains("made for other data or settings") && fourth.contains("rebuilding"), "{fourth}");
    let fifth = train("c5");
    assert!(fifth.contains("from the cache"), "{fifth}");
}
