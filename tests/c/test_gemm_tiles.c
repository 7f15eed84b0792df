/* test_gemm_tiles.c - pft's tiled GEMM: each kind this processor runs (fp32 on AVX-512; bf16 on AMX and
 * AVX512-BF16) against a double-precision product of its operands (bf16-rounded for the bf16 kinds), over
 * every transpose, ragged edges, alpha/beta, batches; bit-identical for 1 and 2 threads; reached through
 * the ops (fp32 by default where AVX-512 runs, bf16 once a context's precision is bf16); the switches'
 * errors. */
#include "check.h"
#ifdef __GLIBC__
#include <malloc.h> /* mallinfo2: whether a block was mmapped */
#endif
#include "gemm_tiles.h"
#include "kernels_cpu.h"

static const pft_gemm_kind KINDS[] = {PFT_GEMM_F32_AVX512, PFT_GEMM_BF16_AMX, PFT_GEMM_BF16_AVX512};

static bool is_bf16(pft_gemm_kind kind) { return kind == PFT_GEMM_BF16_AMX || kind == PFT_GEMM_BF16_AVX512; }

/* an operand as the kind multiplies it */
static double operand(pft_gemm_kind kind, float x) { return is_bf16(kind) ? pft_bf16_round(x) : x; }

static void test_rounding(void) {
    CHECK(pft_bf16_round(1.0f) == 1.0f, "1 stays 1");
    CHECK(pft_bf16_round(1.0f + 0x1p-8f) == 1.0f, "a tie rounds to the even neighbour (down)");
    CHECK(pft_bf16_round(1.0f + 0x1p-7f + 0x1p-8f) == 1.0f + 0x1p-6f, "a tie rounds to the even neighbour (up)");
    CHECK(pft_bf16_round(1.0f + 0x1p-8f + 0x1p-12f) == 1.0f + 0x1p-7f, "above a tie rounds up");
    CHECK(pft_bf16_round(-3.0f) == -3.0f, "exact values stay");
    CHECK(isinf(pft_bf16_round(3.4e38f)), "beyond bf16's largest finite: inf");
    CHECK(isnan(pft_bf16_round(NAN)), "NaN stays NaN");
    CHECK(isinf(pft_bf16_round(INFINITY)) && pft_bf16_round(INFINITY) > 0, "inf stays inf");
    CHECK(pft_bf16_round(1e-39f) == 0.0f && signbit(pft_bf16_round(-1e-39f)), "a denormal is a signed zero");
}

/* A . I (I the identity) is A's operands as the hardware converts them: equal to pft_bf16_round, both
 * packings (A as rows, and A transposed) */
static void test_conversion_matches(pft_ctx *ctx, pft_gemm_kind kind) {
    enum { M = 20, K = 40 };
    float A[M * K], At[K * M], I[K * K], C[M * K];
    const float special[] = {1.0f + 0x1p-8f, 1.0f + 0x1p-7f + 0x1p-8f, -2.5f, 3.0e38f, 1e-39f, 1.17549435e-38f, 0.0f, -0.0f};
    for (int i = 0; i < M * K; i++) A[i] = i < 8 ? special[i] : pft_rng_uniform_f(7, (uint64_t)i) * 200.0f - 100.0f;
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) At[k * M + i] = A[i * K + k];
    for (int i = 0; i < K * K; i++) I[i] = i % (K + 1) == 0 ? 1.0f : 0.0f;
    for (int ta = 0; ta < 2; ta++) {
        pft_gemm_tiles(ctx, kind, ta, ta, M, K, K, 1.0f, ta ? At : A, ta ? M : K, 0, I, K, 0, 0.0f, C, K, 0, 1);
        int bad = 0;
        int first_bad = 0;
        for (int i = M * K - 1; i >= 0; i--)
            if (C[i] != pft_bf16_round(A[i])) bad++, first_bad = i; /* values: -0 . 1 summed from +0 is +0 */
        CHECK(bad == 0, "%s ta %d: %d of A . I differ from pft_bf16_round(A) (first: %a -> %a, not %a)", pft_gemm_kind_name(kind),
              ta, bad, A[first_bad], C[first_bad], pft_bf16_round(A[first_bad]));
    }
}

/* op(X)[i][j] of a row-major matrix stored as X (trans: X holds the transpose, leading dim ld) */
static float at(const float *X, int64_t ld, bool trans, int64_t i, int64_t j) { return trans ? X[j * ld + i] : X[i * ld + j]; }

/* the largest |C - ref| / (|alpha| sum_k |a b| + |beta C0| + 1e-30) over every row_step-th row of C (and its
 * last), ref in double from the operands as the kind multiplies them */
static double worst_error_rows(pft_gemm_kind kind, const float *A, int64_t lda, bool ta, const float *B, int64_t ldb,
                               bool tb, const float *C0, const float *C, int64_t ldc, int64_t M, int64_t N, int64_t K,
                               float alpha, float beta, int64_t row_step) {
    double worst = 0;
    for (int64_t i = 0; i < M; i = i + row_step < M || i == M - 1 ? i + row_step : M - 1)
        for (int64_t j = 0; j < N; j++) {
            double s = 0, mag = 0;
            for (int64_t k = 0; k < K; k++) {
                double p = operand(kind, at(A, lda, ta, i, k)) * operand(kind, at(B, ldb, tb, k, j));
                s += p, mag += fabs(p);
            }
            double c0 = beta == 0.0f ? 0.0 : (double)beta * C0[i * ldc + j];
            double ref = alpha * s + c0, err = fabs(C[i * ldc + j] - ref) / (fabs(alpha) * mag + fabs(c0) + 1e-30);
            if (err > worst || err != err) worst = err != err ? INFINITY : err;
        }
    return worst;
}

static double worst_error(pft_gemm_kind kind, const float *A, int64_t lda, bool ta, const float *B, int64_t ldb, bool tb,
                          const float *C0, const float *C, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha,
                          float beta) {
    return worst_error_rows(kind, A, lda, ta, B, ldb, tb, C0, C, ldc, M, N, K, alpha, beta, 1);
}

static float *rand_buf(uint64_t *state, int64_t n) {
    float *x = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) x[i] = pft_rng_uniform_f(*state, (uint64_t)i) * 2.0f - 1.0f;
    (*state)++;
    return x;
}

static void test_against_reference(pft_ctx *ctx, pft_gemm_kind kind, uint64_t seed) {
    const int64_t shapes[][3] = {{37, 29, 41}, {1, 1, 1}, {16, 16, 32}, {33, 65, 95}, {100, 70, 300}, {300, 160, 96}};
    uint64_t st = seed;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2; /* padded rows */
                float *A = rand_buf(&st, (ta ? K : M) * lda), *B = rand_buf(&st, (tb ? N : K) * ldb);
                float *C0 = rand_buf(&st, M * ldc), *C = malloc(sizeof(float) * (size_t)(M * ldc));
                const float alphas[] = {1.0f, 0.5f}, betas[] = {0.0f, 1.0f, -1.5f};
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 3; b++) {
                        memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
                        if (betas[b] == 0.0f) C[0] = NAN; /* beta 0 must not read C */
                        bool ok = pft_gemm_tiles(ctx, kind, ta, tb, M, N, K, alphas[a], A, lda, 0, B, ldb, 0, betas[b], C,
                                                ldc, 0, 1);
                        double e = worst_error(kind, A, lda, ta, B, ldb, tb, C0, C, ldc, M, N, K, alphas[a], betas[b]);
                        /* fp32 sums of products rounded once each (exact bf16 products, or FMAs): a few ulp of
                         * fp32 relative to the magnitudes; bf16 against unrounded operands would be off by
                         * ~2^-9, a lost k-block by far more */
                        CHECK(ok && e < 2e-6, "%s [%lld, %lld, %lld] ta %d tb %d alpha %g beta %g: error %g",
                              pft_gemm_kind_name(kind), (long long)M, (long long)N, (long long)K, ta, tb, alphas[a],
                              betas[b], e);
                        bool pad_kept = true; /* columns past N in each row of C are not C's */
                        for (int64_t i = 0; i < M; i++)
                            pad_kept = pad_kept && C[i * ldc + N] == C0[i * ldc + N] && C[i * ldc + N + 1] == C0[i * ldc + N + 1];
                        CHECK(pad_kept, "%s: wrote outside C", pft_gemm_kind_name(kind));
                    }
                free(A), free(B), free(C0), free(C);
            }
}

/* K in several chunks over a C too big to stay in L2 (gemm_grouped, on 1 and 2 threads: panels in groups of
 * two at this width), the two threads' runs meeting inside a panel: the same bits on 1 and 2 threads, every chunk added
 * once (checked on every 7th row and the last: the rows of every group and both threads) */
static void test_k_chunks_in_groups(pft_ctx *ctx, pft_gemm_kind kind, uint64_t seed) {
    /* 13 panels x 63 column pairs: thread 1 starts at panel 6, pair 31; K: 4 chunks in fp32, 3 in bf16 */
    const int64_t M = 416, N = 2000, K = is_bf16(kind) ? 2100 : 800;
    uint64_t st = seed + 200;
    for (int t = 0; t < 2; t++) {
        const bool trans = t == 1;
        float *A = rand_buf(&st, M * K), *B = rand_buf(&st, K * N), *C0 = rand_buf(&st, M * N);
        float *C1 = malloc(sizeof(float) * (size_t)(M * N)), *C2 = malloc(sizeof(float) * (size_t)(M * N));
        memcpy(C1, C0, sizeof(float) * (size_t)(M * N)), memcpy(C2, C0, sizeof(float) * (size_t)(M * N));
        const int64_t lda = trans ? M : K, ldb = trans ? K : N;
        int saved = ctx->threads;
        ctx->threads = 1;
        pft_gemm_tiles(ctx, kind, trans, trans, M, N, K, 0.5f, A, lda, 0, B, ldb, 0, 1.0f, C1, N, 0, 1);
        ctx->threads = 2;
        pft_gemm_tiles(ctx, kind, trans, trans, M, N, K, 0.5f, A, lda, 0, B, ldb, 0, 1.0f, C2, N, 0, 1);
        ctx->threads = saved;
        CHECK(!memcmp(C1, C2, sizeof(float) * (size_t)(M * N)), "%s ta = tb = %d, K in chunks: 1 and 2 threads differ",
              pft_gemm_kind_name(kind), trans);
        double e = worst_error_rows(kind, A, lda, trans, B, ldb, trans, C0, C2, N, M, N, K, 0.5f, 1.0f, 7);
        CHECK(e < 2e-6, "%s ta = tb = %d, K in chunks: error %g", pft_gemm_kind_name(kind), trans, e);
        free(A), free(B), free(C0), free(C1), free(C2);
    }
}

/* K in two chunks with A read in place (fp32, as stored: gemm_columns, each panel's chunks back to back): the
 * same bits on 1 and 2 threads, every chunk added once, with and without a bias in the last chunk's write-back.
 * 4 panels, the last of one row (packed by the thread that meets it), 35 column pairs in 3 column chunks (the
 * last narrower): thread 1 starts inside the first panel of the second column chunk. */
static void test_k_chunks_by_columns(pft_ctx *ctx, pft_gemm_kind kind, uint64_t seed) {
    const int64_t M = 97, N = 1100, K = 384;
    uint64_t st = seed + 300;
    for (int tb = 0; tb < 2; tb++) {
        const int64_t ldb = tb ? K : N;
        float *A = rand_buf(&st, M * K), *B = rand_buf(&st, K * N), *C0 = rand_buf(&st, M * N), *bias = rand_buf(&st, N);
        float *C1 = malloc(sizeof(float) * (size_t)(M * N)), *C2 = malloc(sizeof(float) * (size_t)(M * N));
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const pft_gemm_epilogue ep = {.bias = with_bias ? bias : NULL};
            const float beta = with_bias ? 0.0f : -1.5f;
            memcpy(C1, C0, sizeof(float) * (size_t)(M * N)), memcpy(C2, C0, sizeof(float) * (size_t)(M * N));
            int saved = ctx->threads;
            ctx->threads = 1;
            pft_gemm_tiles_epilogue(ctx, kind, false, tb, M, N, K, 0.5f, A, K, B, ldb, beta, C1, N, &ep, NULL);
            ctx->threads = 2;
            pft_gemm_tiles_epilogue(ctx, kind, false, tb, M, N, K, 0.5f, A, K, B, ldb, beta, C2, N, &ep, NULL);
            ctx->threads = saved;
            CHECK(!memcmp(C1, C2, sizeof(float) * (size_t)(M * N)), "%s tb %d bias %d, K in two chunks by columns: 1 and 2 "
                  "threads differ", pft_gemm_kind_name(kind), tb, with_bias);
            if (with_bias) /* the bias taken off again: what remains is the product */
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < N; j++) C2[i * N + j] -= bias[j];
            double e = worst_error_rows(kind, A, K, false, B, ldb, tb, C0, C2, N, M, N, K, 0.5f, beta, 3);
            CHECK(e < 2e-6, "%s tb %d bias %d, K in two chunks by columns: error %g", pft_gemm_kind_name(kind), tb,
                  with_bias, e);
        }
        free(A), free(B), free(C0), free(bias), free(C1), free(C2);
    }
}

/* B's packing kept in the context (ctx.h's packed operands) under a key, over the three sweeps (K in one chunk,
 * in two by columns, in groups) and both layouts of B: the first call packs and keeps, later ones (on 1 and 2
 * threads) read the kept tiles, and every call gives the bits of a GEMM that packs B itself. B changed under
 * the same version is not seen (so the kept tiles are what is read: the checks above could fail); a new
 * version is packed again. */
static void test_kept_packing(pft_ctx *ctx, pft_gemm_kind kind, uint64_t seed) {
    const int64_t shapes[][3] = {{300, 200, 1500}, {97, 1100, 384}, {416, 2000, is_bf16(kind) ? 2100 : 800}};
    uint64_t st = seed + 400;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int tb = 0; tb < 2; tb++) {
            const int64_t M = shapes[i][0], N = shapes[i][1], K = shapes[i][2], ldb = tb ? K : N;
            const size_t bytes = sizeof(float) * (size_t)(M * N);
            float *A = rand_buf(&st, M * K), *B = rand_buf(&st, K * N), *bias = rand_buf(&st, N);
            float *ref = malloc(bytes), *C = malloc(bytes);
            const pft_gemm_epilogue ep = {.bias = bias};
            pft_operand_key key = {.storage = 1000 + 2 * i + (uint64_t)tb, .version = 7, .offset = 0};
            const int count = ctx->packed_count, saved = ctx->threads;
            pft_gemm_tiles_epilogue(ctx, kind, false, tb, M, N, K, 1.0f, A, K, B, ldb, 0.0f, ref, N, &ep, NULL);
            CHECK(ctx->packed_count == count, "%s: nothing kept without a key", pft_gemm_kind_name(kind));
            for (int call = 0; call < 3; call++) {
                ctx->threads = call == 2 ? 1 : 2;
                memset(C, 0, bytes);
                pft_gemm_tiles_epilogue(ctx, kind, false, tb, M, N, K, 1.0f, A, K, B, ldb, 0.0f, C, N, &ep, &key);
                CHECK(!memcmp(ref, C, bytes), "%s %lldx%lldx%lld tb %d, call %d with B kept: bits differ",
                      pft_gemm_kind_name(kind), (long long)M, (long long)N, (long long)K, tb, call);
            }
            ctx->threads = saved;
            CHECK(ctx->packed_count == count + 1, "%s tb %d: one packing kept (%d -> %d)", pft_gemm_kind_name(kind), tb, count,
                  ctx->packed_count);
            for (int64_t j = 0; j < K * N; j++) B[j] = -B[j];
            pft_gemm_tiles_epilogue(ctx, kind, false, tb, M, N, K, 1.0f, A, K, B, ldb, 0.0f, C, N, &ep, &key);
            CHECK(!memcmp(ref, C, bytes), "%s tb %d: B changed under the same version: the kept tiles are read",
                  pft_gemm_kind_name(kind), tb);
            key.version++;
            pft_gemm_tiles_epilogue(ctx, kind, false, tb, M, N, K, 1.0f, A, K, B, ldb, 0.0f, C, N, &ep, &key);
            pft_gemm_tiles_epilogue(ctx, kind, false, tb, M, N, K, 1.0f, A, K, B, ldb, 0.0f, ref, N, &ep, NULL);
            CHECK(!memcmp(ref, C, bytes), "%s tb %d: a new version is packed again", pft_gemm_kind_name(kind), tb);
            CHECK(ctx->packed_count == count + 1, "%s tb %d: into the same entry", pft_gemm_kind_name(kind), tb);
            pft_ctx_packed_forget(ctx, key.storage);
            CHECK(ctx->packed_count == count, "%s tb %d: forgotten with its storage", pft_gemm_kind_name(kind), tb);
            free(A), free(B), free(bias), free(ref), free(C);
        }
    CHECK(ctx->packed_bytes == 0, "%s: no kept bytes left: %zu", pft_gemm_kind_name(kind), ctx->packed_bytes);
}

/* Work stealing: with the second thread held back (the testing hook gemm_hold_us), the first runs out of its
 * own blocks and takes the rest from the other's share, in every sweep that steals (K in chunks one at a time;
 * in two by columns, with B packed and with B's packing kept), and the bits stay those of one thread */
static void test_stealing(pft_ctx *ctx, pft_gemm_kind kind, uint64_t seed) {
    const int64_t shapes[][3] = {{300, 200, 1500}, {97, 1100, 384}, {64, 96, 64}};
    uint64_t st = seed + 500;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int kept = 0; kept < 2; kept++) {
            const int64_t M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
            const size_t bytes = sizeof(float) * (size_t)(M * N);
            float *A = rand_buf(&st, M * K), *B = rand_buf(&st, K * N), *C1 = malloc(bytes), *C2 = malloc(bytes);
            const pft_operand_key key = {.storage = 2000 + i, .version = 1};
            const int saved = ctx->threads;
            ctx->threads = 1;
            pft_gemm_tiles_epilogue(ctx, kind, false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C1, N, NULL, NULL);
            ctx->threads = 2;
            for (int call = 0; call < 1 + kept; call++) { /* kept: the second call reads the kept tiles */
                const int64_t before = ctx->stats.stolen_blocks;
                ctx->gemm_hold_us = 50000;
                memset(C2, 0, bytes);
                pft_gemm_tiles_epilogue(ctx, kind, false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C2, N, NULL, kept ? &key : NULL);
                ctx->gemm_hold_us = 0;
                const int64_t stolen = ctx->stats.stolen_blocks - before;
                CHECK(stolen > 0 || M * N * K < (1 << 21), "%s %lldx%lldx%lld kept %d call %d: the held thread's blocks taken (%lld)",
                      pft_gemm_kind_name(kind), (long long)M, (long long)N, (long long)K, kept, call, (long long)stolen);
                CHECK(!memcmp(C1, C2, bytes), "%s %lldx%lldx%lld kept %d call %d: stolen blocks, the bits of one thread",
                      pft_gemm_kind_name(kind), (long long)M, (long long)N, (long long)K, kept, call);
            }
            ctx->threads = saved;
            pft_ctx_packed_forget(ctx, key.storage);
            free(A), free(B), free(C1), free(C2);
        }
}

static void test_threads_and_batch(pft_ctx *ctx, pft_gemm_kind kind, uint64_t seed) {
    const int64_t M = 384, N = 200, K = 160, batch = 3; /* 12M multiply-adds: threaded */
    uint64_t st = seed + 100;
    float *A = rand_buf(&st, batch * M * K), *B = rand_buf(&st, K * N);
    float *C1 = calloc((size_t)(batch * M * N), sizeof(float)), *C2 = calloc((size_t)(batch * M * N), sizeof(float));
    int saved = ctx->threads;
    ctx->threads = 1;
    pft_gemm_tiles(ctx, kind, false, false, M, N, K, 1.0f, A, K, M * K, B, N, 0, 0.0f, C1, N, M * N, batch);
    ctx->threads = 2;
    pft_gemm_tiles(ctx, kind, false, false, M, N, K, 1.0f, A, K, M * K, B, N, 0, 0.0f, C2, N, M * N, batch);
    ctx->threads = saved;
    CHECK(!memcmp(C1, C2, sizeof(float) * (size_t)(batch * M * N)), "%s: 1 and 2 threads differ", pft_gemm_kind_name(kind));
    double worst = 0;
    for (int64_t b = 0; b < batch; b++) {
        double e = worst_error(kind, A + b * M * K, K, false, B, N, false, C1, C1 + b * M * N, N, M, N, K, 1.0f, 0.0f);
        if (e > worst) worst = e;
    }
    CHECK(worst < 2e-6, "%s: batched with a shared B: error %g", pft_gemm_kind_name(kind), worst);
    free(A), free(B), free(C1), free(C2);
}

/* with the context's precision at bf16 (or fp32 with this GEMM), linear (forward and both gradients) runs
 * through the kind */
static void test_through_ops(pft_ctx *ctx, const char *precision, pft_gemm_kind kind) {
    CHECK(pft_ctx_set_precision(ctx, precision) == PFT_OK, "set %s: %s", precision, pft_ctx_error(ctx));
    CHECK((is_bf16(kind) ? ctx->bf16_gemm : ctx->f32_gemm) == kind, "%s picks %s", precision, pft_gemm_kind_name(kind));
    const int64_t N = 70, in = 96, out = 50;
    pft_tensor *x = pft_tensor_rand(ctx, 2, (int64_t[]){N, in}, -1, 1), *w = pft_tensor_rand(ctx, 2, (int64_t[]){out, in}, -1, 1);
    x->requires_grad = w->requires_grad = true;
    pft_tensor *y = pft_linear(x, w, NULL);
    float *ref = malloc(sizeof(float) * N * out);
    pft_gemm_tiles(ctx, kind, false, true, N, out, in, 1.0f, pft_tensor_data(x), in, 0, pft_tensor_data(w), in, 0, 0.0f, ref,
                  out, 0, 1);
    CHECK(y && !memcmp(ref, pft_tensor_data(y), sizeof(float) * N * out), "%s: linear's forward is the %s GEMM", precision,
          pft_gemm_kind_name(kind));
    pft_tensor *s = y ? pft_sum_all(y) : NULL;
    CHECK(s && pft_backward(s, NULL) == PFT_OK, "backward: %s", pft_ctx_error(ctx));
    /* dx = 1 . w: every row is w's column sums (of bf16-rounded weights for bf16), summed in fp32 */
    const float *dx = pft_tensor_data(x->grad), *wd = pft_tensor_data(w);
    double worst = 0;
    for (int64_t j = 0; j < in; j++) {
        double col = 0, mag = 0;
        for (int64_t o = 0; o < out; o++) col += operand(kind, wd[o * in + j]), mag += fabs(wd[o * in + j]);
        for (int64_t r = 0; r < N; r++) {
            double e = fabs(dx[r * in + j] - col) / mag;
            if (e > worst) worst = e;
        }
    }
    CHECK(worst < 2e-6, "%s: linear's dx through the %s GEMM: error %g", precision, pft_gemm_kind_name(kind), worst);
    pft_tensor_release(s), pft_tensor_release(y), pft_tensor_release(x), pft_tensor_release(w);
    free(ref);
    pft_ctx_set_precision(ctx, "fp32");
}

static void test_precision_switch(pft_ctx *ctx) {
    CHECK(!strcmp(pft_ctx_precision(ctx), "fp32"), "fp32 by default");
    CHECK(pft_ctx_set_precision(ctx, "fp16") == PFT_ERR_ARG && strstr(pft_ctx_error(ctx), "fp16"),
          "an unknown precision is named: %s", pft_ctx_error(ctx));
    setenv("PFT_CPU_BF16", "none", 1); /* as a processor without bf16 */
    CHECK(pft_ctx_set_precision(ctx, "bf16") == PFT_ERR_UNSUPPORTED && strstr(pft_ctx_error(ctx), "AVX512-BF16"),
          "no bf16 on this processor is said: %s", pft_ctx_error(ctx));
    CHECK(!strcmp(pft_ctx_precision(ctx), "fp32"), "a refused precision leaves fp32");
    setenv("PFT_CPU_BF16", "avx512-bf16", 1); /* as a processor with AVX512-BF16 and no AMX */
    CHECK(pft_ctx_set_precision(ctx, "bf16-amx") == PFT_ERR_UNSUPPORTED, "no AMX: bf16-amx refused");
    if (pft_gemm_kind_runs(PFT_GEMM_BF16_AVX512))
        CHECK(pft_ctx_set_precision(ctx, "bf16") == PFT_OK && ctx->bf16_gemm == PFT_GEMM_BF16_AVX512, "no AMX: AVX512-BF16");
    unsetenv("PFT_CPU_BF16");
    pft_ctx_set_precision(ctx, "fp32");
}

/* fp32's GEMM: pft's where AVX-512 runs, OpenBLAS on request; the two agree to fp32 rounding, not in every bit */
static void test_cpu_gemm_switch(pft_ctx *ctx) {
    const bool avx512 = pft_gemm_kind_runs(PFT_GEMM_F32_AVX512);
    CHECK(!strcmp(pft_ctx_cpu_gemm(ctx), avx512 ? "avx512" : "openblas"), "the default fp32 GEMM: %s", pft_ctx_cpu_gemm(ctx));
    CHECK(pft_ctx_set_cpu_gemm(ctx, "mkl") == PFT_ERR_ARG && strstr(pft_ctx_error(ctx), "mkl"), "an unknown GEMM is named: %s",
          pft_ctx_error(ctx));
    const int64_t M = 130, N = 90, K = 300;
    uint64_t st = 9;
    float *A = rand_buf(&st, M * K), *B = rand_buf(&st, N * K), *C[2];
    const char *names[2] = {"openblas", "avx512"};
    for (int g = 0; g < 2; g++) {
        C[g] = calloc((size_t)(M * N), sizeof(float));
        if (g == 1 && !avx512) {
            CHECK(pft_ctx_set_cpu_gemm(ctx, "avx512") == PFT_ERR_UNSUPPORTED, "avx512 refused without AVX-512");
            memcpy(C[1], C[0], sizeof(float) * (size_t)(M * N));
            continue;
        }
        CHECK(pft_ctx_set_cpu_gemm(ctx, names[g]) == PFT_OK, "set %s: %s", names[g], pft_ctx_error(ctx));
        pft_cpu_gemm(ctx, false, true, M, N, K, 1.0f, A, K, 0, B, K, 0, 0.0f, C[g], N, 0, 1);
    }
    double worst = 0;
    bool same = true;
    for (int64_t i = 0; i < M * N; i++) {
        double e = fabs((double)C[0][i] - C[1][i]) / (fabs((double)C[0][i]) + 1.0);
        if (e > worst) worst = e;
        same = same && C[0][i] == C[1][i];
    }
    CHECK(worst < 1e-5, "openblas and avx512 fp32 GEMMs: relative difference %g", worst);
    if (avx512) CHECK(!same, "the fp32 GEMM switch changes who computes (every bit equal to OpenBLAS's)");
    pft_ctx_set_cpu_gemm(ctx, "auto");
    free(A), free(B), free(C[0]), free(C[1]);
}

/* The packing scratch grows with the largest GEMM. Grown through malloc and free, each free of a large
 * (mmapped) block raised glibc's mmap threshold to that block's size, so later activations of a few MB came
 * from the heap and fragmented it: a dense MiniLM step's peak RSS grew ~100 MB a step (1.28 -> 1.40 GB in
 * 4 steps). Run first, while the threshold is glibc's initial 128 KiB: after the scratch grows from 2 MB
 * to 4 MB, a 1 MB block is still mmapped. */
static void test_scratch_leaves_malloc_alone(void) {
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) /* (AddressSanitizer has its own allocator) */
    if (!pft_gemm_kind_runs(PFT_GEMM_F32_AVX512) || getenv("MALLOC_MMAP_THRESHOLD_")) return;
    pft_ctx *ctx = pft_ctx_new(1, 1);
    pft_ctx_set_cpu_gemm(ctx, "avx512");
    /* operands freed only after the check (freeing them would raise the threshold too) */
    float *A = calloc(1024 * 1024, sizeof(float)), *C = calloc(1024 * 1024, sizeof(float));
    for (int64_t n = 512; n <= 1024; n *= 2) /* scratch 2 MB, then 4 MB */
        pft_gemm_tiles(ctx, PFT_GEMM_F32_AVX512, false, false, n, n, n, 1.0f, A, n, 0, A, n, 0, 0.0f, C, n, 0, 1);
    const size_t before = mallinfo2().hblks;
    char *volatile block = malloc(1 << 20); /* volatile and written: a malloc never used may be elided */
    if (block) block[0] = 1;
    const size_t after = mallinfo2().hblks;
    free(block), free(A), free(C);
    CHECK(after == before + 1, "a 1 MB malloc after the GEMM scratch grew is mmapped (mmapped blocks %zu -> %zu)",
          before, after);
    pft_ctx_free(ctx);
#endif
}

int main(void) {
    TEST_BEGIN("gemm_tiles");
    test_scratch_leaves_malloc_alone();
    uint64_t seed = test_seed();
    pft_ctx *ctx = pft_ctx_new(2, seed);
    test_rounding();
    test_precision_switch(ctx);
    test_cpu_gemm_switch(ctx);
    for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++) {
        if (!pft_gemm_kind_runs(KINDS[k])) {
            printf("gemm_tiles: %s: not run by this processor, its checks skipped\n", pft_gemm_kind_name(KINDS[k]));
            continue;
        }
        if (is_bf16(KINDS[k])) test_conversion_matches(ctx, KINDS[k]);
        test_against_reference(ctx, KINDS[k], seed);
        test_threads_and_batch(ctx, KINDS[k], seed);
        test_k_chunks_in_groups(ctx, KINDS[k], seed);
        test_k_chunks_by_columns(ctx, KINDS[k], seed);
        test_kept_packing(ctx, KINDS[k], seed);
        test_stealing(ctx, KINDS[k], seed);
        test_through_ops(ctx, KINDS[k] == PFT_GEMM_BF16_AMX ? "bf16-amx" : KINDS[k] == PFT_GEMM_BF16_AVX512 ? "bf16-avx512" : "fp32",
                         KINDS[k]);
    }
    CHECK(ctx->stats.live_tensors == 0, "live tensors at exit: %lld", (long long)ctx->stats.live_tensors);
    pft_ctx_free(ctx);
    return TEST_END();
}
