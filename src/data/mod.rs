//! Datasets: loading and saving the on-disk layout (docs/architecture.md, "Data on disk"),
//! deterministic subsets and splits, batch gathering, and the built-in synthetic scenes.
//!
//! A dataset directory holds
//! ```text
//! features.npy   float32 [S, N, F] (N a perfect square) or [S, h, w, F]   (feature model)
//! images.npy     uint8   [S, H, W, 3]            (pixel model; or images/*.png, sorted by name)
//! masks.npy      uint8   [S, H, W], 0 = background, 1.. = objects (optional; any integer dtype
//!                with values 0..=255 is accepted)
//! ```
//! A directory may hold both features and images (the synthetic feature scenes come with a
//! rendering for overlays); the kind is `Features` whenever features.npy is present.

pub mod npy;
pub mod synthetic;

use anyhow::{anyhow, bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

use npy::fmt_shape;

/// What the model consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DataKind {
    /// frozen-ViT-like patch tokens, `features [S, N, F]`
    Features,
    /// RGB images, `images [S, H, W, 3]`
    Images,
}

/// A dataset held in memory. Plain data; every array is scene-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub kind: DataKind,
    /// number of scenes S
    pub count: usize,
    /// token grid (h, w) for features; (H, W) of the images for images
    pub grid: (usize, usize),
    /// feature dimension F (0 when there are no features)
    pub feat_dim: usize,
    /// `[S, N, F]`, N = grid.0 * grid.1; empty when there are no features
    pub features: Vec<f32>,
    /// `[S, H, W, 3]`; empty when there are no images
    pub images: Vec<u8>,
    /// (H, W) of the images, (0, 0) when there are none
    pub image_hw: (usize, usize),
    /// `[S, Hm, Wm]`, 0 = background, 1.. = objects
    pub masks: Option<Vec<u8>>,
    /// (Hm, Wm) of the masks, (0, 0) when there are none
    pub mask_hw: (usize, usize),
}

pub const FEATURES_FILE: &str = "features.npy";
pub const IMAGES_FILE: &str = "images.npy";
pub const IMAGES_DIR: &str = "images";
pub const MASKS_FILE: &str = "masks.npy";

fn is_square(n: usize) -> Option<usize> {
    let r = (n as f64).sqrt().round() as usize;
    (r * r == n).then_some(r)
}

fn load_png_dir(dir: &Path) -> Result<(Vec<u8>, usize, (usize, usize))> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no .png files", dir.display());
    }
    let mut data = Vec::new();
    let mut hw = (0, 0);
    for (i, f) in files.iter().enumerate() {
        let img = image::open(f).with_context(|| format!("{}: cannot decode PNG", f.display()))?.to_rgb8();
        let this = (img.height() as usize, img.width() as usize);
        if i == 0 {
            hw = this;
        } else if this != hw {
            bail!(
                "{}: size {}x{} differs from {} ({}x{})",
                f.display(),
                this.0,
                this.1,
                files[0].display(),
                hw.0,
                hw.1
            );
        }
        data.extend_from_slice(img.as_raw());
    }
    Ok((data, files.len(), hw))
}

/// Largest feature magnitude accepted: beyond it the reconstruction loss (a mean of squares
/// in float32) overflows to inf at the first step.
pub const MAX_FEATURE_ABS: f32 = 1e12;

/// Reject feature values whose magnitude exceeds [`MAX_FEATURE_ABS`], naming the first one
/// (non-finite values are already refused by [`npy::read_f32`]).
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

impl Dataset {
    /// Tokens per scene (feature kind) or pixels per image (image kind).
    pub fn n_tokens(&self) -> usize {
        self.grid.0 * self.grid.1
    }

    /// Same as [`n_tokens`](Self::n_tokens).
    pub fn tokens(&self) -> usize {
        self.n_tokens()
    }

    /// Number of values per scene in `features`.
    pub fn scene_len(&self) -> usize {
        self.n_tokens() * self.feat_dim
    }

    pub fn has_features(&self) -> bool {
        self.kind == DataKind::Features
    }

    /// Same as [`has_features`](Self::has_features): the dataset feeds the feature model.
    pub fn kind_is_features(&self) -> bool {
        self.kind == DataKind::Features
    }

    pub fn has_images(&self) -> bool {
        self.image_hw != (0, 0)
    }

    /// Check that every array's length agrees with the declared sizes.
    pub fn validate(&self) -> Result<()> {
        match self.kind {
            DataKind::Features => {
                if self.feat_dim == 0 || self.n_tokens() == 0 {
                    bail!("feature dataset with grid {:?} and feat_dim {}", self.grid, self.feat_dim);
                }
                let want = self.count * self.scene_len();
                if self.features.len() != want {
                    bail!(
                        "features has {} values, expected {} ([{}, {}, {}])",
                        self.features.len(),
                        want,
                        self.count,
                        self.n_tokens(),
                        self.feat_dim
                    );
                }
            }
            DataKind::Images => {
                if !self.features.is_empty() {
                    bail!("image dataset with features");
                }
                if self.grid != self.image_hw {
                    bail!("image dataset: grid {:?} != image size {:?}", self.grid, self.image_hw);
                }
            }
        }
        let want_img = self.count * self.image_hw.0 * self.image_hw.1 * 3;
        if self.images.len() != want_img {
            bail!("images has {} values, expected {want_img}", self.images.len());
        }
        if self.kind == DataKind::Images && self.image_hw.0 * self.image_hw.1 == 0 {
            bail!("image dataset without images");
        }
        if let Some(m) = &self.masks {
            let want = self.count * self.mask_hw.0 * self.mask_hw.1;
            if m.len() != want || want == 0 && self.count > 0 {
                bail!("masks has {} values, expected {want} (mask size {:?})", m.len(), self.mask_hw);
            }
            if self.mask_hw.0 < self.grid.0 || self.mask_hw.1 < self.grid.1 {
                bail!("masks of {:?} are smaller than the grid {:?} of the data", self.mask_hw, self.grid);
            }
        }
        Ok(())
    }

    /// Load a dataset directory (see the module docs for the layout).
    pub fn load(dir: impl AsRef<Path>) -> Result<Dataset> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            bail!("{}: not a dataset directory (it does not exist or is not a directory)", dir.display());
        }
        let fpath = dir.join(FEATURES_FILE);
        let ipath = dir.join(IMAGES_FILE);
        let idir = dir.join(IMAGES_DIR);
        let mpath = dir.join(MASKS_FILE);

        // (count, source file) of the first array read, for mismatch messages
        let mut first: Option<(usize, String)> = None;
        let mut check_count = |n: usize, what: &Path| -> Result<()> {
            match &first {
                None => {
                    first = Some((n, what.display().to_string()));
                    Ok(())
                }
                Some((m, src)) if *m != n => {
                    bail!("scene count mismatch: {} has {n} scenes but {src} has {m}", what.display())
                }
                Some(_) => Ok(()),
            }
        };

        let mut ds = Dataset {
            kind: DataKind::Features,
            count: 0,
            grid: (0, 0),
            feat_dim: 0,
            features: Vec::new(),
            images: Vec::new(),
            image_hw: (0, 0),
            masks: None,
            mask_hw: (0, 0),
        };
        let have_features = fpath.is_file();
        if have_features {
            let (data, shape) = npy::read_f32(&fpath)?;
            npy::expect_rank(&fpath, &shape, &[3, 4], "[S, N, F] or [S, h, w, F]")?;
            let (s, grid, f) = if shape.len() == 3 {
                let n = shape[1];
                let side = is_square(n).ok_or_else(|| {
                    anyhow!(
                        "{}: shape {}: N = {n} tokens is not a perfect square; save the features as [S, h, w, F]",
                        fpath.display(),
                        fmt_shape(&shape)
                    )
                })?;
                (shape[0], (side, side), shape[2])
            } else {
                (shape[0], (shape[1], shape[2]), shape[3])
            };
            if f == 0 || grid.0 * grid.1 == 0 {
                bail!("{}: shape {} has an empty token or feature axis", fpath.display(), fmt_shape(&shape));
            }
            if s == 0 {
                bail!("{}: shape {} holds no scenes", fpath.display(), fmt_shape(&shape));
            }
            check_feature_values(&fpath, &shape, &data)?;
            check_count(s, &fpath)?;
            ds.count = s;
            ds.grid = grid;
            ds.feat_dim = f;
            ds.features = data;
        }

        let images = if ipath.is_file() {
            let (data, shape) = npy::read_u8(&ipath)?;
            npy::expect_rank(&ipath, &shape, &[4], "[S, H, W, 3] uint8")?;
            if shape[3] != 3 {
                bail!("{}: shape {}: the last axis must be 3 (RGB)", ipath.display(), fmt_shape(&shape));
            }
            if shape[..3].contains(&0) {
                bail!("{}: shape {} has an empty axis (no scenes or no pixels)", ipath.display(), fmt_shape(&shape));
            }
            check_count(shape[0], &ipath)?;
            Some((data, shape[0], (shape[1], shape[2])))
        } else if idir.is_dir() {
            let (data, n, hw) = load_png_dir(&idir)?;
            check_count(n, &idir)?;
            Some((data, n, hw))
        } else {
            None
        };
        match images {
            Some((data, n, hw)) => {
                ds.images = data;
                ds.image_hw = hw;
                if !have_features {
                    ds.kind = DataKind::Images;
                    ds.count = n;
                    ds.grid = hw;
                }
            }
            None if !have_features => {
                bail!("{}: no {FEATURES_FILE}, {IMAGES_FILE} or {IMAGES_DIR}/ found", dir.display())
            }
            None => {}
        }

        if mpath.is_file() {
            let (data, shape) = npy::read_labels_u8(&mpath)?;
            npy::expect_rank(&mpath, &shape, &[3], "[S, H, W] label map")?;
            if shape.contains(&0) {
                bail!("{}: shape {} has an empty axis", mpath.display(), fmt_shape(&shape));
            }
            check_count(shape[0], &mpath)?;
            if shape[1] < ds.grid.0 || shape[2] < ds.grid.1 {
                bail!(
                    "{}: shape {}: masks of {}x{} are smaller than the {}x{} {} of the data; \
                     masks must have at least that resolution",
                    mpath.display(),
                    fmt_shape(&shape),
                    shape[1],
                    shape[2],
                    ds.grid.0,
                    ds.grid.1,
                    if have_features { "token grid" } else { "images" }
                );
            }
            ds.mask_hw = (shape[1], shape[2]);
            ds.masks = Some(data);
        }
        ds.validate().with_context(|| format!("{}: inconsistent dataset", dir.display()))?;
        Ok(ds)
    }

    /// Save to `dir` (created if needed): each present array is written atomically.
    /// Features are written `[S, N, F]` when the grid is square, else `[S, h, w, F]`.
    /// Files this dataset does not have are left alone.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        self.validate()?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the dataset directory", dir.display()))?;
        if self.kind == DataKind::Features {
            let shape = if self.grid.0 == self.grid.1 {
                vec![self.count, self.n_tokens(), self.feat_dim]
            } else {
                vec![self.count, self.grid.0, self.grid.1, self.feat_dim]
            };
            npy::write_f32(&dir.join(FEATURES_FILE), &self.features, &shape)?;
        }
        if self.has_images() {
            npy::write_u8(&dir.join(IMAGES_FILE), &self.images, &[self.count, self.image_hw.0, self.image_hw.1, 3])?;
        }
        if let Some(m) = &self.masks {
            npy::write_u8(&dir.join(MASKS_FILE), m, &[self.count, self.mask_hw.0, self.mask_hw.1])?;
        }
        Ok(())
    }

    /// [`save`](Self::save), all or nothing when `dir` does not exist yet: the files are written
    /// into a sibling temporary directory that is renamed to `dir` at the end (and removed on
    /// any error), so a failed save leaves no partial dataset. An existing `dir` is written
    /// file by file, each file atomically.
    pub fn save_new(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        if dir.exists() {
            return self.save(dir);
        }
        let name = dir.file_name().ok_or_else(|| anyhow!("{}: not a directory path", dir.display()))?;
        let tmp = dir.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("{}: cannot create the dataset directory", dir.display()))?;
        }
        let res = self.save(&tmp).and_then(|_| {
            std::fs::rename(&tmp, dir).with_context(|| format!("{}: cannot rename to {}", tmp.display(), dir.display()))
        });
        if res.is_err() && tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        res
    }

    /// A new dataset with the given scenes, in the given order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        for &i in indices {
            assert!(i < self.count, "scene index {i} out of range (count {})", self.count);
        }
        let gather = |data: &[u8], per: usize| -> Vec<u8> {
            indices.iter().flat_map(|&i| data[i * per..(i + 1) * per].iter().copied()).collect()
        };
        Dataset {
            kind: self.kind,
            count: indices.len(),
            grid: self.grid,
            feat_dim: self.feat_dim,
            features: self.features_batch(indices),
            images: if self.has_images() {
                gather(&self.images, self.image_hw.0 * self.image_hw.1 * 3)
            } else {
                Vec::new()
            },
            image_hw: self.image_hw,
            masks: self.masks.as_ref().map(|m| gather(m, self.mask_hw.0 * self.mask_hw.1)),
            mask_hw: self.mask_hw,
        }
    }

    /// A deterministic random subset of `percent` percent of the scenes (0 < percent <= 100;
    /// at least one scene), kept in their original order. 100 returns a copy. The same
    /// (dataset, percent, seed) always gives the same scenes.
    /// Panics on a percent outside (0, 100]; [`try_subset`](Self::try_subset) returns an error.
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
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        idx.shuffle(&mut rng);
        idx.truncate(n.min(self.count));
        idx.sort_unstable();
        Ok(self.select(&idx))
    }

    /// Fixed split `(train, val)`: the last `val_count` scenes are validation, the rest
    /// training. Panics if `val_count > count`; [`try_split`](Self::try_split) returns an
    /// error instead, also when no training scene would remain.
    pub fn split(&self, val_count: usize) -> (Dataset, Dataset) {
        assert!(
            val_count <= self.count,
            "cannot hold out {val_count} validation scenes from a dataset of {}",
            self.count
        );
        let cut = self.count - val_count;
        let train: Vec<usize> = (0..cut).collect();
        let val: Vec<usize> = (cut..self.count).collect();
        (self.select(&train), self.select(&val))
    }

    /// [`split`](Self::split), with an error if no training scene would remain.
    pub fn try_split(&self, val_count: usize) -> Result<(Dataset, Dataset)> {
        if val_count >= self.count {
            bail!(
                "cannot hold out {val_count} validation scenes from a dataset of {}: no training scene would remain",
                self.count
            );
        }
        Ok(self.split(val_count))
    }

    /// Same as [`features_batch`](Self::features_batch).
    pub fn gather_features(&self, indices: &[usize]) -> Vec<f32> {
        self.features_batch(indices)
    }

    /// Features of the given scenes, `[B, N, F]` (empty when there are no features).
    pub fn features_batch(&self, indices: &[usize]) -> Vec<f32> {
        let mut out = Vec::new();
        self.features_batch_into(indices, &mut out);
        out
    }

    /// [`features_batch`](Self::features_batch) into a reused buffer (cleared first).
    pub fn features_batch_into(&self, indices: &[usize], out: &mut Vec<f32>) {
        out.clear();
        if self.features.is_empty() {
            return;
        }
        let per = self.scene_len();
        out.reserve(indices.len() * per);
        for &i in indices {
            assert!(i < self.count, "scene index {i} out of range (count {})", self.count);
            out.extend_from_slice(&self.features[i * per..(i + 1) * per]);
        }
    }

    /// Images of the given scenes as f32 in [0, 1], `[B, H, W, 3]`.
    pub fn images_batch_f32(&self, indices: &[usize]) -> Vec<f32> {
        let per = self.image_hw.0 * self.image_hw.1 * 3;
        let mut out = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            assert!(i < self.count, "scene index {i} out of range (count {})", self.count);
            out.extend(self.images[i * per..(i + 1) * per].iter().map(|&v| v as f32 / 255.0));
        }
        out
    }

    /// Masks of the given scenes, `[B, Hm, Wm]`, if the dataset has masks.
    pub fn masks_batch(&self, indices: &[usize]) -> Option<Vec<u8>> {
        let m = self.masks.as_ref()?;
        let per = self.mask_hw.0 * self.mask_hw.1;
        let mut out = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            assert!(i < self.count, "scene index {i} out of range (count {})", self.count);
            out.extend_from_slice(&m[i * per..(i + 1) * per]);
        }
        Some(out)
    }

    /// The mask of one scene, `[Hm, Wm]`.
    pub fn mask(&self, i: usize) -> Option<&[u8]> {
        let per = self.mask_hw.0 * self.mask_hw.1;
        self.masks.as_ref().map(|m| &m[i * per..(i + 1) * per])
    }
}
