#!/usr/bin/env bash
# bench/gemm: pft matmul/linear vs bare cblas_sgemm, same process, same buffers, same threads.
# Usage: [PFT_BENCH_TOKENS=4096] bash bench/gemm/run.sh [threads=2] [reps=7] [precision=fp32|bf16]   (from the
# repository root, after `make`). PFT_BENCH_TOKENS: the GEMMs' token rows (default 4,096: 32 x 128).
set -eu
cd "$(dirname "$0")/../.."
make -s build/libpftcore.a
cc -O2 -std=c11 -D_GNU_SOURCE -Icore $(pkg-config --cflags openblas) bench/gemm/bench_gemm.c build/libpftcore.a \
   $(pkg-config --libs openblas) -fopenmp -lutf8proc -lcjson -lm -lpthread -o build/bench_gemm
lscpu | grep -E 'Model name|^CPU\(s\)' | sed 's/  */ /g'
build/bench_gemm "${1:-2}" "${2:-7}" "${3:-fp32}"
