#!/usr/bin/env bash
# Regenerate src/bindings.rs from the public header with Debian's bindgen CLI
# (apt-get install bindgen). The one place the flags live: the CMake target
# rkv_rust_bindgen runs this, and CI runs it into a temporary file and diffs.
#   bindgen.sh [OUTPUT]   (default: src/bindings.rs next to this script)
#   bindgen.sh --check    regenerate into a temporary file; fail with a diff
#                         if the committed src/bindings.rs differs
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
include=$(cd "$here/../../../include" && pwd)
if [ "${1:-}" = "--check" ]; then
  fresh=$(mktemp)
  trap 'rm -f "$fresh"' EXIT
  bash "$0" "$fresh"
  if ! diff -u "$here/src/bindings.rs" "$fresh"; then
    echo "bindings.rs is stale: run 'cmake --build <build> --target rkv_rust_bindgen'" \
         "(or bindings/rust/librkv-sys/bindgen.sh) and commit it" >&2
    exit 1
  fi
  exit 0
fi
output=${1:-$here/src/bindings.rs}
# - allowlist: only librkv's own names (and what they need), nothing of libc;
# - enums as plain constants without the enum's name prepended
#   (RKV_DTYPE_F32, not rkv_dtype_RKV_DTYPE_F32): C enums received from the
#   library are then never an out-of-range Rust enum (undefined behaviour);
# - size_t as usize; the experimental section stays out (no RKV_EXPERIMENTAL_API).
bindgen "$include/rkv/rkv.h" \
  --allowlist-function 'rkv_.*' \
  --allowlist-type 'rkv_.*' \
  --allowlist-var 'RKV_.*' \
  --no-prepend-enum-name \
  --size_t-is-usize \
  --output "$output" \
  -- -I"$include"
