"""Synthetic token scenes of the robustness suite: deliberately unlike slotforge's built-in
generator (src/data/synthetic.rs: 3 shapes, CLEVR layout with perspective, one flat
background code plus a faint low-frequency field, one attribute code per object).

A scene is drawn at mask resolution (128x128) and read out on a 16x16 token grid:

- Objects are irregular star-convex blobs (random Fourier radius, aspect ratio, rotation),
  sizes log-uniform in an area range (from under one token to half the image), anywhere in
  the frame (cut by the border), drawn in a random depth order; optionally placed touching
  an earlier object. An object that keeps too little visible area is dropped.
- The background is 1..n "stuff" regions (warped Voronoi cells: floor, wall, table ...),
  each with its own code, optionally pulled toward the object classes (background that
  looks like objects), with its own texture; all labelled 0 in the masks.
- A region's feature at a token is its code plus a texture (a few directions with
  per-token random and smooth coefficients), objects also vary over their extent (two
  "parts"); a token is the AREA-WEIGHTED MIXTURE of the regions in its 8x8 patch
  (optionally sharpened, cover^gamma, as ViT tokens are dominated by their main content).
- Global terms: a shared component, a positional field, uneven lighting (a smooth field
  along one direction), spatially smooth noise and iid noise. Optionally a CNN-like
  read-out: relu(x - threshold), non-negative and sparse.

Vectors are unit-norm and noise is scaled to unit expected norm, so knobs mean the same at
any feature dimension. Everything is deterministic in (family params, data seed, scene index).
"""

import math

import numpy as np

HW = 128  # mask resolution
GRID = 16  # token grid
PATCH = HW // GRID

DEFAULTS = dict(
    feat_dim=384,
    n_objects=(2, 8),
    area=(0.01, 0.12),  # object area as a fraction of the image (before cropping/occlusion)
    irregular=0.25,  # amplitude of the radius harmonics
    aspect=(0.6, 1.6),
    touch=0.0,  # probability that an object is placed touching an earlier one
    min_visible=40,  # pixels an object must keep (else dropped)
    min_visible_frac=0.25,
    n_classes=8,
    attr=1.0,  # weight of the class code
    inst=0.5,  # within-class (instance) variation
    parts=0.35,  # spatial variation across an object
    obj_texture=0.15,
    bg_regions=(1, 2),
    bg=1.0,
    bg_like_objects=0.0,  # 0: background codes unrelated to objects; 1: drawn from object classes
    bg_texture=0.15,
    texture_smooth=0.5,  # share of texture that is spatially smooth (rest per-token random)
    shared=1.0,
    pos=0.15,
    lighting=0.0,
    smooth_noise=0.0,
    noise=0.15,
    gamma=1.0,  # token mixing sharpness at edges (1 = area-weighted)
    relu=None,  # None, or threshold of the CNN-like read-out in units of the per-dim std
)


def _unit(rng, n, dim):
    v = rng.standard_normal((n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _smooth_fields(rng, q, max_freq=1.5, grid=GRID):
    """[q, grid*grid] low-frequency random fields, each with unit RMS."""
    ii, jj = np.meshgrid(np.arange(grid) / grid, np.arange(grid) / grid, indexing="ij")
    out = np.zeros((q, grid * grid))
    for c in range(q):
        f = np.zeros((grid, grid))
        for _ in range(3):
            fx, fy = rng.uniform(-max_freq, max_freq, 2)
            f += np.cos(2 * np.pi * (fx * jj + fy * ii) + rng.uniform(0, 2 * np.pi))
        f = f.ravel()
        out[c] = f / max(np.sqrt((f * f).mean()), 1e-9)
    return out


class World:
    """What is fixed for a family (the classes, background dictionary, positional field)."""

    def __init__(self, p, tag):
        rng = np.random.default_rng([0x5017E, tag, p["feat_dim"]])
        f = p["feat_dim"]
        self.classes = _unit(rng, p["n_classes"], f)
        self.bg_dict = _unit(rng, 6, f)
        self.shared = _unit(rng, 1, f)[0]
        self.light = _unit(rng, 1, f)[0]
        comps = _smooth_fields(rng, 12, 1.5)
        vecs = _unit(rng, 12, f)
        pos = comps.T @ vecs
        self.pos = pos / np.linalg.norm(pos, axis=1).mean()
        # colour of a code: a fixed projection to RGB (for the overlay pictures)
        self.rgb = rng.standard_normal((f, 3)) / math.sqrt(f) * 2.5


def _blob(rng, cx, cy, radius, p):
    """Boolean [HW, HW] silhouette of an irregular star-convex blob."""
    yy, xx = np.mgrid[0:HW, 0:HW] + 0.5
    a = rng.uniform(*p["aspect"])
    rot = rng.uniform(0, 2 * np.pi)
    dx, dy = xx - cx, yy - cy
    u = (math.cos(rot) * dx + math.sin(rot) * dy) / math.sqrt(a)
    v = (-math.sin(rot) * dx + math.cos(rot) * dy) * math.sqrt(a)
    theta = np.arctan2(v, u)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += p["irregular"] * rng.uniform(0, 1) / (k - 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(u, v) <= radius * np.maximum(r, 0.3)


def _bg_regions(rng, n):
    """[HW, HW] ints 0..n-1: warped Voronoi cells (one region if n == 1)."""
    if n <= 1:
        return np.zeros((HW, HW), dtype=np.int64)
    yy, xx = np.mgrid[0:HW, 0:HW] + 0.5
    seeds = rng.uniform(0, HW, (n, 2))
    warp = _smooth_fields(rng, n, 1.0, grid=HW // 4).reshape(n, HW // 4, HW // 4)
    warp = np.repeat(np.repeat(warp, 4, axis=1), 4, axis=2) * HW * 0.12
    d = np.stack([np.hypot(xx - sx, yy - sy) + warp[i] for i, (sx, sy) in enumerate(seeds)])
    return d.argmin(0)


def make_scene(world, p, rng):
    """One scene: tokens [N, F] float32, mask [HW, HW] uint8, image [HW, HW, 3] uint8."""
    f = p["feat_dim"]
    n_want = int(rng.integers(p["n_objects"][0], p["n_objects"][1] + 1))
    nb = int(rng.integers(p["bg_regions"][0], p["bg_regions"][1] + 1))
    regions = _bg_regions(rng, nb)  # background region ids 0..nb-1
    label = regions.copy()  # region id per pixel: 0..nb-1 background, nb.. objects
    placed = []  # (cx, cy, radius)
    lo, hi = np.log(p["area"][0]), np.log(p["area"][1])
    for _ in range(n_want):
        area = math.exp(rng.uniform(lo, hi)) * HW * HW
        radius = math.sqrt(area / math.pi)
        if placed and rng.uniform() < p["touch"]:
            ox, oy, orad = placed[rng.integers(len(placed))]
            ang = rng.uniform(0, 2 * np.pi)
            dist = 0.95 * (orad + radius)
            cx, cy = ox + dist * math.cos(ang), oy + dist * math.sin(ang)
        else:
            cx, cy = rng.uniform(0, HW), rng.uniform(0, HW)
        sil = _blob(rng, cx, cy, radius, p)
        if sil.sum() < p["min_visible"]:
            continue
        placed.append((cx, cy, radius))
        label[sil] = nb + len(placed) - 1
    # drop objects that kept too little, relabel objects 1..n in depth order
    n_obj = len(placed)
    objects = []
    full = {}
    for o in range(n_obj):
        vis = int((label == nb + o).sum())
        full[o] = vis
        if vis >= p["min_visible"]:
            objects.append(o)
    keep_regions = list(range(nb)) + [nb + o for o in objects]
    remap = np.full(nb + n_obj, -1, dtype=np.int64)
    for new, old in enumerate(keep_regions):
        remap[old] = new
    # a dropped object's pixels fall back to the background region underneath
    lab = remap[label]
    dropped = lab < 0
    lab[dropped] = regions[dropped]
    n_reg = len(keep_regions)
    mask = np.where(lab >= nb, lab - nb + 1, 0).astype(np.uint8)

    # region codes
    codes = np.zeros((n_reg, f))
    for r in range(nb):
        b = world.bg_dict[rng.integers(len(world.bg_dict))]
        if p["bg_like_objects"] > 0:
            c = world.classes[rng.integers(len(world.classes))]
            b = (1 - p["bg_like_objects"]) * b + p["bg_like_objects"] * c
        b = b + 0.3 * _unit(rng, 1, f)[0]
        codes[r] = p["bg"] * b / np.linalg.norm(b)
    part_vec = np.zeros((n_reg, f))
    part_dir = np.zeros((n_reg, 2))
    centres = np.zeros((n_reg, 2))
    for i, o in enumerate(objects):
        r = nb + i
        c = world.classes[rng.integers(len(world.classes))] + p["inst"] * _unit(rng, 1, f)[0]
        codes[r] = p["attr"] * c / np.linalg.norm(c)
        part_vec[r] = _unit(rng, 1, f)[0]
        ang = rng.uniform(0, 2 * np.pi)
        part_dir[r] = (math.cos(ang), math.sin(ang))
        cx, cy, rad = placed[o]
        centres[r] = (cx, cy)
        part_dir[r] /= max(rad, 4.0)

    # token-level cover of each region: [N, R]
    onehot = (lab[None] == np.arange(n_reg)[:, None, None]).astype(np.float64)
    cover = onehot.reshape(n_reg, GRID, PATCH, GRID, PATCH).mean((2, 4)).reshape(n_reg, -1).T
    w = cover
    if p["gamma"] != 1.0:
        w = cover ** p["gamma"]
        w = w / w.sum(1, keepdims=True)
    n_tok = GRID * GRID
    tok = w @ codes

    # parts: objects vary along a direction across their extent (token centre position)
    ty, tx = np.divmod(np.arange(n_tok), GRID)
    tpos = np.stack([(tx + 0.5) * PATCH, (ty + 0.5) * PATCH], 1)
    for i in range(len(objects)):
        r = nb + i
        s = np.tanh(((tpos - centres[r]) * part_dir[r]).sum(1) * 1.5)
        tok += (w[:, r] * s * p["parts"])[:, None] * part_vec[r][None]

    # textures: per region, 3 directions with smooth + per-token coefficients
    for r in range(n_reg):
        amp = p["bg_texture"] if r < nb else p["obj_texture"]
        if amp <= 0 or w[:, r].max() == 0:
            continue
        q = 3
        dirs = _unit(rng, q, f)
        sm = _smooth_fields(rng, q, 4.0)
        rough = rng.standard_normal((q, n_tok))
        coef = math.sqrt(p["texture_smooth"]) * sm + math.sqrt(1 - p["texture_smooth"]) * rough
        tok += (w[:, r][:, None] * (coef.T @ dirs)) * (amp / math.sqrt(q))

    tok += p["shared"] * world.shared[None] + p["pos"] * world.pos
    if p["lighting"] > 0:
        tok += p["lighting"] * _smooth_fields(rng, 1, 0.8)[0][:, None] * world.light[None]
    if p["smooth_noise"] > 0:
        q = 6
        tok += p["smooth_noise"] / math.sqrt(q) * (_smooth_fields(rng, q, 2.5).T @ _unit(rng, q, f))
    tok += p["noise"] / math.sqrt(f) * rng.standard_normal((n_tok, f))
    if p["relu"] is not None:
        # CNN-like read-out: non-negative, sparse (threshold in units of the per-dim std)
        sd = np.sqrt((tok * tok).mean())
        tok = np.maximum(tok - p["relu"] * sd, 0.0)
        tok /= max(np.linalg.norm(tok, axis=1).mean(), 1e-9)

    # picture: each region's colour from its code, plus a little pixel noise
    col = 128 + 127 * np.tanh(codes @ world.rgb)
    img = col[lab] + rng.normal(0, 6, (HW, HW, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    return tok.astype(np.float32), mask, img


def generate(params, count, data_seed, tag):
    """features [S, N, F] float32, masks [S, HW, HW] uint8, images [S, HW, HW, 3] uint8."""
    p = dict(DEFAULTS)
    p.update(params)
    world = World(p, tag)
    feats = np.zeros((count, GRID * GRID, p["feat_dim"]), dtype=np.float32)
    masks = np.zeros((count, HW, HW), dtype=np.uint8)
    imgs = np.zeros((count, HW, HW, 3), dtype=np.uint8)
    for s in range(count):
        rng = np.random.default_rng([tag, data_seed, s])
        feats[s], masks[s], imgs[s] = make_scene(world, p, rng)
    return feats, masks, imgs
