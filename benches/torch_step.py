#!/usr/bin/env python3
"""PyTorch baseline of slotforge's step benchmark: the same feature model (docs/architecture.md),
the same reference scale (N=256, F=768, D=128, K=11, T=3, slot MLP 512, decoder 3 x 512,
batch 16), one full training step (forward, backward, Adam) on the CPU with as many
threads as cores, or on CUDA / MPS with --device. Prints one JSON line like
`slotforge bench step`.

    pip install torch
    python3 benches/torch_step.py [--steps 5] [--batch 16] [--device cpu|cuda|mps]
"""
import argparse, json, os, resource, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class SlotAttention(nn.Module):
    def __init__(s, d, k, iters, hidden, eps=1e-8):
        super().__init__()
        s.k, s.iters, s.eps, s.scale = k, iters, eps, d ** -0.5
        s.slots_mu = nn.Parameter(torch.randn(1, 1, d))
        s.slots_log_sigma = nn.Parameter(torch.zeros(1, 1, d))
        s.norm_inputs, s.norm_slots, s.norm_mlp = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        s.to_q, s.to_k, s.to_v = (nn.Linear(d, d, bias=False) for _ in range(3))
        s.gru = nn.GRUCell(d, d)
        s.mlp = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def forward(s, x, noise):
        b, n, d = x.shape
        slots = s.slots_mu + s.slots_log_sigma.exp() * noise
        x = s.norm_inputs(x)
        k, v = s.to_k(x), s.to_v(x)
        for _ in range(s.iters):
            prev = slots
            q = s.to_q(s.norm_slots(slots)) * s.scale
            attn = torch.einsum("bnd,bkd->bnk", k, q).softmax(dim=-1)
            w = (attn + s.eps) / (attn + s.eps).sum(dim=1, keepdim=True)
            updates = torch.einsum("bnk,bnd->bkd", w, v)
            slots = s.gru(updates.reshape(-1, d), prev.reshape(-1, d)).reshape(b, -1, d)
            slots = slots + s.mlp(s.norm_mlp(slots))
        return slots, attn


class FeatureModel(nn.Module):
    def __init__(s, n=256, f=768, d=128, k=11, iters=3, hidden=512, dec_hidden=512, dec_layers=3):
        super().__init__()
        s.k = k
        s.encoder_norm = nn.LayerNorm(f)
        s.encoder = nn.Sequential(nn.Linear(f, d), nn.ReLU(), nn.Linear(d, d))
        s.slot_attention = SlotAttention(d, k, iters, hidden)
        s.decoder_pos = nn.Parameter(torch.randn(1, 1, n, d) * 0.02)
        layers, din = [], d
        for _ in range(dec_layers):
            layers += [nn.Linear(din, dec_hidden), nn.ReLU()]
            din = dec_hidden
        layers.append(nn.Linear(din, f + 1))
        s.decoder = nn.Sequential(*layers)

    def forward(s, feats, noise, w_div):
        enc = s.encoder(s.encoder_norm(feats))
        slots, attn = s.slot_attention(enc, noise)
        out = s.decoder(slots.unsqueeze(2) + s.decoder_pos)  # [B, K, N, F+1]
        alpha = out[..., -1].softmax(dim=1)
        recon = (alpha.unsqueeze(-1) * out[..., :-1]).sum(dim=1)
        mse = F.mse_loss(recon, feats)
        sn = F.normalize(slots, dim=-1)
        cos = sn @ sn.transpose(1, 2)
        k = s.k
        off = ~torch.eye(k, dtype=torch.bool, device=cos.device)
        div = cos[:, off].clamp(min=0).mean()
        return mse + w_div * div


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    m = FeatureModel().to(dev)
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    feats = torch.randn(a.batch, 256, 768, device=dev)
    noise = torch.randn(a.batch, 11, 128, device=dev)
    sync = {"cuda": lambda: torch.cuda.synchronize(), "mps": lambda: torch.mps.synchronize()}.get(a.device, lambda: None)
    times = []
    for i in range(a.steps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = m(feats, noise, 1e-4)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        sync()  # the step is complete when the device is idle
        if i > 0:
            times.append(time.perf_counter() - t)
    times.sort()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"bench": "step", "device": f"pytorch {torch.__version__} {a.device}", "batch": a.batch,
                      "steps": a.steps, "median_s": times[len(times) // 2], "min_s": times[0],
                      "peak_rss_mib": peak, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
