//! Segmentation of one scene: eigengap, clustering, then the refinement of segments into
//! one group per slot (detached parts, splits), and the pooled variant for large grids.

use rayon::prelude::*;

use crate::affinity::*;
use crate::kmeans::*;
use crate::linalg::*;
use crate::*;

// ---------------------------------------------------------------------------------------------
// segmentation

/// Number of segments from the eigengap. `eigenvalues[0]` must be the trivial 0; the result is
/// `argmax_{1 <= k < len} (l_k - l_{k-1})`, the first maximum, or 1 when `len <= 1`.
pub fn eigengap_count(eigenvalues: &[f64]) -> usize {
    let mut best_k = 1usize;
    let mut best_gap = f64::NEG_INFINITY;
    for k in 1..eigenvalues.len() {
        let g = eigenvalues[k] - eigenvalues[k - 1];
        let g = if g.is_finite() { g } else { f64::NEG_INFINITY };
        if g > best_gap {
            best_gap = g;
            best_k = k;
        }
    }
    best_k
}

/// Cluster the tokens into `k` segments from the first `k - 1` nontrivial eigenvectors
/// (signs fixed, rows L2-normalized, k-means++ with `seed`). Labels are numbered by first
/// appearance in token order; fewer than `k` distinct labels come out only when the embedding
/// has fewer than `k` distinct rows.
pub fn cluster_spectrum(spec: &Spectrum, k: usize, seed: u64) -> Vec<u32> {
    let n = spec.n;
    let p = k.saturating_sub(1).min(spec.eigenvalues.len());
    if k <= 1 || p == 0 {
        return vec![0; n];
    }
    let mut vecs = spec.eigenvectors[..n * p].to_vec();
    fix_signs(&mut vecs, n, p);
    let mut y = vec![0.0f64; n * p];
    for i in 0..n {
        for c in 0..p {
            y[i * p + c] = vecs[c * n + i];
        }
        let r = &mut y[i * p..(i + 1) * p];
        let nr = norm(r);
        if nr > 1e-300 {
            scale(r, 1.0 / nr);
        }
    }
    let mut labels = kmeans(&y, n, p, k, seed, KMEANS_RESTARTS);
    canonical_relabel(&mut labels);
    labels
}

/// Split the tokens `members` in two non-empty halves (see the module docs).
pub(crate) fn split_group(
    members: &[usize],
    xn: &[f32],
    f: usize,
    grid: (usize, usize),
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let m = members.len();
    let gw = grid.1.max(1);
    let pos = |i: usize| ((i / gw) as f64, (i % gw) as f64);
    // feature and position spread about the group mean
    let mut fmean = vec![0.0f64; f];
    let (mut pr, mut pc) = (0.0, 0.0);
    for &i in members {
        for (acc, &v) in fmean.iter_mut().zip(&xn[i * f..(i + 1) * f]) {
            *acc += v as f64;
        }
        let (r, c) = pos(i);
        pr += r;
        pc += c;
    }
    let inv = 1.0 / m as f64;
    fmean.iter_mut().for_each(|v| *v *= inv);
    pr *= inv;
    pc *= inv;
    let (mut fvar, mut pvar) = (0.0, 0.0);
    for &i in members {
        fvar += xn[i * f..(i + 1) * f]
            .iter()
            .zip(&fmean)
            .map(|(&v, &mu)| (v as f64 - mu).powi(2))
            .sum::<f64>();
        let (r, c) = pos(i);
        pvar += (r - pr).powi(2) + (c - pc).powi(2);
    }
    let beta = if pvar <= 0.0 {
        0.0
    } else if fvar <= 0.0 {
        1.0
    } else {
        (fvar / pvar).sqrt()
    };
    let dim = f + 2;
    let mut data = vec![0.0f64; m * dim];
    for (row, &i) in data.chunks_exact_mut(dim).zip(members) {
        for (o, &v) in row[..f].iter_mut().zip(&xn[i * f..(i + 1) * f]) {
            *o = v as f64;
        }
        let (r, c) = pos(i);
        row[f] = beta * r;
        row[f + 1] = beta * c;
    }
    let labels = kmeans(&data, m, dim, 2, seed, 2);
    let mut a: Vec<usize> = Vec::new();
    let mut b: Vec<usize> = Vec::new();
    for (&i, &l) in members.iter().zip(&labels) {
        if l == labels[0] {
            a.push(i);
        } else {
            b.push(i);
        }
    }
    if b.is_empty() {
        // all points equal: cut at the median of the longer spatial extent
        let (rmin, rmax, cmin, cmax) =
            members
                .iter()
                .fold((f64::MAX, f64::MIN, f64::MAX, f64::MIN), |acc, &i| {
                    let (r, c) = pos(i);
                    (acc.0.min(r), acc.1.max(r), acc.2.min(c), acc.3.max(c))
                });
        let by_row = rmax - rmin >= cmax - cmin;
        let mut sorted = members.to_vec();
        sorted.sort_by(|&x, &y| {
            let (kx, ky) = if by_row {
                (pos(x).0, pos(y).0)
            } else {
                (pos(x).1, pos(y).1)
            };
            kx.total_cmp(&ky).then(x.cmp(&y))
        });
        let half = m / 2;
        a = sorted[..half].to_vec();
        b = sorted[half..].to_vec();
        a.sort_unstable();
        b.sort_unstable();
    }
    // the larger half keeps the id; on a tie the half holding the lowest token index
    if b.len() > a.len() || (b.len() == a.len() && b[0] < a[0]) {
        (b, a)
    } else {
        (a, b)
    }
}

/// Smallest detached part that becomes a group of its own: a lone token (or pair) cut off from
/// its segment is k-means noise at a boundary more often than an object.
pub const MIN_DETACHED_PART: usize = 3;

/// The 8-connected components of each segment on the token grid, except each segment's
/// largest (lowest first token on ties) and those under [`MIN_DETACHED_PART`] tokens: largest
/// first, ties by first token. Each part starts with its lowest token (the scan meets a
/// component first there).
pub(crate) fn detached_parts(labels: &[u32], grid: (usize, usize)) -> Vec<Vec<usize>> {
    let (h, w) = grid;
    let n = labels.len();
    let mut seen = vec![false; n];
    let mut parts: Vec<Vec<usize>> = Vec::new();
    for start in 0..n {
        if seen[start] {
            continue;
        }
        seen[start] = true;
        let mut members = vec![start];
        let mut next = 0;
        while next < members.len() {
            let i = members[next];
            next += 1;
            let (r, c) = ((i / w) as isize, (i % w) as isize);
            for (dr, dc) in [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)] {
                let (rr, cc) = (r + dr, c + dc);
                if rr < 0 || cc < 0 || rr >= h as isize || cc >= w as isize {
                    continue;
                }
                let j = rr as usize * w + cc as usize;
                if !seen[j] && labels[j] == labels[i] {
                    seen[j] = true;
                    members.push(j);
                }
            }
        }
        parts.push(members);
    }
    // each segment's main part: the largest (parts come in order of first token)
    let mut main: Vec<Option<usize>> = vec![None; labels.iter().max().map_or(0, |&l| l as usize + 1)];
    for (p, part) in parts.iter().enumerate() {
        let seg = labels[part[0]] as usize;
        if main[seg].is_none_or(|m| part.len() > parts[m].len()) {
            main[seg] = Some(p);
        }
    }
    let mut detached: Vec<Vec<usize>> = parts
        .into_iter()
        .enumerate()
        .filter(|(p, part)| main[labels[part[0]] as usize] != Some(*p) && part.len() >= MIN_DETACHED_PART)
        .map(|(_, part)| part)
        .collect();
    detached.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
    detached
}

pub(crate) fn refine_groups(
    labels: &[u32],
    num_segments: usize,
    target: usize,
    xn: &[f32],
    f: usize,
    grid: (usize, usize),
    seed: u64,
) -> (Vec<u32>, usize, Vec<u32>, Vec<u32>) {
    let n = labels.len();
    let mut groups = labels.to_vec();
    let mut num_groups = num_segments;
    let mut group_segment: Vec<u32> = (0..num_segments as u32).collect();
    // first the parts of a segment that do not touch each other (two look-alike objects far
    // apart share one segment of the appearance affinity), largest first
    for part in detached_parts(labels, grid) {
        if num_groups >= target {
            break;
        }
        for &i in &part {
            groups[i] = num_groups as u32;
        }
        group_segment.push(labels[part[0]]);
        num_groups += 1;
    }
    let mut group_family: Vec<u32> = (0..num_groups as u32).collect();
    let mut splits = 0u64;
    while num_groups < target {
        let mut sizes = vec![0usize; num_groups];
        for &g in &groups {
            sizes[g as usize] += 1;
        }
        let (g, size) =
            sizes.iter().enumerate().fold(
                (0usize, 0usize),
                |acc, (g, &s)| if s > acc.1 { (g, s) } else { acc },
            );
        if size < 2 {
            break;
        }
        let members: Vec<usize> = (0..n).filter(|&i| groups[i] as usize == g).collect();
        let split_seed = seed ^ SPLIT_SALT.wrapping_mul(splits + 1);
        let (_keep, moved) = split_group(&members, xn, f, grid, split_seed);
        for &i in &moved {
            groups[i] = num_groups as u32;
        }
        group_segment.push(group_segment[g]);
        group_family.push(group_family[g]);
        num_groups += 1;
        splits += 1;
    }
    (groups, num_groups, group_segment, group_family)
}

/// Spectral segmentation of one scene's tokens `[n, f]` on a `grid = (h, w)` with
/// `h * w == n`, for `num_slots` slots. See the module docs.
pub fn segment(
    tokens: &[f32],
    n: usize,
    f: usize,
    grid: (usize, usize),
    num_slots: usize,
    cfg: &SpectralConfig,
) -> Segmentation {
    assert!(n >= 1, "a scene needs at least one token");
    assert_eq!(tokens.len(), n * f, "tokens must be [n, f]");
    assert_eq!(grid.0 * grid.1, n, "grid (h, w) must have h * w == n");
    if cfg.pool > 1 && grid.0.max(grid.1) > 1 {
        return segment_pooled(tokens, f, grid, num_slots, cfg);
    }
    let k_slots = num_slots.max(1);
    let cap = if cfg.max_segments == 0 {
        k_slots
    } else {
        cfg.max_segments.min(k_slots)
    };
    let m = cap.min(n - 1);
    let (xn, zero) = normalize_tokens(tokens, n, f, cfg.center_tokens);
    let (mut labels, eigenvalues) = if m == 0 {
        (vec![0u32; n], vec![0.0])
    } else {
        let aff = affinity_from_normalized(&xn, &zero, n, f, grid, cfg);
        let spec = smallest_nontrivial(&aff, m, cfg.solver, cfg.seed);
        let mut eigenvalues = Vec::with_capacity(m + 1);
        eigenvalues.push(0.0);
        eigenvalues.extend_from_slice(&spec.eigenvalues);
        let k = eigengap_count(&eigenvalues);
        (cluster_spectrum(&spec, k, cfg.seed), eigenvalues)
    };
    let num_segments = canonical_relabel(&mut labels);
    let target = k_slots.min(n);
    let (groups, num_groups, group_segment, group_family) =
        refine_groups(&labels, num_segments, target, &xn, f, grid, cfg.seed);
    Segmentation {
        grid,
        labels,
        num_segments,
        eigenvalues,
        groups,
        num_groups,
        group_segment,
        group_family,
    }
}

/// [`segment`] on the grid pooled by `cfg.pool`, each token then taking its block's segment
/// and group. A block (`(r / pool, c / pool)`; the last row and column of blocks may be
/// partial) is represented by its **medoid**, the token nearest the block's mean (the first on
/// ties), not by the mean itself: a block on an outline would average two regions into a
/// colour neither has, and those blocks formed segments of their own (measured on 8 generated
/// Multi-dSprites scenes at pool 2: FG-ARI 0.71 with block means, against 0.96 unpooled).
/// Nearest upsampling keeps the invariants of [`Segmentation`]: the block map is monotone in
/// row and column, so segments keep their order of first appearance, and every group keeps at
/// least one token.
pub(crate) fn segment_pooled(tokens: &[f32], f: usize, grid: (usize, usize), num_slots: usize, cfg: &SpectralConfig) -> Segmentation {
    let p = cfg.pool;
    let (h, w) = grid;
    let coarse = (h.div_ceil(p), w.div_ceil(p));
    let block = |t: usize| (t / w / p) * coarse.1 + (t % w) / p;
    let value = |v: f32| if v.is_finite() { v as f64 } else { 0.0 };
    let mut members = vec![Vec::new(); coarse.0 * coarse.1];
    for t in 0..h * w {
        members[block(t)].push(t);
    }
    let mut pooled = Vec::with_capacity(members.len() * f);
    for m in &members {
        let mut mean = vec![0f64; f];
        for &t in m {
            for (a, &v) in mean.iter_mut().zip(&tokens[t * f..(t + 1) * f]) {
                *a += value(v) / m.len() as f64;
            }
        }
        let dist = |t: usize| tokens[t * f..(t + 1) * f].iter().zip(&mean).map(|(&v, a)| (value(v) - a).powi(2)).sum::<f64>();
        // each distance once; min_by keeps the first of equal minima
        let (medoid, _) = m.iter().map(|&t| (t, dist(t))).min_by(|a, b| a.1.total_cmp(&b.1)).expect("every block has a token");
        pooled.extend_from_slice(&tokens[medoid * f..(medoid + 1) * f]);
    }
    let inner = SpectralConfig { pool: 1, ..cfg.clone() };
    let seg = segment(&pooled, members.len(), f, coarse, num_slots, &inner);
    let up = |labels: &[u32]| (0..h * w).map(|t| labels[block(t)]).collect::<Vec<u32>>();
    let groups = refine_outlines(tokens, f, grid, (coarse, p), up(&seg.groups), &seg.group_segment, cfg.center_tokens);
    // a token that changed group changed segment with it; renumber the segments by first
    // appearance again, and the groups that are segments with them
    let mut labels: Vec<u32> = groups.iter().map(|&g| seg.group_segment[g as usize]).collect();
    let before = labels.clone();
    canonical_relabel(&mut labels);
    let mut perm: Vec<u32> = (0..seg.num_segments as u32).collect();
    for (&old, &new) in before.iter().zip(&labels) {
        perm[old as usize] = new;
    }
    let regroup = |g: u32| if (g as usize) < seg.num_segments { perm[g as usize] } else { g };
    let groups = groups.into_iter().map(regroup).collect();
    let mut group_segment = vec![0u32; seg.num_groups];
    let mut group_family = vec![0u32; seg.num_groups];
    for g in 0..seg.num_groups {
        group_segment[regroup(g as u32) as usize] = perm[seg.group_segment[g] as usize];
        group_family[regroup(g as u32) as usize] = regroup(seg.group_family[g]);
    }
    Segmentation { grid, labels, groups, group_segment, group_family, ..seg }
}

/// Outlines at full resolution after a pooled segmentation: a token whose block borders
/// blocks of other segments (3x3 block neighbourhood) takes, among its own group and those
/// segments' groups there, the one whose mean normalized token it is closest to in cosine.
/// Only outlines between segments move: groups that split one segment are cut by position
/// and keep their block-aligned borders. Blocks are `pool` tokens wide, so without
/// this an outline is off by up to `pool - 1` tokens (measured on 8 generated Multi-dSprites
/// scenes at pool 2: FG-ARI 0.84 without, against 0.96 unpooled). Falls back to the blocks'
/// groups if a group would be left without tokens.
pub(crate) fn refine_outlines(
    tokens: &[f32],
    f: usize,
    grid: (usize, usize),
    (coarse, pool): ((usize, usize), usize),
    groups: Vec<u32>,
    group_segment: &[u32],
    center: bool,
) -> Vec<u32> {
    let (h, w) = grid;
    let num_groups = group_segment.len();
    let (xn, _) = normalize_tokens(tokens, h * w, f, center);
    let mut means = vec![0f64; num_groups * f];
    for (t, &g) in groups.iter().enumerate() {
        for (m, &v) in means[g as usize * f..(g as usize + 1) * f].iter_mut().zip(&xn[t * f..(t + 1) * f]) {
            *m += v as f64;
        }
    }
    for m in means.chunks_exact_mut(f.max(1)) {
        let norm = m.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            m.iter_mut().for_each(|v| *v /= norm);
        }
    }
    let block_group = |br: usize, bc: usize| groups[(br * pool).min(h - 1) * w + (bc * pool).min(w - 1)];
    let mut refined = groups.clone();
    for t in 0..h * w {
        let (br, bc) = (t / w / pool, (t % w) / pool);
        let mut candidates: Vec<u32> = Vec::with_capacity(9);
        for r in br.saturating_sub(1)..(br + 2).min(coarse.0) {
            for c in bc.saturating_sub(1)..(bc + 2).min(coarse.1) {
                let g = block_group(r, c);
                if group_segment[g as usize] != group_segment[groups[t] as usize] && !candidates.contains(&g) {
                    candidates.push(g);
                }
            }
        }
        if candidates.is_empty() {
            continue; // inside a segment
        }
        let x = &xn[t * f..(t + 1) * f];
        let score = |g: u32| x.iter().zip(&means[g as usize * f..(g as usize + 1) * f]).map(|(&a, b)| a as f64 * b).sum::<f64>();
        // the highest cosine; the token keeps its own group unless another is strictly closer
        let own = groups[t];
        let mut best = (score(own), own);
        for &g in &candidates {
            let sc = score(g);
            if sc > best.0 {
                best = (sc, g);
            }
        }
        refined[t] = best.1;
    }
    let mut counts = vec![0usize; num_groups];
    refined.iter().for_each(|&g| counts[g as usize] += 1);
    if counts.iter().any(|&c| c == 0) {
        return groups;
    }
    refined
}

/// [`segment`] for a batch of scenes `[b, n, f]`, in parallel (rayon).
pub fn segment_batch(
    tokens: &[f32],
    b: usize,
    n: usize,
    f: usize,
    grid: (usize, usize),
    num_slots: usize,
    cfg: &SpectralConfig,
) -> Vec<Segmentation> {
    assert_eq!(tokens.len(), b * n * f, "tokens must be [b, n, f]");
    if b == 0 {
        return vec![];
    }
    tokens
        .par_chunks(n * f)
        .map(|t| segment(t, n, f, grid, num_slots, cfg))
        .collect()
}
