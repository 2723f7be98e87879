"""Test 1: feature checkpoints trained by slotforge (random and spectral slot init) load in
PyTorch with strict=True and reproduce `slotforge infer` given infer's noise and spectral
weights: max |torch - slotforge| / max |slotforge| < 1e-5 for slots, attn, alpha, recon."""

import numpy as np
import pytest
import torch

import slotforge as sf
from conftest import record, rel_err

TOL = 1e-5
OUTPUTS = ("slots", "attn", "alpha", "recon")


def _features(data_dir):
    x = sf.read_dataset(data_dir)["features"]
    return torch.from_numpy(x.reshape(x.shape[0], -1, x.shape[-1]))


def _compare(test, model, ref, feats, dtype=torch.float32, tol=TOL):
    model = model.to(dtype)
    with torch.no_grad():
        out = model(feats.to(dtype), ref["noise"].to(dtype), None if "spectral_weights" not in ref else ref["spectral_weights"].to(dtype))
    worst = 0.0
    for name in OUTPUTS:
        got = getattr(out, name)
        assert got.shape == ref[name].shape, name
        rel, abs_ = rel_err(got, ref[name])
        record(test, name, rel, abs_, f"torch {str(dtype).replace('torch.', '')}")
        assert rel < tol, f"{name}: relative error {rel:.2e} >= {tol:.0e} (abs {abs_:.2e})"
        worst = max(worst, rel)
    return worst


@pytest.mark.parametrize("name", ["feature-random", "feature-spectral"])
def test_trained_checkpoint_reproduces_infer(name, trained, run, feature_data, work):
    ckpt = trained(name) / "model.safetensors"
    model = sf.load(ckpt)  # strict=True inside
    assert isinstance(model, sf.FeatureModel)
    spectral = name == "feature-spectral"
    assert (model.spectral is not None) == spectral
    assert model.cfg.encoder_pos == spectral  # the spectral config also turns encoder_pos on
    tensors, _ = sf.read_checkpoint(ckpt)
    model.load_state_dict(tensors, strict=True)

    out = work / f"infer-{name}.safetensors"
    run("infer", "--checkpoint", ckpt, "--features", feature_data / "features.npy", "--out", out, "--device", "cpu")
    ref = sf.read_outputs(out)
    assert ("spectral_weights" in ref) == spectral
    feats = _features(feature_data)
    b, k, d = feats.shape[0], model.cfg.num_slots, model.cfg.slot_dim
    assert ref["noise"].shape == (b, k, d)
    if spectral:
        assert ref["spectral_weights"].shape == (b, model.cfg.n_tokens, k)

    # infer's default noise is `eval --seed 0`'s per-scene draw: slotforge.scene_noise gives it bit for bit
    scale = model.spectral["noise"] if spectral else 1.0
    np.testing.assert_array_equal(sf.scene_noise(0, b, k, d, scale), ref["noise"].numpy())

    _compare(f"infer {name}", model, ref, feats)
    _compare(f"infer {name}", sf.load(ckpt), ref, feats, torch.float64)


def test_infer_with_given_noise(trained, run, feature_data, work):
    """`infer --noise` uses (and echoes) exactly the noise given; PyTorch reproduces the outputs."""
    ckpt = trained("feature-random") / "model.safetensors"
    model = sf.load(ckpt)
    feats = _features(feature_data)
    noise = np.random.default_rng(3).standard_normal((feats.shape[0], model.cfg.num_slots, model.cfg.slot_dim)).astype(np.float32)
    sf.write_npy(work / "noise.npy", noise)
    out = work / "infer-noise.safetensors"
    run("infer", "--checkpoint", ckpt, "--features", feature_data / "features.npy", "--noise", work / "noise.npy",
        "--out", out, "--device", "cpu")
    ref = sf.read_outputs(out)
    np.testing.assert_array_equal(ref["noise"].numpy(), noise)
    _compare("infer --noise feature-random", model, ref, feats)


def test_strict_load_rejects_wrong_names(trained, tmp_path):
    """The module is strict both ways: a renamed parameter (the old `encoder.0.weight`) fails."""
    ckpt = trained("feature-random") / "model.safetensors"
    tensors, meta = sf.read_checkpoint(ckpt)
    model = sf.load(ckpt)
    bad = dict(tensors)
    bad["encoder.0.weight"] = bad.pop("encoder.layers.0.weight")
    with pytest.raises(RuntimeError, match="encoder.0.weight"):
        model.load_state_dict(bad, strict=True)
    names = [n for n, _ in model.cfg.param_shapes()]
    assert sorted(names) == sorted(tensors)
    assert [tuple(tensors[n].shape) for n in names] == [s for _, s in model.cfg.param_shapes()]
