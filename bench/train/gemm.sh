#!/usr/bin/env bash
# bench/train/gemm.sh: the dense full fine-tuning step (MiniLM + classification head, AdamW) with pft's own
# fp32 GEMM (core/gemm_tiles.c, the default where AVX-512 runs) against the same step with OpenBLAS's
# (PFT_CPU_GEMM=openblas), alternating in one run, at each sequence length T given: 15 is an SST-2 batch
# (its training sentences average 13 tokens), 128 the step bench/train/run.sh compares with torch.
# Prints each figure and the ratio avx512 / openblas (medians over the rounds).
# Usage: [BUILD=build] bash bench/train/gemm.sh [rounds=3] [threads=2] [T ...=15 128]   (from anywhere)
set -eu
cd "$(dirname "$0")/../.."
export BUILD=${BUILD:-build}
rounds=${1:-3} threads=${2:-2}
shift 2 2>/dev/null || shift $#
lengths=${*:-15 128}
model=models/all-MiniLM-L6-v2 data=../shared/data/sst2/train.tsv
bash bench/build.sh train
echo "machine: $(lscpu | grep 'Model name' | sed 's/  */ /g'); threads $threads; rounds $rounds"
. bench/common.sh # med
for T in $lengths; do
  reps=$((T < 64 ? 15 : 7)) # steps per figure (the median, after a warm-up step)
  tiles=() blas=()
  for r in $(seq "$rounds"); do
    for gemm in openblas avx512; do
      line=$(PFT_CPU_GEMM=$gemm PFT_BENCH_DENSE=1 "$BUILD/bench_train" $model $data 32 "$T" "$threads" "$reps" full)
      echo "  T $T $gemm: $line"
      v=$(echo "$line" | awk '{print $3}')
      if [ "$gemm" = avx512 ]; then tiles+=("$v"); else blas+=("$v"); fi
    done
  done
  a=$(med "${tiles[@]}") b=$(med "${blas[@]}")
  echo "dense full step, 32 x $T: pft's GEMM $a  OpenBLAS $b steps/s  ratio $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a / b}')"
done
