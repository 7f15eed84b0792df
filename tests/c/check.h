/* check.h - the C test harness: CHECK macros, a closing summary line, and the gradient checker.
 *
 *     int main(void) { TEST_BEGIN("ops"); CHECK(1 + 1 == 2, "arithmetic"); return TEST_END(); }
 *
 * Each test binary prints one line per failed check and ends with `NAME: N passed, N failed`; the exit
 * status is non-zero on any failure. The Makefile's runner adds the binaries' counts into one line. */
#ifndef PFT_TEST_CHECK_H
#define PFT_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ops.h"
#include "rng.h"
#include "tensor.h"

static int check_passed, check_failed;
static const char *check_suite = "test";

#define TEST_BEGIN(name) (check_suite = (name), check_passed = check_failed = 0)
#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (cond) {                                                                                          \
            check_passed++;                                                                                  \
        } else {                                                                                             \
            check_failed++;                                                                                  \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                      \
            printf(__VA_ARGS__);                                                                             \
            printf("\n");                                                                                    \
        }                                                                                                    \
    } while (0)

static inline int TEST_END(void) {
    printf("%s: %d passed, %d failed\n", check_suite, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

/* The seed for random test data: PFT_TEST_SEED from the environment, else a fixed one; always printed so
 * a failure can be replayed. */
static inline uint64_t test_seed(void) {
    const char *s = getenv("PFT_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 10) : 20261129ULL;
    printf("%s: seed %llu (set PFT_TEST_SEED to replay)\n", check_suite, (unsigned long long)seed);
    return seed;
}

static inline float max_abs_diff(const float *a, const float *b, int64_t n) {
    float m = 0;
    for (int64_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (d > m || d != d) m = d != d ? INFINITY : d;
    }
    return m;
}

/* --- gradient check ----------------------------------------------------------------------------------
 * f builds an output from the inputs; the checker reduces it to the scalar L = sum(out * r) with fixed
 * random weights r (so every output element matters and sign errors cannot cancel), takes dL/dinput by
 * backward, and compares with central differences (L(x+h) - L(x-h)) / 2h, where L is accumulated in double.
 * fp32 tolerance: with h = 1e-2 the truncation error is O(h^2 f''') ~ 1e-4 for these smooth ops and the
 * rounding error is ~ eps_f32 * |L| / h ~ 1e-5 * |L|; so |analytic - numeric| <= atol + rtol * |numeric|
 * with atol = 2e-3, rtol = 2e-2 passes every correct op and fails a gradient that is off by a factor,
 * a sign, a transpose or a missing term (the wrong-backward test proves it). */
typedef pft_tensor *(*gradcheck_fn)(void *user, pft_tensor **inputs);

static inline double gc_loss(pft_ctx *ctx, gradcheck_fn f, void *user, pft_tensor **inputs, const float *r, int64_t *n_out) {
    pft_ctx_no_grad_enter(ctx);
    pft_tensor *out = f(user, inputs);
    pft_ctx_no_grad_leave(ctx);
    if (!out) return NAN;
    int64_t n = pft_tensor_numel(out);
    float *buf = malloc(sizeof(float) * (size_t)n);
    pft_tensor_to_buffer(out, buf);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)buf[i] * (r ? r[i] : 1.0);
    free(buf);
    pft_tensor_release(out);
    if (n_out) *n_out = n;
    return s;
}

/* Returns the worst normalised error (<= 1 passes). `which` marks the inputs to check (others held fixed).
 * Inputs are leaves; to check an op on non-contiguous or broadcast operands, let f take views of them
 * (transpose, narrow, expand) before calling the op: that also checks the views' backward. */
static inline double gradcheck(pft_ctx *ctx, const char *name, gradcheck_fn f, void *user, int n, pft_tensor **inputs,
                               uint64_t seed) {
    const double h = 1e-2, atol = 2e-3, rtol = 2e-2;
    int64_t n_out = 0;
    gc_loss(ctx, f, user, inputs, NULL, &n_out);
    float *r = malloc(sizeof(float) * (size_t)(n_out ? n_out : 1));
    for (int64_t i = 0; i < n_out; i++) r[i] = (float)(pft_rng_uniform(seed, (uint64_t)i) * 2.0 - 1.0);
    for (int k = 0; k < n; k++)
        if (inputs[k]) pft_tensor_free_grad(inputs[k]);
    /* analytic */
    pft_tensor *out = f(user, inputs);
    if (!out) {
        printf("gradcheck %s: forward failed: %s\n", name, pft_ctx_error(ctx));
        free(r);
        return INFINITY;
    }
    pft_tensor *rt = pft_tensor_from_data(ctx, out->ndim, out->shape, r);
    pft_status st = pft_backward(out, rt);
    pft_tensor_release(rt);
    pft_tensor_release(out);
    if (st) {
        printf("gradcheck %s: backward failed: %s\n", name, pft_ctx_error(ctx));
        free(r);
        return INFINITY;
    }
    double worst = 0;
    for (int k = 0; k < n; k++) {
        pft_tensor *x = inputs[k];
        if (!x || !x->requires_grad) continue;
        if (!x->grad) {
            printf("gradcheck %s: input %d got no gradient\n", name, k);
            worst = INFINITY;
            continue;
        }
        int64_t numel = pft_tensor_numel(x), idx[PFT_MAX_DIMS] = {0};
        const float *g = pft_tensor_data(x->grad);
        for (int64_t e = 0; e < numel; e++) {
            int64_t off = x->offset;
            for (int d = 0; d < x->ndim; d++) off += idx[d] * x->stride[d];
            float *p = &x->storage->data[off], saved = *p; /* each write marked (tensor.h): kept packings see it */
            *p = saved + (float)h, pft_tensor_mark_written(x);
            double lp = gc_loss(ctx, f, user, inputs, r, NULL);
            *p = saved - (float)h, pft_tensor_mark_written(x);
            double lm = gc_loss(ctx, f, user, inputs, r, NULL);
            *p = saved, pft_tensor_mark_written(x);
            double num = (lp - lm) / (2 * h), err = fabs(num - g[e]) / (atol + rtol * fabs(num));
            if (isnan(err)) err = INFINITY; /* a NaN gradient fails, and stays the worst */
            if (!(err <= worst)) {
                if (err > 1 && worst <= 1)
                    printf("gradcheck %s: input %d element %lld: analytic %.6g numeric %.6g\n", name, k, (long long)e,
                           g[e], num);
                worst = err;
            }
            for (int d = x->ndim - 1; d >= 0; d--) {
                if (++idx[d] < x->shape[d]) break;
                idx[d] = 0;
            }
        }
    }
    free(r);
    return worst;
}

/* A random tensor in [-1, 1) that requires a gradient. */
static inline pft_tensor *rand_param(pft_ctx *ctx, int ndim, const int64_t *shape) {
    pft_tensor *t = pft_tensor_rand(ctx, ndim, shape, -1.0f, 1.0f);
    t->requires_grad = true;
    return t;
}

#endif
