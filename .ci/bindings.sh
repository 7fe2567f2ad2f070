#!/usr/bin/env bash
# CI for the bindings (called by .ci/run):
#   setup  install what the Python (SWIG), Rust (bindgen, cargo) and Go (cgo)
#          bindings need; ./rkv test then builds them and runs their tests
#          through CTest (under CI=true a missing toolchain fails the build).
#   check  the committed bindgen (Rust) and SWIG (Go) outputs are fresh; the
#          Python module builds with PyPI's SWIG too (./rkv test built it with
#          Debian's) and passes its pytest suite. (`pip install
#          ./bindings/python` into a clean venv: .ci/python.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

python=${PYTHON:-python3}
# A newer SWIG than Debian 12's 4.1, from PyPI: the Python module must build
# with both (SWIG 4.3 changed the output typemaps' helpers).
pypi_swig=4.5.1

pip_install() {
  # Debian's own python3 refuses pip outside a venv (PEP 668); any other
  # python3 on PATH (the one CMake's FindPython picks) takes it as is.
  "$python" -m pip install -q "$@" 2>/dev/null ||
    "$python" -m pip install -q --break-system-packages "$@"
}

setup() {
  # swig: the Python module, and the Go freshness check (Debian 12's SWIG 4.1.0
  # generates bindings/go/capi); golang-go: cgo; bindgen (+ libclang): the
  # Rust freshness check; python3-dev/venv: headers and `pip install` into a venv.
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

# The Python module built with PyPI's SWIG in a venv, then its pytest suite.
# A subshell, so its temporary folder goes on any exit.
python_with_pypi_swig() (
  echo "-- the Python binding built with PyPI's SWIG $pypi_swig"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # numpy and pytest come from setup, through the system site packages.
  "$python" -m venv --system-site-packages "$tmp/venv"
  "$tmp/venv/bin/pip" install -q "swig==$pypi_swig"
  "$tmp/venv/bin/python" -c "import numpy, pytest" 2>/dev/null ||
    "$tmp/venv/bin/pip" install -q numpy pytest
  cmake -S . -B "$tmp/build" -G Ninja -DRKV_CUDA=OFF -DRKV_BUILD_EXAMPLES=OFF \
    -DSWIG_EXECUTABLE="$tmp/venv/bin/swig" -DPython_EXECUTABLE="$tmp/venv/bin/python" >/dev/null
  cmake --build "$tmp/build" --target rkv_python
  if ! grep -qx "SWIG_VERSION:STRING=$pypi_swig" "$tmp/build/CMakeCache.txt"; then
    echo "the build did not take PyPI's SWIG $pypi_swig" >&2
    exit 1
  fi
  ctest --test-dir "$tmp/build" -R '^python_bindings$' --output-on-failure
)

check() {
  echo "-- bindgen output is fresh (bindings/rust/librkv-sys/src/bindings.rs)"
  bash bindings/rust/librkv-sys/bindgen.sh --check

  echo "-- SWIG output is fresh (bindings/go/capi)"
  bash bindings/go/swig.sh --check # exit 77 (not SWIG 4.1.0) fails here too

  python_with_pypi_swig
}

case "${1:-}" in
  setup) setup ;;
  check) check ;;
  *) echo "usage: $0 setup|check" >&2; exit 2 ;;
esac
