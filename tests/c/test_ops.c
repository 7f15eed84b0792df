/* test_ops.c - every elementwise, reduction, normalisation, lookup and loss op: forward against a double
 * precision reference on random shapes (broadcast, transposed and narrowed operands included), backward
 * against finite differences, dropout's mask rules, the fused ops against the ops they fuse (on 1 and 2
 * threads), and one bad input per op (shape mismatch in every binary op, ids and targets out of range,
 * p out of range, allocation failures). */
#include "check.h"

static pft_ctx *ctx;
static uint64_t seed, draws;

/* an integer in [lo, hi] from the test's own stream (the context's counter is left to the ops) */
static int64_t rnd(int64_t lo, int64_t hi) { return lo + (int64_t)(pft_rng_u64(seed ^ 0x5eed, draws++) % (uint64_t)(hi - lo + 1)); }

static float *elems(const pft_tensor *t) {
    float *b = malloc(sizeof(float) * (size_t)(pft_tensor_numel(t) + 1));
    pft_tensor_to_buffer(t, b);
    return b;
}

/* uniform [lo, hi) tensor of `shape`; when `transposed` (and ndim >= 2) a transposed view of a dense
 * tensor of the shape with first and last dims swapped: the same logical shape, non-contiguous */
static pft_tensor *make(int ndim, const int64_t *shape, bool transposed, float lo, float hi) {
    if (!transposed || ndim < 2) return pft_tensor_rand(ctx, ndim, shape, lo, hi);
    int64_t s[PFT_MAX_DIMS];
    memcpy(s, shape, sizeof(int64_t) * (size_t)ndim);
    s[0] = shape[ndim - 1], s[ndim - 1] = shape[0];
    pft_tensor *base = pft_tensor_rand(ctx, ndim, s, lo, hi);
    pft_tensor *v = pft_tensor_transpose(base, 0, ndim - 1);
    pft_tensor_release(base);
    return v;
}

/* row-major multi-index of element k of shape */
static void unravel(int64_t k, int ndim, const int64_t *shape, int64_t *idx) {
    for (int d = ndim - 1; d >= 0; d--) {
        idx[d] = k % shape[d];
        k /= shape[d];
    }
}

/* t's element at out-index idx (ndim dims) under numpy broadcasting */
static double bget(const pft_tensor *t, int ndim, const int64_t *idx) {
    int64_t ti[PFT_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int j = 0; j < t->ndim; j++) ti[j] = t->shape[j] == 1 ? 0 : idx[j + lead];
    return pft_tensor_get(t, ti);
}

static bool has_shape(const pft_tensor *t, int ndim, const int64_t *shape) {
    if (!t || t->ndim != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return false;
    return true;
}

static void check_live(const char *what, int64_t before) {
    CHECK(ctx->stats.live_tensors == before, "%s: %lld tensors leaked", what, (long long)(ctx->stats.live_tensors - before));
}

/* === forward against references ====================================================================== */

static void test_binary_forward(void) {
    int64_t live = ctx->stats.live_tensors;
    pft_tensor *(*fns[3])(pft_tensor *, pft_tensor *) = {pft_add, pft_sub, pft_mul};
    const char *names[3] = {"add", "sub", "mul"};
    float worst = 0;
    int bad_shape = 0;
    for (int trial = 0; trial < 40; trial++) {
        /* a random output shape; each operand drops some leading dims and sets some dims to 1 */
        int nd = (int)rnd(0, 4);
        int64_t out[PFT_MAX_DIMS], sa[PFT_MAX_DIMS], sb[PFT_MAX_DIMS];
        for (int d = 0; d < nd; d++) out[d] = rnd(1, 5);
        int na = nd - (int)rnd(0, nd ? 1 : 0), nb = nd - (int)rnd(0, nd);
        for (int d = 0; d < na; d++) sa[d] = rnd(0, 3) ? out[d + nd - na] : 1;
        for (int d = 0; d < nb; d++) sb[d] = rnd(0, 3) ? out[d + nd - nb] : 1;
        pft_tensor *a = make(na, sa, trial % 2, -2, 2), *b = make(nb, sb, trial % 3 == 0, -2, 2);
        for (int op = 0; op < 3; op++) {
            pft_tensor *c = fns[op](a, b);
            int ndim = na > nb ? na : nb;
            int64_t exp[PFT_MAX_DIMS];
            for (int d = 0; d < ndim; d++) {
                int64_t x = d - (ndim - na) >= 0 ? sa[d - (ndim - na)] : 1, y = d - (ndim - nb) >= 0 ? sb[d - (ndim - nb)] : 1;
                exp[d] = x == 1 ? y : x;
            }
            if (!has_shape(c, ndim, exp)) {
                bad_shape++;
                printf("%s: wrong result shape (trial %d): %s\n", names[op], trial, c ? "" : pft_ctx_error(ctx));
                pft_tensor_release(c);
                continue;
            }
            int64_t n = pft_tensor_numel(c), idx[PFT_MAX_DIMS];
            for (int64_t k = 0; k < n; k++) {
                unravel(k, ndim, c->shape, idx);
                double x = bget(a, ndim, idx), y = bget(b, ndim, idx);
                double r = op == 0 ? x + y : op == 1 ? x - y : x * y;
                float d = fabsf((float)r - pft_tensor_data(c)[k]);
                worst = d > worst ? d : worst;
            }
            pft_tensor_release(c);
        }
        pft_tensor_release(a), pft_tensor_release(b);
    }
    CHECK(bad_shape == 0, "binary ops: %d results with a wrong shape", bad_shape);
    CHECK(worst < 1e-6f, "binary ops against the broadcasting reference: max diff %g", worst);
    check_live("binary forward", live);
}

static void test_unary_forward(void) {
    int64_t live = ctx->stats.live_tensors;
    float worst[3] = {0};
    for (int trial = 0; trial < 10; trial++) {
        int nd = (int)rnd(1, 3);
        int64_t s[PFT_MAX_DIMS];
        for (int d = 0; d < nd; d++) s[d] = rnd(1, 7);
        pft_tensor *x = make(nd, s, trial % 2, -4, 4);
        float *xv = elems(x);
        pft_tensor *y[3] = {pft_scale(x, -1.5f), pft_gelu(x), pft_tanh(x)};
        for (int64_t k = 0, n = pft_tensor_numel(x); k < n; k++) {
            double v = xv[k], r[3] = {-1.5 * v, 0.5 * v * (1.0 + erf(v / sqrt(2.0))), tanh(v)};
            for (int i = 0; i < 3; i++) {
                float d = fabsf((float)r[i] - pft_tensor_data(y[i])[k]);
                worst[i] = d > worst[i] ? d : worst[i];
            }
        }
        for (int i = 0; i < 3; i++) pft_tensor_release(y[i]);
        free(xv);
        pft_tensor_release(x);
    }
    CHECK(worst[0] < 1e-6f, "scale: max diff %g", worst[0]);
    CHECK(worst[1] < 2e-6f, "gelu (exact erf): max diff %g", worst[1]);
    CHECK(worst[2] < 2e-6f, "tanh: max diff %g", worst[2]);
    check_live("unary forward", live);
}

static void test_reduce_forward(void) {
    int64_t live = ctx->stats.live_tensors;
    float worst = 0;
    int bad_shape = 0;
    for (int trial = 0; trial < 8; trial++) {
        int nd = (int)rnd(1, 4);
        int64_t s[PFT_MAX_DIMS];
        for (int d = 0; d < nd; d++) s[d] = rnd(1, 6);
        pft_tensor *x = make(nd, s, trial % 2, -1, 1);
        for (int dim = -nd; dim < nd; dim++)
            for (int keep = 0; keep < 2; keep++)
                for (int mean = 0; mean < 2; mean++) {
                    pft_tensor *y = mean ? pft_mean(x, dim, keep) : pft_sum(x, dim, keep);
                    int d0 = dim < 0 ? dim + nd : dim, ond = 0;
                    int64_t os[PFT_MAX_DIMS];
                    for (int d = 0; d < nd; d++)
                        if (d != d0 || keep) os[ond++] = d == d0 ? 1 : s[d];
                    if (!has_shape(y, ond, os)) {
                        bad_shape++;
                        pft_tensor_release(y);
                        continue;
                    }
                    int64_t n = pft_tensor_numel(y), idx[PFT_MAX_DIMS], full[PFT_MAX_DIMS];
                    int64_t ks[PFT_MAX_DIMS]; /* y's shape with the reduced dim kept as 1 */
                    memcpy(ks, s, sizeof ks);
                    ks[d0] = 1;
                    for (int64_t k = 0; k < n; k++) {
                        unravel(k, nd, ks, idx);
                        double acc = 0;
                        for (int64_t j = 0; j < s[d0]; j++) {
                            memcpy(full, idx, sizeof full);
                            full[d0] = j;
                            acc += pft_tensor_get(x, full);
                        }
                        if (mean) acc /= (double)s[d0];
                        float d = fabsf((float)acc - pft_tensor_data(y)[k]);
                        worst = d > worst ? d : worst;
                    }
                    pft_tensor_release(y);
                }
        double all = 0;
        float *xv = elems(x);
        for (int64_t k = 0, n = pft_tensor_numel(x); k < n; k++) all += xv[k];
        pft_tensor *sa = pft_sum_all(x), *ma = pft_mean_all(x);
        CHECK(sa->ndim == 0 && ma->ndim == 0, "sum_all/mean_all give scalars");
        float d1 = fabsf((float)all - pft_tensor_data(sa)[0]), d2 = fabsf((float)(all / (double)pft_tensor_numel(x)) - pft_tensor_data(ma)[0]);
        worst = d1 > worst ? d1 : worst;
        worst = d2 > worst ? d2 : worst;
        pft_tensor_release(sa), pft_tensor_release(ma);
        free(xv);
        pft_tensor_release(x);
    }
    CHECK(bad_shape == 0, "sum/mean: %d results with a wrong shape", bad_shape);
    CHECK(worst < 2e-6f, "sum/mean/sum_all/mean_all against the reference: max diff %g", worst);
    check_live("reduce forward", live);
}

/* softmax of scores [B, H, T, T] + mask [B, 1, 1, T] (0 or -inf); batch 1's mask is all -inf */
static void test_softmax_forward(void) {
    int64_t live = ctx->stats.live_tensors;
    const int64_t B = 3, H = 2, T = 5;
    pft_tensor *x = make(4, (int64_t[]){B, H, T, T}, true, -3, 3);
    float mv[B * T];
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) mv[b * T + t] = b == 1 || (b == 2 && t >= 3) ? -INFINITY : 0.0f;
    pft_tensor *mask = pft_tensor_from_data(ctx, 4, (int64_t[]){B, 1, 1, T}, mv);
    pft_tensor *y = pft_softmax(x, mask), *y0 = pft_softmax(x, NULL);
    float worst = 0, worst0 = 0;
    bool nan = false, masked_zero = true;
    int64_t idx[4];
    for (int64_t r = 0; r < B * H * T; r++) {
        unravel(r * T, 4, x->shape, idx);
        int64_t b = idx[0];
        double m = -INFINITY, m0 = -INFINITY, s = 0, s0 = 0, v[T], v0[T];
        for (int64_t j = 0; j < T; j++) {
            idx[3] = j;
            v0[j] = pft_tensor_get(x, idx);
            v[j] = v0[j] + mv[b * T + j];
            m = v[j] > m ? v[j] : m;
            m0 = v0[j] > m0 ? v0[j] : m0;
        }
        for (int64_t j = 0; j < T; j++) {
            s += m == -INFINITY ? 0 : exp(v[j] - m);
            s0 += exp(v0[j] - m0);
        }
        for (int64_t j = 0; j < T; j++) {
            double ref = m == -INFINITY ? 0 : exp(v[j] - m) / s; /* a fully masked row is defined as zeros */
            float got = pft_tensor_data(y)[r * T + j], got0 = pft_tensor_data(y0)[r * T + j];
            nan |= got != got;
            if (mv[b * T + j] == -INFINITY) masked_zero &= got == 0.0f;
            worst = fabsf((float)ref - got) > worst ? fabsf((float)ref - got) : worst;
            worst0 = fabsf((float)(exp(v0[j] - m0) / s0) - got0) > worst0 ? fabsf((float)(exp(v0[j] - m0) / s0) - got0) : worst0;
        }
    }
    /* the same mask as a transposed view (last-dim stride B), and a per-query mask [1, 1, T, 1] */
    pft_tensor *mt_base = pft_tensor_empty(ctx, 4, (int64_t[]){T, 1, 1, B});
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) pft_tensor_data(mt_base)[t * B + b] = mv[b * T + t];
    pft_tensor *mt = pft_tensor_transpose(mt_base, 0, 3);
    pft_tensor *yt = pft_softmax(x, mt);
    CHECK(yt && !memcmp(pft_tensor_data(yt), pft_tensor_data(y), sizeof(float) * (size_t)(B * H * T * T)),
          "softmax: a strided mask gives the same result as a contiguous one");
    pft_tensor *mq = pft_tensor_from_data(ctx, 4, (int64_t[]){1, 1, T, 1}, (float[]){0, -INFINITY, 2, 0, -1});
    pft_tensor *yq = pft_softmax(x, mq);
    float worst_q = 0;
    for (int64_t r = 0; r < B * H * T; r++) {
        int64_t t = r % T;
        for (int64_t j = 0; j < T; j++) {
            float ref = t == 1 ? 0.0f : pft_tensor_data(y0)[r * T + j]; /* a per-row constant cancels; -inf zeroes */
            float d = fabsf(ref - pft_tensor_data(yq)[r * T + j]);
            worst_q = d > worst_q || d != d ? d : worst_q;
        }
    }
    CHECK(worst_q < 1e-6f, "softmax with a per-query mask [1, 1, T, 1]: max diff %g", worst_q);
    pft_tensor_release(mt_base), pft_tensor_release(mt), pft_tensor_release(yt), pft_tensor_release(mq), pft_tensor_release(yq);
    CHECK(!nan, "softmax: a fully masked row produced NaN");
    CHECK(masked_zero, "softmax: masked positions are exactly 0");
    CHECK(worst < 1e-6f, "softmax with mask: max diff %g", worst);
    CHECK(worst0 < 1e-6f, "softmax without mask: max diff %g", worst0);
    pft_tensor_release(x), pft_tensor_release(mask), pft_tensor_release(y), pft_tensor_release(y0);
    check_live("softmax forward", live);
}

static void test_layernorm_forward(void) {
    int64_t live = ctx->stats.live_tensors;
    for (int affine = 0; affine < 2; affine++) {
        const int64_t R = rnd(1, 9), C = rnd(2, 33);
        pft_tensor *x = make(2, (int64_t[]){R, C}, affine, -2, 3);
        pft_tensor *w = affine ? pft_tensor_rand(ctx, 1, &C, 0.5f, 1.5f) : NULL;
        pft_tensor *b = affine ? pft_tensor_rand(ctx, 1, &C, -1, 1) : NULL;
        pft_tensor *y = pft_layernorm(x, w, b, 1e-5f);
        float worst = 0;
        for (int64_t r = 0; r < R; r++) {
            double mu = 0, var = 0;
            for (int64_t j = 0; j < C; j++) mu += pft_tensor_get(x, (int64_t[]){r, j});
            mu /= (double)C;
            for (int64_t j = 0; j < C; j++) {
                double d = pft_tensor_get(x, (int64_t[]){r, j}) - mu;
                var += d * d;
            }
            var /= (double)C;
            for (int64_t j = 0; j < C; j++) {
                double h = (pft_tensor_get(x, (int64_t[]){r, j}) - mu) / sqrt(var + 1e-5);
                if (affine) h = h * pft_tensor_data(w)[j] + pft_tensor_data(b)[j];
                float d = fabsf((float)h - pft_tensor_data(y)[r * C + j]);
                worst = d > worst ? d : worst;
            }
        }
        CHECK(worst < 5e-6f, "layernorm (%s): max diff %g", affine ? "weight and bias" : "no affine", worst);
        pft_tensor_release(x), pft_tensor_release(w), pft_tensor_release(b), pft_tensor_release(y);
    }
    check_live("layernorm forward", live);
}

/* eps large against the variance (BERT's 1e-12 and the 1e-5 above barely show it): eps 0.1 and 1 on rows
 * that are constant, near-constant (spread 1e-3, variance << eps) and spread to a variance close to eps,
 * forward and the gradients of x, w and b for L = sum(y * r), against a double-precision reference:
 * h = (x - mean) / sqrt(var + eps) with the biased variance, y = h w + b; with g = r w,
 * dx = (g - mean(g) - h mean(g h)) / sqrt(var + eps), dw = sum over rows of r h, db = sum of r. */
static double worse(double worst, double e) { return worst != worst || e != e ? NAN : e > worst ? e : worst; } /* NaN sticks */

static void test_layernorm_large_eps(void) {
    int64_t live = ctx->stats.live_tensors;
    const int64_t R = 6, C = 24;
    const float epss[2] = {0.1f, 1.0f};
    for (int k = 0; k < 2; k++) {
        const double eps = epss[k];
        float xs[6 * 24], rs[6 * 24];
        for (int64_t r = 0; r < R; r++)
            for (int64_t j = 0; j < C; j++) {
                float u = (float)(pft_rng_uniform(seed ^ 0x1a7e, (uint64_t)(r * C + j)) * 2.0 - 1.0); /* [-1, 1) */
                /* rows 0-1 constant, 2-3 near-constant, 4-5 spread: variance of s u is s^2 / 3 ~ eps */
                float s = r < 2 ? 0.0f : r < 4 ? 1e-3f : (float)sqrt(3.0 * eps) * (r == 4 ? 0.7f : 1.4f);
                xs[r * C + j] = (r % 2 ? -0.3f : 0.7f) + s * u;
                rs[r * C + j] = (float)(pft_rng_uniform(seed ^ 0x1a7f, (uint64_t)(r * C + j)) * 2.0 - 1.0);
            }
        pft_tensor *x = pft_tensor_from_data(ctx, 2, (int64_t[]){R, C}, xs);
        pft_tensor *w = pft_tensor_rand(ctx, 1, &C, 0.5f, 1.5f), *b = pft_tensor_rand(ctx, 1, &C, -1, 1);
        x->requires_grad = w->requires_grad = b->requires_grad = true;
        pft_tensor *y = pft_layernorm(x, w, b, (float)eps);
        pft_tensor *rt = pft_tensor_from_data(ctx, 2, (int64_t[]){R, C}, rs);
        CHECK(y && pft_backward(y, rt) == PFT_OK, "layernorm eps %g: forward and backward: %s", eps, pft_ctx_error(ctx));
        if (!y || !x->grad || !w->grad || !b->grad) {
            CHECK(0, "layernorm eps %g: missing output or gradients", eps);
            pft_tensor_release(x), pft_tensor_release(w), pft_tensor_release(b), pft_tensor_release(y), pft_tensor_release(rt);
            continue;
        }
        const float *wv = pft_tensor_data(w), *bv = pft_tensor_data(b), *yv = pft_tensor_data(y);
        const float *dx = pft_tensor_data(x->grad), *dw = pft_tensor_data(w->grad), *db = pft_tensor_data(b->grad);
        double dw_ref[24] = {0}, db_ref[24] = {0};
        double worst_y = 0, worst_dx = 0, worst_dwb = 0;
        for (int64_t r = 0; r < R; r++) {
            const float *xr = xs + r * C, *rr = rs + r * C;
            double mu = 0, var = 0, mg = 0, mgh = 0, h[24], g[24];
            for (int64_t j = 0; j < C; j++) mu += xr[j];
            mu /= (double)C;
            for (int64_t j = 0; j < C; j++) var += (xr[j] - mu) * (xr[j] - mu);
            var /= (double)C;
            const double rstd = 1.0 / sqrt(var + eps);
            for (int64_t j = 0; j < C; j++) {
                h[j] = (xr[j] - mu) * rstd, g[j] = (double)rr[j] * wv[j];
                mg += g[j], mgh += g[j] * h[j];
                dw_ref[j] += (double)rr[j] * h[j], db_ref[j] += rr[j];
                /* |error| / (1 + |reference|): relative for large values, absolute near 0 */
                double e = fabs(yv[r * C + j] - (h[j] * wv[j] + bv[j])) / (1 + fabs(h[j] * wv[j] + bv[j]));
                worst_y = worse(worst_y, e);
            }
            mg /= (double)C, mgh /= (double)C;
            for (int64_t j = 0; j < C; j++) {
                double want = rstd * (g[j] - mg - h[j] * mgh), e = fabs(dx[r * C + j] - want) / (1 + fabs(want));
                worst_dx = worse(worst_dx, e);
            }
        }
        for (int64_t j = 0; j < C; j++) {
            worst_dwb = worse(worst_dwb, fabs(dw[j] - dw_ref[j]) / (1 + fabs(dw_ref[j])));
            worst_dwb = worse(worst_dwb, fabs(db[j] - db_ref[j]) / (1 + fabs(db_ref[j])));
        }
        printf("layernorm eps %g (constant, near-constant and spread rows): max rel diff y %.3g, dx %.3g, dw/db %.3g\n", eps,
               worst_y, worst_dx, worst_dwb);
        /* observed about 1e-7 for each; 1e-6 leaves 10x */
        CHECK(worst_y < 1e-6, "layernorm eps %g: forward differs from the double reference by %g", eps, worst_y);
        CHECK(worst_dx < 1e-6, "layernorm eps %g: dx differs from the double reference by %g", eps, worst_dx);
        CHECK(worst_dwb < 1e-6, "layernorm eps %g: dw or db differs from the double reference by %g", eps, worst_dwb);
        pft_tensor_release(x), pft_tensor_release(w), pft_tensor_release(b), pft_tensor_release(y), pft_tensor_release(rt);
    }
    check_live("layernorm large eps", live);
}

static void test_lookup_loss_forward(void) {
    int64_t live = ctx->stats.live_tensors;
    /* embedding: ids [2, 3] with repeats */
    const int64_t V = 7, C = 5;
    pft_tensor *w = pft_tensor_rand(ctx, 2, (int64_t[]){V, C}, -1, 1);
    int32_t ids[6] = {3, 0, 6, 3, 3, 1};
    pft_tensor *e = pft_embedding(w, ids, 2, (int64_t[]){2, 3});
    bool same = has_shape(e, 3, (int64_t[]){2, 3, C});
    for (int k = 0; same && k < 6; k++) same = !memcmp(pft_tensor_data(e) + k * C, pft_tensor_data(w) + ids[k] * C, sizeof(float) * C);
    CHECK(same, "embedding gathers rows into [2, 3, C]");
    pft_tensor_release(e), pft_tensor_release(w);

    /* cross-entropy over transposed logits, with ignored rows */
    enum { N = 6, K = 9 };
    pft_tensor *lg = make(2, (int64_t[]){N, K}, true, -4, 4);
    int32_t tg[N] = {2, -100, 8, 0, -100, 5};
    pft_tensor *ce = pft_cross_entropy(lg, tg, N, -100);
    double ref = 0;
    int cnt = 0;
    for (int64_t r = 0; r < N; r++) {
        if (tg[r] == -100) continue;
        double m = -INFINITY, s = 0;
        for (int64_t j = 0; j < K; j++) m = fmax(m, pft_tensor_get(lg, (int64_t[]){r, j}));
        for (int64_t j = 0; j < K; j++) s += exp(pft_tensor_get(lg, (int64_t[]){r, j}) - m);
        ref += m + log(s) - pft_tensor_get(lg, (int64_t[]){r, tg[r]});
        cnt++;
    }
    ref /= cnt;
    CHECK(ce && ce->ndim == 0 && fabs(pft_tensor_data(ce)[0] - ref) < 1e-5, "cross_entropy: %g vs reference %g",
          ce ? pft_tensor_data(ce)[0] : NAN, ref);
    int32_t all_ignored[N] = {-100, -100, -100, -100, -100, -100};
    pft_tensor *ce0 = pft_cross_entropy(lg, all_ignored, N, -100);
    CHECK(ce0 && pft_tensor_data(ce0)[0] == 0.0f, "cross_entropy with every target ignored is 0");
    /* a large logit must not overflow: log-softmax is computed stably */
    pft_tensor *big = pft_tensor_from_data(ctx, 2, (int64_t[]){1, 3}, (float[]){1000, 0, -1000});
    pft_tensor *ceb = pft_cross_entropy(big, (int32_t[]){1}, 1, -100);
    CHECK(ceb && fabsf(pft_tensor_data(ceb)[0] - 1000.0f) < 1e-3f, "cross_entropy with logits of 1000: %g",
          ceb ? pft_tensor_data(ceb)[0] : NAN);
    pft_tensor_release(lg), pft_tensor_release(ce), pft_tensor_release(ce0), pft_tensor_release(big), pft_tensor_release(ceb);

    /* mse over a transposed prediction */
    pft_tensor *p = make(3, (int64_t[]){3, 4, 5}, true, -1, 1), *t = pft_tensor_rand(ctx, 3, (int64_t[]){3, 4, 5}, -1, 1);
    pft_tensor *l = pft_mse(p, t);
    float *pv = elems(p);
    double s = 0;
    for (int k = 0; k < 60; k++) s += ((double)pv[k] - pft_tensor_data(t)[k]) * ((double)pv[k] - pft_tensor_data(t)[k]);
    CHECK(l && l->ndim == 0 && fabs(pft_tensor_data(l)[0] - s / 60) < 1e-6, "mse: %g vs reference %g", l ? pft_tensor_data(l)[0] : NAN, s / 60);
    free(pv);
    pft_tensor_release(p), pft_tensor_release(t), pft_tensor_release(l);
    check_live("lookup/loss forward", live);
}

/* === dropout ========================================================================================= */

static void test_dropout(void) {
    int64_t live = ctx->stats.live_tensors;
    const int64_t n = 100000;
    const float p = 0.3f, scale = 1.0f / (1.0f - p);
    pft_tensor *x = pft_tensor_rand(ctx, 2, (int64_t[]){100, 1000}, 1, 2); /* no zeros: a zero is a drop */
    x->requires_grad = true;
    uint64_t c0 = 4242;
    ctx->rng_counter = c0;
    pft_tensor *y1 = pft_dropout(x, p, true);
    CHECK(ctx->rng_counter == c0 + (uint64_t)n, "dropout advances the counter by numel: %llu",
          (unsigned long long)(ctx->rng_counter - c0));
    ctx->rng_counter = c0;
    pft_tensor *y2 = pft_dropout(x, p, true);
    pft_tensor *y3 = pft_dropout(x, p, true); /* the next counter: a different mask */
    CHECK(!memcmp(pft_tensor_data(y1), pft_tensor_data(y2), sizeof(float) * n), "same seed and counter: same mask");
    int64_t dropped = 0, differ = 0, wrong_scale = 0, wrong_rule = 0;
    for (int64_t i = 0; i < n; i++) {
        float yv = pft_tensor_data(y1)[i], xv = pft_tensor_data(x)[i];
        bool drop = pft_rng_uniform_f(ctx->seed, c0 + (uint64_t)i) < p;
        dropped += yv == 0.0f;
        wrong_rule += drop != (yv == 0.0f);
        wrong_scale += yv != 0.0f && yv != xv * scale;
        differ += (yv == 0.0f) != (pft_tensor_data(y3)[i] == 0.0f);
    }
    double frac = (double)dropped / n;
    CHECK(fabs(frac - p) < 0.01, "dropout drops a fraction %.4f (p = %.2f)", frac, p);
    CHECK(wrong_rule == 0, "dropout: %lld elements disagree with the rule u(seed, counter + i) < p", (long long)wrong_rule);
    CHECK(wrong_scale == 0, "dropout: %lld kept elements not scaled by 1/(1-p)", (long long)wrong_scale);
    CHECK(differ > n / 10, "dropout: the next counter gives a different mask (%lld differ)", (long long)differ);
    /* backward: the same mask, drawn again from (seed, counter) after other random ops moved the counter */
    pft_tensor_release(pft_tensor_rand(ctx, 1, (int64_t[]){17}, 0, 1));
    pft_tensor *loss = pft_sum_all(y1);
    CHECK(pft_backward(loss, NULL) == PFT_OK, "dropout backward: %s", pft_ctx_error(ctx));
    int64_t wrong_grad = 0;
    for (int64_t i = 0; i < n && x->grad; i++)
        wrong_grad += pft_tensor_data(x->grad)[i] != (pft_tensor_data(y1)[i] == 0.0f ? 0.0f : scale);
    CHECK(x->grad && wrong_grad == 0, "dropout backward uses the forward's mask (%lld wrong)", (long long)wrong_grad);
    /* off: the input itself */
    pft_tensor *e1 = pft_dropout(x, p, false), *e2 = pft_dropout(x, 0.0f, true);
    CHECK(e1 == x && e2 == x, "dropout off (eval, or p = 0) returns x itself");
    pft_tensor_release(e1), pft_tensor_release(e2);
    pft_tensor_release(loss), pft_tensor_release(y1), pft_tensor_release(y2), pft_tensor_release(y3), pft_tensor_release(x);
    check_live("dropout", live);
}

/* The fused op against dropout, add and layernorm one after another: the same output, the same counter
 * afterwards and the same gradients for h, residual, w and b, bit for bit (training with dropout, p = 0,
 * eval; rows wide and narrow; h a transposed view; on 1 and 2 threads). */
static bool same_bits(const pft_tensor *a, const pft_tensor *b) {
    return a && b && pft_tensor_numel(a) == pft_tensor_numel(b) &&
           !memcmp(pft_tensor_data((pft_tensor *)a), pft_tensor_data((pft_tensor *)b), sizeof(float) * (size_t)pft_tensor_numel(a));
}

static void test_dropout_add_layernorm(void) {
    int64_t live = ctx->stats.live_tensors;
    const int64_t shapes[2][3] = {{3, 41, 37}, {2, 600, 384}};
    for (int threads = 1; threads <= 2; threads++)
        for (int sh = 0; sh < 2; sh++)
            for (int mode = 0; mode < 3; mode++) { /* train p 0.1; train p 0; eval p 0.1 */
                pft_ctx *c = pft_ctx_new(threads, seed);
                const int64_t B = shapes[sh][0], T = shapes[sh][1], C = shapes[sh][2];
                const float p = mode == 1 ? 0.0f : 0.1f;
                const bool train = mode != 2;
                pft_tensor *h0 = pft_tensor_rand(c, 3, (int64_t[]){B, C, T}, -2, 2); /* read as [B, T, C] via transpose */
                pft_tensor *r = pft_tensor_rand(c, 3, (int64_t[]){B, T, C}, -2, 2);
                pft_tensor *w = pft_tensor_rand(c, 1, (int64_t[]){C}, 0.5f, 1.5f), *b = pft_tensor_rand(c, 1, (int64_t[]){C}, -1, 1);
                pft_tensor *dy = pft_tensor_rand(c, 3, (int64_t[]){B, T, C}, -1, 1);
                h0->requires_grad = r->requires_grad = w->requires_grad = b->requires_grad = true;
                pft_tensor *got[5], *want[5];
                uint64_t counter_after[2];
                for (int fused = 0; fused < 2; fused++) {
                    pft_tensor *h = pft_tensor_transpose(h0, 1, 2);
                    c->rng_counter = 9000;
                    pft_tensor *y;
                    if (fused) {
                        y = pft_dropout_add_layernorm(h, r, w, b, p, train, 1e-12f);
                    } else {
                        pft_tensor *d = pft_dropout(h, p, train), *s2 = pft_add(d, r);
                        y = pft_layernorm(s2, w, b, 1e-12f);
                        pft_tensor_release(d), pft_tensor_release(s2);
                    }
                    counter_after[fused] = c->rng_counter;
                    CHECK(y && pft_backward(y, dy) == PFT_OK, "dropout_add_layernorm (fused %d): %s", fused, pft_ctx_error(c));
                    pft_tensor **o = fused ? got : want;
                    o[0] = y, o[1] = h0->grad, o[2] = r->grad, o[3] = w->grad, o[4] = b->grad;
                    h0->grad = r->grad = w->grad = b->grad = NULL; /* kept in o */
                    pft_tensor_release(h);
                }
                static const char *const what[5] = {"output", "dh", "dresidual", "dw", "db"};
                for (int k = 0; k < 5; k++) {
                    CHECK(same_bits(got[k], want[k]), "dropout_add_layernorm %lldx%lldx%lld mode %d, %d threads: %s differs from the three ops",
                          (long long)B, (long long)T, (long long)C, mode, threads, what[k]);
                    pft_tensor_release(got[k]), pft_tensor_release(want[k]);
                }
                CHECK(counter_after[0] == counter_after[1], "dropout_add_layernorm draws the counter as dropout does (%llu vs %llu)",
                      (unsigned long long)counter_after[1], (unsigned long long)counter_after[0]);
                pft_tensor_release(h0), pft_tensor_release(r), pft_tensor_release(w), pft_tensor_release(b), pft_tensor_release(dy);
                pft_ctx_free(c);
            }
    check_live("dropout_add_layernorm", live);
}

/* linear_gelu against linear + gelu: the output and every gradient within 1e-5 of the composed ops'
 * (relative to the largest element: the bias is added after the GEMM instead of before it, so bits
 * differ), for x a transposed view, on rows few (one block of the bias gradient's sums, one thread) and
 * many (several blocks, threaded); the same bits on 1 and 2 threads; frozen cases get no gradient (w
 * frozen, x without one, no bias; everything frozen records nothing). */
static double rel_diff(const pft_tensor *a, const pft_tensor *b) {
    if (!a || !b || pft_tensor_numel(a) != pft_tensor_numel(b)) return INFINITY;
    const int64_t n = pft_tensor_numel(a);
    float *x = elems(a), *y = elems(b);
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        d = worse(d, fabs((double)x[i] - y[i]));
        m = fabs((double)y[i]) > m ? fabs((double)y[i]) : m;
    }
    free(x), free(y);
    return d / (m > 0 ? m : 1);
}

/* attention with each sequence's first token as its only query against attention over every query whose
 * output gradient is zero but on those rows: the same output rows, gradients of q, k and v, and counter
 * after it, with dropout on; packed (an empty sequence among them) and dense with a key mask; on 1 and 2
 * threads. Then the shapes it refuses. */
static void test_attention_first(void) {
    const int64_t H = 2, C = 8, n = 4, lens[4] = {5, 1, 0, 9}, N = 15, T = 6;
    const int32_t first[4] = {0, 5, 6, 6}; /* the packed rows of each sequence's first token (the empty one's: unused) */
    const float p = 0.3f, scale = 0.4f;
    for (int threads = 1; threads <= 2; threads++)
        for (int dense = 0; dense < 2; dense++) {
            pft_ctx *c = pft_ctx_new(threads, seed);
            const int64_t B = dense ? 3 : n, rows = dense ? B * T : N;
            const int64_t kv_shape[3] = {B, T, C}, *shape = dense ? kv_shape : (const int64_t[]){N, C};
            const int nd = dense ? 3 : 2;
            float mask[3 * 6];
            for (int64_t i = 0; i < 3 * T; i++) mask[i] = i % T < T - i / T ? 0.0f : -3.4e38f; /* 6, 5 and 4 keys */
            pft_tensor *q = pft_tensor_rand(c, nd, shape, -1, 1), *k = pft_tensor_rand(c, nd, shape, -1, 1);
            pft_tensor *v = pft_tensor_rand(c, nd, shape, -1, 1), *dy1 = pft_tensor_rand(c, 2, (int64_t[]){B, C}, -1, 1);
            q->requires_grad = k->requires_grad = v->requires_grad = true;
            /* the whole attention, its output gradient dy1's rows at the first tokens and 0 elsewhere */
            pft_tensor *dy = pft_tensor_zeros(c, nd, shape);
            float *dyd = pft_tensor_data(dy), *dy1d = pft_tensor_data(dy1);
            for (int64_t b = 0; b < B; b++)
                if (dense || lens[b] > 0) memcpy(dyd + (dense ? b * T : first[b]) * C, dy1d + b * C, sizeof(float) * (size_t)C);
            c->rng_counter = 500;
            pft_tensor *full = dense ? pft_attention(q, k, v, mask, H, scale, p, true)
                                     : pft_attention_packed(q, k, v, n, lens, H, scale, p, true);
            const uint64_t counter_full = c->rng_counter;
            CHECK(full && pft_backward(full, dy) == PFT_OK, "attention (dense %d): %s", dense, pft_ctx_error(c));
            pft_tensor *want[3] = {q->grad, k->grad, v->grad};
            q->grad = k->grad = v->grad = NULL;
            /* the first queries alone */
            c->rng_counter = 500;
            pft_tensor *q1;
            if (dense) {
                pft_tensor *col = pft_tensor_narrow(q, 1, 0, 1);
                q1 = pft_tensor_reshape(col, 2, (int64_t[]){B, C});
                pft_tensor_release(col);
            } else
                q1 = pft_embedding(q, first, 1, &B);
            pft_tensor *out = pft_attention_first(q1, k, v, dense ? mask : NULL, dense ? NULL : lens, B, H, scale, p, true);
            CHECK(out && c->rng_counter == counter_full, "attention_first (dense %d): %s; counter %llu, the whole one's %llu",
                  dense, pft_ctx_error(c), (unsigned long long)c->rng_counter, (unsigned long long)counter_full);
            CHECK(out && pft_backward(out, dy1) == PFT_OK, "attention_first backward (dense %d): %s", dense, pft_ctx_error(c));
            /* the whole output's first rows (the empty sequence's row: 0) */
            double worst = 0;
            const float *fo = pft_tensor_data(full), *o = out ? pft_tensor_data(out) : NULL;
            for (int64_t b = 0; o && b < B; b++)
                for (int64_t j = 0; j < C; j++) {
                    const float w = dense || lens[b] > 0 ? fo[(dense ? b * T : first[b]) * C + j] : 0.0f;
                    worst = worse(worst, fabs((double)o[b * C + j] - w));
                }
            CHECK(o && worst < 1e-6, "attention_first (dense %d, %d threads): output rows off by %g", dense, threads, worst);
            static const char *const names[3] = {"dq", "dk", "dv"};
            pft_tensor *got[3] = {q->grad, k->grad, v->grad};
            for (int i = 0; i < 3; i++) {
                const double d = rel_diff(got[i], want[i]);
                CHECK(d < 1e-6, "attention_first (dense %d, %d threads): %s off by %g (relative)", dense, threads, names[i], d);
                pft_tensor_release(want[i]);
            }
            (void)rows;
            pft_tensor_release(q1), pft_tensor_release(out), pft_tensor_release(full), pft_tensor_release(dy);
            pft_tensor_release(q), pft_tensor_release(k), pft_tensor_release(v), pft_tensor_release(dy1);
            CHECK(c->stats.live_tensors == 0, "attention_first: %lld tensors leaked", (long long)c->stats.live_tensors);
            pft_ctx_free(c);
        }
    /* refused: q not one row per sequence, lengths that do not add up to k's rows, k and v unlike */
    int64_t live = ctx->stats.live_tensors;
    pft_tensor *kv = pft_tensor_rand(ctx, 2, (int64_t[]){N, C}, -1, 1), *q1 = pft_tensor_rand(ctx, 2, (int64_t[]){n + 1, C}, -1, 1);
    pft_tensor *q = pft_tensor_rand(ctx, 2, (int64_t[]){n, C}, -1, 1), *v2 = pft_tensor_rand(ctx, 2, (int64_t[]){N, C + 2}, -1, 1);
    CHECK(!pft_attention_first(q1, kv, kv, NULL, lens, n, H, scale, 0, false) && strstr(pft_ctx_error(ctx), "q [5, 8]"),
          "attention_first: q of 5 rows for 4 sequences refused: %s", pft_ctx_error(ctx));
    CHECK(!pft_attention_first(q, kv, kv, NULL, (const int64_t[]){5, 1, 0, 8}, n, H, scale, 0, false) &&
              strstr(pft_ctx_error(ctx), "add up to 14 rows, k has 15"),
          "attention_first: lengths short of k's rows refused: %s", pft_ctx_error(ctx));
    CHECK(!pft_attention_first(q, kv, v2, NULL, lens, n, H, scale, 0, false) && strstr(pft_ctx_error(ctx), "v [15, 10]"),
          "attention_first: v unlike k refused: %s", pft_ctx_error(ctx));
    float mask[15] = {0};
    CHECK(!pft_attention_first(q, kv, kv, mask, lens, n, H, scale, 0, false) && strstr(pft_ctx_error(ctx), "not packed"),
          "attention_first: a key mask with packed input refused: %s", pft_ctx_error(ctx));
    pft_tensor_release(kv), pft_tensor_release(q1), pft_tensor_release(q), pft_tensor_release(v2);
    check_live("attention_first errors", live);
}

/* gemm: the CPU GEMM (pft_ctx_set_cpu_gemm): "auto" runs the fused epilogue where AVX-512 runs, "openblas"
 * the GEMM and then the bias_gelu_forward pass */
static void test_linear_gelu(const char *gemm) {
    const int64_t shapes[2][4] = {{3, 7, 37, 53}, {2, 300, 96, 256}}; /* B, T, in, out */
    pft_tensor *fused_out[2][2][4] = {{{0}}}; /* [threads][shape]: y, dx, dw, db */
    pft_ctx *cs[2] = {pft_ctx_new(1, seed), pft_ctx_new(2, seed)};
    for (int i = 0; i < 2; i++) CHECK(pft_ctx_set_cpu_gemm(cs[i], gemm) == PFT_OK, "linear_gelu: GEMM %s", gemm);
    double worst[4] = {0};
    for (int threads = 1; threads <= 2; threads++)
        for (int sh = 0; sh < 2; sh++) {
            pft_ctx *c = cs[threads - 1];
            const int64_t B = shapes[sh][0], T = shapes[sh][1], in = shapes[sh][2], out = shapes[sh][3];
            pft_tensor *x0 = pft_tensor_rand(c, 3, (int64_t[]){B, in, T}, -2, 2); /* read as [B, T, in] */
            pft_tensor *w = pft_tensor_rand(c, 2, (int64_t[]){out, in}, -0.3f, 0.3f);
            pft_tensor *b = pft_tensor_rand(c, 1, (int64_t[]){out}, -1, 1);
            pft_tensor *dy = pft_tensor_rand(c, 3, (int64_t[]){B, T, out}, -1, 1);
            x0->requires_grad = w->requires_grad = b->requires_grad = true;
            pft_tensor *got[4], *want[4];
            for (int fused = 0; fused < 2; fused++) {
                pft_tensor *x = pft_tensor_transpose(x0, 1, 2), *y;
                if (fused) {
                    y = pft_linear_gelu(x, w, b);
                } else {
                    pft_tensor *h = pft_linear(x, w, b);
                    y = h ? pft_gelu(h) : NULL;
                    pft_tensor_release(h);
                }
                CHECK(y && has_shape(y, 3, (int64_t[]){B, T, out}) && pft_backward(y, dy) == PFT_OK,
                      "linear_gelu (fused %d): %s", fused, pft_ctx_error(c));
                pft_tensor **o = fused ? got : want;
                o[0] = y, o[1] = x0->grad, o[2] = w->grad, o[3] = b->grad;
                x0->grad = w->grad = b->grad = NULL; /* kept in o */
                pft_tensor_release(x);
            }
            for (int k = 0; k < 4; k++) {
                const double e = rel_diff(got[k], want[k]);
                worst[k] = worse(worst[k], e);
                /* the output and the GEMMs' inputs are each element's own bits; db's sums run in another order */
                CHECK(k < 3 ? e == 0 : e <= 1e-5, "linear_gelu %lldx%lldx%lld -> %lld, %d threads: %s off linear + gelu by %g", (long long)B,
                      (long long)T, (long long)in, (long long)out, threads, (const char *[]){"output", "dx", "dw", "db"}[k], e);
                pft_tensor_release(want[k]);
                fused_out[threads - 1][sh][k] = got[k];
            }
            /* frozen: w (and x) without a gradient, no bias; then nothing to record */
            w->requires_grad = false;
            pft_tensor *x = pft_tensor_transpose(x0, 1, 2), *y = pft_linear_gelu(x, w, NULL);
            CHECK(y && pft_backward(y, dy) == PFT_OK && x0->grad && !w->grad, "linear_gelu, w frozen: %s", pft_ctx_error(c));
            pft_tensor_release(y), pft_tensor_release(x);
            x0->requires_grad = false, b->requires_grad = true;
            x = pft_tensor_transpose(x0, 1, 2); /* a view without a node: x needs no gradient now */
            y = pft_linear_gelu(x, w, b);
            CHECK(y && pft_backward(y, dy) == PFT_OK && b->grad && !w->grad, "linear_gelu, only the bias: %s", pft_ctx_error(c));
            /* the bias gradient alone (no dh buffer) is the one computed with the rest */
            CHECK(b->grad && fused_out[threads - 1][sh][3] && !memcmp(pft_tensor_data(b->grad), pft_tensor_data(fused_out[threads - 1][sh][3]), sizeof(float) * (size_t)out),
                  "linear_gelu: the bias gradient alone has the bits it has with dx and dw");
            pft_tensor_release(y);
            b->requires_grad = false;
            y = pft_linear_gelu(x, w, b);
            CHECK(y && !y->requires_grad && !y->grad_fn, "linear_gelu: nothing trainable, nothing recorded");
            pft_tensor_release(y), pft_tensor_release(x);
            pft_tensor_release(x0), pft_tensor_release(w), pft_tensor_release(b), pft_tensor_release(dy);
        }
    printf("ops: linear_gelu vs linear + gelu (GEMM %s): max rel diff output %.3g, dx %.3g, dw %.3g, db %.3g\n", gemm,
           worst[0], worst[1], worst[2], worst[3]);
    for (int sh = 0; sh < 2; sh++)
        for (int k = 0; k < 4; k++) {
            CHECK(same_bits(fused_out[0][sh][k], fused_out[1][sh][k]), "linear_gelu shape %d: %s differs between 1 and 2 threads", sh,
                  (const char *[]){"output", "dx", "dw", "db"}[k]);
            pft_tensor_release(fused_out[0][sh][k]), pft_tensor_release(fused_out[1][sh][k]);
        }
    for (int t = 0; t < 2; t++) {
        CHECK(cs[t]->stats.live_tensors == 0, "linear_gelu: %lld tensors leaked", (long long)cs[t]->stats.live_tensors);
        pft_ctx_free(cs[t]);
    }
}

/* The bias gradient's sums in a fixed order whatever the thread count. Each column holds values near 1
 * and pairs +-2^k (k 40 to 60) that cancel: a value near 1 added while a big one is outstanding is lost
 * even in double, so the result depends on how the rows are grouped and a split that followed the threads
 * would show. w = 0 and bias = 10 make dh = dy (gelu'(10) is 1 in float). 1, 2 and 3 threads: the same
 * bits. */
static void test_linear_gelu_bias_order(void) {
    const int64_t N = 600, in = 8, out = 64;
    float *g = malloc(sizeof(float) * (size_t)(N * out));
    for (int64_t i = 0; i < N * out; i++) g[i] = (rnd(0, 1) ? 1.0f : -1.0f) * (1.0f + (float)rnd(0, 1023) / 1024.0f);
    for (int64_t col = 0; col < out; col++)
        for (int pair = 0; pair < 6; pair++) {
            const float big = ldexpf(1.0f, (int)rnd(40, 60));
            g[rnd(0, N - 1) * out + col] = big, g[rnd(0, N - 1) * out + col] = -big;
        }
    float *db[3] = {0};
    for (int threads = 1; threads <= 3; threads++) {
        pft_ctx *c = pft_ctx_new(threads, seed);
        pft_tensor *x = pft_tensor_rand(c, 2, (int64_t[]){N, in}, -1, 1), *w = pft_tensor_zeros(c, 2, (int64_t[]){out, in});
        pft_tensor *b = pft_tensor_full(c, 1, (int64_t[]){out}, 10.0f), *dy = pft_tensor_from_data(c, 2, (int64_t[]){N, out}, g);
        x->requires_grad = w->requires_grad = b->requires_grad = true;
        pft_tensor *y = pft_linear_gelu(x, w, b);
        CHECK(y && pft_backward(y, dy) == PFT_OK && b->grad, "linear_gelu, bias order: %s", pft_ctx_error(c));
        db[threads - 1] = b->grad ? elems(b->grad) : NULL;
        pft_tensor_release(y), pft_tensor_release(x), pft_tensor_release(w), pft_tensor_release(b), pft_tensor_release(dy);
        pft_ctx_free(c);
    }
    for (int t = 1; t < 3; t++)
        CHECK(db[0] && db[t] && !memcmp(db[0], db[t], sizeof(float) * (size_t)out),
              "linear_gelu: the bias gradient differs between 1 and %d threads", t + 1);
    free(db[0]), free(db[1]), free(db[2]), free(g);
}

/* === gradients ======================================================================================= */

typedef struct gcase {
    int kind, dim, keep;
    const int32_t *ids;
} gcase;

/* every f takes leaves and builds views itself: transposes, narrows and expands are part of the check */
static pft_tensor *f_add_bcast(void *u, pft_tensor **in) { return pft_add(in[0], in[1]); }

static pft_tensor *f_sub_t(void *u, pft_tensor **in) { /* [5,4]^T - [5], and the reverse order */
    pft_tensor *t = pft_tensor_transpose(in[0], 0, 1);
    pft_tensor *y = ((gcase *)u)->kind ? pft_sub(in[1], t) : pft_sub(t, in[1]);
    pft_tensor_release(t);
    return y;
}

static pft_tensor *f_mul_views(void *u, pft_tensor **in) { /* expand([4,1] -> [4,5]) * narrow([2,4,7]) */
    pft_tensor *e = pft_tensor_expand(in[0], 2, (int64_t[]){4, 5});
    pft_tensor *n = pft_tensor_narrow(in[1], 2, 1, 5);
    pft_tensor *y = pft_mul(e, n);
    pft_tensor_release(e), pft_tensor_release(n);
    return y;
}

static pft_tensor *f_mul_t(void *u, pft_tensor **in) { /* transpose([5,4]) * [2,4,5] */
    pft_tensor *t = pft_tensor_transpose(in[0], 0, 1);
    pft_tensor *y = pft_mul(t, in[1]);
    pft_tensor_release(t);
    return y;
}

static pft_tensor *f_mul_self(void *u, pft_tensor **in) { return pft_mul(in[0], in[0]); }
static pft_tensor *f_mul_scalar(void *u, pft_tensor **in) { return pft_mul(in[1], in[0]); }

static pft_tensor *f_unary(void *u, pft_tensor **in) {
    pft_tensor *t = pft_tensor_transpose(in[0], 0, 1), *y;
    switch (((gcase *)u)->kind) {
    case 0: y = pft_scale(t, -2.5f); break;
    case 1: {
        pft_tensor *s = pft_scale(t, 3.0f); /* spread x over [-3, 3]: both tails of gelu */
        y = pft_gelu(s);
        pft_tensor_release(s);
        break;
    }
    default: y = pft_tanh(t); break;
    }
    pft_tensor_release(t);
    return y;
}

static pft_tensor *f_reduce(void *u, pft_tensor **in) {
    gcase *g = u;
    pft_tensor *t = pft_tensor_transpose(in[0], 0, 2), *y; /* [5,4,3] -> [3,4,5], non-contiguous */
    switch (g->kind) {
    case 0: y = pft_sum(t, g->dim, g->keep); break;
    case 1: y = pft_mean(t, g->dim, g->keep); break;
    case 2: y = pft_sum_all(t); break;
    default: y = pft_mean_all(t); break;
    }
    pft_tensor_release(t);
    return y;
}

static pft_tensor *f_softmax(void *u, pft_tensor **in) {
    pft_tensor *t = pft_tensor_transpose(in[0], 2, 3); /* [2,2,4,3] -> [2,2,3,4] */
    pft_tensor *y = pft_softmax(t, in[1]);
    pft_tensor_release(t);
    return y;
}

static pft_tensor *f_layernorm(void *u, pft_tensor **in) {
    pft_tensor *x = pft_tensor_narrow(in[0], 2, 1, 6); /* [2,3,8] -> [2,3,6] */
    pft_tensor *y = pft_layernorm(x, in[1], in[2], 1e-5f);
    pft_tensor_release(x);
    return y;
}

static pft_tensor *f_dropout(void *u, pft_tensor **in) {
    ctx->rng_counter = 777; /* every evaluation draws the same mask */
    pft_tensor *x = pft_tensor_narrow(in[0], 1, 2, 5);
    pft_tensor *y = pft_dropout(x, 0.4f, true);
    pft_tensor_release(x);
    return y;
}

static pft_tensor *f_dropout_add_layernorm(void *u, pft_tensor **in) {
    ctx->rng_counter = 4321; /* every evaluation draws the same mask */
    pft_tensor *h = pft_tensor_narrow(in[0], 2, 1, 6); /* [2,3,8] -> [2,3,6] */
    pft_tensor *y = pft_dropout_add_layernorm(h, in[1], in[2], in[3], 0.3f, true, 1e-5f);
    pft_tensor_release(h);
    return y;
}

static pft_tensor *f_linear_gelu(void *u, pft_tensor **in) {
    pft_tensor *x = pft_tensor_narrow(in[0], 2, 1, 6); /* [2,3,8] -> [2,3,6], non-contiguous */
    pft_tensor *s = pft_scale(in[1], 2.0f);          /* spread h over both tails of gelu */
    pft_tensor *y = pft_linear_gelu(x, s, in[2]);
    pft_tensor_release(x), pft_tensor_release(s);
    return y;
}

static pft_tensor *f_embedding(void *u, pft_tensor **in) { return pft_embedding(in[0], ((gcase *)u)->ids, 2, (int64_t[]){2, 4}); }

static pft_tensor *f_cross_entropy(void *u, pft_tensor **in) {
    pft_tensor *t = pft_tensor_transpose(in[0], 0, 1); /* [7,5] -> [5,7] */
    pft_tensor *y = pft_cross_entropy(t, ((gcase *)u)->ids, 5, -1);
    pft_tensor_release(t);
    return y;
}

static pft_tensor *f_mse(void *u, pft_tensor **in) {
    pft_tensor *p = pft_tensor_narrow(in[0], 0, 1, 3);
    pft_tensor *y = pft_mse(p, in[1]);
    pft_tensor_release(p);
    return y;
}

static void gc(const char *name, gradcheck_fn f, void *u, int n, pft_tensor **in) {
    double e = gradcheck(ctx, name, f, u, n, in, seed);
    CHECK(e <= 1, "%s gradient: error %g", name, e);
}

static pft_tensor *p_(int ndim, const int64_t *shape) { return rand_param(ctx, ndim, shape); }

static void release_n(int n, pft_tensor **t) {
    for (int i = 0; i < n; i++) pft_tensor_release(t[i]);
}

static void test_grads(void) {
    int64_t live = ctx->stats.live_tensors;
    gcase g = {0};
    {
        pft_tensor *in[2] = {p_(3, (int64_t[]){3, 1, 5}), p_(2, (int64_t[]){4, 5})};
        gc("add [3,1,5] + [4,5]", f_add_bcast, NULL, 2, in);
        release_n(2, in);
        pft_tensor *in2[2] = {p_(2, (int64_t[]){3, 1}), p_(3, (int64_t[]){2, 3, 5})};
        gc("add [3,1] + [2,3,5]", f_add_bcast, NULL, 2, in2);
        release_n(2, in2);
    }
    for (g.kind = 0; g.kind < 2; g.kind++) {
        pft_tensor *in[2] = {p_(2, (int64_t[]){5, 4}), p_(1, (int64_t[]){5})};
        gc(g.kind ? "sub [5] - transposed" : "sub transposed - [5]", f_sub_t, &g, 2, in);
        release_n(2, in);
    }
    {
        pft_tensor *in[2] = {p_(2, (int64_t[]){4, 1}), p_(3, (int64_t[]){2, 4, 7})};
        gc("mul expand * narrow", f_mul_views, NULL, 2, in);
        release_n(2, in);
        pft_tensor *tin[2] = {p_(2, (int64_t[]){5, 4}), p_(3, (int64_t[]){2, 4, 5})};
        gc("mul transposed * [2,4,5]", f_mul_t, NULL, 2, tin);
        release_n(2, tin);
        pft_tensor *x[1] = {p_(2, (int64_t[]){3, 4})};
        gc("mul x * x", f_mul_self, NULL, 1, x);
        release_n(1, x);
        pft_tensor *s[2] = {p_(0, NULL), p_(2, (int64_t[]){3, 4})};
        gc("mul [3,4] * scalar", f_mul_scalar, NULL, 2, s);
        release_n(2, s);
    }
    const char *unames[3] = {"scale", "gelu", "tanh"};
    for (g.kind = 0; g.kind < 3; g.kind++) {
        pft_tensor *in[1] = {p_(2, (int64_t[]){5, 4})};
        gc(unames[g.kind], f_unary, &g, 1, in);
        release_n(1, in);
    }
    for (g.kind = 0; g.kind < 4; g.kind++)
        for (g.dim = -1; g.dim < (g.kind < 2 ? 3 : 0); g.dim++)
            for (g.keep = 0; g.keep < (g.kind < 2 ? 2 : 1); g.keep++) {
                pft_tensor *in[1] = {p_(3, (int64_t[]){5, 4, 3})};
                char name[64];
                snprintf(name, sizeof name, "%s dim %d keepdim %d", (const char *[]){"sum", "mean", "sum_all", "mean_all"}[g.kind],
                         g.dim, g.keep);
                gc(name, f_reduce, &g, 1, in);
                release_n(1, in);
            }
    {
        pft_tensor *x = p_(4, (int64_t[]){2, 2, 4, 3});
        pft_tensor *m = pft_tensor_from_data(ctx, 4, (int64_t[]){2, 1, 1, 4}, (float[]){0, -INFINITY, 0, 0, -1, 0, -INFINITY, 0.5f});
        pft_tensor *in[2] = {x, m};
        gc("softmax with mask [2,1,1,4]", f_softmax, NULL, 2, in);
        pft_tensor *in0[2] = {x, NULL};
        gc("softmax without mask", f_softmax, NULL, 1, in0);
        release_n(2, in);
    }
    for (int mode = 0; mode < 3; mode++) { /* weight and bias trainable; frozen; absent */
        pft_tensor *x = p_(3, (int64_t[]){2, 3, 8});
        pft_tensor *w = mode < 2 ? pft_tensor_rand(ctx, 1, (int64_t[]){6}, 0.5f, 1.5f) : NULL;
        pft_tensor *b = mode < 2 ? pft_tensor_rand(ctx, 1, (int64_t[]){6}, -1, 1) : NULL;
        if (mode == 0) w->requires_grad = b->requires_grad = true;
        pft_tensor *in[3] = {x, w, b};
        gc((const char *[]){"layernorm (trainable w, b)", "layernorm (frozen w, b)", "layernorm (no w, b)"}[mode], f_layernorm,
           NULL, mode < 2 ? 3 : 1, in);
        if (mode == 1) CHECK(!w->grad && !b->grad, "layernorm: frozen weight and bias get no gradient");
        release_n(3, in);
    }
    {
        pft_tensor *in[4] = {p_(3, (int64_t[]){2, 3, 8}), p_(3, (int64_t[]){2, 3, 6}), p_(1, (int64_t[]){6}), p_(1, (int64_t[]){6})};
        gc("dropout + residual + layernorm", f_dropout_add_layernorm, NULL, 4, in);
        release_n(4, in);
    }
    for (int mode = 0; mode < 3; mode++) { /* all trainable; w frozen; no bias */
        pft_tensor *in[3] = {p_(3, (int64_t[]){2, 3, 8}), p_(2, (int64_t[]){5, 6}), mode < 2 ? p_(1, (int64_t[]){5}) : NULL};
        if (mode == 1) in[1]->requires_grad = false;
        gc((const char *[]){"linear_gelu", "linear_gelu (frozen w)", "linear_gelu (no bias)"}[mode], f_linear_gelu, NULL,
           mode < 2 ? 3 : 2, in);
        if (mode == 1) CHECK(!in[1]->grad, "linear_gelu: a frozen weight gets no gradient");
        release_n(3, in);
    }
    {
        pft_tensor *in[1] = {p_(2, (int64_t[]){4, 8})};
        uint64_t keep = ctx->rng_counter;
        gc("dropout p=0.4", f_dropout, NULL, 1, in);
        ctx->rng_counter = keep;
        release_n(1, in);
    }
    {
        int32_t ids[8] = {1, 5, 1, 0, 5, 5, 2, 1};
        g.ids = ids;
        pft_tensor *in[1] = {p_(2, (int64_t[]){6, 3})};
        gc("embedding (repeated ids)", f_embedding, &g, 1, in);
        release_n(1, in);
        int32_t tg[5] = {3, -1, 0, 6, 2};
        g.ids = tg;
        pft_tensor *lg[1] = {p_(2, (int64_t[]){7, 5})};
        gc("cross_entropy (transposed, ignore_index)", f_cross_entropy, &g, 1, lg);
        release_n(1, lg);
    }
    {
        pft_tensor *pred = p_(2, (int64_t[]){5, 4}), *tgt = p_(2, (int64_t[]){3, 4});
        pft_tensor *in[2] = {pred, tgt};
        tgt->requires_grad = false;
        gc("mse (narrowed pred)", f_mse, NULL, 2, in);
        tgt->requires_grad = true; /* even when asked for, the target gets no gradient */
        pft_tensor *l = f_mse(NULL, in);
        CHECK(pft_backward(l, NULL) == PFT_OK && !tgt->grad, "mse: the target gets no gradient");
        pft_tensor_release(l);
        release_n(2, in);
    }
    check_live("gradients", live);
}

/* === bad inputs ====================================================================================== */

#define EXPECT_ERR(expr, code, text)                                                                        \
    do {                                                                                                    \
        pft_ctx_clear_error(ctx);                                                                           \
        pft_tensor *r_ = (expr);                                                                            \
        CHECK(!r_ && ctx->last_status == (code) && strstr(pft_ctx_error(ctx), (text)), "%s: expected error '%s', got '%s'", \
              #expr, (text), pft_ctx_error(ctx));                                                           \
        pft_tensor_release(r_);                                                                             \
    } while (0)

static void test_errors(void) {
    int64_t live = ctx->stats.live_tensors;
    pft_tensor *a = pft_tensor_zeros(ctx, 2, (int64_t[]){2, 3}), *b = pft_tensor_zeros(ctx, 2, (int64_t[]){4, 5});
    EXPECT_ERR(pft_add(a, b), PFT_ERR_SHAPE, "add: shapes [2, 3] and [4, 5] do not broadcast");
    EXPECT_ERR(pft_sub(a, b), PFT_ERR_SHAPE, "sub: shapes [2, 3] and [4, 5] do not broadcast");
    EXPECT_ERR(pft_mul(a, b), PFT_ERR_SHAPE, "mul: shapes [2, 3] and [4, 5] do not broadcast");
    EXPECT_ERR(pft_mse(a, b), PFT_ERR_SHAPE, "mse: shapes [2, 3] and [4, 5] differ");
    pft_tensor *a23 = pft_tensor_zeros(ctx, 2, (int64_t[]){3, 2});
    EXPECT_ERR(pft_mse(a, a23), PFT_ERR_SHAPE, "mse: shapes [2, 3] and [3, 2] differ"); /* same numel is not enough */
    pft_tensor *v4 = pft_tensor_zeros(ctx, 1, (int64_t[]){4}), *v3 = pft_tensor_zeros(ctx, 1, (int64_t[]){3});
    EXPECT_ERR(pft_layernorm(a, v4, v3, 1e-5f), PFT_ERR_SHAPE, "layernorm: weight [4] does not match input [2, 3] (expected [3])");
    EXPECT_ERR(pft_dropout_add_layernorm(a, v3, NULL, NULL, 0.1f, true, 1e-5f), PFT_ERR_SHAPE,
               "dropout_add_layernorm: input [2, 3] and residual [3] must have one shape (of at least 1 dim)");
    EXPECT_ERR(pft_dropout_add_layernorm(a, a, NULL, NULL, 1.0f, true, 1e-5f), PFT_ERR_ARG,
               "dropout_add_layernorm: dropout p = 1 must be in [0, 1)");
    EXPECT_ERR(pft_linear_gelu(a, b, NULL), PFT_ERR_SHAPE, "linear_gelu: input [2, 3] does not match weight [4, 5] (expected [..., 5])");
    pft_tensor *w43 = pft_tensor_zeros(ctx, 2, (int64_t[]){4, 3});
    EXPECT_ERR(pft_linear_gelu(a, w43, v3), PFT_ERR_SHAPE, "linear_gelu: bias [3] does not match weight [4, 3] (expected [4])");
    pft_tensor_release(w43);
    EXPECT_ERR(pft_layernorm(a, v3, v4, 1e-5f), PFT_ERR_SHAPE, "layernorm: bias [4] does not match input [2, 3] (expected [3])");
    pft_tensor *m25 = pft_tensor_zeros(ctx, 2, (int64_t[]){2, 5});
    EXPECT_ERR(pft_softmax(a, m25), PFT_ERR_SHAPE, "softmax: mask [2, 5] does not broadcast to scores [2, 3]");
    EXPECT_ERR(pft_sum(a, 2, false), PFT_ERR_ARG, "sum: dim 2 out of range for shape [2, 3]");
    EXPECT_ERR(pft_mean(a, -3, true), PFT_ERR_ARG, "mean: dim -3 out of range for shape [2, 3]");
    pft_tensor *w = pft_tensor_zeros(ctx, 2, (int64_t[]){5, 4});
    EXPECT_ERR(pft_embedding(w, (int32_t[]){0, 1, 2, 7, 4, 0}, 2, (int64_t[]){2, 3}), PFT_ERR_ARG,
               "embedding: id 7 at position [1, 0] of ids [2, 3] is out of range [0, 5) for weight [5, 4]");
    EXPECT_ERR(pft_embedding(w, (int32_t[]){-1}, 1, (int64_t[]){1}), PFT_ERR_ARG, "id -1 at position [0]");
    EXPECT_ERR(pft_embedding(v4, (int32_t[]){0}, 1, (int64_t[]){1}), PFT_ERR_SHAPE, "embedding: weight [4] is not [V, C]");
    EXPECT_ERR(pft_cross_entropy(b, (int32_t[]){0, 1, 9, 2}, 4, -100), PFT_ERR_ARG,
               "cross_entropy: target 9 at row 2 is out of range [0, 5) for logits [4, 5]");
    EXPECT_ERR(pft_cross_entropy(b, (int32_t[]){0, 1, 2}, 3, -100), PFT_ERR_SHAPE,
               "cross_entropy: logits [4, 5] and targets [3] do not match");
    EXPECT_ERR(pft_dropout(a, 1.0f, true), PFT_ERR_ARG, "dropout: p = 1 must be in [0, 1)");
    EXPECT_ERR(pft_dropout(a, -0.1f, false), PFT_ERR_ARG, "dropout: p = -0.1 must be in [0, 1)");
    EXPECT_ERR(pft_dropout(a, NAN, true), PFT_ERR_ARG, "dropout: p = nan must be in [0, 1)");

    /* allocation: a shape whose size overflows, then the testing hook on every op at every allocation */
    pft_ctx_clear_error(ctx);
    pft_tensor *huge = pft_tensor_zeros(ctx, 2, (int64_t[]){1LL << 40, 1LL << 30});
    CHECK(!huge && ctx->last_status == PFT_ERR_ALLOC && strstr(pft_ctx_error(ctx), "cannot allocate a tensor of shape [1099511627776, 1073741824]"),
          "huge allocation: %s", pft_ctx_error(ctx));
    pft_tensor_release(a), pft_tensor_release(b), pft_tensor_release(a23), pft_tensor_release(v4), pft_tensor_release(v3);
    pft_tensor_release(m25), pft_tensor_release(w);
    check_live("errors", live);
}

enum { N_ALLOC_OPS = 17 };

static pft_tensor *alloc_op(int k, pft_tensor *x, pft_tensor *x2, pft_tensor *w, pft_tensor *v) {
    static const int32_t ids[6] = {0, 1, 2, 3, 2, 1};
    pft_tensor *xt = NULL, *y = NULL;
    switch (k) {
    case 0: y = pft_add(x, x2); break;
    case 1: y = pft_sub(x, v); break;
    case 2: y = pft_mul(x, x2); break;
    case 3: y = pft_scale(x, 2); break;
    case 4: y = pft_gelu(x); break;
    case 5: y = pft_tanh(x); break;
    case 6: y = pft_sum(x, 0, false); break;
    case 7: y = pft_mean_all(x); break;
    case 8: y = pft_softmax(x, v); break;
    case 9: y = pft_layernorm(x, v, v, 1e-5f); break;
    case 10: y = pft_dropout(x, 0.5f, true); break;
    case 11: y = pft_embedding(w, ids, 1, (int64_t[]){6}); break;
    case 12: y = pft_cross_entropy(x, ids, 6, -100); break;
    case 13: y = pft_mse(x, x2); break;
    case 14: /* non-contiguous input: the contiguous copy is one more allocation to fail */
        xt = pft_tensor_transpose(w, 0, 1);
        y = xt ? pft_gelu(xt) : NULL;
        break;
    case 15:
        xt = pft_tensor_transpose(w, 0, 1);
        y = xt ? pft_layernorm(xt, NULL, NULL, 1e-5f) : NULL;
        break;
    default: /* x [6, 4] through x2's first 4 rows as the weight, bias v: x, the weight and the bias train */
        xt = pft_tensor_narrow(x2, 0, 0, 4);
        y = xt ? pft_linear_gelu(x, xt, v) : NULL;
        break;
    }
    pft_tensor_release(xt);
    return y;
}

/* ctx->alloc_fail_after = j fails the (j+1)-th allocation from now: every op, every j, forward and backward */
static void test_alloc_failures(void) {
    int64_t live = ctx->stats.live_tensors;
    pft_tensor *x = p_(2, (int64_t[]){6, 4}), *x2 = p_(2, (int64_t[]){6, 4}), *w = p_(2, (int64_t[]){4, 6}), *v = p_(1, (int64_t[]){4});
    int clean = 0, total = 0, first_fails = 0, bw_clean = 0, bw_total = 0;
    for (int k = 0; k < N_ALLOC_OPS; k++) {
        for (int j = 0; j < 6; j++) {
            int64_t before = ctx->stats.live_tensors;
            pft_ctx_clear_error(ctx);
            ctx->alloc_fail_after = j;
            pft_tensor *y = alloc_op(k, x, x2, w, v);
            ctx->alloc_fail_after = -1;
            total++;
            if (!y) {
                clean += ctx->last_status == PFT_ERR_ALLOC && strstr(pft_ctx_error(ctx), "out of memory") &&
                         ctx->stats.live_tensors == before;
                first_fails += j == 0;
                continue;
            }
            clean++;
            /* the forward fit: fail an allocation inside backward instead (gradient buffers) */
            pft_tensor *l = pft_sum_all(y);
            for (pft_tensor **p = (pft_tensor *[]){x, x2, w, v, NULL}; *p; p++) pft_tensor_free_grad(*p);
            ctx->alloc_fail_after = j;
            pft_status st = pft_backward(l, NULL);
            ctx->alloc_fail_after = -1;
            bw_total++;
            bw_clean += st == PFT_OK || (st == PFT_ERR_ALLOC && pft_ctx_error(ctx)[0]);
            for (pft_tensor **p = (pft_tensor *[]){x, x2, w, v, NULL}; *p; p++) pft_tensor_free_grad(*p);
            pft_tensor_release(l), pft_tensor_release(y);
            if (ctx->stats.live_tensors != before) printf("alloc op %d, j %d: %lld leaked\n", k, j, (long long)(ctx->stats.live_tensors - before));
        }
    }
    CHECK(clean == total, "allocation failures: %d of %d cases failed cleanly (NULL, PFT_ERR_ALLOC, a message, no leak)", clean,
          total);
    CHECK(first_fails == N_ALLOC_OPS, "every op fails when its first allocation fails (%d of %d)", first_fails, N_ALLOC_OPS);
    CHECK(bw_clean == bw_total, "backward with a failing allocation: %d of %d reported cleanly", bw_clean, bw_total);
    pft_tensor_release(x), pft_tensor_release(x2), pft_tensor_release(w), pft_tensor_release(v);
    check_live("allocation failures", live);
}

/* padding_idx: the [PAD] row gets no gradient even where it is looked up */
static void test_embedding_padded(void) {
    pft_tensor *w = rand_param(ctx, 2, (int64_t[]){5, 3});
    const int32_t ids[6] = {0, 2, 0, 4, 2, 1};
    pft_tensor *y = pft_embedding_padded(w, ids, 1, (int64_t[]){6}, 0);
    pft_tensor *s = y ? pft_sum_all(y) : NULL;
    CHECK(s && pft_backward(s, NULL) == PFT_OK, "embedding_padded backward: %s", pft_ctx_error(ctx));
    const float *g = w->grad ? pft_tensor_data(w->grad) : NULL;
    CHECK(g && g[0] == 0 && g[1] == 0 && g[2] == 0, "padding row has no gradient");
    CHECK(g && g[3] == 1 && g[6] == 2 && g[12] == 1 && g[9] == 0, "other rows: counts of their lookups");
    CHECK(y && pft_tensor_data(y)[0] == pft_tensor_data(w)[0], "forward still looks the padding row up");
    pft_tensor_release(s), pft_tensor_release(y), pft_tensor_release(w);
}

/* The buffer cache hands a freed block to a request up to a quarter smaller than it (batches of varying
 * length), the smallest that fits, and not to a smaller request (which would pin memory it does not use) */
static void test_buffer_cache_fit(void) {
    if (ctx->cache_limit == 0) { /* the sanitizer build runs without a cache */
        printf("ops: buffer cache off in this build, its checks skipped\n");
        return;
    }
    pft_ctx_cache_clear(ctx);
    ctx->cache_min = 0; /* every size, whatever GLIBC_TUNABLES says (test_buffer_cache_min) */
    pft_tensor *a = pft_tensor_empty(ctx, 2, (int64_t[]){1000, 100});
    const float *pa = pft_tensor_data(a);
    pft_tensor_release(a);
    pft_tensor *b = pft_tensor_empty(ctx, 2, (int64_t[]){800, 100}); /* a fifth smaller: reused */
    CHECK(pft_tensor_data(b) == pa, "a block 1.25x the request is reused");
    pft_tensor_release(b);
    pft_tensor *c = pft_tensor_empty(ctx, 2, (int64_t[]){790, 100}); /* just past the slack */
    CHECK(pft_tensor_data(c) != pa, "a block over 1.25x the request is not");
    pft_tensor *d = pft_tensor_empty(ctx, 2, (int64_t[]){1000, 100}); /* takes the 1000-row block back */
    CHECK(pft_tensor_data(d) == pa, "the cached block serves its own size");
    pft_tensor *e = pft_tensor_empty(ctx, 2, (int64_t[]){950, 100});
    const float *pe = pft_tensor_data(e);
    pft_tensor_release(d), pft_tensor_release(e);
    pft_tensor *f = pft_tensor_empty(ctx, 2, (int64_t[]){940, 100}); /* both fit: the smaller is taken */
    CHECK(pft_tensor_data(f) == pe, "the smallest block that fits is taken");
    pft_tensor *g = pft_tensor_empty(ctx, 2, (int64_t[]){1000, 100});
    CHECK(pft_tensor_data(g) == pa, "and the larger stays for a larger request");
    for (int64_t i = 0; i < 1000 * 100; i++) pft_tensor_data(g)[i] = 1.0f; /* the whole block is the tensor's */
    pft_tensor_release(c), pft_tensor_release(f), pft_tensor_release(g);
}

/* Where GLIBC_TUNABLES fixes malloc's mmap threshold (the pft binary's second run), blocks below it go back
 * to malloc, which reuses them for any size; larger ones (which malloc would unmap) are cached. Without the
 * variable every size is. */
static void test_buffer_cache_min(void) {
    const char *saved = getenv("GLIBC_TUNABLES");
    char *keep = saved ? strdup(saved) : NULL;
    setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=9", 1);
    pft_ctx *c = pft_ctx_new(1, seed);
    unsetenv("GLIBC_TUNABLES");
    pft_ctx *d = pft_ctx_new(1, seed);
    if (keep) setenv("GLIBC_TUNABLES", keep, 1), free(keep);
    CHECK(c && c->cache_min == 1048576 && d && d->cache_min == 0, "the threshold read back: %zu, without the variable %zu",
          c ? c->cache_min : 0, d ? d->cache_min : 1);
    if (c && c->cache_limit > 0) {
        pft_tensor_release(pft_tensor_empty(c, 2, (int64_t[]){1000, 100})); /* 400 KB */
        CHECK(c->cache_count == 0, "a block under the threshold is malloc's");
        pft_tensor_release(pft_tensor_empty(c, 2, (int64_t[]){1000, 300})); /* 1.2 MB */
        CHECK(c->cache_count == 1, "a larger one is cached");
        pft_tensor_release(pft_tensor_empty(d, 2, (int64_t[]){1000, 100}));
        CHECK(d->cache_count == 1, "without the variable, every size is");
    }
    pft_ctx_free(c), pft_ctx_free(d);
}

/* A tensor's buffer that goes back to malloc is reused by the next request of its size, with other blocks
 * allocated after it meanwhile (a step's small tensors and nodes): aligned_alloc's block did not fit its own
 * size again (glibc's memalign asks for the size plus the alignment), so the heap grew at every step and
 * fresh pages faulted in (a [4096, 384] linear ran at 0.25-0.8x of its GEMM). Not under AddressSanitizer,
 * whose quarantine delays every reuse. */
static void test_buffer_reuse(void) {
#if !defined(__SANITIZE_ADDRESS__)
    pft_ctx *c = pft_ctx_new(1, seed);
    if (!c) {
        CHECK(0, "context");
        return;
    }
    c->cache_limit = 0; /* nothing kept by the cache: every buffer goes back to malloc */
    const float *seen[8];
    pft_tensor *kept[8];
    for (int i = 0; i < 8; i++) {
        pft_tensor *a = pft_tensor_empty(c, 2, (int64_t[]){100, 250}); /* 100 KB: from the heap */
        kept[i] = pft_tensor_empty(c, 1, (int64_t[]){200});
        seen[i] = a ? pft_tensor_data(a) : NULL;
        CHECK(a && ((uintptr_t)seen[i] & 63) == 0, "64-byte aligned: %p", (const void *)seen[i]);
        pft_tensor_release(a);
    }
    int moved = 0;
    for (int i = 2; i < 8; i++) moved += seen[i] != seen[i - 1];
    CHECK(moved == 0, "the freed buffer is reused: %d moves in 6 allocations", moved);
    for (int i = 0; i < 8; i++) pft_tensor_release(kept[i]);
    pft_ctx_free(c);
#endif
}

int main(void) {
    TEST_BEGIN("ops");
    seed = test_seed();
    ctx = pft_ctx_new(1, seed);
    test_buffer_cache_fit();
    test_buffer_cache_min();
    test_buffer_reuse();
    test_binary_forward();
    test_unary_forward();
    test_reduce_forward();
    test_softmax_forward();
    test_layernorm_forward();
    test_layernorm_large_eps();
    test_lookup_loss_forward();
    test_embedding_padded();
    test_dropout();
    test_dropout_add_layernorm();
    test_linear_gelu("auto");
    test_linear_gelu("openblas");
    test_linear_gelu_bias_order();
    test_attention_first();
    test_grads();
    test_errors();
    test_alloc_failures();
    CHECK(ctx->stats.live_tensors == 0, "live tensors at exit: %lld", (long long)ctx->stats.live_tensors);
    pft_ctx_free(ctx);
    return TEST_END();
}
