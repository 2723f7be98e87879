//! Pictures as PNG: line plots of curves, and segmentation overlays. Plain pixel drawing
//! with the `image` crate; nothing here is on a hot path.

use std::path::Path;

use anyhow::Result;
use image::{Rgb, RgbImage};
use slotforge_spectral::Segmentation;

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
        let c = if *l == 0 { [0, 0, 0] } else { palette(*l as usize - 1) };
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

// ---------------------------------------------------------------------------------------
// spectral segmentation pictures

const PALETTE: [[u8; 3]; 20] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
    [174, 199, 232],
    [255, 187, 120],
    [152, 223, 138],
    [255, 152, 150],
    [197, 176, 213],
    [196, 156, 148],
    [247, 182, 210],
    [199, 199, 199],
    [219, 219, 141],
    [158, 218, 229],
];

/// Colour of segment / slot `i` (the same in both pictures).
pub fn palette(i: usize) -> [u8; 3] {
    if i < PALETTE.len() {
        return PALETTE[i];
    }
    // golden-ratio hues beyond the fixed palette
    let h = ((i as f64) * 0.618_033_988_75).fract() * 6.0;
    let x = 1.0 - (h % 2.0 - 1.0).abs();
    let (r, g, b) = match h as usize {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    let c = |v: f64| (60.0 + 170.0 * v) as u8;
    [c(r), c(g), c(b)]
}

fn mosaic(panels: &[RgbImage], cols: usize, gap: u32) -> RgbImage {
    if panels.is_empty() {
        return RgbImage::from_pixel(1, 1, Rgb([255, 255, 255]));
    }
    let cols = cols.clamp(1, panels.len());
    let rows = panels.len().div_ceil(cols);
    let pw = panels.iter().map(|p| p.width()).max().unwrap_or(1);
    let ph = panels.iter().map(|p| p.height()).max().unwrap_or(1);
    let w = cols as u32 * pw + (cols as u32 + 1) * gap;
    let h = rows as u32 * ph + (rows as u32 + 1) * gap;
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    for (i, p) in panels.iter().enumerate() {
        let x0 = gap + (i % cols) as u32 * (pw + gap);
        let y0 = gap + (i / cols) as u32 * (ph + gap);
        for (x, y, px) in p.enumerate_pixels() {
            img.put_pixel(x0 + x, y0 + y, *px);
        }
    }
    img
}

/// One scene's picture: its spectral segments (left) and its slot groups (right) over the
/// token grid, each cell `scale x scale` pixels, one colour per segment / group.
pub fn render_segments(seg: &Segmentation, scale: u32) -> RgbImage {
    let (h, w) = seg.grid;
    let s = scale.max(1);
    let gap = s.max(2);
    let pw = w as u32 * s;
    let mut img = RgbImage::from_pixel(2 * pw + gap, h as u32 * s, Rgb([255, 255, 255]));
    for (panel, labels) in [&seg.labels, &seg.groups].into_iter().enumerate() {
        let x0 = panel as u32 * (pw + gap);
        for (i, &l) in labels.iter().enumerate() {
            let (r, c) = ((i / w) as u32, (i % w) as u32);
            let col = Rgb(palette(l as usize));
            for dy in 0..s {
                for dx in 0..s {
                    img.put_pixel(x0 + c * s + dx, r * s + dy, col);
                }
            }
        }
    }
    img
}

/// Write the segments of a batch of scenes as one PNG (a grid of [`render_segments`] panels).
pub fn write_segments_png<S: AsRef<Segmentation>>(
    path: impl AsRef<Path>,
    segs: &[S],
    scale: u32,
) -> Result<()> {
    let panels: Vec<RgbImage> = segs
        .iter()
        .map(|s| render_segments(s.as_ref(), scale))
        .collect();
    mosaic(&panels, 4, 6).save(path.as_ref())?;
    Ok(())
}


/// One scene's PCA scatter of its `k` initial slots `[k, d]`: a dot per slot in the slot's
/// palette colour (slot `s < num_segments` has its segment's colour in the segments picture),
/// gray axes through the slot mean, and a black cross at the projection of the zero vector
/// (clamped to the border, drawn as a square, when it lies outside the panel).
pub fn render_slot_pca(slots: &[f32], k: usize, d: usize, size: u32) -> RgbImage {
    assert_eq!(slots.len(), k * d, "slots must be [k, d]");
    let size = size.max(32);
    let mut img = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
    let half = size as f64 / 2.0;
    for t in 0..size {
        img.put_pixel(t, size / 2, Rgb([215, 215, 215]));
        img.put_pixel(size / 2, t, Rgb([215, 215, 215]));
    }
    for t in 0..size {
        for (x, y) in [(t, 0), (t, size - 1), (0, t), (size - 1, t)] {
            img.put_pixel(x, y, Rgb([160, 160, 160]));
        }
    }
    if k == 0 || d == 0 {
        return img;
    }
    let (coords, origin) = slotforge_spectral::init::slot_pca(slots, k, d);
    let extent = coords
        .iter()
        .flat_map(|c| [c[0].abs(), c[1].abs()])
        .fold(0.0f64, f64::max);
    let sc = if extent > 0.0 && extent.is_finite() {
        0.8 * half / extent
    } else {
        0.0
    };
    let to_px = |c: [f64; 2]| (half + c[0] * sc, half - c[1] * sc);
    let put = |img: &mut RgbImage, x: i64, y: i64, col: [u8; 3]| {
        if x >= 0 && y >= 0 && (x as u32) < size && (y as u32) < size {
            img.put_pixel(x as u32, y as u32, Rgb(col));
        }
    };
    // origin marker
    let (ox, oy) = to_px(origin);
    let inside = ox.is_finite()
        && oy.is_finite()
        && ox >= 3.0
        && oy >= 3.0
        && ox <= size as f64 - 4.0
        && oy <= size as f64 - 4.0;
    let cx = if ox.is_finite() {
        ox.clamp(3.0, size as f64 - 4.0)
    } else {
        half
    };
    let cy = if oy.is_finite() {
        oy.clamp(3.0, size as f64 - 4.0)
    } else {
        half
    };
    let (cx, cy) = (cx.round() as i64, cy.round() as i64);
    for t in -3i64..=3 {
        if inside {
            put(&mut img, cx + t, cy + t, [0, 0, 0]);
            put(&mut img, cx + t, cy - t, [0, 0, 0]);
        } else {
            for u in -3i64..=3 {
                put(&mut img, cx + t, cy + u, [0, 0, 0]);
            }
        }
    }
    let r = (size as i64 / 40).max(3);
    for (i, c) in coords.iter().enumerate() {
        let (x, y) = to_px(*c);
        let (x, y) = (x.round() as i64, y.round() as i64);
        for dy in -r - 1..=r + 1 {
            for dx in -r - 1..=r + 1 {
                let q = dx * dx + dy * dy;
                if q <= r * r {
                    put(&mut img, x + dx, y + dy, palette(i));
                } else if q <= (r + 1) * (r + 1) {
                    put(&mut img, x + dx, y + dy, [40, 40, 40]);
                }
            }
        }
    }
    img
}

/// Write the PCA scatter of the initial slots `[b, k, d]` of a batch, one panel per scene.
pub fn write_slot_pca_png(
    path: impl AsRef<Path>,
    slots: &[f32],
    b: usize,
    k: usize,
    d: usize,
    size: u32,
) -> Result<()> {
    assert_eq!(slots.len(), b * k * d, "slots must be [b, k, d]");
    let panels: Vec<RgbImage> = (0..b)
        .map(|i| render_slot_pca(&slots[i * k * d..(i + 1) * k * d], k, d, size))
        .collect();
    mosaic(&panels, 4, 6).save(path.as_ref())?;
    Ok(())
}
