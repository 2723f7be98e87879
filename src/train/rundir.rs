//! A run directory: the resolved config, the metrics log and the checkpoints, written so that
//! a kill at any moment leaves a run that resumes exactly, and so that two runs cannot share
//! one directory.
//!
//! ```text
//! RUN/config.toml            the resolved config (what `--resume RUN` continues)
//! RUN/metrics.jsonl          one JSON record a line (see `records`)
//! RUN/checkpoints/step-N/    model.safetensors + optimizer.safetensors, both carrying step N
//! RUN/last, RUN/best         one line each: the checkpoint directory they name
//! RUN/model.safetensors      the last checkpoint's model (a hard link), for eval and infer
//! RUN/best.safetensors       the best checkpoint's model (a hard link)
//! RUN/.lock                  held (flock) while a process writes the run
//! ```
//! A checkpoint is written into `checkpoints/.step-N.tmp/`, renamed to `step-N`, and only then
//! named by `last` (a file replaced by rename): model and optimizer are committed as one unit,
//! and `last` always names a complete pair. Log lines are written whole, one `write` each; a
//! failed write is cut back off the file, so the log never holds a torn line. On resume the
//! log is cut back to the checkpoint's step and a `start` record marks the resume.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::records::Record;
use crate::checkpoint::{write_atomic, TensorFile};
use crate::data::npy::sync_dir;

pub const CONFIG_FILE: &str = "config.toml";
pub const LOG_FILE: &str = "metrics.jsonl";
const LOCK_FILE: &str = ".lock";
const CHECKPOINTS: &str = "checkpoints";
/// Metadata key both checkpoint files carry: the step they were written at.
pub const STEP_KEY: &str = "slotforge.step";

/// The files a run writes, for `--overwrite` and for recognising a run directory.
const RUN_FILES: &[&str] = &[
    CONFIG_FILE,
    LOG_FILE,
    "last",
    "best",
    "model.safetensors",
    "best.safetensors",
    "optimizer.safetensors",
    "loss.png",
    "fg_ari.png",
    "scores.png",
    "masks.png",
    "report.html",
    "spectral_segments.png",
    "spectral_slots_pca.png",
    "spectral_diagnostics.json",
    "seeds.json",
];

pub struct RunDir {
    pub dir: PathBuf,
    _lock: File,
    /// opened when the run is created, or once a resumed run's log is cut back
    log: Option<File>,
}

/// A committed checkpoint: its directory and step.
#[derive(Clone, Debug)]
pub struct Committed {
    pub dir: PathBuf,
    pub step: usize,
}

fn is_run_dir(dir: &Path) -> bool {
    RUN_FILES.iter().any(|f| dir.join(f).exists()) || dir.join(CHECKPOINTS).is_dir()
}

fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).with_context(|| format!("{}: cannot open", path.display()))?;
    if f.try_lock().is_err() {
        bail!("run directory {} is in use by another slotforge process: two runs cannot write one directory", dir.display());
    }
    Ok(f)
}

impl RunDir {
    /// Refuse a directory that already holds files unless it is resumed or overwritten
    /// (checked before anything is created).
    pub fn check_new(dir: &Path, overwrite: bool) -> Result<()> {
        crate::checkpoint::check_output_dir(dir)?;
        let used = dir.is_dir() && std::fs::read_dir(dir)?.next().is_some();
        if used && !overwrite {
            bail!(
                "--out {} is not empty{}: resume it with --resume {}, replace it with --overwrite, or choose another --out",
                dir.display(),
                if is_run_dir(dir) { " (it holds a run)" } else { "" },
                dir.display()
            );
        }
        if used && !is_run_dir(dir) {
            bail!("--out {}: --overwrite replaces only a slotforge run directory, and this one holds other files", dir.display());
        }
        Ok(())
    }

    /// A new run in `dir` (after [`check_new`](Self::check_new)): the old run's files removed
    /// when overwriting, the lock taken, the config written, an empty log.
    pub fn create(dir: &Path, config_toml: &str) -> Result<RunDir> {
        crate::checkpoint::create_output_dir(dir)?;
        let lock = lock(dir)?;
        for f in RUN_FILES {
            let p = dir.join(f);
            if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("--overwrite: cannot remove {}", p.display()))?;
            }
        }
        let ck = dir.join(CHECKPOINTS);
        if ck.exists() {
            std::fs::remove_dir_all(&ck).with_context(|| format!("--overwrite: cannot remove {}", ck.display()))?;
        }
        write_atomic(&dir.join(CONFIG_FILE), config_toml.as_bytes())?;
        let log = open_log(&dir.join(LOG_FILE), true)?;
        Ok(RunDir { dir: dir.to_path_buf(), _lock: lock, log: Some(log) })
    }

    /// The run in `dir`, to resume: locked, leftovers of an interrupted checkpoint removed.
    pub fn open(dir: &Path) -> Result<RunDir> {
        if !dir.is_dir() {
            bail!("--resume {}: not a run directory (it does not exist or is not a directory)", dir.display());
        }
        let lock = lock(dir)?;
        let run = RunDir { dir: dir.to_path_buf(), log: None, _lock: lock };
        run.clean()?;
        Ok(run)
    }

    /// The checkpoint `last` names (None: the run has none).
    pub fn last(&self) -> Result<Option<Committed>> {
        self.pointer("last")
    }

    pub fn best(&self) -> Result<Option<Committed>> {
        self.pointer("best")
    }

    fn pointer(&self, name: &str) -> Result<Option<Committed>> {
        let p = self.dir.join(name);
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        let rel = text.trim();
        let step = rel
            .strip_prefix(&format!("{CHECKPOINTS}/step-"))
            .and_then(|s| s.parse::<usize>().ok())
            .with_context(|| format!("{}: does not name a checkpoint ({rel:?})", p.display()))?;
        let dir = self.dir.join(rel);
        if !dir.join("model.safetensors").is_file() {
            bail!("{}: names {} which holds no model.safetensors", p.display(), dir.display());
        }
        Ok(Some(Committed { dir, step }))
    }

    /// Remove what an interrupted run left: temporary files and directories, and checkpoint
    /// directories that neither `last` nor `best` names.
    fn clean(&self) -> Result<()> {
        let keep: Vec<PathBuf> = [self.last()?, self.best()?].into_iter().flatten().map(|c| c.dir).collect();
        let ck = self.dir.join(CHECKPOINTS);
        if ck.is_dir() {
            for e in std::fs::read_dir(&ck)? {
                let p = e?.path();
                if !keep.contains(&p) {
                    let _ = std::fs::remove_dir_all(&p);
                }
            }
        }
        for e in std::fs::read_dir(&self.dir)? {
            let p = e?.path();
            if p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".tmp")) {
                let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            }
        }
        Ok(())
    }

    /// Append one record as one whole line. A failed write (a full disk) is cut back off the
    /// file and reported naming it.
    pub fn append(&mut self, rec: &Record) -> Result<()> {
        let mut line = serde_json::to_string(rec)?;
        line.push('\n');
        let path = self.dir.join(LOG_FILE);
        let log = self.log.as_mut().expect("the log is open");
        let before = log.metadata().map(|m| m.len()).with_context(|| format!("{}: cannot stat", path.display()))?;
        let written = super::fault::point("log.append").and_then(|_| log.write_all(line.as_bytes()));
        if let Err(e) = written {
            let _ = log.set_len(before);
            return Err(e).with_context(|| format!("{}: cannot write the log (disk full?); the run is stopped, its last checkpoint kept", path.display()));
        }
        Ok(())
    }

    /// Cut the log back to the records of steps up to `step` (a resumed run writes the rest
    /// again) and drop a torn last line; returns the records kept.
    pub fn truncate_log(&mut self, step: usize) -> Result<Vec<Record>> {
        let path = self.dir.join(LOG_FILE);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut kept = Vec::new();
        let mut out = String::new();
        for line in text.split_inclusive('\n') {
            if !line.ends_with('\n') {
                break; // torn by a kill mid-write: never whole, never kept
            }
            let Ok(rec) = serde_json::from_str::<Record>(line) else { continue };
            if rec.step() <= step {
                out.push_str(line);
                kept.push(rec);
            }
        }
        write_atomic(&path, out.as_bytes())?;
        self.log = Some(open_log(&path, false)?);
        Ok(kept)
    }

    pub fn sync_log(&self) -> Result<()> {
        match &self.log {
            Some(log) => log.sync_data().with_context(|| format!("{}: sync failed", self.dir.join(LOG_FILE).display())),
            None => Ok(()),
        }
    }

    /// Commit a checkpoint at `step`: both files carry the step; the pair lands as one
    /// directory, then `last` (and `best` when `best`) names it, then the convenience links
    /// follow and older checkpoints go. `durable` syncs the files first (otherwise a kill
    /// still cannot tear the pair, only a power loss could lose it).
    pub fn commit(&mut self, step: usize, mut model: TensorFile, mut optimizer: TensorFile, best: bool, durable: bool) -> Result<Committed> {
        let ck = self.dir.join(CHECKPOINTS);
        std::fs::create_dir_all(&ck).with_context(|| format!("{}: cannot create", ck.display()))?;
        let name = format!("step-{step:08}");
        let tmp = ck.join(format!(".{name}.tmp"));
        let dir = ck.join(&name);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        for t in [&mut model, &mut optimizer] {
            t.metadata.insert(STEP_KEY.into(), step.to_string());
        }
        let fault = |p: &str, file: &Path| super::fault::point(p).with_context(|| format!("{}: write failed", file.display()));
        let res = (|| -> Result<()> {
            let (m, o) = (tmp.join("model.safetensors"), tmp.join("optimizer.safetensors"));
            fault("commit.model", &m)?;
            model.save_with(&m, durable)?;
            fault("commit.optimizer", &o)?;
            optimizer.save_with(&o, durable)?;
            fault("commit.rename", &dir)?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::rename(&tmp, &dir).with_context(|| format!("{}: cannot rename to {}", tmp.display(), dir.display()))?;
            if durable {
                sync_dir(&ck);
            }
            Ok(())
        })();
        if res.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        res?;
        let rel = format!("{CHECKPOINTS}/{name}\n");
        let previous_best = self.best()?;
        fault("commit.last", &self.dir.join("last"))?;
        write_atomic(&self.dir.join("last"), rel.as_bytes())?;
        fault("commit.links", &self.dir.join("model.safetensors"))?;
        link(&dir.join("model.safetensors"), &self.dir.join("model.safetensors"))?;
        if best {
            write_atomic(&self.dir.join("best"), rel.as_bytes())?;
            link(&dir.join("model.safetensors"), &self.dir.join("best.safetensors"))?;
        }
        fault("commit.clean", &ck)?;
        // only the last and the best stay
        let keep = [Some(dir.clone()), if best { None } else { previous_best.map(|b| b.dir) }];
        for e in std::fs::read_dir(&ck)? {
            let p = e?.path();
            if !keep.iter().flatten().any(|k| *k == p) && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                let _ = std::fs::remove_dir_all(&p);
            }
        }
        Ok(Committed { dir, step })
    }
}

fn open_log(path: &Path, truncate: bool) -> Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    if truncate {
        let _ = std::fs::remove_file(path);
    }
    o.open(path).with_context(|| format!("{}: cannot open the log", path.display()))
}

/// `to` becomes another name of `from` (a hard link, else a copy), replaced atomically.
fn link(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_extension("safetensors.tmp");
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp).with_context(|| format!("{}: cannot copy to {}", from.display(), tmp.display()))?;
    }
    std::fs::rename(&tmp, to).with_context(|| format!("{}: cannot rename to {}", tmp.display(), to.display()))
}

/// The directory a `--resume` argument names: a run directory, or (as before run
/// directories) a checkpoint file inside one.
pub fn resume_dir(arg: &Path) -> PathBuf {
    if arg.is_file() {
        let parent = match arg.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // RUN/checkpoints/step-N/model.safetensors -> RUN
        if parent.parent().and_then(|p| p.file_name()).is_some_and(|n| n == CHECKPOINTS) {
            return parent.parent().unwrap().parent().unwrap_or(Path::new(".")).to_path_buf();
        }
        return parent.to_path_buf();
    }
    arg.to_path_buf()
}
