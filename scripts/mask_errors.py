#!/usr/bin/env python3
"""Where a feature model's masks go wrong: foreground token errors of the decoder's masks
(alpha) and of the last iteration's attention, by how much of its patch the majority label
covers, which slot takes the wrongly assigned tokens, and how many objects share their slot
with another object (merges, which the token count does not see and FG-ARI punishes most).

    slotforge infer --checkpoint CKPT --features DATA/features.npy --out OUT.safetensors
    python3 scripts/mask_errors.py OUT.safetensors DATA/masks.npy

A token is wrong when its slot (argmax over slots) is not the slot that takes most of its
object's tokens: the token-level view of FG-ARI's errors. Needs numpy only.
"""
import json, struct, sys

import numpy as np


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        assert v["dtype"] == "F32", f"{path}: {name} is {v['dtype']}, expected F32"
        s, e = v["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + s:8 + n + e], dtype=np.float32).reshape(v["shape"])
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pred = load_safetensors(sys.argv[1])
    masks = np.load(sys.argv[2])
    alpha, attn = pred["alpha"], pred["attn"]  # [S, K, N], [S, N, K]
    s, k, n = alpha.shape
    side = int(round(n ** 0.5))
    if masks.shape[0] != s or side * side != n or masks.shape[1] % side or masks.shape[2] % side:
        sys.exit(f"masks {masks.shape} do not match {s} scenes on a {side}x{side} token grid")
    ph, pw = masks.shape[1] // side, masks.shape[2] // side
    patches = masks.reshape(s, side, ph, side, pw).transpose(0, 1, 3, 2, 4).reshape(s, n, ph * pw)
    labels = int(masks.max()) + 1
    counts = np.stack([(patches == l).sum(-1) for l in range(labels)], -1)  # [S, N, labels]
    token = counts.argmax(-1)  # majority label per patch, as token_fg_ari reduces it
    share = counts.max(-1) / (ph * pw)  # how much of the patch that label covers

    bins = [(0.0, 0.55), (0.55, 0.70), (0.70, 0.85), (0.85, 1.0), (1.0, 1.01)]
    print(f"{s} scenes, {k} slots, {side}x{side} tokens; foreground tokens wrong, by majority share of the patch")
    print("| masks | " + " | ".join(f"[{lo:.2f}, {min(hi, 1):.2f}{']' if hi > 1 else ')'}" for lo, hi in bins)
          + " | all | wrong token went to: another object's slot / the background's / a spare slot | objects merged |")
    print("|---|" + "---|" * (len(bins) + 3))
    for name, slot_of in [("decoder (alpha)", lambda i: alpha[i].argmax(0)), ("attention", lambda i: attn[i].argmax(1))]:
        wrong, shares, went = [], [], {"object": 0, "background": 0, "spare": 0}
        merged, objects = 0, 0
        for i in range(s):
            slot, t = slot_of(i), token[i]
            owner = {o: np.bincount(slot[t == o], minlength=k).argmax() for o in np.unique(t)}
            owned = {v: o for o, v in owner.items()}
            fg_slots = [owner[o] for o in owner if o > 0]
            objects += len(fg_slots)
            merged += sum(fg_slots.count(v) > 1 for v in fg_slots)
            for j in np.flatnonzero(t > 0):
                bad = slot[j] != owner[t[j]]
                wrong.append(bad)
                shares.append(share[i, j])
                if bad:
                    o = owned.get(slot[j])
                    went["spare" if o is None else "background" if o == 0 else "object"] += 1
        wrong, shares = np.array(wrong), np.array(shares)
        cells = []
        for lo, hi in bins:
            sel = (shares >= lo) & (shares < hi)
            cells.append(f"{wrong[sel].mean():.3f} (n={sel.sum()})" if sel.any() else "-")
        total = max(wrong.sum(), 1)
        print(f"| {name} | " + " | ".join(cells) + f" | {wrong.mean():.3f} | "
              + " / ".join(f"{went[w] / total:.2f}" for w in ("object", "background", "spare"))
              + f" | {merged / max(objects, 1):.3f} ({merged} of {objects}) |")


if __name__ == "__main__":
    main()
