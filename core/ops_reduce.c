/* ops_reduce.c - sum and mean over one dim or over everything.
 *
 * The input (made contiguous) is seen as [outer, n, inner] with n the reduced dim; the sum runs over n
 * in index order into double accumulators, so the result is the same whatever the thread count. */
#include <string.h>

#include "ops.h"
#include "ops_internal.h"

/* node->i: [0] outer, [1] n, [2] inner; node->f[0]: the scale (1, or 1/n for a mean) */
static pft_status reduce_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dx;
    pft_status st = pft_ops_grad(ctx, node, 0, &dx);
    if (st || !dx) return st;
    pft_backend_for(dout)->sum_dim_backward(ctx, pft_tensor_data(dx), pft_tensor_data(dout), (float)node->f[0],
                                            node->i[0], node->i[1], node->i[2]);
    return PFT_OK;
}

/* dim < 0 counts from the end; all: reduce every element to a scalar */
static pft_tensor *reduce(pft_tensor *a, int dim, bool keepdim, bool all, bool mean, const char *name) {
    pft_ctx *ctx = a->ctx;
    const pft_backend *be = pft_backend_for(a);
    if (pft_ops_missing(ctx, be, be->sum_dim && be->sum_dim_backward, name)) return NULL;
    int64_t outer = 1, n = 1, inner = 1, shape[PFT_MAX_DIMS];
    int ndim = 0;
    if (all) {
        n = pft_tensor_numel(a);
    } else {
        int d = dim < 0 ? dim + a->ndim : dim;
        if (a->ndim == 0 && (dim == 0 || dim == -1)) { /* a scalar reduces over its one element */
            d = 0;
        } else if (d < 0 || d >= a->ndim) {
            char s[128];
            pft_ctx_seterr(ctx, PFT_ERR_ARG, "%s: dim %d out of range for shape %s", name, dim,
                           pft_tensor_shape_str(a, s, sizeof s));
            return NULL;
        }
        for (int i = 0; i < a->ndim; i++) {
            if (i < d) outer *= a->shape[i];
            if (i == d) n = a->shape[i];
            if (i > d) inner *= a->shape[i];
            if (i != d || keepdim) shape[ndim++] = i == d ? 1 : a->shape[i];
        }
    }
    pft_tensor *xc = pft_ops_contiguous(a);
    if (!xc) return NULL;
    pft_tensor *out = pft_tensor_empty(ctx, ndim, shape);
    if (!out) {
        pft_tensor_release(xc);
        return NULL;
    }
    float scale = mean ? 1.0f / (float)n : 1.0f;
    be->sum_dim(ctx, pft_tensor_data(out), pft_tensor_data(xc), scale, outer, n, inner);
    pft_tensor_release(xc);
    if (pft_autograd_needed(ctx, 1, &a)) {
        pft_node *node = pft_autograd_record(ctx, out, name, reduce_backward, 1, &a);
        if (!node) {
            pft_tensor_release(out);
            return NULL;
        }
        node->i[0] = outer;
        node->i[1] = n;
        node->i[2] = inner;
        node->f[0] = scale;
    }
    return out;
}

pft_tensor *pft_sum(pft_tensor *a, int dim, bool keepdim) { return reduce(a, dim, keepdim, false, false, "sum"); }
pft_tensor *pft_mean(pft_tensor *a, int dim, bool keepdim) { return reduce(a, dim, keepdim, false, true, "mean"); }
pft_tensor *pft_sum_all(pft_tensor *a) { return reduce(a, 0, false, true, false, "sum_all"); }
pft_tensor *pft_mean_all(pft_tensor *a) { return reduce(a, 0, false, true, true, "mean_all"); }
