#!/usr/bin/env bash
# CI part of the CUDA backend, called by .ci/run:
#   bash .ci/cuda.sh setup   before the tests: report the CUDA toolkit (CI machines
#                            have nvcc, CUDA 13, and no GPU; nothing to install)
#   bash .ci/cuda.sh check   after `./rkv test`: assert that its build (build/) really
#                            compiled the CUDA backend (sm_90a machine code and
#                            compute_90 PTX in librkv.so, linked to cudart and
#                            cuBLASLt), and that the GPU tests were built and
#                            skipped cleanly (no GPU here), not failed.
# The GPU tests themselves run on a GPU machine: tools/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}

find_nvcc() {
  command -v nvcc 2>/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true
}

case "${1:-}" in
  setup)
    nvcc=$(find_nvcc)
    if [ -z "$nvcc" ]; then
      echo "cuda.sh: no nvcc on this machine: the CUDA backend cannot be compiled" >&2
      exit 1
    fi
    "$nvcc" --version | tail -n 2
    ;;
  check)
    fail() { echo "cuda.sh check: $*" >&2; exit 1; }
    cache="$build/CMakeCache.txt"
    [ -f "$cache" ] || fail "$cache missing: run ./rkv test first"
    grep -q '^RKV_CUDA:BOOL=ON' "$cache" || fail "the build in $build has RKV_CUDA off: nvcc was not found by CMake"
    library=$(readlink -f "$build/librkv.so")
    # Each tool's whole output is captured before grep reads it: piping a tool
    # into an early-exiting grep under pipefail fails at random, because grep exits at its first match and
    # the tool, still writing, dies of SIGPIPE (exit 141).
    sections=$(readelf -S "$library") || fail "readelf -S $library failed"
    dynamic=$(readelf -d "$library") || fail "readelf -d $library failed"
    grep -q '\.nv_fatbin' <<<"$sections" || fail "$library holds no CUDA fatbin"
    grep -q 'libcudart' <<<"$dynamic" || fail "$library is not linked to the CUDA runtime"
    grep -q 'libcublasLt' <<<"$dynamic" || fail "$library is not linked to cuBLASLt"
    nvcc=$(find_nvcc)
    if [ -n "$nvcc" ] && command -v "$(dirname "$nvcc")/cuobjdump" >/dev/null 2>&1; then
      elf=$("$(dirname "$nvcc")/cuobjdump" --list-elf "$library") || fail "cuobjdump --list-elf $library failed"
      ptx=$("$(dirname "$nvcc")/cuobjdump" --list-ptx "$library") || fail "cuobjdump --list-ptx $library failed"
      grep -q 'sm_90a' <<<"$elf" || fail "no sm_90a code in $library"
      grep -q 'sm_90' <<<"$ptx" || fail "no compute_90 PTX in $library"
    else
      grep -aq 'sm_90a' "$library" || fail "no sm_90a code in $library"
    fi
    # The GPU tests exist and skip (exit 77) without a GPU: CTest counts them as not run, not failed.
    output=$(ctest --test-dir "$build" -L gpu 2>&1) || fail "GPU tests failed here:"$'\n'"$output"
    echo "$output" | tail -n 12
    skipped=$(echo "$output" | grep -c '(Skipped)' || true)
    [ "$skipped" -ge 6 ] || fail "expected the 6 GPU tests to skip without a GPU, $skipped did"
    echo "cuda.sh check: CUDA backend compiled (sm_90a + compute_90 PTX), GPU tests built and skipped"
    ;;
  *)
    echo "usage: bash .ci/cuda.sh setup|check" >&2
    exit 2
    ;;
esac
