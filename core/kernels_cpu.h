/* kernels_cpu.h - the CPU kernels behind the backend table (backend_cpu.c fills pft_backend_cpu with them).
 * Signatures and semantics are the table's, documented in backend.h; nothing else calls these directly. */
#ifndef PFT_KERNELS_CPU_H
#define PFT_KERNELS_CPU_H

#include "backend.h"

void pft_cpu_binary(pft_ctx *ctx, float *out, const float *a, const int64_t *stride_a, const float *b,
                    const int64_t *stride_b, pft_binary_op op, int ndim, const int64_t *shape);
void pft_cpu_binary_backward(pft_ctx *ctx, float *dst, const int64_t *stride_dst, const float *dy, const float *other,
                             const int64_t *stride_other, float alpha, int ndim, const int64_t *shape);
void pft_cpu_scale(pft_ctx *ctx, float *y, const float *x, float s, int64_t n);
void pft_cpu_axpy(pft_ctx *ctx, float *y, const float *x, float s, int64_t n);
void pft_cpu_gelu_forward(pft_ctx *ctx, float *y, const float *x, int64_t n);
void pft_cpu_gelu_backward(pft_ctx *ctx, float *dx, const float *dy, const float *x, int64_t n);
void pft_cpu_tanh_forward(pft_ctx *ctx, float *y, const float *x, int64_t n);
void pft_cpu_tanh_backward(pft_ctx *ctx, float *dx, const float *dy, const float *y, int64_t n);

void pft_cpu_sum_dim(pft_ctx *ctx, float *y, const float *x, float scale, int64_t outer, int64_t n, int64_t inner);
void pft_cpu_sum_dim_backward(pft_ctx *ctx, float *dx, const float *dy, float scale, int64_t outer, int64_t n,
                              int64_t inner);

void pft_cpu_softmax_forward(pft_ctx *ctx, float *y, const float *x, const float *mask, const int64_t *mask_stride,
                             int ndim, const int64_t *shape);
void pft_cpu_softmax_backward(pft_ctx *ctx, float *dx, const float *dy, const float *y, int64_t rows, int64_t cols);
void pft_cpu_layernorm_forward(pft_ctx *ctx, float *y, float *mean, float *rstd, const float *x, const float *w,
                               const float *b, float eps, int64_t rows, int64_t cols);
void pft_cpu_layernorm_backward(pft_ctx *ctx, float *dx, float *dw, float *db, const float *dy, const float *mean,
                                const float *rstd, const float *x, const float *w, int64_t rows, int64_t cols);
void pft_cpu_dropout_forward(pft_ctx *ctx, float *y, const float *x, float p, uint64_t seed, uint64_t counter,
                             int64_t n);
void pft_cpu_dropout_backward(pft_ctx *ctx, float *dx, const float *dy, float p, uint64_t seed, uint64_t counter,
                              int64_t n);

void pft_cpu_embedding_forward(pft_ctx *ctx, float *y, const int32_t *ids, const float *weight, int64_t n, int64_t C);
void pft_cpu_embedding_backward(pft_ctx *ctx, float *dweight, const float *dy, const int32_t *ids, int64_t n,
                                int64_t C);
void pft_cpu_cross_entropy_forward(pft_ctx *ctx, float *loss, float *lse, const float *logits, const int32_t *targets,
                                   int32_t ignore_index, float inv_count, int64_t N, int64_t K);
void pft_cpu_cross_entropy_backward(pft_ctx *ctx, float *dlogits, const float *dloss, const float *lse,
                                    const float *logits, const int32_t *targets, int32_t ignore_index, float inv_count,
                                    int64_t N, int64_t K);
void pft_cpu_mse_forward(pft_ctx *ctx, float *loss, const float *pred, const float *target, int64_t n);
void pft_cpu_mse_backward(pft_ctx *ctx, float *dpred, const float *dloss, const float *pred, const float *target,
                          int64_t n);

#endif
