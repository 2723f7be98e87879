"""Test 4: every dataset layout reads to the same float32 features, masks and images; bfloat16
as numpy + ml_dtypes write it (descr '<V2') and as write_npy writes it; PNG folders."""

import json
import struct
import zlib

import numpy as np
import pytest

import slotforge as sf
from slotforge.npy import f32_to_bf16_bits, bf16_bits_to_f32
from slotforge.png import read_png, write_png

S, H, W, F = 7, 4, 4, 8


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    # multiples of 1/8 in [-16, 16]: exact in float16 and bfloat16, so every dtype reads the same
    feats = (rng.integers(-128, 129, size=(S, H * W, F)) / 8).astype(np.float32)
    masks = rng.integers(0, 5, size=(S, 8, 8)).astype(np.uint8)
    images = rng.integers(0, 256, size=(S, 8, 8, 3)).astype(np.uint8)
    return feats, masks, images


def _check(d, feats, masks, images=None):
    assert d["features"].dtype == np.float32
    np.testing.assert_array_equal(d["features"], feats)
    np.testing.assert_array_equal(d["masks"], masks)
    assert d["masks"].dtype == np.uint8
    if images is not None:
        np.testing.assert_array_equal(d["images"], images)
        assert d["images"].dtype == np.uint8
    else:
        assert d["images"] is None


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("layout", ["npy", "npz", "manifest"])
@pytest.mark.parametrize("shard_size", [None, 3])
def test_layouts_read_the_same(tmp_path, arrays, dtype, layout, shard_size):
    feats, masks, images = arrays
    d = sf.write_dataset(tmp_path / "ds", feats, masks=masks, images=images, shard_size=shard_size, dtype=dtype, layout=layout)
    names = sorted(p.name for p in d.iterdir())
    if layout == "npy":
        assert names == (["features.npy", "images.npy", "masks.npy"] if shard_size is None else
                         [f"{k}-{i:05d}.npy" for k in ("features", "images", "masks") for i in range(3)])
    if layout == "npz":
        assert names == (["data.npz"] if shard_size is None else [f"data-{i:05d}.npz" for i in range(3)])
    _check(sf.read_dataset(d), feats, masks, images)
    if layout == "manifest":
        _check(sf.read_dataset(d / "manifest.json"), feats, masks, images)
    if layout == "npz" and shard_size is None:
        _check(sf.read_dataset(d / "data.npz"), feats, masks, images)


def test_grid_features_keep_their_shape(tmp_path, arrays):
    feats, masks, _ = arrays
    grid = feats.reshape(S, H, W, F)
    d = sf.write_dataset(tmp_path / "g", grid, masks=masks, shard_size=4, dtype="float16")
    got = sf.read_dataset(d)
    assert got["features"].shape == (S, H, W, F)
    np.testing.assert_array_equal(got["features"], grid)


def test_hand_made_layouts(tmp_path, arrays):
    """Files written with plain numpy (np.save / np.savez), not write_dataset."""
    feats, masks, images = arrays
    a = tmp_path / "shards"
    a.mkdir()
    for i, (lo, hi) in enumerate([(0, 2), (2, 5), (5, 7)]):
        np.save(a / f"features-{i:05d}.npy", feats[lo:hi].astype(np.float16))
        np.save(a / f"masks-{i:05d}.npy", masks[lo:hi].astype(np.int64))  # any integer dtype
    _check(sf.read_dataset(a), feats, masks)

    b = tmp_path / "npz"
    b.mkdir()
    np.savez(b / "data-00000.npz", features=feats[:4], masks=masks[:4])
    np.savez_compressed(b / "data-00001.npz", features=feats[4:], masks=masks[4:])
    _check(sf.read_dataset(b), feats, masks)

    c = tmp_path / "man"
    (c / "x" / "y").mkdir(parents=True)
    np.save(c / "x" / "f0.npy", feats[:5])
    np.save(c / "x" / "y" / "m0.npy", masks[:5])
    np.save(c / "f1.npy", feats[5:])
    np.save(c / "m1.npy", masks[5:])
    (c / "manifest.json").write_text(json.dumps({"shards": [
        {"features": "x/f0.npy", "masks": "x/y/m0.npy"}, {"features": "f1.npy", "masks": "m1.npy"}]}))
    _check(sf.read_dataset(c), feats, masks)


def test_bfloat16_descr(tmp_path, arrays):
    """write_npy writes bfloat16 with the descr numpy + ml_dtypes write: '<V2'."""
    feats = arrays[0]
    p = tmp_path / "bf.npy"
    sf.write_npy(p, feats, dtype="bfloat16")
    head = p.read_bytes()[:128]
    assert b"'descr': '<V2'" in head
    raw = np.load(p)  # numpy alone: 2-byte voids
    assert raw.dtype == np.dtype("V2")
    np.testing.assert_array_equal(sf.read_npy(p), feats)
    # rounding to nearest even, as ml_dtypes
    x = np.array([1.0, 1.00390625, 1.01171875, -3.3, 65504.0, 3.0e38, 1e-40], dtype=np.float32)
    bits = f32_to_bf16_bits(x)
    assert bits.tolist()[:3] == [0x3F80, 0x3F80, 0x3F82]
    np.testing.assert_array_equal(bf16_bits_to_f32(np.array([0x3F80, 0xC000], dtype=np.uint16)), [1.0, -2.0])


def test_bfloat16_written_by_ml_dtypes(tmp_path, arrays):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    feats, masks, _ = arrays
    d = tmp_path / "ml"
    d.mkdir()
    bf = feats.astype(ml_dtypes.bfloat16)
    np.save(d / "features.npy", bf)
    np.save(d / "masks.npy", masks)
    descr = (d / "features.npy").read_bytes()[10:80]
    assert b"'descr': '<V2'" in descr, descr  # what numpy writes for ml_dtypes.bfloat16
    _check(sf.read_dataset(d), feats, masks)
    # and ml_dtypes reads what write_npy writes
    sf.write_npy(d / "mine.npy", feats, dtype="bfloat16")
    back = np.load(d / "mine.npy").view(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(back, feats)
    # rounding agrees with ml_dtypes on arbitrary values
    x = np.random.default_rng(1).standard_normal(10000).astype(np.float32) * 100
    np.testing.assert_array_equal(f32_to_bf16_bits(x), x.astype(ml_dtypes.bfloat16).view(np.uint16))


def _png_with_filters(path, img):
    """An RGB PNG whose row y uses filter type y % 5 (None, Sub, Up, Average, Paeth)."""
    h, w, _ = img.shape
    bpp, rows = 3, img.reshape(h, w * 3).astype(np.int64)
    out = b""
    prev = np.zeros(w * 3, dtype=np.int64)
    for y in range(h):
        r, t = rows[y], y % 5
        left = np.concatenate([np.zeros(bpp, np.int64), r[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        if t == 0:
            f = r
        elif t == 1:
            f = r - left
        elif t == 2:
            f = r - prev
        elif t == 3:
            f = r - (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            f = r - pred
        out += bytes([t]) + (f % 256).astype(np.uint8).tobytes()
        prev = r

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(out)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def test_png_decoder(tmp_path):
    img = np.random.default_rng(2).integers(0, 256, size=(11, 9, 3)).astype(np.uint8)
    _png_with_filters(tmp_path / "f.png", img)
    np.testing.assert_array_equal(read_png(tmp_path / "f.png"), img)
    gray = img[..., 0]
    write_png(tmp_path / "g.png", gray)
    np.testing.assert_array_equal(read_png(tmp_path / "g.png", labels=True), gray)
    np.testing.assert_array_equal(read_png(tmp_path / "g.png"), np.repeat(gray[..., None], 3, axis=2))


def test_image_folders(tmp_path, arrays):
    _, masks, images = arrays
    d = sf.write_dataset(tmp_path / "png", masks=masks, images=images, layout="png")
    assert sorted(p.name for p in (d / "images").iterdir())[0] == "00000.png"
    got = sf.read_dataset(d)
    assert got["features"] is None
    np.testing.assert_array_equal(got["images"], images)
    np.testing.assert_array_equal(got["masks"], masks)
    # masks.npy instead of masks/
    e = tmp_path / "png2"
    sf.write_dataset(e, images=images, layout="png")
    np.save(e / "masks.npy", masks)
    np.testing.assert_array_equal(sf.read_dataset(e)["masks"], masks)
    # a missing mask is named
    (d / "masks" / "00003.png").unlink()
    with pytest.raises(ValueError, match="00003"):
        sf.read_dataset(d)


def test_image_npy_dataset(tmp_path, arrays):
    _, masks, images = arrays
    d = sf.write_dataset(tmp_path / "img", masks=masks, images=images, shard_size=5)
    got = sf.read_dataset(d)
    assert got["features"] is None
    np.testing.assert_array_equal(got["images"], images)


def test_mismatches_are_errors(tmp_path, arrays):
    feats, masks, _ = arrays
    d = tmp_path / "bad"
    d.mkdir()
    np.save(d / "features.npy", feats)
    np.save(d / "masks.npy", masks[:3])
    with pytest.raises(ValueError, match="scene count"):
        sf.read_dataset(d)
    e = tmp_path / "bad2"
    e.mkdir()
    np.save(e / "features-00000.npy", feats[:3])
    np.save(e / "masks-00000.npy", masks[:3])
    np.save(e / "features-00001.npy", feats[3:])
    with pytest.raises(ValueError, match="masks present in some shards"):
        sf.read_dataset(e)


def test_metrics_and_pred_masks_readers(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"type": "step", "step": 1, "recon": 0.5}, {"type": "step", "step": 2, "recon": None},
             {"type": "epoch", "epoch": 0, "fg_ari": 0.3}, {"type": "stop", "epoch": 1}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert sf.read_metrics(run) == lines
    by = sf.read_metrics(run / "metrics.jsonl", by_type=True)
    assert [len(by[k]) for k in ("step", "epoch", "stop")] == [2, 1, 1]
    pred = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.save(run / "pred_masks.npy", pred)
    np.testing.assert_array_equal(sf.read_pred_masks(run), pred)


def test_module_shapes_and_grid_input():
    """Module parameter names and shapes are the config's param_shapes (both models, with and
    without encoder_pos); grid-layout features give the same outputs as token-layout ones."""
    import torch
    for cfg in (sf.FeatureConfig(n_tokens=16, feat_dim=8, slot_dim=8, num_slots=3, mlp_hidden=8, dec_hidden=8, dec_layers=1),
                sf.FeatureConfig(n_tokens=16, feat_dim=8, slot_dim=8, num_slots=3, mlp_hidden=8, dec_hidden=8, encoder_pos=True),
                sf.PixelConfig(height=5, width=6, slot_dim=8, num_slots=3, mlp_hidden=8, enc_channels=4, enc_layers=1,
                               dec_channels=4, dec_layers=1, enc_kernel=3, dec_kernel=1, out_kernel=5)):
        m = sf.build(cfg)
        assert [(k, tuple(v.shape)) for k, v in sorted(m.state_dict().items())] == sorted(cfg.param_shapes())
        assert sf.config_from_json(cfg.to_json()) == cfg
    m = sf.FeatureModel(cfg=sf.FeatureConfig(n_tokens=16, feat_dim=8, slot_dim=8, num_slots=3, mlp_hidden=8, dec_hidden=8))
    x, z = torch.randn(2, 16, 8), torch.randn(2, 3, 8)
    a, b = m(x, z), m(x.reshape(2, 4, 4, 8), z)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    # the textbook per-pair decoder is the same function as the mixed one
    alpha, recon = m.decode(a.slots, per_pair=True)
    assert torch.allclose(alpha, a.alpha) and torch.allclose(recon, a.recon, atol=1e-6)
