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

/// Text in the public-domain 8x8 bitmap font (`font8x8`), top-left corner at (x, y); pixels
/// outside the image are dropped. Characters outside ASCII draw as '?'.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, colour: Rgb<u8>) {
    for (i, c) in text.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY[if c.is_ascii() { c as usize } else { '?' as usize }];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                // bit 0 is the leftmost pixel of the row
                let (px, py) = (x + i as i64 * 8 + col, y + row as i64);
                if bits >> col & 1 == 1 && px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                    img.put_pixel(px as u32, py as u32, colour);
                }
            }
        }
    }
}

/// Round y-axis ticks covering [lo, hi]: a step of 1, 2 or 5 times a power of ten giving 3 to
/// 7 ticks (whole decades on a log axis, whose values are log10). Returns (first, step, count).
fn nice_ticks(lo: f32, hi: f32, log_y: bool) -> (f32, f32, usize) {
    let raw = (hi - lo) / 5.0;
    let step = if log_y {
        raw.ceil().max(1.0)
    } else {
        let p = 10f32.powf(raw.log10().floor());
        [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|&s| s >= raw).unwrap()
    };
    let first = (lo / step).floor() * step;
    let count = ((hi - first) / step - 1e-4).ceil().max(1.0) as usize + 1;
    (first, step, count)
}

fn tick_label(v: f32, step: f32, log_y: bool) -> String {
    if log_y {
        return format!("1e{}", v.round() as i32);
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// Line colours: the palette without its pale entries, so thin lines stay visible on white.
const LINE_COLOURS: [[u8; 3]; 8] = [
    [230, 25, 75], [0, 130, 200], [60, 180, 75], [245, 130, 48], [145, 30, 180], [0, 128, 128], [240, 50, 230], [128, 0, 0],
];

/// Line plot of named series against x = 1, 2, ... (epochs, or logged steps); see [`plot_xy`].
pub fn plot_lines<S: AsRef<str>>(title: &str, x_name: &str, series: &[(S, Vec<f32>)], log_y: bool, path: &Path) -> Result<()> {
    let xy: Vec<(&str, Vec<(f32, f32)>)> =
        series.iter().map(|(n, s)| (n.as_ref(), s.iter().enumerate().map(|(i, &v)| ((i + 1) as f32, v)).collect())).collect();
    plot_xy(title, x_name, &xy, log_y, path)
}

/// Line plot of named series of (x, y) points (x ascending): titled, with labelled axes and a
/// legend. Series with the same name share a colour and one legend entry (e.g. the seeds of
/// one arm). Log-scale y when asked (loss curves span decades); non-finite values leave a gap.
pub fn plot_xy<S: AsRef<str>>(title: &str, x_name: &str, series: &[(S, Vec<(f32, f32)>)], log_y: bool, path: &Path) -> Result<()> {
    save_png(&render_xy(title, x_name, series, log_y), path)
}

/// [`plot_xy`]'s picture.
pub fn render_xy<S: AsRef<str>>(title: &str, x_name: &str, series: &[(S, Vec<(f32, f32)>)], log_y: bool) -> RgbImage {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in series {
        if !names.contains(&name.as_ref()) {
            names.push(name.as_ref());
        }
    }
    let legend_w = 8 * names.iter().map(|n| n.len()).max().unwrap_or(0) as u32 + 24;
    let (left, right, top, bottom) = (64u32, 560u32, 24u32, 336u32);
    let (w, h) = (right + 12 + legend_w, bottom + 32);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let ink = Rgb([60, 60, 60]);
    draw_text(&mut img, left as i64, 6, title, ink);
    let tf = |v: f32| if log_y { v.max(1e-12).log10() } else { v };
    let vals: Vec<f32> = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1).filter(|v| v.is_finite()).map(tf)).collect();
    let (mut lo, mut hi) = vals.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    if vals.is_empty() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-6 {
        hi += 0.5;
        lo -= 0.5;
    }
    // the axis spans whole ticks: a grid line and a label at each
    let (first, step, count) = nice_ticks(lo, hi, log_y);
    (lo, hi) = (first, first + step * (count - 1) as f32);
    for t in 0..count {
        let y = bottom - ((bottom - top) as f32 * t as f32 / (count - 1) as f32).round() as u32;
        for x in left..=right {
            img.put_pixel(x, y, Rgb([225, 225, 225]));
        }
        let label = tick_label(first + step * t as f32, step, log_y);
        draw_text(&mut img, left as i64 - 6 - 8 * label.len() as i64, y as i64 - 4, &label, ink);
    }
    // x from the first to the last point, ticks at five round places; the axis name below
    let xs: Vec<f32> = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)).collect();
    let (x0, mut x1) = xs.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let x0 = if xs.is_empty() { 0.0 } else { x0 };
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let x_at = |x: f32| left as f32 + (right - left) as f32 * (x - x0) / (x1 - x0);
    for t in 0..=4 {
        let v = (x0 + (x1 - x0) * t as f32 / 4.0).round();
        let label = format!("{v}");
        let x = x_at(v).clamp(left as f32, right as f32) as i64;
        for dy in 0..4 {
            img.put_pixel(x as u32, bottom + 1 + dy, ink);
        }
        draw_text(&mut img, x - 4 * label.len() as i64, bottom as i64 + 7, &label, ink);
    }
    draw_text(&mut img, ((left + right) / 2) as i64 - 4 * x_name.len() as i64, bottom as i64 + 20, x_name, ink);
    for (name, s) in series {
        let c = Rgb(LINE_COLOURS[names.iter().position(|m| *m == name.as_ref()).unwrap() % LINE_COLOURS.len()]);
        let pt = |(x, v): (f32, f32)| (x_at(x), bottom as f32 - (bottom - top) as f32 * (tf(v) - lo) / (hi - lo));
        for i in 1..s.len() {
            if !(s[i - 1].1.is_finite() && s[i].1.is_finite()) {
                continue;
            }
            let (xa, ya) = pt(s[i - 1]);
            let (xb, yb) = pt(s[i]);
            let steps = ((xb - xa).abs().max((yb - ya).abs()) as usize).max(1);
            for t in 0..=steps {
                let a = t as f32 / steps as f32;
                let (x, y) = (xa + a * (xb - xa), ya + a * (yb - ya));
                for dy in 0..2 {
                    let (px, py) = (x as u32, y as u32 + dy);
                    if px < w && py < h {
                        img.put_pixel(px, py, c);
                    }
                }
            }
        }
        // a lone point (one epoch so far) as a dot
        if s.len() == 1 && s[0].1.is_finite() {
            let (x, y) = pt(s[0]);
            for dx in 0..4 {
                for dy in 0..4 {
                    let (px, py) = ((x as u32 + dx).saturating_sub(2), (y as u32 + dy).saturating_sub(2));
                    if px < w && py < h {
                        img.put_pixel(px, py, c);
                    }
                }
            }
        }
    }
    for (k, name) in names.iter().enumerate() {
        let (x, y) = (right + 12, top + 12 * k as u32);
        for dx in 0..12 {
            for dy in 0..6 {
                img.put_pixel(x + dx, y + 1 + dy, Rgb(LINE_COLOURS[k % LINE_COLOURS.len()]));
            }
        }
        draw_text(&mut img, (x + 16) as i64, y as i64, name, ink);
    }
    img
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

/// Panels side by side, each with its title above it (cut to the panel's width).
pub fn titled_row(panels: &[(String, RgbImage)]) -> RgbImage {
    let titled: Vec<RgbImage> = panels
        .iter()
        .map(|(title, img)| {
            let mut out = RgbImage::from_pixel(img.width(), img.height() + 12, Rgb([255, 255, 255]));
            image::imageops::replace(&mut out, img, 0, 12);
            let fit: String = title.chars().take((img.width() / 8) as usize).collect();
            draw_text(&mut out, 0, 2, &fit, Rgb([0, 0, 0]));
            out
        })
        .collect();
    hconcat(&titled)
}
