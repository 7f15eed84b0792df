/* test_threads.c - results must not depend on the thread count, and the fast kernels must match their
 * references: a BERT forward + backward (train mode, dropout on) with 1 and with 2 threads gives
 * bit-identical outputs, loss and gradients, on the tiny fixture and on a random model large enough
 * that every threaded path (row-split kernels, split GEMMs, attention over (batch, head)) runs, and the
 * same again with every narrower instruction set's kernels (backend.h) against the widest; the
 * vectorisable exp / erf against libm in ulps; the fast GELU kernels against the libm reference. */
#include <stdint.h>

#include "check.h"
#include "backend.h"
#include "kernels_cpu.h"
#include "nn.h"

static int64_t ulp_diff(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    int64_t d = (int64_t)ia - ib;
    return d < 0 ? -d : d;
}

static void test_fast_math(void) {
    int64_t worst = 0;
    for (float x = -90.0f; x < 89.0f; x += 0.000731f) {
        float want = expf(x);
        if (want < 1.17549435e-38f) { /* denormal or zero: the fast one gives 0 */
            CHECK(pft_fast_expf(x) == 0.0f || pft_fast_expf(x) <= 1.2e-38f, "exp(%g) = %g, not ~0", x, pft_fast_expf(x));
            continue;
        }
        int64_t u = ulp_diff(pft_fast_expf(x), want);
        if (u > worst) worst = u;
    }
    printf("threads: pft_fast_expf worst %lld ulp on [-90, 89]\n", (long long)worst);
    CHECK(worst <= 2, "fast exp: %lld ulp", (long long)worst);
    CHECK(pft_fast_expf(-3.4e38f) == 0.0f && pft_fast_expf(-INFINITY) == 0.0f, "exp of -huge is 0");
    CHECK(isinf(pft_fast_expf(100.0f)) && isnan(pft_fast_expf(NAN)), "exp overflow / NaN");
    /* the normal tail against libm's erfc in double: relative where it is small, absolute where 1 - tail is
     * taken; e^(-x^2/2) as pft_fast_expf gives it */
    double worst_rel = 0, worst_abs = 0;
    bool e_ok = true;
    for (float x = -6.0f; x < 6.0f; x += 0.0000531f) {
        float e;
        const double got = pft_normal_tail(x, &e), want = 0.5 * erfc(fabs((double)x) * M_SQRT1_2);
        e_ok = e_ok && e == pft_fast_expf(-0.5f * x * x);
        const double rel = fabs(got - want) / want, abs_err = fabs(got - want);
        if (fabs(x) < 4.5f && rel > worst_rel) worst_rel = rel; /* where the tail is above 3.4e-6 */
        if (abs_err > worst_abs) worst_abs = abs_err;
    }
    printf("threads: pft_normal_tail on [-6, 6]: worst relative error %.3g (|x| < 4.5), absolute %.3g\n", worst_rel, worst_abs);
    CHECK(worst_rel < 1e-6 && worst_abs < 2e-7 && e_ok, "normal tail: relative %g, absolute %g", worst_rel, worst_abs);
    float e;
    CHECK(fabsf(pft_normal_tail(0.0f, &e) - 0.5f) <= 6e-8f && e == 1.0f, "normal tail at 0: %.9g", pft_normal_tail(0.0f, &e));
    CHECK(pft_normal_tail(INFINITY, &e) == 0.0f && pft_normal_tail(-INFINITY, &e) == 0.0f && e == 0.0f, "tail at infinity");
    CHECK(isnan(gelu_of(NAN)) && isnan(gelu_slope(NAN)) && gelu_of(INFINITY) == INFINITY && gelu_of(-30.0f) == 0.0f,
          "GELU limits");

    /* GELU kernels (threaded, vectorised) against the libm reference */
    enum { N = 100003 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N), *yr = malloc(sizeof(float) * N);
    float *dy = malloc(sizeof(float) * N), *dx = calloc(N, sizeof(float)), *dxr = calloc(N, sizeof(float));
    for (int i = 0; i < N; i++) x[i] = -8.0f + 16.0f * (float)i / N, dy[i] = 1.0f - 0.5f * (float)(i % 7);
    pft_ctx *ctx = pft_ctx_new(2, 1);
    ctx->cpu_kernels->gelu_forward(ctx, y, x, N);
    pft_cpu_gelu_forward_ref(yr, x, N);
    ctx->cpu_kernels->gelu_backward(ctx, dx, dy, x, N);
    pft_cpu_gelu_backward_ref(dxr, dy, x, N);
    double ef = 0, eb = 0;
    for (int i = 0; i < N; i++) {
        /* erf's few-ulp error is absolute near +-1, so scale by the input too: 0.5 x (1 + erf) */
        double a = fabs((double)y[i] - yr[i]) / (fabs((double)yr[i]) + fabs((double)x[i]));
        double b = fabs((double)dx[i] - dxr[i]) / (fabs((double)dxr[i]) + fabs((double)dy[i]) * (1 + fabs((double)x[i])));
        if (a > ef) ef = a;
        if (b > eb) eb = b;
    }
    printf("threads: fast GELU vs libm reference: forward max err (relative to |y| + |x|) %.3g, backward %.3g\n", ef, eb);
    CHECK(ef < 1e-6 && eb < 1e-6, "fast GELU differs from the reference: %g %g", ef, eb);
    pft_ctx_free(ctx);
    free(x), free(y), free(yr), free(dy), free(dx), free(dxr);
}

/* the results of one forward + backward, copied out */
typedef struct run_result {
    int n;
    float *data[80];
    int64_t len[80];
} run_result;

static void keep(run_result *r, const pft_tensor *t) {
    if (!t || r->n == 80) return;
    int64_t n = pft_tensor_numel(t);
    r->data[r->n] = malloc(sizeof(float) * (size_t)n);
    memcpy(r->data[r->n], pft_tensor_data(t), sizeof(float) * (size_t)n);
    r->len[r->n++] = n;
}

static void run_free(run_result *r) {
    for (int i = 0; i < r->n; i++) free(r->data[i]);
}

/* dir: a fixture directory, or NULL for a random model of the given config; hidden false: the last layer's
 * [CLS] rows only (nn.h, hidden_states) */
static run_result run_bert_in(int threads, const char *isa, const char *precision, bool hidden, const char *dir,
                              const pft_bert_config *cfg, int64_t B, int64_t T) {
    run_result r = {0};
    pft_ctx *ctx = pft_ctx_new(threads, 42);
    CHECK(pft_ctx_set_cpu_kernels(ctx, isa) == PFT_OK, "kernels %s: %s", isa, pft_ctx_error(ctx));
    CHECK(pft_ctx_set_precision(ctx, precision) == PFT_OK, "precision %s: %s", precision, pft_ctx_error(ctx));
    pft_bert *m = dir ? pft_bert_load(ctx, dir, PFT_HEAD_SEQCLS, 3) : pft_bert_new(ctx, cfg, PFT_HEAD_SEQCLS, 3);
    CHECK(m != NULL, "model: %s", pft_ctx_error(ctx));
    if (!m) {
        pft_ctx_free(ctx);
        return r;
    }
    const int V = m->cfg.vocab_size;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(B * T)), *mask = malloc(sizeof(int32_t) * (size_t)(B * T));
    int32_t labels[64];
    for (int64_t b = 0; b < B; b++) {
        int64_t len = T - (b * 5) % (T / 2); /* ragged: padded tails, masked */
        for (int64_t t = 0; t < T; t++) {
            ids[b * T + t] = t < len ? (int32_t)(1 + (b * 31 + t * 7) % (V - 1)) : 0;
            mask[b * T + t] = t < len;
        }
        labels[b] = (int32_t)(b % 3);
    }
    pft_bert_batch in = {.B = B, .T = T, .input_ids = ids, .attention_mask = mask};
    pft_bert_set_training(m, true); /* dropout on: its masks come from (seed, counter), not from threads */
    m->hidden_states = hidden;
    pft_bert_output out;
    CHECK(pft_bert_forward(m, &in, &out) == PFT_OK, "forward: %s", pft_ctx_error(ctx));
    pft_tensor *loss = out.logits ? pft_bert_loss(m, out.logits, labels, NULL) : NULL;
    CHECK(loss && pft_backward(loss, NULL) == PFT_OK, "backward: %s", pft_ctx_error(ctx));
    keep(&r, out.hidden), keep(&r, out.logits), keep(&r, loss);
    for (int i = 0; i < pft_bert_param_count(m); i++) keep(&r, pft_bert_param(m, i)->grad);
    pft_tensor_release(loss);
    pft_bert_output_release(&out);
    pft_bert_free(m);
    pft_ctx_free(ctx);
    free(ids), free(mask);
    return r;
}

static run_result run_bert(int threads, const char *isa, const char *dir, const pft_bert_config *cfg, int64_t B,
                           int64_t T) {
    return run_bert_in(threads, isa, "fp32", true, dir, cfg, B, T);
}

static int count_differ(const run_result *a, const run_result *b) {
    int differ = 0;
    for (int i = 0; i < a->n && i < b->n; i++)
        if (a->len[i] != b->len[i] || memcmp(a->data[i], b->data[i], sizeof(float) * (size_t)a->len[i])) differ++;
    return differ + (a->n != b->n);
}

/* 1 and 2 threads with the widest kernels; then every other instruction set's kernels with 2 threads */
static void compare_threads(const char *what, const char *dir, const pft_bert_config *cfg, int64_t B, int64_t T) {
    run_result a = run_bert(1, "auto", dir, cfg, B, T), b = run_bert(2, "auto", dir, cfg, B, T);
    CHECK(a.n == b.n && a.n > 3, "%s: %d vs %d results", what, a.n, b.n);
    int differ = count_differ(&a, &b);
    printf("threads: %s: %d tensors (hidden, logits, loss, gradients), %d differ between 1 and 2 threads\n", what, a.n,
           differ);
    CHECK(differ == 0, "%s: %d of %d tensors differ between 1 and 2 threads", what, differ, a.n);
    const char *isas[8];
    for (int i = 0, n = pft_backend_cpu_list(isas, 8); i < n - 1; i++) {
        run_result c = run_bert(2, isas[i], dir, cfg, B, T);
        differ = count_differ(&b, &c);
        printf("threads: %s: %d differ between the %s and the %s kernels\n", what, differ, isas[i],
               pft_backend_cpu_isa(pft_backend_cpu_kernels(NULL)));
        CHECK(differ == 0, "%s: %d of %d tensors differ between the %s kernels and the widest", what, differ, b.n, isas[i]);
        run_free(&c);
    }
    run_free(&a), run_free(&b);
}

/* bf16 GEMMs (each implementation this processor runs): 1 and 2 threads bit-identical, and not fp32's bits */
static void compare_bf16_threads(const char *what, const pft_bert_config *cfg, int64_t B, int64_t T) {
    const char *kinds[] = {"bf16-amx", "bf16-avx512"};
    run_result f = run_bert(2, "auto", NULL, cfg, B, T);
    for (int k = 0; k < 2; k++) {
        pft_ctx *probe = pft_ctx_new(1, 1);
        bool runs = pft_ctx_set_precision(probe, kinds[k]) == PFT_OK;
        pft_ctx_free(probe);
        if (!runs) {
            printf("threads: %s: not run by this processor, skipped\n", kinds[k]);
            continue;
        }
        run_result a = run_bert_in(1, "auto", kinds[k], true, NULL, cfg, B, T), b = run_bert_in(2, "auto", kinds[k], true, NULL, cfg, B, T);
        int differ = count_differ(&a, &b), from_fp32 = count_differ(&b, &f);
        printf("threads: %s, %s: %d of %d tensors differ between 1 and 2 threads, %d from fp32's\n", what, kinds[k], differ,
               a.n, from_fp32);
        CHECK(a.n > 3 && differ == 0, "%s, %s: %d of %d tensors differ between 1 and 2 threads", what, kinds[k], differ, a.n);
        CHECK(from_fp32 > a.n / 2, "%s, %s: only %d tensors differ from fp32's: not computed in bf16?", what, kinds[k], from_fp32);
        run_free(&a), run_free(&b);
    }
    run_free(&f);
}

/* the last layer's [CLS] rows only, as pft train runs a sequence head: 1 and 2 threads bit-identical */
static void compare_first_rows_threads(const char *what, const pft_bert_config *cfg, int64_t B, int64_t T) {
    run_result a = run_bert_in(1, "auto", "fp32", false, NULL, cfg, B, T), b = run_bert_in(2, "auto", "fp32", false, NULL, cfg, B, T);
    const int differ = count_differ(&a, &b);
    printf("threads: %s, [CLS] rows only: %d tensors (logits, loss, gradients), %d differ between 1 and 2 threads\n", what,
           a.n, differ);
    CHECK(a.n > 3 && differ == 0, "%s, [CLS] rows only: %d of %d tensors differ between 1 and 2 threads", what, differ, a.n);
    run_free(&a), run_free(&b);
}

int main(void) {
    TEST_BEGIN("threads");
    test_fast_math();
    compare_threads("tiny fixture", "tests/fixtures/bert/tiny_seqcls", NULL, 4, 8);
    /* big enough that every kernel takes its threaded path (rows x cols >= 32768, GEMMs >= 2M mul-adds) */
    pft_bert_config cfg = {.model_type = "bert", .vocab_size = 200, .hidden_size = 64, .num_layers = 2, .num_heads = 4,
                           .intermediate_size = 256, .max_position_embeddings = 128, .type_vocab_size = 2,
                           .pad_token_id = 0, .layer_norm_eps = 1e-12f, .hidden_dropout = 0.1f,
                           .attention_dropout = 0.1f, .classifier_dropout = 0.1f, .initializer_range = 0.02f};
    compare_threads("random BERT 64x4x2, B 8, T 64", NULL, &cfg, 8, 64);
    compare_bf16_threads("random BERT 64x4x2, B 8, T 64", &cfg, 8, 64);
    compare_first_rows_threads("random BERT 64x4x2, B 8, T 64", &cfg, 8, 64);
    return TEST_END();
}
