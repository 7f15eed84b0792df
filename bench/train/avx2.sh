#!/usr/bin/env bash
# bench/train/avx2.sh: issue 12's P1 on an AVX2 machine (no AVX-512), emulated on an AVX-512 one with both sides
# held to AVX2 and FMA: the dense full fine-tuning step (B x T, the same padded work on both sides, fp32), in
# turn per round:
#   pft as it runs where the processor has no AVX-512: its AVX2 kernel table and OpenBLAS's GEMMs, here with
#     OpenBLAS's Haswell (AVX2) kernels (PFT_CPU_KERNELS=avx2 PFT_CPU_GEMM=openblas OPENBLAS_CORETYPE=Haswell);
#   torch + transformers with ATen, MKL and oneDNN held to AVX2.
# An emulation: the processor's caches and the cost of its 256-bit instructions are this machine's.
# Usage: [BUILD=build] bash bench/train/avx2.sh [rounds=3] [B=32] [T=128] [threads=2] [reps=7]   (from anywhere)
set -eu
cd "$(dirname "$0")/../.."
export BUILD=${BUILD:-build}
rounds=${1:-3} B=${2:-32} T=${3:-128} threads=${4:-2} reps=${5:-7}
model=models/all-MiniLM-L6-v2 data=../shared/data/sst2/train.tsv
bash bench/build.sh train
lscpu | grep -E 'Model name' | sed 's/  */ /g'
python3 -c 'import torch, transformers; print("torch", torch.__version__, " transformers", transformers.__version__)'
echo "B $B  T $T  threads $threads  reps $reps (median)  rounds $rounds (pft, torch in turn; both at AVX2)"
. bench/common.sh # med
pft=() torch=()
for r in $(seq "$rounds"); do
  line=$(OPENBLAS_CORETYPE=Haswell PFT_CPU_GEMM=openblas PFT_CPU_KERNELS=avx2 PFT_BENCH_DENSE=1 \
    "$BUILD/bench_train" $model $data "$B" "$T" "$threads" "$reps" full); echo "  $line (pft at AVX2)"
  pft+=("$(echo "$line" | awk '{print $3}')")
  line=$(ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
    python3 bench/train/peer.py $model $data "$B" "$T" "$threads" "$reps" full 2>/dev/null); echo "  $line (torch at AVX2)"
  torch+=("$(echo "$line" | awk '{print $3}')")
done
p=$(med "${pft[@]}") t=$(med "${torch[@]}")
awk -v p="$p" -v t="$t" 'BEGIN {printf "P1 at AVX2, dense full step, pft / torch, same padded work: %s / %s = %.2f (goal >= 1.3)\n", p, t, p / t}'
