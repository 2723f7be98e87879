#!/usr/bin/env python3
"""Spectral vs random slot init: token FG-ARI against epoch, several seeds per arm.

Runs `slotforge train` once per (arm, seed) on the same data and budget, then prints a
markdown table (mean over seeds per epoch) and writes runs/compare-init/compare_init.json
and the curves as runs/compare-init/token_fg_ari.png (one colour per arm, one line per seed).

    python3 scripts/compare_init.py [--config configs/quick.toml] [--seeds 0 1 2]
                                    [--minutes 3] [--epochs 6] [--budget-minutes M] [--rerun]
Arms: random (learned mu + sigma noise), spectral (segment-mean init, no guidance),
spectral+guide (the default run: spectral init and mask guidance).

Runs too long for one sitting (clevr10-features: ~3 h each here) go in chunks: with
--budget-minutes the script stops when the budget is spent, and the next call resumes each
unfinished run from its checkpoint (`--resume` continues a run bit-exactly, even from a
mid-epoch stop). Runs go seed by seed (every arm of seed 0 first), arms in --arms order.
With --keep DIR each run's checkpoint and metrics are also copied to DIR/<arm>-seed<seed>/
when it stops, and restored from there when the run directory is gone (a lost disk), so a
committed DIR carries a run across machines.
"""
import time
import argparse, json, os, shutil, subprocess, sys

def resumable(run):
    """A run directory with a committed checkpoint (its `last` pointer)."""
    return os.path.exists(os.path.join(run, "last"))


def copy_run(src, dst):
    """Copy a whole run directory through a temporary sibling renamed into place: never half
    a run."""
    if not resumable(src):
        return False
    tmp = dst.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, symlinks=True, ignore=shutil.ignore_patterns(".lock", "*.tmp"))
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return True

ARMS = {
    "random": ["use-spectral = false", "guide-weight = 0.0"],
    "spectral": ["use-spectral = true", "guide-weight = 0.0"],
    "spectral+guide": ["use-spectral = true", "guide-weight = 1.0"],
}

ap = argparse.ArgumentParser()
ap.add_argument("--config", default="configs/quick.toml")
ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
ap.add_argument("--minutes", type=float, default=3.0)
ap.add_argument("--epochs", type=int, default=6)
ap.add_argument("--out", default="runs/compare-init")
ap.add_argument("--bin", default="target/release/slotforge")
ap.add_argument("--rerun", action="store_true", help="train again from scratch even where a run exists")
ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="which arms, in this order")
ap.add_argument("--budget-minutes", type=float, default=0.0, help="stop after this much training in all (0 = none)")
ap.add_argument("--keep", help="copy each run's checkpoint and metrics here when it stops; restore from here when the run is gone")
a = ap.parse_args()

base = [l for l in open(a.config).read().splitlines()
        if not l.split("=")[0].strip() in ("use-spectral", "guide-weight", "epochs", "seed", "out", "time-limit-minutes")]
os.makedirs(a.out, exist_ok=True)
results = {}
started = time.time()
for seed in a.seeds:
    for arm in a.arms:
        keys = ARMS[arm]
        run = os.path.join(a.out, f"{arm}-seed{seed}")
        metrics = os.path.join(run, "metrics.jsonl")
        kept = os.path.join(a.keep, f"{arm}-seed{seed}") if a.keep else None
        if kept and not a.rerun and not resumable(run) and copy_run(kept, run):
            print(f"== {arm} seed {seed}: restored from {kept}", file=sys.stderr, flush=True)
        def epochs_done():
            if not os.path.exists(metrics):
                return []
            return [json.loads(l) for l in open(metrics) if '"type":"epoch"' in l]
        left = a.minutes
        if a.budget_minutes > 0:
            spent = (time.time() - started) / 60
            left = a.budget_minutes - spent if left <= 0 else min(left, a.budget_minutes - spent)
        try:
            # a run with at least this many epochs is reused: the first E epochs of a longer
            # run are the E-epoch run (the schedule does not depend on the total)
            if (len(epochs_done()) < a.epochs or a.rerun) and (a.budget_minutes <= 0 or left > 0.5):
                resume = resumable(run) and not a.rerun
                cfg = os.path.join(a.out, f"{arm}-seed{seed}.toml")
                with open(cfg, "w") as f:
                    f.write("\n".join(base + keys + [f"epochs = {a.epochs}", f"seed = {seed}",
                            f"time-limit-minutes = {max(left, 0)}", f'out = "{run}"']) + "\n")
                print(f"== {arm} seed {seed}" + (f": resuming after epoch {len(epochs_done())}" if resume else ""),
                      file=sys.stderr, flush=True)
                # a resumed run keeps its settings; only its length and time limit change
                if resume:
                    cmd = [a.bin, "train", "--resume", run, "--epochs", str(a.epochs), "--time-limit-minutes", str(max(left, 0))]
                else:
                    cmd = [a.bin, "train", "--config", cfg, "--overwrite"]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            else:
                print(f"== {arm} seed {seed}: {len(epochs_done())} epochs in {metrics}", file=sys.stderr, flush=True)
        finally:
            # also after a guard stop (its checkpoint is the last good one) or a run trained elsewhere
            if kept and copy_run(run, kept):
                print(f"== {arm} seed {seed}: kept in {kept}", file=sys.stderr, flush=True)
        epochs = epochs_done()[:a.epochs]
        results.setdefault(arm, {})[seed] = [(e["epoch"], e["step"], e["token_fg_ari"]) for e in epochs]

json.dump(results, open(os.path.join(a.out, "compare_init.json"), "w"), indent=1)
n = max(len(v) for r in results.values() for v in r.values())
print("| epoch | " + " | ".join(f"{arm} (mean, per seed)" for arm in a.arms) + " |")
print("|---|" + "---|" * len(a.arms))
for i in range(n):
    cells = []
    for arm in a.arms:
        vals = [v[i][2] for v in results.get(arm, {}).values() if len(v) > i]
        per = "/".join(f"{x:.2f}" for x in vals)
        cells.append(f"{sum(vals) / len(vals):.3f} ({per})" if vals else "")
    print(f"| {i + 1} | " + " | ".join(cells) + " |")

# the same curves as a picture: one colour per arm, one line per seed
runs = [f"{arm}={os.path.join(a.out, f'{arm}-seed{seed}')}" for arm in a.arms for seed, v in results.get(arm, {}).items() if v]
if runs:
    png = os.path.join(a.out, "token_fg_ari.png")
    subprocess.run([a.bin, "plot", *runs, "--metric", "token_fg_ari", "--out", png], check=True, stdout=subprocess.DEVNULL)
    print(f"\nwrote {png}", file=sys.stderr)
