#!/usr/bin/env python3
"""PyTorch baseline of slotforge's step benchmark: the same feature model (the `slotforge`
Python package's FeatureModel: slotforge's parameter names, so a checkpoint loads with
strict=True), the same reference scale (N=256, F=768, D=128, K=11, T=3, slot MLP 512,
decoder 3 x 512, batch 16), one full training step (forward, backward, clipped Adam) on the
CPU with as many threads as cores, or on CUDA / MPS with --device. Prints one JSON line like
`slotforge bench step`.

    pip install ./python        # the slotforge package (torch, numpy, safetensors)
    python3 benches/torch_step.py [--steps 5] [--batch 16] [--device cpu|cuda|mps] [--decoder per-pair|mixed] [--checkpoint C]

--decoder per-pair (default, the baseline of docs/experiments/speed.md): the textbook decoder, values
for every (slot, token) pair. --decoder mixed: slotforge's exact rewrite, the values once per
token from the alpha-mixed hidden layer. --checkpoint: time the model of a slotforge feature
checkpoint instead of the reference sizes.
"""
import argparse, json, os, resource, sys, time

import torch

try:
    import slotforge as sf
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import slotforge as sf

REFERENCE = sf.FeatureConfig(n_tokens=256, feat_dim=768, slot_dim=128, num_slots=11, iters=3,
                             mlp_hidden=512, dec_hidden=512, dec_layers=3, encoder_pos=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--decoder", choices=["per-pair", "mixed"], default="per-pair")
    ap.add_argument("--checkpoint", help="a slotforge feature checkpoint whose model to time")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = sf.load(a.checkpoint) if a.checkpoint else sf.FeatureModel(REFERENCE)
    if not isinstance(m, sf.FeatureModel):
        sys.exit(f"{a.checkpoint}: not a feature-model checkpoint")
    cfg = m.cfg
    m = m.to(dev)
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    feats = torch.randn(a.batch, cfg.n_tokens, cfg.feat_dim, device=dev)
    noise = torch.randn(a.batch, cfg.num_slots, cfg.slot_dim, device=dev)
    # the step is complete when the device is idle
    sync = {"cuda": lambda: torch.cuda.synchronize(), "mps": lambda: torch.mps.synchronize()}.get(a.device, lambda: None)
    per_pair = a.decoder == "per-pair"

    def loss_fn():
        enc = m.encode(feats)
        slots, _ = m.slot_attention(enc, m.slot_attention.init_slots(enc, noise))
        alpha, recon = m.decode(slots, per_pair=per_pair)
        out = sf.Output(slots, None, alpha, recon, None)
        return sf.losses(out, feats, 1e-4).total

    times = []
    for i in range(a.steps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        sync()
        if i > 0:
            times.append(time.perf_counter() - t)
    times.sort()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"bench": "step", "device": f"pytorch {torch.__version__} {a.device}", "decoder": a.decoder,
                      "batch": a.batch, "steps": a.steps, "median_s": times[len(times) // 2], "min_s": times[0],
                      "peak_rss_mib": peak, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
