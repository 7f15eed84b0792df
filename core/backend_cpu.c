/* backend_cpu.c - the CPU backend: OpenBLAS for GEMM. */
#include <cblas.h>
#include <string.h>

#include "backend.h"

/* OpenBLAS keeps its thread count process-wide; match it to the context's before each call. */
static void blas_threads(pft_ctx *ctx) {
    if (openblas_get_num_threads() != ctx->threads) openblas_set_num_threads(ctx->threads);
}

static void cpu_gemm(pft_ctx *ctx, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb, float beta, float *C, int64_t ldc,
                     int64_t sc, int64_t batch) {
    blas_threads(ctx);
    for (int64_t b = 0; b < batch; b++)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M,
                    (blasint)N, (blasint)K, alpha, A + b * sa, (blasint)lda, B + b * sb, (blasint)ldb, beta,
                    C + b * sc, (blasint)ldc);
}

static bool cpu_supports(const char *op) {
    (void)op;
    return true; /* every op in ops.h has a CPU implementation */
}

const pft_backend pft_backend_cpu = {
    .name = "cpu",
    .device = PFT_DEVICE_CPU,
    .supports = cpu_supports,
    .gemm = cpu_gemm,
};

const pft_backend *pft_backend_for(const pft_tensor *t) {
    (void)t; /* one device so far; a CUDA table is chosen here by t->storage->device */
    return &pft_backend_cpu;
}
