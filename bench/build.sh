#!/usr/bin/env bash
# Builds bench/NAME/bench_NAME.c against $BUILD/libpftcore.a with the Makefile's flags and libraries.
# Usage: [BUILD=build] bash bench/build.sh forward|train   (from anywhere; builds the library first)
# BUILD (default build) is the Makefile's build directory: the library and bench_NAME go there.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
make -s BUILD="$BUILD" "$BUILD/libpftcore.a"
flags=$(make -s -f Makefile print-bench-flags)
eval "$flags" # sets BENCH_CFLAGS and BENCH_LIBS
${CC:-cc} $BENCH_CFLAGS -Icore "bench/$1/bench_$1.c" "$BUILD/libpftcore.a" $BENCH_LIBS -o "$BUILD/bench_$1"
