"""The `slotforge.config` checkpoint metadata: the feature model's `ModelConfig` and the pixel
model's `PixelConfig` (src/model/mod.rs, src/model/pixel.rs, src/model/any.rs), with the same
fields, the same JSON and the same checks. slotforge rejects unknown fields, so `to_json`
writes exactly these."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Dict, List, Tuple, Union

Shapes = List[Tuple[str, Tuple[int, ...]]]


def _check_common(what: str, sizes, num_slots: int, eps: float) -> None:
    for name, v in list(sizes) + [("num_slots", num_slots)]:
        if not (isinstance(v, int) and v >= 1):
            raise ValueError(f"{what}: {name} must be >= 1 (got {v})")
    if num_slots > 64:
        raise ValueError(f"{what}: num_slots must be <= 64 (got {num_slots})")
    if not (0.0 < eps < 1e-2):
        raise ValueError(f"{what}: eps must be in (0, 0.01) (got {eps})")


def slot_attention_shapes(d: int, mlp_hidden: int) -> Shapes:
    """The Slot Attention module's parameters (`slot_attention.*`), in slotforge's order."""
    p: Shapes = [("slot_attention.slots_mu", (1, 1, d)), ("slot_attention.slots_log_sigma", (1, 1, d))]
    for norm in ("norm_inputs", "norm_slots", "norm_mlp"):
        p += [(f"slot_attention.{norm}.weight", (d,)), (f"slot_attention.{norm}.bias", (d,))]
    for w in ("to_q", "to_k", "to_v"):
        p.append((f"slot_attention.{w}.weight", (d, d)))
    p += [
        ("slot_attention.gru.weight_ih", (3 * d, d)),
        ("slot_attention.gru.weight_hh", (3 * d, d)),
        ("slot_attention.gru.bias_ih", (3 * d,)),
        ("slot_attention.gru.bias_hh", (3 * d,)),
        ("slot_attention.mlp.layers.0.weight", (mlp_hidden, d)),
        ("slot_attention.mlp.layers.0.bias", (mlp_hidden,)),
        ("slot_attention.mlp.layers.1.weight", (d, mlp_hidden)),
        ("slot_attention.mlp.layers.1.bias", (d,)),
    ]
    return p


@dataclass(frozen=True)
class FeatureConfig:
    """The feature model (DINOSAUR style) over N tokens of F-dim frozen ViT features."""

    n_tokens: int
    feat_dim: int
    slot_dim: int = 256
    num_slots: int = 11
    mlp_hidden: int = 512
    dec_hidden: int = 256
    dec_layers: int = 2
    iters: int = 3
    eps: float = 1e-8
    #: learned position embedding `encoder_pos [1, N, D]` added to the encoder output
    encoder_pos: bool = False

    model = "feature"

    def validate(self) -> None:
        sizes = [(n, getattr(self, n)) for n in ("n_tokens", "feat_dim", "slot_dim", "mlp_hidden", "dec_hidden", "iters")]
        _check_common("model config", sizes, self.num_slots, self.eps)
        if not isinstance(self.dec_layers, int) or self.dec_layers < 1:
            raise ValueError(f"model config: dec_layers must be >= 1 (got {self.dec_layers})")

    def param_shapes(self) -> Shapes:
        """Every parameter, PyTorch name and shape, in slotforge's order (`ModelConfig::param_shapes`)."""
        f, d, hd, n = self.feat_dim, self.slot_dim, self.dec_hidden, self.n_tokens
        p: Shapes = [
            ("encoder_norm.weight", (f,)),
            ("encoder_norm.bias", (f,)),
            ("encoder.layers.0.weight", (d, f)),
            ("encoder.layers.0.bias", (d,)),
            ("encoder.layers.1.weight", (d, d)),
            ("encoder.layers.1.bias", (d,)),
        ]
        module = slot_attention_shapes(d, self.mlp_hidden)
        p += module[:2]
        if self.encoder_pos:
            p.append(("encoder_pos", (1, n, d)))
        p += module[2:]
        p.append(("decoder_pos", (1, 1, n, d)))
        din = d
        for layer in range(self.dec_layers + 1):
            dout = f + 1 if layer == self.dec_layers else hd
            p += [(f"decoder.layers.{layer}.weight", (dout, din)), (f"decoder.layers.{layer}.bias", (dout,))]
            din = dout
        return p

    def to_json(self) -> str:
        """As slotforge writes it: the fields in order, no `model` field."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))


@dataclass(frozen=True)
class PixelConfig:
    """The pixel model (Locatello et al. 2020) over H x W RGB images."""

    height: int
    width: int
    slot_dim: int = 64
    num_slots: int = 4
    mlp_hidden: int = 128
    iters: int = 3
    eps: float = 1e-8
    enc_channels: int = 32
    enc_layers: int = 4
    enc_kernel: int = 5
    dec_channels: int = 32
    dec_layers: int = 3
    dec_kernel: int = 3
    out_kernel: int = 3

    model = "pixel"

    @property
    def tokens(self) -> int:
        return self.height * self.width

    def validate(self) -> None:
        names = ("height", "width", "slot_dim", "mlp_hidden", "iters", "enc_channels", "enc_layers", "dec_channels", "dec_layers")
        _check_common("pixel model config", [(n, getattr(self, n)) for n in names], self.num_slots, self.eps)
        for name in ("enc_kernel", "dec_kernel", "out_kernel"):
            k = getattr(self, name)
            if not (isinstance(k, int) and k % 2 == 1 and 0 < k <= 9):
                raise ValueError(f'pixel model config: {name} must be odd and <= 9 for "same" padding (got {k})')

    def param_shapes(self) -> Shapes:
        """Every parameter, PyTorch name and shape, in slotforge's order (`PixelConfig::param_shapes`)."""
        d, c, cd = self.slot_dim, self.enc_channels, self.dec_channels
        p: Shapes = []

        def conv(name, cout, cin, k):
            p.extend([(f"{name}.weight", (cout, cin, k, k)), (f"{name}.bias", (cout,))])

        for layer in range(self.enc_layers):
            conv(f"encoder_cnn.layers.{layer}", c, 3 if layer == 0 else c, self.enc_kernel)
        p += [
            ("encoder_pos.dense.weight", (c, 4)),
            ("encoder_pos.dense.bias", (c,)),
            ("encoder_norm.weight", (c,)),
            ("encoder_norm.bias", (c,)),
            ("mlp.layers.0.weight", (d, c)),
            ("mlp.layers.0.bias", (d,)),
            ("mlp.layers.1.weight", (d, d)),
            ("mlp.layers.1.bias", (d,)),
        ]
        p += slot_attention_shapes(d, self.mlp_hidden)
        p += [("decoder_pos.dense.weight", (d, 4)), ("decoder_pos.dense.bias", (d,))]
        for layer in range(self.dec_layers):
            conv(f"decoder_cnn.layers.{layer}", cd, d if layer == 0 else cd, self.dec_kernel)
        conv(f"decoder_cnn.layers.{self.dec_layers}", 4, cd, self.out_kernel)
        return p

    def to_json(self) -> str:
        """As slotforge writes it: `"model":"pixel"` first, then the fields in order."""
        return json.dumps({"model": "pixel", **dataclasses.asdict(self)}, separators=(",", ":"))


AnyConfig = Union[FeatureConfig, PixelConfig]


def _from_dict(cls, d: Dict) -> AnyConfig:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"slotforge.config ({cls.model} model): unknown field(s) {unknown}")
    kw = {}
    for f in fields(cls):
        if f.name not in d:
            if f.name == "encoder_pos":  # absent in older checkpoints: off
                continue
            raise ValueError(f"slotforge.config ({cls.model} model): missing field `{f.name}`")
        v = d[f.name]
        if f.name == "eps":
            v = float(v)
        elif f.name == "encoder_pos":
            if not isinstance(v, bool):
                raise ValueError(f"slotforge.config: encoder_pos must be true or false (got {v!r})")
        elif not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"slotforge.config: {f.name} must be a non-negative integer (got {v!r})")
        kw[f.name] = v
    return cls(**kw)


def config_from_json(text: str) -> AnyConfig:
    """Parse `slotforge.config` (`AnyConfig::from_json`): `"model": "pixel"` is the pixel
    model; no `model` field or `"model": "feature"` the feature model."""
    d = json.loads(text)
    if not isinstance(d, dict):
        raise ValueError("slotforge.config is not a JSON object")
    kind = d.pop("model", None)
    if kind is None or kind == "feature":
        cfg = _from_dict(FeatureConfig, d)
    elif kind == "pixel":
        cfg = _from_dict(PixelConfig, d)
    else:
        raise ValueError(f'slotforge.config: unknown model {kind!r} (expected "feature" or "pixel")')
    cfg.validate()
    return cfg
