#!/usr/bin/env bash
# plot_serve.py --compare on two recorded reports (tests/data): the table's
# rows and ratios, the plot where matplotlib is; runs that cannot be compared
# and bad usage are refused with a message.
#   test_plot_serve.sh PLOT_SERVE_PY OUT_DIR
set -uo pipefail
script=$1 out=$2
data=$(cd "$(dirname "$0")/data" && pwd)
rm -rf "$out" && mkdir -p "$out"
failed=0
expect() {  # expect NAME STATUS TEXT COMMAND...: COMMAND exits with STATUS and prints TEXT
  local name=$1 status=$2 text=$3; shift 3
  local output rc
  output=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -eq "$status" ] && grep -qF -- "$text" <<<"$output"; then
    echo "ok: $name (exit $rc)"
  else
    echo "FAILED: $name: expected exit $status and '$text', got exit $rc:"
    printf '%s\n' "$output"
    failed=1
  fi
}
contains() {  # contains NAME FILE TEXT
  if grep -qF -- "$3" "$2"; then echo "ok: $1"; else echo "FAILED: $1: '$3' not in $2:"; cat "$2"; failed=1; fi
}

expect "compare bf16 with FP8" 0 "serve_compare.md" python3 "$script" --compare "$data/serve_bf16" "$data/serve_fp8" "$out/cmp"
table=$out/cmp/serve_compare.md
contains "the title names both storages" "$table" "K/V stored as bf16 against FP8 E4M3"
contains "R-KV at 16K: sequences and tokens/s of both, and the ratios" "$table" \
  "| 16K | R-KV 1024+128 | 837 | 14,798 | 1,574 | 16,649 | 1.88× | 1.13× |"
contains "Full reserved at 32K" "$table" "| 32K | Full reserved | 29 | 1,365 | 57 | 1,962 | 1.97× | 1.44× |"
rows=$(grep -c '^| [0-9]*K |' "$table")
if [ "$rows" -eq 9 ]; then echo "ok: 9 rows (3 lengths x 3 methods)"; else echo "FAILED: $rows rows, expected 9"; failed=1; fi
if python3 -c 'import matplotlib' 2>/dev/null; then
  if [ -s "$out/cmp/serve_compare.png" ]; then echo "ok: the plot"; else echo "FAILED: no serve_compare.png"; failed=1; fi
fi

# Another shape cannot be compared.
mkdir -p "$out/other"
python3 - "$data/serve_fp8/serve_bench.json" "$out/other/serve_bench.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
report["shape"] = "4 layers"
json.dump(report, open(sys.argv[2], "w"))
PY
expect "runs of different shapes" 1 "differ in shape" python3 "$script" --compare "$data/serve_bf16" "$out/other" "$out/x"
expect "a folder without a report" 1 "no report at" python3 "$script" --compare "$data/serve_bf16" "$out/none" "$out/x"
printf '{"device": "x"}' > "$out/other/serve_bench.json"
expect "a JSON that is not a report" 1 "not a serving-benchmark report: no shape, prompt, curves" python3 "$script" "$out/other"
expect "bad usage" 2 "--compare A B OUT" python3 "$script" --compare "$data/serve_bf16"
exit $failed
