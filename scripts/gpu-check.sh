#!/usr/bin/env bash
# The GPU check in one command. On a machine with a GPU: runs the GPU tests on it (the
# tests take the best adapter: discrete, integrated, then CPU emulation), then `bench step`
# and `bench kernels` on wgpu beside the CPU backend, and PyTorch's step on CUDA or MPS
# (and its CPU) where torch is installed; writes everything as one JSON file.
#
#   bash scripts/gpu-check.sh [OUT.json]          default target/gpu-check.json
#   SMALL=1 bash scripts/gpu-check.sh             short runs (how it is tested on lavapipe)
#   TESTS=matmul bash scripts/gpu-check.sh        only the tests whose names contain "matmul"
#
# The wgpu device is `auto` (a real GPU) when there is one, else Vulkan (lavapipe), so the
# script also runs, slowly and on small sizes, on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-target/gpu-check.json}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
mkdir -p "$(dirname "$OUT")" target

if [ "${SMALL:-0}" = 1 ]; then STEPS=1; BATCH=2; else STEPS=5; BATCH=16; fi

cargo build --release --bin slotforge
BIN=target/release/slotforge
"$BIN" devices > "$WORK/devices.txt"
if grep -Eq 'DiscreteGpu|IntegratedGpu|VirtualGpu' "$WORK/devices.txt"; then GPU=auto; else GPU=vulkan; fi

# 1. the GPU tests: every op and the model on the adapter, against the CPU backend
set +e
cargo test --workspace -- --nocapture ${TESTS:-} > "$WORK/tests.log" 2>&1
TESTS_RC=$?
set -e
grep -E '^GPU tests run on' "$WORK/tests.log" | head -1 > "$WORK/adapter.txt" || true
grep -E '^test result' "$WORK/tests.log" > "$WORK/results.txt" || true
grep -E '^ERR ' "$WORK/tests.log" > "$WORK/errs.txt" || true

# 2. benchmarks, wgpu beside the CPU backend: JSON lines on stdout
bench() { "$BIN" bench "$@" 2>>"$WORK/bench.stderr" | grep '^{' || true; }
bench step --device "$GPU" --steps "$STEPS" --batch "$BATCH" > "$WORK/step_wgpu.jsonl"
bench step --device cpu --steps "$STEPS" --batch "$BATCH" > "$WORK/step_cpu.jsonl"
bench kernels --device "$GPU" > "$WORK/kernels_wgpu.jsonl"
if [ "${SMALL:-0}" != 1 ]; then bench kernels --device cpu > "$WORK/kernels_cpu.jsonl"; else : > "$WORK/kernels_cpu.jsonl"; fi

# 3. PyTorch where present: CUDA or MPS, and its CPU
: > "$WORK/torch.jsonl"
if python3 -c 'import torch' 2>/dev/null; then
    for dev in $(python3 -c 'import torch; print(" ".join(["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if torch.backends.mps.is_available() else [])))'); do
        python3 benches/torch_step.py --steps "$STEPS" --batch "$BATCH" --device "$dev" >> "$WORK/torch.jsonl" || true
    done
fi

python3 - "$WORK" "$OUT" "$TESTS_RC" "$GPU" <<'PY'
import json, pathlib, platform, sys
work, out, rc, gpu = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
lines = lambda f: [json.loads(l) for l in (work / f).read_text().splitlines() if l.startswith("{")]
text = lambda f: (work / f).read_text().strip()
passed = failed = 0
for l in text("results.txt").splitlines():
    w = l.replace(";", "").split()
    passed += int(w[w.index("passed") - 1]); failed += int(w[w.index("failed") - 1])
report = {
    "host": platform.node(), "machine": platform.machine(), "wgpu_device": gpu,
    "adapters": text("devices.txt").splitlines(),
    "tests": {"exit_code": rc, "adapter": text("adapter.txt").replace("GPU tests run on: ", ""), "passed": passed, "failed": failed,
              "err_lines": text("errs.txt").splitlines()},
    "bench_step": {"wgpu": lines("step_wgpu.jsonl"), "cpu": lines("step_cpu.jsonl"), "pytorch": lines("torch.jsonl")},
    "bench_kernels": {"wgpu": lines("kernels_wgpu.jsonl"), "cpu": lines("kernels_cpu.jsonl")},
}
pathlib.Path(out).write_text(json.dumps(report, indent=1) + "\n")
print(f"gpu-check: tests {passed} passed, {failed} failed on {report['tests']['adapter'] or 'no adapter'}; "
      f"{len(report['bench_kernels']['wgpu'])} kernel rows; written to {out}")
PY
exit "$TESTS_RC"
