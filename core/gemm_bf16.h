/* gemm_bf16.h - the GEMM of train.precision = "bf16": A and B rounded to bfloat16 (round to nearest even),
 * products summed in fp32, C fp32; everything around the GEMMs stays fp32 (master weights, optimizer
 * state, activations, LayerNorm, softmax, losses).
 *
 *     if (pft_bf16_gemm_runs(PFT_BF16_AMX)) ctx->bf16_gemm = PFT_BF16_AMX;   // what pft_ctx_set_precision does
 *     pft_cpu_gemm(ctx, ...);                                                 // now computes through bf16
 *
 * Two implementations over one packed layout: Intel AMX tiles (TDPBF16PS) and AVX512-BF16 dot products
 * (VDPBF16PS). Each C element is computed by one thread in a sequence of instructions that depends on
 * the shape alone, so results are bit-identical for every thread count; the two implementations may
 * differ from each other in the last bits (the order of fp32 adds inside an instruction is the
 * hardware's). */
#ifndef PFT_GEMM_BF16_H
#define PFT_GEMM_BF16_H

#include <stdbool.h>
#include <stdint.h>

#include "ctx.h"

/* whether this processor and its OS run the kind (PFT_CPU_BF16=avx512-bf16 or none caps it: for tests
 * of what a processor without AMX or without bf16 does); a few CPUID reads: ask once, not per GEMM */
bool pft_bf16_gemm_runs(pft_bf16_gemm kind);
const char *pft_bf16_gemm_name(pft_bf16_gemm kind); /* "amx", "avx512-bf16"; "fp32" for PFT_BF16_NONE */

/* For b in [0, batch): C_b = alpha op(A_b) op(B_b) + beta C_b as backend.h's gemm, through the kind, which
 * pft_bf16_gemm_runs must have said runs here (it also obtains the AMX tiles from Linux: without that an
 * AMX instruction faults). Uses up to ctx->threads threads; inside a parallel region, only the calling
 * thread. false: its scratch could not be allocated (nothing written; the caller computes in fp32). */
bool pft_gemm_bf16(pft_ctx *ctx, pft_bf16_gemm kind, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                   float alpha, const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb,
                   int64_t stride_b, float beta, float *C, int64_t ldc, int64_t stride_c, int64_t batch);

/* x rounded to the nearest bfloat16, ties to even, returned as the float it stands for (NaN stays NaN, an
 * fp32 denormal becomes a signed zero): what the GEMM's operands become, for tests' references */
float pft_bf16_round(float x);

#endif
