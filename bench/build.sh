#!/usr/bin/env bash
# Builds bench/NAME/bench_NAME.c against build/libpftcore.a with the Makefile's flags and libraries.
# Usage: bash bench/build.sh forward|train   (from anywhere; builds the library first)
set -eu
cd "$(dirname "$0")/.."
make -s build/libpftcore.a
flags=$(make -s -f Makefile print-bench-flags)
eval "$flags" # sets BENCH_CFLAGS and BENCH_LIBS
${CC:-cc} $BENCH_CFLAGS -Icore "bench/$1/bench_$1.c" build/libpftcore.a $BENCH_LIBS -o "build/bench_$1"
