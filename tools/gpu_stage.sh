#!/usr/bin/env bash
# Stage a CUDA build for a GPU machine that can run it but cannot build it
# (no CMocka, no OpenBLAS there; nothing to install from): copy every program
# and shared library of a build folder, plus the libraries they need that such
# a machine lacks, into one small folder that travels with the working tree.
#
#   tools/gpu_stage.sh [BUILD_DIR] [STAGE_DIR]     (defaults: build, .gpu-stage)
#
# STAGE_DIR/build keeps the build folder's relative paths (tests/gpu/…, the
# engine under examples/…), so `tools/gpu_check.sh --prebuilt --build-dir
# STAGE_DIR/build` runs there as here; STAGE_DIR/lib holds the carried system
# libraries and STAGE_DIR/env.sh puts both on LD_LIBRARY_PATH:
#
#   . .gpu-stage/env.sh && tools/gpu_check.sh --prebuilt --build-dir .gpu-stage/build
#
# The CUDA runtime and cuBLASLt are not carried: the GPU machine's own are used
# (same major version, 13). Object files, CMake files and static libraries stay
# behind. Prints the staged size (the device tool carries at most 64 MiB in all).
set -euo pipefail
build=${1:-build}
stage=${2:-.gpu-stage}
[ -f "$build/CMakeCache.txt" ] || { echo "gpu_stage: $build is not a build folder (run ./rkv test first)" >&2; exit 1; }

rm -rf "$stage"
mkdir -p "$stage/build" "$stage/lib"

is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }

# Programs and shared libraries of the build, relative paths kept.
count=0
while IFS= read -r -d '' file; do
  is_elf "$file" || continue
  case "$file" in *.o|*.a) continue ;; esac
  # The CPU tests link the static library (the kernels included): 8 MB each,
  # and they run here, not there. The GPU tests and the fuzzer's GPU replay
  # run there.
  case "$file" in "$build"/tests/gpu/* | "$build"/tests/fuzz/rkv_fuzz_gpu_replay) ;; "$build"/tests/*) continue ;; esac
  relative=${file#"$build"/}
  mkdir -p "$stage/build/$(dirname "$relative")"
  cp -P "$file" "$stage/build/$relative"
  count=$((count + 1))
done < <(find "$build" -path '*/CMakeFiles' -prune -o -path '*/_deps' -prune -o -path "$build/bindings" -prune -o \
              \( -type f -perm -u+x -o -name '*.so*' \) -print0)
# The library's symlinks (librkv.so -> librkv.so.0 -> librkv.so.0.x.y).
find "$build" -maxdepth 1 -type l -name 'librkv.so*' -exec cp -P {} "$stage/build/" \;

# System libraries the GPU image lacks: whatever resolves outside the build
# and is not part of glibc, the C++ runtime or CUDA.
keep='libcmocka|libopenblas|libgfortran|libquadmath|libblis|libscipy_openblas'
libraries=$(find "$stage/build" -type f -print0 | xargs -0 -r ldd 2>/dev/null |
            awk '/=> \// {print $3}' | sort -u)
while IFS= read -r library; do
  [ -n "$library" ] || continue
  name=$(basename "$library")
  [[ "$name" =~ ^($keep) ]] || continue
  cp -L "$library" "$stage/lib/$name"
done <<<"$libraries"

# OpenBLAS alone is 35 MB: the carried libraries travel compressed.
tar -C "$stage" -cJf "$stage/lib.tar.xz" lib && rm -rf "$stage/lib"

cat >"$stage/env.sh" <<'EOF'
# Source me on the GPU machine: unpacks the carried libraries (once), then puts
# the staged build's libraries first on LD_LIBRARY_PATH.
stage_root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ -d "$stage_root/lib" ] || tar -C "$stage_root" -xJf "$stage_root/lib.tar.xz"
export LD_LIBRARY_PATH="$stage_root/build:$stage_root/lib:${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64"
EOF
echo "gpu_stage: $count files from $build and the libraries it needs ($(tar -tJf "$stage/lib.tar.xz" | grep -c '\.so')) into $stage ($(du -sh "$stage" | cut -f1))"
