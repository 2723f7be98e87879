//! The spectral segmentation of a dataset, computed once and cached on disk.
//!
//! Segmenting costs milliseconds a scene (minutes for a CLEVR-sized set), and the features
//! are frozen, so the segments are kept in a file beside the data
//! (`<data>/.slotforge-cache/spectral-<hash>.segs`, or `~/.cache/slotforge/` when the data's
//! directory is read-only, or `spectral-cache = DIR`). `train`, `eval` and `debug-spectral`
//! share it. The file name comes from where the data is and the segmentation settings; inside,
//! a key holds the data's identity (every file's path, size and modification time), the
//! settings and the slot count. A file whose key differs is stale (the data changed) and one
//! whose checksum or structure is wrong is corrupt: both are reported and rebuilt, never used.
//! Only the scenes a run needs are segmented; the file grows as other runs need others.
//!
//! File layout (little-endian): `SLOTFORGE-SEGMENTS 1\n`, u32 key length, key, u32 n (tokens),
//! u32 record count, records (u32 scene, u8 segments, u8 groups, u8 eigenvalue count,
//! f64 eigenvalues, u8 labels[n], u8 groups[n], u8 group_segment[groups],
//! u8 group_family[groups]), then the CRC-32 of everything before it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;

use crate::data::Dataset;
use crate::spectral::{segment, Segmentation, SpectralConfig};

const MAGIC: &[u8] = b"SLOTFORGE-SEGMENTS 1\n";

/// One scene's segmentation, compactly (labels and groups fit in u8: at most 64 slots).
#[derive(Clone, Debug, PartialEq)]
struct Record {
    num_segments: u8,
    num_groups: u8,
    eigenvalues: Vec<f64>,
    labels: Vec<u8>,
    groups: Vec<u8>,
    group_segment: Vec<u8>,
    group_family: Vec<u8>,
}

impl Record {
    fn of(seg: &Segmentation) -> Record {
        let small = |v: &[u32]| v.iter().map(|&x| x as u8).collect::<Vec<u8>>();
        Record {
            num_segments: seg.num_segments as u8,
            num_groups: seg.num_groups as u8,
            eigenvalues: seg.eigenvalues.clone(),
            labels: small(&seg.labels),
            groups: small(&seg.groups),
            group_segment: small(&seg.group_segment),
            group_family: small(&seg.group_family),
        }
    }

    fn segmentation(&self, grid: (usize, usize)) -> Segmentation {
        let wide = |v: &[u8]| v.iter().map(|&x| x as u32).collect::<Vec<u32>>();
        Segmentation {
            grid,
            labels: wide(&self.labels),
            num_segments: self.num_segments as usize,
            eigenvalues: self.eigenvalues.clone(),
            groups: wide(&self.groups),
            num_groups: self.num_groups as usize,
            group_segment: wide(&self.group_segment),
            group_family: wide(&self.group_family),
        }
    }
}

/// Segmentations of a dataset's scenes (indexed by the store's scene number).
#[derive(Debug, Default)]
pub struct Segments {
    records: HashMap<usize, Record>,
}

/// The segmentation of the scenes of one dataset view.
#[derive(Clone, Debug)]
pub struct SceneSegments {
    pub n: usize,
    pub k: usize,
    pub grid: (usize, usize),
    segs: Arc<Segments>,
    /// the store scene of each scene of the view
    scenes: Vec<usize>,
}

impl SceneSegments {
    /// Number of scenes of the view.
    pub fn len(&self) -> usize {
        self.scenes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.scenes.is_empty()
    }
    /// Segmentations held in memory only, scene `i` the i-th (tests, tools).
    pub fn from_segmentations(n: usize, k: usize, grid: (usize, usize), segs: &[Segmentation]) -> SceneSegments {
        let records = segs.iter().enumerate().map(|(i, s)| (i, Record::of(s))).collect();
        SceneSegments { n, k, grid, segs: Arc::new(Segments { records }), scenes: (0..segs.len()).collect() }
    }

    /// The segmentation of scene `i` of the view.
    pub fn seg(&self, i: usize) -> Segmentation {
        self.segs.records[&self.scenes[i]].segmentation(self.grid)
    }
}

/// Where the cache of `data` goes: `setting` is "auto" (beside the data, else the user's cache
/// directory), "off", or a directory. None: no cache (generated data, or "off").
pub fn cache_dir(data: &Dataset, setting: &str) -> Option<PathBuf> {
    match setting {
        "off" => None,
        "auto" => {
            if data.in_memory() {
                return None;
            }
            let loc = Path::new(data.location());
            let base = if loc.is_dir() { loc.to_path_buf() } else { loc.parent().unwrap_or(Path::new(".")).to_path_buf() };
            let beside = base.join(".slotforge-cache");
            if std::fs::create_dir_all(&beside).is_ok() && writable(&beside) {
                return Some(beside);
            }
            let home = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
            Some(home.join("slotforge"))
        }
        dir => Some(PathBuf::from(dir)),
    }
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

fn key_of(data: &Dataset, k: usize, cfg: &SpectralConfig) -> String {
    format!("data {} | tokens {} grid {:?} | slots {k} | {cfg:?}", data.identity(), data.tokens(), data.grid)
}

fn file_of(dir: &Path, data: &Dataset, k: usize, cfg: &SpectralConfig) -> PathBuf {
    let name = format!("{} | slots {k} | {cfg:?}", data.location());
    let mut h = crc32fast::Hasher::new();
    h.update(name.as_bytes());
    let a = h.finalize();
    let mut h = crc32fast::Hasher::new_with_initial(a);
    h.update(name.as_bytes());
    dir.join(format!("spectral-{a:08x}{:08x}.segs", h.finalize()))
}

fn encode(key: &str, n: usize, records: &HashMap<usize, Record>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    let u32le = |out: &mut Vec<u8>, v: usize| out.extend_from_slice(&(v as u32).to_le_bytes());
    u32le(&mut out, key.len());
    out.extend_from_slice(key.as_bytes());
    u32le(&mut out, n);
    u32le(&mut out, records.len());
    let mut scenes: Vec<&usize> = records.keys().collect();
    scenes.sort();
    for &s in scenes {
        let r = &records[&s];
        u32le(&mut out, s);
        out.extend_from_slice(&[r.num_segments, r.num_groups, r.eigenvalues.len() as u8]);
        for e in &r.eigenvalues {
            out.extend_from_slice(&e.to_le_bytes());
        }
        for v in [&r.labels, &r.groups, &r.group_segment, &r.group_family] {
            out.extend_from_slice(v);
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The records of a cache file, or why it cannot be used: `Ok(None)` when the key differs.
fn decode(bytes: &[u8], key: &str, n: usize) -> Result<Option<HashMap<usize, Record>>> {
    ensure!(bytes.len() >= MAGIC.len() + 16 && bytes.starts_with(MAGIC), "not a slotforge segmentation cache");
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    ensure!(crc32fast::hash(body) == u32::from_le_bytes(crc.try_into().unwrap()), "checksum mismatch (the file is corrupt or was cut short)");
    let mut pos = MAGIC.len();
    let mut take = |len: usize| -> Result<&[u8]> {
        ensure!(pos + len <= body.len(), "record data ends early");
        pos += len;
        Ok(&body[pos - len..pos])
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap()) as usize;
    let klen = u32_at(take(4)?);
    if take(klen)? != key.as_bytes() {
        return Ok(None);
    }
    ensure!(u32_at(take(4)?) == n, "token count differs from the key's");
    let count = u32_at(take(4)?);
    let mut records = HashMap::with_capacity(count);
    for _ in 0..count {
        let scene = u32_at(take(4)?);
        let h = take(3)?.to_vec();
        let (segs, groups, eig) = (h[0], h[1], h[2] as usize);
        let eigenvalues = take(8 * eig)?.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        let labels = take(n)?.to_vec();
        let group_of = take(n)?.to_vec();
        let group_segment = take(groups as usize)?.to_vec();
        let group_family = take(groups as usize)?.to_vec();
        ensure!(labels.iter().all(|&l| l < segs) && group_of.iter().all(|&g| g < groups), "scene {scene}: labels out of range");
        records.insert(scene, Record { num_segments: segs, num_groups: groups, eigenvalues, labels, groups: group_of, group_segment, group_family });
    }
    ensure!(pos == body.len(), "{} unexpected bytes after the records", body.len() - pos);
    Ok(Some(records))
}

/// What segmentation reads of scene `s`: the features, or for images each pixel's RGB in
/// [-1, 1] (the pixel model's input).
pub fn spectral_tokens(data: &Dataset, s: usize) -> Result<(Vec<f32>, usize)> {
    if data.kind_is_features() {
        return Ok((data.scene_features(s)?, data.feat_dim));
    }
    Ok((crate::model::pixel::scale_images(&data.images_batch_f32(&[s])?), 3))
}

/// Segment the given scenes of `data` (in parallel).
pub fn segment_scenes(data: &Dataset, scenes: &[usize], num_slots: usize, cfg: &SpectralConfig) -> Result<Vec<Segmentation>> {
    let n = data.tokens();
    scenes
        .par_iter()
        .map(|&s| {
            let (tokens, f) = spectral_tokens(data, s)?;
            Ok(segment(&tokens, n, f, data.grid, num_slots, cfg))
        })
        .collect()
}

/// The segmentation of every scene of `data`, from the cache in `dir` where it has them;
/// the others are computed (with progress on stderr) and the cache is rewritten.
pub fn segments_for(data: &Dataset, num_slots: usize, cfg: &SpectralConfig, dir: Option<&Path>) -> Result<SceneSegments> {
    let (n, key) = (data.tokens(), key_of(data, num_slots, cfg));
    let file = dir.map(|d| file_of(d, data, num_slots, cfg));
    let mut records = HashMap::new();
    if let Some(f) = file.as_ref().filter(|f| f.exists()) {
        match std::fs::read(f).map_err(anyhow::Error::from).and_then(|b| decode(&b, &key, n)) {
            Ok(Some(r)) => records = r,
            Ok(None) => eprintln!("spectral cache {}: made for other data or settings (the data changed?): rebuilding it", f.display()),
            Err(e) => eprintln!("spectral cache {}: {e:#}: rebuilding it", f.display()),
        }
    }
    let scenes: Vec<usize> = (0..data.count).map(|i| data.store_scene(i)).collect();
    let mut missing: Vec<usize> = (0..data.count).filter(|&i| !records.contains_key(&scenes[i])).collect();
    missing.dedup_by_key(|&mut i| scenes[i]);
    let cached = data.count - missing.len();
    if !missing.is_empty() {
        let t = Instant::now();
        let mut last_save = Instant::now();
        let chunk = 512usize;
        for (c, part) in missing.chunks(chunk).enumerate() {
            let segs = segment_scenes(data, part, num_slots, cfg)?;
            for (&i, seg) in part.iter().zip(&segs) {
                records.insert(scenes[i], Record::of(seg));
            }
            let done = (c * chunk + part.len()).min(missing.len());
            if missing.len() > chunk {
                let secs = t.elapsed().as_secs_f64();
                eprintln!(
                    "spectral segmentation: {done}/{} scenes, {:.1} ms a scene, {:.0} s left",
                    missing.len(),
                    1e3 * secs / done as f64,
                    secs / done as f64 * (missing.len() - done) as f64
                );
            }
            // long builds are saved as they go: an interrupted one keeps what it did
            if let Some(f) = &file {
                if last_save.elapsed().as_secs() >= 60 && done < missing.len() {
                    save(f, &key, n, &records)?;
                    last_save = Instant::now();
                }
            }
        }
        if let Some(f) = &file {
            save(f, &key, n, &records)?;
        }
        eprintln!(
            "spectral segmentation: {} scenes segmented in {:.1} s, {cached} from the cache{}",
            missing.len(),
            t.elapsed().as_secs_f64(),
            file.as_ref().map_or(String::new(), |f| format!(" ({})", f.display()))
        );
    } else if let Some(f) = &file {
        eprintln!("spectral segmentation: all {} scenes from the cache {}", data.count, f.display());
    }
    for (i, &s) in scenes.iter().enumerate() {
        let r = &records[&s];
        if r.labels.len() != n {
            bail!("scene {i}: cached segmentation has {} tokens, the data {n}", r.labels.len());
        }
    }
    Ok(SceneSegments { n, k: num_slots, grid: data.grid, segs: Arc::new(Segments { records }), scenes })
}

fn save(file: &Path, key: &str, n: usize, records: &HashMap<usize, Record>) -> Result<()> {
    if let Some(d) = file.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("{}: cannot create the cache directory", d.display()))?;
    }
    crate::checkpoint::write_atomic(file, &encode(key, n, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_corruption_is_detected() {
        let rec = Record {
            num_segments: 2,
            num_groups: 3,
            eigenvalues: vec![0.0, 0.5],
            labels: vec![0, 1, 1, 0],
            groups: vec![0, 1, 2, 0],
            group_segment: vec![0, 1, 1],
            group_family: vec![0, 1, 1],
        };
        let records = HashMap::from([(7usize, rec.clone())]);
        let bytes = encode("k", 4, &records);
        assert_eq!(decode(&bytes, "k", 4).unwrap().unwrap()[&7], rec);
        assert!(decode(&bytes, "other", 4).unwrap().is_none(), "another key is stale, not an error");
        let mut bad = bytes.clone();
        bad[MAGIC.len() + 9] ^= 1;
        assert!(format!("{:#}", decode(&bad, "k", 4).unwrap_err()).contains("checksum"));
        assert!(decode(&bytes[..bytes.len() - 3], "k", 4).is_err(), "a cut file is refused");
    }
}
