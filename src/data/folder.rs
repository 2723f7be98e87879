//! Image folders: `DIR/images/*.png|jpg|jpeg` (sorted by name) with optional
//! `DIR/masks/<same stem>.png` holding instance ids (0 = background).
//!
//! Masks are read as stored: 8- or 16-bit grey values and palette indices are the ids
//! (the palette is not applied, as VOC-style masks need); in an RGB mask every distinct colour
//! is one instance, black the background. Ids must fit in 0..=255.
//!
//! The images are decoded once, in parallel, when the dataset is opened and held in memory
//! at the configured size (`image-size`; without it every image must have the first one's
//! size): a corrupt file or a size that does not fit is refused before training starts.
//! For image sets larger than memory, write `images-*.npy` shards instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use rayon::prelude::*;

use super::column::{Column, ColumnKind};
use super::layout::{file_stamp, OpenOptions};
use super::{Dataset, IMAGES_DIR, MASKS_DIR};

const IMAGE_EXTS: [&str; 3] = ["png", "jpg", "jpeg"];

fn list(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x))))
        .collect();
    files.sort();
    Ok(files)
}

fn stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The images of `dir/images/` as `[S, H, W, 3]` at `size` (or the first image's size), their
/// paths and sizes before resizing.
fn read_images(dir: &Path, size: Option<(usize, usize)>) -> Result<(Vec<u8>, (usize, usize), Vec<PathBuf>, Vec<(usize, usize)>)> {
    let idir = dir.join(IMAGES_DIR);
    let files = list(&idir, &IMAGE_EXTS)?;
    if files.is_empty() {
        bail!("{}: no .png or .jpg files", idir.display());
    }
    let dims = |f: &PathBuf| -> Result<(usize, usize)> {
        let (w, h) = image::image_dimensions(f).with_context(|| format!("{}: cannot read the image header (corrupt or not an image)", f.display()))?;
        Ok((h as usize, w as usize))
    };
    let first = dims(&files[0])?;
    let target = size.unwrap_or(first);
    let decoded: Vec<(Vec<u8>, (usize, usize))> = files
        .par_iter()
        .map(|f| {
            let img = image::open(f).with_context(|| format!("{}: cannot decode the image (corrupt or truncated)", f.display()))?.to_rgb8();
            let hw = (img.height() as usize, img.width() as usize);
            if size.is_none() && hw != first {
                bail!(
                    "{}: size {}x{} differs from {} ({}x{}); set image-size (e.g. --image-size {} {}) to resize every image",
                    f.display(),
                    hw.0,
                    hw.1,
                    files[0].display(),
                    first.0,
                    first.1,
                    first.0,
                    first.1
                );
            }
            let img = if hw == target { img } else { image::imageops::resize(&img, target.1 as u32, target.0 as u32, FilterType::Triangle) };
            Ok((img.into_raw(), hw))
        })
        .collect::<Result<_>>()?;
    let sizes = decoded.iter().map(|(_, hw)| *hw).collect();
    Ok((decoded.into_iter().flat_map(|(b, _)| b).collect(), target, files, sizes))
}

/// Instance ids of a mask PNG, row-major, and its (H, W).
fn read_mask(path: &Path) -> Result<(Vec<u8>, (usize, usize))> {
    let what = || format!("{}: cannot decode the mask PNG (corrupt or truncated)", path.display());
    let file = std::io::BufReader::new(std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?);
    let mut reader = png::Decoder::new(file).read_info().with_context(what)?;
    let mut buf = vec![0u8; reader.output_buffer_size().context("mask too large")?];
    let info = reader.next_frame(&mut buf).with_context(what)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let depth = info.bit_depth as usize;
    let row = |y: usize| &buf[y * info.line_size..(y + 1) * info.line_size];
    let channels = info.color_type.samples();
    // sample c of pixel x in a row, for depths 1..=16
    let sample = |r: &[u8], x: usize, c: usize| -> u32 {
        let i = x * channels + c;
        match depth {
            16 => u16::from_be_bytes([r[2 * i], r[2 * i + 1]]) as u32,
            8 => r[i] as u32,
            d => ((r[i * d / 8] >> (8 - d - (i * d) % 8)) & ((1u8 << d) - 1)) as u32,
        }
    };
    let mut ids = Vec::with_capacity(w * h);
    let mut colours: HashMap<u32, u32> = HashMap::from([(0, 0)]);
    for y in 0..h {
        let r = row(y);
        for x in 0..w {
            let id = match info.color_type {
                png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha | png::ColorType::Indexed => sample(r, x, 0),
                png::ColorType::Rgb | png::ColorType::Rgba => {
                    let key = (sample(r, x, 0) & 255) << 16 | (sample(r, x, 1) & 255) << 8 | (sample(r, x, 2) & 255);
                    let next = colours.len() as u32;
                    *colours.entry(key).or_insert(next)
                }
            };
            if id > 255 {
                bail!("{}: instance id {id} at pixel ({y}, {x}) is out of range (0..=255)", path.display());
            }
            ids.push(id as u8);
        }
    }
    Ok((ids, (h, w)))
}

/// The masks of `dir/masks/`, one per image of `images` (same stem), checked against the
/// image's size and resized (nearest) to `target`.
fn read_masks(dir: &Path, images: &[PathBuf], sizes: &[(usize, usize)], target: (usize, usize)) -> Result<Vec<u8>> {
    let mdir = dir.join(MASKS_DIR);
    let files = list(&mdir, &["png"])?;
    let by_stem: HashMap<String, &PathBuf> = files.iter().map(|f| (stem(f), f)).collect();
    if let Some(img) = images.iter().find(|i| !by_stem.contains_key(&stem(i))) {
        bail!("{}: masks for only some images: {} has no {}/{}.png", mdir.display(), img.display(), MASKS_DIR, stem(img));
    }
    if files.len() > images.len() {
        let known: std::collections::HashSet<String> = images.iter().map(|i| stem(i)).collect();
        let extra = files.iter().find(|f| !known.contains(&stem(f))).unwrap();
        bail!("{}: has no image of the same name in {IMAGES_DIR}/", extra.display());
    }
    let masks: Vec<Vec<u8>> = images
        .par_iter()
        .zip(sizes)
        .map(|(img, &size)| {
            let path = by_stem[&stem(img)];
            let (ids, hw) = read_mask(path)?;
            if hw != size {
                bail!("{}: mask of {}x{} but its image {} is {}x{}", path.display(), hw.0, hw.1, img.display(), size.0, size.1);
            }
            if hw == target {
                return Ok(ids);
            }
            let gray = image::GrayImage::from_raw(hw.1 as u32, hw.0 as u32, ids).expect("mask size");
            Ok(image::imageops::resize(&gray, target.1 as u32, target.0 as u32, FilterType::Nearest).into_raw())
        })
        .collect::<Result<_>>()?;
    Ok(masks.concat())
}

fn stamps(files: &[PathBuf]) -> Result<String> {
    Ok(files.iter().map(|f| file_stamp(f)).collect::<Result<Vec<_>>>()?.join(";"))
}

/// An image dataset from `dir/images/` (and `dir/masks/`).
pub fn open(dir: &Path, opts: &OpenOptions) -> Result<Dataset> {
    let (images, hw, files, sizes) = read_images(dir, opts.image_size)?;
    let n = files.len();
    let mut identity = format!("image folder {:?} at {}x{}: {}", dir, hw.0, hw.1, stamps(&files)?);
    let masks_npy = dir.join(super::MASKS_FILE);
    let masks = if dir.join(MASKS_DIR).is_dir() {
        Some(Column::mem_u8(ColumnKind::Masks, read_masks(dir, &files, &sizes, hw)?, &[hw.0, hw.1]))
    } else if masks_npy.is_file() {
        // a masks.npy beside the folder, used as it is
        let a = super::npy::NpyArray::open(&masks_npy)?;
        if a.dtype().is_float() {
            bail!("{}: wrong dtype {}: a label map must have an integer dtype", a.name, a.dtype().numpy_name());
        }
        a.check_labels_u8()?;
        identity.push_str(&format!(";{}", file_stamp(&masks_npy)?));
        Some(Column::files(ColumnKind::Masks, vec![a]))
    } else {
        None
    };
    let images = Column::mem_u8(ColumnKind::Images, images, &[hw.0, hw.1, 3]);
    debug_assert_eq!(images.scenes(), n);
    Dataset::from_columns(None, Some(images), masks, identity, dir.display().to_string())
}

/// Images of `dir/images/` beside features (pictures only): one per scene, at their own size.
pub fn attach_images(ds: Dataset, dir: &Path, opts: &OpenOptions) -> Result<Dataset> {
    let (images, hw, files, _) = read_images(dir, opts.image_size)?;
    let store = &ds.store;
    let images = Column::mem_u8(ColumnKind::Images, images, &[hw.0, hw.1, 3]);
    let identity = format!("{};{}", store.identity, stamps(&files)?);
    Dataset::from_columns(store.features.clone(), Some(images), store.masks.clone(), identity, store.location.clone())
}
