#!/usr/bin/env bash
# The test command: installs a Vulkan driver when the machine has none (Mesa lavapipe, a
# real Vulkan implementation on the CPU), so the GPU tests run everywhere instead of
# skipping, and the SPIR-V validator the shader tests use, then runs every test of every
# crate of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

has_vulkan() {
    local f
    for f in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json; do
        [ -e "$f" ] && return 0
    done
    return 1
}

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
apt_install() {
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
if [ "$(uname -s)" = Linux ] && ! has_vulkan; then
    echo "test.sh: no Vulkan driver found; installing Mesa lavapipe (mesa-vulkan-drivers)"
    apt_install mesa-vulkan-drivers
    has_vulkan || { echo "test.sh: lavapipe install failed" >&2; exit 1; }
fi
if [ "$(uname -s)" = Linux ] && ! command -v spirv-val >/dev/null; then
    echo "test.sh: installing the SPIR-V validator (spirv-tools)"
    apt_install spirv-tools
fi
# the shader tests then require spirv-val instead of using it where found
command -v spirv-val >/dev/null && export SLOTFORGE_REQUIRE_SPIRV_VAL=1

# tests/report.rs opens report.html in headless Chromium (Debian's package)
if [ "$(uname -s)" = Linux ] && ! command -v chromium >/dev/null; then
    echo "test.sh: installing Debian's chromium for the report test"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || {
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    }
    command -v chromium >/dev/null || { echo "test.sh: chromium install failed" >&2; exit 1; }
fi

# lavapipe prints this warning on every device creation; point it somewhere valid.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# --nocapture: each op test prints its largest GPU-vs-CPU and finite-difference errors
# (ERR lines) and the reference test its error per PyTorch tensor (REF lines).
# The log is kept in target/test-output.log; scripts/err_summary.py condenses it per op.
mkdir -p target
cargo test --workspace "$@" -- --nocapture 2>&1 | tee target/test-output.log
if command -v python3 >/dev/null; then
    python3 scripts/err_summary.py target/test-output.log
fi
# The Python package's tests (python/, scripts/test_python.sh), on the binary cargo test just built (the newest).
export SLOTFORGE_BIN="${SLOTFORGE_BIN:-$(ls -t "$PWD"/target/{debug,release}/slotforge 2>/dev/null | head -n 1)}"
scripts/test_python.sh
