#!/usr/bin/env bash
# check_pipelines.sh finds a pipe into `grep -q` under pipefail, in a git
# checkout (an untracked new script counts; an ignored one does not) and in a
# plain folder; a clean tree passes.
#   tests/check_pipelines_test.sh PATH/TO/check_pipelines.sh
set -uo pipefail
check=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
expect() {  # expect NAME STATUS DIR
  local output rc
  output=$(bash "$check" "$3" 2>&1)
  rc=$?
  if [ "$rc" -eq "$2" ]; then echo "ok: $1 (exit $rc)"; else echo "FAILED: $1: exit $rc, expected $2:"; echo "$output"; failed=1; fi
}
# (the pipe character comes from an argument, so this file is not a finding itself)
bad=$(printf '#!/usr/bin/env bash\nset -euo pipefail\nls %s grep -q x\n' '|')
good='#!/usr/bin/env bash
set -euo pipefail
out=$(ls); grep -q x <<<"$out" || true
'

mkdir -p "$work/plain/tools" && printf '%s' "$good" > "$work/plain/tools/good.sh"
expect "a plain folder without a finding" 0 "$work/plain"
printf '%s' "$bad" > "$work/plain/tools/bad.sh"
expect "a plain folder with one" 1 "$work/plain"

repo=$work/repo
mkdir -p "$repo/.staging" && git -C "$repo" init -q
printf '%s' "$good" > "$repo/good.sh"
printf '.staging/\n' > "$repo/.gitignore"
printf '%s' "$bad" > "$repo/.staging/run.sh"   # ignored (staged for a GPU machine, say): not the project's
expect "a checkout whose only finding is ignored" 0 "$repo"
printf '%s' "$bad" > "$repo/new.sh"                # untracked, not ignored: about to be committed
chmod +x "$repo/new.sh"
expect "a checkout with an untracked script" 1 "$repo"
exit $failed
