#!/usr/bin/env bash
# Tests of the Python package (python/): a venv with CPU PyTorch, numpy, safetensors, pytest and
# the package, then pytest on python/tests against the slotforge binary. Extra arguments go to
# pytest (e.g. -k readers).
#
# The venv is $SLOTFORGE_PYVENV (default target/pyvenv), reused when it already imports
# everything. PyTorch comes from (SLOTFORGE_TORCH=apt|pypi, default: apt where it works):
#   apt   Debian's python3-torch (a CPU build: ~160 MB of packages, ~1.5 min once per machine),
#         into a venv of /usr/bin/python3 with --system-site-packages;
#   pypi  `pip install torch`: PyPI's Linux wheel is a CUDA build, and with its nvidia-* wheels
#         it is ~5.3 GB installed (~3 min here). `--no-deps` alone does not import:
#         libtorch_cuda.so links cuBLAS, cuDNN, NCCL, ... at load time.
# The binary is $SLOTFORGE_BIN, else target/release/slotforge, built here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${SLOTFORGE_PYVENV:-target/pyvenv}"
TORCH_FROM="${SLOTFORGE_TORCH:-}"
start=$(date +%s)

log() { echo "test_python.sh: $*"; }

sudo_cmd() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

apt_torch() {
    # Debian's CPU PyTorch for the system python3 (a no-op once installed)
    command -v apt-get >/dev/null && [ -x /usr/bin/python3 ] || return 1
    if /usr/bin/python3 -c "import torch, numpy, venv" 2>/dev/null; then return 0; fi
    local pkgs="python3-torch python3-numpy python3-venv"
    log "installing Debian's $pkgs"
    if ! sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1; then
        sudo_cmd apt-get update -qq >/dev/null 2>&1 || return 1
        sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null || return 1
    fi
    /usr/bin/python3 -c "import torch, numpy" 2>/dev/null
}

venv_ok() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch, numpy, safetensors, pytest" 2>/dev/null
}

if ! venv_ok; then
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if [ "$TORCH_FROM" != pypi ] && apt_torch; then
        log "venv $VENV on /usr/bin/python3 with Debian's torch"
        /usr/bin/python3 -m venv --system-site-packages "$VENV"
        NUMPY_PIN="numpy==$("$VENV/bin/python" -c 'import numpy; print(numpy.__version__)')"
        "$VENV/bin/pip" install -q --disable-pip-version-check safetensors pytest "$NUMPY_PIN"
        # optional: the bfloat16 test against ml_dtypes (keeping Debian's numpy, which torch is built for)
        "$VENV/bin/pip" install -q --disable-pip-version-check ml_dtypes "$NUMPY_PIN" >/dev/null 2>&1 \
            || log "ml_dtypes not installed (its test is skipped)"
    else
        [ "$TORCH_FROM" = apt ] && { log "SLOTFORGE_TORCH=apt but Debian's python3-torch is not available" >&2; exit 1; }
        log "venv $VENV with torch from PyPI (CUDA build with its nvidia-* wheels, ~5 GB)"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check --progress-bar off torch numpy safetensors pytest ml_dtypes
    fi
    venv_ok || { log "the venv $VENV does not import torch, numpy, safetensors, pytest" >&2; exit 1; }
    log "venv ready in $(( $(date +%s) - start )) s"
fi
# the package itself, every time (its code may have changed); its dependencies are in place
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall ./python >/dev/null
"$VENV/bin/python" -c "import torch, numpy, slotforge; print('test_python.sh: torch', torch.__version__, '| numpy', numpy.__version__, '| slotforge', slotforge.__version__, 'from', slotforge.__file__)"

if [ -z "${SLOTFORGE_BIN:-}" ]; then
    export SLOTFORGE_BIN="$PWD/target/release/slotforge"
    if [ ! -x "$SLOTFORGE_BIN" ]; then
        log "building $SLOTFORGE_BIN"
        nice -n 10 cargo build --release --bin slotforge
    fi
fi
log "slotforge binary: $SLOTFORGE_BIN"

# the package's build leftovers stay out of the work tree
rm -rf python/build python/*.egg-info
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q python/tests "$@"
