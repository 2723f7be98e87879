"""Shared fixtures: the slotforge binary, tiny run configs, and runs trained once per session.

The binary is $SLOTFORGE_BIN, else <repo>/target/release/slotforge, built with
`cargo build --release` when missing. Every test that compares PyTorch with slotforge records
its errors; the session ends with a table of them (also written to
<repo>/target/python-test-errors.json).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
ERRORS = []  # (test, tensor, rel_err, abs_err, note)

# Model sizes of the tiny runs (the brief's "trains in a second" config).
FEATURE_BASE = """
synthetic = "clevr-features"
train-count = 40
val-count = 8
feat-dim = 32
num-slots = 4
slot-dim = 32
mlp-hidden = 32
dec-hidden = 32
dec-layers = 2
iters = 3
batch-size = 8
epochs = 1
warmup-epochs = 0.0
learning-rate = 1e-3
decay-half-life = 0
log-every = 1
"""
FEATURE_RANDOM = FEATURE_BASE + """
encoder-pos = false
use-spectral = false
guide-weight = 0.0
"""
FEATURE_SPECTRAL = FEATURE_BASE + """
encoder-pos = true
use-spectral = true
guide-weight = 1.0
"""
PIXEL = """
synthetic = "tetrominoes"
train-count = 16
val-count = 8
num-slots = 4
slot-dim = 16
mlp-hidden = 16
iters = 3
use-spectral = false
guide-weight = 0.0
enc-channels = 8
enc-layers = 2
enc-kernel = 5
dec-channels = 8
dec-conv-layers = 2
dec-kernel = 3
batch-size = 8
epochs = 1
warmup-epochs = 0.0
learning-rate = 1e-3
decay-half-life = 0
log-every = 1
"""


def rel_err(got: torch.Tensor, want: torch.Tensor) -> tuple:
    """(max |got - want| / max |want|, max |got - want|): the error relative to the tensor's scale."""
    got, want = got.double(), want.double()
    diff = (got - want).abs().max().item()
    return diff / max(want.abs().max().item(), 1e-30), diff


def record(test: str, tensor: str, rel: float, abs_: float, note: str = "") -> None:
    ERRORS.append((test, tensor, rel, abs_, note))


@pytest.fixture(scope="session")
def slotforge_bin() -> Path:
    env = os.environ.get("SLOTFORGE_BIN")
    if env:
        p = Path(env)
        if not p.is_absolute():
            p = REPO / p
        assert p.is_file(), f"SLOTFORGE_BIN={env}: no such file"
        return p
    p = REPO / "target" / "release" / "slotforge"
    if not p.is_file():
        print(f"building {p} (cargo build --release)", file=sys.stderr)
        subprocess.run(["nice", "-n", "10", "cargo", "build", "--release", "--bin", "slotforge"], cwd=REPO, check=True)
    return p


@pytest.fixture(scope="session")
def run(slotforge_bin):
    """run(*args) -> CompletedProcess; fails the test with slotforge's stderr unless it exits 0."""
    def _run(*args, check=True):
        cmd = [str(slotforge_bin), *map(str, args)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if check and p.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {p.returncode}\nstderr:\n{p.stderr[-4000:]}")
        return p
    return _run


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slotforge")


def _config(work: Path, name: str, text: str) -> Path:
    p = work / f"{name}.toml"
    p.write_text(text)
    return p


@pytest.fixture(scope="session")
def configs(work):
    return {
        "feature-random": _config(work, "feature-random", FEATURE_RANDOM),
        "feature-spectral": _config(work, "feature-spectral", FEATURE_SPECTRAL),
        "pixel": _config(work, "pixel", PIXEL),
    }


@pytest.fixture(scope="session")
def trained(run, work, configs):
    """trained(name) -> the run directory of the tiny config `name`, trained once per session."""
    done = {}

    def _trained(name):
        if name not in done:
            out = work / f"run-{name}"
            run("train", "--config", configs[name], "--out", out, "--device", "cpu")
            assert (out / "model.safetensors").is_file()
            done[name] = out
        return done[name]
    return _trained


@pytest.fixture(scope="session")
def feature_data(run, work):
    """Held-out-like CLEVR feature scenes (feat-dim 32) with masks: 6 scenes."""
    out = work / "data-features"
    run("gen-data", "--synthetic", "clevr-features", "--count", 6, "--feat-dim", 32, "--out", out, "--seed", 7)
    return out


@pytest.fixture(scope="session")
def pixel_data(run, work):
    """Tetrominoes scenes (35x35) with masks: 6 scenes."""
    out = work / "data-tetrominoes"
    run("gen-data", "--synthetic", "tetrominoes", "--count", 6, "--out", out, "--seed", 7)
    return out


def pytest_terminal_summary(terminalreporter):
    if not ERRORS:
        return
    tr = terminalreporter
    tr.section("PyTorch vs slotforge (rel = max|torch - slotforge| / max|slotforge|)")
    for test, tensor, rel, abs_, note in ERRORS:
        tr.write_line(f"ERR {test:<34} {tensor:<18} rel {rel:9.2e}  abs {abs_:9.2e}  {note}")
    try:
        (REPO / "target").mkdir(exist_ok=True)
        (REPO / "target" / "python-test-errors.json").write_text(
            json.dumps([dict(test=t, tensor=n, rel=r, abs=a, note=x) for t, n, r, a, x in ERRORS], indent=1))
    except OSError:
        pass
