#!/usr/bin/env bash
# bench/train: one training step (forward + backward + AdamW) of MiniLM + a sequence-classification head,
# B sentences x T tokens, pft (bench_train.c) and PyTorch + transformers (peer.py) alternately in one run,
# same threads, for two configurations: full fine-tuning and top-2 layers + head. Three ratios each:
# same padded work (pft computes the padding too: the equal-work figure), torch padding to the longest row
# (what a transformers user runs), and the benchmark as posed (B x T; pft skips the padding).
# Usage: bash bench/train/run.sh [rounds=2] [B=32] [T=128] [threads=2] [reps=3]   (from anywhere)
set -eu
cd "$(dirname "$0")/../.."
rounds=${1:-2} B=${2:-32} T=${3:-128} threads=${4:-2} reps=${5:-3}
model=models/all-MiniLM-L6-v2 data=../shared/data/sst2/train.tsv
bash bench/build.sh train
lscpu | head -n 20
python3 -c 'import torch, transformers; print("torch", torch.__version__, " transformers", transformers.__version__)'
echo "B $B  T $T  threads $threads  reps $reps (median)  rounds $rounds (pft, torch alternately)"
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
for config in full top2; do
  pft=() dense=() torch=() longest=()
  for r in $(seq "$rounds"); do
    line=$(build/bench_train $model $data "$B" "$T" "$threads" "$reps" $config); echo "  $line (padding skipped)"
    pft+=("$(echo "$line" | awk '{print $3}')")
    line=$(PFT_BENCH_DENSE=1 build/bench_train $model $data "$B" "$T" "$threads" "$reps" $config); echo "  $line (dense)"
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
