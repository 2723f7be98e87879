"""Test 3: modules initialized in PyTorch and written with `save` are read by slotforge: it
computes the same outputs from them (infer / eval), trains from them (`train --init`), and
evaluates the result (exit 0, metrics written); the checkpoint it writes loads back strict."""

import json

import numpy as np
import torch

import slotforge as sf
from conftest import record, rel_err
from test_pixel import compare_with_eval

FEATURE_CFG = sf.FeatureConfig(n_tokens=256, feat_dim=32, slot_dim=32, num_slots=4, mlp_hidden=32,
                               dec_hidden=32, dec_layers=2, iters=3, encoder_pos=False)
PIXEL_CFG = sf.PixelConfig(height=35, width=35, slot_dim=16, num_slots=4, mlp_hidden=16, iters=3,
                           enc_channels=8, enc_layers=2, enc_kernel=5, dec_channels=8, dec_layers=2,
                           dec_kernel=3, out_kernel=3)


def _changed(a: torch.nn.Module, b: torch.nn.Module) -> int:
    sa, sb = a.state_dict(), b.state_dict()
    return sum(not torch.equal(sa[k], sb[k]) for k in sa)


def test_feature_module_from_pytorch(run, configs, feature_data, work):
    torch.manual_seed(0)
    model = sf.FeatureModel(FEATURE_CFG)
    with torch.no_grad():  # move away from the init a little, so every parameter matters
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    init = work / "torch-feature.safetensors"
    sf.save(model, init)

    # slotforge computes from it exactly what PyTorch computes
    out = work / "infer-torch-feature.safetensors"
    run("infer", "--checkpoint", init, "--features", feature_data / "features.npy", "--out", out, "--device", "cpu")
    ref = sf.read_outputs(out)
    feats = torch.from_numpy(sf.read_dataset(feature_data)["features"]).reshape(ref["recon"].shape)
    with torch.no_grad():
        o = model(feats, ref["noise"])
    for name in ("slots", "attn", "alpha", "recon"):
        rel, abs_ = rel_err(getattr(o, name), ref[name])
        record("infer of a PyTorch-saved feature", name, rel, abs_, "torch float32")
        assert rel < 1e-5, name

    # it trains from it and evaluates; the data written by write_dataset
    data = sf.read_dataset(feature_data)
    data_dir = sf.write_dataset(work / "feature-data-copy", data["features"], masks=data["masks"])
    run_dir = work / "run-torch-feature"
    run("train", "--config", configs["feature-random"], "--init", init, "--out", run_dir, "--device", "cpu")
    metrics = sf.read_metrics(run_dir, by_type=True)
    assert metrics["step"] and len(metrics["epoch"]) == 1, metrics.keys()
    assert all(np.isfinite(r["recon"]) for r in metrics["step"])
    rows = sf.read_metrics(run_dir / "metrics.jsonl")
    assert len(rows) == sum(len(v) for v in metrics.values())
    trained = sf.load(run_dir / "model.safetensors")
    assert trained.cfg == FEATURE_CFG
    assert _changed(model, trained) > 0
    ev = work / "eval-torch-feature"
    run("eval", "--checkpoint", run_dir / "model.safetensors", "--data", data_dir, "--out", ev, "--device", "cpu")
    scores = json.loads((ev / "metrics.json").read_text())
    assert 0.0 <= scores["fg_ari"] <= 1.0 or np.isnan(scores["fg_ari"])
    assert sf.read_pred_masks(ev).shape[0] == data["features"].shape[0]


def test_pixel_module_from_pytorch(run, configs, pixel_data, work):
    torch.manual_seed(1)
    model = sf.PixelModel(PIXEL_CFG)
    init = work / "torch-pixel.safetensors"
    sf.save(model, init)
    # slotforge's eval of the PyTorch-made parameters labels pixels as PyTorch does
    compare_with_eval("eval of a PyTorch-saved pixel", model, init, pixel_data, work / "eval-torch-pixel-init", run)

    run_dir = work / "run-torch-pixel"
    run("train", "--config", configs["pixel"], "--init", init, "--out", run_dir, "--device", "cpu")
    metrics = sf.read_metrics(run_dir, by_type=True)
    assert metrics["step"] and len(metrics["epoch"]) == 1
    trained = sf.load(run_dir / "model.safetensors")
    assert trained.cfg == PIXEL_CFG and _changed(model, trained) > 0
    ev = work / "eval-torch-pixel"
    run("eval", "--checkpoint", run_dir / "model.safetensors", "--data", pixel_data, "--out", ev, "--device", "cpu")
    assert (ev / "metrics.json").is_file()
    # the trained checkpoint still matches PyTorch
    compare_with_eval("eval pixel (trained from PyTorch)", trained, run_dir / "model.safetensors", pixel_data,
                      work / "eval-torch-pixel-2", run)


def test_save_rejects_foreign_modules(tmp_path):
    model = sf.FeatureModel(FEATURE_CFG)
    model.extra = torch.nn.Linear(2, 2)
    try:
        sf.save(model, tmp_path / "x.safetensors")
    except ValueError as e:
        assert "extra.weight" in str(e)
    else:
        raise AssertionError("save accepted a parameter slotforge does not have")
