//! Step 1 of a segmentation: the affinity between tokens, `A_ij = max(cos_ij, 0)^p` (with
//! the optional spatial term and a tiny floor), normalized as `S = D^-1/2 A D^-1/2`.

use nalgebra::DMatrix;

use crate::linalg::*;
use crate::*;

// ---------------------------------------------------------------------------------------------
// affinity

/// L2-normalize the rows of `[n, f]` tokens (non-finite values read as 0). Returns the
/// normalized rows and, per token, whether it was zero.
pub(crate) fn normalize_tokens(tokens: &[f32], n: usize, f: usize, center: bool) -> (Vec<f32>, Vec<bool>) {
    let clean = |v: f32| if v.is_finite() { v as f64 } else { 0.0 };
    let mut mean = vec![0.0f64; f];
    if center && n > 0 {
        for row in tokens.chunks_exact(f.max(1)) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += clean(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
    }
    let mut out = vec![0.0f32; n * f];
    let mut zero = vec![false; n];
    let mut row = vec![0.0f64; f];
    for i in 0..n {
        for (r, (&v, &m)) in row
            .iter_mut()
            .zip(tokens[i * f..(i + 1) * f].iter().zip(&mean))
        {
            *r = clean(v) - m;
        }
        let n2: f64 = row.iter().map(|v| v * v).sum();
        if n2 > 0.0 && n2.is_finite() {
            let inv = 1.0 / n2.sqrt();
            for (o, &v) in out[i * f..(i + 1) * f].iter_mut().zip(&row) {
                *o = (v * inv) as f32;
            }
        } else {
            zero[i] = true;
        }
    }
    (out, zero)
}

pub(crate) fn affinity_from_normalized(
    xn: &[f32],
    zero: &[bool],
    n: usize,
    f: usize,
    grid: (usize, usize),
    cfg: &SpectralConfig,
) -> NormalizedAffinity {
    // Gram matrix of the normalized tokens through nalgebra's gemm (matrixmultiply).
    let gram: Option<DMatrix<f32>> = if f > 0 && n > 1 {
        let xt = DMatrix::<f32>::from_column_slice(f, n, xn); // X^T, F x N
        Some(xt.transpose() * &xt)
    } else {
        None
    };
    let w_sp = cfg.spatial_weight as f64;
    let power = (cfg.affinity_power as f64).max(1e-3);
    let sigma = (cfg.spatial_sigma as f64).max(1e-6);
    let gw = grid.1.max(1);
    let mut a = vec![0.0f64; n * n];
    for i in 0..n {
        for j in (i + 1)..n {
            let mut v = if zero[i] && zero[j] {
                1.0
            } else if zero[i] || zero[j] {
                0.0
            } else {
                let g = gram.as_ref().map(|g| g[(i, j)] as f64).unwrap_or(0.0);
                if g.is_finite() {
                    g.clamp(0.0, 1.0).powf(power)
                } else {
                    0.0
                }
            };
            if w_sp > 0.0 {
                let (ri, ci) = ((i / gw) as f64, (i % gw) as f64);
                let (rj, cj) = ((j / gw) as f64, (j % gw) as f64);
                let r2 = (ri - rj).powi(2) + (ci - cj).powi(2);
                v *= 1.0 + w_sp * (-r2 / (2.0 * sigma * sigma)).exp();
            }
            v += AFFINITY_FLOOR;
            a[i * n + j] = v;
            a[j * n + i] = v;
        }
    }
    let deg: Vec<f64> = (0..n).map(|i| a[i * n..(i + 1) * n].iter().sum()).collect();
    let rinv: Vec<f64> = deg
        .iter()
        .map(|&d| if d > 0.0 { 1.0 / d.sqrt() } else { 0.0 })
        .collect();
    let mut s = a;
    for i in 0..n {
        for j in (i + 1)..n {
            let v = s[i * n + j] * rinv[i] * rinv[j];
            s[i * n + j] = v;
            s[j * n + i] = v;
        }
    }
    let mut u0: Vec<f64> = deg.iter().map(|&d| d.max(0.0).sqrt()).collect();
    let nu = norm(&u0);
    if nu > 0.0 {
        scale(&mut u0, 1.0 / nu);
    } else {
        u0 = vec![1.0 / (n as f64).sqrt(); n];
    }
    NormalizedAffinity { n, s, trivial: u0 }
}

/// `D^-1/2 A D^-1/2` of one scene's tokens `[n, f]` (see the module docs for `A`).
pub fn normalized_affinity(
    tokens: &[f32],
    n: usize,
    f: usize,
    grid: (usize, usize),
    cfg: &SpectralConfig,
) -> NormalizedAffinity {
    assert_eq!(tokens.len(), n * f, "tokens must be [n, f]");
    let (xn, zero) = normalize_tokens(tokens, n, f, cfg.center_tokens);
    affinity_from_normalized(&xn, &zero, n, f, grid, cfg)
}
