/* test_cpu_isa.c - the CPU kernel tables built for wider instruction sets (AVX2, AVX-512; backend.h) give
 * the baseline's results bit for bit: every kernel of every table this processor runs, on random inputs
 * with odd lengths (vector tails), sizes over the threading threshold, and special values (NaN, +-inf,
 * huge, tiny, signed zeros), 2 threads; a NaN may differ in its sign bit only. Also: the selection (auto picks the widest; an isa this build or
 * processor lacks is refused with the ones it has named), and that every table is complete.
 * (The whole model, forward and backward with dropout, under every table: test_threads.c.) */
#include <stddef.h>

#include "backend.h"
#include "check.h"

static uint64_t seed, draws;

static float urand(float lo, float hi) { return lo + (hi - lo) * (float)pft_rng_uniform(seed ^ 0x15a, draws++); }

/* n floats in [lo, hi), with every 97th one a special value when `specials` */
static float *rand_buf(int64_t n, float lo, float hi, bool specials) {
    static const float special[] = {NAN, INFINITY, -INFINITY, 3.0e38f, -3.0e38f, 1e-40f, -0.0f, 0.0f, 88.8f, -87.4f, 4.0f, -1.0f};
    float *b = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++)
        b[i] = specials && i % 97 == 13 ? special[(i / 97) % (int64_t)(sizeof special / sizeof special[0])] : urand(lo, hi);
    return b;
}

static float *copy_buf(const float *src, int64_t n) {
    float *b = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    memcpy(b, src, sizeof(float) * (size_t)n);
    return b;
}

/* the outputs of one kernel call, for comparison between tables */
typedef struct outs {
    int n;
    float *buf[12];
    int64_t len[12];
} outs;

static void outs_free(outs *o) {
    for (int i = 0; i < o->n; i++) free(o->buf[i]);
    o->n = 0;
}

/* Runs kernel `k` of table `be` on inputs made from the test seed (the same for every table: draws restart
 * at `k`'s own offset), size n; its outputs go to o. */
enum { K_GELU, K_GELU_BWD, K_DROPOUT, K_DROPOUT_BWD, K_LAYERNORM, K_LAYERNORM_BWD, K_SOFTMAX, K_SOFTMAX_BWD,
       K_BINARY, K_BINARY_BWD, K_SCALE_AXPY, K_TANH, K_ADAMW, K_SGD, K_SUM_SQ, K_CROSS_ENTROPY, K_EMBEDDING,
       K_SUM_DIM, K_ATTENTION, K_DROP_ADD_LN, K_LORA_DOWN, K_BIAS_GELU, K_COUNT };
static const char *const kernel_names[K_COUNT] = {"gelu", "gelu backward", "dropout", "dropout backward", "layernorm",
                                                  "layernorm backward", "softmax", "softmax backward", "binary",
                                                  "binary backward", "scale + axpy", "tanh", "adamw", "sgd",
                                                  "sum_squares", "cross entropy", "embedding", "sum_dim", "attention",
                                                  "dropout + add + layernorm", "lora down projection", "bias + gelu"};

static float *out_buf(outs *o, int64_t n) {
    o->len[o->n] = n;
    return o->buf[o->n++] = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

static void run_kernel(const pft_backend *be, pft_ctx *ctx, int k, int64_t n, outs *o) {
    draws = (uint64_t)k << 40 | (uint64_t)n << 8;
    const int64_t cols = 1 + n % 389, rows = n / cols > 0 ? n / cols : 1, rc = rows * cols;
    float *x = rand_buf(rc, -6, 6, (k != K_LAYERNORM_BWD && k != K_SOFTMAX_BWD && k < K_ADAMW) || k == K_BIAS_GELU);
    float *y = rand_buf(rc, -2, 2, false), *w = rand_buf(cols, 0.5f, 1.5f, false), *b = rand_buf(cols, -1, 1, false);
    switch (k) {
    case K_GELU: be->gelu_forward(ctx, out_buf(o, rc), x, rc); break;
    case K_GELU_BWD: {
        float *dx = out_buf(o, rc);
        memcpy(dx, y, sizeof(float) * (size_t)rc);
        be->gelu_backward(ctx, dx, y, x, rc);
        break;
    }
    case K_DROPOUT: be->dropout_forward(ctx, out_buf(o, rc), x, 0.1f, seed, 12345, rc); break;
    case K_DROPOUT_BWD: be->dropout_backward(ctx, out_buf(o, rc), x, 0.25f, seed, 999, rc); break;
    case K_LAYERNORM: {
        float *out = out_buf(o, rc), *mean = out_buf(o, rows), *rstd = out_buf(o, rows);
        be->layernorm_forward(ctx, out, mean, rstd, x, w, b, 1e-12f, rows, cols);
        break;
    }
    case K_LAYERNORM_BWD: {
        float *mean = malloc(sizeof(float) * (size_t)rows), *rstd = malloc(sizeof(float) * (size_t)rows);
        float *tmp = malloc(sizeof(float) * (size_t)rc);
        pft_backend_cpu.layernorm_forward(ctx, tmp, mean, rstd, x, w, b, 1e-5f, rows, cols);
        be->layernorm_backward(ctx, out_buf(o, rc), out_buf(o, cols), out_buf(o, cols), y, mean, rstd, x, w, rows, cols);
        free(mean), free(rstd), free(tmp);
        break;
    }
    case K_SOFTMAX: {
        const int64_t shape[2] = {rows, cols}, mstride[2] = {0, 1};
        be->softmax_forward(ctx, out_buf(o, rc), x, b, mstride, 2, shape);
        break;
    }
    case K_SOFTMAX_BWD: {
        float *p = malloc(sizeof(float) * (size_t)rc);
        const int64_t shape[2] = {rows, cols};
        pft_backend_cpu.softmax_forward(ctx, p, x, NULL, NULL, 2, shape);
        be->softmax_backward(ctx, out_buf(o, rc), y, p, rows, cols);
        free(p);
        break;
    }
    case K_BINARY: {
        const int64_t shape[2] = {rows, cols}, sa[2] = {cols, 1}, sb[2] = {0, 1};
        be->binary(ctx, out_buf(o, rc), x, sa, b, sb, PFT_BINARY_ADD, 2, shape);
        be->binary(ctx, out_buf(o, rc), x, sa, y, sa, PFT_BINARY_MUL, 2, shape);
        break;
    }
    case K_BINARY_BWD: {
        const int64_t shape[2] = {rows, cols}, sd[2] = {0, 1}, sx[2] = {cols, 1};
        be->binary_backward(ctx, out_buf(o, cols), sd, x, y, sx, 0.5f, 2, shape);
        be->binary_backward(ctx, out_buf(o, rc), sx, x, y, sx, -1.0f, 2, shape);
        break;
    }
    case K_SCALE_AXPY: {
        float *s = out_buf(o, rc);
        be->scale(ctx, s, x, 0.37f, rc);
        be->axpy(ctx, s, y, -1.9f, rc);
        be->scale_inplace(ctx, s, 3.1f, rc);
        break;
    }
    case K_TANH: {
        float *t = out_buf(o, rc), *dx = out_buf(o, rc);
        be->tanh_forward(ctx, t, x, rc);
        be->tanh_backward(ctx, dx, y, t, rc);
        break;
    }
    case K_ADAMW: {
        float *p = out_buf(o, rc), *m = out_buf(o, rc), *v = out_buf(o, rc);
        memcpy(p, x, sizeof(float) * (size_t)rc);
        for (int step = 1; step <= 3; step++)
            be->adamw_step(ctx, p, m, v, y, 0.75f, 0.9f, 0.999f, 1e-8f, 1.0f - 1e-5f, 1e-3f * (float)step, 1.0f / sqrtf(1.0f - powf(0.999f, (float)step)), rc);
        break;
    }
    case K_SGD: {
        float *p = out_buf(o, rc), *buf = out_buf(o, rc);
        memcpy(p, x, sizeof(float) * (size_t)rc);
        be->sgd_step(ctx, p, buf, y, 0.75f, 0.01f, 0.1f, 0.9f, true, rc);
        be->sgd_step(ctx, p, buf, y, 0.75f, 0.01f, 0.1f, 0.9f, false, rc);
        break;
    }
    case K_SUM_SQ: out_buf(o, 1)[0] = (float)be->sum_squares(ctx, x, rc); break;
    case K_CROSS_ENTROPY: {
        int32_t *t = malloc(sizeof(int32_t) * (size_t)rows);
        for (int64_t r = 0; r < rows; r++) t[r] = r % 5 == 4 ? -100 : (int32_t)((r * 7) % cols);
        float *loss = out_buf(o, 1), *lse = out_buf(o, rows), *dl = out_buf(o, rc);
        const float one = 1.0f;
        be->cross_entropy_forward(ctx, loss, lse, x, t, -100, 1.0f / (float)rows, rows, cols);
        be->cross_entropy_backward(ctx, dl, &one, lse, x, t, -100, 1.0f / (float)rows, rows, cols);
        free(t);
        break;
    }
    case K_EMBEDDING: {
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)rows);
        for (int64_t r = 0; r < rows; r++) ids[r] = r % 6 == 5 ? -1 : (int32_t)((r * 13) % rows);
        float *wt = copy_buf(x, rc);
        for (int64_t r = 0; r < rows; r++) ids[r] = ids[r] < 0 ? 0 : ids[r];
        be->embedding_forward(ctx, out_buf(o, rc), ids, wt, rows, cols);
        for (int64_t r = 0; r < rows; r += 6) ids[r] = -1;
        be->embedding_backward(ctx, out_buf(o, rc), y, ids, rows, cols);
        free(ids), free(wt);
        break;
    }
    case K_SUM_DIM: {
        be->sum_dim(ctx, out_buf(o, cols), x, 0.5f, 1, rows, cols);
        float *dx = out_buf(o, rc);
        be->sum_dim_backward(ctx, dx, b, 2.0f, 1, rows, cols);
        break;
    }
    case K_DROP_ADD_LN: {
        float *out = out_buf(o, rc), *s = out_buf(o, rc), *mean = out_buf(o, rows), *rstd = out_buf(o, rows);
        be->dropout_add_layernorm_forward(ctx, out, s, mean, rstd, x, y, w, b, 0.1f, seed, 555, 1e-12f, rows, cols);
        float *dh = out_buf(o, rc), *dr = out_buf(o, rc), *dw = out_buf(o, cols), *db = out_buf(o, cols);
        be->dropout_add_layernorm_backward(ctx, dh, dr, dw, db, NULL, y, mean, rstd, s, w, 0.1f, seed, 555, rows, cols);
        break;
    }
    case K_LORA_DOWN: { /* x [rows, cols], a [5, cols] */
        float *a = rand_buf(5 * cols, -1, 1, false), *dxa = rand_buf(rows * 5, -1, 1, false);
        float *xa = out_buf(o, rows * 5), *dx = out_buf(o, rc), *da = out_buf(o, 5 * cols);
        CHECK(be->lora_down_forward(ctx, xa, x, a, rows, cols, 5, 0.1f, seed, 31) == PFT_OK &&
                  be->lora_down_backward(ctx, dx, da, x, dxa, a, rows, cols, 5, 0.1f, seed, 31) == PFT_OK,
              "lora down projection");
        free(a), free(dxa);
        break;
    }
    case K_BIAS_GELU: { /* forward with and without a bias, with and without the slopes; backward with dh and
                         * db, each alone */
        float *h = out_buf(o, rc), *g = out_buf(o, rc), *h2 = out_buf(o, rc), *g2 = out_buf(o, rc);
        float *s = out_buf(o, rc), *g3 = out_buf(o, rc);
        memcpy(h, x, sizeof(float) * (size_t)rc), memcpy(h2, x, sizeof(float) * (size_t)rc);
        memcpy(s, x, sizeof(float) * (size_t)rc);
        be->bias_gelu_forward(ctx, g, h, b, rows, cols, false);
        be->bias_gelu_forward(ctx, g2, h2, NULL, rows, cols, false);
        be->bias_gelu_forward(ctx, g3, s, b, rows, cols, true);
        float *dh = out_buf(o, rc), *db = out_buf(o, cols), *db2 = out_buf(o, cols);
        memcpy(db, w, sizeof(float) * (size_t)cols); /* accumulated onto */
        CHECK(be->bias_gelu_backward(ctx, dh, db, y, x, rows, cols) == PFT_OK &&
                  be->bias_gelu_backward(ctx, NULL, db2, y, x, rows, cols) == PFT_OK &&
                  be->bias_gelu_backward(ctx, out_buf(o, rc), NULL, y, x, rows, cols) == PFT_OK,
              "bias + gelu backward");
        break;
    }
    case K_ATTENTION: /* packed: 3 sequences (one empty) of H 4 heads of D 8; every query, then the first only */
        for (int first = 0; first < 2; first++) {
            const int64_t H = 4, C = 32, lens[3] = {1 + n % 23, 0, 17}, N = lens[0] + lens[1] + lens[2], NQ = first ? 3 : N;
            int64_t start[3] = {0, lens[0], lens[0]}, poff[12], coff[12], total = 0, drawn = 0;
            for (int s = 0; s < 3; s++)
                for (int h = 0; h < H; h++) {
                    poff[s * H + h] = total, total += (first ? lens[s] > 0 : lens[s]) * lens[s];
                    coff[s * H + h] = drawn, drawn += lens[s] * lens[s];
                }
            const pft_attention_layout L = {.n = 3, .H = H, .C = C, .rows = NQ, .maxlen = 23, .total = total, .start = start,
                                            .len = lens, .poff = poff, .coff = coff, .first_query = first};
            float *q = rand_buf(NQ * C, -2, 2, false), *kk = rand_buf(N * C, -2, 2, false), *v = rand_buf(N * C, -2, 2, false);
            float *dO = rand_buf(NQ * C, -1, 1, false);
            float *out = out_buf(o, NQ * C), *P = out_buf(o, total), *dq = out_buf(o, NQ * C), *dk = out_buf(o, N * C);
            float *dv = calloc((size_t)(N * C), sizeof(float));
            CHECK(be->attention_forward(ctx, out, P, q, kk, v, NULL, 0.35f, 0.1f, seed, 77, &L) == PFT_OK, "attention forward");
            CHECK(be->attention_backward(ctx, dq, dk, dv, NULL, P, dO, q, kk, v, 0.35f, 0.1f, seed, 77, &L) == PFT_OK,
                  "attention backward");
            for (int64_t i = 0; i < N * C; i++) dk[i] += 0.5f * dv[i]; /* dv compared too, through dk */
            free(q), free(kk), free(v), free(dO), free(dv);
        }
        break;
    }
    free(x), free(y), free(w), free(b);
}

/* equal bit for bit, except that any NaN equals any NaN (which operand's NaN an instruction passes on, and
 * so its sign, depends on the operand order the compiler picks); else the first difference is printed */
static bool same_bits(const outs *a, const outs *b) {
    if (a->n != b->n) return false;
    for (int i = 0; i < a->n; i++) {
        if (a->len[i] != b->len[i]) return false;
        for (int64_t e = 0; e < a->len[i]; e++)
            if (memcmp(a->buf[i] + e, b->buf[i] + e, sizeof(float)) && !(isnan(a->buf[i][e]) && isnan(b->buf[i][e]))) {
                printf("cpu_isa: output %d element %lld: %a (baseline) vs %a\n", i, (long long)e, a->buf[i][e], b->buf[i][e]);
                return false;
            }
    }
    return true;
}

static void test_tables_agree(void) {
    const char *isas[8];
    const int n = pft_backend_cpu_list(isas, 8);
    printf("cpu_isa: this processor runs %d table(s):", n);
    for (int i = 0; i < n; i++) printf(" %s", isas[i]);
    printf("; auto = %s\n", pft_backend_cpu_isa(pft_backend_cpu_kernels(NULL)));
    pft_ctx *ctx = pft_ctx_new(2, 1);
    static const int64_t sizes[] = {1, 7, 33, 1001, 40009, 100003}; /* tails of every vector width; threaded */
    for (int i = 1; i < n; i++) {
        const pft_backend *be = pft_backend_cpu_kernels(isas[i]);
        int differ = 0, runs = 0;
        for (int k = 0; k < K_COUNT; k++)
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++, runs++) {
                outs want = {0}, got = {0};
                run_kernel(&pft_backend_cpu, ctx, k, sizes[s], &want);
                run_kernel(be, ctx, k, sizes[s], &got);
                if (!same_bits(&want, &got)) {
                    differ++;
                    printf("cpu_isa: %s: %s on %lld elements differs from the baseline\n", isas[i], kernel_names[k],
                           (long long)sizes[s]);
                }
                outs_free(&want), outs_free(&got);
            }
        printf("cpu_isa: %s vs baseline: %d kernel runs, %d differ\n", isas[i], runs, differ);
        CHECK(differ == 0, "%s: %d of %d kernel runs differ from the baseline", isas[i], differ, runs);
    }
    pft_ctx_free(ctx);
}

/* a table with a NULL entry (one added to backend.h and forgotten in kernels_cpu.c's table) fails here */
static void test_tables_complete(void) {
    const char *isas[8];
    for (int i = 0, n = pft_backend_cpu_list(isas, 8); i < n; i++) {
        const pft_backend *be = pft_backend_cpu_kernels(isas[i]);
        typedef void (*fn)(void);
        int missing = 0;
        for (size_t off = offsetof(pft_backend, supports); off + sizeof(fn) <= sizeof(pft_backend); off += sizeof(fn)) {
            fn f;
            memcpy(&f, (const char *)be + off, sizeof f);
            missing += !f;
        }
        CHECK(missing == 0 && be->device == PFT_DEVICE_CPU && be->gemm == pft_backend_cpu.gemm, "%s: %d NULL entries", isas[i],
              missing);
        CHECK(!strcmp(pft_backend_cpu_isa(be), isas[i]), "%s: the table's isa", isas[i]);
    }
}

static void test_selection(void) {
    const char *isas[8];
    const int n = pft_backend_cpu_list(isas, 8);
    CHECK(n >= 1 && !strcmp(isas[0], "baseline"), "the baseline is always there");
    CHECK(pft_backend_cpu_kernels("auto") == pft_backend_cpu_kernels(isas[n - 1]) &&
              pft_backend_cpu_kernels(NULL) == pft_backend_cpu_kernels(isas[n - 1]),
          "auto: the widest this processor runs");
    pft_ctx *ctx = pft_ctx_new(1, 1);
    CHECK(pft_ctx_set_cpu_kernels(ctx, "baseline") == PFT_OK && !strcmp(pft_ctx_cpu_kernels(ctx), "baseline"), "set baseline");
    pft_tensor *t = pft_tensor_zeros(ctx, 1, (int64_t[]){3});
    CHECK(pft_backend_for(t) == &pft_backend_cpu, "a tensor's kernels are its context's");
    CHECK(pft_ctx_set_cpu_kernels(ctx, "avx1024") == PFT_ERR_UNSUPPORTED && strstr(pft_ctx_error(ctx), "'avx1024'") &&
              strstr(pft_ctx_error(ctx), "it runs: baseline"),
          "an unknown isa is refused, naming the ones it has: %s", pft_ctx_error(ctx));
    CHECK(!strcmp(pft_ctx_cpu_kernels(ctx), "baseline"), "a refused isa leaves the kernels as they were");
    pft_tensor_release(t);
    pft_ctx_free(ctx);
}

int main(void) {
    TEST_BEGIN("cpu_isa");
    seed = test_seed();
    test_selection();
    test_tables_complete();
    test_tables_agree();
    return TEST_END();
}
