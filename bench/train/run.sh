#!/usr/bin/env bash
# bench/train: one training step (forward + backward + AdamW) of MiniLM + a sequence-classification head,
# B sentences x T tokens, pft (bench_train.c) and PyTorch + transformers (peer.py) alternately in one run,
# same threads, for three configurations: full fine-tuning, top-2 layers + head, and LoRA (r 8, alpha 16,
# dropout 0.1 on every layer's query and value; base frozen, adapters + classifier train; the peer is PEFT).
# Three ratios each: same padded work (pft computes the padding too: the equal-work figure), torch
# padding to the longest row (what a transformers user runs), and the benchmark as posed (B x T; pft
# skips the padding). In the last two pft runs the step as pft train does: padding skipped, and the last
# layer past its attention on the [CLS] rows only (core/nn.h, hidden_states).
# Ends with the frozen-prefix speedup and LoRA's step time over full fine-tuning's, same padded work.
# Usage: [BUILD=build] bash bench/train/run.sh [rounds=2] [B=32] [T=128] [threads=2] [reps=7]   (from anywhere)
# reps: steps per figure (the median, after a warm-up step). 7, not fewer: pft's first two steps after
# the warm-up run ~5% slower than the rest (PFT_BENCH_STEPS=1 bench_train prints every step), and its
# 3-step figures varied between runs of this script (a dense full step: 0.52-0.57 steps/s in three runs
# of 3 steps against 0.64-0.65 in two of 7, on builds of one day); the steady state is what training spends
# its time in.
# BUILD: the build directory bench_train is built into (bench/build.sh).
set -eu
cd "$(dirname "$0")/../.."
export BUILD=${BUILD:-build}
rounds=${1:-2} B=${2:-32} T=${3:-128} threads=${4:-2} reps=${5:-7}
model=models/all-MiniLM-L6-v2 data=../shared/data/sst2/train.tsv
bash bench/build.sh train
lscpu | head -n 20
python3 -c 'import torch, transformers; print("torch", torch.__version__, " transformers", transformers.__version__)'
python3 -c 'import peft; print("peft", peft.__version__, "(the lora peer)")'
echo "B $B  T $T  threads $threads  reps $reps (median)  rounds $rounds (pft, torch alternately)"
. bench/common.sh # med
for config in full top2 lora; do
  pft=() dense=() torch=() longest=()
  for r in $(seq "$rounds"); do
    line=$("$BUILD/bench_train" $model $data "$B" "$T" "$threads" "$reps" $config); echo "  $line (padding skipped)"
    pft+=("$(echo "$line" | awk '{print $3}')")
    line=$(PFT_BENCH_DENSE=1 "$BUILD/bench_train" $model $data "$B" "$T" "$threads" "$reps" $config); echo "  $line (dense)"
    dense+=("$(echo "$line" | awk '{print $3}')")
    line=$(python3 bench/train/peer.py $model $data "$B" "$T" "$threads" "$reps" $config 2>/dev/null); echo "  $line"
    torch+=("$(echo "$line" | awk '{print $3}')")
    line=$(python3 bench/train/peer.py $model $data "$B" 0 "$threads" "$reps" $config 2>/dev/null); echo "  $line (padded to the longest row)"
    longest+=("$(echo "$line" | awk '{print $3}')")
  done
  p=$(med "${pft[@]}") d=$(med "${dense[@]}") t=$(med "${torch[@]}") l=$(med "${longest[@]}")
  echo "train steps/s ($config), same padded work: pft $d  torch $t  ratio $(awk -v a="$d" -v b="$t" 'BEGIN {printf "%.2f", a / b}')"
  echo "train steps/s ($config), torch padding to the longest row: pft $p  torch $l  ratio $(awk -v a="$p" -v b="$l" 'BEGIN {printf "%.2f", a / b}')"
  echo "train steps/s ($config): pft $p  torch $t  ratio $(awk -v a="$p" -v b="$t" 'BEGIN {printf "%.2f", a / b}')  (pft skips padding)"
  eval "p_$config=$d t_$config=$t"
done
echo "frozen-prefix speedup (top2 / full steps/s, same padded work): pft $(awk -v a="$p_top2" -v b="$p_full" 'BEGIN {printf "%.2f", a / b}')" \
     " torch $(awk -v a="$t_top2" -v b="$t_full" 'BEGIN {printf "%.2f", a / b}')"
echo "LoRA step time / full step time (same padded work): pft $(awk -v a="$p_full" -v b="$p_lora" 'BEGIN {printf "%.2f", a / b}')" \
     " torch $(awk -v a="$t_full" -v b="$t_lora" 'BEGIN {printf "%.2f", a / b}')"
