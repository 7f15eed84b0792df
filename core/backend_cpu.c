/* backend_cpu.c - the CPU backend: OpenBLAS for GEMM, kernels_cpu.c for everything else. */
#include <cblas.h>
#include <string.h>

#include "backend.h"
#include "kernels_cpu.h"

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
    .binary = pft_cpu_binary,
    .binary_backward = pft_cpu_binary_backward,
    .scale = pft_cpu_scale,
    .axpy = pft_cpu_axpy,
    .gelu_forward = pft_cpu_gelu_forward,
    .gelu_backward = pft_cpu_gelu_backward,
    .tanh_forward = pft_cpu_tanh_forward,
    .tanh_backward = pft_cpu_tanh_backward,
    .sum_dim = pft_cpu_sum_dim,
    .sum_dim_backward = pft_cpu_sum_dim_backward,
    .softmax_forward = pft_cpu_softmax_forward,
    .softmax_backward = pft_cpu_softmax_backward,
    .layernorm_forward = pft_cpu_layernorm_forward,
    .layernorm_backward = pft_cpu_layernorm_backward,
    .dropout_forward = pft_cpu_dropout_forward,
    .dropout_backward = pft_cpu_dropout_backward,
    .embedding_forward = pft_cpu_embedding_forward,
    .embedding_backward = pft_cpu_embedding_backward,
    .cross_entropy_forward = pft_cpu_cross_entropy_forward,
    .cross_entropy_backward = pft_cpu_cross_entropy_backward,
    .mse_forward = pft_cpu_mse_forward,
    .mse_backward = pft_cpu_mse_backward,
};

const pft_backend *pft_backend_for(const pft_tensor *t) {
    (void)t; /* one device so far; a CUDA table is chosen here by t->storage->device */
    return &pft_backend_cpu;
}
