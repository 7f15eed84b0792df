#!/usr/bin/env bash
# bench/kernels/run.sh: the fused dropout + residual add + LayerNorm kernels (forward and backward, [T, 384],
# p 0.1; bench_kernels.c) of this tree against those of git revision REV, the two builds in turn, under each
# kernel table this processor runs. The kernels give the same bits in both builds; only their time differs.
# Prints per table the medians over rounds and old / new (above 1: this tree is faster).
# Usage: bash bench/kernels/run.sh REV [rounds=3] [threads=2] [T=4096]   (from anywhere)
set -eu
cd "$(dirname "$0")/../.."
rev=${1:?usage: bash bench/kernels/run.sh REV [rounds=3] [threads=2] [T=4096]}
rounds=${2:-3} threads=${3:-2} T=${4:-4096}
. bench/common.sh # med, old_build
old_build "$rev" kernels
echo "$(lscpu | grep 'Model name' | sed 's/  */ /g'); threads $threads; [$T, 384]; $rounds rounds, old ($rev) and new in turn"
for table in avx512 avx2 baseline; do
  PFT_CPU_KERNELS=$table build/bench_kernels 1 1 16 >/dev/null 2>&1 || continue # not runnable here
  of=() ob=() nf=() nb=()
  for r in $(seq "$rounds"); do
    line=$(PFT_CPU_KERNELS=$table "$OLD/bench_kernels" "$threads" 41 "$T")
    of+=("$(echo "$line" | sed 's/.*forward \([0-9.]*\) ms.*/\1/')"); ob+=("$(echo "$line" | sed 's/.*backward \([0-9.]*\) ms.*/\1/')")
    line=$(PFT_CPU_KERNELS=$table build/bench_kernels "$threads" 41 "$T")
    nf+=("$(echo "$line" | sed 's/.*forward \([0-9.]*\) ms.*/\1/')"); nb+=("$(echo "$line" | sed 's/.*backward \([0-9.]*\) ms.*/\1/')")
  done
  f0=$(med "${of[@]}") f1=$(med "${nf[@]}") b0=$(med "${ob[@]}") b1=$(med "${nb[@]}")
  awk -v t="$table" -v f0="$f0" -v f1="$f1" -v b0="$b0" -v b1="$b1" 'BEGIN {
    printf "%-8s forward %.3f -> %.3f ms (old / new %.2f)   backward %.3f -> %.3f ms (old / new %.2f)\n", t, f0, f1, f0 / f1, b0, b1, b0 / b1 }'
done
