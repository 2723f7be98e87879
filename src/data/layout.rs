//! The dataset layouts slotforge reads, and the checks that shards agree.
//!
//! `--data PATH` is one of:
//! ```text
//! DIR/features.npy [masks.npy] [images.npy]          one array each
//! DIR/features-00000.npy features-00001.npy ...        shards, read in name order, with
//!     [masks-00000.npy ...] [images-00000.npy ...]     masks / images of the same suffixes
//! DIR/*.npz  or  FILE.npz                              uncompressed np.savez archives holding
//!                                                      `features` [, `masks`, `images`]
//! DIR/manifest.json  or  FILE.json                     {"shards": [{"features": "a.npy",
//!                                                      "masks": "m.npy"}, {"npz": "b.npz"}]}
//!                                                      (paths relative to the manifest)
//! DIR/images/*.png|jpg [DIR/masks/*.png]               image folders (see [`super::folder`])
//! ```
//! Image-only data (the pixel model) uses `images` in place of `features`. Every shard must
//! have the same arrays, token count, feature dimension and dtype; a shard that differs is
//! refused naming both files.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::column::{Column, ColumnKind};
use super::npy::{fmt_shape, NpyArray};
use super::{folder, Dataset, IMAGES_DIR};

/// How to open a dataset.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Size `(H, W)` every image of an image folder is resized to (None: they must all have
    /// the first image's size).
    pub image_size: Option<(usize, usize)>,
}

/// The arrays of one shard.
#[derive(Default)]
struct Shard {
    features: Option<NpyArray>,
    masks: Option<NpyArray>,
    images: Option<NpyArray>,
}

impl Shard {
    fn arrays(&self) -> [(&'static str, Option<&NpyArray>); 3] {
        [("features", self.features.as_ref()), ("masks", self.masks.as_ref()), ("images", self.images.as_ref())]
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    shards: Vec<ManifestShard>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestShard {
    features: Option<PathBuf>,
    masks: Option<PathBuf>,
    images: Option<PathBuf>,
    npz: Option<PathBuf>,
}

pub fn open(path: &Path, opts: &OpenOptions) -> Result<Dataset> {
    if !path.exists() {
        bail!("{}: not a dataset directory (it does not exist or is not a directory)", path.display());
    }
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    let ds = if path.is_file() {
        match ext.as_deref() {
            Some("npz") => from_shards(path, vec![open_npz(path)?])?,
            Some("json") => open_manifest(path)?,
            _ => bail!("{}: a dataset is a directory, an .npz file or a manifest .json", path.display()),
        }
    } else if !path.is_dir() {
        bail!("{}: not a dataset directory (it does not exist or is not a directory)", path.display());
    } else if path.join("manifest.json").is_file() {
        open_manifest(&path.join("manifest.json"))?
    } else {
        open_dir(path, opts)?
    };
    ds.check_values_if_small()?;
    Ok(ds)
}

/// Files of `dir` named `{base}.npy` and `{base}-*.npy`: (single, shards by suffix).
fn named(files: &[String], base: &str) -> (bool, BTreeMap<String, String>) {
    let single = files.iter().any(|f| *f == format!("{base}.npy"));
    let prefix = format!("{base}-");
    let shards = files
        .iter()
        .filter_map(|f| Some((f.strip_prefix(&prefix)?.strip_suffix(".npy")?.to_string(), f.clone())))
        .collect();
    (single, shards)
}

fn open_dir(dir: &Path, opts: &OpenOptions) -> Result<Dataset> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let npz: Vec<&String> = files.iter().filter(|f| f.to_ascii_lowercase().ends_with(".npz")).collect();
    let (fs, fsh) = named(&files, "features");
    let (is, ish) = named(&files, "images");
    let (ms, msh) = named(&files, "masks");
    if !npz.is_empty() {
        if fs || is || !fsh.is_empty() || !ish.is_empty() {
            bail!("{}: holds both .npz and .npy arrays ({} and {}): keep one layout", dir.display(), npz[0], files.iter().find(|f| f.ends_with(".npy")).unwrap());
        }
        let shards = npz.iter().map(|f| open_npz(&dir.join(f))).collect::<Result<Vec<_>>>()?;
        return from_shards(dir, shards);
    }
    for (single, shards, base) in [(fs, &fsh, "features"), (is, &ish, "images"), (ms, &msh, "masks")] {
        if single && !shards.is_empty() {
            bail!(
                "{}: holds both {base}.npy and {}: keep one layout (one file, or shards only)",
                dir.display(),
                shards.values().next().unwrap()
            );
        }
    }
    let open = |f: &String| NpyArray::open(&dir.join(f));
    // the primary array decides the shards: features, else images
    let (primary, primary_shards) = if fs || !fsh.is_empty() { ("features", &fsh) } else { ("images", &ish) };
    if primary_shards.is_empty() {
        // single files (or an image folder)
        if !fs && !is {
            if dir.join(IMAGES_DIR).is_dir() {
                return folder::open(dir, opts);
            }
            bail!("{}: no features.npy, images.npy or {IMAGES_DIR}/ found (nor features-*.npy shards or .npz files)", dir.display());
        }
        if !msh.is_empty() {
            bail!("{}: sharded masks ({}) with a single {primary}.npy: shard both the same way", dir.display(), msh.values().next().unwrap());
        }
        let shard = Shard {
            features: if fs { Some(open(&"features.npy".into())?) } else { None },
            images: if is { Some(open(&"images.npy".into())?) } else { None },
            masks: if ms { Some(open(&"masks.npy".into())?) } else { None },
        };
        let mut ds = from_shards(dir, vec![shard])?;
        if !is && dir.join(IMAGES_DIR).is_dir() && ds.kind_is_features() {
            ds = folder::attach_images(ds, dir, opts)?;
        }
        return Ok(ds);
    }
    // shards: every other sharded array must have exactly the primary's suffixes
    for (single, others, base) in [(ms, &msh, "masks"), (is, &ish, "images"), (fs, &fsh, "features")] {
        if base == primary {
            continue;
        }
        if single {
            bail!("{}: {base}.npy beside sharded {primary} ({}): shard {base} the same way ({base}-<suffix>.npy)", dir.display(), primary_shards.values().next().unwrap());
        }
        if others.is_empty() {
            continue;
        }
        if let Some((sfx, f)) = primary_shards.iter().find(|(s, _)| !others.contains_key(*s)) {
            let some = others.values().next().unwrap();
            bail!("{}: {base} for only some shards: {f} has no {base}-{sfx}.npy (but {some} exists)", dir.display());
        }
        if let Some((sfx, f)) = others.iter().find(|(s, _)| !primary_shards.contains_key(*s)) {
            bail!("{}: {f} has no matching {primary}-{sfx}.npy", dir.display());
        }
    }
    let mut shards = Vec::new();
    for sfx in primary_shards.keys() {
        let get = |m: &BTreeMap<String, String>| m.get(sfx).map(open).transpose();
        shards.push(Shard { features: get(&fsh)?, images: get(&ish)?, masks: get(&msh)? });
    }
    from_shards(dir, shards)
}

/// The arrays of an uncompressed `.npz` (np.savez): `features`, `masks`, `images`.
fn open_npz(path: &Path) -> Result<Shard> {
    let name = path.display().to_string();
    let file = File::open(path).with_context(|| format!("{name}: cannot open"))?;
    let mut zip = zip::ZipArchive::new(&file).with_context(|| format!("{name}: not a valid .npz (zip) archive"))?;
    let mut shard = Shard::default();
    let file = Arc::new(file.try_clone().with_context(|| format!("{name}: cannot open"))?);
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).with_context(|| format!("{name}: unreadable zip entry {i}"))?;
        let entry_name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
        let Some(key) = entry_name.strip_suffix(".npy") else { continue };
        let slot = match key {
            "features" => &mut shard.features,
            "masks" => &mut shard.masks,
            "images" => &mut shard.images,
            _ => continue,
        };
        if entry.compression() != zip::CompressionMethod::Stored {
            bail!(
                "{name}: array '{key}' is compressed ({}): slotforge reads .npz entries in place and needs np.savez, not np.savez_compressed",
                entry.compression()
            );
        }
        let start = entry.data_start().with_context(|| format!("{name}: entry {entry_name} has no data offset"))?;
        *slot = Some(NpyArray::at(path, format!("{name}:{key}"), file.clone(), start, start + entry.size())?);
    }
    if shard.features.is_none() && shard.images.is_none() {
        bail!("{name}: holds no 'features' or 'images' array (np.savez(path, features=..., masks=...))");
    }
    Ok(shard)
}

fn open_manifest(path: &Path) -> Result<Dataset> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let m: Manifest = serde_json::from_str(&text).with_context(|| format!("{}: not a valid manifest", path.display()))?;
    if m.shards.is_empty() {
        bail!("{}: the manifest lists no shards", path.display());
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut shards = Vec::new();
    for (i, s) in m.shards.iter().enumerate() {
        let open = |p: &Option<PathBuf>| p.as_ref().map(|p| NpyArray::open(&base.join(p))).transpose();
        shards.push(match &s.npz {
            Some(npz) if s.features.is_none() && s.masks.is_none() && s.images.is_none() => open_npz(&base.join(npz))?,
            Some(_) => bail!("{}: shard {i} gives both an npz and .npy arrays", path.display()),
            None => Shard { features: open(&s.features)?, masks: open(&s.masks)?, images: open(&s.images)? },
        });
    }
    from_shards(path, shards)
}

/// Check the shards against each other and make the dataset's columns.
fn from_shards(location: &Path, shards: Vec<Shard>) -> Result<Dataset> {
    for a in shards.iter().flat_map(|s| s.arrays()).filter_map(|(_, a)| a) {
        if a.shape().first() == Some(&0) {
            bail!("{}: shape {} holds no scenes", a.name, fmt_shape(a.shape()));
        }
    }
    let first = &shards[0];
    for shard in &shards {
        // every shard has the first one's arrays
        for ((what, a), (_, b)) in shard.arrays().iter().zip(first.arrays()) {
            match (a, b) {
                (None, Some(b)) => {
                    let this = shard.arrays().iter().find_map(|(_, x)| *x).map_or(String::new(), |x| x.name.clone());
                    bail!("{what} for only some shards: {this} has no {what} array, {} does", b.name)
                }
                (Some(a), None) => {
                    let that = first.arrays().iter().find_map(|(_, x)| *x).map_or(String::new(), |x| x.name.clone());
                    bail!("{what} for only some shards: {} has one, {that} does not", a.name)
                }
                (Some(a), Some(b)) if a.shape()[1..] != b.shape()[1..] || a.dtype() != b.dtype() => bail!(
                    "{}: {} {} differs from {} {} {}: every shard must have the same token count, feature dim and dtype",
                    a.name,
                    fmt_shape(a.shape()),
                    a.dtype().numpy_name(),
                    b.name,
                    fmt_shape(b.shape()),
                    b.dtype().numpy_name()
                ),
                _ => {}
            }
        }
        // within a shard, one scene count
        let present: Vec<&NpyArray> = shard.arrays().iter().filter_map(|(_, a)| *a).collect();
        for a in &present[1..] {
            if a.shape().first() != present[0].shape().first() {
                bail!(
                    "scene count mismatch: {} has {} scenes but {} has {}",
                    a.name,
                    a.shape().first().unwrap_or(&0),
                    present[0].name,
                    present[0].shape().first().unwrap_or(&0)
                );
            }
        }
    }
    for a in shards.iter().filter_map(|s| s.features.as_ref()) {
        if !a.dtype().is_float() {
            bail!("{}: wrong dtype {}: expected float32 (or float16, bfloat16, float64)", a.name, a.dtype().numpy_name());
        }
    }
    for a in shards.iter().filter_map(|s| s.images.as_ref()) {
        if a.dtype() != super::npy::DType::U8 {
            bail!("{}: wrong dtype {}: expected uint8", a.name, a.dtype().numpy_name());
        }
    }
    for a in shards.iter().filter_map(|s| s.masks.as_ref()) {
        if a.dtype().is_float() {
            bail!("{}: wrong dtype {}: a label map must have an integer dtype", a.name, a.dtype().numpy_name());
        }
        if a.shape().len() == 3 {
            a.check_labels_u8()?;
        }
    }
    let identity = identity_of(shards.iter().flat_map(|s| s.arrays().into_iter().filter_map(|(_, a)| a)))?;
    let column = |kind, pick: fn(&Shard) -> Option<&NpyArray>| {
        pick(first).is_some().then(|| Column::files(kind, shards.iter().map(|s| pick(s).unwrap().clone()).collect()))
    };
    let features = column(ColumnKind::Features, |s| s.features.as_ref());
    let images = column(ColumnKind::Images, |s| s.images.as_ref());
    let masks = column(ColumnKind::Masks, |s| s.masks.as_ref());
    Dataset::from_columns(features, images, masks, identity, location.display().to_string())
}

/// Identity of files: path, size, modification time and the data offset of each array, so
/// that a rewritten file (or another file at the same path) changes it.
fn identity_of<'a>(arrays: impl Iterator<Item = &'a NpyArray>) -> Result<String> {
    let mut parts = Vec::new();
    for a in arrays {
        parts.push(format!("{}@{}:{}", a.name, a.header.data_offset, file_stamp(&a.path)?));
    }
    Ok(parts.join(";"))
}

/// `canonical path:size:mtime-ns` of a file.
pub fn file_stamp(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot stat", path.display()))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(format!("{}:{}:{mtime}", canon.display(), meta.len()))
}
