#!/usr/bin/env bash
# bench/optim/run.sh: AdamW on the word embeddings as an SST-2 run updates them (bench_optim.c) in this tree
# against git revision REV, the two builds in turn. Both give the same bits; only their time differs.
# Prints each run's line, then the medians over rounds of each build's mean step time and old / new (above 1:
# this tree is faster).
# Usage: bash bench/optim/run.sh REV [rounds=3] [steps=500] [threads=2]   (from anywhere)
set -eu
cd "$(dirname "$0")/../.."
rev=${1:?usage: bash bench/optim/run.sh REV [rounds=3] [steps=500] [threads=2]}
rounds=${2:-3} steps=${3:-500} threads=${4:-2}
model=models/all-MiniLM-L6-v2 data=../shared/data/sst2/train.tsv
. bench/common.sh # med, old_build
old_build "$rev" optim
echo "$(lscpu | grep 'Model name' | sed 's/  */ /g'); threads $threads; $steps steps; $rounds rounds, old ($rev) and new in turn"
old=() new=()
for r in $(seq "$rounds"); do
  line=$("$OLD/bench_optim" $model $data "$steps" "$threads"); echo "old: $line"
  old+=("$(echo "$line" | sed 's/.*mean \([0-9.]*\) ms.*/\1/')")
  line=$(build/bench_optim $model $data "$steps" "$threads"); echo "new: $line"
  new+=("$(echo "$line" | sed 's/.*mean \([0-9.]*\) ms.*/\1/')")
done
awk -v a="$(med "${old[@]}")" -v b="$(med "${new[@]}")" 'BEGIN {printf "mean AdamW step: %.3f -> %.3f ms (old / new %.2f)\n", a, b, a / b}'
