#!/usr/bin/env bash
# bench/steal: what work stealing in the tiled GEMM buys (core/gemm_tiles.c): bench_steal.c times MiniLM's
# nine dense-step GEMM shapes with stealing and with static shares alone, in turn, first on the machine as
# it is, then with one busy process beside the benchmark (a shell loop: it takes half of one core's time,
# as another job or a virtual machine's neighbour would), for each precision; then whole training steps
# (bench_train.c, PFT_BENCH_STATIC=1 for static shares) the same two ways: full fine-tuning dense (4,096
# tokens) and LoRA as pft train runs it (padding skipped), fp32, `rounds` rounds in turn.
# Usage: [BUILD=build] bash bench/steal/run.sh [precisions="fp32 bf16"] [reps=11] [threads=2] [rounds=3]
#        (from anywhere; bf16 skipped where the processor has none)
set -eu
cd "$(dirname "$0")/../.."
export BUILD=${BUILD:-build}
precisions=${1:-fp32 bf16} reps=${2:-11} threads=${3:-2} rounds=${4:-3}
model=models/all-MiniLM-L6-v2 data=../shared/data/sst2/train.tsv
bash bench/build.sh steal
bash bench/build.sh train
. bench/common.sh # med
lscpu | grep -E 'Model name' | sed 's/  */ /g'
busy=
trap '[ -n "$busy" ] && kill "$busy" 2>/dev/null; true' EXIT
for load in none "one busy process"; do
  if [ "$load" != none ]; then
    sh -c 'while :; do :; done' &
    busy=$!
  fi
  for precision in $precisions; do
    echo "-- load: $load"
    "$BUILD/bench_steal" "$threads" "$reps" "$precision" || true
  done
  for step in "full 1" "lora 0"; do
    read -r config dense <<<"$step"
    fixed=() stealing=()
    for r in $(seq "$rounds"); do
      for s in 1 0; do
        v=$(PFT_BENCH_STATIC=$s PFT_BENCH_DENSE=$dense "$BUILD/bench_train" $model $data 32 128 "$threads" 7 "$config" | awk '{print $3}')
        if [ "$s" = 1 ]; then fixed+=("$v"); else stealing+=("$v"); fi
      done
    done
    a=$(med "${fixed[@]}") b=$(med "${stealing[@]}")
    echo "-- load: $load; $config step ($([ "$dense" = 1 ] && echo dense || echo real work)), steps/s: static ${fixed[*]} | stealing ${stealing[*]} | ratio $(awk -v a="$b" -v b="$a" 'BEGIN {printf "%.3f", a / b}')"
  done
done
