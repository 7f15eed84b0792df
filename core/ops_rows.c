/* ops_rows.c - scatter rows into a zero tensor (the inverse of gathering them with pft_embedding). */
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* node->extra: the int32 row indices [n]; i[0] = n, i[1] = C */
static pft_status scatter_rows_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dx = pft_node_input_grad(ctx, node, 0);
    if (!dx) return PFT_OK;
    const int32_t *rows = node->extra;
    const int64_t n = node->i[0], C = node->i[1];
    const float *g = pft_tensor_data(dout);
    float *d = pft_tensor_data(dx);
    for (int64_t r = 0; r < n; r++)
        for (int64_t c = 0; c < C; c++) d[r * C + c] += g[(int64_t)rows[r] * C + c];
    return PFT_OK;
}

pft_tensor *pft_scatter_rows(pft_tensor *x, const int32_t *rows, int64_t total) {
    pft_ctx *ctx = x->ctx;
    char s[128];
    if (x->ndim != 2) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "scatter_rows: input %s is not [n, C]", pft_tensor_shape_str(x, s, sizeof s));
        return NULL;
    }
    const int64_t n = x->shape[0], C = x->shape[1];
    for (int64_t r = 0; r < n; r++)
        if (rows[r] < 0 || rows[r] >= total) {
            pft_ctx_seterr(ctx, PFT_ERR_ARG, "scatter_rows: row index %d at %lld is out of range [0, %lld)", rows[r],
                           (long long)r, (long long)total);
            return NULL;
        }
    pft_tensor *xc = pft_tensor_contiguous(x);
    pft_tensor *out = xc ? pft_tensor_zeros(ctx, 2, (int64_t[]){total, C}) : NULL;
    if (!out) goto fail;
    const float *src = pft_tensor_data(xc);
    float *dst = pft_tensor_data(out);
    for (int64_t r = 0; r < n; r++) memcpy(dst + (int64_t)rows[r] * C, src + r * C, sizeof(float) * (size_t)C);
    if (pft_autograd_needed(ctx, 1, &xc)) {
        pft_node *node = pft_autograd_record(ctx, out, "scatter_rows", scatter_rows_backward, 1, &xc);
        int32_t *copy = node ? malloc(sizeof(int32_t) * (size_t)(n ? n : 1)) : NULL;
        if (!copy) {
            if (node) pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "scatter_rows: out of memory");
            goto fail;
        }
        memcpy(copy, rows, sizeof(int32_t) * (size_t)n);
        node->extra = copy;
        node->i[0] = n, node->i[1] = C;
    }
    pft_tensor_release(xc);
    return out;
fail:
    pft_tensor_release(xc);
    pft_tensor_release(out);
    return NULL;
}
