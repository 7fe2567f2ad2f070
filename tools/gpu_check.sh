#!/usr/bin/env bash
# The GPU side of librkv in one command, on a machine with an NVIDIA GPU of
# compute capability 9.0 or newer (H100/H200), CUDA 13, cmake and ninja:
#
#   tools/gpu_check.sh               build (build-gpu/), then run the GPU tests (and the
#                                    fuzzer's corpus replayed on CUDA caches), the
#                                    benchmarks (rkv_bench_gpu: every path, and the
#                                    phase profile of a compression; the PyTorch
#                                    comparison of the compression; bench_attend.py:
#                                    rkv_attend against torch's SDPA on the same K/V,
#                                    bf16 and FP8), and the GPU tests under
#                                    compute-sanitizer (memcheck and racecheck,
#                                    smaller sizes)
# Options:
#   --build-dir DIR   build folder (default build-gpu)
#   --prebuilt        use the binaries already in the build folder (built on another
#                     machine: put its libraries on LD_LIBRARY_PATH); no cmake
#   --logs DIR        where the logs and JSON results go (default <build>/gpu_check)
#   --no-tests, --no-sanitizer, --no-bench, --no-torch, --no-fuzz   skip a part
#                     (--no-fuzz: the fuzzer's GPU replay, run with the tests)
#   --tests LIST      GPU tests to run (default: all), e.g. test_gpu_attend,test_gpu_fp8
#   --sanitizer-tests LIST   tests run under compute-sanitizer (default: all but the
#                     ones that provoke device errors on purpose)
#   --bench LIST      benchmarks: compress (rkv_bench_gpu, Gaussian keys into bench.json,
#                     keys sharing a direction into bench_shared.json, keys that walk
#                     like a model's into bench_model.json), torch (torch_rkv.py),
#                     attend (bench_attend.py); default compress,torch,attend
#   --batches LIST    compression benchmark batches (default 1,8,64,256)
#   --profile LIST    batches whose compression phases are timed (default 1,64; 0: none)
#   --attend-cases LIST  attention cases BATCHxLENGTH (default 1x1152,8x1152,32x1152,
#                     256x1152,32x16384)
# Environment: RKV_GOLDEN_DIR (default tests/golden of the repository).
# Exit status: 0 if every part that ran passed.
#
# Built on the same machine, `ctest --test-dir build-gpu -L gpu` runs the same
# tests; this script runs the test programs directly so that binaries built
# elsewhere work too (CTest records absolute paths).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=build-gpu
prebuilt=0
logs=""
run_tests=1
run_sanitizer=1
run_bench=1
run_torch=1
run_fuzz=1
batches=1,8,64,256
profile=1,64
tests="test_gpu_fp8,test_gpu_gram,test_gpu_select,test_gpu_golden,test_gpu_methods,test_gpu_decode,test_gpu_attend,test_gpu_graph,test_gpu_sequences,test_gpu_batch,test_gpu_pdl,test_gpu_errors,test_gpu_fault"
sanitizer_tests="test_gpu_fp8,test_gpu_gram,test_gpu_select,test_gpu_golden,test_gpu_methods,test_gpu_decode,test_gpu_attend,test_gpu_graph,test_gpu_sequences,test_gpu_batch,test_gpu_pdl"
benches=compress,torch,attend
attend_cases=1x1152,8x1152,32x1152,256x1152,32x16384
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build=$2; shift ;;
    --prebuilt) prebuilt=1 ;;
    --logs) logs=$2; shift ;;
    --no-tests) run_tests=0 ;;
    --no-sanitizer) run_sanitizer=0 ;;
    --no-bench) run_bench=0 ;;
    --no-torch) run_torch=0 ;;
    --no-fuzz) run_fuzz=0 ;;
    --batches) batches=$2; shift ;;
    --profile) profile=$2; shift ;;
    --tests) tests=$2; shift ;;
    --sanitizer-tests) sanitizer_tests=$2; shift ;;
    --bench) benches=$2; shift ;;
    --attend-cases) attend_cases=$2; shift ;;
    *) echo "usage: tools/gpu_check.sh [--build-dir DIR] [--prebuilt] [--logs DIR] [--no-tests] [--no-sanitizer] [--no-bench] [--no-torch] [--no-fuzz] [--tests LIST] [--sanitizer-tests LIST] [--bench compress,torch,attend] [--batches 1,8,64,256] [--profile 1,64] [--attend-cases 1x1152,...]" >&2; exit 2 ;;
  esac
  shift
done
logs=${logs:-$build/gpu_check}
mkdir -p "$logs"
export RKV_GOLDEN_DIR=${RKV_GOLDEN_DIR:-$root/tests/golden}
export LD_LIBRARY_PATH="$root/$build:$build:${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64"
status=0
summary=()
note() { summary+=("$1"); echo "$1"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "(nvidia-smi unavailable)"

if [ "$prebuilt" = 0 ]; then
  echo "== build ($build)"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRKV_CUDA=ON -DRKV_BUILD_BINDINGS=OFF >"$logs/cmake.log" 2>&1 &&
    cmake --build "$build" -j"$(nproc)" >"$logs/build.log" 2>&1 || { tail -n 40 "$logs/build.log"; echo "build failed"; exit 1; }
fi

IFS=, read -r -a test_list <<<"$tests"
IFS=, read -r -a sanitizer_list <<<"$sanitizer_tests"
wants() { [[ ",$benches," == *",$1,"* ]]; }

# run_one NAME LOG COMMAND...: runs, records pass/skip/fail with the time.
run_one() {
  local name=$1 log=$2; shift 2
  local start=$SECONDS
  timeout "${RKV_GPU_TEST_TIMEOUT:-900}" "$@" >"$log" 2>&1
  local rc=$?
  local took=$((SECONDS - start))
  case $rc in
    0) note "PASS  $name (${took}s)" ;;
    77) note "SKIP  $name (no GPU)" ;;
    *) note "FAIL  $name (exit $rc, ${took}s): see $log"; tail -n 30 "$log"; status=1 ;;
  esac
}

if [ "$run_tests" = 1 ]; then
  echo "== GPU tests"
  for t in "${test_list[@]}"; do
    run_one "$t" "$logs/$t.log" "$build/tests/gpu/$t"
    grep -E "near tie|identical|conform|match|replays|[h]ead comparisons|configurations|out of memory says|pairs:|wgmma|MISMATCH|patterns|worst" "$logs/$t.log" | grep -v "^\[" | sed -n 1,16p
  done
  # The layer view read as FlashInfer and flash-attn read it (skips without torch).
  run_one test_view_layouts "$logs/test_view_layouts.log" python3 tests/gpu/test_view_layouts.py --lib "$build/librkv.so"
  sed -n '/computed as/,$p' "$logs/test_view_layouts.log"
  # The API fuzzer's corpus, regressions and 200 random programs on CUDA
  # caches against the CPU, call by call (tests/fuzz/README.md).
  if [ "$run_fuzz" = 1 ]; then
    run_one fuzz_gpu_replay "$logs/fuzz_gpu_replay.log" "$build/tests/fuzz/rkv_fuzz_gpu_replay" \
      tests/fuzz/corpus tests/fuzz/regressions --random 200
    grep -E "^\| [0-9]|^kept sets|^attention:|mismatches|MISMATCHES" "$logs/fuzz_gpu_replay.log" | sed -n 1,6p
  fi
fi

if [ "$run_bench" = 1 ]; then
  echo "== benchmarks"
  if wants compress; then
    # Gaussian keys (the redundancy's worst case: no pair passes the threshold),
    # then keys sharing a direction, as real keys do, and keys whose near-duplicates
    # stop the wgmma walk as soon as a real model's keys do (rkv_bench_gpu --keys).
    for keys in gauss shared model; do
      suffix=${keys/gauss/}; suffix=${suffix:+_$suffix}
      "$build/rkv_bench_gpu" --batches "$batches" --profile "$profile" --keys "$keys" \
          --json "$logs/bench$suffix.json" 2>&1 | tee "$logs/bench$suffix.log"
      [ "${PIPESTATUS[0]}" = 0 ] || { note "FAIL  rkv_bench_gpu --keys $keys"; status=1; }
    done
  fi
  if wants attend && python3 -c "import torch" 2>/dev/null; then
    python3 tools/bench_attend.py --lib "$build/librkv.so" --cases "$attend_cases" --json "$logs/attend.json" \
        --plot "$logs/attend.png" 2>&1 |
      tee "$logs/attend.log"
    [ "${PIPESTATUS[0]}" = 0 ] || { note "FAIL  bench_attend.py"; status=1; }
  elif wants attend; then
    note "SKIP  attention benchmark (no torch)"
  fi
  if wants torch && [ "$run_torch" = 1 ] && python3 -c "import torch" 2>/dev/null; then
    python3 tools/torch_rkv.py check "$RKV_GOLDEN_DIR" 2>&1 | tee "$logs/torch_check.log"
    python3 tools/torch_rkv.py bench --batches "$batches" --json "$logs/torch.json" --rkv-json "$logs/bench.json" 2>&1 |
      tee "$logs/torch_bench.log"
    [ "${PIPESTATUS[0]}" = 0 ] || { note "FAIL  torch_rkv.py bench"; status=1; }
  elif wants torch; then
    note "SKIP  PyTorch comparison (--no-torch, or no torch)"
  fi
fi

if [ "$run_sanitizer" = 1 ]; then
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  if [ ! -x "$sanitizer" ]; then
    note "SKIP  compute-sanitizer (not installed)"
  else
    echo "== compute-sanitizer (RKV_GPU_TEST_SMALL: smaller problems)"
    # test_gpu_errors and test_gpu_fault provoke failures on purpose (an
    # out-of-memory cudaMalloc, a kernel fault): they are not run here.
    for tool in memcheck racecheck; do
      for t in "${sanitizer_list[@]}"; do
        [ "$tool" = racecheck ] && [ "$t" = test_gpu_golden ] && continue
        run_one "$tool $t" "$logs/${tool}_$t.log" env RKV_GPU_TEST_SMALL=$([ "$tool" = racecheck ] && echo 2 || echo 1) \
          "$sanitizer" --tool "$tool" --error-exitcode 3 "$build/tests/gpu/$t"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$logs/${tool}_$t.log" | tail -n 1
      done
    done
  fi
fi

echo "== summary"
printf '%s\n' "${summary[@]}"
exit $status
