"""Scores as slotforge computes them (src/metrics.rs), in numpy, and the k-means floor.

- reduce_to_grid: majority label per patch, ties to the smaller label (metrics::reduce_to_grid).
- ari: sklearn's adjusted_rand_score from the pair-confusion matrix; 1.0 when no pair
  disagrees (both single-cluster, both all-singletons, empty).
- fg_ari: ari over the tokens whose true label is not 0.
- mbo: mean over true foreground objects of the best IoU with any predicted segment.
- score_batch: per-scene means; fg_ari and mbo over scenes with foreground only.
"""

import numpy as np


def reduce_to_grid(mask, grid):
    """[H, W] labels -> [h*w] majority label per patch (ties -> smaller label)."""
    hh, ww = mask.shape
    h, w = grid
    out = np.empty(h * w, dtype=np.int64)
    k = 0
    for i in range(h):
        r0, r1 = i * hh // h, (i + 1) * hh // h
        for j in range(w):
            c0, c1 = j * ww // w, (j + 1) * ww // w
            counts = np.bincount(mask[r0:r1, c0:c1].ravel(), minlength=256)
            out[k] = int(np.argmax(counts))  # argmax takes the first maximum: the smaller label
            k += 1
    return out


def reduce_to_grid_fast(mask, grid):
    """reduce_to_grid for masks whose size is a multiple of the grid (the suite's case)."""
    hh, ww = mask.shape
    h, w = grid
    if hh % h or ww % w:
        return reduce_to_grid(mask, grid)
    ph, pw = hh // h, ww // w
    patches = mask.reshape(h, ph, w, pw).transpose(0, 2, 1, 3).reshape(h * w, ph * pw).astype(np.int64)
    nlab = int(mask.max()) + 1
    counts = np.zeros((h * w, nlab), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(h * w), ph * pw), patches.ravel()), 1)
    return counts.argmax(1)


def _contingency(a, b):
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    na, nb = ai.max() + 1 if ai.size else 0, bi.max() + 1 if bi.size else 0
    table = np.zeros((na, nb), dtype=np.int64)
    np.add.at(table, (ai, bi), 1)
    return table


def ari(true, pred):
    true = np.asarray(true).ravel()
    pred = np.asarray(pred).ravel()
    if true.size == 0:
        return 1.0
    c = _contingency(true, pred)
    n = int(c.sum())
    sum_sq = int((c.astype(object) ** 2).sum()) if n > 3_000_000 else int((c ** 2).sum())
    row = c.sum(1)
    col = c.sum(0)
    sum_row_sq = int((row ** 2).sum())
    sum_col_sq = int((col ** 2).sum())
    tp = sum_sq - n
    fp = sum_col_sq - sum_sq
    fn = sum_row_sq - sum_sq
    tn = n * n - fp - fn - sum_sq
    if fn == 0 and fp == 0:
        return 1.0
    num = tp * tn - fn * fp
    den = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    return 2.0 * num / den


def fg_ari(true, pred):
    true = np.asarray(true).ravel()
    pred = np.asarray(pred).ravel()
    keep = true != 0
    return ari(true[keep], pred[keep])


def mbo(true, pred):
    """None when there is no foreground object."""
    true = np.asarray(true).ravel()
    pred = np.asarray(pred).ravel()
    objs = [l for l in np.unique(true) if l != 0]
    if not objs:
        return None
    preds = np.unique(pred)
    pa = {p: int((pred == p).sum()) for p in preds}
    total = 0.0
    for l in objs:
        m = true == l
        area = int(m.sum())
        inter = np.bincount(np.searchsorted(preds, pred[m]), minlength=len(preds))
        best = max(inter[i] / (area + pa[p] - inter[i]) for i, p in enumerate(preds))
        total += best
    return total / len(objs)


def score_batch(trues, preds):
    """Per-scene averaged scores over lists of label vectors."""
    aris, fgs, mbos = [], [], []
    for t, p in zip(trues, preds):
        aris.append(ari(t, p))
        if np.any(np.asarray(t) != 0):
            fgs.append(fg_ari(t, p))
            mbos.append(mbo(t, p))
    mean = lambda v: float(np.mean(v)) if v else 1.0
    return {"ari": mean(aris), "fg_ari": mean(fgs), "mbo": mean(mbos), "count": len(aris), "fg_count": len(fgs)}


# ---------------------------------------------------------------------------------------
# k-means floor


def kmeans(x, k, rng, restarts=10, iters=40):
    """Lloyd's k-means with k-means++ seeding; the restart with the lowest inertia. [n] labels."""
    n = x.shape[0]
    k = min(k, n)
    best, best_inertia = None, np.inf
    sq = (x * x).sum(1)
    eye = np.eye(k, dtype=x.dtype)
    for _ in range(restarts):
        idx = [int(rng.integers(n))]
        d2 = np.maximum(sq - 2 * x @ x[idx[0]] + sq[idx[0]], 0)
        for _c in range(1, k):
            tot = d2.sum()
            i = int(rng.choice(n, p=d2 / tot)) if tot > 0 else int(rng.integers(n))
            idx.append(i)
            d2 = np.minimum(d2, np.maximum(sq - 2 * x @ x[i] + sq[i], 0))
        centers = x[idx].copy()
        labels = None
        for _ in range(iters):
            dist = sq[:, None] - 2 * x @ centers.T + (centers * centers).sum(1)[None, :]
            new = dist.argmin(1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            onehot = eye[labels]  # [n, k]
            counts = onehot.sum(0)
            sums = onehot.T @ x
            empty = counts == 0
            centers = np.where(empty[:, None], centers, sums / np.maximum(counts, 1)[:, None])
            if empty.any():  # re-seed empty clusters at the farthest points
                far = np.argsort(-dist.min(1))[: int(empty.sum())]
                centers[empty] = x[far]
        dist = sq[:, None] - 2 * x @ centers.T + (centers * centers).sum(1)[None, :]
        inertia = dist.min(1).sum()
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def kmeans_floor(features, masks, grid, k, seed, metric="cosine", restarts=10):
    """Token scores of per-scene k-means (K = k) on the raw tokens of `features` [S, N, F]
    against `masks` [S, H, W] reduced to the grid. metric: "cosine" (tokens L2-normalised,
    spherical k-means) or "euclidean" (raw tokens)."""
    rng = np.random.default_rng(seed)
    trues, preds = [], []
    for s in range(features.shape[0]):
        x = features[s].astype(np.float64)
        if metric == "cosine":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        preds.append(kmeans(x, k, rng, restarts=restarts))
        trues.append(reduce_to_grid_fast(masks[s], grid))
    return score_batch(trues, preds)
