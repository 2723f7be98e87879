"""slotforge in PyTorch: the feature and pixel Slot Attention models of slotforge as
`torch.nn.Module`s with the checkpoints' parameter names, `load` / `save` of slotforge
checkpoints, and readers of slotforge's datasets, metrics and predicted masks."""

from .checkpoint import load, read_checkpoint, read_config, read_outputs, save
from .config import FeatureConfig, PixelConfig, config_from_json
from .data import read_dataset, read_metrics, read_pred_masks, write_dataset
from .models import (
    FeatureModel,
    Output,
    PixelModel,
    SlotAttention,
    build,
    diversity,
    losses,
    position_grid,
    scale_images,
)
from .npy import read_npy, write_npy
from .rng import scene_noise

__version__ = "0.1.0"

__all__ = [
    "FeatureConfig", "PixelConfig", "config_from_json",
    "FeatureModel", "PixelModel", "SlotAttention", "Output", "build", "losses", "diversity",
    "position_grid", "scale_images",
    "load", "save", "read_checkpoint", "read_config", "read_outputs",
    "read_dataset", "write_dataset", "read_metrics", "read_pred_masks", "read_npy", "write_npy",
    "scene_noise",
]
