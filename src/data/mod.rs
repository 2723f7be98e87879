//! Datasets: the on-disk layouts (single arrays, shards, `.npz`, manifests, image folders),
//! views (subsets and splits share the data), batch gathering, and the built-in synthetic
//! scenes.
//!
//! A dataset is scene-major: `features [S, N, F]` (or `[S, h, w, F]`; float32, float16 or
//! bfloat16) for the feature model, `images [S, H, W, 3]` (uint8) for the pixel model, and
//! optional `masks [S, H, W]` (instance ids, 0 = background). Arrays on disk are never read
//! whole: a batch reads its scenes by position and converts them to f32 there, so memory
//! grows with the batch, not with the dataset. See [`layout`] for the layouts.

pub mod column;
pub mod folder;
pub mod layout;
pub mod loader;
pub mod npy;
pub mod synthetic;

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use column::{Column, ColumnKind};
use npy::fmt_shape;

pub use layout::OpenOptions;

/// What the model consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DataKind {
    /// frozen-ViT-like patch tokens, `features [S, N, F]`
    Features,
    /// RGB images, `images [S, H, W, 3]`
    Images,
}

pub const FEATURES_FILE: &str = "features.npy";
pub const IMAGES_FILE: &str = "images.npy";
pub const IMAGES_DIR: &str = "images";
pub const MASKS_FILE: &str = "masks.npy";
pub const MASKS_DIR: &str = "masks";

/// Largest feature magnitude accepted: beyond it the reconstruction loss (a mean of squares
/// in float32) overflows to inf at the first step.
pub const MAX_FEATURE_ABS: f32 = 1e12;

/// Feature arrays up to this size are checked value by value when opened (NaN, Inf, range),
/// so that bad values are refused before anything runs; larger ones are checked as their
/// scenes are read (the spectral segmentation reads every scene up front).
pub const EAGER_CHECK_BYTES: u64 = 1 << 30;

/// Reject feature values whose magnitude exceeds [`MAX_FEATURE_ABS`], naming the first (for
/// arrays read whole, e.g. `infer`'s input; datasets check as they read).
pub fn check_feature_values(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !(v.abs() <= MAX_FEATURE_ABS)) {
        bail!(
            "{}: value {:e} at index {} is out of range: feature values must satisfy |x| <= {MAX_FEATURE_ABS:e} \
             (the reconstruction loss would overflow float32)",
            path.display(),
            data[i],
            npy::fmt_index(i, shape)
        );
    }
    Ok(())
}

#[derive(Debug)]
struct Store {
    features: Option<Column>,
    images: Option<Column>,
    masks: Option<Column>,
    /// What the data is, for the segmentation cache: file paths, sizes and times, or the
    /// generator and its arguments. Equal identities mean equal data.
    identity: String,
    /// Where the data is (a path, or the generator), for messages and cache file names.
    location: String,
}

/// A dataset: the arrays (shared, in memory or on disk) and the scenes of this view.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub kind: DataKind,
    /// number of scenes S of this view
    pub count: usize,
    /// token grid (h, w) for features; (H, W) of the images for images
    pub grid: (usize, usize),
    /// feature dimension F (0 when there are no features)
    pub feat_dim: usize,
    /// (H, W) of the images, (0, 0) when there are none
    pub image_hw: (usize, usize),
    /// (Hm, Wm) of the masks, (0, 0) when there are none
    pub mask_hw: (usize, usize),
    store: Arc<Store>,
    /// the store's scene of each scene of this view (None: all, in order)
    index: Option<Arc<Vec<usize>>>,
}

fn is_square(n: usize) -> Option<usize> {
    let r = (n as f64).sqrt().round() as usize;
    (r * r == n).then_some(r)
}

fn column_name(c: &Column, fallback: &str) -> String {
    c.files_of().first().map_or(fallback.to_string(), |a| a.name.clone())
}

impl Dataset {
    /// A dataset of arrays held in memory (the synthetic generators). `features [S, N, F]`
    /// (may be empty for image data), `images [S, H, W, 3]`, `masks [S, Hm, Wm]`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_memory(
        kind: DataKind,
        grid: (usize, usize),
        feat_dim: usize,
        features: Vec<f32>,
        images: Vec<u8>,
        image_hw: (usize, usize),
        masks: Option<Vec<u8>>,
        mask_hw: (usize, usize),
        identity: String,
    ) -> Result<Dataset> {
        let features = (kind == DataKind::Features).then(|| Column::mem_f32(features, &[grid.0 * grid.1, feat_dim]));
        let images = (image_hw != (0, 0)).then(|| Column::mem_u8(ColumnKind::Images, images, &[image_hw.0, image_hw.1, 3]));
        let masks = masks.map(|m| Column::mem_u8(ColumnKind::Masks, m, &[mask_hw.0, mask_hw.1]));
        Self::from_columns(features, images, masks, identity.clone(), identity)
    }

    /// The same data under another name in messages (e.g. "the built-in tetrominoes scenes").
    pub fn named(self, location: &str) -> Dataset {
        let st = &self.store;
        let store = Store { features: st.features.clone(), images: st.images.clone(), masks: st.masks.clone(), identity: st.identity.clone(), location: location.to_string() };
        Dataset { store: Arc::new(store), ..self }
    }

    /// Check the columns' shapes against each other and make a dataset of them.
    fn from_columns(features: Option<Column>, images: Option<Column>, masks: Option<Column>, identity: String, location: String) -> Result<Dataset> {
        // (count, name) of the first column, for mismatch messages
        let mut first: Option<(usize, String)> = None;
        let mut check_count = |c: &Column, fallback: &str| -> Result<()> {
            let name = column_name(c, fallback);
            match &first {
                None => first = Some((c.scenes(), name)),
                Some((m, src)) if *m != c.scenes() => {
                    bail!("scene count mismatch: {name} has {} scenes but {src} has {m}", c.scenes())
                }
                Some(_) => {}
            }
            Ok(())
        };
        let (mut kind, mut grid, mut feat_dim, mut image_hw, mut mask_hw) = (DataKind::Features, (0, 0), 0, (0, 0), (0, 0));
        if let Some(f) = &features {
            let name = column_name(f, "features");
            let shape: Vec<usize> = [f.scenes()].iter().chain(&f.tail).copied().collect();
            npy::expect_rank(&name, &shape, &[3, 4], "[S, N, F] or [S, h, w, F]")?;
            grid = if shape.len() == 3 {
                let side = is_square(shape[1]).ok_or_else(|| {
                    anyhow!(
                        "{name}: shape {}: N = {} tokens is not a perfect square; save the features as [S, h, w, F]",
                        fmt_shape(&shape),
                        shape[1]
                    )
                })?;
                (side, side)
            } else {
                (shape[1], shape[2])
            };
            feat_dim = *shape.last().unwrap();
            if feat_dim == 0 || grid.0 * grid.1 == 0 {
                bail!("{name}: shape {} has an empty token or feature axis", fmt_shape(&shape));
            }
            if shape[0] == 0 {
                bail!("{name}: shape {} holds no scenes", fmt_shape(&shape));
            }
            check_count(f, "features")?;
        }
        if let Some(im) = &images {
            let name = column_name(im, "images");
            let shape: Vec<usize> = [im.scenes()].iter().chain(&im.tail).copied().collect();
            npy::expect_rank(&name, &shape, &[4], "[S, H, W, 3] uint8")?;
            if shape[3] != 3 {
                bail!("{name}: shape {}: the last axis must be 3 (RGB)", fmt_shape(&shape));
            }
            if shape[..3].contains(&0) {
                bail!("{name}: shape {} has an empty axis (no scenes or no pixels)", fmt_shape(&shape));
            }
            check_count(im, "images")?;
            image_hw = (shape[1], shape[2]);
            if features.is_none() {
                kind = DataKind::Images;
                grid = image_hw;
            }
        } else if features.is_none() {
            bail!("{location}: no features or images");
        }
        if let Some(m) = &masks {
            let name = column_name(m, "masks");
            let shape: Vec<usize> = [m.scenes()].iter().chain(&m.tail).copied().collect();
            npy::expect_rank(&name, &shape, &[3], "[S, H, W] label map")?;
            if shape.contains(&0) {
                bail!("{name}: shape {} has an empty axis", fmt_shape(&shape));
            }
            check_count(m, "masks")?;
            if shape[1] < grid.0 || shape[2] < grid.1 {
                bail!(
                    "{name}: shape {}: masks of {}x{} are smaller than the {}x{} {} of the data; \
                     masks must have at least that resolution",
                    fmt_shape(&shape),
                    shape[1],
                    shape[2],
                    grid.0,
                    grid.1,
                    if features.is_some() { "token grid" } else { "images" }
                );
            }
            mask_hw = (shape[1], shape[2]);
        }
        let count = first.map_or(0, |(n, _)| n);
        let store = Store { features, images, masks, identity, location };
        Ok(Dataset { kind, count, grid, feat_dim, image_hw, mask_hw, store: Arc::new(store), index: None })
    }

    /// Open a dataset (a directory, an `.npz` file or a manifest `.json`; see [`layout`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Dataset> {
        layout::open(path.as_ref(), &OpenOptions::default())
    }

    /// [`load`](Self::load) with options (the size image folders are resized to).
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Dataset> {
        layout::open(path.as_ref(), opts)
    }

    /// Read every feature value of a dataset stored on disk whose features are at most
    /// [`EAGER_CHECK_BYTES`], so that NaN, Inf and out-of-range values are refused at once.
    fn check_values_if_small(&self) -> Result<()> {
        let Some(f) = &self.store.features else { return Ok(()) };
        if f.in_memory() || f.bytes() > EAGER_CHECK_BYTES {
            return Ok(());
        }
        let per = f.per_scene;
        (0..f.scenes()).into_par_iter().try_for_each_init(|| vec![0f32; per], |buf, s| f.read_f32(s, buf))
    }

    /// The store's scene behind scene `i` of this view.
    pub fn store_scene(&self, i: usize) -> usize {
        assert!(i < self.count, "scene index {i} out of range (count {})", self.count);
        self.index.as_ref().map_or(i, |ix| ix[i])
    }

    /// Tokens per scene (feature kind) or pixels per image (image kind).
    pub fn tokens(&self) -> usize {
        self.grid.0 * self.grid.1
    }

    /// Same as [`tokens`](Self::tokens).
    pub fn n_tokens(&self) -> usize {
        self.tokens()
    }

    /// Number of values per scene of the features.
    pub fn scene_len(&self) -> usize {
        self.tokens() * self.feat_dim
    }

    /// The dataset feeds the feature model.
    pub fn kind_is_features(&self) -> bool {
        self.kind == DataKind::Features
    }

    pub fn has_images(&self) -> bool {
        self.store.images.is_some()
    }

    pub fn has_masks(&self) -> bool {
        self.store.masks.is_some()
    }

    /// Where the data is: its path, or the generator.
    pub fn location(&self) -> &str {
        &self.store.location
    }

    /// What the underlying data is (see `Store::identity`); views of one store share it.
    pub fn identity(&self) -> &str {
        &self.store.identity
    }

    /// True when every array is held in memory (generated data).
    pub fn in_memory(&self) -> bool {
        [&self.store.features, &self.store.images, &self.store.masks].iter().all(|c| c.as_ref().is_none_or(|c| c.in_memory()))
    }

    /// Bytes of the features (0 for image data), the way they are stored.
    pub fn feature_bytes(&self) -> u64 {
        self.store.features.as_ref().map_or(0, |c| c.bytes())
    }

    /// `features: [S, 256, 768] float16 in 14 shards`, for the log.
    pub fn describe(&self) -> String {
        let cols = [("features", &self.store.features), ("images", &self.store.images), ("masks", &self.store.masks)];
        let parts: Vec<String> = cols
            .iter()
            .filter_map(|(name, c)| {
                let c = c.as_ref()?;
                let files = c.files_of();
                let ty = files.first().map_or(if *name == "features" { "float32" } else { "uint8" }, |a| a.dtype().numpy_name());
                let shape: Vec<usize> = [self.count].iter().chain(&c.tail).copied().collect();
                let place = match files.len() {
                    0 => "in memory".to_string(),
                    1 => "on disk".to_string(),
                    n => format!("in {n} shards"),
                };
                Some(format!("{name} {} {ty} {place}", fmt_shape(&shape)))
            })
            .collect();
        parts.join(", ")
    }

    /// Features of the given scenes, `[B, N, F]` f32, into `out` (resized).
    pub fn features_into(&self, scenes: &[usize], out: &mut Vec<f32>) -> Result<()> {
        let f = self.store.features.as_ref().ok_or_else(|| anyhow!("{}: the dataset has no features", self.location()))?;
        let per = f.per_scene;
        out.resize(scenes.len() * per, 0.0);
        for (o, &s) in out.chunks_exact_mut(per).zip(scenes) {
            f.read_f32(self.store_scene(s), o)?;
        }
        Ok(())
    }

    /// Features of the given scenes, `[B, N, F]`.
    pub fn features_batch(&self, scenes: &[usize]) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.features_into(scenes, &mut out)?;
        Ok(out)
    }

    /// One scene's features `[N, F]`.
    pub fn scene_features(&self, s: usize) -> Result<Vec<f32>> {
        self.features_batch(&[s])
    }

    fn bytes_batch(&self, col: &Option<Column>, scenes: &[usize]) -> Result<Option<Vec<u8>>> {
        let Some(c) = col else { return Ok(None) };
        let per = c.per_scene;
        let mut out = vec![0u8; scenes.len() * per];
        for (o, &s) in out.chunks_exact_mut(per).zip(scenes) {
            c.read_u8(self.store_scene(s), o)?;
        }
        Ok(Some(out))
    }

    /// Images of the given scenes `[B, H, W, 3]` uint8 (None without images).
    pub fn images_batch(&self, scenes: &[usize]) -> Result<Option<Vec<u8>>> {
        self.bytes_batch(&self.store.images, scenes)
    }

    /// Images of the given scenes as f32 in [0, 1], `[B, H, W, 3]`.
    pub fn images_batch_f32(&self, scenes: &[usize]) -> Result<Vec<f32>> {
        let bytes = self.images_batch(scenes)?.ok_or_else(|| anyhow!("{}: the dataset has no images", self.location()))?;
        Ok(bytes.iter().map(|&v| v as f32 / 255.0).collect())
    }

    /// One scene's image `[H, W, 3]`, if the dataset has images.
    pub fn image(&self, s: usize) -> Result<Option<Vec<u8>>> {
        self.images_batch(&[s])
    }

    /// Masks of the given scenes, `[B, Hm, Wm]`, if the dataset has masks.
    pub fn masks_batch(&self, scenes: &[usize]) -> Result<Option<Vec<u8>>> {
        self.bytes_batch(&self.store.masks, scenes)
    }

    /// The mask of one scene, `[Hm, Wm]`, if the dataset has masks.
    pub fn mask(&self, s: usize) -> Result<Option<Vec<u8>>> {
        self.masks_batch(&[s])
    }

    /// Every scene's features `[S, N, F]` (for tests and small sets).
    pub fn all_features(&self) -> Result<Vec<f32>> {
        self.features_batch(&(0..self.count).collect::<Vec<_>>())
    }

    /// Every scene's image `[S, H, W, 3]` (empty without images).
    pub fn all_images(&self) -> Result<Vec<u8>> {
        Ok(self.images_batch(&(0..self.count).collect::<Vec<_>>())?.unwrap_or_default())
    }

    /// The masks of every scene of the view, `[S, Hm, Wm]` (None without masks).
    pub fn all_masks(&self) -> Result<Option<Vec<u8>>> {
        self.masks_batch(&(0..self.count).collect::<Vec<_>>())
    }

    /// A view of the given scenes, in the given order (the data is shared, not copied).
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let index: Vec<usize> = indices.iter().map(|&i| self.store_scene(i)).collect();
        Dataset { count: index.len(), index: Some(Arc::new(index)), ..self.clone() }
    }

    /// A deterministic random subset of `percent` percent of the scenes (0 < percent <= 100;
    /// at least one scene), kept in their original order. The same (dataset, percent, seed)
    /// always gives the same scenes.
    pub fn subset(&self, percent: f32, seed: u64) -> Dataset {
        self.try_subset(percent, seed).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`subset`](Self::subset), with an error for a percent outside (0, 100].
    pub fn try_subset(&self, percent: f32, seed: u64) -> Result<Dataset> {
        if !(percent > 0.0 && percent <= 100.0) {
            bail!("subset percent must be in (0, 100], got {percent}");
        }
        if percent == 100.0 {
            return Ok(self.clone());
        }
        let n = ((self.count as f64 * percent as f64 / 100.0).round() as usize).clamp(1, self.count.max(1));
        let mut idx: Vec<usize> = (0..self.count).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        idx.truncate(n.min(self.count));
        idx.sort_unstable();
        Ok(self.select(&idx))
    }

    /// Fixed split `(train, val)`: the last `val_count` scenes are validation, the rest
    /// training. Panics if `val_count > count`.
    pub fn split(&self, val_count: usize) -> (Dataset, Dataset) {
        assert!(val_count <= self.count, "cannot hold out {val_count} validation scenes from a dataset of {}", self.count);
        let cut = self.count - val_count;
        (self.select(&(0..cut).collect::<Vec<_>>()), self.select(&(cut..self.count).collect::<Vec<_>>()))
    }

    /// [`split`](Self::split), with an error if no training scene would remain.
    pub fn try_split(&self, val_count: usize) -> Result<(Dataset, Dataset)> {
        if val_count >= self.count {
            bail!("cannot hold out {val_count} validation scenes from a dataset of {}: no training scene would remain", self.count);
        }
        Ok(self.split(val_count))
    }

    /// A copy of this view's scenes held in memory as float32 / uint8 (for benchmarks and
    /// for small sets read many times).
    pub fn to_memory(&self) -> Result<Dataset> {
        let all: Vec<usize> = (0..self.count).collect();
        let mut features = Vec::new();
        if self.kind_is_features() {
            features = synthetic::zeroed::<f32>(self.count * self.scene_len()).context("in-memory copy of the features")?;
            self.features_into(&all, &mut features)?;
        }
        Dataset::from_memory(
            self.kind,
            self.grid,
            self.feat_dim,
            features,
            self.images_batch(&all)?.unwrap_or_default(),
            self.image_hw,
            self.masks_batch(&all)?,
            self.mask_hw,
            format!("memory copy of {} ({} scenes)", self.identity(), self.count),
        )
    }

    /// Save to `dir` (created if needed): single `.npy` files, each written atomically,
    /// scene by scene (the dataset need not fit in memory). Features are written float32
    /// `[S, N, F]` when the grid is square, else `[S, h, w, F]`.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| anyhow!("{}: cannot create the dataset directory: {e}", dir.display()))?;
        self.save_shard(dir, "", 0..self.count, npy::DType::F32)
    }

    /// Write scenes `range` as `features{suffix}.npy`, `images{suffix}.npy`, `masks{suffix}.npy`.
    pub fn save_shard(&self, dir: &Path, suffix: &str, range: std::ops::Range<usize>, dtype: npy::DType) -> Result<()> {
        let s = range.len();
        if self.kind_is_features() {
            let shape = if self.grid.0 == self.grid.1 {
                vec![s, self.tokens(), self.feat_dim]
            } else {
                vec![s, self.grid.0, self.grid.1, self.feat_dim]
            };
            let mut w = npy::NpyWriter::create(&dir.join(format!("features{suffix}.npy")), dtype, &shape)?;
            let mut buf = Vec::new();
            for i in range.clone() {
                self.features_into(&[i], &mut buf)?;
                w.append_f32(&buf)?;
            }
            w.finish()?;
        }
        let bytes = [("images", &self.store.images, vec![self.image_hw.0, self.image_hw.1, 3]), ("masks", &self.store.masks, vec![self.mask_hw.0, self.mask_hw.1])];
        for (name, col, tail) in bytes {
            if col.is_none() {
                continue;
            }
            let shape: Vec<usize> = [s].iter().chain(&tail).copied().collect();
            let mut w = npy::NpyWriter::create(&dir.join(format!("{name}{suffix}.npy")), npy::DType::U8, &shape)?;
            for i in range.clone() {
                let one = self.bytes_batch(col, &[i])?.unwrap_or_default();
                w.append_u8(&one)?;
            }
            w.finish()?;
        }
        Ok(())
    }

    /// [`save`](Self::save), all or nothing when `dir` does not exist yet: the files are written
    /// into a sibling temporary directory renamed to `dir` at the end (and removed on any
    /// error), so a failed save leaves no partial dataset.
    pub fn save_new(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        if dir.exists() {
            return self.save(dir);
        }
        with_new_dir(dir, |tmp| self.save(tmp))
    }
}

/// Run `write` on a sibling temporary directory of `dir` and rename it to `dir` when it
/// succeeds; remove it when it fails. `dir` must not exist.
pub fn with_new_dir(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir.file_name().ok_or_else(|| anyhow!("{}: not a directory path", dir.display()))?;
    let tmp = dir.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| anyhow!("{}: cannot create the directory: {e}", dir.display()))?;
    }
    let res = std::fs::create_dir_all(&tmp)
        .map_err(|e| anyhow!("{}: cannot create: {e}", tmp.display()))
        .and_then(|_| write(&tmp))
        .and_then(|_| std::fs::rename(&tmp, dir).map_err(|e| anyhow!("{}: cannot rename to {}: {e}", tmp.display(), dir.display())));
    if res.is_err() && tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if res.is_ok() {
        npy::sync_dir(dir.parent().unwrap_or(Path::new(".")));
    }
    res
}

/// Equal when the views have the same shapes and the same values (reads every scene).
impl PartialEq for Dataset {
    fn eq(&self, o: &Dataset) -> bool {
        let meta = |d: &Dataset| (d.kind, d.count, d.grid, d.feat_dim, d.image_hw, d.mask_hw, d.has_images(), d.has_masks());
        if meta(self) != meta(o) {
            return false;
        }
        let all: Vec<usize> = (0..self.count).collect();
        let f = |d: &Dataset| if d.kind_is_features() { d.features_batch(&all).ok() } else { Some(vec![]) };
        f(self) == f(o)
            && self.images_batch(&all).ok() == o.images_batch(&all).ok()
            && self.masks_batch(&all).ok() == o.masks_batch(&all).ok()
    }
}
