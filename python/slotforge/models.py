"""slotforge's two models as `torch.nn.Module`s: the parameter names and shapes of a slotforge
checkpoint (so `load_state_dict(strict=True)` takes one as it is) and the function the Rust
models compute (src/model/feature.rs, pixel.rs, slot_attention.rs):

Slot Attention (both models), inputs [B, N, D]:
    slots_0 = mu + exp(log_sigma) * (noise + LN(S^T inputs))     (S = 0 unless spectral init;
              LN without affine, eps 1e-5; LN(0) = 0, so S = 0 is the plain reparameterized init)
    x = LN(inputs);  k = x Wk^T;  v = x Wv^T
    T times:  q = LN(slots) Wq^T / sqrt(D);  attn = softmax over slots of k q^T     [B, N, K]
              w = (attn + eps) / sum_N (attn + eps);  slots = GRUCell(w^T v, slots)
              slots = slots + MLP(LN(slots))
    attn is the last iteration's.  Every LayerNorm has eps 1e-5 (PyTorch's default).

Feature model, features [B, N, F]:
    enc = Linear(ReLU(Linear(LN(features))))  (+ encoder_pos [1, N, D] if configured)
    decoder per slot and token: MLP(slot + decoder_pos) -> F values + 1 alpha logit
    alpha = softmax over slots of the logits [B, K, N];  recon = sum_k alpha_k values_k [B, N, F]

Pixel model, images [B, H, W, 3] (uint8, or float already scaled to [-1, 1] as 2 v / 255 - 1):
    x = enc_layers x ReLU(conv "same")  + Linear(grid);  inputs = MLP(LN(x)) [B, N = H W, D]
    decoder: per slot ReLU(conv(slot + Linear(grid))), dec_layers - 1 more ReLU(conv), conv to 4
    alpha = softmax over slots of channel 3 [B, K, N];  recon = sum_k alpha_k rgb_k [B, N, 3]
    grid: (row, column, 1 - row, 1 - column), each i / (n - 1) in float32 (0 if n == 1).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import FeatureConfig, PixelConfig

LN_EPS = 1e-5
COS_EPS = 1e-8


class Output(NamedTuple):
    slots: torch.Tensor  # [B, K, D]
    attn: torch.Tensor  # [B, N, K], the last iteration's attention (softmax over slots)
    alpha: torch.Tensor  # [B, K, N], the decoder's masks (softmax over slots)
    recon: torch.Tensor  # [B, N, F] (feature model) or [B, N, 3] (pixel model, at [-1, 1])
    init_slots: torch.Tensor  # [B, K, D], the slots entering Slot Attention


class MLP(nn.Module):
    """Linear layers as `layers.{i}` with ReLU between them (not after the last)."""

    def __init__(self, sizes):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = F.relu(x)
        return x


class SoftPosition(nn.Module):
    """The pixel model's soft position embedding: `dense` Linear(4, C) of the coordinate grid."""

    def __init__(self, channels: int):
        super().__init__()
        self.dense = nn.Linear(4, channels)

    def forward(self, grid):
        return self.dense(grid)


class SlotAttention(nn.Module):
    """Locatello et al.'s Slot Attention with slotforge's parameter names (`slot_attention.*`)."""

    def __init__(self, slot_dim: int, num_slots: int, iters: int, mlp_hidden: int, eps: float = 1e-8):
        super().__init__()
        d = slot_dim
        self.num_slots, self.iters, self.eps = num_slots, iters, eps
        self.slots_mu = nn.Parameter(torch.zeros(1, 1, d))
        self.slots_log_sigma = nn.Parameter(torch.zeros(1, 1, d))
        self.norm_inputs, self.norm_slots, self.norm_mlp = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.to_q = nn.Linear(d, d, bias=False)
        self.to_k = nn.Linear(d, d, bias=False)
        self.to_v = nn.Linear(d, d, bias=False)
        self.gru = nn.GRUCell(d, d)
        self.mlp = MLP([d, mlp_hidden, d])

    def init_slots(self, inputs, noise, spectral_weights=None):
        """`mu + exp(log_sigma) * (noise + LN(S^T inputs))`; S = None is S = 0."""
        z = noise
        if spectral_weights is not None:
            seg_means = spectral_weights.to(inputs.dtype).transpose(1, 2) @ inputs  # [B, K, D]
            z = z + F.layer_norm(seg_means, seg_means.shape[-1:], eps=LN_EPS)
        return self.slots_mu + self.slots_log_sigma.exp() * z

    def forward(self, inputs, slots):
        """`iters` rounds over inputs [B, N, D] from slots [B, K, D] -> (slots, attn [B, N, K])."""
        b, k, d = slots.shape
        x = self.norm_inputs(inputs)
        keys, values = self.to_k(x), self.to_v(x)
        attn = None
        for _ in range(self.iters):
            q = self.to_q(self.norm_slots(slots)) * (d ** -0.5)
            attn = (keys @ q.transpose(1, 2)).softmax(dim=2)  # over slots: slots compete for tokens
            w = attn + self.eps
            w = w / w.sum(dim=1, keepdim=True)  # weighted mean over tokens
            updates = w.transpose(1, 2) @ values  # [B, K, D]
            slots = self.gru(updates.reshape(b * k, d), slots.reshape(b * k, d)).reshape(b, k, d)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn

    def reset_parameters(self, generator: Optional[torch.Generator] = None) -> None:
        """slotforge's init (src/model/init.rs): mu and log_sigma Xavier-uniform
        U(+-sqrt(6 / (1 + D))), the GRU U(+-1/sqrt(D)), Linear U(+-1/sqrt(fan_in)), LN (1, 0)."""
        d = self.slots_mu.shape[-1]
        with torch.no_grad():
            for p in (self.slots_mu, self.slots_log_sigma):
                _uniform(p, math.sqrt(6.0 / (1 + d)), generator)
            for p in self.gru.parameters():
                _uniform(p, 1.0 / math.sqrt(d), generator)
            for m in (self.to_q, self.to_k, self.to_v, *self.mlp.layers):
                _reset_linear(m, generator)
            for m in (self.norm_inputs, self.norm_slots, self.norm_mlp):
                m.reset_parameters()


def _uniform(p: torch.Tensor, bound: float, generator) -> None:
    p.copy_((torch.rand(p.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)


def _reset_linear(m: nn.Module, generator) -> None:
    """PyTorch's default Linear / Conv2d init, U(+-1/sqrt(fan_in)) for weight and bias."""
    fan_in = m.weight[0].numel()
    bound = 1.0 / math.sqrt(fan_in)
    _uniform(m.weight, bound, generator)
    if getattr(m, "bias", None) is not None:
        _uniform(m.bias, bound, generator)


def sincos_positions(n: int, d: int) -> torch.Tensor:
    """slotforge's `sincos_positions` [N, D]: 2-D sine-cosine embedding of the token grid
    (square N; else of the token index), the init of `decoder_pos` / `encoder_pos`."""
    side = round(math.sqrt(n))
    h, w = (side, side) if side * side == n else (1, n)
    half = d // 2
    out = torch.zeros(n, d, dtype=torch.float64)
    for t in range(n):
        coords = (t // w, t % w)
        for a, c in enumerate(coords):
            if h == 1:
                if a == 0:
                    continue
                start, length = 0, d
            else:
                start, length = (0, half) if a == 0 else (half, d - half)
            pairs = length // 2
            for i in range(pairs):
                freq = 1.0 / 10000.0 ** (i / max(pairs, 1))
                out[t, start + 2 * i] = math.sin(c * freq)
                out[t, start + 2 * i + 1] = math.cos(c * freq)
    return out.float()


class FeatureModel(nn.Module):
    """slotforge's feature model (DINOSAUR style) over frozen ViT tokens.

    `forward(features [B, N, F] or [B, h, w, F], noise [B, K, D], spectral_weights [B, N, K] = None)` -> Output.
    """

    def __init__(self, cfg: FeatureConfig, spectral: Optional[dict] = None):
        super().__init__()
        cfg.validate()
        self.cfg, self.spectral = cfg, spectral
        f, d, n = cfg.feat_dim, cfg.slot_dim, cfg.n_tokens
        self.encoder_norm = nn.LayerNorm(f)
        self.encoder = MLP([f, d, d])
        self.slot_attention = SlotAttention(d, cfg.num_slots, cfg.iters, cfg.mlp_hidden, cfg.eps)
        if cfg.encoder_pos:
            self.encoder_pos = nn.Parameter(torch.zeros(1, n, d))
        else:
            self.encoder_pos = None
        self.decoder_pos = nn.Parameter(torch.zeros(1, 1, n, d))
        self.decoder = MLP([d] + [cfg.dec_hidden] * cfg.dec_layers + [f + 1])
        self.reset_parameters()

    def reset_parameters(self, generator: Optional[torch.Generator] = None) -> None:
        """slotforge's init for training from scratch (same distributions, PyTorch's RNG)."""
        with torch.no_grad():
            self.encoder_norm.reset_parameters()
            for m in self.encoder.layers:
                _reset_linear(m, generator)
            self.slot_attention.reset_parameters(generator)
            pos = sincos_positions(self.cfg.n_tokens, self.cfg.slot_dim)
            self.decoder_pos.copy_(pos.reshape(self.decoder_pos.shape))
            if self.encoder_pos is not None:
                self.encoder_pos.copy_(pos.reshape(self.encoder_pos.shape))
            for m in self.decoder.layers:
                _reset_linear(m, generator)

    def encode(self, features):
        enc = self.encoder(self.encoder_norm(features))
        if self.encoder_pos is not None:
            enc = enc + self.encoder_pos
        return enc

    def decode(self, slots, per_pair: bool = False):
        """slots [B, K, D] -> (alpha [B, K, N], recon [B, N, F]). Every slot at every token:
        MLP(slot + pos) -> F values and an alpha logit; alpha = softmax over slots; recon =
        sum_k alpha_k values_k. Since the alphas sum to 1, sum_k alpha_k (W h_k + b) =
        W (sum_k alpha_k h_k) + b: slotforge computes the values once per token from the mixed
        last hidden layer (the same function, K times fewer rows in the largest GEMM); so does
        this unless `per_pair` (the textbook decoder: values for every slot and token)."""
        layers = self.decoder.layers
        h = slots.unsqueeze(2) + self.decoder_pos  # [B, K, N, D]
        for layer in layers[:-1]:
            h = F.relu(layer(h))
        last = layers[-1]
        if per_pair:
            out = last(h)  # [B, K, N, F + 1]
            alpha = out[..., -1].softmax(dim=1)
            return alpha, (alpha.unsqueeze(-1) * out[..., :-1]).sum(dim=1)
        logit = F.linear(h, last.weight[-1:], last.bias[-1:]).squeeze(-1)  # [B, K, N]
        alpha = logit.softmax(dim=1)
        mixed = (alpha.unsqueeze(-1) * h).sum(dim=1)  # [B, N, H]
        return alpha, F.linear(mixed, last.weight[:-1], last.bias[:-1])

    def forward(self, features, noise, spectral_weights=None) -> Output:
        if features.dim() == 4:  # [B, h, w, F]: the same tokens in grid layout
            features = features.reshape(features.shape[0], -1, features.shape[-1])
        features = features.to(self.decoder_pos.dtype)
        noise = noise.to(self.decoder_pos.dtype)
        enc = self.encode(features)
        init = self.slot_attention.init_slots(enc, noise, spectral_weights)
        slots, attn = self.slot_attention(enc, init)
        alpha, recon = self.decode(slots)
        return Output(slots, attn, alpha, recon, init)


def position_grid(h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """[1, H, W, 4]: (row, column, 1 - row, 1 - column), each i / (n - 1) computed in float32."""
    def lin(n):
        if n == 1:
            return torch.zeros(1, dtype=torch.float32)
        return torch.arange(n, dtype=torch.float32) / torch.tensor(float(n - 1), dtype=torch.float32)

    r = lin(h)[:, None].expand(h, w)
    c = lin(w)[None, :].expand(h, w)
    return torch.stack([r, c, 1 - r, 1 - c], dim=-1).unsqueeze(0).to(dtype)


def scale_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> the model's input scale [-1, 1]: `2 * (v / 255) - 1` in float32, as slotforge."""
    x = images.to(torch.float32) / 255.0
    return 2.0 * x - 1.0


class PixelModel(nn.Module):
    """slotforge's pixel model (Locatello et al. 2020, object discovery).

    `forward(images [B, H, W, 3], noise [B, K, D], spectral_weights [B, N, K] = None)` -> Output;
    uint8 images are scaled to [-1, 1], float images are taken as already scaled.
    """

    def __init__(self, cfg: PixelConfig, spectral: Optional[dict] = None):
        super().__init__()
        cfg.validate()
        self.cfg, self.spectral = cfg, spectral
        c, d, cd = cfg.enc_channels, cfg.slot_dim, cfg.dec_channels

        def convs(sizes, k):
            return nn.ModuleList(nn.Conv2d(a, b, k, padding=k // 2) for a, b in sizes)

        self.encoder_cnn = nn.Module()
        self.encoder_cnn.layers = convs([(3 if i == 0 else c, c) for i in range(cfg.enc_layers)], cfg.enc_kernel)
        self.encoder_pos = SoftPosition(c)
        self.encoder_norm = nn.LayerNorm(c)
        self.mlp = MLP([c, d, d])
        self.slot_attention = SlotAttention(d, cfg.num_slots, cfg.iters, cfg.mlp_hidden, cfg.eps)
        self.decoder_pos = SoftPosition(d)
        self.decoder_cnn = nn.Module()
        hidden = convs([(d if i == 0 else cd, cd) for i in range(cfg.dec_layers)], cfg.dec_kernel)
        hidden.append(nn.Conv2d(cd, 4, cfg.out_kernel, padding=cfg.out_kernel // 2))
        self.decoder_cnn.layers = hidden
        self.register_buffer("grid", position_grid(cfg.height, cfg.width), persistent=False)
        self.reset_parameters()

    def reset_parameters(self, generator: Optional[torch.Generator] = None) -> None:
        """slotforge's init for training from scratch (same distributions, PyTorch's RNG)."""
        with torch.no_grad():
            for m in (*self.encoder_cnn.layers, self.encoder_pos.dense, *self.mlp.layers,
                      self.decoder_pos.dense, *self.decoder_cnn.layers):
                _reset_linear(m, generator)
            self.encoder_norm.reset_parameters()
            self.slot_attention.reset_parameters(generator)

    def encode(self, x):
        """[B, H, W, 3] at [-1, 1] -> inputs [B, N, D]."""
        b = x.shape[0]
        x = x.permute(0, 3, 1, 2)  # NCHW
        for conv in self.encoder_cnn.layers:
            x = F.relu(conv(x))
        x = x.permute(0, 2, 3, 1) + self.encoder_pos(self.grid.to(x.dtype))  # [B, H, W, C]
        x = x.reshape(b, -1, x.shape[-1])
        return self.mlp(self.encoder_norm(x))

    def decode(self, slots):
        """slots [B, K, D] -> per slot RGB and alpha logit [B, K, N, 4] (spatial broadcast)."""
        b, k, d = slots.shape
        h, w = self.cfg.height, self.cfg.width
        pos = self.decoder_pos(self.grid.to(slots.dtype))  # [1, H, W, D]
        x = slots.reshape(b * k, 1, 1, d) + pos  # [B K, H, W, D]
        x = x.permute(0, 3, 1, 2)
        layers = self.decoder_cnn.layers
        for conv in layers[:-1]:
            x = F.relu(conv(x))
        x = layers[-1](x)  # [B K, 4, H, W]
        return x.permute(0, 2, 3, 1).reshape(b, k, h * w, 4)

    def forward(self, images, noise, spectral_weights=None) -> Output:
        dtype = self.slot_attention.slots_mu.dtype
        x = scale_images(images) if images.dtype == torch.uint8 else images
        x = x.to(dtype)
        inputs = self.encode(x)
        init = self.slot_attention.init_slots(inputs, noise.to(dtype), spectral_weights)
        slots, attn = self.slot_attention(inputs, init)
        decoded = self.decode(slots)
        alpha = decoded[..., 3].softmax(dim=1)  # [B, K, N]
        recon = (alpha.unsqueeze(-1) * decoded[..., :3]).sum(dim=1)  # [B, N, 3]
        return Output(slots, attn, alpha, recon, init)


def build(cfg, spectral: Optional[dict] = None) -> nn.Module:
    """The module of a config: FeatureModel or PixelModel."""
    if isinstance(cfg, FeatureConfig):
        return FeatureModel(cfg, spectral)
    if isinstance(cfg, PixelConfig):
        return PixelModel(cfg, spectral)
    raise TypeError(f"not a slotforge config: {cfg!r}")


class Losses(NamedTuple):
    mse: torch.Tensor
    diversity: torch.Tensor
    total: torch.Tensor


def diversity(slots: torch.Tensor) -> torch.Tensor:
    """mean over scenes and pairs i != j of max(cos(slot_i, slot_j), 0), cos with
    |s_i| |s_j| floored at 1e-8 (slotforge's `pairwise_cosine_mean`, clamped)."""
    b, k, _ = slots.shape
    if k < 2:
        return slots.new_zeros(())
    norm = slots.norm(dim=-1)
    cos = (slots @ slots.transpose(1, 2)) / (norm.unsqueeze(2) * norm.unsqueeze(1)).clamp_min(COS_EPS)
    off = ~torch.eye(k, dtype=torch.bool, device=slots.device)
    return cos[:, off].clamp_min(0).mean()


def losses(out: Output, target: torch.Tensor, diversity_weight: float = 0.0) -> Losses:
    """slotforge's training loss: `mse(recon, target) + w_div * diversity(slots)`. The target
    is the features [B, N, F], or the images at [-1, 1] as [B, N, 3] (`scale_images`)."""
    target = target.reshape(out.recon.shape).to(out.recon.dtype)
    mse = F.mse_loss(out.recon, target)
    div = diversity(out.slots)
    return Losses(mse, div, mse + diversity_weight * div)
