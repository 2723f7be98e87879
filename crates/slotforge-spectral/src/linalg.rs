//! Linear algebra on f64: vector helpers (compiled also for AVX2, picked at run time), and
//! the eigensolvers for the smallest nontrivial eigenpairs of the normalized Laplacian:
//! the full `SymmetricEigen` and Lanczos with full reorthogonalization.

use multiversion::multiversion;
use nalgebra::{DMatrix, Dyn, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::*;

// ---------------------------------------------------------------------------------------------
// small vector helpers

/// sum_i term(a_i, b_i) with eight fixed accumulators: the summation order is fixed, so the
/// AVX and the baseline builds of it give the same bits.
#[inline(always)]
pub(crate) fn sum8(a: &[f64], b: &[f64], term: impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += term(x[k], y[k]);
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += term(*x, *y);
    }
    s
}

#[inline(always)]
pub(crate) fn dot_body(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    sum8(a, b, |x, y| x * y)
}

#[inline(always)]
pub(crate) fn axpy_body(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

#[multiversion(targets("x86_64+avx2"))]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    dot_body(a, b)
}
#[multiversion(targets("x86_64+avx2"))]
pub(crate) fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    axpy_body(alpha, x, y)
}

pub(crate) fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

pub(crate) fn scale(a: &mut [f64], s: f64) {
    for v in a {
        *v *= s;
    }
}

/// Remove from `w` its components along `extra` and the unit vectors `basis` (row-major,
/// `w.len()` each) by classical Gram-Schmidt, repeated once when the first pass cancelled more
/// than 30% of the norm ("twice is enough", Kahan-Parlett).
pub(crate) fn orthogonalize(w: &mut [f64], basis: &[f64], extra: Option<&[f64]>) {
    let n = w.len();
    let before = norm(w);
    for pass in 0..2 {
        if pass == 1 && norm(w) > 0.7 * before {
            // the first pass removed little: a second one would change nothing (Kahan-Parlett)
            break;
        }
        if let Some(u) = extra {
            let c = dot(u, w);
            axpy(-c, u, w);
        }
        for b in basis.chunks_exact(n) {
            let c = dot(b, w);
            axpy(-c, b, w);
        }
    }
}

#[inline(always)]
pub(crate) fn sq_dist_body(a: &[f64], b: &[f64]) -> f64 {
    sum8(a, b, |x, y| (x - y) * (x - y))
}

#[multiversion(targets("x86_64+avx2"))]
pub(crate) fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    sq_dist_body(a, b)
}

// ---------------------------------------------------------------------------------------------
// eigensolvers

/// Flip each eigenvector (column-major `n x m`) so that its largest-magnitude component is
/// positive; among components whose magnitude equals the maximum the first one decides. The
/// rule reads only magnitudes to choose the component, so `v` and `-v` give the same result
/// bit for bit.
pub fn fix_signs(vectors: &mut [f64], n: usize, m: usize) {
    assert!(vectors.len() >= n * m);
    for col in vectors.chunks_exact_mut(n).take(m) {
        let mut best = 0usize;
        let mut best_abs = -1.0f64;
        for (i, v) in col.iter().enumerate() {
            if v.abs() > best_abs {
                best_abs = v.abs();
                best = i;
            }
        }
        if col.get(best).is_some_and(|&v| v < 0.0) {
            for v in col.iter_mut() {
                *v = -*v;
            }
        }
    }
}

/// The `m` smallest nontrivial eigenpairs of `L = I - S` (`m` is clamped to `n - 1`).
pub fn smallest_nontrivial(
    aff: &NormalizedAffinity,
    m: usize,
    solver: Solver,
    seed: u64,
) -> Spectrum {
    let n = aff.n;
    let m = m.min(n.saturating_sub(1));
    if m == 0 {
        return Spectrum {
            n,
            eigenvalues: vec![],
            eigenvectors: vec![],
        };
    }
    let (vals, mut vecs) = match solver {
        Solver::Full => full_eigs(aff, m),
        Solver::Lanczos => lanczos_eigs(aff, m, seed),
    };
    fix_signs(&mut vecs, n, m);
    Spectrum {
        n,
        eigenvalues: vals,
        eigenvectors: vecs,
    }
}

pub(crate) fn full_eigs(aff: &NormalizedAffinity, m: usize) -> (Vec<f64>, Vec<f64>) {
    let n = aff.n;
    let u0 = &aff.trivial;
    // L + 3 u0 u0^T: the trivial eigenvalue 0 moves to 3, above the spectrum of L (<= 2).
    let l = DMatrix::<f64>::from_fn(n, n, |i, j| {
        let id = if i == j { 1.0 } else { 0.0 };
        id - aff.s[i * n + j] + 3.0 * u0[i] * u0[j]
    });
    extreme_eigenpairs(SymmetricEigen::new(l), m, false)
}

/// The `m` smallest (or with `largest`, largest) eigenpairs of a decomposition: eigenvalues in
/// that order and their eigenvectors one after another. Ties go by column index so the result
/// is deterministic.
pub(crate) fn extreme_eigenpairs(eig: SymmetricEigen<f64, Dyn>, m: usize, largest: bool) -> (Vec<f64>, Vec<f64>) {
    let mut order: Vec<usize> = (0..eig.eigenvalues.len()).collect();
    order.sort_by(|&a, &b| {
        let by_value = eig.eigenvalues[a].total_cmp(&eig.eigenvalues[b]);
        (if largest { by_value.reverse() } else { by_value }).then(a.cmp(&b))
    });
    let mut vals = Vec::with_capacity(m);
    let mut vecs = Vec::with_capacity(eig.eigenvalues.len() * m);
    for &c in order.iter().take(m) {
        vals.push(eig.eigenvalues[c]);
        vecs.extend(eig.eigenvectors.column(c).iter().copied());
    }
    (vals, vecs)
}

pub(crate) fn matvec(s: &[f64], n: usize, x: &[f64], y: &mut [f64]) {
    for (i, yi) in y.iter_mut().enumerate() {
        *yi = dot(&s[i * n..(i + 1) * n], x);
    }
}

/// A pseudo-random unit vector orthogonal to `u0` and to the rows of `basis`, or None if
/// those already span the space.
pub(crate) fn random_orthogonal(
    rng: &mut ChaCha8Rng,
    n: usize,
    u0: &[f64],
    basis: &[f64],
) -> Option<Vec<f64>> {
    for _ in 0..4 {
        let mut v: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
        let n0 = norm(&v);
        orthogonalize(&mut v, basis, Some(u0));
        let nv = norm(&v);
        if nv > 1e-8 * n0 && nv > 0.0 {
            scale(&mut v, 1.0 / nv);
            return Some(v);
        }
    }
    None
}

/// Eigenvalues of the symmetric tridiagonal matrix with diagonal `d` and off-diagonal `e`
/// (`e[i] = T[i][i+1]`, `e.len() == d.len() - 1`) by the implicit QL method, and the last
/// row of its eigenvector matrix (the Lanczos residual of Ritz pair `i` is `|beta_p * last[i]|`).
/// `O(p^2)`: only the last row of the rotations is accumulated. Unsorted; None if the
/// iteration fails to converge (never seen; the caller then falls back to a dense solver).
pub(crate) fn tridiagonal_ql(diag: &[f64], off: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
    let n = diag.len();
    let mut d = diag.to_vec();
    let mut e = vec![0.0f64; n];
    e[..n.saturating_sub(1)].copy_from_slice(&off[..n.saturating_sub(1)]);
    let mut z = vec![0.0f64; n]; // last row of the accumulated rotations
    if n == 0 {
        return Some((d, z));
    }
    z[n - 1] = 1.0;
    for l in 0..n {
        let mut iter = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iter += 1;
            if iter > 100 {
                return None;
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = (g * g + 1.0).sqrt();
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0f64, 1.0f64, 0.0f64);
            let mut underflow = false;
            let mut i = m;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                // values are O(1) here (|T| <= 1), so no scaling against overflow is needed
                r = (f * f + g * g).sqrt();
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                let zf = z[i + 1];
                z[i + 1] = s * z[i] + c * zf;
                z[i] = c * z[i] - s * zf;
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    Some((d, z))
}

/// Solve `(T - shift I) x = b` for the tridiagonal `T` (diagonal `diag`, off-diagonal `off`)
/// by Gaussian elimination with partial pivoting (LAPACK dgtsv); a zero pivot is replaced by
/// `tiny`, as inverse iteration wants.
pub(crate) fn tridiagonal_solve(diag: &[f64], off: &[f64], shift: f64, tiny: f64, b: &mut [f64]) {
    let n = diag.len();
    let mut d: Vec<f64> = diag.iter().map(|v| v - shift).collect();
    let mut dl: Vec<f64> = off.to_vec(); // sub-diagonal, later the second super-diagonal
    let mut du: Vec<f64> = off.to_vec();
    let nz = |v: f64| if v == 0.0 { tiny } else { v };
    for i in 0..n.saturating_sub(1) {
        if d[i].abs() >= dl[i].abs() {
            d[i] = nz(d[i]);
            let fact = dl[i] / d[i];
            d[i + 1] -= fact * du[i];
            b[i + 1] -= fact * b[i];
            dl[i] = 0.0;
        } else {
            let fact = d[i] / dl[i];
            d[i] = dl[i];
            let temp = d[i + 1];
            d[i + 1] = du[i] - fact * temp;
            if i + 2 < n {
                dl[i] = du[i + 1];
                du[i + 1] = -fact * dl[i];
            } else {
                dl[i] = 0.0;
            }
            du[i] = temp;
            let tb = b[i];
            b[i] = b[i + 1];
            b[i + 1] = tb - fact * b[i + 1];
        }
    }
    d[n - 1] = nz(d[n - 1]);
    b[n - 1] /= d[n - 1];
    if n > 1 {
        b[n - 2] = (b[n - 2] - du[n - 2] * b[n - 1]) / d[n - 2];
    }
    for i in (0..n.saturating_sub(2)).rev() {
        b[i] = (b[i] - du[i] * b[i + 1] - dl[i] * b[i + 2]) / d[i];
    }
}

/// Eigenvectors of the tridiagonal `T` for the eigenvalues `thetas` (accurate, from
/// [`tridiagonal_ql`]) by inverse iteration, each orthogonalized against the earlier ones
/// (which keeps vectors of close eigenvalues apart). Row-major `thetas.len() x p`.
pub(crate) fn tridiagonal_vectors(
    diag: &[f64],
    off: &[f64],
    thetas: &[f64],
    rng: &mut ChaCha8Rng,
) -> Vec<f64> {
    let p = diag.len();
    let tnorm = diag.iter().map(|v| v.abs()).fold(0.0, f64::max)
        + 2.0 * off.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let tiny = f64::EPSILON * tnorm.max(f64::MIN_POSITIVE);
    let mut out: Vec<f64> = Vec::with_capacity(thetas.len() * p);
    for &theta in thetas {
        let mut x: Vec<f64> = (0..p).map(|_| rng.random::<f64>() - 0.5).collect();
        for _ in 0..3 {
            tridiagonal_solve(diag, off, theta, tiny, &mut x);
            if x.iter().any(|v| !v.is_finite()) {
                x = (0..p).map(|_| rng.random::<f64>() - 0.5).collect();
            }
            orthogonalize(&mut x, &out, None);
            let nx = norm(&x);
            if nx > 0.0 {
                scale(&mut x, 1.0 / nx);
            }
        }
        out.extend_from_slice(&x);
    }
    out
}

/// Dense fallback for the tridiagonal eigenproblem: eigenvalues descending and the matching
/// eigenvectors, row-major.
pub(crate) fn tridiagonal_dense(diag: &[f64], off: &[f64], m: usize) -> (Vec<f64>, Vec<f64>) {
    let p = diag.len();
    let t = DMatrix::<f64>::from_fn(p, p, |i, j| {
        if i == j {
            diag[i]
        } else if i == j + 1 {
            off[j]
        } else if j == i + 1 {
            off[i]
        } else {
            0.0
        }
    });
    extreme_eigenpairs(SymmetricEigen::new(t), m, true)
}

/// Lanczos with full reorthogonalization for the `m` largest eigenvalues `theta` of `S` on the
/// complement of `u0` (so `l = 1 - theta` are the smallest nontrivial eigenvalues of `L`; the
/// Krylov spaces are those of the shifted operator `2I - L`). Every new vector is
/// orthogonalized (twice) against `u0` and all earlier Lanczos vectors. On breakdown
/// (an invariant subspace, e.g. a repeated eigenvalue) it restarts with a fresh random vector
/// orthogonal to everything so far. It stops when the `m` top Ritz pairs have residual
/// `|beta_p s_p| <= 1e-9` (checked with an `O(p^2)` QL sweep), or when the Krylov basis spans
/// the whole complement (then the result is exact). Ritz vectors come from inverse iteration
/// on the tridiagonal matrix.
pub(crate) fn lanczos_eigs(aff: &NormalizedAffinity, m: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    const TOL: f64 = 1e-9;
    const BREAKDOWN: f64 = 1e-10;
    let n = aff.n;
    let dim = n - 1;
    let u0 = &aff.trivial;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ LANCZOS_SALT);
    let mut basis: Vec<f64> = Vec::with_capacity(n * (4 * m + 40).min(dim));
    let mut alpha: Vec<f64> = Vec::new();
    let mut beta: Vec<f64> = Vec::new();
    let mut q = match random_orthogonal(&mut rng, n, u0, &[]) {
        Some(q) => q,
        None => return full_eigs(aff, m),
    };
    let mut w = vec![0.0f64; n];
    let mut next_check = (m + 10).min(dim);
    loop {
        let j = alpha.len();
        basis.extend_from_slice(&q);
        matvec(&aff.s, n, &q, &mut w);
        let a = dot(&q, &w);
        alpha.push(a);
        axpy(-a, &q, &mut w);
        if j > 0 {
            let prev = &basis[(j - 1) * n..j * n];
            axpy(-beta[j - 1], prev, &mut w);
        }
        orthogonalize(&mut w, &basis, Some(u0));
        let b = norm(&w);
        let steps = j + 1;
        let mut exhausted = steps >= dim;
        let mut restart: Option<Vec<f64>> = None;
        if !exhausted && b <= BREAKDOWN {
            match random_orthogonal(&mut rng, n, u0, &basis) {
                Some(v) => restart = Some(v),
                None => exhausted = true,
            }
        }
        if exhausted || steps >= next_check {
            next_check = steps + (steps / 8).max(4);
            let ql = tridiagonal_ql(&alpha, &beta);
            let done = match &ql {
                None => exhausted,
                Some((theta, last)) => {
                    let mut order: Vec<usize> = (0..steps).collect();
                    order.sort_by(|&x, &y| theta[y].total_cmp(&theta[x]).then(x.cmp(&y)));
                    exhausted
                        || order
                            .iter()
                            .take(m)
                            .all(|&i| (b * last[i]).abs() <= TOL * theta[i].abs().max(1.0))
                }
            };
            if done {
                let (thetas, svecs) = match ql {
                    Some((theta, _)) => {
                        let mut sorted = theta;
                        sorted.sort_by(|x, y| y.total_cmp(x));
                        sorted.truncate(m);
                        let v = tridiagonal_vectors(&alpha, &beta, &sorted, &mut rng);
                        (sorted, v)
                    }
                    None => tridiagonal_dense(&alpha, &beta, m),
                };
                let mut vals = Vec::with_capacity(m);
                let mut vecs = vec![0.0f64; n * m];
                for i in 0..m {
                    vals.push(1.0 - thetas[i]);
                    let y = &mut vecs[i * n..(i + 1) * n];
                    for (k, bk) in basis.chunks_exact(n).enumerate() {
                        axpy(svecs[i * steps + k], bk, y);
                    }
                    let c = dot(u0, y);
                    axpy(-c, u0, y);
                    let ny = norm(y);
                    if ny > 0.0 {
                        scale(y, 1.0 / ny);
                    }
                }
                return (vals, vecs);
            }
        }
        match restart {
            Some(v) => {
                beta.push(0.0);
                q = v;
            }
            None => {
                beta.push(b);
                q = w.iter().map(|x| x / b).collect();
            }
        }
    }
}



#[cfg(test)]
mod tests {
    use super::*;

    /// The dense fallback (taken only if QL does not converge, so no scene reaches it) gives
    /// the largest eigenpairs of T in descending order, the same values as QL: checked on a
    /// random 9 x 9 tridiagonal through T v = lambda v.
    #[test]
    fn tridiagonal_dense_fallback_matches_ql() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let diag: Vec<f64> = (0..9).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
        let off: Vec<f64> = (0..8).map(|_| rng.random::<f64>() + 0.1).collect();
        let (vals, vecs) = tridiagonal_dense(&diag, &off, 4);
        let mut ql = tridiagonal_ql(&diag, &off).unwrap().0;
        ql.sort_by(|x, y| y.total_cmp(x));
        for (i, &lambda) in vals.iter().enumerate() {
            // 1e-12: both are backward-stable f64 solvers on a matrix of norm ~3
            assert!((lambda - ql[i]).abs() < 1e-12, "eigenvalue {i}: dense {lambda}, QL {}", ql[i]);
            let v = &vecs[i * 9..(i + 1) * 9];
            for r in 0..9 {
                let tv = diag[r] * v[r] + if r > 0 { off[r - 1] * v[r - 1] } else { 0.0 } + if r < 8 { off[r] * v[r + 1] } else { 0.0 };
                assert!((tv - lambda * v[r]).abs() < 1e-12, "T v != lambda v at pair {i}, row {r}");
            }
        }
    }
}
