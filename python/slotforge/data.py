"""Readers of what slotforge reads and writes: datasets, training metrics, predicted masks.

Dataset layouts (`read_dataset`), all giving the same arrays:
  DIR/features.npy [S, N, F] or [S, h, w, F] (float32, float16 or bfloat16), optional
      DIR/masks.npy uint8 [S, H, W] (0 = background) and DIR/images.npy uint8 [S, H, W, 3]
      (an image dataset has images.npy without features.npy)
  DIR/features-00000.npy, features-00001.npy, ... (+ masks-00000.npy, images-00000.npy, ... of
      the same suffixes), concatenated in name order
  DIR/data.npz, or DIR/data-00000.npz, ...: arrays `features` (or `images`), optional `masks`, `images`
  DIR/manifest.json (or the file itself): {"shards": [{"features": "rel/f.npy", "masks":
      "rel/m.npy", "images": "rel/i.npy"}, ...]}, paths relative to the manifest
  DIR/images/*.png|jpg|jpeg (sorted by name), optional DIR/masks/*.png of the same stems
      (label values; with DIR/masks.npy instead, that)
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from .npy import read_npy, write_npy
from .png import read_image, write_png

PathLike = Union[str, os.PathLike]
KINDS = ("features", "masks", "images")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")


# ---------------------------------------------------------------- datasets

def _as_features(a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype.kind == "V" and a.dtype.itemsize == 2:  # bfloat16 that np.load gave back as bytes
        from .npy import bf16_bits_to_f32
        a = bf16_bits_to_f32(a.view("<u2"))
    if a.dtype not in (np.float32, np.float16, np.float64) and a.dtype.name != "bfloat16":
        raise ValueError(f"{where}: features must be float32, float16 or bfloat16, got {a.dtype}")
    if a.ndim not in (3, 4):
        raise ValueError(f"{where}: features must be [S, N, F] or [S, h, w, F], got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _as_masks(a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype.kind not in "biu":
        raise ValueError(f"{where}: masks must be an integer label map, got {a.dtype}")
    if a.ndim != 3:
        raise ValueError(f"{where}: masks must be [S, H, W], got shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise ValueError(f"{where}: mask labels must be in 0..255")
    return np.ascontiguousarray(a, dtype=np.uint8)


def _as_images(a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[3] != 3:
        raise ValueError(f"{where}: images must be uint8 [S, H, W, 3], got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


_CHECK = {"features": _as_features, "masks": _as_masks, "images": _as_images}


def _concat(shards: List[Dict[str, np.ndarray]], where: str) -> Dict[str, Optional[np.ndarray]]:
    if not shards:
        raise ValueError(f"{where}: no shards")
    out: Dict[str, Optional[np.ndarray]] = {}
    for kind in KINDS:
        have = [kind in s for s in shards]
        if any(have) and not all(have):
            missing = [i for i, h in enumerate(have) if not h]
            raise ValueError(f"{where}: {kind} present in some shards but not in shard(s) {missing}")
        if not any(have):
            out[kind] = None
            continue
        parts = [_CHECK[kind](s[kind], f"{where} shard {i} {kind}") for i, s in enumerate(shards)]
        tails = {p.shape[1:] for p in parts}
        if len(tails) > 1:
            raise ValueError(f"{where}: {kind} shards differ in shape beyond the scene axis: {sorted(tails)}")
        out[kind] = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    if out["features"] is None and out["images"] is None:
        raise ValueError(f"{where}: neither features nor images")
    counts = {k: len(v) for k, v in out.items() if v is not None}
    if len(set(counts.values())) > 1:
        raise ValueError(f"{where}: scene count mismatch: {counts}")
    return out


def _read_npz(path: Path) -> Dict[str, np.ndarray]:
    out = {}
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            key = member[:-4] if member.endswith(".npy") else member
            if key in KINDS:
                with z.open(member) as f:
                    out[key] = read_npy(io.BytesIO(f.read()), f"{path}:{member}")
    return out


def _numbered(d: Path, prefix: str, ext: str) -> Dict[str, Path]:
    pat = re.compile(re.escape(prefix) + r"-(\d+)" + re.escape(ext) + "$")
    return {m.group(1): d / n for n in os.listdir(d) if (m := pat.match(n))}


def _read_manifest(path: Path) -> List[Dict[str, np.ndarray]]:
    spec = json.loads(path.read_text())
    entries = spec.get("shards") if isinstance(spec, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected {{\"shards\": [{{\"features\": ..., \"masks\": ...}}, ...]}}")
    shards = []
    for i, e in enumerate(entries):
        unknown = set(e) - set(KINDS)
        if unknown:
            raise ValueError(f"{path}: shard {i} has unknown key(s) {sorted(unknown)}")
        shards.append({k: read_npy(path.parent / rel) for k, rel in e.items()})
    return shards


def _read_image_dirs(d: Path) -> Dict[str, Optional[np.ndarray]]:
    files = sorted(p for p in (d / "images").iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ValueError(f"{d / 'images'}: no .png or .jpg files")
    images = [read_image(p) for p in files]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"{d / 'images'}: images differ in size: {sorted(shapes)}")
    shard = {"images": np.stack(images)}
    if (d / "masks").is_dir():
        by_stem = {p.stem: p for p in (d / "masks").iterdir() if p.suffix.lower() == ".png"}
        missing = [p.name for p in files if p.stem not in by_stem]
        if missing:
            raise ValueError(f"{d / 'masks'}: no mask for image(s) {missing[:5]}")
        shard["masks"] = np.stack([read_image(by_stem[p.stem], labels=True) for p in files])
    elif (d / "masks.npy").is_file():
        shard["masks"] = read_npy(d / "masks.npy")
    return _concat([shard], str(d))


def read_dataset(path: PathLike) -> Dict[str, Optional[np.ndarray]]:
    """A dataset as numpy arrays: {"features": float32 [S, N, F] or [S, h, w, F] (as stored) or
    None, "masks": uint8 [S, H, W] or None, "images": uint8 [S, H, W, 3] or None}. `path` is a
    dataset directory (any layout of the module doc), a manifest .json or a .npz file."""
    p = Path(path)
    if p.is_file():
        if p.suffix == ".json":
            return _concat(_read_manifest(p), str(p))
        if p.suffix == ".npz":
            return _concat([_read_npz(p)], str(p))
        raise ValueError(f"{p}: give a dataset directory, a manifest .json or a .npz file")
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: not a dataset directory")
    if (p / "manifest.json").is_file():
        return _concat(_read_manifest(p / "manifest.json"), str(p / "manifest.json"))
    if (p / "features.npy").is_file() or (p / "images.npy").is_file():
        shard = {k: read_npy(p / f"{k}.npy") for k in KINDS if (p / f"{k}.npy").is_file()}
        if "images" not in shard and (p / "images").is_dir():
            shard["images"] = _read_image_dirs(p)["images"]
        return _concat([shard], str(p))
    for lead in ("features", "images"):
        numbered = _numbered(p, lead, ".npy")
        if numbered:
            shards = []
            for suffix in sorted(numbered):
                shards.append({k: read_npy(f) for k in KINDS if (f := p / f"{k}-{suffix}.npy").is_file()})
            return _concat(shards, str(p))
    if (p / "data.npz").is_file():
        return _concat([_read_npz(p / "data.npz")], str(p / "data.npz"))
    npz = _numbered(p, "data", ".npz")
    if npz:
        return _concat([_read_npz(npz[s]) for s in sorted(npz)], str(p))
    if (p / "images").is_dir():
        return _read_image_dirs(p)
    raise ValueError(f"{p}: no features.npy, images.npy, features-00000.npy, data.npz, data-00000.npz, manifest.json or images/ found")


def _write_npz(path: Path, arrays: Dict[str, np.ndarray], dtypes: Dict[str, Optional[str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for k, a in arrays.items():
            buf_path = path.with_name(f".{path.name}.{k}.npy")
            write_npy(buf_path, a, dtypes.get(k))
            z.write(buf_path, f"{k}.npy")
            buf_path.unlink()
    os.replace(tmp, path)


def write_dataset(
    directory: PathLike,
    features: Optional[np.ndarray] = None,
    masks: Optional[np.ndarray] = None,
    images: Optional[np.ndarray] = None,
    shard_size: Optional[int] = None,
    dtype: str = "float32",
    layout: str = "npy",
) -> Path:
    """Write a dataset slotforge reads. `dtype` is the features' ("float32", "float16" or
    "bfloat16"). `layout`: "npy" (features.npy, masks.npy, images.npy; with `shard_size`,
    features-00000.npy, ... of `shard_size` scenes each), "npz" (data.npz or data-00000.npz, ...),
    "manifest" (shards under shards/ listed in manifest.json) or "png" (images/NNNNN.png and
    masks/NNNNN.png; no features). Returns the directory."""
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    arrays = {}
    if features is not None:
        arrays["features"] = _as_features(np.asarray(features, dtype=np.float32), "features")
    if masks is not None:
        arrays["masks"] = _as_masks(np.asarray(masks), "masks")
    if images is not None:
        arrays["images"] = _as_images(np.asarray(images), "images")
    _concat([arrays], "write_dataset")  # consistent counts, something to write
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    dtypes = {"features": dtype}
    count = len(next(iter(arrays.values())))
    size = shard_size or count
    if size < 1:
        raise ValueError("shard_size must be >= 1")
    starts = list(range(0, count, size))
    sharded = shard_size is not None

    if layout == "png":
        if "features" in arrays or "images" not in arrays:
            raise ValueError('layout "png" writes images (and masks), not features')
        (d / "images").mkdir(exist_ok=True)
        for i, im in enumerate(arrays["images"]):
            write_png(d / "images" / f"{i:05d}.png", im)
        if "masks" in arrays:
            (d / "masks").mkdir(exist_ok=True)
            for i, m in enumerate(arrays["masks"]):
                write_png(d / "masks" / f"{i:05d}.png", m)
        return d
    if layout == "npy":
        for j, s in enumerate(starts):
            for k, a in arrays.items():
                name = f"{k}-{j:05d}.npy" if sharded else f"{k}.npy"
                write_npy(d / name, a[s:s + size], dtypes.get(k))
        return d
    if layout == "npz":
        for j, s in enumerate(starts):
            name = f"data-{j:05d}.npz" if sharded else "data.npz"
            _write_npz(d / name, {k: a[s:s + size] for k, a in arrays.items()}, dtypes)
        return d
    if layout == "manifest":
        (d / "shards").mkdir(exist_ok=True)
        entries = []
        for j, s in enumerate(starts):
            entry = {}
            for k, a in arrays.items():
                rel = f"shards/{k}-{j:05d}.npy"
                write_npy(d / rel, a[s:s + size], dtypes.get(k))
                entry[k] = rel
            entries.append(entry)
        (d / "manifest.json").write_text(json.dumps({"shards": entries}, indent=1) + "\n")
        return d
    raise ValueError(f'layout must be "npy", "npz", "manifest" or "png", got {layout!r}')


# ---------------------------------------------------------------- run outputs

def read_metrics(path: PathLike, by_type: bool = False):
    """The lines of a run's metrics.jsonl (`path` is the run directory or the file) as dicts,
    in order (NaN was written as null and reads as None). `by_type=True`: a dict
    {"step": [...], "epoch": [...], "stop": [...]} (plus any other type present)."""
    p = Path(path)
    f = p / "metrics.jsonl" if p.is_dir() else p
    rows = []
    with open(f) as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{f}:{i}: not a JSON line: {e}") from e
    if not by_type:
        return rows
    out: Dict[str, list] = {"step": [], "epoch": [], "stop": []}
    for r in rows:
        out.setdefault(r.get("type", "unknown"), []).append(r)
    return out


def read_pred_masks(path: PathLike) -> np.ndarray:
    """`slotforge eval`'s predicted slot per mask pixel, uint8 [S, H, W] (`path` is the eval
    output directory or its pred_masks.npy)."""
    p = Path(path)
    f = p / "pred_masks.npy" if p.is_dir() else p
    return read_npy(f)
