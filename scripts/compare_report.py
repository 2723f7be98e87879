#!/usr/bin/env python3
"""The figures docs/experiments/spectral-vs-random-clevr10.md quotes for a spectral-vs-random comparison, from metrics files.

    python3 scripts/compare_report.py RANDOM_RUN SPECTRAL_RUN [--from-epoch 20] [--from-step 300]

Each RUN is a run directory (or its metrics.jsonl). Per run: the last epoch's scores, the
token FG-ARI range from --from-epoch on, the first epoch at >= 0.9, active slots and mask
overlap over logged steps from --from-step on, the smallest value of every loss term (a
negative one would have stopped training), stops, and minutes per epoch. Then whether the
second run is ahead of the first at every shared epoch from 6 on.
"""
import argparse, json, os, statistics

ap = argparse.ArgumentParser()
ap.add_argument("runs", nargs=2, help="the random-init run, then the spectral one")
ap.add_argument("--from-epoch", type=int, default=20)
ap.add_argument("--from-step", type=int, default=300)
a = ap.parse_args()

SCORES = ["token_fg_ari", "attn_token_fg_ari", "fg_ari", "mbo"]
TERMS = ["total", "recon", "diversity", "guide"]


def load(run):
    path = os.path.join(run, "metrics.jsonl") if os.path.isdir(run) else run
    lines = [json.loads(l) for l in open(path) if l.strip()]
    return {t: [l for l in lines if l["type"] == t] for t in ("epoch", "step", "stop")}


def span(values):
    return f"{min(values):.3f}-{max(values):.3f}" if values else "none"


runs = [load(r) for r in a.runs]
for name, m in zip(a.runs, runs):
    ep, st = m["epoch"], m["step"]
    print(f"== {name}")
    if ep:
        last = ep[-1]
        print(f"last epoch {last['epoch']} (step {last['step']}): " + ", ".join(f"{k} {last[k]:.3f}" for k in SCORES if k in last))
        late = [e["token_fg_ari"] for e in ep if e["epoch"] >= a.from_epoch]
        print(f"token_fg_ari over epochs {a.from_epoch}-{last['epoch']}: {span(late)}")
        first = next((e for e in ep if e["token_fg_ari"] >= 0.9), None)
        print("first epoch at >= 0.9: " + (f"{first['epoch']} (step {first['step']})" if first else "never"))
        # "seconds" counts every sitting only in runs logged after it was carried in checkpoints
        gaps = [b["seconds"] - x["seconds"] for x, b in zip(ep, ep[1:]) if b["seconds"] > x["seconds"]]
        if gaps:
            print(f"minutes per epoch: median {statistics.median(gaps) / 60:.2f}, range {min(gaps) / 60:.2f}-{max(gaps) / 60:.2f}")
    late = [s for s in st if s["step"] >= a.from_step]
    if late:
        print(f"steps {late[0]['step']}-{late[-1]['step']}: active slots {span([s['active_slots'] for s in late])}, "
              f"mask overlap {span([s['mask_overlap'] for s in late])}")
    print("smallest loss terms over every logged step: " + ", ".join(f"{t} {min(s[t] for s in st):.3g}" for t in TERMS if st))
    for s in m["stop"]:
        print(f"stop inside epoch {s['epoch']} at step {s['step']}")

(rnd, spec) = (r["epoch"] for r in runs)
# paired by epoch number, not position: the two files need not start or end together
spec_at = {y["epoch"]: y for y in spec}
shared = [(x, spec_at[x["epoch"]]) for x in rnd if x["epoch"] >= 6 and x["epoch"] in spec_at]
ahead = all(y["token_fg_ari"] > x["token_fg_ari"] for x, y in shared)
print(f"== second ahead of first at every shared epoch from 6: {ahead} ({len(shared)} epochs"
      + (f", 6-{shared[-1][0]['epoch']})" if shared else ")"))
