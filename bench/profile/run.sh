#!/usr/bin/env bash
# bench/profile: where one dense training step's time goes, per op. perf samples bench_train (MiniLM +
# a classification head, B sentences x T tokens, all positions real: PFT_BENCH_DENSE=1) and the samples
# are added up by op: the GEMMs (pft's tiled fp32 GEMM, or OpenBLAS's with PFT_CPU_GEMM=openblas; the
# attention block's small ones too), each kernel of core/kernels_cpu.c, memory copies and zeroing, OpenMP's waiting, the operating system.
# Prints a table: op, share of the samples. (FLOP shares come from the model's shapes: docs/performance.md.)
# PFT_BENCH_PRECISION=bf16 profiles a bf16 step (train.precision = "bf16"). PFT_BENCH_DENSE=0 profiles the step
# as training runs it, the padding skipped (32 SST-2 sentences: ~420 tokens, the shape of `pft train sst2`).
# Only the steps after bench_train's warm-up are sampled (perf's control fifo), not loading the model.
# Usage: [BUILD=build] [PFT_CPU_KERNELS=baseline|avx2|avx512] [PFT_CPU_GEMM=openblas] [PFT_BENCH_PRECISION=bf16]
#        [PFT_BENCH_DENSE=0] bash bench/profile/run.sh [full|top2|lora] [B=32] [T=128] [threads=2] [reps=5]
#        (from anywhere; needs perf: Debian's linux-perf)
set -eu
cd "$(dirname "$0")/../.."
export BUILD=${BUILD:-build}
config=${1:-full} B=${2:-32} T=${3:-128} threads=${4:-2} reps=${5:-5}
command -v perf >/dev/null || { echo "bench/profile: perf is missing (apt-get install linux-perf)"; exit 1; }
bash bench/build.sh train
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "machine: $(lscpu | grep 'Model name' | sed 's/  */ /g'); threads $threads; kernels ${PFT_CPU_KERNELS:-auto}; precision ${PFT_BENCH_PRECISION:-fp32}; padding $([ "${PFT_BENCH_DENSE:-1}" = 1 ] && echo computed || echo skipped)"
# events off until bench_train says its warm-up step is done (PFT_BENCH_PERF_CTL): the steps only, not the
# model's load and the first touch of its pages (under KVM 10-13% of a whole run's samples, in the kernel)
mkfifo "$out/ctl"
PFT_BENCH_PERF_CTL="$out/ctl" PFT_BENCH_DENSE=${PFT_BENCH_DENSE:-1} perf record -q -F 499 -D -1 --control "fifo:$out/ctl" -o "$out/perf.data" -- \
  "$BUILD/bench_train" models/all-MiniLM-L6-v2 \
  ../shared/data/sst2/train.tsv "$B" "$T" "$threads" "$reps" "$config" >"$out/bench.txt" 2>&1
echo "$config, B $B, T $T: $(tail -n 1 "$out/bench.txt")"
perf report -q -i "$out/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null | awk '
  /%/ {
    pct = $1; sub(/%/, "", pct); dso = $2; sym = ""
    for (i = 3; i < NF; i++) if ($i == "[.]" || $i == "[k]") { sym = $(i + 1); break }
    if ($0 ~ /\[k\]/) op = "operating system (page faults, scheduling)"
    else if (dso ~ /openblas/) op = "GEMM (OpenBLAS kernels and packing)"
    else if (sym ~ /^(block_amx|rows8_|block_avx512|block_f32|gemm1|gemm_part)/) op = "GEMM, core/gemm_tiles.c: kernels"
    else if (sym ~ /^(pack_|transpose16)/) op = "GEMM, core/gemm_tiles.c: packing operands into tiles"
    else if (sym ~ /^(write_block|gelu32)/) op = "GEMM, core/gemm_tiles.c: writing C (with bias / GELU where fused)"
    else if (dso ~ /gomp/) op = "OpenMP (threads waiting at barriers)"
    else if (sym ~ /^cpu_attention/ || sym ~ /^(dropout_block|mask_like|row_max|row_dot)/) op = "attention: softmax, mask, dropout (not its GEMMs)"
    else if (sym ~ /^(layernorm_row|layernorm_param)/) op = "layernorm rows (layernorm, dropout + add + layernorm)"
    else if (sym ~ /^cpu_/) { op = sym; sub(/^cpu_/, "", op); sub(/\._omp_fn\.[0-9]+$/, "", op); sub(/\.part\.[0-9]+$/, "", op) }
    else if (sym ~ /memcpy|memmove|memset/) op = "memcpy / memset (copies, zeroed gradients, bias rows)"
    else if (dso ~ /luajit/ || $0 ~ /JIT/) op = "Lua"
    else op = "other: " sym
    share[op] += pct
  }
  END { for (op in share) if (share[op] >= 0.3) printf "%6.1f%%  %s\n", share[op], op; else rest += share[op]
        printf "%6.1f%%  %s\n", rest, "the rest (each under 0.3%)" }' | sort -rn
