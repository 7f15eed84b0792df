/* ops_elementwise.c - add, sub, mul (broadcasting as numpy), scale, gelu, tanh.
 *
 * Binary ops read both operands through strides, so transposed and expanded views cost no copy; their
 * backward reduces the output gradient back to each operand's shape (a broadcast dim sums). Unary ops
 * work on a contiguous copy of a non-contiguous input. */
#include <string.h>

#include "ops.h"
#include "ops_internal.h"

/* --- add, sub, mul -------------------------------------------------------------------------------- */

static const char *binary_name(pft_binary_op op) {
    return op == PFT_BINARY_ADD ? "add" : op == PFT_BINARY_SUB ? "sub" : "mul";
}

/* node->i[0]: the op. d(a op b): add (1, 1); sub (1, -1); mul (b, a) */
static pft_status binary_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_binary_op op = (pft_binary_op)node->i[0];
    int ndim = node->out_ndim;
    const int64_t *shape = node->out_shape;
    const pft_backend *be = pft_backend_for(dout);
    for (int k = 0; k < 2; k++) {
        pft_tensor *g;
        pft_status st = pft_ops_grad(ctx, node, k, &g);
        if (st) return st;
        if (!g) continue;
        int64_t sd[PFT_MAX_DIMS], so[PFT_MAX_DIMS];
        pft_ops_broadcast_strides(node->inputs[k], ndim, shape, true, sd);
        const float *other = NULL;
        if (op == PFT_BINARY_MUL) {
            pft_tensor *t = node->inputs[1 - k];
            pft_ops_broadcast_strides(t, ndim, shape, false, so);
            other = pft_tensor_data(t);
        }
        float alpha = op == PFT_BINARY_SUB && k == 1 ? -1.0f : 1.0f;
        be->binary_backward(ctx, pft_tensor_data(g), sd, pft_tensor_data(dout), other, so, alpha, ndim, shape);
    }
    return PFT_OK;
}

static pft_tensor *binary(pft_tensor *a, pft_tensor *b, pft_binary_op op) {
    pft_ctx *ctx = a->ctx;
    const char *name = binary_name(op);
    const pft_backend *be = pft_backend_for(a);
    if (pft_ops_missing(ctx, be, be->binary && be->binary_backward, name)) return NULL;
    int ndim = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t shape[PFT_MAX_DIMS], sa[PFT_MAX_DIMS], sb[PFT_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
        int ja = d - (ndim - a->ndim), jb = d - (ndim - b->ndim);
        int64_t da = ja >= 0 ? a->shape[ja] : 1, db = jb >= 0 ? b->shape[jb] : 1;
        if (da != db && da != 1 && db != 1) {
            char s1[128], s2[128];
            pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "%s: shapes %s and %s do not broadcast", name,
                           pft_tensor_shape_str(a, s1, sizeof s1), pft_tensor_shape_str(b, s2, sizeof s2));
            return NULL;
        }
        shape[d] = da == 1 ? db : da;
    }
    pft_ops_broadcast_strides(a, ndim, shape, false, sa);
    pft_ops_broadcast_strides(b, ndim, shape, false, sb);
    pft_tensor *out = pft_tensor_empty(ctx, ndim, shape);
    if (!out) return NULL;
    be->binary(ctx, pft_tensor_data(out), pft_tensor_data(a), sa, pft_tensor_data(b), sb, op, ndim, shape);
    pft_tensor *inputs[2] = {a, b};
    if (pft_autograd_needed(ctx, 2, inputs)) {
        pft_node *node = pft_autograd_record(ctx, out, name, binary_backward, 2, inputs);
        if (!node) {
            pft_tensor_release(out);
            return NULL;
        }
        node->i[0] = op;
    }
    return out;
}

pft_tensor *pft_add(pft_tensor *a, pft_tensor *b) { return binary(a, b, PFT_BINARY_ADD); }
pft_tensor *pft_sub(pft_tensor *a, pft_tensor *b) { return binary(a, b, PFT_BINARY_SUB); }
pft_tensor *pft_mul(pft_tensor *a, pft_tensor *b) { return binary(a, b, PFT_BINARY_MUL); }

/* --- unary ---------------------------------------------------------------------------------------- */

/* The contiguous input and an output of its shape, or false (error set, nothing held). */
static bool unary_begin(pft_tensor *a, pft_tensor **xc, pft_tensor **out) {
    *xc = pft_ops_contiguous(a);
    *out = *xc ? pft_tensor_empty(a->ctx, a->ndim, a->shape) : NULL;
    if (*out) return true;
    pft_tensor_release(*xc);
    *xc = NULL;
    return false;
}

/* Records out = op(a) when needed, saving `save` (x or the output) as saved[0]; consumes xc. */
static pft_tensor *unary_end(pft_tensor *a, pft_tensor *xc, pft_tensor *out, const char *name, pft_backward_fn bw,
                             pft_tensor *save, float f0) {
    pft_ctx *ctx = a->ctx;
    if (pft_autograd_needed(ctx, 1, &a)) {
        pft_node *node = pft_autograd_record(ctx, out, name, bw, 1, &a);
        if (!node || (save && pft_node_save(ctx, node, save))) {
            pft_tensor_release(xc);
            pft_tensor_release(out);
            return NULL;
        }
        node->f[0] = f0;
    }
    pft_tensor_release(xc);
    return out;
}

static pft_status scale_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dx;
    pft_status st = pft_ops_grad(ctx, node, 0, &dx);
    if (st || !dx) return st;
    pft_backend_for(dout)->axpy(ctx, pft_tensor_data(dx), pft_tensor_data(dout), (float)node->f[0], pft_tensor_numel(dx));
    return PFT_OK;
}

pft_tensor *pft_scale(pft_tensor *a, float s) {
    const pft_backend *be = pft_backend_for(a);
    pft_tensor *xc, *out;
    if (pft_ops_missing(a->ctx, be, be->scale && be->axpy, "scale") || !unary_begin(a, &xc, &out)) return NULL;
    be->scale(a->ctx, pft_tensor_data(out), pft_tensor_data(xc), s, pft_tensor_numel(out));
    return unary_end(a, xc, out, "scale", scale_backward, NULL, s);
}

/* saved[0]: the input (contiguous) */
static pft_status gelu_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dx;
    pft_status st = pft_ops_grad(ctx, node, 0, &dx);
    if (st || !dx) return st;
    pft_backend_for(dout)->gelu_backward(ctx, pft_tensor_data(dx), pft_tensor_data(dout), pft_tensor_data(node->saved[0]),
                                         pft_tensor_numel(dx));
    return PFT_OK;
}

pft_tensor *pft_gelu(pft_tensor *a) {
    const pft_backend *be = pft_backend_for(a);
    pft_tensor *xc, *out;
    if (pft_ops_missing(a->ctx, be, be->gelu_forward && be->gelu_backward, "gelu") || !unary_begin(a, &xc, &out))
        return NULL;
    be->gelu_forward(a->ctx, pft_tensor_data(out), pft_tensor_data(xc), pft_tensor_numel(out));
    return unary_end(a, xc, out, "gelu", gelu_backward, xc, 0);
}

/* saved[0]: the output y = tanh(x); dx = dy (1 - y^2) */
static pft_status tanh_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dx;
    pft_status st = pft_ops_grad(ctx, node, 0, &dx);
    if (st || !dx) return st;
    pft_backend_for(dout)->tanh_backward(ctx, pft_tensor_data(dx), pft_tensor_data(dout), pft_tensor_data(node->saved[0]),
                                         pft_tensor_numel(dx));
    return PFT_OK;
}

pft_tensor *pft_tanh(pft_tensor *a) {
    const pft_backend *be = pft_backend_for(a);
    pft_tensor *xc, *out;
    if (pft_ops_missing(a->ctx, be, be->tanh_forward && be->tanh_backward, "tanh") || !unary_begin(a, &xc, &out))
        return NULL;
    be->tanh_forward(a->ctx, pft_tensor_data(out), pft_tensor_data(xc), pft_tensor_numel(out));
    return unary_end(a, xc, out, "tanh", tanh_backward, out, 0);
}
