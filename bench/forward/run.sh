#!/usr/bin/env bash
# bench/forward: MiniLM forward (eval, no grad) on the first B SST-2 train sentences padded to T tokens,
# pft (bench_forward.c) and PyTorch + transformers (peer.py) taking turns in one run, same threads.
# pft is measured twice: as it runs by default (padded positions skipped) and dense (the peer's work).
# Usage: bash bench/forward/run.sh [rounds=3] [B=32] [T=128] [threads=2] [reps=5]   (from anywhere)
set -eu
cd "$(dirname "$0")/../.."
rounds=${1:-3} B=${2:-32} T=${3:-128} threads=${4:-2} reps=${5:-5}
model=models/all-MiniLM-L6-v2 data=../shared/data/sst2/train.tsv
bash bench/build.sh forward
lscpu | head -n 20
echo "OpenBLAS: $(dpkg-query -W -f '${Version}' libopenblas0-pthread 2>/dev/null || echo '?') (pft runs it single-threaded, splitting GEMMs over its own $threads OpenMP threads)"
python3 -c 'import torch, transformers; print("torch", torch.__version__, " transformers", transformers.__version__)'
echo "B $B  T $T  threads $threads  reps $reps (median)  rounds $rounds (pft, torch alternately)"
pft=() dense=() torch=() longest=()
for r in $(seq "$rounds"); do
  line=$(PFT_THREADS=$threads build/bench_forward $model $data "$B" "$T" "$threads" "$reps"); echo "  $line"
  pft+=("$(echo "$line" | awk '{print $3}')")
  line=$(PFT_BENCH_DENSE=1 PFT_THREADS=$threads build/bench_forward $model $data "$B" "$T" "$threads" "$reps"); echo "  $line"
  dense+=("$(echo "$line" | awk '{print $3}')")
  line=$(python3 bench/forward/peer.py $model $data "$B" "$T" "$threads" "$reps" 2>/dev/null); echo "  $line"
  torch+=("$(echo "$line" | awk '{print $3}')")
  line=$(python3 bench/forward/peer.py $model $data "$B" 0 "$threads" "$reps" 2>/dev/null); echo "  $line (padded to the longest row)"
  longest+=("$(echo "$line" | awk '{print $3}')")
done
. bench/common.sh # med
p=$(med "${pft[@]}") d=$(med "${dense[@]}") t=$(med "${torch[@]}")
echo "forward sentences/s, same padded work: pft $d  torch $t  ratio $(awk -v a="$d" -v b="$t" 'BEGIN {printf "%.2f", a / b}')"
echo "forward sentences/s: pft $p  torch $t  ratio $(awk -v a="$p" -v b="$t" 'BEGIN {printf "%.2f", a / b}')  (pft skips padding)"
l=$(med "${longest[@]}")
echo "forward sentences/s, torch padding to the longest row instead: pft $p  torch $l  ratio $(awk -v a="$p" -v b="$l" 'BEGIN {printf "%.2f", a / b}')"
