#!/usr/bin/env bash
# The command line of one of the example programs, as a user meets it:
#   - `TOOL --help` exits 0 and prints a usage line naming every option the
#     cases below use;
#   - each case "ARGS => TEXT": TOOL ARGS exits 2 (a usage error, before any
#     work) and says TEXT (the valid values, or what was wrong);
#   - each case "ARGS ~> REGEX": TOOL ARGS succeeds and its first line of
#     output (what it runs with) matches the extended regular expression;
#     "ARGS !> REGEX": ... and that first line does not match it.
# ARGS are split on spaces.
#   check_cli.sh TOOL CASE...
set -euo pipefail
tool=$1
shift
name=$(basename "$tool")
passed=0 failed=0
fail() { echo "FAILED: $name $*"; failed=$((failed + 1)); }

set +e
help=$("$tool" --help 2>&1)
status=$?
set -e
if [ $status -ne 0 ]; then fail "--help exited $status: $help"
elif ! grep -q '^usage: ' <<<"$help"; then fail "--help printed no usage line: $help"
else passed=$((passed + 1))
fi

for case in "$@"; do
  if [[ "$case" == *" => "* ]]; then
    args=${case%% => *} expect=${case#* => }
  elif [[ "$case" == *" ~> "* ]]; then
    args=${case%% ~> *} expect=${case#* ~> }
  else
    args=${case%% !> *} expect=${case#* !> }
  fi
  read -r -a argv <<<"$args"
  for arg in "${argv[@]}"; do  # every option a case uses is in the help, but the unknown ones
    [[ "$arg" == --* && "$expect" != *"unknown option '$arg'"* ]] || continue
    grep -qe "$arg" <<<"$help" || fail "--help does not mention $arg"
  done
  set +e
  out=$("$tool" "${argv[@]}" 2>&1)
  status=$?
  set -e
  if [[ "$case" == *" => "* ]]; then
    if [ $status -ne 2 ]; then fail "$args: exit $status, expected 2 (a usage error): $out"
    elif ! grep -qF -e "$expect" <<<"$out"; then fail "$args: output does not say '$expect': $out"
    else passed=$((passed + 1))
    fi
  else
    first=$(sed -n 1p <<<"$out")
    matches=0
    grep -qE -e "$expect" <<<"$first" && matches=1
    if [ $status -ne 0 ]; then fail "$args: exit $status: $out"
    elif [[ "$case" == *" ~> "* && $matches -eq 0 ]]; then fail "$args: first line '$first' does not match $expect"
    elif [[ "$case" == *" !> "* && $matches -eq 1 ]]; then fail "$args: first line '$first' matches $expect"
    else passed=$((passed + 1))
    fi
  fi
done
echo "$name: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
