/* test_optim.c - AdamW and SGD against double-precision references of torch.optim's update rules,
 * parameter groups, and the frozen-parameter rules (no update, no decay, no state). */
#include "check.h"
#include "optim.h"
#include "ops.h"
#include "autograd.h"

/* torch.optim.AdamW, in double, for one parameter vector over `steps` steps with fixed gradients g[t] */
static void adamw_ref(double *p, const float *const *g, int steps, int64_t n, pft_optim_group G) {
    double m[16] = {0}, v[16] = {0};
    for (int t = 1; t <= steps; t++)
        for (int64_t i = 0; i < n; i++) {
            p[i] *= 1 - G.lr * G.weight_decay;
            m[i] = G.beta1 * m[i] + (1 - G.beta1) * g[t - 1][i];
            v[i] = G.beta2 * v[i] + (1 - G.beta2) * g[t - 1][i] * g[t - 1][i];
            double mh = m[i] / (1 - pow(G.beta1, t)), denom = sqrt(v[i]) / sqrt(1 - pow(G.beta2, t)) + G.eps;
            p[i] -= G.lr * mh / denom;
        }
}

static void sgd_ref(double *p, const float *const *g, int steps, int64_t n, pft_optim_group G) {
    double buf[16] = {0};
    for (int t = 0; t < steps; t++)
        for (int64_t i = 0; i < n; i++) {
            double d = g[t][i] + G.weight_decay * p[i];
            buf[i] = t == 0 ? d : G.momentum * buf[i] + d;
            p[i] -= G.lr * (G.momentum > 0 ? buf[i] : d);
        }
}

static void run_case(pft_ctx *ctx, pft_optim_kind kind, pft_optim_group G, const char *what) {
    enum { N = 6, STEPS = 4 };
    static const float g0[N] = {0.5f, -1.0f, 2.0f, 0.0f, 1e-3f, -3.0f}, g1[N] = {-0.2f, 0.4f, 1.0f, 0.3f, -2.0f, 0.1f};
    const float *grads[STEPS] = {g0, g1, g0, g1};
    float init[N] = {1.0f, -0.5f, 0.25f, 2.0f, -1.5f, 0.0f};
    double ref[N];
    for (int i = 0; i < N; i++) ref[i] = init[i];
    pft_tensor *p = pft_tensor_from_data(ctx, 1, (int64_t[]){N}, init);
    p->requires_grad = true;
    pft_optim *opt = pft_optim_new(ctx, kind);
    CHECK(pft_optim_add_group(opt, &G, 1, &p) == 0, "%s: add group", what);
    for (int t = 0; t < STEPS; t++) {
        pft_tensor_release(p->grad);
        p->grad = pft_tensor_from_data(ctx, 1, (int64_t[]){N}, grads[t]);
        CHECK(pft_optim_step(opt) == PFT_OK, "%s: step", what);
    }
    if (kind == PFT_OPTIM_ADAMW)
        adamw_ref(ref, grads, STEPS, N, G);
    else
        sgd_ref(ref, grads, STEPS, N, G);
    float worst = 0;
    for (int i = 0; i < N; i++) worst = fmaxf(worst, fabsf((float)ref[i] - pft_tensor_data(p)[i]));
    CHECK(worst < 2e-6f, "%s: max diff from the reference %g", what, worst);
    pft_optim_free(opt);
    pft_tensor_release(p);
}

static void test_frozen_and_groups(pft_ctx *ctx) {
    float w0[4] = {1, 2, 3, 4};
    pft_tensor *frozen = pft_tensor_from_data(ctx, 1, (int64_t[]){4}, w0);
    pft_tensor *body = pft_tensor_from_data(ctx, 1, (int64_t[]){4}, w0);
    pft_tensor *head = pft_tensor_from_data(ctx, 1, (int64_t[]){4}, w0);
    body->requires_grad = head->requires_grad = true;
    /* a frozen parameter that still has a stale gradient must not move either */
    frozen->grad = pft_tensor_full(ctx, 1, (int64_t[]){4}, 1.0f);
    body->grad = pft_tensor_full(ctx, 1, (int64_t[]){4}, 1.0f);
    head->grad = pft_tensor_full(ctx, 1, (int64_t[]){4}, 1.0f);
    pft_optim *opt = pft_optim_new(ctx, PFT_OPTIM_ADAMW);
    pft_optim_group g = pft_optim_group_defaults(PFT_OPTIM_ADAMW);
    g.weight_decay = 0.1;
    pft_tensor *group0[2] = {frozen, body};
    CHECK(pft_optim_add_group(opt, &g, 2, group0) == 0, "group 0");
    g.lr = 1e-2;
    CHECK(pft_optim_add_group(opt, &g, 1, &head) == 1, "group 1");
    CHECK(pft_optim_add_group(opt, &g, 1, &head) == -1 && strstr(pft_ctx_error(ctx), "already in group 2"),
          "a parameter in two groups is refused: %s", pft_ctx_error(ctx));
    pft_optim_step(opt);
    CHECK(memcmp(pft_tensor_data(frozen), w0, sizeof w0) == 0, "frozen parameter bit-identical after a step");
    CHECK(!pft_optim_has_state(opt, frozen), "frozen parameter has no optimizer state");
    CHECK(pft_optim_has_state(opt, body) && pft_optim_has_state(opt, head), "trainable parameters have state");
    CHECK(pft_optim_state_bytes(opt) == 2 * 2 * 4 * sizeof(float), "state bytes %zu", pft_optim_state_bytes(opt));
    /* first AdamW step moves by lr (times sign) plus decay: head's larger lr moves it 10x further */
    float db = w0[0] - pft_tensor_data(body)[0], dh = w0[0] - pft_tensor_data(head)[0];
    CHECK(fabsf(dh / db - 10.0f) < 1e-3f, "group learning rates: body moved %g, head %g", db, dh);
    pft_optim_group_get(opt, 0)->lr = 0; /* lr changes between steps take effect */
    float before = pft_tensor_data(body)[0];
    pft_optim_step(opt);
    CHECK(pft_tensor_data(body)[0] == before, "lr 0 leaves the group unchanged");
    pft_optim_zero_grad(opt);
    CHECK(pft_tensor_data(pft_tensor_grad(head))[0] == 0.0f, "zero_grad");
    pft_optim_free(opt);
    pft_tensor_release(frozen), pft_tensor_release(body), pft_tensor_release(head);
}

/* Export after two steps, import into a fresh optimizer, step both with the same gradient: bit-identical. */
static void test_state_roundtrip(pft_ctx *ctx, pft_optim_kind kind) {
    float w0[3] = {0.5f, -1.0f, 2.0f}, g[3] = {0.3f, -0.7f, 1.1f};
    pft_tensor *a = pft_tensor_from_data(ctx, 1, (int64_t[]){3}, w0), *b = pft_tensor_from_data(ctx, 1, (int64_t[]){3}, w0);
    pft_tensor_set_name(a, "layer.weight"), pft_tensor_set_name(b, "layer.weight");
    a->requires_grad = b->requires_grad = true;
    a->grad = pft_tensor_from_data(ctx, 1, (int64_t[]){3}, g);
    b->grad = pft_tensor_from_data(ctx, 1, (int64_t[]){3}, g);
    pft_optim_group G = pft_optim_group_defaults(kind);
    G.lr = 0.1, G.momentum = kind == PFT_OPTIM_SGD ? 0.9 : 0;
    pft_optim *oa = pft_optim_new(ctx, kind), *ob = pft_optim_new(ctx, kind);
    pft_optim_add_group(oa, &G, 1, &a), pft_optim_add_group(ob, &G, 1, &b);
    pft_optim_param_state ps;
    CHECK(!pft_optim_state_export(oa, 0, &ps), "no state before the first step");
    pft_optim_step(oa), pft_optim_step(oa);
    CHECK(pft_optim_state_export(oa, 0, &ps) && ps.step == 2 && ps.numel == 3 && ps.m && (kind == PFT_OPTIM_SGD) == !ps.v,
          "exported state: step %lld", (long long)ps.step);
    pft_tensor_copy_(b, a);
    CHECK(pft_optim_state_import(ob, "layer.weight", ps.step, ps.numel, ps.m, ps.v) == PFT_OK, "import: %s", pft_ctx_error(ctx));
    CHECK(pft_optim_state_import(ob, "nope", 1, 3, ps.m, ps.v) == PFT_ERR_ARG && strstr(pft_ctx_error(ctx), "'nope'"),
          "unknown name refused: %s", pft_ctx_error(ctx));
    CHECK(pft_optim_state_import(ob, "layer.weight", 1, 4, ps.m, ps.v) == PFT_ERR_SHAPE, "numel mismatch refused");
    pft_optim_step(oa), pft_optim_step(ob);
    CHECK(memcmp(pft_tensor_data(a), pft_tensor_data(b), sizeof w0) == 0, "%s: resumed step bit-identical",
          kind == PFT_OPTIM_SGD ? "sgd" : "adamw");
    pft_optim_free(oa), pft_optim_free(ob);
    pft_tensor_release(a), pft_tensor_release(b);
}

/* An embedding's AdamW through its gradient's rows (rows no batch has used yet only decay: zero_rows) against
 * the same updates with the gradient dense, bit for bit, over steps whose ids leave most rows unused: at step
 * import_at an import of a state whose unused rows' moments are not zero, at step dense_at a step dense on
 * the rows side too (-1: none); marks kept past either would be wrong. */
static void test_embedding_rows(pft_ctx *ctx, int import_at, int dense_at) {
    enum { V = 40, C = 9, STEPS = 6 };
    pft_tensor *w0 = pft_tensor_rand(ctx, 2, (int64_t[]){V, C}, -1, 1);
    pft_tensor *wr = pft_tensor_from_data(ctx, 2, (int64_t[]){V, C}, pft_tensor_data(w0));
    pft_tensor *wd = pft_tensor_from_data(ctx, 2, (int64_t[]){V, C}, pft_tensor_data(w0));
    pft_tensor_set_name(wr, "emb"), pft_tensor_set_name(wd, "emb");
    wr->requires_grad = wd->requires_grad = true;
    pft_optim_group G = pft_optim_group_defaults(PFT_OPTIM_ADAMW);
    G.lr = 0.05, G.weight_decay = 0.3;
    pft_optim *orows = pft_optim_new(ctx, PFT_OPTIM_ADAMW), *odense = pft_optim_new(ctx, PFT_OPTIM_ADAMW);
    pft_optim_add_group(orows, &G, 1, &wr), pft_optim_add_group(odense, &G, 1, &wd);
    for (int t = 0; t < STEPS; t++) {
        const int32_t ids[3] = {(int32_t)(3 * t % V), (int32_t)(7 + t), 11}; /* distinct: rows 0-19 only */
        pft_tensor *dy = pft_tensor_rand(ctx, 2, (int64_t[]){3, C}, -1, 1);
        for (int side = 0; side < 2; side++) {
            pft_tensor *w = side ? wd : wr;
            pft_optim_zero_grad(side ? odense : orows);
            pft_tensor *y = pft_embedding(w, ids, 1, (int64_t[]){3});
            CHECK(y && pft_backward(y, dy) == PFT_OK, "embedding backward: %s", pft_ctx_error(ctx));
            pft_tensor_release(y);
            if (side || t == dense_at) { /* + a dense gradient of zeros (w 0, summed): its rows no longer known */
                pft_tensor *zero = pft_tensor_zeros(ctx, 2, (int64_t[]){V, C}), *wz = pft_mul(w, zero);
                pft_tensor *sum = wz ? pft_sum_all(wz) : NULL;
                CHECK(sum && pft_backward(sum, NULL) == PFT_OK, "dense backward: %s", pft_ctx_error(ctx));
                pft_tensor_release(zero), pft_tensor_release(wz), pft_tensor_release(sum);
            }
            CHECK((pft_tensor_grad_rows(w) != NULL) == (!side && t != dense_at), "step %d, %s side: gradient rows %s", t,
                  side ? "dense" : "rows", pft_tensor_grad_rows(w) ? "known" : "unknown");
        }
        pft_tensor_release(dy);
        if (t == import_at) { /* a state whose unused rows have moments, imported on both sides */
            pft_optim_param_state ps;
            CHECK(pft_optim_state_export(odense, 0, &ps), "export");
            float *m = malloc(sizeof(float) * V * C), *v = malloc(sizeof(float) * V * C);
            memcpy(m, ps.m, sizeof(float) * V * C), memcpy(v, ps.v, sizeof(float) * V * C);
            for (int j = 0; j < C; j++) m[30 * C + j] = 0.01f * (float)(j + 1), v[30 * C + j] = 1e-4f;
            CHECK(pft_optim_state_import(orows, "emb", ps.step, V * C, m, v) == PFT_OK &&
                      pft_optim_state_import(odense, "emb", ps.step, V * C, m, v) == PFT_OK,
                  "import: %s", pft_ctx_error(ctx));
            free(m), free(v);
        }
        CHECK(pft_optim_step(orows) == PFT_OK && pft_optim_step(odense) == PFT_OK, "step: %s", pft_ctx_error(ctx));
        CHECK(!memcmp(pft_tensor_data(wr), pft_tensor_data(wd), sizeof(float) * V * C),
              "step %d (import at %d, dense at %d): the embedding through its rows differs from the dense update", t,
              import_at, dense_at);
    }
    pft_optim_free(orows), pft_optim_free(odense);
    pft_tensor_release(w0), pft_tensor_release(wr), pft_tensor_release(wd);
}

/* torch.nn.utils.clip_grad_norm_ by hand: grads (3, 4) and (12): norm 13; max 6.5 -> coef 6.5 / (13 + 1e-6) */
static void test_clip(pft_ctx *ctx) {
    pft_tensor *a = pft_tensor_zeros(ctx, 1, (int64_t[]){2}), *b = pft_tensor_zeros(ctx, 1, (int64_t[]){1});
    pft_tensor *none = pft_tensor_zeros(ctx, 1, (int64_t[]){1});
    a->grad = pft_tensor_from_data(ctx, 1, (int64_t[]){2}, (float[]){3, 4});
    b->grad = pft_tensor_from_data(ctx, 1, (int64_t[]){1}, (float[]){12});
    pft_tensor *ps[3] = {a, none, b};
    double n = pft_clip_grad_norm(3, ps, 6.5);
    double c = 6.5 / (13 + 1e-6);
    CHECK(fabs(n - 13) < 1e-12, "norm %g", n);
    CHECK(pft_tensor_data(a->grad)[0] == (float)(3 * (float)c) && pft_tensor_data(b->grad)[0] == (float)(12 * (float)c),
          "scaled by max/(norm+1e-6): %g", pft_tensor_data(a->grad)[0]);
    n = pft_clip_grad_norm(3, ps, 100);
    CHECK(fabs(n - 6.5) < 1e-5 && pft_tensor_data(b->grad)[0] == (float)(12 * (float)c), "below max: unchanged (%g)", n);
    pft_tensor_data(a->grad)[0] = NAN;
    CHECK(isnan(pft_clip_grad_norm(3, ps, 1.0)), "a NaN gradient gives a NaN norm");
    pft_tensor_release(a), pft_tensor_release(b), pft_tensor_release(none);
}

/* clipping then stepping, and stepping with clipping's factor: the same bits, the gradients left alone */
static void test_scaled_step(pft_ctx *ctx, pft_optim_kind kind) {
    float w0[5] = {0.5f, -1, 2, 0.25f, -0.75f}, g0[5] = {3, -4, 12, 0.5f, 7};
    pft_tensor *w[2];
    pft_optim *o[2];
    pft_optim_group G = pft_optim_group_defaults(kind);
    G.lr = 0.1, G.momentum = kind == PFT_OPTIM_SGD ? 0.9 : 0;
    for (int i = 0; i < 2; i++) {
        w[i] = pft_tensor_from_data(ctx, 1, (int64_t[]){5}, w0);
        w[i]->requires_grad = true;
        w[i]->grad = pft_tensor_from_data(ctx, 1, (int64_t[]){5}, g0);
        o[i] = pft_optim_new(ctx, kind);
        pft_optim_add_group(o[i], &G, 1, &w[i]);
    }
    for (int step = 0; step < 2; step++) {
        pft_clip_grad_norm(1, &w[0], 2.0);
        pft_optim_step(o[0]);
        const double norm = pft_grad_norm(1, &w[1]);
        const float coef = pft_clip_coef(norm, 2.0);
        CHECK(coef < 1.0f && fabs(norm - sqrt(9 + 16 + 144 + 0.25 + 49)) < 1e-9, "norm %g, coef %g", norm, coef);
        CHECK(pft_optim_step_scaled(o[1], coef) == PFT_OK, "scaled step: %s", pft_ctx_error(ctx));
        CHECK(!memcmp(pft_tensor_data(w[0]), pft_tensor_data(w[1]), sizeof w0), "%s step %d: clip + step == step(coef)",
              kind == PFT_OPTIM_SGD ? "sgd" : "adamw", step);
        CHECK(!memcmp(pft_tensor_data(w[1]->grad), g0, sizeof g0), "the scaled step leaves the gradient as it was");
        memcpy(pft_tensor_data(w[0]->grad), g0, sizeof g0); /* clipping scaled it */
    }
    CHECK(pft_clip_coef(1.0, 2.0) == 1.0f && pft_clip_coef(NAN, 2.0) == 1.0f && pft_clip_coef(INFINITY, 2.0) == 1.0f,
          "no clipping below max_norm or for a non-finite norm");
    for (int i = 0; i < 2; i++) pft_optim_free(o[i]), pft_tensor_release(w[i]);
}

int main(void) {
    TEST_BEGIN("optim");
    pft_ctx *ctx = pft_ctx_new(1, 1);
    pft_optim_group a = pft_optim_group_defaults(PFT_OPTIM_ADAMW);
    test_scaled_step(ctx, PFT_OPTIM_ADAMW);
    test_scaled_step(ctx, PFT_OPTIM_SGD);
    run_case(ctx, PFT_OPTIM_ADAMW, a, "adamw defaults");
    a.lr = 0.05, a.weight_decay = 0.2, a.beta1 = 0.8, a.beta2 = 0.99, a.eps = 1e-6;
    run_case(ctx, PFT_OPTIM_ADAMW, a, "adamw custom");
    pft_optim_group s = pft_optim_group_defaults(PFT_OPTIM_SGD);
    s.lr = 0.1;
    run_case(ctx, PFT_OPTIM_SGD, s, "sgd plain");
    s.momentum = 0.9, s.weight_decay = 0.01;
    run_case(ctx, PFT_OPTIM_SGD, s, "sgd momentum + decay");
    test_frozen_and_groups(ctx);
    test_state_roundtrip(ctx, PFT_OPTIM_ADAMW);
    test_state_roundtrip(ctx, PFT_OPTIM_SGD);
    test_clip(ctx);
    test_embedding_rows(ctx, 2, -1);
    test_embedding_rows(ctx, -1, 2);
    pft_optim_group bad = pft_optim_group_defaults(PFT_OPTIM_ADAMW);
    bad.beta1 = 1.5;
    pft_optim *opt = pft_optim_new(ctx, PFT_OPTIM_ADAMW);
    CHECK(pft_optim_add_group(opt, &bad, 0, NULL) == -1 && strstr(pft_ctx_error(ctx), "invalid group settings"),
          "invalid betas refused: %s", pft_ctx_error(ctx));
    pft_optim_free(opt);
    CHECK(ctx->stats.live_tensors == 0, "live tensors at exit: %lld", (long long)ctx->stats.live_tensors);
    pft_ctx_free(ctx);
    return TEST_END();
}
