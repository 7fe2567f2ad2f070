#!/usr/bin/env bash
# Every shell script of the project that sets `-o pipefail` must not pipe into
# a reader that can exit before its writer is done (`grep -q`, `grep -m`,
# `head`): the writer then dies of SIGPIPE (exit 141), pipefail reports the
# pipeline as failed, and a check that found what it looked for fails at
# random. Capture the output first (`out=$(tool)`; `grep -q x <<<"$out"`), or
# use a reader that consumes all of its input (`sed -n 1,12p`).
# Usage: tests/check_pipelines.sh [repository root]   (exit 1 on a finding)
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"

scripts=()
while IFS= read -r -d '' file; do
  first=$(sed -n 1p "$file")
  case "$file" in
    *.sh) scripts+=("$file") ;;
    *) [[ "$first" == '#!'*sh* ]] && scripts+=("$file") ;;
  esac
done < <(find . -path ./.git -prune -o -path './build*' -prune -o -type f \
              \( -name '*.sh' -o -perm -u+x \) -print0)

# A pipe (not `||`) followed by an early-exiting reader.
early_reader='(^|[^|])\|[[:space:]]*(head([[:space:]]|$)|grep[[:space:]]+(-[[:alnum:]]*[qm]|--quiet|--max-count))'
findings=0
for file in "${scripts[@]}"; do
  grep -Eq 'set[[:space:]]+-[[:alnum:]]*o[[:space:]]+pipefail|set[[:space:]]+-o[[:space:]]+pipefail' "$file" || continue
  while IFS=: read -r line _; do
    echo "$file:$line: pipe into an early-exiting reader under pipefail:" >&2
    sed -n "${line}p" "$file" >&2
    findings=$((findings + 1))
  done < <(sed -E "s/\"[^\"]*\"//g; s/'[^']*'//g" "$file" |   # quoted text is not code
           grep -nE "$early_reader" | grep -vE '^[0-9]+:[[:space:]]*#' || true)
done

if [ "$findings" -gt 0 ]; then
  echo "check_pipelines: $findings finding(s); capture the output first, then grep it" >&2
  exit 1
fi
echo "check_pipelines: ${#scripts[@]} scripts, none pipes into grep -q/-m or head under pipefail"
