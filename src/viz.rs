//! Pictures as PNG: line plots of curves, and segmentation overlays. Plain pixel drawing
//! with the `image` crate; nothing here is on a hot path.

use std::path::Path;

use anyhow::Result;
use image::{Rgb, RgbImage};

/// A fixed palette; slot k gets PALETTE[k % len].
pub const PALETTE: [[u8; 3]; 16] = [
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
    [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195],
];

pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    crate::checkpoint::write_atomic(path, &bytes)
}

/// Line plot of one or more named series (x = index), with a light grid. Log-scale y when
/// asked (loss curves span decades).
pub fn plot_lines(series: &[(&str, Vec<f32>)], log_y: bool, path: &Path) -> Result<()> {
    let (w, h, m) = (640u32, 360u32, 30u32);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let tf = |v: f32| if log_y { v.max(1e-12).log10() } else { v };
    let vals: Vec<f32> = series.iter().flat_map(|(_, s)| s.iter().copied().filter(|v| v.is_finite()).map(tf)).collect();
    if vals.is_empty() {
        return save_png(&img, path);
    }
    let (mut lo, mut hi) = vals.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    if hi - lo < 1e-9 {
        hi += 0.5;
        lo -= 0.5;
    }
    for i in 0..=4 {
        let y = m + i * (h - 2 * m) / 4;
        for x in m..w - m {
            img.put_pixel(x, y, Rgb([225, 225, 225]));
        }
    }
    let n = series.iter().map(|(_, s)| s.len()).max().unwrap_or(1).max(2);
    for (si, (_, s)) in series.iter().enumerate() {
        let c = Rgb(PALETTE[si % PALETTE.len()]);
        let pt = |i: usize, v: f32| -> (f32, f32) {
            let x = m as f32 + (w - 2 * m) as f32 * i as f32 / (n - 1) as f32;
            let y = (h - m) as f32 - (h - 2 * m) as f32 * (tf(v) - lo) / (hi - lo);
            (x, y)
        };
        for i in 1..s.len() {
            if !(s[i - 1].is_finite() && s[i].is_finite()) {
                continue;
            }
            let (x0, y0) = pt(i - 1, s[i - 1]);
            let (x1, y1) = pt(i, s[i]);
            let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
            for t in 0..=steps {
                let a = t as f32 / steps as f32;
                let (x, y) = (x0 + a * (x1 - x0), y0 + a * (y1 - y0));
                for dy in 0..2 {
                    let (px, py) = (x as u32, y as u32 + dy);
                    if px < w && py < h {
                        img.put_pixel(px, py, c);
                    }
                }
            }
        }
        // legend swatch
        for x in 0..12 {
            for y in 0..6 {
                img.put_pixel(w - m - 14 + x, 6 + si as u32 * 9 + y, c);
            }
        }
    }
    save_png(&img, path)
}

/// A label map [h, w] as colours, scaled up by `scale`.
pub fn labels_image(labels: &[u32], (h, w): (usize, usize), scale: u32) -> RgbImage {
    let mut img = RgbImage::new(w as u32 * scale, h as u32 * scale);
    for (i, l) in labels.iter().enumerate() {
        let c = if *l == 0 { [0, 0, 0] } else { PALETTE[(*l as usize - 1) % PALETTE.len()] };
        let (y, x) = ((i / w) as u32, (i % w) as u32);
        for dy in 0..scale {
            for dx in 0..scale {
                img.put_pixel(x * scale + dx, y * scale + dy, Rgb(c));
            }
        }
    }
    img
}

/// Images side by side in one row, with a 4-pixel gap.
pub fn hconcat(images: &[RgbImage]) -> RgbImage {
    let w: u32 = images.iter().map(|i| i.width() + 4).sum();
    let h = images.iter().map(|i| i.height()).max().unwrap_or(1);
    let mut out = RgbImage::from_pixel(w.max(1), h, Rgb([255, 255, 255]));
    let mut x0 = 0;
    for im in images {
        image::imageops::replace(&mut out, im, x0 as i64, 0);
        x0 += im.width() + 4;
    }
    out
}

/// Rows stacked vertically, with a 4-pixel gap.
pub fn vconcat(images: &[RgbImage]) -> RgbImage {
    let h: u32 = images.iter().map(|i| i.height() + 4).sum();
    let w = images.iter().map(|i| i.width()).max().unwrap_or(1);
    let mut out = RgbImage::from_pixel(w, h.max(1), Rgb([255, 255, 255]));
    let mut y0 = 0;
    for im in images {
        image::imageops::replace(&mut out, im, 0, y0 as i64);
        y0 += im.height() + 4;
    }
    out
}
