#!/usr/bin/env bash
# The rkv Python package on a GPU machine that cannot build librkv (no
# OpenBLAS, no SWIG there) and runs another Python than this one: librkv comes
# staged by tools/gpu_stage.sh, the SWIG output is staged beside it here, and
# only the extension (one C file) is compiled there, for that machine's Python.
#
#   here:  bindings/python/gpu_module.sh stage [BUILD_DIR] [STAGE_DIR]
#          (after tools/gpu_stage.sh BUILD_DIR STAGE_DIR; BUILD_DIR built with
#          -DRKV_CUDA=ON -DRKV_BUILD_BINDINGS=ON; defaults build, .gpu-stage)
#   there: . STAGE_DIR/env.sh && bindings/python/gpu_module.sh build [STAGE_DIR] [OUT_DIR]
#          export PYTHONPATH=OUT_DIR   (default /tmp/rkv-python; prints the line)
#
# `build` compiles STAGE_DIR/python/capi_wrap.c against python3's headers and
# the staged librkv (RUNPATH set to it), and assembles OUT_DIR/rkv from
# src/rkv/*.py, the staged capi.py and the extension: the package as pip would
# install it, with the librkv of the stage.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
command=${1:-}

case "$command" in
stage)
  build=${2:-build}
  stage=${3:-.gpu-stage}
  wrapper="$build/bindings/python/capi_wrap.c"
  module="$build/bindings/python/rkv/capi.py"
  for file in "$wrapper" "$module"; do
    [ -f "$file" ] || { echo "gpu_module: $file is missing: build $build with -DRKV_BUILD_BINDINGS=ON first" >&2; exit 1; }
  done
  [ -f "$stage/build/librkv.so.0" ] || { echo "gpu_module: no librkv in $stage/build: run tools/gpu_stage.sh $build $stage first" >&2; exit 1; }
  mkdir -p "$stage/python"
  cp "$wrapper" "$module" "$stage/python/"
  echo "gpu_module: SWIG output of $build staged into $stage/python ($(du -sh "$stage/python" | cut -f1))"
  ;;
build)
  stage=$(cd "${2:-.gpu-stage}" && pwd)
  out=${3:-/tmp/rkv-python}
  python=${PYTHON:-python3}
  [ -f "$stage/python/capi_wrap.c" ] || { echo "gpu_module: no $stage/python/capi_wrap.c: run '$0 stage' where librkv was built" >&2; exit 1; }
  include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  suffix=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
  [ -f "$include/Python.h" ] || { echo "gpu_module: $include/Python.h is missing: $python has no development headers" >&2; exit 1; }
  rm -rf "$out/rkv"
  mkdir -p "$out/rkv"
  cp "$repo"/bindings/python/src/rkv/*.py "$stage/python/capi.py" "$out/rkv/"
  started=$SECONDS
  ${CC:-cc} -O2 -fPIC -shared -w -fvisibility=hidden -I"$repo/include" -I"$include" \
    "$stage/python/capi_wrap.c" -o "$out/rkv/_capi$suffix" \
    -L"$stage/build" -lrkv -Wl,-rpath,"$stage/build"
  echo "gpu_module: rkv for $("$python" -c 'import sys; print(sys.version.split()[0])') in $out ($((SECONDS - started)) s); use it with"
  echo "export PYTHONPATH=$out\${PYTHONPATH:+:\$PYTHONPATH}"
  ;;
*)
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
