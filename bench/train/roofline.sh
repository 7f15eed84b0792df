#!/usr/bin/env bash
# bench/train/roofline.sh: issue 12's P2, the dense full-FT step's FLOP/s over the GEMM's on the step's
# biggest shape, with the two measured in turns in one run (the machines' speed drifts 5-15% over minutes:
# a step figure from one run over a GEMM figure from another measured the drift as much as the step).
# Each round: pft's dense full step (bench_train, PFT_BENCH_DENSE=1, median of reps steps), then MiniLM's
# biggest GEMM, FFN up (T x 1536 x 384), in its three forms (forward, dX, dW) through pft's op, the backend
# GEMM and OpenBLAS threaded (bench_gemm, PFT_BENCH_SHAPES=3). Per round two ratios:
#   P2        step FLOP/s / the fastest of pft op, backend GEMM and OpenBLAS on the forward x W^T (the figure
#             the earlier notes quote);
#   P2 strict step FLOP/s / the fastest GEMM of all three forms.
# Prints each round and the medians over rounds.
# Step FLOPs: fwd + bwd = 3 x fwd, fwd = 2 x tokens x layers x (4 h^2 + 2 h i + 2 T h) multiply-adds (the
# linear layers and attention's two products; embeddings, pooler and head left out), h, i and the layer
# count from the model's config.json: 275.4 GFLOP for MiniLM at 32 x 128.
# Usage: [BUILD=build] bash bench/train/roofline.sh [rounds=3] [B=32] [T=128] [threads=2] [reps=7]   (from anywhere)
set -eu
cd "$(dirname "$0")/../.."
export BUILD=${BUILD:-build}
rounds=${1:-3} B=${2:-32} T=${3:-128} threads=${4:-2} reps=${5:-7}
model=models/all-MiniLM-L6-v2 data=../shared/data/sst2/train.tsv
bash bench/build.sh train
bash bench/build.sh gemm
gflop=$(python3 -c "
import json; c = json.load(open('$model/config.json'))
h, i, L, tok = c['hidden_size'], c['intermediate_size'], c['num_hidden_layers'], $B * $T
print(round(3 * 2 * tok * L * (4 * h * h + 2 * h * i + 2 * $T * h) / 1e9, 1))")
echo "machine: $(lscpu | grep 'Model name' | sed 's/  */ /g'), $(nproc) cores; threads $threads; B $B T $T; step $gflop GFLOP; reps $reps (median)"
. bench/common.sh # med
p2=() strict=()
for r in $(seq "$rounds"); do
  step=$(PFT_BENCH_DENSE=1 "$BUILD/bench_train" $model $data "$B" "$T" "$threads" "$reps" full | awk '{print $3}')
  # bench_gemm's lines: "... GFLOP/s: pft op X  backend GEMM Y  ratio R   | OpenBLAS threaded Z ..."
  gemm=$(PFT_BENCH_SHAPES=3 PFT_BENCH_TOKENS=$((B * T)) "$BUILD/bench_gemm" "$threads" "$reps" | awk '
    /GFLOP\/s:/ { for (i = 1; i <= NF; i++) { if ($i == "op") a = $(i + 1); if ($i == "GEMM") b = $(i + 1); if ($i == "threaded") c = $(i + 1) }
                  best = a; if (b > best) best = b; if (c > best) best = c
                  n++; if (n == 1) fwd = best; if (best > all) all = best }
    END { print fwd, all }')
  read -r fwd all <<<"$gemm"
  flops=$(awk -v s="$step" -v g="$gflop" 'BEGIN {printf "%.1f", s * g}')
  p2+=("$(awk -v f="$flops" -v g="$fwd" 'BEGIN {printf "%.3f", f / g}')")
  strict+=("$(awk -v f="$flops" -v g="$all" 'BEGIN {printf "%.3f", f / g}')")
  echo "round $r: step $step steps/s = $flops GFLOP/s; FFN up forward best $fwd GFLOP/s, all three forms best $all: P2 ${p2[-1]}  strict ${strict[-1]}"
done
echo "P2 (dense full step / fastest GEMM on FFN up forward), median of $rounds rounds: $(med "${p2[@]}")  strict (fastest of its three forms): $(med "${strict[@]}")"
