#!/usr/bin/env bash
# bench/train/precision.sh: bf16 mixed precision against fp32, pft and PyTorch, one training step of MiniLM +
# a sequence-classification head (bench_train.c, peer.py), B sentences x T tokens, all four in turn per round:
#   pft fp32 and pft bf16 (train.precision = "bf16": GEMMs on bf16 operands with fp32 sums, AMX or
#   AVX512-BF16), both computing the padding (PFT_BENCH_DENSE=1: the same padded work as torch), in one
#   process taking turns step by step (PFT_BENCH_PRECISION=fp32,bf16), so that their ratio is not the
#   machine's drift between two runs;
#   torch fp32 and torch bf16 (torch.autocast("cpu", dtype=torch.bfloat16) around the forward: PyTorch's
#   CPU mixed precision, oneDNN's bf16 kernels); and, as a transformers user runs it, torch bf16 padding to
#   the longest row against pft bf16 skipping the padding.
# Prints per configuration: pft bf16 / pft fp32 (issue 12's goal >= 1.8), torch's own bf16 / fp32 (context),
# pft bf16 / torch bf16 on the same padded work (goal >= 1.3), and the real-work ratio.
# Usage: [BUILD=build] bash bench/train/precision.sh [rounds=2] [B=32] [T=128] [threads=2] [reps=7] [configs="full"]
set -eu
cd "$(dirname "$0")/../.."
export BUILD=${BUILD:-build}
rounds=${1:-2} B=${2:-32} T=${3:-128} threads=${4:-2} reps=${5:-7} configs=${6:-full}
model=models/all-MiniLM-L6-v2 data=../shared/data/sst2/train.tsv
bash bench/build.sh train
lscpu | grep -E 'Model name|^Flags' | sed -e 's/  */ /g' -e 's/^Flags: .*\(amx_bf16\).*/Flags: ... \1 .../'
python3 -c 'import torch, transformers; print("torch", torch.__version__, " transformers", transformers.__version__)'
echo "B $B  T $T  threads $threads  reps $reps (median)  rounds $rounds (pft fp32 + bf16 in one process, torch fp32, torch bf16 in turn)"
. bench/common.sh # med
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
pft_run() { # precision(s) dense
  PFT_BENCH_PRECISION=$1 PFT_BENCH_DENSE=$2 "$BUILD/bench_train" $model $data "$B" "$T" "$threads" "$reps" "$config"
}
torch_run() { # precision T
  PFT_BENCH_PRECISION=$1 python3 bench/train/peer.py $model $data "$B" "$2" "$threads" "$reps" "$config" 2>/dev/null
}
for config in $configs; do
  pf=() pb=() pbp=() tf=() tb=() tbl=()
  for r in $(seq "$rounds"); do
    lines=$(pft_run fp32,bf16 1); echo "$lines" | sed 's/^/  /; s/$/ (dense)/'
    pf+=("$(echo "$lines" | awk '/precision fp32/ {print $3}')"); pb+=("$(echo "$lines" | awk '/precision bf16/ {print $3}')")
    line=$(torch_run fp32 "$T"); echo "  $line"; tf+=("$(echo "$line" | awk '{print $3}')")
    line=$(torch_run bf16 "$T"); echo "  $line"; tb+=("$(echo "$line" | awk '{print $3}')")
    line=$(pft_run bf16 0); echo "  $line (bf16, padding skipped)"; pbp+=("$(echo "$line" | awk '{print $3}')")
    line=$(torch_run bf16 0); echo "  $line (padded to the longest row)"; tbl+=("$(echo "$line" | awk '{print $3}')")
  done
  a=$(med "${pf[@]}") b=$(med "${pb[@]}") c=$(med "${tf[@]}") d=$(med "${tb[@]}") e=$(med "${pbp[@]}") f=$(med "${tbl[@]}")
  echo "train steps/s ($config), pft bf16 / pft fp32, same padded work: $b / $a  ratio $(ratio "$b" "$a")"
  echo "train steps/s ($config), torch bf16 autocast / torch fp32: $d / $c  ratio $(ratio "$d" "$c")"
  echo "train steps/s ($config), bf16, same padded work: pft $b  torch $d  ratio $(ratio "$b" "$d")"
  echo "train steps/s ($config), bf16, torch padding to the longest row: pft $e  torch $f  ratio $(ratio "$e" "$f")"
done
