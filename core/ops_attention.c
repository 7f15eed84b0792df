/* ops_attention.c - fused multi-head self-attention with its own backward.
 *
 * q, k, v are [B, T, C] with head h in columns [h*D, (h+1)*D); each (b, h) works on strided [T, D]
 * blocks (leading dimension C), so no head split/merge copies are made. Forward saves the softmax
 * probabilities P [B, H, T, T]; the dropout mask is not stored but regenerated from its counter.
 *
 * Backward, per (b, h), with Pd = dropout(P) and O = Pd V:
 *   dV = Pd^T dO        dPd = dO V^T        dP = dPd * keep / (1 - p)
 *   dS = P * (dP - rowsum(dP * P))          (softmax backward; the mask is a constant)
 *   dQ = scale dS K     dK = scale dS^T Q
 *
 * Threads: the (b, h) blocks are independent (each writes its own columns of O, dQ, dK, dV), so forward
 * and backward hand whole blocks to ctx->threads OpenMP threads, each running the small GEMMs
 * single-threaded (the CPU backend sees it is inside a parallel region) with its own [T, T] scratch, and
 * fusing scores -> mask -> softmax -> dropout -> P V so the block stays in cache. A block's arithmetic
 * is the same whichever thread runs it: results do not depend on the thread count. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "kernels_cpu.h" /* pft_fast_expf */
#include "nn.h"
#include "rng.h"

/* A GEMM of batch 0 outside the region: the backend sets BLAS to one thread before the region's threads
 * call it concurrently. */
static void blas_ready(pft_ctx *ctx, const pft_backend *be) {
    be->gemm(ctx, false, false, 1, 1, 1, 1.0f, NULL, 1, 0, NULL, 1, 0, 0.0f, NULL, 1, 0, 0);
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}


/* Applies the dropout of (b, h)'s [T, T] block: the mask of element e is drawn at counter base + e. */
static void dropout_block(float *dst, const float *src, int64_t n, float p, uint64_t seed, uint64_t base) {
    const float keep_scale = 1.0f / (1.0f - p);
    for (int64_t e = 0; e < n; e++) dst[e] = pft_rng_uniform_f(seed, base + (uint64_t)e) < p ? 0.0f : src[e] * keep_scale;
}

/* The sequences of one call: sequence b has len[b] tokens starting at row start[b] of q/k/v/out (rows of C
 * floats); its probabilities for head h start at poff[b * H + h] in P. Dense [B, T, C] input is B
 * sequences of T at b * T; packed input (padding removed) is sequences back to back. */
typedef struct seqs {
    int64_t n, H, maxlen, total; /* sequences, heads, longest, P floats */
    int64_t *start, *len, *poff; /* one allocation: n + n + n * H */
} seqs;

static pft_status seqs_init(pft_ctx *ctx, seqs *s, int64_t n, int64_t H, const int64_t *lens, int64_t fixed_len) {
    s->n = n, s->H = H, s->maxlen = 0, s->total = 0;
    s->start = malloc(sizeof(int64_t) * (size_t)(n * (2 + H) + 1));
    if (!s->start) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "attention: out of memory");
    s->len = s->start + n, s->poff = s->len + n;
    int64_t row = 0;
    for (int64_t b = 0; b < n; b++) {
        const int64_t L = lens ? lens[b] : fixed_len;
        s->start[b] = row, s->len[b] = L;
        row += L;
        if (L > s->maxlen) s->maxlen = L;
        for (int64_t h = 0; h < H; h++) s->poff[b * H + h] = s->total, s->total += L * L;
    }
    return PFT_OK;
}

/* threads for the blocks, given the work of all of them */
static int att_threads(const pft_ctx *ctx, int64_t blocks, int64_t work) {
#ifdef _OPENMP
    return ctx->threads > 1 && blocks > 1 && work >= 32768 ? (int)(blocks < ctx->threads ? blocks : ctx->threads) : 1;
#else
    (void)ctx, (void)blocks, (void)work;
    return 1;
#endif
}

/* node->i: [0] C, [1] H, [2] dropout on, [3] rng counter base; f: [0] scale, [1] p; extra = seqs arrays
 * (start, len, poff); saved[0] = P (the mask is inside it already). */
static pft_status attention_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    const int64_t C = node->i[0], H = node->i[1], D = C / H;
    const bool drop = node->i[2];
    const uint64_t base = (uint64_t)node->i[3];
    const float scale = (float)node->f[0], p = (float)node->f[1];
    const int64_t n = node->i[4], maxlen = node->i[5];
    const int64_t *start = node->extra, *len = start + n, *poff = len + n;
    const pft_backend *be = pft_backend_for(dout);
    pft_tensor *dq = pft_node_input_grad(ctx, node, 0);
    pft_tensor *dk = pft_node_input_grad(ctx, node, 1);
    pft_tensor *dv = pft_node_input_grad(ctx, node, 2);
    const float *q = pft_tensor_data(node->inputs[0]), *k = pft_tensor_data(node->inputs[1]);
    const float *v = pft_tensor_data(node->inputs[2]), *dO = pft_tensor_data(dout);
    const float *P = pft_tensor_data(node->saved[0]);
    const int nt = att_threads(ctx, n * H, pft_tensor_numel(node->saved[0]));
    float *scratch = malloc(sizeof(float) * (size_t)(maxlen * maxlen * 2) * (size_t)nt + sizeof(float));
    if (!scratch) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "attention backward: out of memory");
    blas_ready(ctx, be);
    int64_t flops = 0;
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(+ : flops)
    {
        float *dP = scratch + (size_t)thread_id() * (size_t)(maxlen * maxlen * 2), *Pd = dP + maxlen * maxlen;
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < n * H; bh++) {
            const int64_t b = bh / H, h = bh % H, T = len[b];
            if (T == 0) continue;
            const int64_t blk = start[b] * C + h * D;
            const float *Pbh = P + poff[bh];
            const uint64_t cbase = base + (uint64_t)poff[bh];
            if (dv) {
                const float *Pv = Pbh;
                if (drop) {
                    dropout_block(Pd, Pbh, T * T, p, ctx->seed, cbase);
                    Pv = Pd;
                }
                be->gemm(ctx, true, false, T, D, T, 1.0f, Pv, T, 0, dO + blk, C, 0, 1.0f, pft_tensor_data(dv) + blk, C, 0, 1);
                flops += 2 * T * T * D;
            }
            if (!dq && !dk) continue; /* (a `continue` of the omp for: goes to the next block) */
            be->gemm(ctx, false, true, T, T, D, 1.0f, dO + blk, C, 0, v + blk, C, 0, 0.0f, dP, T, 0, 1);
            if (drop) dropout_block(dP, dP, T * T, p, ctx->seed, cbase);
            for (int64_t r = 0; r < T; r++) { /* dS = P * (dP - <dP, P>) row by row, in place in dP */
                float *g = dP + r * T;
                const float *pr = Pbh + r * T;
                double dot = 0;
                for (int64_t c = 0; c < T; c++) dot += (double)g[c] * pr[c];
                for (int64_t c = 0; c < T; c++) g[c] = pr[c] * (g[c] - (float)dot);
            }
            if (dq) be->gemm(ctx, false, false, T, D, T, scale, dP, T, 0, k + blk, C, 0, 1.0f, pft_tensor_data(dq) + blk, C, 0, 1);
            if (dk) be->gemm(ctx, true, false, T, D, T, scale, dP, T, 0, q + blk, C, 0, 1.0f, pft_tensor_data(dk) + blk, C, 0, 1);
            flops += 2 * T * T * D * (1 + (dq ? 1 : 0) + (dk ? 1 : 0));
        }
    }
    ctx->stats.backward_flops += flops;
    free(scratch);
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
    const int nt = att_threads(ctx, n * H, sq->total);
    float *scratch = drop ? malloc(sizeof(float) * (size_t)(sq->maxlen * sq->maxlen) * (size_t)nt + sizeof(float)) : NULL;
    if (!q || !k || !v || !probs || !out || (drop && !scratch)) {
        if (drop && !scratch) pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "attention: out of memory");
        goto fail;
    }
    const pft_backend *be = pft_backend_for(q);
    const uint64_t base = ctx->rng_counter;
    float *P = pft_tensor_data(probs), *O = pft_tensor_data(out);
    const float *qd = pft_tensor_data(q), *kd = pft_tensor_data(k), *vd = pft_tensor_data(v);
    if (pft_tensor_numel(out)) memset(O, 0, sizeof(float) * (size_t)pft_tensor_numel(out)); /* rows in no sequence */
    blas_ready(ctx, be);
    int64_t flops = 0;
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(+ : flops)
    {
        float *mine = drop ? scratch + (size_t)thread_id() * (size_t)(sq->maxlen * sq->maxlen) : NULL;
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < n * H; bh++) {
            const int64_t b = bh / H, h = bh % H, T = sq->len[b];
            if (T == 0) continue;
            const int64_t blk = sq->start[b] * C + h * D;
            float *S = P + sq->poff[bh];
            be->gemm(ctx, false, true, T, T, D, scale, qd + blk, C, 0, kd + blk, C, 0, 0.0f, S, T, 0, 1);
            for (int64_t r = 0; r < T; r++) {
                float *row = S + r * T, mx = -INFINITY;
                if (mask)
#pragma omp simd
                    for (int64_t c = 0; c < T; c++) row[c] += mask[b * T + c];
                for (int64_t c = 0; c < T; c++) mx = row[c] > mx ? row[c] : mx;
                /* sum in 8 interleaved lanes, added in a fixed order (vectorisable, reproducible) */
                float lane[8] = {0};
                int64_t c = 0;
                for (; c + 8 <= T; c += 8)
                    for (int l = 0; l < 8; l++) lane[l] += (row[c + l] = pft_fast_expf(row[c + l] - mx));
                for (; c < T; c++) lane[c % 8] += (row[c] = pft_fast_expf(row[c] - mx));
                const float sum = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
                const float inv = 1.0f / sum;
#pragma omp simd
                for (int64_t c2 = 0; c2 < T; c2++) row[c2] *= inv;
            }
            const float *Pv = S;
            if (drop) {
                dropout_block(mine, S, T * T, p, ctx->seed, base + (uint64_t)sq->poff[bh]);
                Pv = mine;
            }
            be->gemm(ctx, false, false, T, D, T, 1.0f, Pv, T, 0, vd + blk, C, 0, 0.0f, O + blk, C, 0, 1);
            flops += 4 * T * T * D;
        }
    }
    ctx->stats.forward_flops += flops;
    if (drop) ctx->rng_counter += (uint64_t)sq->total;
    pft_tensor *inputs[3] = {q, k, v};
    if (pft_autograd_needed(ctx, 3, inputs)) {
        pft_node *node = pft_autograd_record(ctx, out, "attention", attention_backward, 3, inputs);
        if (!node || pft_node_save(ctx, node, probs)) goto fail;
        node->i[0] = C, node->i[1] = H, node->i[2] = drop, node->i[3] = (int64_t)base, node->i[4] = n, node->i[5] = sq->maxlen;
        node->f[0] = scale, node->f[1] = p;
        node->extra = sq->start; /* the node owns the sequence arrays now */
        sq->start = NULL;
    }
    free(scratch);
    pft_tensor_release(q), pft_tensor_release(k), pft_tensor_release(v), pft_tensor_release(probs);
    return out;
fail:
    free(scratch);
    pft_tensor_release(q), pft_tensor_release(k), pft_tensor_release(v), pft_tensor_release(probs), pft_tensor_release(out);
    return NULL;
}

static bool check_qkv(pft_tensor *q, pft_tensor *k, pft_tensor *v, int ndim, int64_t H, float p, const char *layout) {
    pft_ctx *ctx = q->ctx;
    char sq[128], sk[128], sv[128];
    if (q->ndim != ndim || !pft_tensor_same_shape(q, k) || !pft_tensor_same_shape(q, v)) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "attention: q %s, k %s, v %s must be equal %s", pft_tensor_shape_str(q, sq, sizeof sq),
                       pft_tensor_shape_str(k, sk, sizeof sk), pft_tensor_shape_str(v, sv, sizeof sv), layout);
        return false;
    }
    const int64_t C = q->shape[ndim - 1];
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

pft_tensor *pft_attention(pft_tensor *q, pft_tensor *k, pft_tensor *v, const float *mask, int64_t H, float scale, float p,
                          bool train) {
    if (!check_qkv(q, k, v, 3, H, p, "[B, T, C]")) return NULL;
    seqs sq;
    if (seqs_init(q->ctx, &sq, q->shape[0], H, NULL, q->shape[1])) return NULL;
    pft_tensor *out = attention(q, k, v, &sq, mask, scale, p, train);
    free(sq.start);
    return out;
}

pft_tensor *pft_attention_packed(pft_tensor *q, pft_tensor *k, pft_tensor *v, int64_t n, const int64_t *lens, int64_t H,
                                 float scale, float p, bool train) {
    if (!check_qkv(q, k, v, 2, H, p, "[N, C]")) return NULL;
    int64_t rows = 0;
    for (int64_t b = 0; b < n; b++) rows += lens[b] > 0 ? lens[b] : 0;
    if (rows != q->shape[0]) {
        pft_ctx_seterr(q->ctx, PFT_ERR_SHAPE, "attention: sequence lengths add up to %lld rows, q has %lld", (long long)rows,
                       (long long)q->shape[0]);
        return NULL;
    }
    seqs sq;
    if (seqs_init(q->ctx, &sq, n, H, lens, 0)) return NULL;
    pft_tensor *out = attention(q, k, v, &sq, NULL, scale, p, train);
    free(sq.start);
    return out;
}
