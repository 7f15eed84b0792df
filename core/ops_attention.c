/* ops_attention.c - fused multi-head self-attention with its own backward: the op layer (shapes, the
 * sequence layout, results, the tape, counters); the per-(sequence, head) work is the backend's
 * attention_forward / attention_backward (backend.h; the CPU's, threads included, in kernels_cpu.c).
 *
 * q, k, v are [B, T, C] with head h in columns [h*D, (h+1)*D); each (b, h) works on strided [T, D]
 * blocks (leading dimension C), so no head split/merge copies are made. Forward saves the softmax
 * probabilities P [B, H, T, T]; the dropout mask is not stored but regenerated from its counter.
 *
 * Backward, per (b, h), with Pd = dropout(P) and O = Pd V:
 *   dV = Pd^T dO        dPd = dO V^T        dP = dPd * keep / (1 - p)
 *   dS = P * (dP - rowsum(dP * P))          (softmax backward; the mask is a constant)
 *   dQ = scale dS K     dK = scale dS^T Q */
#include <stdlib.h>

#include "backend.h"
#include "ops.h"
#include "ops_internal.h"

/* The sequences of one call: sequence b has len[b] tokens starting at row start[b] of k/v (and q/out, but
 * with one query per sequence: row b); its probabilities for head h start at poff[b * H + h] in P, their
 * dropout draws at coff[b * H + h] (backend.h's pft_attention_layout). Dense [B, T, C] input is B sequences
 * of T at b * T; packed input (padding removed) is sequences back to back. */
typedef struct seqs {
    int64_t n, H, maxlen, total, drawn; /* sequences, heads, longest, P floats, dropout draws */
    bool first_query;
    int64_t *start, *len, *poff, *coff; /* one allocation: n + n + n * H + n * H */
} seqs;

static pft_status seqs_init(pft_ctx *ctx, seqs *s, int64_t n, int64_t H, const int64_t *lens, int64_t fixed_len,
                            bool first_query) {
    s->n = n, s->H = H, s->maxlen = 0, s->total = 0, s->drawn = 0, s->first_query = first_query;
    s->start = malloc(sizeof(int64_t) * (size_t)(n * (2 + 2 * H) + 1));
    if (!s->start) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "attention: out of memory");
    s->len = s->start + n, s->poff = s->len + n, s->coff = s->poff + n * H;
    int64_t row = 0;
    for (int64_t b = 0; b < n; b++) {
        const int64_t L = lens ? lens[b] : fixed_len;
        s->start[b] = row, s->len[b] = L;
        row += L;
        if (L > s->maxlen) s->maxlen = L;
        for (int64_t h = 0; h < H; h++) {
            s->poff[b * H + h] = s->total, s->total += pft_attention_query_count(first_query, L) * L;
            s->coff[b * H + h] = s->drawn, s->drawn += L * L;
        }
    }
    return PFT_OK;
}

/* sum over the (sequence, head) blocks of queries * T * D: the multiply-adds of one [queries, T] x [T, D]
 * product each */
static int64_t block_madds(int64_t n, const int64_t *len, int64_t H, int64_t D, bool first_query) {
    int64_t s = 0;
    for (int64_t b = 0; b < n; b++) s += H * pft_attention_query_count(first_query, len[b]) * len[b] * D;
    return s;
}

/* the rows n sequences of these lengths cover */
static int64_t rows_of_lens(int64_t n, const int64_t *len) {
    int64_t rows = 0;
    for (int64_t b = 0; b < n; b++) rows += len[b] > 0 ? len[b] : 0;
    return rows;
}

/* node->i: [0] C, [1] H, [2] dropout on, [3] rng counter base, [4] sequences, [5] longest, [6] first query
 * only; f: [0] scale, [1] p; extra = seqs arrays (start, len, poff, coff); saved[0] = P (the mask is inside
 * it already). */
static pft_status attention_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    const int64_t C = node->i[0], H = node->i[1], D = C / H;
    const bool drop = node->i[2], first_query = node->i[6];
    const int64_t n = node->i[4];
    const int64_t *start = node->extra, *len = start + n, *poff = len + n, *coff = poff + n * H;
    const pft_backend *be = pft_backend_for(dout);
    if (pft_ops_missing(ctx, be, be->attention_backward, "attention backward")) return ctx->last_status;
    const pft_attention_layout layout = {.n = n, .H = H, .C = C, .rows = C ? pft_tensor_numel(dout) / C : 0,
                                         .maxlen = node->i[5], .total = pft_tensor_numel(node->saved[0]),
                                         .start = start, .len = len, .poff = poff, .coff = coff,
                                         .first_query = first_query};
    /* a new gradient buffer is written, not zero-filled and added to, where the blocks write every row: of
     * q by its queries, of k and v by the sequences' tokens */
    const int64_t kv = rows_of_lens(n, len) * C;
    const bool covered[3] = {pft_attention_rows_covered(&layout), kv == pft_tensor_numel(node->inputs[1]),
                             kv == pft_tensor_numel(node->inputs[2])};
    pft_tensor *g[3];
    float beta[3];
    for (int i = 0; i < 3; i++) {
        g[i] = covered[i] ? pft_node_input_grad_beta(ctx, node, i, &beta[i]) : pft_node_input_grad(ctx, node, i);
        if (!covered[i]) beta[i] = 1.0f;
        if (!g[i] && node->inputs[i]->requires_grad) return ctx->last_status ? ctx->last_status : PFT_ERR_ALLOC;
    }
    pft_ops_shared_grads(3, g, beta); /* one tensor as two of q, k, v: the kernel writes dv before dq, dk */
    pft_tensor *dq = g[0], *dk = g[1], *dv = g[2];
    pft_status st = be->attention_backward(ctx, dq ? pft_tensor_data(dq) : NULL, dk ? pft_tensor_data(dk) : NULL,
                                           dv ? pft_tensor_data(dv) : NULL, beta, pft_tensor_data(node->saved[0]),
                                           pft_tensor_data(dout), pft_tensor_data(node->inputs[0]),
                                           pft_tensor_data(node->inputs[1]), pft_tensor_data(node->inputs[2]),
                                           (float)node->f[0], drop ? (float)node->f[1] : 0.0f, ctx->seed,
                                           (uint64_t)node->i[3], &layout);
    if (st) return st;
    const int64_t madds = block_madds(n, len, H, D, first_query);
    ctx->stats.backward_flops += (dv ? 2 * madds : 0) + (dq || dk ? 2 * madds * (1 + (dq ? 1 : 0) + (dk ? 1 : 0)) : 0);
    return PFT_OK;
}

/* q, k, v: rows of C (any leading shape); out has their shape. mask: additive, per (sequence, key), for
 * dense input only. */
static pft_tensor *attention(pft_tensor *q_in, pft_tensor *k_in, pft_tensor *v_in, seqs *sq, const float *mask,
                             float scale, float p, bool train) {
    pft_ctx *ctx = q_in->ctx;
    const int64_t H = sq->H, C = q_in->shape[q_in->ndim - 1], D = C / H, n = sq->n;
    const bool drop = train && p > 0;
    pft_tensor *q = pft_tensor_contiguous(q_in), *k = pft_tensor_contiguous(k_in), *v = pft_tensor_contiguous(v_in);
    pft_tensor *probs = pft_tensor_empty(ctx, 1, (int64_t[]){sq->total});
    pft_tensor *out = pft_tensor_empty(ctx, q_in->ndim, q_in->shape);
    if (!q || !k || !v || !probs || !out) goto fail;
    const pft_backend *be = pft_backend_for(q);
    if (pft_ops_missing(ctx, be, be->attention_forward, "attention")) goto fail;
    const uint64_t base = ctx->rng_counter;
    const pft_attention_layout layout = {.n = n, .H = H, .C = C, .rows = C ? pft_tensor_numel(out) / C : 0,
                                         .maxlen = sq->maxlen, .total = sq->total, .start = sq->start, .len = sq->len,
                                         .poff = sq->poff, .coff = sq->coff, .first_query = sq->first_query};
    if (be->attention_forward(ctx, pft_tensor_data(out), pft_tensor_data(probs), pft_tensor_data(q), pft_tensor_data(k),
                              pft_tensor_data(v), mask, scale, drop ? p : 0.0f, ctx->seed, base, &layout))
        goto fail;
    ctx->stats.forward_flops += 4 * block_madds(n, sq->len, H, D, sq->first_query);
    if (drop) ctx->rng_counter += (uint64_t)sq->drawn;
    pft_tensor *inputs[3] = {q, k, v};
    if (pft_autograd_needed(ctx, 3, inputs)) {
        pft_node *node = pft_autograd_record(ctx, out, "attention", attention_backward, 3, inputs);
        if (!node || pft_node_save(ctx, node, probs)) goto fail;
        node->i[0] = C, node->i[1] = H, node->i[2] = drop, node->i[3] = (int64_t)base, node->i[4] = n, node->i[5] = sq->maxlen;
        node->i[6] = sq->first_query;
        node->f[0] = scale, node->f[1] = p;
        node->extra = sq->start; /* the node owns the sequence arrays now */
        sq->start = NULL;
    }
    pft_tensor_release(q), pft_tensor_release(k), pft_tensor_release(v), pft_tensor_release(probs);
    return out;
fail:
    pft_tensor_release(q), pft_tensor_release(k), pft_tensor_release(v), pft_tensor_release(probs), pft_tensor_release(out);
    return NULL;
}

/* heads that split C, a dropout probability in [0, 1) */
static bool check_heads(pft_ctx *ctx, int64_t C, int64_t H, float p) {
    if (H <= 0 || C % H) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "attention: %lld channels do not split into %lld heads", (long long)C, (long long)H);
        return false;
    }
    if (!(p >= 0 && p < 1)) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "attention: dropout probability %g is not in [0, 1)", p);
        return false;
    }
    return true;
}

static bool check_qkv(pft_tensor *q, pft_tensor *k, pft_tensor *v, int ndim, int64_t H, float p, const char *layout) {
    pft_ctx *ctx = q->ctx;
    char sq[128], sk[128], sv[128];
    if (q->ndim != ndim || !pft_tensor_same_shape(q, k) || !pft_tensor_same_shape(q, v)) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "attention: q %s, k %s, v %s must be equal %s", pft_tensor_shape_str(q, sq, sizeof sq),
                       pft_tensor_shape_str(k, sk, sizeof sk), pft_tensor_shape_str(v, sv, sizeof sv), layout);
        return false;
    }
    return check_heads(ctx, q->shape[ndim - 1], H, p);
}

/* packed sequences' lengths against the rows they lie in */
static bool check_lens(pft_tensor *x, const char *name, int64_t n, const int64_t *lens) {
    const int64_t rows = rows_of_lens(n, lens);
    if (rows == x->shape[0]) return true;
    pft_ctx_seterr(x->ctx, PFT_ERR_SHAPE, "attention: sequence lengths add up to %lld rows, %s has %lld", (long long)rows, name,
                   (long long)x->shape[0]);
    return false;
}

pft_tensor *pft_attention(pft_tensor *q, pft_tensor *k, pft_tensor *v, const float *mask, int64_t H, float scale, float p,
                          bool train) {
    if (!check_qkv(q, k, v, 3, H, p, "[B, T, C]")) return NULL;
    seqs sq;
    if (seqs_init(q->ctx, &sq, q->shape[0], H, NULL, q->shape[1], false)) return NULL;
    pft_tensor *out = attention(q, k, v, &sq, mask, scale, p, train);
    free(sq.start);
    return out;
}

pft_tensor *pft_attention_packed(pft_tensor *q, pft_tensor *k, pft_tensor *v, int64_t n, const int64_t *lens, int64_t H,
                                 float scale, float p, bool train) {
    if (!check_qkv(q, k, v, 2, H, p, "[N, C]") || !check_lens(q, "q", n, lens)) return NULL;
    seqs sq;
    if (seqs_init(q->ctx, &sq, n, H, lens, 0, false)) return NULL;
    pft_tensor *out = attention(q, k, v, &sq, NULL, scale, p, train);
    free(sq.start);
    return out;
}

pft_tensor *pft_attention_first(pft_tensor *q, pft_tensor *k, pft_tensor *v, const float *mask, const int64_t *lens,
                                int64_t n, int64_t H, float scale, float p, bool train) {
    pft_ctx *ctx = q->ctx;
    char sq_[128], sk[128], sv[128];
    const int kdim = lens ? 2 : 3;
    const int64_t seqs_n = lens ? n : k->ndim == 3 ? k->shape[0] : -1, C = k->shape[k->ndim - 1];
    if (k->ndim != kdim || !pft_tensor_same_shape(k, v) || q->ndim != 2 || q->shape[0] != seqs_n || q->shape[1] != C) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "attention (first queries): q %s, k %s, v %s must be [n, C], %s, %s",
                       pft_tensor_shape_str(q, sq_, sizeof sq_), pft_tensor_shape_str(k, sk, sizeof sk),
                       pft_tensor_shape_str(v, sv, sizeof sv), lens ? "[N, C]" : "[B, T, C]", lens ? "[N, C]" : "[B, T, C]");
        return NULL;
    }
    if (lens && mask) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "attention (first queries): a key mask is for dense [B, T, C] input, not packed");
        return NULL;
    }
    if (!check_heads(ctx, C, H, p) || (lens && !check_lens(k, "k", n, lens))) return NULL;
    seqs sq;
    if (seqs_init(ctx, &sq, seqs_n, H, lens, lens ? 0 : k->shape[1], true)) return NULL;
    pft_tensor *out = attention(q, k, v, &sq, mask, scale, p, train);
    free(sq.start);
    return out;
}
