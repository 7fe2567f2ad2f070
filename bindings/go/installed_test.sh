#!/usr/bin/env bash
# The Go binding builds against an installed librkv, found by pkg-config, as
# the README shows: install the build into a fresh prefix, then build and run
# testdata/consumer (a module of its own, rkv replaced by this folder) with
# only that prefix on PKG_CONFIG_PATH and LD_LIBRARY_PATH.
#   installed_test.sh BUILD_DIR WORK_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$1 work=$2
rm -rf "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
pcdir=$(dirname "$(find "$work/prefix" -name librkv.pc -print -quit)") # LIBDIR/pkgconfig
export PKG_CONFIG_PATH=$pcdir LD_LIBRARY_PATH=$(dirname "$pcdir")
echo "pkg-config librkv: $(pkg-config --cflags --libs librkv)"
output=$(cd "$here/testdata/consumer" && go run .)
echo "$output"
case $output in
  "librkv "*" held 8 of 12 tokens: ["*) ;;
  *) echo "FAIL: unexpected output" >&2; exit 1 ;;
esac
