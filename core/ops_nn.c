/* ops_nn.c - softmax (with an additive mask), layer norm, dropout, embedding, cross-entropy, MSE.
 *
 * Conventions shared by these ops: inputs are made contiguous (no copy when they already are), what
 * backward needs is saved as detached aliases (never the output tensor itself), and integer arguments
 * (ids, targets) are checked here, before any kernel runs, and copied into node->extra for backward. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "ops_internal.h"

/* Releases up to four tensors (NULL is fine); returns NULL for failure paths. */
static pft_tensor *release_all(pft_tensor *a, pft_tensor *b, pft_tensor *c, pft_tensor *d) {
    pft_tensor_release(a);
    pft_tensor_release(b);
    pft_tensor_release(c);
    pft_tensor_release(d);
    return NULL;
}

/* --- softmax -------------------------------------------------------------------------------------- */

/* saved[0]: the output y; dx = y (dy - sum(dy y)) per row */
static pft_status softmax_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dx;
    pft_status st = pft_ops_grad(ctx, node, 0, &dx);
    if (st || !dx) return st;
    int64_t cols = node->out_shape[node->out_ndim - 1], n = pft_tensor_numel(dx);
    pft_backend_for(dout)->softmax_backward(ctx, pft_tensor_data(dx), pft_tensor_data(dout),
                                            pft_tensor_data(node->saved[0]), cols ? n / cols : 0, cols);
    return PFT_OK;
}

/* A row that the mask fills with -inf has no distribution; it comes out as zeros (and passes no gradient)
 * instead of PyTorch's NaN, so a fully padded query row cannot poison the loss. */
pft_tensor *pft_softmax(pft_tensor *a, pft_tensor *mask) {
    pft_ctx *ctx = a->ctx;
    const pft_backend *be = pft_backend_for(a);
    char s1[128], s2[128];
    if (pft_ops_missing(ctx, be, be->softmax_forward && be->softmax_backward, "softmax")) return NULL;
    if (a->ndim < 1) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "softmax: needs at least 1 dim, got %s", pft_tensor_shape_str(a, s1, sizeof s1));
        return NULL;
    }
    int64_t ms[PFT_MAX_DIMS];
    if (mask && !pft_ops_broadcast_strides(mask, a->ndim, a->shape, false, ms)) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "softmax: mask %s does not broadcast to scores %s",
                       pft_tensor_shape_str(mask, s2, sizeof s2), pft_tensor_shape_str(a, s1, sizeof s1));
        return NULL;
    }
    pft_tensor *xc = pft_ops_contiguous(a);
    pft_tensor *out = xc ? pft_tensor_empty(ctx, a->ndim, a->shape) : NULL;
    if (!out) return release_all(xc, NULL, NULL, NULL);
    be->softmax_forward(ctx, pft_tensor_data(out), pft_tensor_data(xc), mask ? pft_tensor_data(mask) : NULL, ms, a->ndim,
                        a->shape);
    pft_tensor_release(xc);
    if (pft_autograd_needed(ctx, 1, &a)) { /* the mask is no input of the node: it gets no gradient */
        pft_node *node = pft_autograd_record(ctx, out, "softmax", softmax_backward, 1, &a);
        if (!node || pft_node_save(ctx, node, out)) return release_all(out, NULL, NULL, NULL);
    }
    return out;
}

/* --- layer norm ----------------------------------------------------------------------------------- */

/* inputs: x, w, b (w, b may be NULL). saved: [0] x contiguous, [1] mean [rows], [2] rstd [rows], [3] w
 * contiguous when there is a w. */
static pft_status layernorm_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dx, *dw, *db;
    pft_status st;
    if ((st = pft_ops_grad(ctx, node, 0, &dx)) || (st = pft_ops_grad(ctx, node, 1, &dw)) ||
        (st = pft_ops_grad(ctx, node, 2, &db)))
        return st;
    if (!dx && !dw && !db) return PFT_OK;
    int64_t cols = node->out_shape[node->out_ndim - 1], n = pft_tensor_numel(dout);
    const float *w = node->n_saved > 3 ? pft_tensor_data(node->saved[3]) : NULL;
    pft_backend_for(dout)->layernorm_backward(
        ctx, dx ? pft_tensor_data(dx) : NULL, dw ? pft_tensor_data(dw) : NULL, db ? pft_tensor_data(db) : NULL,
        pft_tensor_data(dout), pft_tensor_data(node->saved[1]), pft_tensor_data(node->saved[2]),
        pft_tensor_data(node->saved[0]), w, cols ? n / cols : 0, cols);
    return PFT_OK;
}

static bool layernorm_param_ok(pft_ctx *ctx, const pft_tensor *p, const char *what, const pft_tensor *x) {
    int64_t C = x->shape[x->ndim - 1];
    if (!p || (p->ndim == 1 && p->shape[0] == C)) return true;
    char s1[128], s2[128];
    pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "layernorm: %s %s does not match input %s (expected [%lld])", what,
                   pft_tensor_shape_str(p, s1, sizeof s1), pft_tensor_shape_str(x, s2, sizeof s2), (long long)C);
    return false;
}

pft_tensor *pft_layernorm(pft_tensor *x, pft_tensor *w, pft_tensor *b, float eps) {
    pft_ctx *ctx = x->ctx;
    const pft_backend *be = pft_backend_for(x);
    char s1[128];
    if (pft_ops_missing(ctx, be, be->layernorm_forward && be->layernorm_backward, "layernorm")) return NULL;
    if (x->ndim < 1) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "layernorm: needs at least 1 dim, got %s", pft_tensor_shape_str(x, s1, sizeof s1));
        return NULL;
    }
    if (!layernorm_param_ok(ctx, w, "weight", x) || !layernorm_param_ok(ctx, b, "bias", x)) return NULL;
    if (!(eps >= 0)) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "layernorm: eps = %g must be >= 0", eps);
        return NULL;
    }
    int64_t cols = x->shape[x->ndim - 1], n = pft_tensor_numel(x), rows = cols ? n / cols : 0;
    pft_tensor *xc = pft_ops_contiguous(x);
    pft_tensor *wc = xc && w ? pft_ops_contiguous(w) : NULL;
    pft_tensor *bc = xc && b ? pft_ops_contiguous(b) : NULL;
    if (!xc || (w && !wc) || (b && !bc)) return release_all(xc, wc, bc, NULL);
    pft_tensor *out = pft_tensor_empty(ctx, x->ndim, x->shape);
    pft_tensor *mean = out ? pft_tensor_empty(ctx, x->ndim - 1, x->shape) : NULL; /* [rows] as x's leading dims */
    pft_tensor *rstd = mean ? pft_tensor_empty(ctx, x->ndim - 1, x->shape) : NULL;
    if (!rstd) {
        release_all(out, mean, NULL, NULL);
        return release_all(xc, wc, bc, NULL);
    }
    be->layernorm_forward(ctx, pft_tensor_data(out), pft_tensor_data(mean), pft_tensor_data(rstd), pft_tensor_data(xc),
                          wc ? pft_tensor_data(wc) : NULL, bc ? pft_tensor_data(bc) : NULL, eps, rows, cols);
    pft_tensor *inputs[3] = {x, w, b};
    if (pft_autograd_needed(ctx, 3, inputs)) {
        pft_node *node = pft_autograd_record(ctx, out, "layernorm", layernorm_backward, 3, inputs);
        if (!node || pft_node_save(ctx, node, xc) || pft_node_save(ctx, node, mean) || pft_node_save(ctx, node, rstd) ||
            (wc && pft_node_save(ctx, node, wc))) {
            release_all(out, mean, rstd, NULL);
            return release_all(xc, wc, bc, NULL);
        }
        node->f[0] = eps;
    }
    release_all(xc, wc, bc, mean); /* this function's references; the node holds aliases */
    pft_tensor_release(rstd);
    return out;
}

/* --- dropout -------------------------------------------------------------------------------------- */

/* node->i: [0] seed, [1] the counter the forward drew from; node->f[0]: p. The mask is drawn again. */
static pft_status dropout_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dx;
    pft_status st = pft_ops_grad(ctx, node, 0, &dx);
    if (st || !dx) return st;
    pft_backend_for(dout)->dropout_backward(ctx, pft_tensor_data(dx), pft_tensor_data(dout), (float)node->f[0],
                                            (uint64_t)node->i[0], (uint64_t)node->i[1], pft_tensor_numel(dx));
    return PFT_OK;
}

pft_tensor *pft_dropout(pft_tensor *x, float p, bool train) {
    pft_ctx *ctx = x->ctx;
    const pft_backend *be = pft_backend_for(x);
    if (!(p >= 0.0f && p < 1.0f)) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "dropout: p = %g must be in [0, 1)", p);
        return NULL;
    }
    if (!train || p == 0.0f) return pft_tensor_retain(x);
    if (pft_ops_missing(ctx, be, be->dropout_forward && be->dropout_backward, "dropout")) return NULL;
    pft_tensor *xc = pft_ops_contiguous(x);
    pft_tensor *out = xc ? pft_tensor_empty(ctx, x->ndim, x->shape) : NULL;
    if (!out) return release_all(xc, NULL, NULL, NULL);
    int64_t n = pft_tensor_numel(x);
    uint64_t counter = ctx->rng_counter;
    be->dropout_forward(ctx, pft_tensor_data(out), pft_tensor_data(xc), p, ctx->seed, counter, n);
    pft_tensor_release(xc);
    ctx->rng_counter += (uint64_t)n;
    if (pft_autograd_needed(ctx, 1, &x)) {
        pft_node *node = pft_autograd_record(ctx, out, "dropout", dropout_backward, 1, &x);
        if (!node) return release_all(out, NULL, NULL, NULL);
        node->i[0] = (int64_t)ctx->seed;
        node->i[1] = (int64_t)counter;
        node->f[0] = p;
    }
    return out;
}

/* --- dropout + residual add + layer norm ---------------------------------------------------------- */

/* inputs: h, residual, w, b (w, b may be NULL). saved: [0] s = dropout(h) + residual, [1] mean, [2] rstd,
 * [3] w contiguous when there is a w. node->i: [0] seed, [1] counter, [2] dropout on; f: [0] p. */
static pft_status dropout_add_layernorm_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dh, *dr, *dw, *db;
    float beta[2]; /* dh and dr are written whole: a new buffer is written over, not zero-filled and added to */
    pft_status st;
    if ((st = pft_ops_grad_beta(ctx, node, 0, &dh, &beta[0])) || (st = pft_ops_grad_beta(ctx, node, 1, &dr, &beta[1])) ||
        (st = pft_ops_grad(ctx, node, 2, &dw)) || (st = pft_ops_grad(ctx, node, 3, &db)))
        return st;
    if (!dh && !dr && !dw && !db) return PFT_OK;
    pft_ops_shared_grads(2, (pft_tensor *const[]){dh, dr}, beta); /* one tensor as h and residual */
    const int64_t cols = node->out_shape[node->out_ndim - 1], n = pft_tensor_numel(dout);
    const float *w = node->n_saved > 3 ? pft_tensor_data(node->saved[3]) : NULL;
    pft_backend_for(dout)->dropout_add_layernorm_backward(
        ctx, dh ? pft_tensor_data(dh) : NULL, dr ? pft_tensor_data(dr) : NULL, dw ? pft_tensor_data(dw) : NULL,
        db ? pft_tensor_data(db) : NULL, beta, pft_tensor_data(dout), pft_tensor_data(node->saved[1]),
        pft_tensor_data(node->saved[2]), pft_tensor_data(node->saved[0]), w, node->i[2] ? (float)node->f[0] : 0.0f,
        (uint64_t)node->i[0], (uint64_t)node->i[1], cols ? n / cols : 0, cols);
    return PFT_OK;
}

pft_tensor *pft_dropout_add_layernorm(pft_tensor *h, pft_tensor *residual, pft_tensor *w, pft_tensor *b, float p,
                                      bool train, float eps) {
    pft_ctx *ctx = h->ctx;
    const pft_backend *be = pft_backend_for(h);
    char s1[128], s2[128];
    if (pft_ops_missing(ctx, be, be->dropout_add_layernorm_forward && be->dropout_add_layernorm_backward,
                        "dropout_add_layernorm"))
        return NULL;
    if (h->ndim < 1 || !pft_tensor_same_shape(h, residual)) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "dropout_add_layernorm: input %s and residual %s must have one shape (of at least 1 dim)",
                       pft_tensor_shape_str(h, s1, sizeof s1), pft_tensor_shape_str(residual, s2, sizeof s2));
        return NULL;
    }
    if (!layernorm_param_ok(ctx, w, "weight", h) || !layernorm_param_ok(ctx, b, "bias", h)) return NULL;
    if (!(p >= 0.0f && p < 1.0f)) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "dropout_add_layernorm: dropout p = %g must be in [0, 1)", p);
        return NULL;
    }
    if (!(eps >= 0)) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "dropout_add_layernorm: eps = %g must be >= 0", eps);
        return NULL;
    }
    const int64_t cols = h->shape[h->ndim - 1], n = pft_tensor_numel(h), rows = cols ? n / cols : 0;
    const bool drop = train && p > 0.0f;
    pft_tensor *hc = pft_ops_contiguous(h), *rc = hc ? pft_ops_contiguous(residual) : NULL;
    pft_tensor *wc = rc && w ? pft_ops_contiguous(w) : NULL, *bc = rc && b ? pft_ops_contiguous(b) : NULL;
    pft_tensor *out = NULL, *s = NULL, *mean = NULL, *rstd = NULL;
    if (!rc || (w && !wc) || (b && !bc) || !(out = pft_tensor_empty(ctx, h->ndim, h->shape)) ||
        !(s = pft_tensor_empty(ctx, h->ndim, h->shape)) || !(mean = pft_tensor_empty(ctx, h->ndim - 1, h->shape)) ||
        !(rstd = pft_tensor_empty(ctx, h->ndim - 1, h->shape)))
        goto fail;
    const uint64_t counter = ctx->rng_counter;
    be->dropout_add_layernorm_forward(ctx, pft_tensor_data(out), pft_tensor_data(s), pft_tensor_data(mean),
                                      pft_tensor_data(rstd), pft_tensor_data(hc), pft_tensor_data(rc),
                                      wc ? pft_tensor_data(wc) : NULL, bc ? pft_tensor_data(bc) : NULL, drop ? p : 0.0f,
                                      ctx->seed, counter, eps, rows, cols);
    if (drop) ctx->rng_counter += (uint64_t)n;
    pft_tensor *inputs[4] = {h, residual, w, b};
    if (pft_autograd_needed(ctx, 4, inputs)) {
        pft_node *node = pft_autograd_record(ctx, out, "dropout_add_layernorm", dropout_add_layernorm_backward, 4, inputs);
        if (!node || pft_node_save(ctx, node, s) || pft_node_save(ctx, node, mean) || pft_node_save(ctx, node, rstd) ||
            (wc && pft_node_save(ctx, node, wc)))
            goto fail;
        node->i[0] = (int64_t)ctx->seed, node->i[1] = (int64_t)counter, node->i[2] = drop;
        node->f[0] = p;
    }
    release_all(hc, rc, wc, bc);
    release_all(s, mean, rstd, NULL); /* the node holds aliases */
    return out;
fail:
    release_all(hc, rc, wc, bc);
    return release_all(out, s, mean, rstd);
}

/* --- embedding ------------------------------------------------------------------------------------ */

/* node->i: [0] ids, [1] C; node->extra: a copy of the ids */
static pft_status embedding_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dw;
    pft_status st = pft_ops_grad_rows(ctx, node, 0, node->extra, node->i[0], &dw);
    if (st || !dw) return st;
    pft_backend_for(dout)->embedding_backward(ctx, pft_tensor_data(dw), pft_tensor_data(dout), node->extra, node->i[0],
                                              node->i[1]);
    return PFT_OK;
}

static pft_tensor *embedding(pft_tensor *weight, const int32_t *ids, int ndim, const int64_t *shape, int32_t padding_idx) {
    pft_ctx *ctx = weight->ctx;
    const pft_backend *be = pft_backend_for(weight);
    char s1[128], s2[128];
    if (pft_ops_missing(ctx, be, be->embedding_forward && be->embedding_backward, "embedding")) return NULL;
    if (weight->ndim != 2) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "embedding: weight %s is not [V, C]", pft_tensor_shape_str(weight, s1, sizeof s1));
        return NULL;
    }
    if (ndim < 0 || ndim > PFT_MAX_DIMS - 1) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "embedding: ids have %d dims (at most %d)", ndim, PFT_MAX_DIMS - 1);
        return NULL;
    }
    int64_t V = weight->shape[0], C = weight->shape[1], n = 1, oshape[PFT_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) {
            pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "embedding: ids shape %s has a negative size",
                           pft_shape_str(s1, sizeof s1, ndim, shape));
            return NULL;
        }
        n *= shape[d];
        oshape[d] = shape[d];
    }
    oshape[ndim] = C;
    if (n > 0 && !ids) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "embedding: ids is NULL for shape %s", pft_shape_str(s1, sizeof s1, ndim, shape));
        return NULL;
    }
    for (int64_t k = 0; k < n; k++) {
        if (ids[k] >= 0 && ids[k] < V) continue;
        int64_t pos[PFT_MAX_DIMS], r = k;
        for (int d = ndim - 1; d >= 0; d--) {
            pos[d] = shape[d] ? r % shape[d] : 0;
            r = shape[d] ? r / shape[d] : 0;
        }
        char s3[128];
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "embedding: id %d at position %s of ids %s is out of range [0, %lld) for weight %s",
                       ids[k], pft_shape_str(s1, sizeof s1, ndim, pos), pft_shape_str(s2, sizeof s2, ndim, shape),
                       (long long)V, pft_tensor_shape_str(weight, s3, sizeof s3));
        return NULL;
    }
    pft_tensor *wc = pft_ops_contiguous(weight);
    pft_tensor *out = wc ? pft_tensor_empty(ctx, ndim + 1, oshape) : NULL;
    if (!out) return release_all(wc, NULL, NULL, NULL);
    be->embedding_forward(ctx, pft_tensor_data(out), ids, pft_tensor_data(wc), n, C);
    pft_tensor_release(wc);
    if (pft_autograd_needed(ctx, 1, &weight)) {
        pft_node *node = pft_autograd_record(ctx, out, "embedding", embedding_backward, 1, &weight);
        int32_t *copy = node ? malloc(sizeof(int32_t) * (size_t)(n ? n : 1)) : NULL;
        if (!copy) {
            if (node) pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "embedding: cannot keep %lld ids for backward", (long long)n);
            return release_all(out, NULL, NULL, NULL);
        }
        for (int64_t k = 0; k < n; k++) copy[k] = ids[k] == padding_idx ? -1 : ids[k]; /* -1: no gradient */
        node->extra = copy;
        node->i[0] = n;
        node->i[1] = C;
    }
    return out;
}

pft_tensor *pft_embedding(pft_tensor *weight, const int32_t *ids, int ndim, const int64_t *shape) {
    return embedding(weight, ids, ndim, shape, -1);
}

pft_tensor *pft_embedding_padded(pft_tensor *weight, const int32_t *ids, int ndim, const int64_t *shape, int32_t padding_idx) {
    return embedding(weight, ids, ndim, shape, padding_idx);
}

/* --- cross-entropy -------------------------------------------------------------------------------- */

/* node->i: [0] N, [1] K, [2] ignore_index; node->f[0]: 1 / count; saved: [0] logits contiguous, [1] lse [N];
 * node->extra: a copy of the targets */
static pft_status cross_entropy_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dx;
    pft_status st = pft_ops_grad(ctx, node, 0, &dx);
    if (st || !dx) return st;
    pft_backend_for(dout)->cross_entropy_backward(ctx, pft_tensor_data(dx), pft_tensor_data(dout),
                                                  pft_tensor_data(node->saved[1]), pft_tensor_data(node->saved[0]),
                                                  node->extra, (int32_t)node->i[2], (float)node->f[0], node->i[0],
                                                  node->i[1]);
    return PFT_OK;
}

pft_tensor *pft_cross_entropy(pft_tensor *logits, const int32_t *targets, int64_t n, int32_t ignore_index) {
    pft_ctx *ctx = logits->ctx;
    const pft_backend *be = pft_backend_for(logits);
    char s1[128];
    if (pft_ops_missing(ctx, be, be->cross_entropy_forward && be->cross_entropy_backward, "cross_entropy")) return NULL;
    if (logits->ndim != 2 || logits->shape[0] != n || n < 0) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "cross_entropy: logits %s and targets [%lld] do not match (expected [N, K] and [N])",
                       pft_tensor_shape_str(logits, s1, sizeof s1), (long long)n);
        return NULL;
    }
    if (n > 0 && !targets) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "cross_entropy: targets is NULL for %lld rows", (long long)n);
        return NULL;
    }
    int64_t K = logits->shape[1], count = 0;
    for (int64_t r = 0; r < n; r++) {
        if (targets[r] == ignore_index) continue;
        if (targets[r] < 0 || targets[r] >= K) {
            pft_ctx_seterr(ctx, PFT_ERR_ARG, "cross_entropy: target %d at row %lld is out of range [0, %lld) for logits %s "
                           "(ignore_index %d)", targets[r], (long long)r, (long long)K,
                           pft_tensor_shape_str(logits, s1, sizeof s1), ignore_index);
            return NULL;
        }
        count++;
    }
    float inv_count = count ? 1.0f / (float)count : 0.0f; /* every target ignored: the loss is 0 */
    pft_tensor *lc = pft_ops_contiguous(logits);
    pft_tensor *out = lc ? pft_tensor_empty(ctx, 0, NULL) : NULL;
    pft_tensor *lse = out ? pft_tensor_empty(ctx, 1, &n) : NULL;
    if (!lse) return release_all(lc, out, NULL, NULL);
    be->cross_entropy_forward(ctx, pft_tensor_data(out), pft_tensor_data(lse), pft_tensor_data(lc), targets, ignore_index,
                              inv_count, n, K);
    if (pft_autograd_needed(ctx, 1, &logits)) {
        pft_node *node = pft_autograd_record(ctx, out, "cross_entropy", cross_entropy_backward, 1, &logits);
        int32_t *copy = node ? malloc(sizeof(int32_t) * (size_t)(n ? n : 1)) : NULL;
        if (!copy) {
            if (node) pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "cross_entropy: cannot keep %lld targets for backward", (long long)n);
            return release_all(lc, out, lse, NULL);
        }
        if (n) memcpy(copy, targets, sizeof(int32_t) * (size_t)n);
        node->extra = copy;
        if (pft_node_save(ctx, node, lc) || pft_node_save(ctx, node, lse)) return release_all(lc, out, lse, NULL);
        node->i[0] = n;
        node->i[1] = K;
        node->i[2] = ignore_index;
        node->f[0] = inv_count;
    }
    pft_tensor_release(lc);
    pft_tensor_release(lse);
    return out;
}

/* --- mse ------------------------------------------------------------------------------------------ */

/* saved: [0] pred, [1] target, both contiguous */
static pft_status mse_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dx;
    pft_status st = pft_ops_grad(ctx, node, 0, &dx);
    if (st || !dx) return st;
    pft_backend_for(dout)->mse_backward(ctx, pft_tensor_data(dx), pft_tensor_data(dout), pft_tensor_data(node->saved[0]),
                                        pft_tensor_data(node->saved[1]), pft_tensor_numel(dx));
    return PFT_OK;
}

pft_tensor *pft_mse(pft_tensor *pred, pft_tensor *target) {
    pft_ctx *ctx = pred->ctx;
    const pft_backend *be = pft_backend_for(pred);
    char s1[128], s2[128];
    if (pft_ops_missing(ctx, be, be->mse_forward && be->mse_backward, "mse")) return NULL;
    if (!pft_tensor_same_shape(pred, target)) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "mse: shapes %s and %s differ", pft_tensor_shape_str(pred, s1, sizeof s1),
                       pft_tensor_shape_str(target, s2, sizeof s2));
        return NULL;
    }
    pft_tensor *pc = pft_ops_contiguous(pred);
    pft_tensor *tc = pc ? pft_ops_contiguous(target) : NULL;
    pft_tensor *out = tc ? pft_tensor_empty(ctx, 0, NULL) : NULL;
    if (!out) return release_all(pc, tc, NULL, NULL);
    be->mse_forward(ctx, pft_tensor_data(out), pft_tensor_data(pc), pft_tensor_data(tc), pft_tensor_numel(pred));
    if (pft_autograd_needed(ctx, 1, &pred)) { /* the target is no input of the node: it gets no gradient */
        pft_node *node = pft_autograd_record(ctx, out, "mse", mse_backward, 1, &pred);
        if (!node || pft_node_save(ctx, node, pc) || pft_node_save(ctx, node, tc)) return release_all(pc, tc, out, NULL);
    }
    pft_tensor_release(pc);
    pft_tensor_release(tc);
    return out;
}
