#!/usr/bin/env bash
# CI part of the API fuzzer (tests/fuzz/README.md), called by .ci/run:
#   bash .ci/fuzz.sh setup   install clang 14 and its sanitizer/libFuzzer runtimes
#   bash .ci/fuzz.sh check   build the fuzzer with clang, AddressSanitizer and
#                            UndefinedBehaviorSanitizer (build-fuzz/), replay the
#                            corpus and the regression inputs, then fuzz for
#                            FUZZ_SECONDS (default 180) starting from the corpus.
# A broken promise or a sanitizer report fails CI; the input that caused it is
# kept in build-fuzz/fuzz-artifacts/ (the path is printed: keep that folder as
# the CI job's artifact), and its program is printed call by call.
# (./rkv test replays the corpus too, with the default compiler, in every build.)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
build=build-fuzz
seconds=${FUZZ_SECONDS:-180}

case "${1:-}" in
  setup)
    missing=()
    for package in clang libclang-rt-dev; do
      dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
      apt-get update -qq
      apt-get install -y -qq "${missing[@]}"
    fi
    version=$(clang --version)
    echo "${version%%$'\n'*}"
    ;;
  check)
    echo "-- build the fuzzer (clang, ASan + UBSan, coverage from librkv itself) in $build"
    CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DRKV_SANITIZE='address;undefined' -DRKV_CUDA=OFF -DRKV_BUILD_BINDINGS=OFF -DRKV_BUILD_EXAMPLES=OFF >/dev/null
    cmake --build "$build" --target rkv_fuzz rkv_fuzz_replay -j"$(nproc)"
    # One OpenBLAS thread: its spinning workers only slow the small products down.
    export OPENBLAS_NUM_THREADS=1

    # Both steps run even if the first fails, so one CI log shows everything.
    failed=0
    echo "-- replay the corpus and the regression inputs"
    "$build/tests/fuzz/rkv_fuzz_replay" tests/fuzz/corpus tests/fuzz/regressions || failed=1

    echo "-- fuzz for ${seconds} s"
    work="$build/fuzz-corpus" artifacts="$build/fuzz-artifacts"
    rm -rf "$work" "$artifacts"
    mkdir -p "$work" "$artifacts"
    status=0
    "$build/tests/fuzz/rkv_fuzz" -max_total_time="$seconds" -timeout=30 -max_len=1500 -rss_limit_mb=4096 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" tests/fuzz/corpus 2>"$build/fuzz.log" || status=$?
    grep -E '^(#[0-9]+ +(INITED|DONE|pulse)|stat::|Done )' "$build/fuzz.log" || true
    if [ "$status" -ne 0 ]; then
      failed=1
      tail -n 60 "$build/fuzz.log"
      for input in "$artifacts"/*; do
        [ -f "$input" ] || continue
        echo "fuzz.sh: the fuzzer found a failing input, kept at $(readlink -f "$input")"
        "$build/tests/fuzz/rkv_fuzz_replay" --print "$input" || true
      done
      echo "fuzz.sh: fuzzing failed (exit $status); replay with: $build/tests/fuzz/rkv_fuzz_replay --print <input>" >&2
    else
      echo "fuzz.sh: ${seconds} s of fuzzing found nothing"
    fi
    exit "$failed"
    ;;
  *)
    echo "usage: bash .ci/fuzz.sh setup|check" >&2
    exit 2
    ;;
esac
