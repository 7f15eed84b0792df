#!/usr/bin/env bash
# Runs every test suite and ends with one line `N passed, N failed` (the sum over suites); exits non-zero
# when anything failed, including a suite that crashed before printing its own summary line.
# Suites: C unit tests (plain build, then AddressSanitizer + UBSan build), Lua tests through the pft
# host, the LuaRocks install check, and the libFuzzer harnesses (corpus replay + 30 s each). Built by `make test`, which builds everything first.
set -u
cd "$(dirname "$0")/.."
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
total_pass=0 total_fail=0
# a hung suite fails after this many seconds instead of holding CI until its own limit
suite_timeout=${PFT_SUITE_TIMEOUT:-900}

# run NAME CMD...: runs a suite (at most suite_timeout seconds), echoes its output, adds its
# `X: N passed, N failed` lines to the totals
run() {
  local name=$1; shift
  local out="$log/$name.out" rc
  timeout --kill-after=10 "$suite_timeout" "$@" >"$out" 2>&1
  rc=$?
  cat "$out"
  local p f
  read -r p f < <(awk '/^[A-Za-z0-9_ .-]+: [0-9]+ passed, [0-9]+ failed/ {
      for (i = 1; i <= NF; i++) { if ($i ~ /^passed,?$/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
      END { print p + 0, f + 0 }' "$out")
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "FAIL $name: timed out after ${suite_timeout} s (PFT_SUITE_TIMEOUT)"
    f=$((f + 1))
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAIL $name: exited with status $rc without reporting a failed check"
    f=1
  fi
  total_pass=$((total_pass + p)) total_fail=$((total_fail + f))
}

# the binaries of tests/c's sources only: a binary left in a build directory by a test since removed or
# renamed would run (and count) too
c_tests=$(for src in tests/c/test_*.c; do basename "$src" .c; done)
for t in $c_tests; do run "c-$t" "build/tests/$t"; done
for t in $c_tests; do
  run "asan-$t" env ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 "build-asan/tests/$t"
done
[ -f tests/lua/run.lua ] && run lua build/pft tests/lua/run.lua
[ -f tests/luarocks.sh ] && run luarocks bash tests/luarocks.sh
run fuzz bash tests/fuzz/run.sh --seconds 30  # corpus replay + 30 s fuzzing per harness (docs/fuzzing.md)

echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
