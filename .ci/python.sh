#!/usr/bin/env bash
# CI for the Python package as a user installs it (called by .ci/run):
#   setup  what a machine needs before `pip install ./bindings/python`: Python
#          with its headers and venv, and a C++ compiler; nothing else.
#   check  `pip install ./bindings/python` into a fresh venv, with a PATH that
#          holds the compiler and that venv alone, so CMake, Ninja, SWIG and
#          OpenBLAS provably come from PyPI (no system cmake, swig, pkg-config);
#          then the package's librkv must load without LD_LIBRARY_PATH (RUNPATH
#          $ORIGIN) and find the wheel's OpenBLAS (no system OpenBLAS is visible
#          to the build), and the Python tests run against that install, from outside
#          the checkout. The CUDA backend is left out (RKV_CUDA=OFF), as on a
#          machine without nvcc.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

python=${PYTHON:-python3}

setup() {
  local packages=(python3-dev python3-venv g++) missing=() package
  for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
  fi
}

# A subshell, so its temporary folder goes on any exit.
check() (
  local root=$PWD tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT

  # A PATH with the compiler toolchain and the shell tools a build runs, nothing else.
  mkdir -p "$tmp/bin"
  local tool path
  for tool in cc c++ gcc g++ cpp as ld ld.bfd ar ranlib nm strip objcopy sh bash env \
              uname cat rm mkdir cp mv ln ls sed grep tr dirname basename readlink; do
    path=$(command -v "$tool") && ln -s "$path" "$tmp/bin/$tool"
  done
  "$python" -m venv "$tmp/venv"
  # The rest of the environment stays (pip's index, proxy and certificate
  # settings), less what points a build at libraries outside the venv.
  local clean_env=(env -u LD_LIBRARY_PATH -u LIBRARY_PATH -u CPATH -u PKG_CONFIG_PATH
                   -u CMAKE_PREFIX_PATH -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV
                   "PATH=$tmp/venv/bin:$tmp/bin" PIP_DISABLE_PIP_VERSION_CHECK=1)

  echo "-- pip install ./bindings/python[test] (fresh venv, only the compiler on PATH)"
  # build-dir: the build folder stays out of the checkout. CMake would still find
  # /usr/bin/pkg-config and the system OpenBLAS (which auto prefers where its
  # kernels fit the CPU): a pkg-config that does not exist makes this the machine
  # with no OpenBLAS, where the scipy-openblas32 wheel must be taken.
  "${clean_env[@]}" RKV_CUDA=OFF "$tmp/venv/bin/pip" install -q \
    --config-settings=build-dir="$tmp/build" \
    --config-settings=cmake.define.PKG_CONFIG_EXECUTABLE=/nonexistent/pkg-config \
    "./bindings/python[test]"

  local site
  site=$("${clean_env[@]}" "$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
  echo "-- the package holds librkv and finds it, and its BLAS, by RUNPATH"
  local capi library
  capi=$(ls "$site"/rkv/_capi*.so)
  library="$site/rkv/librkv.so.0"
  readelf -d "$capi" | grep -F 'Library runpath: [$ORIGIN]'
  readelf -d "$library" | grep -F 'Library runpath: [$ORIGIN/../scipy_openblas32/lib]'
  # ldd resolves every NEEDED of the extension without LD_LIBRARY_PATH.
  local resolved
  resolved=$(env -u LD_LIBRARY_PATH ldd "$capi")
  echo "$resolved" | grep -E 'librkv|openblas'
  if grep -F 'not found' <<<"$resolved"; then
    echo "python.sh: the installed extension has unresolved libraries" >&2
    return 1
  fi

  echo "-- the Python tests against the installed package (from outside the checkout)"
  cp -r bindings/python/tests "$tmp/tests"
  (cd "$tmp" && "${clean_env[@]}" "$tmp/venv/bin/python" -c '
import rkv, sys
where = rkv.__file__
assert where.startswith(sys.prefix), f"rkv imported from {where}, not the venv"
print("rkv", rkv.__version__, "from", where)')
  (cd "$tmp" && "${clean_env[@]}" "$tmp/venv/bin/python" "$root/bindings/python/example.py")
  # The transformers adapter tests (tests/hf) need torch, which this venv does not have.
  (cd "$tmp" && "${clean_env[@]}" "$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider -rs \
      "$tmp/tests" --ignore="$tmp/tests/hf")
)

case "${1:-}" in
  setup) setup ;;
  check) check ;;
  *) echo "usage: $0 setup|check" >&2; exit 2 ;;
esac
