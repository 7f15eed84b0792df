#!/usr/bin/env bash
# bench/kept: what keeping frozen weights' GEMM packings between steps buys (core/ctx.h, packed operands).
# First the GEMMs alone (bench_kept.c: MiniLM's weight GEMMs on 420 rows, kept and packed every call in
# turn, caches flushed before each), then one training step of MiniLM + a classification head
# (bench_train.c), the same binary with the packings kept (the default) and with none kept
# (PFT_PACKED_MB=0), taking turns in one run. Configurations:
# LoRA (every base weight frozen: its forward and input-gradient packings kept) and top-2 (the four lower
# layers frozen: their forward packings kept); full fine-tuning has no frozen weight, so nothing changes
# there. Per configuration and precision: the step as pft train runs it (padding skipped, ~420 tokens) and
# the dense padded step (4,096 tokens), steps/s kept / not kept, and the peak RSS of each process.
# Usage: [BUILD=build] bash bench/kept/run.sh [rounds=3] [configs="lora top2"] [precisions="fp32 bf16"]
#        [B=32] [T=128] [threads=2] [reps=9]   (from anywhere; bf16 skipped where the processor has none)
set -eu
cd "$(dirname "$0")/../.."
export BUILD=${BUILD:-build}
rounds=${1:-3} configs=${2:-lora top2} precisions=${3:-fp32 bf16} B=${4:-32} T=${5:-128} threads=${6:-2} reps=${7:-9}
model=models/all-MiniLM-L6-v2 data=../shared/data/sst2/train.tsv
bash bench/build.sh train
bash bench/build.sh kept
lscpu | grep -E 'Model name' | sed 's/  */ /g'
for precision in $precisions; do "$BUILD/bench_kept" "$threads" 21 "$precision" || true; done
echo "B $B  T $T  threads $threads  reps $reps (median)  rounds $rounds (kept, none kept in turn)"
. bench/common.sh # med
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
step() { # packed_mb precision dense config -> "steps/s peak_rss_kb"
  local out
  out=$( { PFT_PACKED_MB=$1 PFT_BENCH_PRECISION=$2 PFT_BENCH_DENSE=$3 /usr/bin/time -f 'rss %M' \
    "$BUILD/bench_train" $model $data "$B" "$T" "$threads" "$reps" "$4"; } 2>&1)
  echo "$(echo "$out" | awk '/steps\/s:/ {print $3}') $(echo "$out" | awk '/^rss / {print $2}')"
}
for precision in $precisions; do
  if [ "$precision" = bf16 ] && ! PFT_BENCH_PRECISION=bf16 "$BUILD/bench_train" $model $data 2 8 1 1 lora >/dev/null 2>&1; then
    echo "bf16: not run by this processor, skipped"; continue
  fi
  for config in $configs; do
    for dense in 0 1; do
      kept=() none=() rss_kept=() rss_none=()
      for r in $(seq "$rounds"); do
        read -r s m <<<"$(step "" "$precision" $dense "$config")"; kept+=("$s") rss_kept+=("$m")
        read -r s m <<<"$(step 0 "$precision" $dense "$config")"; none+=("$s") rss_none+=("$m")
      done
      a=$(med "${kept[@]}") b=$(med "${none[@]}")
      echo "$config $precision $([ $dense = 1 ] && echo 'dense     ' || echo 'real work '): steps/s kept ${kept[*]} | none kept ${none[*]} | ratio $(ratio "$a" "$b") | peak RSS MB kept $(( $(med "${rss_kept[@]}" | cut -d. -f1) / 1024 )) none $(( $(med "${rss_none[@]}" | cut -d. -f1) / 1024 ))"
    done
  done
done
