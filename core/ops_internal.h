/* ops_internal.h - helpers shared by the op files (ops_elementwise.c, ops_reduce.c, ops_nn.c,
 * ops_attention.c, ops_matmul.c); not part of the public API. */
#ifndef PFT_OPS_INTERNAL_H
#define PFT_OPS_INTERNAL_H

#include "autograd.h"
#include "backend.h"
#include "ops.h"
#include "tensor.h"

/* t's elements as a contiguous tensor (t itself, retained, when already contiguous) without a tape entry:
 * the op records its own node over t, so a "contiguous" node would only cost a backward copy. */
static inline pft_tensor *pft_ops_contiguous(pft_tensor *t) {
    pft_ctx_no_grad_enter(t->ctx);
    pft_tensor *c = pft_tensor_contiguous(t);
    pft_ctx_no_grad_leave(t->ctx);
    return c;
}

/* Input i's gradient buffer in *g, or NULL when input i needs none. pft_node_input_grad also answers
 * NULL when the buffer cannot be allocated: that case is an error here, not a skipped gradient. */
static inline pft_status pft_ops_grad(pft_ctx *ctx, pft_node *node, int i, pft_tensor **g) {
    *g = pft_node_input_grad(ctx, node, i);
    if (!*g && node->inputs[i] && node->inputs[i]->requires_grad) return ctx->last_status ? ctx->last_status : PFT_ERR_ALLOC;
    return PFT_OK;
}

/* pft_ops_grad for a backward that adds to rows[0 .. n-1] of input i's gradient only
 * (pft_node_input_grad_rows) */
static inline pft_status pft_ops_grad_rows(pft_ctx *ctx, pft_node *node, int i, const int32_t *rows, int64_t n,
                                           pft_tensor **g) {
    *g = pft_node_input_grad_rows(ctx, node, i, rows, n);
    if (!*g && node->inputs[i] && node->inputs[i]->requires_grad) return ctx->last_status ? ctx->last_status : PFT_ERR_ALLOC;
    return PFT_OK;
}

/* pft_ops_grad for a backward that writes all of input i's gradient (pft_node_input_grad_beta): *beta 0 when
 * the buffer is new and unwritten, else 1 */
static inline pft_status pft_ops_grad_beta(pft_ctx *ctx, pft_node *node, int i, pft_tensor **g, float *beta) {
    *g = pft_node_input_grad_beta(ctx, node, i, beta);
    if (!*g && node->inputs[i] && node->inputs[i]->requires_grad) return ctx->last_status ? ctx->last_status : PFT_ERR_ALLOC;
    return PFT_OK;
}

/* For a backward whose kernel writes several of its inputs' gradients (g[0 .. n-1], from pft_ops_grad_beta)
 * in its own order: a buffer that two of them share (one tensor passed as two inputs) and that is new is
 * zero-filled and then added to by both (beta 1), since the kernel may add to it before it writes it over */
static inline void pft_ops_shared_grads(int n, pft_tensor *const *g, float *beta) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (i != j && g[i] && g[i] == g[j] && beta[i] == 0.0f) pft_tensor_fill_(g[i], 0.0f), beta[i] = 1.0f;
}

/* True (with PFT_ERR_UNSUPPORTED set) when t's backend lacks a kernel the op needs. */
static inline bool pft_ops_missing(pft_ctx *ctx, const pft_backend *be, bool present, const char *op) {
    if (present) return false;
    pft_ctx_seterr(ctx, PFT_ERR_UNSUPPORTED, "%s: the %s backend has no kernel for it", op, be->name);
    return true;
}

/* Strides that read t as if broadcast to shape (ndim dims, t's dims aligned to the right), 0 on the
 * broadcast dims. `dense` uses the strides of a contiguous tensor of t's shape (its gradient buffer)
 * instead of t's own. False when t does not broadcast to shape. */
static inline bool pft_ops_broadcast_strides(const pft_tensor *t, int ndim, const int64_t *shape, bool dense,
                                             int64_t *stride) {
    if (t->ndim > ndim) return false;
    int lead = ndim - t->ndim;
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        int j = d - lead;
        if (j < 0) {
            stride[d] = 0;
            continue;
        }
        if (t->shape[j] != shape[d] && t->shape[j] != 1) return false;
        stride[d] = t->shape[j] == 1 ? 0 : dense ? s : t->stride[j];
        s *= t->shape[j];
    }
    return true;
}

#endif
