#!/usr/bin/env bash
# The library's folders are layers, and every #include points down (README.md,
# "Structure"):
#   include/rkv/        the C API: rkv.h and rkv_experimental.h include each other
#                       (by file name), nothing else of the project
#   core/               shared by host and device: rkv/ and core/ only
#   kernels/            device code: rkv/, core/ and its own files
#   src/                the library: rkv/, core/, its own files, and
#                       kernels/launch.h and kernels/params.h from src/cuda only
# No include climbs out of its folder with "../": an include names its layer
# ("core/method.h", "kernels/launch.h"), found through the include paths that
# CMakeLists.txt sets. Usage: tests/check_layers.sh [repository root]
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"

findings=0
# check ALLOWED_REGEX FILE...: every quoted include of the files must match
# (angle-bracket includes are system headers).
check() {
  local allowed=$1 file number text included
  shift
  for file in "$@"; do
    while IFS=: read -r number text; do
      included=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]*)".*/\1/' <<<"$text")
      if ! [[ "$included" =~ $allowed ]] || [[ "$included" == *../* ]]; then
        echo "$file:$number: #include \"$included\" does not point down a layer" >&2
        findings=$((findings + 1))
      fi
    done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" || true)
  done
}
# sources FOLDER [FOLDER_TO_SKIP]: the C, C++ and CUDA files under FOLDER.
sources() {
  find "$1" -path "${2:-//none}" -prune -o -type f \( -name '*.h' -o -name '*.cuh' -o -name '*.cpp' -o -name '*.cu' \) -print | sort
}

own_kernels=$(cd kernels && sources . | sed 's|^\./||' | paste -sd'|')
mapfile -t files < <(sources include); check '^rkv(_experimental)?\.h$' "${files[@]}"
mapfile -t files < <(sources core); check '^(rkv/rkv(_experimental)?\.h|core/[^/]+)$' "${files[@]}"
mapfile -t files < <(sources kernels); check "^(rkv/rkv(_experimental)?\\.h|core/[^/]+|${own_kernels//./\\.})\$" "${files[@]}"
mapfile -t files < <(sources src/cuda)
check '^(rkv/rkv(_experimental)?\.h|core/[^/]+|[^/]+\.h|cuda/[^/]+\.h|kernels/(launch|params)\.h)$' "${files[@]}"
mapfile -t files < <(sources src src/cuda)
check '^(rkv/rkv(_experimental)?\.h|core/[^/]+|[^/]+\.h|(cpu|cuda)/[^/]+\.h)$' "${files[@]}"

if [ "$findings" -gt 0 ]; then
  echo "check_layers: $findings include(s) point up or sideways (README.md, Structure)" >&2
  exit 1
fi
echo "check_layers: every include of include/, core/, kernels/ and src/ points down"
