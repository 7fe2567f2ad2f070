#!/usr/bin/env bash
# The rkv Python package on a GPU machine that cannot build librkv (no
# OpenBLAS, no SWIG there) and runs another Python than this one: librkv, the
# BLAS it links and the SWIG output are staged here into one small folder, and
# only the extension (one C file, seconds) is compiled there, for that
# machine's Python.
#
#   here:  bindings/python/gpu_module.sh stage [BUILD_DIR] [STAGE_DIR]
#          (BUILD_DIR built with -DRKV_CUDA=ON -DRKV_BUILD_BINDINGS=ON;
#          defaults build and .gpu-stage/python, a few MB: carry STAGE_DIR)
#   there: bindings/python/gpu_module.sh build [STAGE_DIR] [OUT_DIR]
#          . OUT_DIR/env.sh       (default /tmp/rkv-python)
#
# `build` compiles STAGE_DIR/capi_wrap.c against python3's headers and the
# staged librkv, and assembles OUT_DIR/rkv from src/rkv/*.py, the staged
# capi.py and the extension: the package as pip would install it, with the
# staged librkv. OUT_DIR/env.sh puts OUT_DIR on PYTHONPATH and the staged
# libraries (and the machine's CUDA runtime) on LD_LIBRARY_PATH.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
command=${1:-}

case "$command" in
stage)
  build=${2:-build}
  stage=${3:-.gpu-stage/python}
  wrapper="$build/bindings/python/capi_wrap.c"
  module="$build/bindings/python/rkv/capi.py"
  for file in "$wrapper" "$module" "$build/librkv.so.0"; do
    [ -f "$file" ] || { echo "gpu_module: $file is missing: build $build with -DRKV_BUILD_BINDINGS=ON first" >&2; exit 1; }
  done
  rm -rf "$stage"
  mkdir -p "$stage/lib"
  cp "$wrapper" "$module" "$stage/"
  cp -L "$build/librkv.so.0" "$stage/librkv.so.0"
  # The BLAS and its runtime, which such a machine lacks (glibc, the C++
  # runtime and CUDA's libraries are its own).
  keep='libopenblas|libgfortran|libquadmath|libblis|libscipy_openblas'
  while IFS= read -r library; do
    [[ "$(basename "$library")" =~ ^($keep) ]] && cp -L "$library" "$stage/lib/"
  done < <(ldd "$stage/librkv.so.0" | awk '/=> \// {print $3}' | sort -u)
  tar -C "$stage" -cJf "$stage/lib.tar.xz" lib && rm -rf "$stage/lib"
  echo "gpu_module: librkv, its BLAS and the SWIG output of $build staged into $stage ($(du -sh "$stage" | cut -f1))"
  ;;
build)
  stage=$(cd "${2:-.gpu-stage/python}" && pwd)
  out=${3:-/tmp/rkv-python}
  python=${PYTHON:-python3}
  [ -f "$stage/capi_wrap.c" ] || { echo "gpu_module: no $stage/capi_wrap.c: run '$0 stage' where librkv was built" >&2; exit 1; }
  include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  suffix=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
  [ -f "$include/Python.h" ] || { echo "gpu_module: $include/Python.h is missing: $python has no development headers" >&2; exit 1; }
  [ -d "$stage/lib" ] || tar -C "$stage" -xJf "$stage/lib.tar.xz"
  rm -rf "$out/rkv"
  mkdir -p "$out/rkv"
  cp "$repo"/bindings/python/src/rkv/*.py "$stage/capi.py" "$out/rkv/"
  started=$SECONDS
  ${CC:-cc} -O2 -fPIC -shared -w -fvisibility=hidden -I"$repo/include" -I"$include" \
    "$stage/capi_wrap.c" -o "$out/rkv/_capi$suffix" -L"$stage" -l:librkv.so.0 -Wl,-rpath,"$stage"
  cat >"$out/env.sh" <<EOF
# Source me: the rkv package of $out, with the librkv of $stage.
export PYTHONPATH="$out\${PYTHONPATH:+:\$PYTHONPATH}"
export LD_LIBRARY_PATH="$stage:$stage/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}:/usr/local/cuda/lib64"
EOF
  echo "gpu_module: rkv for $("$python" -c 'import sys; print(sys.version.split()[0])') in $out" \
       "($((SECONDS - started)) s); . $out/env.sh to use it"
  ;;
*)
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
