/* test_matmul.c - matmul and linear against a naive triple loop (all four transpose combinations,
 * batched, shared right operand) and their gradients against finite differences. */
#include "check.h"
#include "gemm_tiles.h"
#include "optim.h"

/* C[i,j] = sum_k A[i,k] B[k,j] over row-major dense buffers, in double */
static void naive(const float *A, const float *B, float *C, int64_t M, int64_t N, int64_t K) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += (double)A[i * K + k] * B[k * N + j];
            C[i * N + j] = (float)s;
        }
}

/* a matrix [r, c] that is either dense or the transpose of a dense [c, r] */
static pft_tensor *make_operand(pft_ctx *ctx, int64_t r, int64_t c, bool transposed) {
    if (!transposed) return pft_tensor_rand(ctx, 2, (int64_t[]){r, c}, -1, 1);
    pft_tensor *base = pft_tensor_rand(ctx, 2, (int64_t[]){c, r}, -1, 1);
    pft_tensor *v = pft_tensor_transpose(base, 0, 1);
    pft_tensor_release(base);
    return v;
}

static void test_transposes(pft_ctx *ctx) {
    const int64_t M = 37, N = 29, K = 41;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            pft_tensor *a = make_operand(ctx, M, K, ta), *b = make_operand(ctx, K, N, tb);
            CHECK(pft_tensor_is_contiguous(a) == !ta, "operand a layout");
            pft_tensor *c = pft_matmul(a, b);
            float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N), *C = malloc(sizeof(float) * M * N);
            pft_tensor_to_buffer(a, A);
            pft_tensor_to_buffer(b, B);
            naive(A, B, C, M, N, K);
            float d = max_abs_diff(C, pft_tensor_data(c), M * N);
            CHECK(d < 1e-4f, "matmul ta=%d tb=%d: max diff %g", ta, tb, d);
            free(A), free(B), free(C);
            pft_tensor_release(a), pft_tensor_release(b), pft_tensor_release(c);
        }
}

static void test_batched(pft_ctx *ctx) {
    const int64_t Bn = 3, M = 5, N = 7, K = 6;
    pft_tensor *a = pft_tensor_rand(ctx, 3, (int64_t[]){Bn, M, K}, -1, 1);
    pft_tensor *b = pft_tensor_rand(ctx, 3, (int64_t[]){Bn, K, N}, -1, 1);
    pft_tensor *w = pft_tensor_rand(ctx, 2, (int64_t[]){K, N}, -1, 1);
    pft_tensor *c = pft_matmul(a, b), *cw = pft_matmul(a, w);
    float C[M * N];
    float worst = 0, worst_shared = 0;
    for (int64_t i = 0; i < Bn; i++) {
        naive(pft_tensor_data(a) + i * M * K, pft_tensor_data(b) + i * K * N, C, M, N, K);
        float d = max_abs_diff(C, pft_tensor_data(c) + i * M * N, M * N);
        worst = d > worst ? d : worst;
        naive(pft_tensor_data(a) + i * M * K, pft_tensor_data(w), C, M, N, K);
        d = max_abs_diff(C, pft_tensor_data(cw) + i * M * N, M * N);
        worst_shared = d > worst_shared ? d : worst_shared;
    }
    CHECK(worst < 1e-5f, "batched matmul: max diff %g", worst);
    CHECK(worst_shared < 1e-5f, "batched matmul with a shared 2-D operand: max diff %g", worst_shared);
    pft_tensor_release(a), pft_tensor_release(b), pft_tensor_release(w), pft_tensor_release(c), pft_tensor_release(cw);
}

static void test_errors(pft_ctx *ctx) {
    pft_tensor *a = pft_tensor_zeros(ctx, 2, (int64_t[]){2, 3});
    pft_tensor *b = pft_tensor_zeros(ctx, 2, (int64_t[]){4, 5});
    pft_tensor *c = pft_matmul(a, b);
    CHECK(!c && strstr(pft_ctx_error(ctx), "matmul: inner dims differ: [2, 3] x [4, 5]"), "inner-dim error: %s", pft_ctx_error(ctx));
    pft_tensor *w = pft_tensor_zeros(ctx, 2, (int64_t[]){5, 4});
    pft_tensor *y = pft_linear(a, w, NULL);
    CHECK(!y && strstr(pft_ctx_error(ctx), "linear: input [2, 3] does not match weight [5, 4]"), "linear error: %s", pft_ctx_error(ctx));
    pft_tensor_release(a), pft_tensor_release(b), pft_tensor_release(w);
}

/* gradient checks: f receives leaves and takes the views itself */
static pft_tensor *f_matmul(void *u, pft_tensor **in) {
    int mode = *(int *)u; /* bit 0: transpose a's storage, bit 1: b's */
    pft_tensor *a = mode & 1 ? pft_tensor_transpose(in[0], 0, 1) : pft_tensor_retain(in[0]);
    pft_tensor *b = mode & 2 ? pft_tensor_transpose(in[1], 0, 1) : pft_tensor_retain(in[1]);
    pft_tensor *c = pft_matmul(a, b);
    pft_tensor_release(a), pft_tensor_release(b);
    return c;
}

static pft_tensor *f_bmm_shared(void *u, pft_tensor **in) { return pft_matmul(in[0], in[1]); }

static pft_tensor *f_linear(void *u, pft_tensor **in) {
    /* x is taken as a narrowed (non-contiguous) view to exercise the copy path */
    pft_tensor *x = pft_tensor_narrow(in[0], 2, 1, 4);
    pft_tensor *y = pft_linear(x, in[1], in[2]);
    pft_tensor_release(x);
    return y;
}

static void test_grads(pft_ctx *ctx, uint64_t seed) {
    for (int mode = 0; mode < 4; mode++) {
        pft_tensor *a = rand_param(ctx, 2, mode & 1 ? (int64_t[]){4, 3} : (int64_t[]){3, 4});
        pft_tensor *b = rand_param(ctx, 2, mode & 2 ? (int64_t[]){5, 4} : (int64_t[]){4, 5});
        pft_tensor *in[2] = {a, b};
        double e = gradcheck(ctx, "matmul", f_matmul, &mode, 2, in, seed);
        CHECK(e <= 1, "matmul gradient (mode %d): error %g", mode, e);
        pft_tensor_release(a), pft_tensor_release(b);
    }
    pft_tensor *a = rand_param(ctx, 3, (int64_t[]){2, 3, 4}), *w = rand_param(ctx, 2, (int64_t[]){4, 5});
    pft_tensor *in[3] = {a, w};
    double e = gradcheck(ctx, "bmm-shared", f_bmm_shared, NULL, 2, in, seed);
    CHECK(e <= 1, "batched matmul with shared operand gradient: error %g", e);
    pft_tensor_release(a), pft_tensor_release(w);

    pft_tensor *x = rand_param(ctx, 3, (int64_t[]){2, 3, 6}), *lw = rand_param(ctx, 2, (int64_t[]){5, 4}),
               *lb = rand_param(ctx, 1, (int64_t[]){5});
    pft_tensor *lin[3] = {x, lw, lb};
    e = gradcheck(ctx, "linear", f_linear, NULL, 3, lin, seed);
    CHECK(e <= 1, "linear gradient: error %g", e);
    pft_tensor_release(x), pft_tensor_release(lw), pft_tensor_release(lb);
}

/* linear_lora with dropout p = *(float *)u: the mask is drawn from a fixed counter on every call, so the
 * finite differences see one function */
static pft_tensor *f_linear_lora(void *u, pft_tensor **in) {
    const float p = *(const float *)u;
    in[0]->ctx->rng_counter = 1000;
    pft_tensor *x = pft_tensor_narrow(in[0], 2, 1, 4); /* non-contiguous, as f_linear */
    pft_tensor *y = pft_linear_lora(x, in[1], in[2], in[3], in[4], 1.7f, p, true);
    pft_tensor_release(x);
    return y;
}

/* the same as composed ops, in pft's former order: linear + scale (linear(linear(dropout(x), a), b)) */
static pft_tensor *f_lora_composed(void *u, pft_tensor **in) {
    const float p = *(const float *)u;
    in[0]->ctx->rng_counter = 1000;
    pft_tensor *x = pft_tensor_narrow(in[0], 2, 1, 4);
    pft_tensor *y = pft_linear(x, in[1], in[2]), *d = pft_dropout(x, p, true);
    pft_tensor *xa = pft_linear(d, in[3], NULL), *xab = pft_linear(xa, in[4], NULL), *s = pft_scale(xab, 1.7f);
    pft_tensor *out = pft_add(y, s);
    pft_tensor_release(x), pft_tensor_release(y), pft_tensor_release(d), pft_tensor_release(xa);
    pft_tensor_release(xab), pft_tensor_release(s);
    return out;
}

/* LoRA's fused op: gradients of x, w, bias, a and b against finite differences, with and without dropout;
 * equal to the composed ops (forward and every gradient); a frozen w and x get no gradient work */
static void test_linear_lora(pft_ctx *ctx, uint64_t seed) {
    for (int drop = 0; drop < 2; drop++) {
        float p = drop ? 0.3f : 0.0f;
        pft_tensor *in[5] = {rand_param(ctx, 3, (int64_t[]){2, 3, 6}), rand_param(ctx, 2, (int64_t[]){5, 4}),
                             rand_param(ctx, 1, (int64_t[]){5}), rand_param(ctx, 2, (int64_t[]){2, 4}),
                             rand_param(ctx, 2, (int64_t[]){5, 2})};
        double e = gradcheck(ctx, drop ? "linear_lora dropout" : "linear_lora", f_linear_lora, &p, 5, in, seed);
        CHECK(e <= 1, "linear_lora gradient (p %g): error %g", p, e);
        /* fused vs composed: forward and gradients */
        float *g1[5], *g2[5];
        pft_tensor *y1 = f_linear_lora(&p, in), *y2 = f_lora_composed(&p, in);
        CHECK(y1 && y2 && max_abs_diff(pft_tensor_data(y1), pft_tensor_data(y2), pft_tensor_numel(y1)) < 1e-6f,
              "linear_lora = composed ops (p %g)", p);
        pft_tensor *ones = pft_tensor_zeros(ctx, y1->ndim, y1->shape);
        for (int64_t i = 0; i < pft_tensor_numel(ones); i++) ((float *)pft_tensor_data(ones))[i] = (float)(i % 3) - 1.0f;
        for (int pass = 0; pass < 2; pass++) {
            for (int k = 0; k < 5; k++) pft_tensor_free_grad(in[k]);
            pft_tensor *y = pass ? y2 : y1;
            CHECK(pft_backward(y, ones) == PFT_OK, "backward: %s", pft_ctx_error(ctx));
            for (int k = 0; k < 5; k++) {
                float **g = pass ? g2 : g1;
                const int64_t n = pft_tensor_numel(in[k]);
                g[k] = malloc(sizeof(float) * (size_t)n);
                memcpy(g[k], pft_tensor_data(in[k]->grad), sizeof(float) * (size_t)n);
            }
        }
        for (int k = 0; k < 5; k++) {
            CHECK(max_abs_diff(g1[k], g2[k], pft_tensor_numel(in[k])) < 1e-5f, "input %d's gradient: fused = composed (p %g)", k, p);
            free(g1[k]), free(g2[k]);
        }
        pft_tensor_release(y1), pft_tensor_release(y2), pft_tensor_release(ones);
        /* base frozen (w, bias, x need no gradient): only a and b get one, and no dw GEMM runs */
        in[0]->requires_grad = in[1]->requires_grad = in[2]->requires_grad = false;
        for (int k = 0; k < 5; k++) pft_tensor_free_grad(in[k]);
        ctx->stats.backward_flops = 0;
        pft_tensor *y = f_linear_lora(&p, in), *sum = y ? pft_sum_all(y) : NULL;
        CHECK(sum && pft_backward(sum, NULL) == PFT_OK, "frozen base backward: %s", pft_ctx_error(ctx));
        CHECK(!in[0]->grad && !in[1]->grad && !in[2]->grad && in[3]->grad && in[4]->grad, "only the adapter's gradients");
        CHECK(ctx->stats.backward_flops == 2 * 6 * 2 * (2 * 5 + 4), "adapter GEMMs only: %lld flops",
              (long long)ctx->stats.backward_flops);
        pft_tensor_release(y), pft_tensor_release(sum);
        for (int k = 0; k < 5; k++) pft_tensor_release(in[k]);
    }
    pft_tensor *x = rand_param(ctx, 2, (int64_t[]){3, 4}), *w = rand_param(ctx, 2, (int64_t[]){5, 4});
    pft_tensor *a = rand_param(ctx, 2, (int64_t[]){2, 3}), *b = rand_param(ctx, 2, (int64_t[]){5, 2});
    CHECK(!pft_linear_lora(x, w, NULL, a, b, 1, 0, true) && strstr(pft_ctx_error(ctx), "a [2, 3] and b [5, 2] do not fit weight [5, 4]"),
          "a bad adapter shape is named: %s", pft_ctx_error(ctx));
    pft_tensor_release(x), pft_tensor_release(w), pft_tensor_release(a), pft_tensor_release(b);
}

/* linear's forward into y and, x requiring a gradient, its backward from gy into dx (the input gradient's GEMM
 * reads w as well) */
static void linear_run(pft_tensor *x, pft_tensor *w, pft_tensor *bias, pft_tensor *gy, float *y, float *dx) {
    pft_tensor_free_grad(x);
    pft_tensor *out = pft_linear(x, w, bias);
    CHECK(out != NULL, "linear: %s", pft_ctx_error(x->ctx));
    if (!out) return;
    memcpy(y, pft_tensor_data(out), sizeof(float) * (size_t)pft_tensor_numel(out));
    if (out->requires_grad && pft_backward(out, gy) == PFT_OK)
        memcpy(dx, pft_tensor_data(x->grad), sizeof(float) * (size_t)pft_tensor_numel(x));
    pft_tensor_release(out);
}

/* The same linear with the context keeping nothing (packed_limit 0): y and dx must have its bits */
static bool same_as_unkept(pft_tensor *x, pft_tensor *w, pft_tensor *bias, pft_tensor *gy, const float *y,
                           const float *dx, int64_t ny, int64_t nx) {
    pft_ctx *ctx = x->ctx;
    const size_t limit = ctx->packed_limit;
    float *y0 = calloc((size_t)ny, sizeof(float)), *dx0 = calloc((size_t)nx, sizeof(float));
    ctx->packed_limit = 0;
    linear_run(x, w, bias, gy, y0, dx0);
    ctx->packed_limit = limit;
    const bool same = !memcmp(y, y0, sizeof(float) * (size_t)ny) && !memcmp(dx, dx0, sizeof(float) * (size_t)nx);
    free(y0), free(dx0);
    return same;
}

/* A frozen weight's GEMM packing is kept between calls (ctx.h; linear's forward and input gradient) and read
 * only while the weight is unchanged: each way of writing a weight (fill_, copy_, an optimizer step) is seen
 * by the next call; a trained weight's packing is kept only while no gradient is recorded; a weight's
 * entries go with its storage. Every result has the bits of a linear that keeps nothing. */
static void test_frozen_weight_packing(pft_ctx *ctx, const char *precision) {
    CHECK(pft_ctx_set_precision(ctx, precision) == PFT_OK, "%s: %s", precision, pft_ctx_error(ctx));
    const pft_gemm_kind tiles = ctx->bf16_gemm ? ctx->bf16_gemm : ctx->f32_gemm;
    const int64_t N = 64, in = 96, out = 80, ny = N * out, nx = N * in;
    pft_tensor *x = pft_tensor_rand(ctx, 2, (int64_t[]){N, in}, -1, 1), *w = pft_tensor_rand(ctx, 2, (int64_t[]){out, in}, -1, 1);
    pft_tensor *bias = pft_tensor_rand(ctx, 1, (int64_t[]){out}, -1, 1), *gy = pft_tensor_rand(ctx, 2, (int64_t[]){N, out}, -1, 1);
    pft_tensor *other = pft_tensor_rand(ctx, 2, (int64_t[]){out, in}, -1, 1);
    x->requires_grad = true;
    float *y = calloc((size_t)ny, sizeof(float)), *dx = calloc((size_t)nx, sizeof(float));
    float *y1 = calloc((size_t)ny, sizeof(float));
    const int count = ctx->packed_count;
    const size_t bytes0 = ctx->packed_bytes;
    const int kept = tiles != PFT_GEMM_BLAS ? 2 : 0; /* OpenBLAS keeps nothing */
    for (int call = 0; call < 2; call++) {
        linear_run(x, w, bias, gy, y, dx);
        CHECK(same_as_unkept(x, w, bias, gy, y, dx, ny, nx), "%s call %d: the bits of a linear that keeps nothing",
              precision, call);
    }
    CHECK(ctx->packed_count == count + kept, "%s: the forward's and the input gradient's packings kept: %d", precision,
          ctx->packed_count - count);
    memcpy(y1, y, sizeof(float) * (size_t)ny);
    pft_tensor_fill_(w, 0.25f);
    CHECK(ctx->packed_count == count && ctx->packed_bytes == bytes0, "%s: a write drops the storage's packings (%d left)",
          precision, ctx->packed_count - count);
    linear_run(x, w, bias, gy, y, dx);
    CHECK(memcmp(y, y1, sizeof(float) * (size_t)ny) && same_as_unkept(x, w, bias, gy, y, dx, ny, nx),
          "%s: fill_ is seen", precision);
    CHECK(pft_tensor_copy_(w, other) == PFT_OK, "copy_");
    linear_run(x, w, bias, gy, y, dx);
    CHECK(same_as_unkept(x, w, bias, gy, y, dx, ny, nx), "%s: copy_ is seen", precision);
    /* unfrozen for a step (gradual unfreezing), frozen again */
    w->requires_grad = true;
    pft_optim *opt = pft_optim_new(ctx, PFT_OPTIM_ADAMW);
    pft_optim_group G = pft_optim_group_defaults(PFT_OPTIM_ADAMW);
    G.lr = 0.1;
    pft_optim_add_group(opt, &G, 1, &w);
    linear_run(x, w, bias, gy, y, dx);
    CHECK(ctx->packed_count == count + kept, "%s: a trained weight's packing is not kept", precision);
    CHECK(pft_optim_step(opt) == PFT_OK, "step: %s", pft_ctx_error(ctx));
    w->requires_grad = false;
    pft_tensor_free_grad(w);
    linear_run(x, w, bias, gy, y, dx);
    CHECK(same_as_unkept(x, w, bias, gy, y, dx, ny, nx), "%s: an optimizer step is seen", precision);
    /* trained, in an evaluation (no gradient recorded): kept, as nothing writes it between batches */
    w->requires_grad = true;
    x->requires_grad = false;
    pft_ctx_no_grad_enter(ctx);
    pft_tensor_fill_(w, -0.5f);
    memset(dx, 0, sizeof(float) * (size_t)nx); /* (no input gradient now) */
    linear_run(x, w, bias, gy, y, dx);
    CHECK(same_as_unkept(x, w, bias, gy, y, dx, ny, nx), "%s: no gradient recorded: a trained weight", precision);
    CHECK(ctx->packed_count == count + kept / 2, "%s: its forward packing kept (no input gradient)", precision);
    pft_ctx_no_grad_leave(ctx);
    /* training again: the optimizer's next write drops what the evaluation kept of a trained weight */
    x->requires_grad = true;
    linear_run(x, w, bias, gy, y, dx);
    CHECK(pft_optim_step(opt) == PFT_OK, "step: %s", pft_ctx_error(ctx));
    CHECK(ctx->packed_count == count, "%s: a trained weight's packings go at its next step (%d left)", precision,
          ctx->packed_count - count);
    pft_optim_free(opt);
    pft_tensor_release(w);
    CHECK(ctx->packed_count == count, "%s: a weight's packings go with it (%d left)", precision, ctx->packed_count - count);
    /* the limit, in MB: 0 keeps nothing; a bad value is named and changes nothing */
    CHECK(pft_ctx_set_packed_mb(ctx, "0") == PFT_OK && ctx->packed_limit == 0, "PFT_PACKED_MB 0");
    x->requires_grad = true;
    pft_tensor *w2 = pft_tensor_rand(ctx, 2, (int64_t[]){out, in}, -1, 1);
    linear_run(x, w2, bias, gy, y, dx);
    CHECK(ctx->packed_count == count, "%s: a limit of 0 keeps nothing", precision);
    pft_tensor_release(w2);
    CHECK(pft_ctx_set_packed_mb(ctx, "12x") == PFT_ERR_ARG && strstr(pft_ctx_error(ctx), "'12x'") && ctx->packed_limit == 0,
          "a bad limit is named: %s", pft_ctx_error(ctx));
    CHECK(pft_ctx_set_packed_mb(ctx, "-3") == PFT_ERR_ARG, "a negative limit is refused");
    CHECK(pft_ctx_set_packed_mb(ctx, "64") == PFT_OK && ctx->packed_limit == (size_t)64 << 20, "64 MB");
    CHECK(pft_ctx_set_packed_mb(ctx, NULL) == PFT_OK && ctx->packed_limit == PFT_PACKED_LIMIT, "the default");
    pft_tensor_release(x), pft_tensor_release(bias), pft_tensor_release(gy), pft_tensor_release(other);
    free(y), free(dx), free(y1);
    pft_ctx_set_precision(ctx, "fp32");
}

int main(void) {
    TEST_BEGIN("matmul");
    uint64_t seed = test_seed();
    pft_ctx *ctx = pft_ctx_new(2, seed);
    test_transposes(ctx);
    test_batched(ctx);
    test_errors(ctx);
    test_grads(ctx, seed);
    test_linear_lora(ctx, seed);
    test_frozen_weight_packing(ctx, "fp32");
    if (pft_ctx_set_precision(ctx, "bf16") == PFT_OK) test_frozen_weight_packing(ctx, "bf16");
    else printf("matmul: bf16: %s; its checks skipped\n", pft_ctx_error(ctx));
    pft_ctx_set_precision(ctx, "fp32");
    CHECK(ctx->stats.live_tensors == 0, "live tensors at exit: %lld", (long long)ctx->stats.live_tensors);
    pft_ctx_free(ctx);
    return TEST_END();
}
