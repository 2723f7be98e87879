"""Test 2: a pixel checkpoint trained by slotforge loads strict and reproduces slotforge's
outputs. slotforge has no `infer` for the pixel model, so the comparison is with `eval`:
its pred_masks.npy (the argmax over slots of the alpha masks at image resolution, scene i with
the noise `scene_noise(0, i)`) must equal PyTorch's argmax of alpha, except at pixels where
PyTorch's two largest alphas are closer than GAP (a float tie either side may break)."""

import numpy as np
import torch

import slotforge as sf
from conftest import record

GAP = 1e-5


def compare_with_eval(test, model, ckpt, data_dir, out_dir, run):
    run("eval", "--checkpoint", ckpt, "--data", data_dir, "--out", out_dir, "--device", "cpu")
    pred = sf.read_pred_masks(out_dir)
    data = sf.read_dataset(data_dir)
    images = torch.from_numpy(data["images"])
    s, h, w, _ = images.shape
    assert pred.shape == (s, h, w) and pred.dtype == np.uint8
    cfg = model.cfg
    noise = torch.from_numpy(sf.scene_noise(0, s, cfg.num_slots, cfg.slot_dim))
    with torch.no_grad():
        out = model(images, noise)
    alpha = out.alpha  # [S, K, N]
    labels = alpha.argmax(dim=1).reshape(s, h, w).numpy()
    top2 = alpha.topk(2, dim=1).values
    gap = (top2[:, 0] - top2[:, 1]).reshape(s, h, w).numpy()
    differ = labels != pred
    hard = differ & (gap >= GAP)
    record(test, "argmax(alpha)", float(differ.mean()), float(differ.sum()),
           f"pixels differing of {differ.size} (all with top-2 gap < {GAP:.0e}: {not hard.any()})")
    assert not hard.any(), f"{hard.sum()} pixels label differently with a top-2 alpha gap >= {GAP}"
    # and the predictions are not trivial: more than one slot is used
    assert len(np.unique(pred)) > 1
    return out


def test_trained_pixel_checkpoint_matches_eval(trained, run, pixel_data, work):
    ckpt = trained("pixel") / "model.safetensors"
    model = sf.load(ckpt)  # strict=True inside
    assert isinstance(model, sf.PixelModel) and model.spectral is None
    compare_with_eval("eval pixel (trained)", model, ckpt, pixel_data, work / "eval-pixel", run)
    compare_with_eval("eval pixel (trained, float64)", sf.load(ckpt, dtype=torch.float64), ckpt, pixel_data,
                      work / "eval-pixel-f64", run)
