/* ops_matmul.c - matmul and linear through the backend's GEMM. Transposed views go to BLAS as flags. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "ops.h"
#include "ops_internal.h"

/* How a [rows, cols] matrix (the last two dims of t) is laid out, as BLAS wants to hear it. */
typedef struct operand {
    const float *data;
    bool trans;         /* stored column-major: BLAS reads it transposed */
    int64_t ld;         /* leading dimension */
    int64_t batch_stride; /* 0 when shared by every batch */
    pft_tensor *owner;  /* the tensor data points into (t itself or a contiguous copy), one reference */
} operand;

/* Batch dims collapse into one stride when each is nested in the next (or there is at most one). */
static bool batch_stride_of(const pft_tensor *t, int nbatch, int64_t *stride) {
    if (nbatch == 0) {
        *stride = 0;
        return true;
    }
    for (int i = 0; i < nbatch - 1; i++)
        if (t->shape[i] != 1 && t->stride[i] != t->stride[i + 1] * t->shape[i + 1]) return false;
    *stride = t->stride[nbatch - 1];
    return true;
}

/* Describes t's last two dims for BLAS; copies t only when its layout cannot be described. */
static pft_status operand_of(pft_tensor *t, int nbatch, operand *op) {
    int64_t r = t->shape[t->ndim - 2], c = t->shape[t->ndim - 1];
    int64_t rs = t->stride[t->ndim - 2], cs = t->stride[t->ndim - 1], bs;
    pft_tensor *src;
    if (batch_stride_of(t, nbatch, &bs) && (cs == 1 || c == 1) && rs >= (c > 1 ? c : 1)) {
        op->trans = false;
        op->ld = rs;
        src = pft_tensor_retain(t);
    } else if (batch_stride_of(t, nbatch, &bs) && (rs == 1 || r == 1) && cs >= (r > 1 ? r : 1)) {
        op->trans = true;
        op->ld = cs;
        src = pft_tensor_retain(t);
    } else { /* a copy, or t itself retained (contiguous with a 0 dim: its row stride is 0) */
        src = pft_tensor_contiguous(t);
        if (!src) return t->ctx->last_status;
        op->trans = false;
        op->ld = c > 0 ? c : 1;
        bs = r * c;
    }
    if (op->ld < 1) op->ld = 1;
    op->owner = src;
    op->data = pft_tensor_data(src);
    op->batch_stride = nbatch ? bs : 0;
    return PFT_OK;
}

/* --- matmul --------------------------------------------------------------------------------------- */

static int64_t batch_count(const pft_tensor *t, int nbatch) {
    int64_t n = 1;
    for (int i = 0; i < nbatch; i++) n *= t->shape[i];
    return n;
}

/* node->i: [0] batch count, [1] M, [2] N, [3] K, [4] 1 when b is shared by the batch */
static pft_status matmul_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    pft_tensor *a = node->inputs[0], *b = node->inputs[1];
    int64_t batch = node->i[0], M = node->i[1], N = node->i[2], K = node->i[3];
    bool b_shared = node->i[4];
    const pft_backend *be = pft_backend_for(a);
    const float *dC = pft_tensor_data(dout);
    float beta_da;
    pft_tensor *da, *db;
    pft_status st;
    if ((st = pft_ops_grad_beta(ctx, node, 0, &da, &beta_da)) || (st = pft_ops_grad(ctx, node, 1, &db))) return st;
    operand oa = {0}, ob = {0};
    if (da) { /* dA [M, K] = dC [M, N] . B^T + beta dA */
        if ((st = operand_of(b, b_shared ? 0 : b->ndim - 2, &ob))) goto done;
        be->gemm(ctx, false, !ob.trans, M, K, N, 1.0f, dC, N, M * N, ob.data, ob.ld, ob.batch_stride, beta_da,
                 pft_tensor_data(da), K, M * K, batch);
        ctx->stats.backward_flops += 2 * batch * M * N * K;
    }
    if (db) { /* dB [K, N] += A^T . dC */
        if ((st = operand_of(a, a->ndim - 2, &oa))) goto done;
        if (b_shared && !oa.trans && oa.ld == K && (batch == 1 || oa.batch_stride == M * K)) {
            /* A's batch rows are one [batch*M, K] matrix: a single GEMM sums over the batch */
            be->gemm(ctx, true, false, K, N, batch * M, 1.0f, oa.data, K, 0, dC, N, 0, 1.0f, pft_tensor_data(db), N, 0, 1);
        } else {
            be->gemm(ctx, !oa.trans, false, K, N, M, 1.0f, oa.data, oa.ld, oa.batch_stride, dC, N, M * N, 1.0f,
                     pft_tensor_data(db), N, b_shared ? 0 : K * N, batch);
        }
        ctx->stats.backward_flops += 2 * batch * M * N * K;
    }
done:
    pft_tensor_release(oa.owner);
    pft_tensor_release(ob.owner);
    return st;
}

pft_tensor *pft_matmul(pft_tensor *a, pft_tensor *b) {
    pft_ctx *ctx = a->ctx;
    char sa[128], sb[128];
    pft_tensor_shape_str(a, sa, sizeof sa);
    pft_tensor_shape_str(b, sb, sizeof sb);
    if (a->ndim < 2 || b->ndim < 2) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "matmul: needs at least 2 dims, got %s and %s", sa, sb);
        return NULL;
    }
    int nbatch = a->ndim - 2;
    bool b_shared = b->ndim == 2 && nbatch > 0;
    if (!b_shared && b->ndim != a->ndim) goto bad_batch;
    for (int i = 0; i < nbatch && !b_shared; i++)
        if (a->shape[i] != b->shape[i]) goto bad_batch;
    int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1], N = b->shape[b->ndim - 1];
    if (b->shape[b->ndim - 2] != K) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "matmul: inner dims differ: %s x %s (%lld vs %lld)", sa, sb, (long long)K,
                       (long long)b->shape[b->ndim - 2]);
        return NULL;
    }
    int64_t shape[PFT_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 1] = N;
    pft_tensor *out = pft_tensor_empty(ctx, a->ndim, shape);
    if (!out) return NULL;
    int64_t batch = batch_count(a, nbatch);
    operand oa, ob;
    if (operand_of(a, nbatch, &oa)) goto fail;
    if (operand_of(b, b_shared ? 0 : nbatch, &ob)) {
        pft_tensor_release(oa.owner);
        goto fail;
    }
    const pft_backend *be = pft_backend_for(a);
    if (b_shared && !oa.trans && oa.ld == K && (batch == 1 || oa.batch_stride == M * K))
        be->gemm(ctx, false, ob.trans, batch * M, N, K, 1.0f, oa.data, oa.ld, 0, ob.data, ob.ld, 0, 0.0f,
                 pft_tensor_data(out), N, 0, 1);
    else
        be->gemm(ctx, oa.trans, ob.trans, M, N, K, 1.0f, oa.data, oa.ld, oa.batch_stride, ob.data, ob.ld,
                 ob.batch_stride, 0.0f, pft_tensor_data(out), N, M * N, batch);
    ctx->stats.forward_flops += 2 * batch * M * N * K;
    pft_tensor_release(oa.owner);
    pft_tensor_release(ob.owner);
    pft_tensor *inputs[2] = {a, b};
    if (pft_autograd_needed(ctx, 2, inputs)) {
        pft_node *node = pft_autograd_record(ctx, out, "matmul", matmul_backward, 2, inputs);
        if (!node) goto fail;
        node->i[0] = batch;
        node->i[1] = M;
        node->i[2] = N;
        node->i[3] = K;
        node->i[4] = b_shared;
    }
    return out;
bad_batch:
    pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "matmul: batch dims differ: %s x %s", sa, sb);
    return NULL;
fail:
    pft_tensor_release(out);
    return NULL;
}

/* --- linear --------------------------------------------------------------------------------------- */

/* What the weight w holds, where its GEMM packing may be kept between calls (ctx.h): w frozen, or no gradient
 * being recorded (an evaluation: nothing writes weights between its batches), read in place (not copied), and
 * of this context (whose storage ids the key's are) */
static const pft_operand_key *weight_key(const pft_ctx *ctx, const pft_tensor *w, const operand *ow,
                                         pft_operand_key *key) {
    if ((w->requires_grad && ctx->grad_enabled > 0) || ow->owner->storage != w->storage || w->storage->ctx != ctx)
        return NULL;
    *key = (pft_operand_key){w->storage->id, w->storage->version, (int64_t)(ow->data - w->storage->data)};
    return key;
}

/* C [M, N] = A [M, K] . op(w) + beta C (op(w) = w^T with trans_b), w described by ow: through the backend's
 * gemm_linear where it runs (it keeps a frozen weight's packing), else its gemm */
static void weight_gemm(pft_ctx *ctx, const pft_backend *be, const pft_tensor *w, const operand *ow, bool trans_b,
                        int64_t M, int64_t N, int64_t K, const float *A, float beta, float *C) {
    pft_operand_key key;
    if (be->gemm_linear &&
        be->gemm_linear(ctx, trans_b, M, N, K, A, ow->data, ow->ld, beta, C, NULL, NULL, false, weight_key(ctx, w, ow, &key)))
        return;
    be->gemm(ctx, false, trans_b, M, N, K, 1.0f, A, K, 0, ow->data, ow->ld, 0, beta, C, N, 0, 1);
}

/* dx [N, in] = dy [N, out] . w [out, in] + beta_dx dx and dw [out, in] = dy^T [out, N] . x [N, in] + beta_dw dw
 * (either may be NULL), for a node of linear's layout: inputs x, w (, bias), saved[0] the contiguous [N, in]
 * x the forward used, i[0..2] N, in, out */
static pft_status linear_backward_gemms(pft_ctx *ctx, pft_node *node, const float *dy, pft_tensor *dx, float beta_dx,
                                        pft_tensor *dw, float beta_dw) {
    const int64_t N = node->i[0], in = node->i[1], out = node->i[2];
    const pft_backend *be = pft_backend_for(node->inputs[1]);
    if (dx) {
        operand ow;
        pft_status st = operand_of(node->inputs[1], 0, &ow);
        if (st) return st;
        weight_gemm(ctx, be, node->inputs[1], &ow, ow.trans, N, in, out, dy, beta_dx, pft_tensor_data(dx));
        ctx->stats.backward_flops += 2 * N * in * out;
        pft_tensor_release(ow.owner);
    }
    if (dw) {
        const float *xd = pft_tensor_data(node->saved[0]);
        be->gemm(ctx, true, false, out, in, N, 1.0f, dy, out, 0, xd, in, 0, beta_dw, pft_tensor_data(dw), in, 0, 1);
        ctx->stats.backward_flops += 2 * N * in * out;
    }
    return PFT_OK;
}

/* node->i: [0] N rows, [1] in, [2] out. inputs: x (as recorded), w, bias (may be NULL). */
static pft_status linear_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    const pft_backend *be = pft_backend_for(dout);
    const float *dy = pft_tensor_data(dout);
    float beta_dx, beta_dw;
    pft_tensor *dx, *dw, *db = NULL;
    pft_status st;
    if ((st = pft_ops_grad_beta(ctx, node, 0, &dx, &beta_dx)) || (st = pft_ops_grad_beta(ctx, node, 1, &dw, &beta_dw)) ||
        (node->n_inputs > 2 && (st = pft_ops_grad(ctx, node, 2, &db))))
        return st;
    st = linear_backward_gemms(ctx, node, dy, dx, beta_dx, dw, beta_dw);
    if (!st && db) /* db [out] += column sums of dy, rows in order (a broadcast add's backward) */
        be->binary_backward(ctx, pft_tensor_data(db), (const int64_t[]){0, 1}, dy, NULL, NULL, 1.0f, 2,
                            (const int64_t[]){node->i[0], node->i[2]});
    return st;
}

/* What linear and linear_gelu check: x [..., in] against w [out, in] and bias [out] (may be NULL); the
 * error names op. */
static pft_status linear_check(pft_ctx *ctx, const char *op, const pft_tensor *x, const pft_tensor *w,
                               const pft_tensor *bias) {
    char sx[128], sw[128], sbias[128];
    pft_tensor_shape_str(x, sx, sizeof sx);
    pft_tensor_shape_str(w, sw, sizeof sw);
    if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1])
        return pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "%s: input %s does not match weight %s (expected [..., %lld])", op, sx,
                              sw, (long long)(w->ndim == 2 ? w->shape[1] : -1));
    if (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0]))
        return pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "%s: bias %s does not match weight %s (expected [%lld])", op,
                              pft_tensor_shape_str(bias, sbias, sizeof sbias), sw, (long long)w->shape[0]);
    return PFT_OK;
}

/* x's rows: every dim but the last (which is in, and may be 0) */
static int64_t rows_of(const pft_tensor *x) {
    int64_t n = 1;
    for (int i = 0; i < x->ndim - 1; i++) n *= x->shape[i];
    return n;
}

/* y [N, out] = xc [N, in] . w^T + bias (bias [out] contiguous), and with g also g = gelu(y) (and with slope
 * y = gelu'(y) then), in the GEMM's own pass where the backend can (gemm_linear): *done says whether it
 * did (else nothing is written) */
static pft_status linear_fused(pft_ctx *ctx, const pft_tensor *xc, pft_tensor *w, const float *bias, float *y, float *g,
                               bool slope, int64_t N, bool *done) {
    const pft_backend *be = pft_backend_for(xc);
    const int64_t in = w->shape[1], outf = w->shape[0];
    *done = false;
    if (!be->gemm_linear) return PFT_OK;
    operand ow;
    pft_status st = operand_of(w, 0, &ow);
    if (st) return st;
    pft_operand_key key;
    *done = be->gemm_linear(ctx, !ow.trans, N, outf, in, pft_tensor_data(xc), ow.data, ow.ld, 0.0f, y, bias, g, slope,
                            weight_key(ctx, w, &ow, &key));
    if (*done) ctx->stats.forward_flops += 2 * N * in * outf;
    pft_tensor_release(ow.owner);
    return PFT_OK;
}

/* y [N, out] = xc [N, in] . w^T + beta y: the product both linear ops start from */
static pft_status linear_gemm(pft_ctx *ctx, const pft_tensor *xc, pft_tensor *w, float beta, float *y, int64_t N) {
    const int64_t in = w->shape[1], outf = w->shape[0];
    operand ow;
    pft_status st = operand_of(w, 0, &ow);
    if (st) return st;
    weight_gemm(ctx, pft_backend_for(xc), w, &ow, !ow.trans, N, outf, in, pft_tensor_data(xc), beta, y);
    ctx->stats.forward_flops += 2 * N * in * outf;
    pft_tensor_release(ow.owner);
    return PFT_OK;
}

pft_tensor *pft_linear(pft_tensor *x, pft_tensor *w, pft_tensor *bias) {
    pft_ctx *ctx = x->ctx;
    if (linear_check(ctx, "linear", x, w, bias)) return NULL;
    int64_t in = w->shape[1], outf = w->shape[0];
    int64_t N = rows_of(x);
    int64_t shape[PFT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = outf;
    /* rows of x as one [N, in] matrix; untaped: dx goes straight to x's gradient, which is contiguous */
    pft_tensor *xc = pft_ops_contiguous(x);
    if (!xc) return NULL;
    pft_tensor *out = pft_tensor_empty(ctx, x->ndim, shape);
    if (!out) goto fail;
    float *y = pft_tensor_data(out);
    float beta = 0.0f;
    bool done = false;
    if (bias) { /* the bias in the GEMM's pass, where the backend can */
        pft_tensor *bc = pft_ops_contiguous(bias);
        pft_status st = bc ? linear_fused(ctx, xc, w, pft_tensor_data(bc), y, NULL, false, N, &done) : ctx->last_status;
        pft_tensor_release(bc);
        if (st) goto fail;
    }
    if (bias && !done) { /* else start every row from the bias and let GEMM accumulate onto it */
        float *bc = malloc(sizeof(float) * (size_t)outf);
        if (!bc) {
            pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "linear: out of memory");
            goto fail;
        }
        pft_tensor_to_buffer(bias, bc);
        for (int64_t r = 0; r < N; r++) memcpy(y + r * outf, bc, sizeof(float) * (size_t)outf);
        free(bc);
        beta = 1.0f;
    }
    if (!done && linear_gemm(ctx, xc, w, beta, y, N)) goto fail;
    pft_tensor *inputs[3] = {x, w, bias};
    int n = bias ? 3 : 2;
    if (pft_autograd_needed(ctx, n, inputs)) {
        pft_node *node = pft_autograd_record(ctx, out, "linear", linear_backward, n, inputs);
        if (!node || pft_node_save(ctx, node, xc)) goto fail;
        node->i[0] = N;
        node->i[1] = in;
        node->i[2] = outf;
    }
    pft_tensor_release(xc);
    return out;
fail:
    pft_tensor_release(xc);
    pft_tensor_release(out);
    return NULL;
}

/* --- linear + bias + GELU ------------------------------------------------------------------------- */

/* node->i and inputs as linear's; saved: [0] x as the contiguous [N, in] the forward used, [1] gelu'(h) [N,
 * out] for h = x w^T + bias, GELU's input: the forward had h's erf at hand (gelu(h) needs it), and the
 * backward computing erf and two exps again for the slope was 5% of a dense step. One pass over dy and the
 * slopes gives dh = dy gelu'(h) (into a scratch that is written, not zero-filled and accumulated) and the
 * bias gradient; dx and dw are linear's GEMMs from dh. */
static pft_status linear_gelu_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    const int64_t N = node->i[0], out = node->i[2];
    pft_tensor *dx, *dw, *db = NULL, *dh = NULL;
    float beta_dx, beta_dw;
    pft_status st;
    if ((st = pft_ops_grad_beta(ctx, node, 0, &dx, &beta_dx)) || (st = pft_ops_grad_beta(ctx, node, 1, &dw, &beta_dw)) ||
        (node->n_inputs > 2 && (st = pft_ops_grad(ctx, node, 2, &db))))
        return st;
    if ((dx || dw) && !(dh = pft_tensor_empty(ctx, 2, (int64_t[]){N, out}))) return ctx->last_status;
    st = pft_backend_for(dout)->bias_gelu_backward(ctx, dh ? pft_tensor_data(dh) : NULL, db ? pft_tensor_data(db) : NULL,
                                                   pft_tensor_data(dout), pft_tensor_data(node->saved[1]), N, out);
    if (!st && dh) st = linear_backward_gemms(ctx, node, pft_tensor_data(dh), dx, beta_dx, dw, beta_dw);
    pft_tensor_release(dh);
    return st;
}

pft_tensor *pft_linear_gelu(pft_tensor *x, pft_tensor *w, pft_tensor *bias) {
    pft_ctx *ctx = x->ctx;
    const pft_backend *be = pft_backend_for(x);
    if (pft_ops_missing(ctx, be, be->bias_gelu_forward && be->bias_gelu_backward, "linear_gelu") ||
        linear_check(ctx, "linear_gelu", x, w, bias))
        return NULL;
    const int64_t in = w->shape[1], outf = w->shape[0], N = rows_of(x);
    int64_t shape[PFT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = outf;
    pft_tensor *xc = pft_ops_contiguous(x), *bc = xc && bias ? pft_ops_contiguous(bias) : NULL;
    pft_tensor *h = xc && (bc || !bias) ? pft_tensor_empty(ctx, 2, (int64_t[]){N, outf}) : NULL;
    pft_tensor *out = h ? pft_tensor_empty(ctx, x->ndim, shape) : NULL;
    pft_tensor *inputs[3] = {x, w, bias};
    const int n = bias ? 3 : 2;
    const bool grad = pft_autograd_needed(ctx, n, inputs); /* then h is left holding gelu'(h), for backward */
    /* h = x w^T + bias and out = gelu(h) as the GEMM writes h, where the backend can; else the GEMM (beta 0:
     * no bias rows written first), then one pass: h += bias, out = gelu(h) */
    bool done = false;
    if (!out ||
        linear_fused(ctx, xc, w, bc ? pft_tensor_data(bc) : NULL, pft_tensor_data(h), pft_tensor_data(out), grad, N, &done))
        goto fail;
    if (!done) {
        if (linear_gemm(ctx, xc, w, 0.0f, pft_tensor_data(h), N)) goto fail;
        be->bias_gelu_forward(ctx, pft_tensor_data(out), pft_tensor_data(h), bc ? pft_tensor_data(bc) : NULL, N, outf, grad);
    }
    if (grad) {
        pft_node *node = pft_autograd_record(ctx, out, "linear_gelu", linear_gelu_backward, n, inputs);
        if (!node || pft_node_save(ctx, node, xc) || pft_node_save(ctx, node, h)) goto fail;
        node->i[0] = N, node->i[1] = in, node->i[2] = outf;
    }
    pft_tensor_release(xc), pft_tensor_release(bc), pft_tensor_release(h);
    return out;
fail:
    pft_tensor_release(xc), pft_tensor_release(bc), pft_tensor_release(h), pft_tensor_release(out);
    return NULL;
}

/* --- linear with a LoRA adapter ------------------------------------------------------------------- */

/* node->i: [0] N, [1] in, [2] out, [3] r, [4] dropout on, [5] its rng counter, [6] its seed; f: [0] scale,
 * [1] p. inputs: x, w, a, b, bias (may be absent). saved: [0] x as the contiguous [N, in] the forward used,
 * [1] xa = dropout(x) a^T [N, r], [2] a contiguous. The dropout mask is drawn again from its counter;
 * dropout(x) is never kept. */
static pft_status linear_lora_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    const int64_t N = node->i[0], in = node->i[1], out = node->i[2], r = node->i[3];
    const bool drop = node->i[4];
    const uint64_t counter = (uint64_t)node->i[5], seed = (uint64_t)node->i[6];
    const float scale = (float)node->f[0], p = (float)node->f[1];
    const pft_backend *be = pft_backend_for(dout);
    const float *g = pft_tensor_data(dout), *xd = pft_tensor_data(node->saved[0]), *xa = pft_tensor_data(node->saved[1]);
    pft_tensor *dx = pft_node_input_grad(ctx, node, 0), *dw = pft_node_input_grad(ctx, node, 1);
    pft_tensor *da = pft_node_input_grad(ctx, node, 2), *db = pft_node_input_grad(ctx, node, 3);
    pft_tensor *dbias = node->n_inputs > 4 ? pft_node_input_grad(ctx, node, 4) : NULL;
    operand ow = {0}, ob = {0};
    pft_tensor *dxa = NULL;
    pft_status st = PFT_OK;
    if ((st = operand_of(node->inputs[1], 0, &ow)) || (st = operand_of(node->inputs[3], 0, &ob))) goto done;
    if (dx) { /* the base: dx [N, in] += g [N, out] . w [out, in] */
        weight_gemm(ctx, be, node->inputs[1], &ow, ow.trans, N, in, out, g, 1.0f, pft_tensor_data(dx));
        ctx->stats.backward_flops += 2 * N * in * out;
    }
    if (dw) {
        be->gemm(ctx, true, false, out, in, N, 1.0f, g, out, 0, xd, in, 0, 1.0f, pft_tensor_data(dw), in, 0, 1);
        ctx->stats.backward_flops += 2 * N * in * out;
    }
    if (dbias)
        be->binary_backward(ctx, pft_tensor_data(dbias), (const int64_t[]){0, 1}, g, NULL, NULL, 1.0f, 2,
                            (const int64_t[]){N, out});
    if (db) { /* db [out, r] += scale g^T xa */
        be->gemm(ctx, true, false, out, r, N, scale, g, out, 0, xa, r, 0, 1.0f, pft_tensor_data(db), r, 0, 1);
        ctx->stats.backward_flops += 2 * N * r * out;
    }
    if (!da && !dx) goto done;
    /* dxa = scale g b [N, r]: the gradient of xa, from which a's and x's come */
    if (!(dxa = pft_tensor_empty(ctx, 2, (int64_t[]){N, r}))) {
        st = ctx->last_status;
        goto done;
    }
    be->gemm(ctx, false, ob.trans, N, r, out, scale, g, out, 0, ob.data, ob.ld, 0, 0.0f, pft_tensor_data(dxa), r, 0, 1);
    ctx->stats.backward_flops += 2 * N * r * (out + (da ? in : 0) + (dx ? in : 0));
    /* da [r, in] += dxa^T dropout(x) and dx += dropout'(dxa a) in one pass over x and dx, the mask drawn
     * again (a is contiguous: the forward saved it so) */
    st = be->lora_down_backward(ctx, dx ? pft_tensor_data(dx) : NULL, da ? pft_tensor_data(da) : NULL, xd,
                                pft_tensor_data(dxa), pft_tensor_data(node->saved[2]), N, in, r, drop ? p : 0.0f, seed,
                                counter);
done:
    pft_tensor_release(ow.owner), pft_tensor_release(ob.owner);
    pft_tensor_release(dxa);
    return st;
}

pft_tensor *pft_linear_lora(pft_tensor *x, pft_tensor *w, pft_tensor *bias, pft_tensor *a, pft_tensor *b, float scale,
                            float p, bool train) {
    pft_ctx *ctx = x->ctx;
    char sa[128], sb[128], sw[128];
    if (a->ndim != 2 || b->ndim != 2 || w->ndim != 2 || a->shape[1] != w->shape[1] || b->shape[0] != w->shape[0] ||
        b->shape[1] != a->shape[0]) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "linear_lora: a %s and b %s do not fit weight %s (expected [r, %lld] and [%lld, r])",
                       pft_tensor_shape_str(a, sa, sizeof sa), pft_tensor_shape_str(b, sb, sizeof sb),
                       pft_tensor_shape_str(w, sw, sizeof sw), (long long)(w->ndim == 2 ? w->shape[1] : -1),
                       (long long)(w->ndim == 2 ? w->shape[0] : -1));
        return NULL;
    }
    if (!(p >= 0.0f && p < 1.0f)) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "linear_lora: dropout p = %g must be in [0, 1)", p);
        return NULL;
    }
    pft_ctx_no_grad_enter(ctx); /* the base product, untaped: this op records one node for all of it */
    pft_tensor *out = pft_linear(x, w, bias); /* checks x against w and bias */
    pft_ctx_no_grad_leave(ctx);
    if (!out) return NULL;
    const pft_backend *be = pft_backend_for(x);
    const int64_t in = w->shape[1], outf = w->shape[0], r = a->shape[0], N = rows_of(x);
    const bool drop = train && p > 0;
    const uint64_t counter = ctx->rng_counter;
    operand ob = {0};
    pft_ctx_no_grad_enter(ctx);
    pft_tensor *xc = pft_tensor_contiguous(x), *ac = xc ? pft_tensor_contiguous(a) : NULL;
    pft_ctx_no_grad_leave(ctx);
    pft_tensor *xa = ac ? pft_tensor_empty(ctx, 2, (int64_t[]){N, r}) : NULL;
    if (!xa || operand_of(b, 0, &ob)) goto fail;
    /* xa = dropout(x) a^T [N, r] (one pass over x: dropout(x) is never written), then out += scale xa b^T:
     * w + b a is never formed */
    if (be->lora_down_forward(ctx, pft_tensor_data(xa), pft_tensor_data(xc), pft_tensor_data(ac), N, in, r,
                              drop ? p : 0.0f, ctx->seed, counter))
        goto fail;
    if (drop) ctx->rng_counter += (uint64_t)(N * in);
    be->gemm(ctx, false, !ob.trans, N, outf, r, scale, pft_tensor_data(xa), r, 0, ob.data, ob.ld, 0, 1.0f,
             pft_tensor_data(out), outf, 0, 1);
    ctx->stats.forward_flops += 2 * N * r * (in + outf);
    pft_tensor *inputs[5] = {x, w, a, b, bias};
    const int n = bias ? 5 : 4;
    if (pft_autograd_needed(ctx, n, inputs)) {
        pft_node *node = pft_autograd_record(ctx, out, "linear_lora", linear_lora_backward, n, inputs);
        if (!node || pft_node_save(ctx, node, xc) || pft_node_save(ctx, node, xa) || pft_node_save(ctx, node, ac)) goto fail;
        node->i[0] = N, node->i[1] = in, node->i[2] = outf, node->i[3] = r, node->i[4] = drop;
        node->i[5] = (int64_t)counter, node->i[6] = (int64_t)ctx->seed;
        node->f[0] = scale, node->f[1] = p;
    }
    pft_tensor_release(ob.owner);
    pft_tensor_release(xc), pft_tensor_release(ac), pft_tensor_release(xa);
    return out;
fail:
    pft_tensor_release(ob.owner);
    pft_tensor_release(xc), pft_tensor_release(ac), pft_tensor_release(xa), pft_tensor_release(out);
    return NULL;
}
