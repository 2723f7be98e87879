//! A run survives its faults: killed (SIGKILL) at any moment, inside checkpoint and log writes
//! included, stopped by SIGTERM / SIGINT, out of disk, raced by a second writer, or short of
//! memory. Each interrupted run is resumed with `--resume RUN` and must end with exactly the
//! losses of an uninterrupted run, and a log without duplicated, missing or torn lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TINY: &str = "val-count = 2\nslot-dim = 8\nmlp-hidden = 8\ndec-hidden = 8\nnum-slots = 3\nbatch-size = 2\nepochs = 3\n\
                    device = \"cpu\"\nlog-every = 1\nstatus-seconds = 0\ndata = \"data\"\n";

fn slotforge(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slotforge"));
    c.args(args).current_dir(dir).env_remove("RUST_BACKTRACE").env_remove("SLOTFORGE_FAULT");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    slotforge(dir, args, env).output().unwrap()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "exit {:?}\n{}", o.status.code(), String::from_utf8_lossy(&o.stderr));
}

/// A directory with 14 generated scenes (12 train, 2 validation: 6 steps an epoch) and the
/// tiny config.
fn fixture(epochs: usize) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    slotforge::data::synthetic::generate("clevr-features", 14, 3, 8).unwrap().save(t.path().join("data")).unwrap();
    std::fs::write(t.path().join("tiny.toml"), TINY.replace("epochs = 3", &format!("epochs = {epochs}"))).unwrap();
    t
}

/// The step records of a run, without their wall-clock seconds; and a check of the whole log:
/// every line whole JSON, steps 1..=n each exactly once, one `start` per sitting.
fn losses(run: &Path, steps: usize, sittings: usize) -> Vec<String> {
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(log.ends_with('\n'), "torn last line");
    let recs: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a whole record: {l:?}: {e}"))).collect();
    let step_nums: Vec<u64> = recs.iter().filter(|r| r["type"] == "step").map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(step_nums, (1..=steps as u64).collect::<Vec<_>>(), "steps duplicated or missing");
    let starts = recs.iter().filter(|r| r["type"] == "start").count();
    assert_eq!(starts, sittings, "one start record per sitting");
    let epochs: Vec<u64> = recs.iter().filter(|r| r["type"] == "epoch").map(|r| r["epoch"].as_u64().unwrap()).collect();
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "epoch records repeated: {epochs:?}");
    recs.iter()
        .filter(|r| r["type"] == "step")
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("seconds");
            r.to_string()
        })
        .collect()
}

fn reference(dir: &Path, name: &str) -> Vec<String> {
    ok(&run(dir, &["train", "--config", "tiny.toml", "--out", name], &[]));
    losses(&dir.join(name), 18, 1)
}

/// Resume `run` until it finishes; returns the number of sittings it took.
fn resume_to_end(dir: &Path, name: &str) -> usize {
    let o = run(dir, &["train", "--resume", name], &[]);
    ok(&o);
    2
}

#[test]
fn killed_at_every_kind_of_moment_resumes_exactly() {
    let t = fixture(3);
    let dir = t.path();
    let want = reference(dir, "ref");
    // (fault point, passage): kills inside the commit of a checkpoint (before and after each
    // of its writes and renames), inside a log write, and between steps
    let points = [
        ("step", 4),
        ("step", 6),
        ("log.append", 3),
        ("log.append", 9),
        ("commit.model", 3),
        ("commit.optimizer", 5),
        ("commit.rename", 7),
        ("commit.last", 6),
        ("commit.links", 12),
        ("commit.clean", 9),
    ];
    for (i, (point, n)) in points.iter().enumerate() {
        let name = format!("k{i}");
        let o = run(dir, &["train", "--config", "tiny.toml", "--out", &name], &[("SLOTFORGE_FAULT", &format!("{point}:{n}:kill"))]);
        assert_eq!(o.status.code(), None, "{point}:{n}: the process should have been killed\n{}", String::from_utf8_lossy(&o.stderr));
        let sittings = resume_to_end(dir, &name);
        assert_eq!(losses(&dir.join(&name), 18, sittings), want, "{point}:{n}: the resumed run's losses differ");
        println!("FAULT kill at {point}:{n}: resumed, 18 steps, losses identical");
    }
}

#[test]
fn killed_at_random_times_resumes_exactly_even_after_a_torn_line() {
    let t = fixture(3);
    let dir = t.path();
    let want = reference(dir, "ref");
    // the uninterrupted run's length, to spread the kills over it
    let start = Instant::now();
    ok(&run(dir, &["train", "--config", "tiny.toml", "--out", "timing"], &[]));
    let total = start.elapsed();
    for (i, frac) in [0.35, 0.5, 0.62, 0.75, 0.88].iter().enumerate() {
        let name = format!("r{i}");
        let mut child = slotforge(dir, &["train", "--config", "tiny.toml", "--out", &name], &[]).stderr(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
        std::thread::sleep(total.mul_f64(*frac));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let run_dir = dir.join(&name);
        if status.success() {
            println!("FAULT random kill at {frac}: the run had already finished");
            assert_eq!(losses(&run_dir, 18, 1), want);
            continue;
        }
        // a line cut short, as a kill in the middle of a write by another writer would leave
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).open(run_dir.join("metrics.jsonl")).unwrap().write_all(b"{\"type\":\"step\",\"ep").unwrap();
        if !run_dir.join("last").exists() {
            // killed before its first checkpoint: nothing to resume; a fresh start is the way
            let o = run(dir, &["train", "--resume", &name], &[]);
            assert!(String::from_utf8_lossy(&o.stderr).contains("has no checkpoint yet"));
            ok(&run(dir, &["train", "--config", "tiny.toml", "--out", &name, "--overwrite"], &[]));
            assert_eq!(losses(&run_dir, 18, 1), want);
            continue;
        }
        resume_to_end(dir, &name);
        assert_eq!(losses(&run_dir, 18, 2), want, "random kill at {frac}: the resumed run's losses differ");
        println!("FAULT random kill at {:.0} ms: resumed, losses identical, torn line dropped", total.as_secs_f64() * 1e3 * frac);
    }
}

/// SIGTERM and SIGINT: the step in progress finishes, a checkpoint and a `stop` record are
/// written, the process says how to resume and exits 143 / 130; the resumed run ends as an
/// uninterrupted one.
#[test]
fn sigterm_and_sigint_stop_with_a_checkpoint_and_resume_exactly() {
    let t = fixture(3);
    let dir = t.path();
    let want = reference(dir, "ref");
    for (sig, code, name) in [(libc::SIGTERM, 143, "SIGTERM"), (libc::SIGINT, 130, "SIGINT")] {
        let out = format!("sig{code}");
        let child = slotforge(dir, &["train", "--config", "tiny.toml", "--out", &out], &[("SLOTFORGE_STEP_DELAY_MS", "150")])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // wait for the second logged step, then signal
        let log = dir.join(&out).join("metrics.jsonl");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_to_string(&log).map_or(0, |l| l.matches("\"type\":\"step\"").count()) < 2 {
            assert!(Instant::now() < deadline, "the run did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let sent = Instant::now();
        // SAFETY: signalling our own child
        unsafe { libc::kill(child.id() as i32, sig) };
        let o = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        println!("FAULT {name}: exit {:?} {:.0} ms after the signal\n{stderr}", o.status.code(), sent.elapsed().as_secs_f64() * 1e3);
        assert_eq!(o.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(&format!("stopped by {name} at step")) && stderr.contains(&format!("slotforge train --resume {out}")), "{stderr}");
        let text = std::fs::read_to_string(&log).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!((last["type"].as_str(), last["reason"].as_str()), (Some("stop"), Some(name)), "{last}");
        let step = last["step"].as_u64().unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(&out).join("last")).unwrap().trim(), format!("checkpoints/step-{step:08}"));
        assert!(step < 18, "stopped before the end");
        ok(&run(dir, &["train", "--resume", &out], &[]));
        assert_eq!(losses(&dir.join(&out), 18, 2), want, "{name}: resumed losses differ");
    }
}

/// A full disk (a 1.5 MB tmpfs in a private mount namespace): the write that fails is named,
/// nothing half-written stays, the last checkpoint is whole; with space again the run resumes
/// to the uninterrupted run's losses.
#[test]
fn disk_full_names_the_file_and_resumes_when_space_returns() {
    let t = fixture(3);
    let dir = t.path();
    let want = reference(dir, "ref");
    let bin = env!("CARGO_BIN_EXE_slotforge");
    // in the namespace: a tmpfs at ./full, a filler leaving a little room, the run (which
    // fails), a copy of what it left, then space again and the resume
    let script = format!(
        "set -u; mkdir -p full && mount -t tmpfs -o size=1536k tmpfs full && \
         head -c 1300000 /dev/zero > full/filler && \
         {bin} train --config tiny.toml --out full/run > first.out 2> first.err; echo $? > first.code; \
         cp -r full/run after-full; rm full/filler; \
         {bin} train --resume full/run > second.out 2> second.err; echo $? > second.code; cp -r full/run resumed"
    );
    let o = Command::new("unshare").args(["--user", "--map-root-user", "--mount", "sh", "-c", &script]).current_dir(dir).env_remove("SLOTFORGE_FAULT").output().unwrap();
    assert!(o.status.success(), "unshare/mount failed (the test needs user namespaces or root): {}", String::from_utf8_lossy(&o.stderr));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let err = read("first.err");
    println!("FAULT disk full:\n{err}");
    assert_eq!(read("first.code").trim(), "1", "{err}");
    assert!(err.contains("No space left on device") && err.contains("full/run/"), "the error names the file: {err}");
    let after = dir.join("after-full");
    let mut files = Vec::new();
    walk(&after, &mut files);
    assert!(files.iter().all(|f| !f.to_string_lossy().ends_with(".tmp")), "half-written files left: {files:?}");
    let log = std::fs::read_to_string(after.join("metrics.jsonl")).unwrap();
    assert!(log.is_empty() || log.ends_with('\n'), "torn log line");
    if after.join("last").exists() {
        let ck = after.join(std::fs::read_to_string(after.join("last")).unwrap().trim());
        let (m, opt) = (slotforge::checkpoint::TensorFile::load(&ck.join("model.safetensors")).unwrap(), slotforge::checkpoint::TensorFile::load(&ck.join("optimizer.safetensors")).unwrap());
        assert_eq!(m.metadata.get("slotforge.step"), opt.metadata.get("slotforge.step"), "the last checkpoint is one unit");
    }
    assert_eq!(read("second.code").trim(), "0", "{}", read("second.err"));
    assert_eq!(losses(&dir.join("resumed"), 18, 2), want, "resumed after the disk filled: losses differ");
}

fn walk(d: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if p.is_dir() {
            walk(&p, out);
        }
    }
}

/// Two trainers on one directory: the second is refused while the first holds it, and the
/// first's log and checkpoints are its own.
#[test]
fn a_second_writer_is_refused() {
    let t = fixture(3);
    let dir = t.path();
    let want = reference(dir, "ref");
    let first = slotforge(dir, &["train", "--config", "tiny.toml", "--out", "shared"], &[("SLOTFORGE_STEP_DELAY_MS", "100")]).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("shared/last").exists() {
        assert!(Instant::now() < deadline, "the first run did not checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    for args in [vec!["train", "--resume", "shared"], vec!["train", "--config", "tiny.toml", "--out", "shared", "--overwrite"]] {
        let o = run(dir, &args, &[]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        println!("FAULT second writer `{}`: {}", args.join(" "), stderr.trim());
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("is in use by another slotforge process"), "{stderr}");
    }
    let status = first.wait_with_output().unwrap().status;
    assert!(status.success());
    assert_eq!(losses(&dir.join("shared"), 18, 1), want);
}

/// Memory limits: a run that cannot fit is refused with the estimate and the limit before it
/// writes anything (here under `ulimit -v` 1.5 GB, and at a batch no machine holds).
#[test]
fn memory_limits_are_refused_up_front() {
    let t = fixture(3);
    let dir = t.path();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/clevr10-features.toml");
    let mut cmd = slotforge(dir, &["train", "--config", cfg.to_str().unwrap(), "--out", "limited"], &[]);
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit in the child before exec; no allocation
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 1_500_000_000, rlim_max: libc::RLIM_INFINITY };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("FAULT ulimit -v 1.5 GB: exit {:?}: {}", o.status.code(), stderr.trim());
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("this run needs about") && stderr.contains("address-space limit (ulimit -v)"), "{stderr}");
    assert!(!dir.join("limited").exists(), "nothing written");
    let o = run(dir, &["train", "--batch-size", "4096", "--num-slots", "64", "--set", "slot-dim=512", "--out", "huge"], &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("FAULT batch 4096 x 64 slots: exit {:?}: {}", o.status.code(), stderr.trim());
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("this run needs about") && stderr.contains("can be allocated"), "{stderr}");
    assert!(!dir.join("huge").exists());
}

/// Two identical runs write identical model files (the header's metadata in a fixed order).
#[test]
fn checkpoints_are_reproducible() {
    let t = fixture(1);
    let dir = t.path();
    ok(&run(dir, &["train", "--config", "tiny.toml", "--out", "a"], &[]));
    ok(&run(dir, &["train", "--config", "tiny.toml", "--out", "b"], &[]));
    let (a, b) = (std::fs::read(dir.join("a/model.safetensors")).unwrap(), std::fs::read(dir.join("b/model.safetensors")).unwrap());
    assert!(a == b, "model.safetensors differs between identical runs");
}
