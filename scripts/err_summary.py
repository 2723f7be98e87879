#!/usr/bin/env python3
"""Summarize the ERR/REF lines of a test log (target/test-output.log or stdin):
the largest GPU-vs-CPU and finite-difference relative errors per op, and the largest
error per PyTorch reference tensor per backend."""
import re, sys
from collections import defaultdict

text = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read()
ops = defaultdict(lambda: [0.0, 0.0, 0])
for m in re.finditer(r"^ERR op=(\S+).*?gpu_vs_cpu_rel=([\d.e+-]+)(?:.*?fd_vs_cpu_rel=([\d.e+-]+))?", text, re.M):
    name = m.group(1).split("(")[0]
    o = ops[name]
    o[0] = max(o[0], float(m.group(2)))
    if m.group(3):
        o[1] = max(o[1], float(m.group(3)))
    o[2] += 1
print(f"{'op':24} {'cases':>5} {'gpu_vs_cpu':>11} {'fd_vs_cpu':>10}")
for k in sorted(ops):
    g, f, n = ops[k]
    print(f"{k:24} {n:5} {g:11.2e} {f:10.2e}")
refs = defaultdict(float)
for m in re.finditer(r"^REF (\S+) backend=(.*?) (\S+): max_rel_err=([\d.e+-]+)", text, re.M):
    key = (m.group(2).split(" (")[0], m.group(3))
    refs[key] = max(refs[key], float(m.group(4)))
if refs:
    print("\nreference tensor, largest error relative to the tensor's scale (files a and b):")
    for (backend, t), e in sorted(refs.items()):
        print(f"  {backend:10} {t:45} {e:.2e}")
