/* backend.h - the table of device kernels behind the ops.
 *
 *     const pft_backend *be = pft_backend_for(t);      // the table of t's device
 *     be->gemm(ctx, false, true, M, N, K, 1.0f, x, K, 0, w, K, 0, 0.0f, y, N, 0, 1);
 *
 * The op layer (ops_*.c) checks shapes, allocates results and records the tape; it reaches the data
 * only through this table, so a CUDA backend is one more table (pft_backend_cuda) and no caller of
 * ops.h changes. All pointers are device pointers of that backend; matrices are row-major. Kernels
 * that a backend lacks are NULL and `supports` says so, so an op can fail with PFT_ERR_UNSUPPORTED.
 *
 * Kernel argument order (every entry below gemm): ctx, outputs (for backward: the gradients it writes),
 * saved statistics, the incoming gradient dy, inputs, weights, scalars, dims. Buffers are contiguous
 * unless a stride array comes with them (strides count elements; 0 on a broadcast dim). Backward
 * kernels ACCUMULATE (+=) into their outputs; a NULL output is a gradient nobody needs: skipped.
 * Every reduction sums in one fixed order (double accumulators), so results never depend on threads. */
#ifndef PFT_BACKEND_H
#define PFT_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor.h"

typedef enum pft_binary_op { PFT_BINARY_ADD, PFT_BINARY_SUB, PFT_BINARY_MUL } pft_binary_op;

typedef struct pft_backend {
    const char *name;
    pft_device device;
    bool (*supports)(const char *op);
    /* For b in [0, batch): C_b = alpha * op(A_b) op(B_b) + beta * C_b, with X_b = X + b * strideX
     * (stride 0 shares one matrix across the batch); op(X) is X or X^T per the flag; row-major. */
    void (*gemm)(pft_ctx *ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b,
                 float beta, float *C, int64_t ldc, int64_t stride_c, int64_t batch);

    /* --- elementwise: `shape` (ndim dims) is the output's; out and dy are contiguous over it -------- */
    /* out = a op b, a and b read through their strides */
    void (*binary)(pft_ctx *ctx, float *out, const float *a, const int64_t *stride_a, const float *b,
                   const int64_t *stride_b, pft_binary_op op, int ndim, const int64_t *shape);
    /* dst (through stride_dst) += alpha * dy * other (through stride_other; other NULL reads as 1); a dst
     * element that several dy elements map to (stride 0) receives their sum, in row-major order */
    void (*binary_backward)(pft_ctx *ctx, float *dst, const int64_t *stride_dst, const float *dy, const float *other,
                            const int64_t *stride_other, float alpha, int ndim, const int64_t *shape);
    void (*scale)(pft_ctx *ctx, float *y, const float *x, float s, int64_t n); /* y = s x */
    void (*axpy)(pft_ctx *ctx, float *y, const float *x, float s, int64_t n);  /* y += s x */
    void (*gelu_forward)(pft_ctx *ctx, float *y, const float *x, int64_t n);   /* exact erf GELU */
    void (*gelu_backward)(pft_ctx *ctx, float *dx, const float *dy, const float *x, int64_t n);
    void (*tanh_forward)(pft_ctx *ctx, float *y, const float *x, int64_t n);
    void (*tanh_backward)(pft_ctx *ctx, float *dx, const float *dy, const float *y, int64_t n); /* from the output */

    /* --- reductions over the middle dim of x viewed as [outer, n, inner] ---------------------------- */
    void (*sum_dim)(pft_ctx *ctx, float *y, const float *x, float scale, int64_t outer, int64_t n, int64_t inner);
    void (*sum_dim_backward)(pft_ctx *ctx, float *dx, const float *dy, float scale, int64_t outer, int64_t n,
                             int64_t inner);

    /* --- rows: x viewed as [rows, cols] ------------------------------------------------------------- */
    /* softmax of (x + mask) per row; mask (may be NULL) read through mask_stride over `shape` (x's);
     * a row whose every entry is -inf gives zeros (PyTorch would give NaN) */
    void (*softmax_forward)(pft_ctx *ctx, float *y, const float *x, const float *mask, const int64_t *mask_stride,
                            int ndim, const int64_t *shape);
    void (*softmax_backward)(pft_ctx *ctx, float *dx, const float *dy, const float *y, int64_t rows, int64_t cols);
    /* w, b may be NULL (no affine part); mean and rstd [rows] are saved for backward */
    void (*layernorm_forward)(pft_ctx *ctx, float *y, float *mean, float *rstd, const float *x, const float *w,
                              const float *b, float eps, int64_t rows, int64_t cols);
    void (*layernorm_backward)(pft_ctx *ctx, float *dx, float *dw, float *db, const float *dy, const float *mean,
                               const float *rstd, const float *x, const float *w, int64_t rows, int64_t cols);
    /* element i is dropped when pft_rng_uniform_f(seed, counter + i) < p; kept ones scale by 1/(1-p) */
    void (*dropout_forward)(pft_ctx *ctx, float *y, const float *x, float p, uint64_t seed, uint64_t counter, int64_t n);
    void (*dropout_backward)(pft_ctx *ctx, float *dx, const float *dy, float p, uint64_t seed, uint64_t counter,
                             int64_t n);

    /* --- lookups and losses (ids and targets are host int32, already checked against their range) --- */
    void (*embedding_forward)(pft_ctx *ctx, float *y, const int32_t *ids, const float *weight, int64_t n, int64_t C);
    /* ids < 0 contribute nothing (padding_idx) */
    void (*embedding_backward)(pft_ctx *ctx, float *dweight, const float *dy, const int32_t *ids, int64_t n, int64_t C);
    /* loss[0] = inv_count * sum over rows whose target != ignore_index of (logsumexp(row) - row[target]);
     * lse [N] keeps each row's logsumexp for backward; dloss is the gradient of the scalar loss */
    void (*cross_entropy_forward)(pft_ctx *ctx, float *loss, float *lse, const float *logits, const int32_t *targets,
                                  int32_t ignore_index, float inv_count, int64_t N, int64_t K);
    void (*cross_entropy_backward)(pft_ctx *ctx, float *dlogits, const float *dloss, const float *lse,
                                   const float *logits, const int32_t *targets, int32_t ignore_index, float inv_count,
                                   int64_t N, int64_t K);
    void (*mse_forward)(pft_ctx *ctx, float *loss, const float *pred, const float *target, int64_t n);
    void (*mse_backward)(pft_ctx *ctx, float *dpred, const float *dloss, const float *pred, const float *target,
                         int64_t n);
} pft_backend;

extern const pft_backend pft_backend_cpu; /* immutable: a table of function pointers, not state */

const pft_backend *pft_backend_for(const pft_tensor *t);

#endif
