/* ops_view.c - the differentiable views: reshape, permute, transpose, narrow, expand, contiguous.
 *
 * Each is an alias of its input's storage (pft_tensor_alias, tensor.c) or, for contiguous (and reshape
 * of a non-viewable input), a copy, plus a tape node when the input needs a gradient. The input's
 * gradient buffer is contiguous, so a node stores the view's geometry as it would be over a contiguous
 * input (node->i: strides, then the offset at [PFT_MAX_DIMS]), and view_backward adds the view's
 * gradient into that view of the buffer (the backend's strided_accumulate). Living here rather than in
 * tensor.c keeps the data layer free of the tape: tensor.c under autograd.c under the ops, no cycle. */
#include <string.h>

#include "backend.h"
#include "ops.h"

/* Backward of every view: the view's gradient is added into the same view of the input's gradient (the
 * backend's strided_accumulate; for expand, several output elements alias one input element, stride 0,
 * and receive their sum in row-major order). */
static pft_status view_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dinp = pft_node_input_grad(ctx, node, 0);
    if (!dinp) return PFT_OK;
    const pft_backend *be = pft_backend_for(dinp);
    /* node->i: the view's strides relative to a contiguous input, then its offset at [PFT_MAX_DIMS] */
    be->strided_accumulate(ctx, pft_tensor_data(dinp) + node->i[PFT_MAX_DIMS], node->i, pft_tensor_data(dout),
                           node->out_ndim, node->out_shape);
    return PFT_OK;
}

/* Makes a view and, when t needs a gradient, records it. The gradient buffer of t is contiguous, so the
 * node stores the view geometry as it would be over a contiguous t: strides are recomputed from t's
 * logical layout by the caller (lstride, loffset). */
static pft_tensor *make_view(pft_tensor *t, const char *op, int ndim, const int64_t *shape, const int64_t *stride,
                             int64_t offset, const int64_t *lstride, int64_t loffset) {
    pft_tensor *v = pft_tensor_alias(t, ndim, shape, stride, offset);
    if (!v) return NULL;
    if (pft_autograd_needed(t->ctx, 1, &t)) {
        pft_node *node = pft_autograd_record(t->ctx, v, op, view_backward, 1, &t);
        if (!node) {
            pft_tensor_release(v);
            return NULL;
        }
        if (ndim) memcpy(node->i, lstride, sizeof(int64_t) * (size_t)ndim);
        node->i[PFT_MAX_DIMS] = loffset;
    }
    return v;
}

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i];
    }
}

pft_tensor *pft_tensor_contiguous(pft_tensor *t) {
    if (pft_tensor_is_contiguous(t)) return pft_tensor_retain(t);
    pft_tensor *c = pft_tensor_empty(t->ctx, t->ndim, t->shape);
    if (!c) return NULL;
    pft_tensor_to_buffer(t, pft_tensor_data(c));
    if (pft_autograd_needed(t->ctx, 1, &t)) {
        int64_t ls[PFT_MAX_DIMS];
        contiguous_strides(t->ndim, t->shape, ls);
        pft_node *node = pft_autograd_record(t->ctx, c, "contiguous", view_backward, 1, &t);
        if (!node) {
            pft_tensor_release(c);
            return NULL;
        }
        memcpy(node->i, ls, sizeof ls);
        node->i[PFT_MAX_DIMS] = 0;
    }
    return c;
}

pft_tensor *pft_tensor_reshape(pft_tensor *t, int ndim, const int64_t *shape_in) {
    pft_ctx *ctx = t->ctx;
    char a[128], b[128];
    if (ndim < 0 || ndim > PFT_MAX_DIMS) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "reshape: %d dims (at most %d)", ndim, PFT_MAX_DIMS);
        return NULL;
    }
    int64_t shape[PFT_MAX_DIMS], known = 1, n = pft_tensor_numel(t);
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        shape[i] = shape_in[i];
        if (shape[i] == -1 && infer < 0) {
            infer = i;
        } else if (shape[i] < 0) {
            pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "reshape: invalid target shape %s", pft_shape_str(a, sizeof a, ndim, shape_in));
            return NULL;
        } else {
            known *= shape[i];
        }
    }
    if (infer >= 0) shape[infer] = known ? n / known : 0;
    int64_t m = 1;
    for (int i = 0; i < ndim; i++) m *= shape[i];
    if (m != n) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "reshape: cannot view %s (%lld elements) as %s",
                       pft_tensor_shape_str(t, a, sizeof a), (long long)n, pft_shape_str(b, sizeof b, ndim, shape_in));
        return NULL;
    }
    pft_tensor *src = pft_tensor_contiguous(t); /* a copy only when t is a non-contiguous view */
    if (!src) return NULL;
    int64_t stride[PFT_MAX_DIMS];
    contiguous_strides(ndim, shape, stride);
    pft_tensor *v = make_view(src, "reshape", ndim, shape, stride, src->offset, stride, 0);
    pft_tensor_release(src);
    return v;
}

pft_tensor *pft_tensor_permute(pft_tensor *t, const int *perm) {
    int64_t shape[PFT_MAX_DIMS], stride[PFT_MAX_DIMS], lstride[PFT_MAX_DIMS], cs[PFT_MAX_DIMS];
    bool seen[PFT_MAX_DIMS] = {false};
    contiguous_strides(t->ndim, t->shape, cs);
    for (int i = 0; i < t->ndim; i++) {
        int p = perm[i];
        if (p < 0 || p >= t->ndim || seen[p]) {
            pft_ctx_seterr(t->ctx, PFT_ERR_ARG, "permute: invalid permutation of %d dims", t->ndim);
            return NULL;
        }
        seen[p] = true;
        shape[i] = t->shape[p];
        stride[i] = t->stride[p];
        lstride[i] = cs[p];
    }
    return make_view(t, "permute", t->ndim, shape, stride, t->offset, lstride, 0);
}

pft_tensor *pft_tensor_transpose(pft_tensor *t, int d0, int d1) {
    if (d0 < 0) d0 += t->ndim;
    if (d1 < 0) d1 += t->ndim;
    if (d0 < 0 || d1 < 0 || d0 >= t->ndim || d1 >= t->ndim) {
        char a[128];
        pft_ctx_seterr(t->ctx, PFT_ERR_ARG, "transpose: dims out of range for shape %s", pft_tensor_shape_str(t, a, sizeof a));
        return NULL;
    }
    int perm[PFT_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return pft_tensor_permute(t, perm);
}

pft_tensor *pft_tensor_narrow(pft_tensor *t, int dim, int64_t start, int64_t length) {
    char a[128];
    if (dim < 0) dim += t->ndim;
    if (dim < 0 || dim >= t->ndim || start < 0 || length < 0 || start + length > t->shape[dim]) {
        pft_ctx_seterr(t->ctx, PFT_ERR_ARG, "narrow: dim %d, start %lld, length %lld out of range for shape %s", dim,
                       (long long)start, (long long)length, pft_tensor_shape_str(t, a, sizeof a));
        return NULL;
    }
    int64_t shape[PFT_MAX_DIMS], cs[PFT_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[dim] = length;
    contiguous_strides(t->ndim, t->shape, cs);
    return make_view(t, "narrow", t->ndim, shape, t->stride, t->offset + start * t->stride[dim], cs, start * cs[dim]);
}

pft_tensor *pft_tensor_expand(pft_tensor *t, int ndim, const int64_t *shape) {
    char a[128], b[128];
    if (ndim < t->ndim || ndim > PFT_MAX_DIMS) goto bad;
    int64_t stride[PFT_MAX_DIMS], lstride[PFT_MAX_DIMS], cs[PFT_MAX_DIMS];
    contiguous_strides(t->ndim, t->shape, cs);
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int j = i - lead;
        if (j < 0) {
            stride[i] = lstride[i] = 0;
        } else if (t->shape[j] == shape[i]) {
            stride[i] = t->stride[j];
            lstride[i] = cs[j];
        } else if (t->shape[j] == 1) {
            stride[i] = lstride[i] = 0;
        } else {
            goto bad;
        }
    }
    return make_view(t, "expand", ndim, shape, stride, t->offset, lstride, 0);
bad:
    pft_ctx_seterr(t->ctx, PFT_ERR_SHAPE, "expand: cannot broadcast %s to %s", pft_tensor_shape_str(t, a, sizeof a),
                   pft_shape_str(b, sizeof b, ndim, shape));
    return NULL;
}
