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

/* threads for B * H blocks of T x T */
static int att_threads(const pft_ctx *ctx, int64_t blocks, int64_t T) {
#ifdef _OPENMP
    return ctx->threads > 1 && blocks > 1 && blocks * T * T >= 32768 ? (int)(blocks < ctx->threads ? blocks : ctx->threads) : 1;
#else
    (void)ctx, (void)blocks, (void)T;
    return 1;
#endif
}

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

/* node->i: [0] B, [1] T, [2] C, [3] H, [4] dropout on, [5] rng counter base; f: [0] scale, [1] p.
 * saved[0] = P (the mask is inside it already). */
static pft_status attention_backward(pft_ctx *ctx, pft_node *node, const pft_tensor *dout) {
    const int64_t B = node->i[0], T = node->i[1], C = node->i[2], H = node->i[3], D = C / H;
    const bool drop = node->i[4];
    const uint64_t base = (uint64_t)node->i[5];
    const float scale = (float)node->f[0], p = (float)node->f[1];
    const pft_backend *be = pft_backend_for(dout);
    pft_tensor *dq = pft_node_input_grad(ctx, node, 0);
    pft_tensor *dk = pft_node_input_grad(ctx, node, 1);
    pft_tensor *dv = pft_node_input_grad(ctx, node, 2);
    const float *q = pft_tensor_data(node->inputs[0]), *k = pft_tensor_data(node->inputs[1]);
    const float *v = pft_tensor_data(node->inputs[2]), *dO = pft_tensor_data(dout);
    const float *P = pft_tensor_data(node->saved[0]);
    const int nt = att_threads(ctx, B * H, T);
    float *scratch = malloc(sizeof(float) * (size_t)(T * T * 2) * (size_t)nt);
    if (!scratch) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "attention backward: out of memory");
    blas_ready(ctx, be);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *dP = scratch + (size_t)thread_id() * (size_t)(T * T * 2), *Pd = dP + T * T;
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < B * H; bh++) {
            const int64_t b = bh / H, h = bh % H;
            const int64_t blk = b * T * C + h * D;
            const float *Pbh = P + (b * H + h) * T * T;
            const uint64_t cbase = base + (uint64_t)((b * H + h) * T * T);
            if (dv) {
                const float *Pv = Pbh;
                if (drop) {
                    dropout_block(Pd, Pbh, T * T, p, ctx->seed, cbase);
                    Pv = Pd;
                }
                be->gemm(ctx, true, false, T, D, T, 1.0f, Pv, T, 0, dO + blk, C, 0, 1.0f, pft_tensor_data(dv) + blk, C, 0, 1);
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
        }
    }
    ctx->stats.backward_flops += 2 * B * H * T * T * D * ((dv ? 1 : 0) + (dq || dk ? 1 : 0) + (dq ? 1 : 0) + (dk ? 1 : 0));
    free(scratch);
    return PFT_OK;
}

pft_tensor *pft_attention(pft_tensor *q_in, pft_tensor *k_in, pft_tensor *v_in, const float *mask, int64_t H, float scale,
                          float p, bool train) {
    pft_ctx *ctx = q_in->ctx;
    char sq[128], sk[128], sv[128];
    if (q_in->ndim != 3 || !pft_tensor_same_shape(q_in, k_in) || !pft_tensor_same_shape(q_in, v_in)) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "attention: q %s, k %s, v %s must be equal [B, T, C]",
                       pft_tensor_shape_str(q_in, sq, sizeof sq), pft_tensor_shape_str(k_in, sk, sizeof sk),
                       pft_tensor_shape_str(v_in, sv, sizeof sv));
        return NULL;
    }
    const int64_t B = q_in->shape[0], T = q_in->shape[1], C = q_in->shape[2];
    if (H <= 0 || C % H) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "attention: %lld channels do not split into %lld heads", (long long)C, (long long)H);
        return NULL;
    }
    if (!(p >= 0 && p < 1)) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "attention: dropout probability %g is not in [0, 1)", p);
        return NULL;
    }
    const int64_t D = C / H;
    const bool drop = train && p > 0;
    pft_tensor *q = pft_tensor_contiguous(q_in), *k = pft_tensor_contiguous(k_in), *v = pft_tensor_contiguous(v_in);
    pft_tensor *probs = pft_tensor_empty(ctx, 4, (int64_t[]){B, H, T, T});
    pft_tensor *out = pft_tensor_empty(ctx, 3, (int64_t[]){B, T, C});
    const int nt = att_threads(ctx, B * H, T);
    float *scratch = drop ? malloc(sizeof(float) * (size_t)(T * T) * (size_t)nt) : NULL;
    if (!q || !k || !v || !probs || !out || (drop && !scratch)) {
        if (drop && !scratch) pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "attention: out of memory");
        goto fail;
    }
    const pft_backend *be = pft_backend_for(q);
    const uint64_t base = ctx->rng_counter;
    float *P = pft_tensor_data(probs), *O = pft_tensor_data(out);
    const float *qd = pft_tensor_data(q), *kd = pft_tensor_data(k), *vd = pft_tensor_data(v);
    blas_ready(ctx, be);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *mine = drop ? scratch + (size_t)thread_id() * (size_t)(T * T) : NULL;
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < B * H; bh++) {
            const int64_t b = bh / H, h = bh % H;
            const int64_t blk = b * T * C + h * D;
            float *S = P + bh * T * T;
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
                dropout_block(mine, S, T * T, p, ctx->seed, base + (uint64_t)(bh * T * T));
                Pv = mine;
            }
            be->gemm(ctx, false, false, T, D, T, 1.0f, Pv, T, 0, vd + blk, C, 0, 0.0f, O + blk, C, 0, 1);
        }
    }
    ctx->stats.forward_flops += 4 * B * H * T * T * D;
    if (drop) ctx->rng_counter += (uint64_t)(B * H * T * T);
    pft_tensor *inputs[3] = {q, k, v};
    if (pft_autograd_needed(ctx, 3, inputs)) {
        pft_node *node = pft_autograd_record(ctx, out, "attention", attention_backward, 3, inputs);
        if (!node || pft_node_save(ctx, node, probs)) goto fail;
        node->i[0] = B, node->i[1] = T, node->i[2] = C, node->i[3] = H, node->i[4] = drop, node->i[5] = (int64_t)base;
        node->f[0] = scale, node->f[1] = p;
    }
    free(scratch);
    pft_tensor_release(q), pft_tensor_release(k), pft_tensor_release(v), pft_tensor_release(probs);
    return out;
fail:
    free(scratch);
    pft_tensor_release(q), pft_tensor_release(k), pft_tensor_release(v), pft_tensor_release(probs), pft_tensor_release(out);
    return NULL;
}
