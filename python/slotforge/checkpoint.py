"""slotforge checkpoints: safetensors files of F32 tensors under PyTorch parameter names, with
the model config as JSON in the `slotforge.config` metadata entry and, for a model trained with
spectral slot init, its segmentation settings in `slotforge.spectral` (src/checkpoint.rs,
src/model/any.rs, src/train/run.rs)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from .config import AnyConfig, config_from_json
from .models import build

CONFIG_KEY = "slotforge.config"
SPECTRAL_KEY = "slotforge.spectral"

PathLike = Union[str, os.PathLike]


def read_checkpoint(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """The tensors (as stored) and the metadata of a safetensors file."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        for name in f.keys():
            tensors[name] = f.get_tensor(name)
    return tensors, meta


def read_config(path: PathLike) -> Tuple[AnyConfig, Optional[dict]]:
    """A checkpoint's model config and its spectral settings (None: random slot init)."""
    _, meta = read_checkpoint(path)
    return _configs(meta, path)


def _configs(meta: Dict[str, str], path) -> Tuple[AnyConfig, Optional[dict]]:
    if CONFIG_KEY not in meta:
        raise ValueError(f"{path}: checkpoint lacks {CONFIG_KEY} metadata")
    cfg = config_from_json(meta[CONFIG_KEY])
    spectral = json.loads(meta[SPECTRAL_KEY]) if SPECTRAL_KEY in meta else None
    return cfg, spectral


def load(path: PathLike, map_location: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Build the checkpoint's model (FeatureModel or PixelModel, from `slotforge.config`) and load
    its parameters with `strict=True`. The module's `.cfg` is the config, `.spectral` the
    `slotforge.spectral` settings (a dict; None for a random-init model)."""
    tensors, meta = read_checkpoint(path)
    cfg, spectral = _configs(meta, path)
    model = build(cfg, spectral)
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
    return model.to(device=map_location, dtype=dtype)


def state_dict_for_slotforge(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The module's parameters as slotforge stores them: the names and shapes of the config's
    `param_shapes`, contiguous float32 on the CPU. Fails on a missing, extra or misshapen one."""
    cfg = module.cfg
    sd = module.state_dict()
    want = dict(cfg.param_shapes())
    missing = sorted(set(want) - set(sd))
    extra = sorted(set(sd) - set(want))
    if missing or extra:
        raise ValueError(f"parameters do not match the {cfg.model} model of {cfg}: missing {missing}, unexpected {extra}")
    out = {}
    for name, shape in want.items():
        t = sd[name].detach().to(device="cpu", dtype=torch.float32).contiguous()
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"parameter {name}: shape {tuple(t.shape)}, the {cfg.model} model has {tuple(shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"parameter {name} has non-finite values (slotforge refuses them)")
        out[name] = t
    return out


def save(module: torch.nn.Module, path: PathLike, spectral: Optional[dict] = None) -> None:
    """Write `module` (a FeatureModel or PixelModel, or any module with a `.cfg` and the same
    parameter names) as a slotforge checkpoint: F32 tensors, `slotforge.config`, and
    `slotforge.spectral` from `spectral` or else `module.spectral` if set. Written through a
    temporary file and a rename, like slotforge."""
    tensors = state_dict_for_slotforge(module)
    meta = {CONFIG_KEY: module.cfg.to_json()}
    if spectral is None:
        spectral = getattr(module, "spectral", None)
    if spectral is not None:
        meta[SPECTRAL_KEY] = json.dumps(spectral, separators=(",", ":"))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    from safetensors.torch import save_file

    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read_outputs(path: PathLike) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file, e.g. `slotforge infer`'s output (slots, attn, alpha,
    recon, noise, and spectral_weights for a spectral checkpoint)."""
    return read_checkpoint(path)[0]
