#!/usr/bin/env bash
# CI for the bindings (called by .ci/run):
#   setup  install what the Python (SWIG), Rust (bindgen, cargo) and Go (cgo)
#          bindings need; ./rkv test then builds them and runs their tests
#          through CTest (under CI=true a missing toolchain fails the build).
#   check  the committed bindgen output is fresh, and `pip install
#          ./bindings/python` builds and installs into a clean venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

python=${PYTHON:-python3}

pip_install() {
  # Debian's own python3 refuses pip outside a venv (PEP 668); any other
  # python3 on PATH (the one CMake's FindPython picks) takes it as is.
  "$python" -m pip install -q "$@" 2>/dev/null ||
    "$python" -m pip install -q --break-system-packages "$@"
}

setup() {
  # swig: the Python module; golang-go: cgo; bindgen (+ libclang): the
  # freshness check; python3-dev/venv: headers and `pip install` into a venv.
  local packages=(swig golang-go bindgen python3-dev python3-venv pkg-config)
  local missing=()
  for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
  fi
  if ! command -v cargo >/dev/null && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    apt-get install -y -qq cargo
  fi
  pip_install numpy pytest scikit-build-core
  # The transformers adapter's tests: torch (CPU) and transformers from PyPI.
  # Large; if they cannot be installed the adapter tests skip, and say so.
  if ! "$python" -c "import torch, transformers" 2>/dev/null; then
    pip_install "torch>=2.6" "transformers>=5" ||
      echo "bindings: torch/transformers not installed; the adapter tests will skip"
  fi
}

check() {
  echo "-- bindgen output is fresh (bindings/rust/librkv-sys/src/bindings.rs)"
  bash bindings/rust/librkv-sys/bindgen.sh --check

  echo "-- pip install ./bindings/python into a clean venv"
  local root=$PWD tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  "$python" -m venv "$tmp/venv"
  "$tmp/venv/bin/pip" install -q ./bindings/python
  # Import from outside the checkout, so the installed package is what runs.
  (cd "$tmp" && "$tmp/venv/bin/python" "$root/bindings/python/example.py")
  (cd "$tmp" && "$tmp/venv/bin/python" -c '
import rkv, numpy as np
assert rkv.capi.rkv_version_number() == rkv.capi.RKV_VERSION_NUMBER
try:
    rkv.Cache(max_seqs=1, num_layers=1, num_kv_heads=1, head_dim=8, budget=2, window=2)
except rkv.InvalidArgumentError as e:
    print("installed rkv", rkv.__version__, "maps errors:", e)
else:
    raise SystemExit("expected InvalidArgumentError")
')
}

case "${1:-}" in
  setup) setup ;;
  check) check ;;
  *) echo "usage: $0 setup|check" >&2; exit 2 ;;
esac
