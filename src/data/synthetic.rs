//! Built-in synthetic datasets, deterministic from a seed.
//!
//! - `clevr-features` (3 to 10 objects) and `clevr6-features` (3 to 6): CLEVR-like scenes on
//!   a 128x128 canvas, seen through a 16x16 grid of ViT-like feature tokens (see
//!   [`FeatureParams`]), with a 128x128 RGB rendering and 128x128 masks.
//! - `tetrominoes`: 35x35 RGB, three coloured tetrominoes on black, with masks.
//! - `multi-dsprites`: 64x64 RGB, 2 to 5 sprites (square, ellipse, heart) with occlusion,
//!   random colours on a coloured background, with masks.
//!
//! Masks: 0 background, 1..=n objects in draw order (visible pixels only).
//!
//! Each scene has its own RNG (ChaCha8 seeded from the dataset seed, stream = scene index),
//! and scenes are generated in parallel with rayon, so the result depends only on
//! (name, count, seed, feat_dim), not on the thread count. Scene i is the same whatever
//! `count` is. The "world" (attribute embeddings, positional field, shared component) is
//! fixed by the feature dimension alone, so train and validation sets generated with
//! different seeds describe the same world.

use std::ops::Range;

use super::{DataKind, Dataset};
use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// Names accepted by [`generate`].
pub const NAMES: &[&str] = &["clevr-features", "clevr6-features", "tetrominoes", "multi-dsprites"];

/// Canvas (and mask) size of the CLEVR-like scenes.
pub const CLEVR_HW: usize = 128;
/// Token grid side of the CLEVR-like scenes (patches of 8x8 pixels).
pub const CLEVR_GRID: usize = 16;

/// Generate `count` scenes of the named dataset. `feat_dim` is the token dimension of the
/// feature datasets and is ignored by the image datasets.
pub fn generate(name: &str, count: usize, seed: u64, feat_dim: usize) -> Result<Dataset> {
    generate_range(name, 0..count, seed, feat_dim)
}

/// Scenes `range` of the named dataset (scene i is the same as in [`generate`]): `gen-data`
/// writes large sets range by range without holding them in memory.
pub fn generate_range(name: &str, range: Range<usize>, seed: u64, feat_dim: usize) -> Result<Dataset> {
    let ds = match name {
        "clevr-features" => clevr_features_range(range, seed, feat_dim, 10, &FeatureParams::default()),
        "clevr6-features" => clevr_features_range(range, seed, feat_dim, 6, &FeatureParams::default()),
        "tetrominoes" => tetrominoes_range(range, seed),
        "multi-dsprites" => multi_dsprites_range(range, seed),
        _ => bail!("unknown synthetic dataset '{name}' (known: {})", NAMES.join(", ")),
    }?;
    Ok(ds.named(&format!("the built-in {name} scenes")))
}

/// Write scenes `range` of the named dataset into `dir` (which exists) without holding them in
/// memory: generated 256 scenes at a time and appended to `features`, `images` and `masks`
/// arrays of `dtype` features, in shards of `shard_size` scenes (`features-00000.npy`, ...;
/// 0: one file per array). Prints progress on stderr.
pub fn write_range(name: &str, range: Range<usize>, seed: u64, feat_dim: usize, dir: &std::path::Path, dtype: super::npy::DType, shard_size: usize) -> Result<()> {
    use super::npy::NpyWriter;
    const CHUNK: usize = 256;
    let per_shard = if shard_size == 0 { range.len() } else { shard_size };
    let t = std::time::Instant::now();
    let (mut done, mut reported) = (0usize, 0f64);
    for (i, start) in range.clone().step_by(per_shard).enumerate() {
        let shard = start..(start + per_shard).min(range.end);
        let suffix = if shard_size == 0 { String::new() } else { format!("-{i:05}") };
        let mut writers: Vec<(Option<NpyWriter>, &str)> = Vec::new();
        for c in shard.clone().step_by(CHUNK) {
            let part = generate_range(name, c..(c + CHUNK).min(shard.end), seed, feat_dim)?;
            let all: Vec<usize> = (0..part.count).collect();
            if writers.is_empty() {
                let s = shard.len();
                let mk = |base: &str, ty, tail: Vec<usize>| -> Result<NpyWriter> {
                    let shape: Vec<usize> = [s].iter().chain(&tail).copied().collect();
                    NpyWriter::create(&dir.join(format!("{base}{suffix}.npy")), ty, &shape)
                };
                let u8t = super::npy::DType::U8;
                writers.push((part.kind_is_features().then(|| mk("features", dtype, vec![part.tokens(), part.feat_dim])).transpose()?, "features"));
                writers.push((part.has_images().then(|| mk("images", u8t, vec![part.image_hw.0, part.image_hw.1, 3])).transpose()?, "images"));
                writers.push((part.has_masks().then(|| mk("masks", u8t, vec![part.mask_hw.0, part.mask_hw.1])).transpose()?, "masks"));
            }
            for (w, what) in writers.iter_mut() {
                let Some(w) = w else { continue };
                match *what {
                    "features" => w.append_f32(&part.features_batch(&all)?)?,
                    "images" => w.append_u8(&part.images_batch(&all)?.unwrap_or_default())?,
                    _ => w.append_u8(&part.masks_batch(&all)?.unwrap_or_default())?,
                }
            }
            done += part.count;
            let secs = t.elapsed().as_secs_f64();
            if secs - reported >= 10.0 {
                reported = secs;
                eprintln!("gen-data: {done}/{} scenes, {:.0} scenes/s, {:.0} s left", range.len(), done as f64 / secs, secs / done as f64 * (range.len() - done) as f64);
            }
        }
        for (w, _) in writers {
            if let Some(w) = w {
                w.finish()?;
            }
        }
    }
    Ok(())
}

/// A zeroed buffer, or an error naming its size when the memory cannot be had (instead of the
/// abort a failed allocation is).
pub fn zeroed<T: Clone + Default>(len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        anyhow::anyhow!("cannot allocate {:.2} GiB for the generated scenes", (len * std::mem::size_of::<T>()) as f64 / (1u64 << 30) as f64)
    })?;
    v.resize(len, T::default());
    Ok(v)
}

fn scene_rng(seed: u64, tag: u64, scene: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.set_stream(scene as u64);
    rng
}

fn unit_vec(rng: &mut impl Rng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

// ---------------------------------------------------------------------------------------
// CLEVR-like feature scenes

/// Knobs of the CLEVR-like token model. A token is
/// `shared * m + sum_l cover_l * code_l + pos * P_t + token_noise * eps_t`, where the sum runs
/// over the background and the objects seen in the token's 8x8 patch (`cover_l` = fraction of
/// the patch), an object's code is `attr * unit(E_shape + E_colour + E_material + E_size) +
/// object_noise * u_o`, the background code is `bg * b + bg_field * smooth_t` (a per-scene
/// low-frequency random field), `P_t` a fixed smooth positional field and `eps_t` iid
/// Gaussian. All vectors are unit-norm, noise is scaled to unit expected norm, so the knobs
/// mean the same at any feature dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureParams {
    /// object radius multiplier of the layout (1.0: large objects ~13 px, small ~7 px radius
    /// at mid-depth on the 128x128 canvas; the default 1.8 puts the resolution ceiling near 0.79)
    pub object_scale: f32,
    pub shared: f32,
    pub attr: f32,
    pub object_noise: f32,
    pub bg: f32,
    pub bg_field: f32,
    pub pos: f32,
    pub token_noise: f32,
}

impl Default for FeatureParams {
    fn default() -> Self {
        FeatureParams {
            object_scale: 1.8,
            shared: 1.0,
            attr: 1.0,
            object_noise: 0.45,
            bg: 1.0,
            bg_field: 0.3,
            pos: 0.15,
            token_noise: 0.2,
        }
    }
}

/// Object attributes of a CLEVR-like scene.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SceneObject {
    /// 0 circle (sphere), 1 square (cube), 2 triangle (cone-ish)
    pub shape: u8,
    /// 0..8: gray, red, blue, green, brown, purple, cyan, yellow
    pub colour: u8,
    /// 0 rubber, 1 metal
    pub material: u8,
    /// 0 small, 1 large
    pub size: u8,
    /// centre, pixels
    pub cx: f32,
    pub cy: f32,
    /// radius, pixels
    pub r: f32,
    /// rotation, radians
    pub angle: f32,
}

const CLEVR_COLOURS: [[f32; 3]; 8] = [
    [87.0, 87.0, 87.0],
    [173.0, 35.0, 35.0],
    [42.0, 75.0, 215.0],
    [29.0, 105.0, 20.0],
    [129.0, 74.0, 25.0],
    [129.0, 38.0, 192.0],
    [41.0, 208.0, 208.0],
    [255.0, 238.0, 51.0],
];

impl SceneObject {
    /// Is the point (x, y) (pixel coordinates) inside the object's silhouette?
    pub fn contains(&self, x: f32, y: f32) -> bool {
        let (dx, dy) = (x - self.cx, y - self.cy);
        match self.shape {
            0 => dx * dx + dy * dy <= self.r * self.r,
            1 => {
                let (s, c) = self.angle.sin_cos();
                let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
                let h = 0.85 * self.r;
                u.abs() <= h && v.abs() <= h
            }
            _ => {
                // equilateral triangle with circumradius 1.15 r: inside if the projection on
                // each edge normal is at most the inradius
                let rin = 0.575 * self.r;
                (0..3).all(|k| {
                    let phi = self.angle + std::f32::consts::FRAC_PI_2 + (k as f32) * 2.0944 + std::f32::consts::PI;
                    dx * phi.cos() + dy * phi.sin() <= rin
                })
            }
        }
    }
}

/// Sample a layout of `n` objects on the canvas, back to front (draw order), and its mask.
/// Every object keeps at least 35% of its area (and 25 pixels) visible.
/// If no valid layout of `n` objects turns up in 200 attempts, `n` is lowered by one.
pub fn clevr_layout(rng: &mut impl Rng, n: usize, object_scale: f32) -> (Vec<SceneObject>, Vec<u8>) {
    let hw = CLEVR_HW as f32;
    let mut n = n.max(1);
    for attempt in 0.. {
        if attempt > 0 && attempt % 200 == 0 && n > 1 {
            n -= 1;
        }
        let mut objs: Vec<SceneObject> = Vec::with_capacity(n);
        let mut ok = true;
        for _ in 0..n {
            let mut placed = false;
            for _try in 0..100 {
                let size = rng.random_range(0..2u8);
                let cy = rng.random_range(30.0..hw - 8.0);
                let persp = 0.7 + 0.45 * cy / hw;
                let base = object_scale * if size == 1 { 13.0 } else { 7.0 };
                let r = base * persp * rng.random_range(0.95..1.05);
                let cx = rng.random_range(r + 1.0..hw - r - 1.0);
                let cy = cy.min(hw - r - 1.0);
                if objs.iter().all(|o| {
                    let d = ((o.cx - cx).powi(2) + (o.cy - cy).powi(2)).sqrt();
                    d > 0.75 * (o.r + r)
                }) {
                    objs.push(SceneObject {
                        shape: rng.random_range(0..3u8),
                        colour: rng.random_range(0..8u8),
                        material: rng.random_range(0..2u8),
                        size,
                        cx,
                        cy,
                        r,
                        angle: rng.random_range(0.0..std::f32::consts::TAU),
                    });
                    placed = true;
                    break;
                }
            }
            if !placed {
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        // back to front: objects lower on the canvas are nearer the camera
        objs.sort_by(|a, b| a.cy.partial_cmp(&b.cy).unwrap());
        let (mask, area) = draw_objects(&objs);
        let mut visible = vec![0usize; n + 1];
        for &l in &mask {
            visible[l as usize] += 1;
        }
        if (0..n).all(|i| visible[i + 1] >= 25 && visible[i + 1] as f32 >= 0.35 * area[i] as f32) {
            return (objs, mask);
        }
    }
    unreachable!()
}

/// Rasterize objects in order (later ones occlude earlier ones): mask and full areas.
fn draw_objects(objs: &[SceneObject]) -> (Vec<u8>, Vec<usize>) {
    let hw = CLEVR_HW;
    let mut mask = vec![0u8; hw * hw];
    let mut area = vec![0usize; objs.len()];
    for (i, o) in objs.iter().enumerate() {
        let ext = 1.2 * o.r + 1.0;
        let y0 = ((o.cy - ext).floor().max(0.0)) as usize;
        let y1 = ((o.cy + ext).ceil() as usize).min(hw);
        let x0 = ((o.cx - ext).floor().max(0.0)) as usize;
        let x1 = ((o.cx + ext).ceil() as usize).min(hw);
        for y in y0..y1 {
            for x in x0..x1 {
                if o.contains(x as f32 + 0.5, y as f32 + 0.5) {
                    mask[y * hw + x] = (i + 1) as u8;
                    area[i] += 1;
                }
            }
        }
    }
    (mask, area)
}

/// A simple shaded RGB rendering of a layout (for overlays and the pixel model).
fn render_clevr(objs: &[SceneObject], mask: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let hw = CLEVR_HW;
    let tint: f32 = rng.random_range(-12.0..12.0);
    let mut img = vec![0u8; hw * hw * 3];
    for y in 0..hw {
        for x in 0..hw {
            let p = y * hw + x;
            let l = mask[p] as usize;
            let rgb = if l == 0 {
                let g = 150.0 - 35.0 * (y as f32 / hw as f32) + tint;
                [g, g, g + 3.0]
            } else {
                let o = &objs[l - 1];
                let base = CLEVR_COLOURS[o.colour as usize];
                let (dx, dy) = ((x as f32 + 0.5 - o.cx) / o.r, (y as f32 + 0.5 - o.cy) / o.r);
                let d = (dx * dx + dy * dy).sqrt();
                let shade = 0.7 + 0.3 * (1.0 - d.min(1.0));
                let hl = if o.material == 1 {
                    let hd = ((dx + 0.35).powi(2) + (dy + 0.35).powi(2)).sqrt();
                    (1.0 - hd / 0.35).max(0.0) * 0.8
                } else {
                    0.0
                };
                let mut c = [0.0; 3];
                for ch in 0..3 {
                    c[ch] = base[ch] * shade * (1.0 - hl) + 255.0 * hl;
                }
                c
            };
            for ch in 0..3 {
                img[p * 3 + ch] = rgb[ch].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    img
}

/// The fixed "world" of the feature scenes: depends on the feature dimension only.
struct World {
    dim: usize,
    shape: Vec<Vec<f32>>,
    colour: Vec<Vec<f32>>,
    material: Vec<Vec<f32>>,
    size: Vec<Vec<f32>>,
    shared: Vec<f32>,
    bg: Vec<f32>,
    /// `[N, F]` smooth positional field, mean token norm 1
    pos: Vec<f32>,
}

/// Low-frequency random field over the token grid: `[N]` values for each of the `q` components.
fn fourier_components(rng: &mut impl Rng, q: usize, max_freq: f32) -> Vec<Vec<f32>> {
    let g = CLEVR_GRID;
    (0..q)
        .map(|_| {
            let fx: f32 = rng.random_range(-max_freq..max_freq);
            let fy: f32 = rng.random_range(-max_freq..max_freq);
            let ph: f32 = rng.random_range(0.0..std::f32::consts::TAU);
            (0..g * g)
                .map(|t| {
                    let (i, j) = ((t / g) as f32 / g as f32, (t % g) as f32 / g as f32);
                    (std::f32::consts::TAU * (fx * j + fy * i) + ph).cos()
                })
                .collect()
        })
        .collect()
}

/// Sum of `comps[q][t] * vecs[q]` per token, scaled so the mean token norm is 1: `[N, F]`.
fn field(comps: &[Vec<f32>], vecs: &[Vec<f32>], dim: usize) -> Vec<f32> {
    let n = comps[0].len();
    let mut out = vec![0f32; n * dim];
    for (c, v) in comps.iter().zip(vecs) {
        for t in 0..n {
            axpy(c[t], v, &mut out[t * dim..(t + 1) * dim]);
        }
    }
    let mean_norm = out.chunks(dim).map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt()).sum::<f32>() / n as f32;
    let s = 1.0 / mean_norm.max(1e-12);
    out.iter_mut().for_each(|x| *x *= s);
    out
}

impl World {
    fn new(dim: usize) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5107_F0A6_E000_0000 ^ dim as u64);
        let vecs = |k: usize, rng: &mut ChaCha8Rng| (0..k).map(|_| unit_vec(rng, dim)).collect::<Vec<_>>();
        let shape = vecs(3, &mut rng);
        let colour = vecs(8, &mut rng);
        let material = vecs(2, &mut rng);
        let size = vecs(2, &mut rng);
        let shared = unit_vec(&mut rng, dim);
        let bg = unit_vec(&mut rng, dim);
        let comps = fourier_components(&mut rng, 16, 1.5);
        let pvecs = vecs(16, &mut rng);
        let pos = field(&comps, &pvecs, dim);
        World { dim, shape, colour, material, size, shared, bg, pos }
    }

    /// Unit appearance code of an attribute combination.
    fn attr_code(&self, o: &SceneObject) -> Vec<f32> {
        let mut v = vec![0f32; self.dim];
        axpy(1.0, &self.shape[o.shape as usize], &mut v);
        axpy(1.0, &self.colour[o.colour as usize], &mut v);
        axpy(1.0, &self.material[o.material as usize], &mut v);
        axpy(1.0, &self.size[o.size as usize], &mut v);
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

/// One CLEVR-like feature scene into `tokens [N, F]`, `mask_out [128*128]`, `image_out [128*128*3]`.
fn clevr_scene(
    world: &World,
    p: &FeatureParams,
    rng: &mut ChaCha8Rng,
    max_objects: usize,
    tokens: &mut [f32],
    mask_out: &mut [u8],
    image_out: &mut [u8],
) {
    let dim = world.dim;
    let g = CLEVR_GRID;
    let n_tok = g * g;
    let patch = CLEVR_HW / g;
    let n = rng.random_range(3..=max_objects);
    let (objs, mask) = clevr_layout(rng, n, p.object_scale);
    image_out.copy_from_slice(&render_clevr(&objs, &mask, rng));
    mask_out.copy_from_slice(&mask);

    // codes: index 0 background (per token), 1..=n objects
    let codes: Vec<Vec<f32>> = objs
        .iter()
        .map(|o| {
            let mut c: Vec<f32> = world.attr_code(o).iter().map(|x| x * p.attr).collect();
            axpy(p.object_noise, &unit_vec(rng, dim), &mut c);
            c
        })
        .collect();
    let bg_comps = fourier_components(rng, 4, 1.0);
    let bg_vecs: Vec<Vec<f32>> = (0..4).map(|_| unit_vec(rng, dim)).collect();
    let bg_field = field(&bg_comps, &bg_vecs, dim);

    let noise_scale = p.token_noise / (dim as f32).sqrt();
    let mut cover = vec![0u32; n + 1];
    let inv = 1.0 / (patch * patch) as f32;
    for t in 0..n_tok {
        let (ti, tj) = (t / g, t % g);
        cover.iter_mut().for_each(|c| *c = 0);
        for y in ti * patch..(ti + 1) * patch {
            for x in tj * patch..(tj + 1) * patch {
                cover[mask[y * CLEVR_HW + x] as usize] += 1;
            }
        }
        let tok = &mut tokens[t * dim..(t + 1) * dim];
        for (f, v) in tok.iter_mut().enumerate() {
            *v = p.shared * world.shared[f]
                + p.pos * world.pos[t * dim + f]
                + noise_scale * rng.sample::<f32, _>(StandardNormal);
        }
        if cover[0] > 0 {
            let w = cover[0] as f32 * inv;
            axpy(w * p.bg, &world.bg, tok);
            axpy(w * p.bg_field, &bg_field[t * dim..(t + 1) * dim], tok);
        }
        for l in 1..=n {
            if cover[l] > 0 {
                axpy(cover[l] as f32 * inv, &codes[l - 1], tok);
            }
        }
    }
}

/// CLEVR-like feature scenes with a custom token model (for tuning and ablations).
pub fn clevr_features(count: usize, seed: u64, feat_dim: usize, max_objects: usize, params: &FeatureParams) -> Result<Dataset> {
    clevr_features_range(0..count, seed, feat_dim, max_objects, params)
}

fn clevr_features_range(range: Range<usize>, seed: u64, feat_dim: usize, max_objects: usize, params: &FeatureParams) -> Result<Dataset> {
    let count = range.len();
    if feat_dim == 0 {
        bail!("feature dimension must be positive");
    }
    if !(3..=20).contains(&max_objects) {
        bail!("max_objects must be in 3..=20, got {max_objects}");
    }
    let world = World::new(feat_dim);
    let tag = 0xC1E7 + max_objects as u64;
    let n_tok = CLEVR_GRID * CLEVR_GRID;
    let pix = CLEVR_HW * CLEVR_HW;
    // write scenes straight into the output arrays (features can be ~1 GB)
    let mut features = zeroed::<f32>(count * n_tok * feat_dim)?;
    let mut masks = zeroed::<u8>(count * pix)?;
    let mut images = zeroed::<u8>(count * pix * 3)?;
    features
        .par_chunks_mut(n_tok * feat_dim)
        .zip(masks.par_chunks_mut(pix))
        .zip(images.par_chunks_mut(pix * 3))
        .enumerate()
        .for_each(|(i, ((f, m), im))| clevr_scene(&world, params, &mut scene_rng(seed, tag, range.start + i), max_objects, f, m, im));
    let identity = format!("synthetic clevr-features(max {max_objects}) seed {seed} scenes {range:?} dim {feat_dim} {params:?}");
    Dataset::from_memory(
        DataKind::Features,
        (CLEVR_GRID, CLEVR_GRID),
        feat_dim,
        features,
        images,
        (CLEVR_HW, CLEVR_HW),
        Some(masks),
        (CLEVR_HW, CLEVR_HW),
        identity,
    )
}

// ---------------------------------------------------------------------------------------
// image datasets

fn image_dataset(hw: usize, scenes: Vec<(Vec<u8>, Vec<u8>)>, identity: String) -> Result<Dataset> {
    let (images, masks): (Vec<Vec<u8>>, Vec<Vec<u8>>) = scenes.into_iter().unzip();
    Dataset::from_memory(DataKind::Images, (hw, hw), 0, Vec::new(), images.concat(), (hw, hw), Some(masks.concat()), (hw, hw), identity)
}

/// The 19 fixed orientations of the 7 tetrominoes, as (row, col) cells.
pub fn tetromino_shapes() -> Vec<[(i32, i32); 4]> {
    let bases: [[(i32, i32); 4]; 7] = [
        [(0, 0), (0, 1), (0, 2), (0, 3)], // I
        [(0, 0), (0, 1), (1, 0), (1, 1)], // O
        [(0, 0), (0, 1), (0, 2), (1, 1)], // T
        [(0, 1), (0, 2), (1, 0), (1, 1)], // S
        [(0, 0), (0, 1), (1, 1), (1, 2)], // Z
        [(0, 0), (1, 0), (1, 1), (1, 2)], // J
        [(0, 2), (1, 0), (1, 1), (1, 2)], // L
    ];
    let mut out: Vec<[(i32, i32); 4]> = Vec::new();
    for b in bases {
        let mut cells = b;
        for _ in 0..4 {
            let minr = cells.iter().map(|c| c.0).min().unwrap();
            let minc = cells.iter().map(|c| c.1).min().unwrap();
            let mut norm = cells.map(|(r, c)| (r - minr, c - minc));
            norm.sort();
            if !out.contains(&norm) {
                out.push(norm);
            }
            cells = cells.map(|(r, c)| (c, -r));
        }
    }
    out
}

const TETRO_HW: usize = 35;
const TETRO_BLOCK: usize = 5;
const TETRO_COLOURS: [[u8; 3]; 6] =
    [[230, 40, 40], [40, 200, 60], [50, 80, 235], [235, 220, 40], [210, 50, 210], [40, 210, 220]];

/// Tetrominoes: 35x35 RGB, three non-overlapping coloured tetrominoes (blocks of 5x5 px)
/// on black.
pub fn tetrominoes(count: usize, seed: u64) -> Dataset {
    tetrominoes_range(0..count, seed).expect("in-memory dataset")
}

fn tetrominoes_range(range: Range<usize>, seed: u64) -> Result<Dataset> {
    let shapes = tetromino_shapes();
    let identity = format!("synthetic tetrominoes seed {seed} scenes {range:?}");
    let scenes = range
        .into_par_iter()
        .map(|i| {
            let mut rng = scene_rng(seed, 0x7E7, i);
            let hw = TETRO_HW;
            'retry: loop {
                let mut mask = vec![0u8; hw * hw];
                let mut img = vec![0u8; hw * hw * 3];
                for piece in 1..=3u8 {
                    let cells = shapes[rng.random_range(0..shapes.len())];
                    let colour = TETRO_COLOURS[rng.random_range(0..TETRO_COLOURS.len())];
                    let rows = cells.iter().map(|c| c.0).max().unwrap() as usize + 1;
                    let cols = cells.iter().map(|c| c.1).max().unwrap() as usize + 1;
                    let mut placed = false;
                    for _ in 0..100 {
                        let oy = rng.random_range(0..=hw - rows * TETRO_BLOCK);
                        let ox = rng.random_range(0..=hw - cols * TETRO_BLOCK);
                        let pix = |&(r, c): &(i32, i32)| {
                            let (y0, x0) = (oy + r as usize * TETRO_BLOCK, ox + c as usize * TETRO_BLOCK);
                            (y0..y0 + TETRO_BLOCK).flat_map(move |y| (x0..x0 + TETRO_BLOCK).map(move |x| y * hw + x))
                        };
                        if cells.iter().flat_map(pix).all(|p| mask[p] == 0) {
                            for p in cells.iter().flat_map(pix) {
                                mask[p] = piece;
                                img[p * 3..p * 3 + 3].copy_from_slice(&colour);
                            }
                            placed = true;
                            break;
                        }
                    }
                    if !placed {
                        continue 'retry;
                    }
                }
                break (img, mask);
            }
        })
        .collect();
    image_dataset(TETRO_HW, scenes, identity)
}

const DSPRITES_HW: usize = 64;

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let c = v * s;
    let x = c * (1.0 - ((h6 % 2.0) - 1.0).abs());
    let (r, g, b) = match h6 as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [(r + m) * 255.0, (g + m) * 255.0, (b + m) * 255.0]
}

fn sprite_contains(shape: u8, u: f32, v: f32) -> bool {
    match shape {
        0 => u.abs() <= 0.8 && v.abs() <= 0.8,
        1 => u * u + (v / 0.55).powi(2) <= 1.0,
        _ => {
            // heart: (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, y up
            let (x, y) = (u * 1.25, -v * 1.25 + 0.15);
            let a = x * x + y * y - 1.0;
            a * a * a - x * x * y * y * y <= 0.0
        }
    }
}

/// Multi-dSprites: 64x64 RGB, 2 to 5 sprites (square, ellipse, heart) with random scale,
/// rotation, position and colour, drawn in order with occlusion on a coloured background.
/// Every sprite keeps at least 15 visible pixels.
pub fn multi_dsprites(count: usize, seed: u64) -> Dataset {
    multi_dsprites_range(0..count, seed).expect("in-memory dataset")
}

fn multi_dsprites_range(range: Range<usize>, seed: u64) -> Result<Dataset> {
    let hw = DSPRITES_HW;
    let identity = format!("synthetic multi-dsprites seed {seed} scenes {range:?}");
    let scenes = range
        .into_par_iter()
        .map(|i| {
            let mut rng = scene_rng(seed, 0xD5, i);
            loop {
                let n = rng.random_range(2..=5usize);
                let bg_h: f32 = rng.random();
                let bg = hsv_to_rgb(bg_h, rng.random_range(0.3..1.0), rng.random_range(0.3..1.0));
                let mut img = vec![0u8; hw * hw * 3];
                for p in 0..hw * hw {
                    for ch in 0..3 {
                        img[p * 3 + ch] = bg[ch] as u8;
                    }
                }
                let mut mask = vec![0u8; hw * hw];
                for k in 1..=n as u8 {
                    let shape = rng.random_range(0..3u8);
                    let scale = rng.random_range(0.5..1.0f32) * 12.0;
                    let (cx, cy) = (rng.random_range(4.0..60.0f32), rng.random_range(4.0..60.0f32));
                    let ang = rng.random_range(0.0..std::f32::consts::TAU);
                    // hue away from the background's so sprites stand out
                    let h = bg_h + rng.random_range(0.15..0.85f32);
                    let col = hsv_to_rgb(h, rng.random_range(0.5..1.0), rng.random_range(0.6..1.0));
                    let (s, c) = ang.sin_cos();
                    for y in 0..hw {
                        for x in 0..hw {
                            let (dx, dy) = ((x as f32 + 0.5 - cx) / scale, (y as f32 + 0.5 - cy) / scale);
                            let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
                            if sprite_contains(shape, u, v) {
                                let p = y * hw + x;
                                mask[p] = k;
                                for ch in 0..3 {
                                    img[p * 3 + ch] = col[ch] as u8;
                                }
                            }
                        }
                    }
                }
                let mut vis = [0usize; 6];
                mask.iter().for_each(|&l| vis[l as usize] += 1);
                if (1..=n).all(|k| vis[k] >= 15) {
                    break (img, mask);
                }
            }
        })
        .collect();
    image_dataset(hw, scenes, identity)
}
