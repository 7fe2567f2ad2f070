#!/usr/bin/env bash
# The freshness check of the raw Go layer catches a header change, and
# regenerating is all the raw layer needs to follow one. On a copy of the
# tree (include/, bindings/rkv.i, bindings/go/):
#   1. the copy is fresh: swig.sh --check passes;
#   2. a function changes signature and another is added in the header:
#      --check fails, and names the stale file;
#   3. swig.sh regenerates: --check passes, the Go wrappers have the new
#      signatures, and the packages still build against the changed header.
# Exit 77 (skipped) where SWIG is not the version capi/ is generated with.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/include" "$tmp/bindings/go"
cp -r "$root/include/rkv" "$tmp/include/"
cp "$root/bindings/rkv.i" "$tmp/bindings/"
cp -r "$here/capi" "$here/swig.sh" "$here/go.mod" "$here"/*.go "$tmp/bindings/go/"
copy=$tmp/bindings/go

echo "-- 1. a faithful copy is fresh"
status=0
bash "$copy/swig.sh" --check || status=$?
if [ $status -ne 0 ]; then
  exit $status # 77: not the pinned SWIG; anything else: the tree itself is stale
fi

echo "-- 2. the header changes: rkv_compress takes a flags argument, rkv_probe is new"
header=$tmp/include/rkv/rkv.h
sed -i 's/^RKV_API rkv_status rkv_compress(rkv_cache \*cache, int32_t seq, int32_t layer, void \*stream);$/RKV_API rkv_status rkv_compress(rkv_cache *cache, int32_t seq, int32_t layer, uint32_t flags, void *stream);\nRKV_API rkv_status rkv_probe(const rkv_cache *cache, int64_t *out);/' "$header"
if ! grep -q 'rkv_probe' "$header"; then
  echo "FAIL: the test could not edit rkv_compress in the header copy (has its declaration changed?)" >&2
  exit 1
fi
if bash "$copy/swig.sh" --check >"$tmp/check.log" 2>&1; then
  echo "FAIL: --check passed although the header changed" >&2
  exit 1
fi
if ! grep -q 'capi/capi.go differs' "$tmp/check.log" || ! grep -q 'is stale' "$tmp/check.log"; then
  echo "FAIL: --check failed without saying what is stale:" >&2
  cat "$tmp/check.log" >&2
  exit 1
fi
echo "--check fails, as it must"

echo "-- 3. regenerating is all the raw layer needs"
bash "$copy/swig.sh"
bash "$copy/swig.sh" --check
want_compress='func Rkv_compress(arg1 Struct_SS_rkv_cache, arg2 int32, arg3 int32, arg4 uint32, arg5 uintptr) (_swig_ret *Failure)'
want_probe='func Rkv_probe(arg1 Struct_SS_rkv_cache, arg2 *int64) (_swig_ret *Failure)'
for want in "$want_compress" "$want_probe"; do
  if ! grep -qF "$want" "$copy/capi/capi.go"; then
    echo "FAIL: the regenerated capi.go lacks: $want" >&2
    exit 1
  fi
done
# The regenerated raw layer compiles against the changed header; the Go layer
# above it (which calls Rkv_compress) fails to compile until it follows too.
printf 'Name: librkv\nDescription: test copy\nVersion: 0\nCflags: -I%s\nLibs: -lrkv\n' \
  "$tmp/include" >"$tmp/librkv.pc"
export PKG_CONFIG_PATH=$tmp
(cd "$copy" && go build ./capi)
if (cd "$copy" && go build . 2>"$tmp/build.log"); then
  echo "FAIL: the Go layer built against a changed rkv_compress" >&2
  exit 1
fi
if ! grep -q 'Rkv_compress' "$tmp/build.log"; then
  echo "FAIL: the Go layer failed to build for another reason:" >&2
  cat "$tmp/build.log" >&2
  exit 1
fi
echo "regenerated: the raw layer has the new signatures and builds; the Go layer names the call to update"
