#!/usr/bin/env python3
"""Writes the numpy-made fixtures of tests/data.rs (`every_format_reads_what_numpy_wrote`):
the same small dataset in every layout slotforge reads, as numpy (2.x) and ml_dtypes write
them, and `expected.json` with the float32 values numpy itself reads back.

    python3 -m venv /tmp/np && /tmp/np/bin/pip install numpy ml_dtypes
    /tmp/np/bin/python tests/data/make_numpy_fixtures.py tests/data/numpy
"""
import json, os, sys
import numpy as np
import ml_dtypes

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)
S, N, F = 5, 16, 6  # 5 scenes of a 4x4 token grid, 6 dims
x = (rng.standard_normal((S, N, F)) * 3).astype(np.float32)
masks = rng.integers(0, 4, size=(S, 8, 8)).astype(np.uint8)

def d(name):
    p = os.path.join(out, name)
    os.makedirs(p, exist_ok=True)
    return p

np.save(os.path.join(d("f32"), "features.npy"), x)
np.save(os.path.join(d("f32"), "masks.npy"), masks)
np.save(os.path.join(d("f16"), "features.npy"), x.astype(np.float16))
np.save(os.path.join(d("bf16"), "features.npy"), x.astype(ml_dtypes.bfloat16))
np.save(os.path.join(d("bf16"), "masks.npy"), masks.astype(np.int64))  # any integer dtype
m = np.lib.format.open_memmap(os.path.join(d("memmap_f16"), "features.npy"), mode="w+", dtype=np.float16, shape=x.shape)
m[:] = x.astype(np.float16)
m.flush()
del m
np.savez(os.path.join(d("npz"), "data.npz"), features=x, masks=masks)
np.savez(os.path.join(out, "single.npz"), features=x.astype(np.float16))
for i, (a, b) in enumerate([(0, 2), (2, 5)]):
    np.save(os.path.join(d("shards"), f"features-{i:05d}.npy"), x[a:b].astype(np.float16))
    np.save(os.path.join(d("shards"), f"masks-{i:05d}.npy"), masks[a:b])
    np.savez(os.path.join(d("npz_shards"), f"data-{i:05d}.npz"), features=x[a:b], masks=masks[a:b])
    np.save(os.path.join(d("manifest"), f"part{i}.npy"), x[a:b].astype(ml_dtypes.bfloat16))
with open(os.path.join(d("manifest"), "manifest.json"), "w") as f:
    json.dump({"shards": [{"features": "part0.npy"}, {"features": "part1.npy"}]}, f)

expected = {
    "f32": x.ravel().tolist(),
    "f16": x.astype(np.float16).astype(np.float32).ravel().tolist(),
    "bf16": x.astype(ml_dtypes.bfloat16).astype(np.float32).ravel().tolist(),
    "masks": masks.ravel().tolist(),
    "shape": [S, N, F],
    "mask_shape": [S, 8, 8],
}
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f)
