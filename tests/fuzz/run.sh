#!/usr/bin/env bash
# tests/fuzz/run.sh [--keep] [--seconds N] [HARNESS...]: runs the libFuzzer harnesses built by
# `make fuzz-build` (build-fuzz/fuzz/fuzz_*), one at a time. Each harness is one check:
#   1. replay: every input of its committed corpus, tests/fuzz/corpus/<harness>/, runs once (the
#      regression inputs of past crashes among them): no crash, no sanitizer report, no leak;
#   2. fuzz: N seconds (FUZZ_SECONDS, default 30) of fuzzing from that corpus, with its dictionary
#      (tests/fuzz/<harness>.dict) when there is one: no crash, hang or out-of-memory.
# Both clean: passed. Prints one line per harness (execs, exec/s, new inputs) and ends with
# `fuzz: N passed, N failed`; exits non-zero when one failed. A failure leaves its input in
# build-fuzz/artifacts/<harness>/ and prints the end of the report; reproduce it with
# `build-fuzz/fuzz/<harness> build-fuzz/artifacts/<harness>/crash-...` (docs/fuzzing.md).
# --keep: fuzz into build-fuzz/corpus/<harness>/, kept between runs (what `make fuzz` does), instead of
# a scratch copy that starts from the committed corpus every time (what `make test` does).
set -u
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-30} keep=0 names=()
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1 ;;
    --seconds) seconds=$2; shift ;;
    *) names+=("$1") ;;
  esac
  shift
done
build=${FUZZ_BUILD:-build-fuzz}
if [ ${#names[@]} -eq 0 ]; then
  for b in "$build"/fuzz/fuzz_*; do [ -x "$b" ] && names+=("$(basename "$b")"); done
fi
if [ ${#names[@]} -eq 0 ]; then
  echo "FAIL fuzz: no harness in $build/fuzz (run make fuzz-build)"
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi

# The harnesses write their inputs to files: a RAM disk when there is one (5x the execs of a disk)
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=${TMPDIR:-/tmp}
scratch=$(mktemp -d "$shm/pft-fuzz-run.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# libFuzzer options for every harness: inputs up to 4 KiB; one input over 10 s is a hang (inputs take
# milliseconds); 2 GiB of RSS (and of one malloc) is out of memory. One process at a time (CI: 2 cores).
common=(-max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

pass=0 fail=0
for h in "${names[@]}"; do
  bin=$build/fuzz/$h corpus=tests/fuzz/corpus/$h art=$build/artifacts/$h
  log=$scratch/$h.log
  mkdir -p "$art"
  opts=("${common[@]}" "-artifact_prefix=$art/")
  [ -f "tests/fuzz/$h.dict" ] && opts+=("-dict=tests/fuzz/$h.dict")
  if [ ! -x "$bin" ]; then
    echo "FAIL $h: $bin is not built (make fuzz-build)"
    fail=$((fail + 1))
    continue
  fi
  export TMPDIR=$scratch/tmp-$h
  mkdir -p "$TMPDIR"

  # 1. replay the committed corpus, each input once
  inputs=("$corpus"/*)
  [ -e "${inputs[0]}" ] || inputs=()
  if [ ${#inputs[@]} -gt 0 ] && ! "$bin" "${opts[@]}" "${inputs[@]}" >"$log" 2>&1; then
    echo "FAIL $h: a committed corpus input crashes (${#inputs[@]} inputs replayed):"
    grep -E "Running: |ERROR|SUMMARY|runtime error|FUZZ_CHECK" "$log" | tail -5 | sed 's/^/    /'
    tail -n 30 "$log" | sed 's/^/    | /'
    fail=$((fail + 1))
    continue
  fi

  # 2. fuzz from the corpus
  if [ "$keep" = 1 ]; then work=$build/corpus/$h; else work=$scratch/corpus-$h; fi
  mkdir -p "$work"
  start=$(date +%s)
  "$bin" "${opts[@]}" -max_total_time="$seconds" "$work" "$corpus" >"$log" 2>&1
  rc=$?
  took=$(($(date +%s) - start))
  execs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log")
  rate=$(awk '/^stat::average_exec_per_sec:/ {print $2}' "$log")
  added=$(awk '/^stat::new_units_added:/ {print $2}' "$log")
  line="${#inputs[@]} corpus inputs replayed; ${seconds} s fuzzing (${took} s): ${execs:-?} execs (${rate:-?}/s), ${added:-?} new inputs"
  if [ "$rc" -eq 0 ]; then
    echo "PASS $h: $line, 0 crashes"
    pass=$((pass + 1))
  else
    found=$(grep -oE "(Test unit written to|artifact_prefix.*Test unit written to) [^ ]+" "$log" | awk '{print $NF}' | tail -1)
    echo "FAIL $h: $line, 1 crash (exit $rc): ${found:-no input saved}"
    grep -E "ERROR|SUMMARY|runtime error|FUZZ_CHECK" "$log" | head -5 | sed 's/^/    /'
    tail -n 40 "$log" | sed 's/^/    | /'
    fail=$((fail + 1))
  fi
done
echo "fuzz: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
