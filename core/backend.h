/* backend.h - the table of device kernels behind the ops.
 *
 *     const pft_backend *be = pft_backend_for(t);      // the table of t's device
 *     be->gemm(ctx, false, true, M, N, K, 1.0f, x, K, 0, w, K, 0, 0.0f, y, N, 0, 1);
 *
 * The op layer (ops_*.c) checks shapes, allocates results and records the tape; it reaches the data
 * only through this table, so a CUDA backend is one more table (pft_backend_cuda) and no caller of
 * ops.h changes. All pointers are device pointers of that backend; matrices are row-major. Kernels
 * that a backend lacks are NULL and `supports` says so, so an op can fail with PFT_ERR_UNSUPPORTED. */
#ifndef PFT_BACKEND_H
#define PFT_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor.h"

typedef struct pft_backend {
    const char *name;
    pft_device device;
    bool (*supports)(const char *op);
    /* For b in [0, batch): C_b = alpha * op(A_b) op(B_b) + beta * C_b, with X_b = X + b * strideX
     * (stride 0 shares one matrix across the batch); op(X) is X or X^T per the flag; row-major. */
    void (*gemm)(pft_ctx *ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b,
                 float beta, float *C, int64_t ldc, int64_t stride_c, int64_t batch);
} pft_backend;

extern const pft_backend pft_backend_cpu; /* immutable: a table of function pointers, not state */

const pft_backend *pft_backend_for(const pft_tensor *t);

#endif
