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

# The project's files: in a git checkout, those tracked or about to be (not
# ignored build output, staged binaries or data); elsewhere every file but
# build folders.
candidates() {
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard
  else
    find . -path ./.git -prune -o -path './build*' -prune -o -type f -print0
  fi
}
scripts=()
while IFS= read -r -d '' file; do
  [ -f "$file" ] || continue
  case "$file" in
    *.sh) scripts+=("$file") ;;
    *) [ -x "$file" ] && [[ "$(head -c 2 "$file")" == '#!' ]] && [[ "$(sed -n 1p "$file")" == '#!'*sh* ]] &&
         scripts+=("$file") ;;
  esac
done < <(candidates)

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
