#!/usr/bin/env bash
# The CUDA engine's programs on bad input, and on a machine without a GPU:
# every case ends with a message and a non-zero exit, never a crash or a hang.
# On a machine with a GPU the last part instead runs rkv_engine --device cuda
# on a small random model end to end.
#   test_engine_cuda_cli.sh RKV_ENGINE RKV_SERVE_BENCH RKV_WRITE_TEST_GGUF OUT_DIR
set -uo pipefail
engine=$1 bench=$2 writer=$3 out=$4
mkdir -p "$out"
passed=0 failed=0

# expect NAME STATUS TEXT COMMAND...: COMMAND exits with STATUS and prints TEXT.
expect() {
  local name=$1 status=$2 text=$3; shift 3
  local output rc
  output=$(timeout 120 "$@" 2>&1)
  rc=$?
  if [ "$rc" -eq "$status" ] && grep -qF -- "$text" <<<"$output"; then
    passed=$((passed + 1))
    echo "ok: $name (exit $rc): $(grep -F -- "$text" <<<"$output" | sed -n 1p)"
  else
    failed=$((failed + 1))
    echo "FAILED: $name: expected exit $status and '$text', got exit $rc:"
    printf '%s\n' "$output" | sed -n 1,20p
  fi
}

"$writer" "$out/gpt2.gguf" gpt2 || exit 1
"$writer" "$out/llama.gguf" || exit 1

expect "a GGUF that is not a Llama model" 1 "architecture 'gpt2'" \
  "$engine" --device cuda --model "$out/gpt2.gguf" "hello"
expect "an unknown device" 2 "valid: cpu cuda" "$engine" --device tpu "hello"
expect "a dummy shape whose heads do not divide" 2 "not a multiple of 8 KV heads" \
  "$bench" --shape r1-llama-8b,heads=30 --out "$out/bench"
expect "a dummy shape without a kernel" 2 "head_dim 96" "$bench" --shape r1-llama-8b,head_dim=96 --out "$out/bench"
expect "an unknown preset" 2 "unknown preset" "$bench" --shape llama-70b --out "$out/bench"
expect "a budget inside the window" 2 "above the window" "$bench" --budgets 4 --out "$out/bench"
expect "an unknown option" 2 "unknown option" "$bench" --batch 12
expect "an unknown K/V storage" 2 "valid: bf16 fp8" "$bench" --kv-dtype fp16 --out "$out/bench"
expect "rkv_serve_bench --help" 0 "usage:" "$bench" --help

if nvidia-smi -L >/dev/null 2>&1; then
  # End to end on a random model, and its table's K/V columns as each request finished: R-KV held
  # fewer tokens than Full and compressed (they read 0 when taken after the server had reset the slot).
  output=$(timeout 120 "$engine" --device cuda --model "$out/llama.gguf" --method rkv,full --budget 16 --buffer 8 \
    --max-tokens 40 --raw "The quick brown fox jumps over the lazy dog" 2>&1)
  rc=$?
  table=$(awk '($1 == "rkv" || $1 == "full") && $2 ~ /^[0-9]+$/' <<<"$output")
  if [ "$rc" -eq 0 ] && grep -qF "agree on the first" <<<"$output"; then
    passed=$((passed + 1)); echo "ok: rkv_engine --device cuda, end to end on a random model: $(grep -F "agree on the first" <<<"$output")"
  else
    failed=$((failed + 1)); echo "FAILED: rkv_engine --device cuda, end to end on a random model (exit $rc):"
    printf '%s\n' "$output" | sed -n 1,20p
  fi
  if awk '$1 == "rkv" {r = $3; c = $10} $1 == "full" {f = $3} END {exit !(r > 0 && r < f && c > 0)}' <<<"$table"; then
    passed=$((passed + 1)); echo "ok: the GPU table's K/V columns: $(tr '\n' '|' <<<"$table")"
  else
    failed=$((failed + 1)); echo "FAILED: the GPU table's K/V columns (rkv: tokens > 0, < full's, compressions > 0):"
    printf '%s\n' "$table"
  fi
else
  expect "rkv_engine --device cuda without a GPU" 1 "no CUDA device" \
    "$engine" --device cuda --model "$out/llama.gguf" "hello"
  expect "rkv_serve_bench without a GPU" 1 "no CUDA device" "$bench" --out "$out/bench"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
