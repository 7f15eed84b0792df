/* gemm_tiles.h - pft's own GEMM, C = alpha op(A) op(B) + beta C, over operands packed into 1 KB tiles:
 *   - fp32 (PFT_GEMM_F32_AVX512): AVX-512 FMAs; the fp32 GEMM wherever the avx512 kernels run (ctx.h);
 *   - bf16 (train.precision = "bf16"): A and B rounded to bfloat16 (round to nearest even), products summed
 *     in fp32 on Intel AMX tiles (TDPBF16PS) or AVX512-BF16 dot products (VDPBF16PS); everything around the
 *     GEMMs stays fp32 (master weights, optimizer state, activations, LayerNorm, softmax, losses).
 *
 *     if (pft_gemm_kind_runs(PFT_GEMM_BF16_AMX)) ctx->bf16_gemm = PFT_GEMM_BF16_AMX; // pft_ctx_set_precision
 *     pft_cpu_gemm(ctx, ...);                                                    // now computes through bf16
 *
 * Both operands are packed once per call and shared by the threads. Each C element is computed by one
 * thread in a sequence of instructions that depends on the shape alone (whichever thread takes its block:
 * threads take blocks from each other's shares as they run out), so results are bit-identical for every
 * thread count. The fp32 GEMM sums each element's products in k order, one FMA each, K in chunks
 * added into C; it differs from OpenBLAS in the last bits. The two bf16 implementations may differ from
 * each other in the last bits (the order of fp32 adds inside an instruction is the hardware's). */
#ifndef PFT_GEMM_TILES_H
#define PFT_GEMM_TILES_H

#include <stdbool.h>
#include <stdint.h>

#include "ctx.h"

/* whether this processor and its OS run the kind (PFT_CPU_BF16=avx512-bf16 or none caps the bf16 kinds:
 * for tests of what a processor without AMX or without bf16 does); a few CPUID reads: ask once, not per
 * GEMM. PFT_GEMM_BLAS always runs. */
bool pft_gemm_kind_runs(pft_gemm_kind kind);
const char *pft_gemm_kind_name(pft_gemm_kind kind); /* "openblas", "avx512" (fp32), "avx512-bf16", "amx" */

/* For b in [0, batch): C_b = alpha op(A_b) op(B_b) + beta C_b as backend.h's gemm, through the kind, which
 * pft_gemm_kind_runs must have said runs here (it also obtains the AMX tiles from Linux: without that an
 * AMX instruction faults). Uses up to ctx->threads threads; inside a parallel region, only the calling
 * thread. false: its scratch could not be allocated, or kind is PFT_GEMM_BLAS (nothing written; the caller
 * computes with OpenBLAS in fp32). */
bool pft_gemm_tiles(pft_ctx *ctx, pft_gemm_kind kind, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                   float alpha, const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb,
                   int64_t stride_b, float beta, float *C, int64_t ldc, int64_t stride_c, int64_t batch);

/* What the GEMM does to C's final values as it writes them, so that no pass over C follows (the linear
 * layers' forward): bias [N] added to every row, then, with gelu, gelu(C) written to gelu [M, ld_gelu] as
 * well, each element as kernels_cpu.h's gelu_of computes it, and with slope C left holding gelu'(C)
 * instead (gelu_slope's bits). NULL members: not done. */
typedef struct pft_gemm_epilogue {
    const float *bias;
    float *gelu;
    int64_t ld_gelu;
    bool slope;
} pft_gemm_epilogue;

/* One GEMM as pft_gemm_tiles, then the epilogue (ep NULL: none). b_key non-NULL names what B holds (ctx.h):
 * B's packed tiles are kept in the context and read instead of packing B again while its version stays (a
 * frozen weight, or any weight over an evaluation): the same tiles, so the same bits. */
bool pft_gemm_tiles_epilogue(pft_ctx *ctx, pft_gemm_kind kind, bool trans_a, bool trans_b, int64_t M, int64_t N,
                             int64_t K, float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                             float *C, int64_t ldc, const pft_gemm_epilogue *ep, const pft_operand_key *b_key);

/* Unmaps the context's packing scratch (pft_ctx_free) */
void pft_gemm_scratch_release(pft_ctx *ctx);

/* x rounded to the nearest bfloat16, ties to even, returned as the float it stands for (NaN stays NaN, an
 * fp32 denormal becomes a signed zero): what the GEMM's operands become, for tests' references */
float pft_bf16_round(float x);

#endif
