/* test_backend.c - the backend table: the CPU table is complete (no NULL entry), and the entries that the
 * attention op, the optimizers, gradient clipping and the view backward reach the data through (attention
 * forward/backward, adamw_step, sgd_step, sum_squares, scale_inplace, strided_accumulate) against
 * straightforward double-precision references on small random inputs: dense layouts with masked keys and
 * padding rows, packed layouts with an empty sequence and rows in no sequence, dropout on and off,
 * gradients accumulated (+=) and skipped (NULL); the parallel attention kernels give the same bits with 1
 * and 2 threads. */
#include <stddef.h>

#include "backend.h"
#include "check.h"
#include "rng.h"

static uint64_t seed, draws;

/* uniform in [lo, hi) from the test's own stream */
static float urand(float lo, float hi) { return lo + (hi - lo) * (float)pft_rng_uniform(seed ^ 0xbac, draws++); }

static float *rand_buf(int64_t n, float lo, float hi) {
    float *b = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) b[i] = urand(lo, hi);
    return b;
}

static float *copy_buf(const float *src, int64_t n) {
    float *b = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (n > 0) memcpy(b, src, sizeof(float) * (size_t)n);
    return b;
}

/* max over i of |got[i] - want[i]| (NaN in got counts as infinite) */
static double max_err(const float *got, const double *want, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - want[i]);
        if (!(d <= m)) m = d != d ? INFINITY : d;
    }
    return m;
}

/* --- the table -------------------------------------------------------------------------------------- */

static void test_table_complete(void) {
    const pft_backend *be = &pft_backend_cpu;
    CHECK(be->name && !strcmp(be->name, "cpu") && be->device == PFT_DEVICE_CPU, "the CPU table's name and device");
    /* every member from `supports` on is a function pointer: walk them all, so that an entry added to
     * backend.h and forgotten in backend_cpu.c fails here */
    typedef void (*fn)(void);
    const size_t first = offsetof(pft_backend, supports), size = sizeof(pft_backend);
    CHECK((size - first) % sizeof(fn) == 0, "the table ends in function pointers only");
    int missing = 0, entries = 0;
    for (size_t off = first; off + sizeof(fn) <= size; off += sizeof(fn), entries++) {
        fn f;
        memcpy(&f, (const char *)be + off, sizeof f);
        if (!f) {
            missing++;
            printf("backend: the CPU table's entry %d (byte offset %zu) is NULL\n", entries, off);
        }
    }
    CHECK(missing == 0 && entries >= 31, "%d of the CPU table's %d entries are NULL", missing, entries);
    CHECK(be->attention_forward && be->attention_backward && be->adamw_step && be->sgd_step && be->sum_squares &&
              be->scale_inplace && be->strided_accumulate && be->dropout_add_layernorm_forward &&
              be->dropout_add_layernorm_backward && be->lora_down_forward && be->lora_down_backward && be->fill,
          "the new entries are filled");
    CHECK(be->sum_squares_rows, "sum_squares_rows is filled");
    CHECK(be->adamw_step_rows, "adamw_step_rows is filled");
    CHECK(be->supports("attention") && be->supports("adamw"), "the CPU backend supports every op");
    pft_ctx *ctx = pft_ctx_new(1, 1);
    pft_tensor *t = pft_tensor_zeros(ctx, 1, (int64_t[]){3});
    CHECK(pft_backend_for(t) == pft_backend_cpu_kernels(NULL), "a CPU tensor's backend is the widest CPU table");
    pft_tensor_release(t);
    pft_ctx_free(ctx);
}

/* --- strided_accumulate ----------------------------------------------------------------------------- */

static void test_strided_accumulate(void) {
    pft_ctx *ctx = pft_ctx_new(1, seed);
    const pft_backend *be = &pft_backend_cpu;
    /* dst [4, 3, 5] contiguous, read as a view of shape [5, 2, 3, 4]: dim 0 over dst's last dim, dim 1
     * broadcast (stride 0, an expand), dim 2 over dst's middle dim, dim 3 over its first dim (a permute):
     * every dst element receives 2 dy values */
    const int64_t shape[4] = {5, 2, 3, 4}, stride[4] = {1, 0, 5, 15};
    const int64_t n = 5 * 2 * 3 * 4, nd = 4 * 3 * 5;
    float *dst = rand_buf(nd, -1, 1), *dy = rand_buf(n, -1, 1);
    double *want = malloc(sizeof(double) * (size_t)nd);
    for (int64_t i = 0; i < nd; i++) want[i] = dst[i];
    for (int64_t a = 0, k = 0; a < 5; a++)
        for (int64_t b = 0; b < 2; b++)
            for (int64_t c = 0; c < 3; c++)
                for (int64_t d = 0; d < 4; d++, k++) want[a * stride[0] + c * stride[2] + d * stride[3]] += dy[k];
    be->strided_accumulate(ctx, dst, stride, dy, 4, shape);
    double e = max_err(dst, want, nd);
    CHECK(e < 1e-6, "strided_accumulate over a permuted, broadcast view: max |err| %g", e);
    /* an offset narrow view (rows 1..2 of a [4, 3]) and a scalar (ndim 0) */
    float base[12], dy2[6] = {1, 2, 3, 4, 5, 6};
    for (int i = 0; i < 12; i++) base[i] = (float)i;
    be->strided_accumulate(ctx, base + 3, (int64_t[]){3, 1}, dy2, 2, (int64_t[]){2, 3});
    bool ok = true;
    for (int i = 0; i < 12; i++) ok = ok && base[i] == (float)i + (i >= 3 && i < 9 ? dy2[i - 3] : 0.0f);
    CHECK(ok, "strided_accumulate into an offset narrow view");
    float s = 1.5f, g = 0.25f;
    be->strided_accumulate(ctx, &s, NULL, &g, 0, NULL);
    CHECK(s == 1.75f, "strided_accumulate over a scalar: %g", s);
    free(dst), free(dy), free(want);
    pft_ctx_free(ctx);
}

/* --- attention -------------------------------------------------------------------------------------- */

#define MAXSEQ 8

typedef struct layout {
    int64_t start[MAXSEQ], len[MAXSEQ], poff[MAXSEQ * 8], coff[MAXSEQ * 8];
    int64_t kv_rows; /* rows of k and v (q and out: L.rows) */
    pft_attention_layout L;
} layout;

/* n sequences of lens back to back in kv_rows >= their sum (the rest in no sequence); first: each one's
 * first token its only query, q and out one row per sequence (n rows), else q and out as k and v */
static void layout_init(layout *l, int64_t n, const int64_t *lens, int64_t H, int64_t C, int64_t kv_rows, bool first) {
    int64_t row = 0, total = 0, drawn = 0, maxlen = 0;
    for (int64_t b = 0; b < n; b++) {
        l->start[b] = row, l->len[b] = lens[b], row += lens[b];
        if (lens[b] > maxlen) maxlen = lens[b];
        for (int64_t h = 0; h < H; h++) {
            l->poff[b * H + h] = total, total += (first ? (lens[b] > 0) : lens[b]) * lens[b];
            l->coff[b * H + h] = drawn, drawn += lens[b] * lens[b];
        }
    }
    l->kv_rows = kv_rows;
    l->L = (pft_attention_layout){.n = n, .H = H, .C = C, .rows = first ? n : kv_rows, .maxlen = maxlen, .total = total,
                                  .start = l->start, .len = l->len, .poff = l->poff, .coff = l->coff, .first_query = first};
}

/* the kept-scale of element e of block bh under dropout p (1 when p is 0): e of the block's draws, those of
 * every query (coff) */
static double keep(float p, uint64_t rseed, uint64_t counter, const layout *l, int64_t bh, int64_t e) {
    if (p == 0) return 1.0;
    return pft_rng_uniform_f(rseed, counter + (uint64_t)l->coff[bh] + (uint64_t)e) < p ? 0.0 : 1.0 / (1.0 - p);
}

/* queries of sequence b, and the row of q (out, dq, dO) of its query r */
static int64_t queries(const layout *l, int64_t b) { return l->L.first_query ? (l->len[b] > 0) : l->len[b]; }
static int64_t qrow(const layout *l, int64_t b, int64_t r) { return l->L.first_query ? b : l->start[b] + r; }

/* forward in double: P (before dropout) and out; rows in no sequence are 0 */
static void attention_ref(const layout *l, const float *q, const float *k, const float *v, const float *mask,
                          float scale, float p, uint64_t rseed, uint64_t counter, double *P, double *out) {
    const pft_attention_layout *L = &l->L;
    const int64_t H = L->H, C = L->C, D = C / H;
    for (int64_t i = 0; i < L->rows * C; i++) out[i] = 0;
    for (int64_t b = 0; b < L->n; b++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t T = l->len[b], bh = b * H + h, s0 = l->start[b];
            double *Pb = P + l->poff[bh];
            for (int64_t r = 0; r < queries(l, b); r++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t c = 0; c < T; c++) {
                    double s = 0;
                    for (int64_t d = 0; d < D; d++) s += (double)q[qrow(l, b, r) * C + h * D + d] * k[(s0 + c) * C + h * D + d];
                    s = scale * s + (mask ? mask[b * T + c] : 0.0);
                    Pb[r * T + c] = s;
                    if (s > mx) mx = s;
                }
                for (int64_t c = 0; c < T; c++) sum += (Pb[r * T + c] = exp(Pb[r * T + c] - mx));
                for (int64_t c = 0; c < T; c++) Pb[r * T + c] /= sum;
                for (int64_t d = 0; d < D; d++) {
                    double o = 0;
                    for (int64_t c = 0; c < T; c++)
                        o += Pb[r * T + c] * keep(p, rseed, counter, l, bh, r * T + c) * v[(s0 + c) * C + h * D + d];
                    out[qrow(l, b, r) * C + h * D + d] = o;
                }
            }
        }
}

/* backward in double from P: adds into dq, dk, dv (each may be NULL) */
static void attention_backward_ref(const layout *l, const double *P, const float *dO, const float *q, const float *k,
                                   const float *v, float scale, float p, uint64_t rseed, uint64_t counter, double *dq,
                                   double *dk, double *dv) {
    const pft_attention_layout *L = &l->L;
    const int64_t H = L->H, C = L->C, D = C / H;
    double *dS = malloc(sizeof(double) * (size_t)(L->maxlen * L->maxlen + 1));
    for (int64_t b = 0; b < L->n; b++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t T = l->len[b], QT = queries(l, b), bh = b * H + h, s0 = l->start[b];
            const double *Pb = P + l->poff[bh];
#define KV(buf, row, d) (buf)[(s0 + (row)) * C + h * D + (d)]
#define Q(buf, r, d) (buf)[qrow(l, b, r) * C + h * D + (d)]
            if (dv)
                for (int64_t c = 0; c < T; c++)
                    for (int64_t d = 0; d < D; d++) {
                        double s = 0;
                        for (int64_t r = 0; r < QT; r++) s += Pb[r * T + c] * keep(p, rseed, counter, l, bh, r * T + c) * Q(dO, r, d);
                        KV(dv, c, d) += s;
                    }
            for (int64_t r = 0; r < QT; r++) {
                double dot = 0;
                for (int64_t c = 0; c < T; c++) {
                    double g = 0;
                    for (int64_t d = 0; d < D; d++) g += (double)Q(dO, r, d) * KV(v, c, d);
                    dS[r * T + c] = g * keep(p, rseed, counter, l, bh, r * T + c);
                    dot += dS[r * T + c] * Pb[r * T + c];
                }
                for (int64_t c = 0; c < T; c++) dS[r * T + c] = Pb[r * T + c] * (dS[r * T + c] - dot);
            }
            for (int64_t d = 0; d < D; d++) {
                for (int64_t r = 0; r < QT && dq; r++) {
                    double sq = 0;
                    for (int64_t c = 0; c < T; c++) sq += dS[r * T + c] * KV(k, c, d);
                    Q(dq, r, d) += scale * sq;
                }
                for (int64_t c = 0; c < T && dk; c++) {
                    double sk = 0;
                    for (int64_t r = 0; r < QT; r++) sk += dS[r * T + c] * Q(q, r, d);
                    KV(dk, c, d) += scale * sk;
                }
            }
#undef KV
#undef Q
        }
    free(dS);
}

/* One layout through forward and backward against the references; grads: bit 0 dq, 1 dk, 2 dv wanted. */
static void check_attention(const char *what, const layout *l, bool with_mask, float p, int grads) {
    pft_ctx *ctx = pft_ctx_new(1, seed);
    const pft_backend *be = &pft_backend_cpu;
    const pft_attention_layout *L = &l->L;
    const int64_t C = L->C, NQ = L->rows * C, NK = l->kv_rows * C, nseq = L->n;
    const float scale = 0.5f;
    const uint64_t rseed = seed + 17, counter = 1000;
    float *q = rand_buf(NQ, -1, 1), *k = rand_buf(NK, -1, 1), *v = rand_buf(NK, -1, 1), *dO = rand_buf(NQ, -1, 1);
    float *mask = NULL;
    if (with_mask) { /* dense: sequence b attends to its first T - 2b keys (at least 1); the rest is padding */
        const int64_t T = l->len[0];
        mask = malloc(sizeof(float) * (size_t)(nseq * T));
        for (int64_t b = 0; b < nseq; b++)
            for (int64_t c = 0; c < T; c++) {
                const int64_t valid = T - 2 * b > 1 ? T - 2 * b : 1;
                mask[b * T + c] = c < valid ? 0.0f : -3.4028234663852886e38f; /* finfo(float32).min, as BERT */
            }
    }
    float *out = malloc(sizeof(float) * (size_t)(NQ + 1)), *P = malloc(sizeof(float) * (size_t)(L->total + 1));
    for (int64_t i = 0; i < NQ; i++) out[i] = NAN; /* rows in no sequence must be written too */
    double *Pr = malloc(sizeof(double) * (size_t)(L->total + 1)), *outr = malloc(sizeof(double) * (size_t)(NQ + 1));
    pft_status st = be->attention_forward(ctx, out, P, q, k, v, mask, scale, p, rseed, counter, L);
    attention_ref(l, q, k, v, mask, scale, p, rseed, counter, Pr, outr);
    const double eP = max_err(P, Pr, L->total), eo = max_err(out, outr, NQ);
    CHECK(st == PFT_OK && eP < 5e-7 && eo < 1e-6, "attention_forward %s, p %g: status %d, P max |err| %g, out %g", what,
          p, st, eP, eo);
    /* backward: the gradients start random (the kernel accumulates); the unwanted ones are NULL */
    float *g[3];
    double *gr[3];
    for (int j = 0; j < 3; j++) {
        const int64_t n = j == 0 ? NQ : NK;
        g[j] = grads >> j & 1 ? rand_buf(n, -1, 1) : NULL;
        gr[j] = NULL;
        if (g[j]) {
            gr[j] = malloc(sizeof(double) * (size_t)(n + 1));
            for (int64_t i = 0; i < n; i++) gr[j][i] = g[j][i];
        }
    }
    st = be->attention_backward(ctx, g[0], g[1], g[2], NULL, P, dO, q, k, v, scale, p, rseed, counter, L);
    attention_backward_ref(l, Pr, dO, q, k, v, scale, p, rseed, counter, gr[0], gr[1], gr[2]);
    static const char *names[3] = {"dq", "dk", "dv"};
    for (int j = 0; j < 3; j++) {
        if (!g[j]) continue;
        const double e = max_err(g[j], gr[j], j == 0 ? NQ : NK);
        CHECK(st == PFT_OK && e < 1e-6, "attention_backward %s, p %g: %s max |err| %g", what, p, names[j], e);
        free(g[j]), free(gr[j]);
    }
    free(q), free(k), free(v), free(dO), free(mask), free(out), free(P), free(Pr), free(outr);
    pft_ctx_free(ctx);
}

static void test_attention_reference(void) {
    layout l;
    for (int first = 0; first <= 1; first++) {
        char what[64];
        /* dense [3, 7, 8], 2 heads: masked keys (sequences see 7, 5 and 3 keys), every row computed (padding
         * rows too) */
        layout_init(&l, 3, (int64_t[]){7, 7, 7}, 2, 8, 21, first);
        snprintf(what, sizeof what, "dense masked%s", first ? ", first queries" : "");
        for (int drop = 0; drop <= 1; drop++) check_attention(what, &l, true, drop ? 0.25f : 0.0f, 7);
        check_attention(first ? "dense, no mask, first queries" : "dense, no mask", &l, false, 0.0f, 7);
        /* packed: 4 sequences, one empty, 2 rows after the last one in no sequence, 3 heads of 2 */
        layout_init(&l, 4, (int64_t[]){5, 0, 9, 1}, 3, 6, 17, first);
        snprintf(what, sizeof what, "packed%s", first ? ", first queries" : "");
        for (int drop = 0; drop <= 1; drop++) check_attention(what, &l, false, drop ? 0.4f : 0.0f, 7);
        check_attention(what, &l, false, 0.4f, 1); /* dq only */
        check_attention(what, &l, false, 0.0f, 6); /* dk and dv */
        check_attention(what, &l, false, 0.25f, 4); /* dv only */
    }
}

/* The same bits with 1 and 2 threads: layouts big enough that the CPU kernels split their blocks. */
static void test_attention_threads(void) {
    const pft_backend *be = &pft_backend_cpu;
    layout l;
    layout_init(&l, 3, (int64_t[]){64, 40, 64}, 4, 32, 168, false);
    const pft_attention_layout *L = &l.L;
    const int64_t N = L->rows * L->C;
    float *q = rand_buf(N, -1, 1), *k = rand_buf(N, -1, 1), *v = rand_buf(N, -1, 1), *dO = rand_buf(N, -1, 1);
    for (int drop = 0; drop <= 1; drop++) {
        const float p = drop ? 0.1f : 0.0f;
        float *res[2][5];
        for (int t = 0; t < 2; t++) {
            pft_ctx *ctx = pft_ctx_new(t + 1, seed);
            float *out = malloc(sizeof(float) * (size_t)N), *P = malloc(sizeof(float) * (size_t)L->total);
            float *dq = calloc((size_t)N, sizeof(float)), *dk = calloc((size_t)N, sizeof(float)),
                  *dv = calloc((size_t)N, sizeof(float));
            pft_status s1 = be->attention_forward(ctx, out, P, q, k, v, NULL, 0.17f, p, 99, 5, L);
            pft_status s2 = be->attention_backward(ctx, dq, dk, dv, NULL, P, dO, q, k, v, 0.17f, p, 99, 5, L);
            CHECK(s1 == PFT_OK && s2 == PFT_OK, "attention with %d threads: status %d %d", t + 1, s1, s2);
            res[t][0] = out, res[t][1] = P, res[t][2] = dq, res[t][3] = dk, res[t][4] = dv;
            pft_ctx_free(ctx);
        }
        static const char *names[5] = {"out", "P", "dq", "dk", "dv"};
        for (int j = 0; j < 5; j++) {
            const int64_t n = j == 1 ? L->total : N;
            CHECK(!memcmp(res[0][j], res[1][j], sizeof(float) * (size_t)n), "attention p %g: %s differs between 1 and 2 threads",
                  p, names[j]);
            free(res[0][j]), free(res[1][j]);
        }
    }
    free(q), free(k), free(v), free(dO);
}

/* --- optimizers and clipping ------------------------------------------------------------------------ */

static void test_adamw(void) {
    pft_ctx *ctx = pft_ctx_new(1, seed);
    const int64_t n = 37;
    for (int fresh = 0; fresh <= 1; fresh++) {
        const float gs = fresh ? 1.0f : 0.37f; /* the gradient read as gs g (clipping's factor) */
        float *p = rand_buf(n, -1, 1), *g = rand_buf(n, -0.5f, 0.5f), *m = rand_buf(n, -0.1f, 0.1f), *v = rand_buf(n, 0, 0.01f);
        if (fresh) memset(m, 0, sizeof(float) * (size_t)n), memset(v, 0, sizeof(float) * (size_t)n);
        const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, decay = 0.9995f, step = fresh ? 0.01f : 0.0123f;
        const float isb = fresh ? 31.62f : 7.5f;
        double *pr = malloc(sizeof(double) * (size_t)n), *mr = malloc(sizeof(double) * (size_t)n),
               *vr = malloc(sizeof(double) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            const double gi = (double)gs * g[i];
            mr[i] = (double)b1 * m[i] + (1.0 - (double)b1) * gi;
            vr[i] = (double)b2 * v[i] + (1.0 - (double)b2) * gi * gi;
            pr[i] = (double)p[i] * decay - (double)step * mr[i] / (sqrt(vr[i]) * isb + eps);
        }
        pft_backend_cpu.adamw_step(ctx, p, m, v, g, gs, b1, b2, eps, decay, step, isb, n);
        const double ep = max_err(p, pr, n), em = max_err(m, mr, n), ev = max_err(v, vr, n);
        CHECK(ep < 1e-6 && em < 1e-7 && ev < 1e-8, "adamw_step (%s state): max |err| p %g, m %g, v %g",
              fresh ? "zero" : "random", ep, em, ev);
        free(p), free(g), free(m), free(v), free(pr), free(mr), free(vr);
    }
    pft_ctx_free(ctx);
}

/* adamw_step_rows: adamw_step's bits for p, m and v, the unmarked rows' (zero) gradients unread, over a
 * few steps: rows of 384 and of 37 straddle the chunks; m and v hold -0 and 0 in places (the signs of
 * zeros must come out as the full kernel's); without and with zero_rows (rows whose m and v are +0, some
 * of them used: those update in full); 1 and 2 threads */
static void test_adamw_rows(void) {
    const int64_t shapes[][2] = {{700, 384}, {3001, 37}};
    for (int k = 0; k < 2; k++) {
        const int64_t rows = shapes[k][0], len = shapes[k][1], n = rows * len;
        float *g = rand_buf(n, -0.5f, 0.5f), *p0 = rand_buf(n, -1, 1), *m0 = rand_buf(n, -0.1f, 0.1f),
              *v0 = rand_buf(n, 0, 0.01f);
        uint8_t *used = calloc((size_t)rows, 1), *zero = calloc((size_t)rows, 1);
        for (int64_t r = 0; r < rows; r++) {
            const uint64_t h = pft_rng_u64(seed + 2, (uint64_t)r) % 10;
            used[r] = h < 2 || h == 9 || (h == 4 && r % 3 == 0); /* a fifth nonzero, a tenth marked though zero */
            if (h >= 2 && !(h == 4 && r % 3 == 0)) memset(g + r * len, 0, sizeof(float) * (size_t)len);
            if (h == 3) /* state decayed to zero, signs mixed: not a zero row */
                for (int64_t j = 0; j < len; j++) m0[r * len + j] = j % 2 ? -0.0f : 0.0f, v0[r * len + j] = 0.0f;
            if (h == 4) /* state never touched: a zero row, a third of them with a gradient now */
                memset(m0 + r * len, 0, sizeof(float) * (size_t)len), memset(v0 + r * len, 0, sizeof(float) * (size_t)len),
                    zero[r] = 1;
        }
        for (int t = 1; t <= 4; t++) { /* threads 1, 2; zero_rows NULL, given (marks kept by the caller, as optim.c) */
            pft_ctx *ct = pft_ctx_new(1 + (t - 1) % 2, seed);
            float *pw = copy_buf(p0, n), *mw = copy_buf(m0, n), *vw = copy_buf(v0, n);
            float *pr = copy_buf(p0, n), *mr = copy_buf(m0, n), *vr = copy_buf(v0, n);
            uint8_t *marks = t > 2 ? malloc((size_t)rows) : NULL;
            if (marks) memcpy(marks, zero, (size_t)rows);
            for (int step = 1; step <= 3; step++) {
                const float gs = step == 2 ? 0.37f : 1.0f, isb = 1.0f / sqrtf(1.0f - powf(0.999f, (float)step));
                pft_backend_cpu.adamw_step(ct, pw, mw, vw, g, gs, 0.9f, 0.999f, 1e-8f, 0.9995f, 1e-3f * step, isb, n);
                pft_backend_cpu.adamw_step_rows(ct, pr, mr, vr, g, gs, 0.9f, 0.999f, 1e-8f, 0.9995f, 1e-3f * step, isb,
                                                rows, len, used, marks);
                for (int64_t r = 0; marks && r < rows; r++) marks[r] = marks[r] && !used[r];
            }
            free(marks);
            const size_t bytes = sizeof(float) * (size_t)n;
            CHECK(!memcmp(pw, pr, bytes) && !memcmp(mw, mr, bytes) && !memcmp(vw, vr, bytes),
                  "adamw_step_rows [%lld x %lld], case %d: p %s, m %s, v %s", (long long)rows, (long long)len, t,
                  memcmp(pw, pr, bytes) ? "differs" : "same", memcmp(mw, mr, bytes) ? "differs" : "same",
                  memcmp(vw, vr, bytes) ? "differs" : "same");
            free(pw), free(mw), free(vw), free(pr), free(mr), free(vr);
            pft_ctx_free(ct);
        }
        free(g), free(p0), free(m0), free(v0), free(used), free(zero);
    }
}

static void test_sgd(void) {
    pft_ctx *ctx = pft_ctx_new(1, seed);
    const int64_t n = 29;
    const float lr = 0.05f, wd = 0.01f, mu = 0.9f;
    for (int mode = 0; mode < 3; mode++) { /* 0: no momentum, 1: momentum, first step, 2: momentum, later */
        const float gs = mode == 2 ? 0.37f : 1.0f;
        float *p = rand_buf(n, -1, 1), *g = rand_buf(n, -1, 1), *buf = mode ? rand_buf(n, -1, 1) : NULL;
        double *pr = malloc(sizeof(double) * (size_t)n), *br = malloc(sizeof(double) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            double d = (double)gs * g[i] + (double)wd * p[i];
            if (mode) d = br[i] = mode == 1 ? d : (double)mu * buf[i] + d;
            pr[i] = p[i] - (double)lr * d;
        }
        pft_backend_cpu.sgd_step(ctx, p, buf, g, gs, lr, wd, mu, mode == 1, n);
        const double ep = max_err(p, pr, n), eb = mode ? max_err(buf, br, n) : 0;
        CHECK(ep < 1e-6 && eb < 1e-6, "sgd_step mode %d: max |err| p %g, buf %g", mode, ep, eb);
        free(p), free(g), free(buf), free(pr), free(br);
    }
    pft_ctx_free(ctx);
}

/* fill: every element, past chunk edges, over 1 and 2 threads; +0 through memset, -0 and others as values */
static void test_fill(void) {
    const int64_t sizes[] = {0, 1, 8191, 8192, 100003, 1 << 20};
    const float values[] = {0.0f, -0.0f, 2.5f};
    for (int t = 1; t <= 2; t++) {
        pft_ctx *ctx = pft_ctx_new(t, seed);
        for (int s = 0; s < 6; s++)
            for (int v = 0; v < 3; v++) {
                const int64_t n = sizes[s];
                float *x = rand_buf(n + 1, -3, 3);
                const float guard = x[n];
                pft_backend_cpu.fill(ctx, x, values[v], n);
                int64_t bad = 0;
                for (int64_t i = 0; i < n; i++) bad += memcmp(&x[i], &values[v], sizeof(float)) != 0;
                CHECK(bad == 0 && x[n] == guard, "fill n %lld with %g, %d threads: %lld wrong, past the end %s", (long long)n,
                      values[v], t, (long long)bad, x[n] == guard ? "kept" : "written");
                free(x);
            }
        pft_ctx_free(ctx);
    }
}

/* binary_backward's bias pattern (dst strides {0, 1}, no other): column sums over the threads by column
 * ranges, each column added in row order: the bits of the plain loop, for 1 and 2 threads, ragged widths */
static void test_bias_column_sums(void) {
    const int64_t shapes[][2] = {{1, 1}, {3, 17}, {300, 1000}, {4096, 48}, {257, 1536}};
    for (int t = 1; t <= 2; t++) {
        pft_ctx *ctx = pft_ctx_new(t, seed);
        for (int s = 0; s < 5; s++) {
            const int64_t rows = shapes[s][0], cols = shapes[s][1];
            float *dy = rand_buf(rows * cols, -1, 1), *got = rand_buf(cols + 1, -1, 1), *want = malloc(sizeof(float) * (size_t)cols);
            memcpy(want, got, sizeof(float) * (size_t)cols);
            const float guard = got[cols];
            for (int64_t r = 0; r < rows; r++)
                for (int64_t c = 0; c < cols; c++) want[c] += 0.5f * dy[r * cols + c];
            pft_backend_cpu.binary_backward(ctx, got, (const int64_t[]){0, 1}, dy, NULL, NULL, 0.5f, 2,
                                            (const int64_t[]){rows, cols});
            CHECK(!memcmp(got, want, sizeof(float) * (size_t)cols) && got[cols] == guard,
                  "bias column sums [%lld, %lld], %d threads: not the row-order bits", (long long)rows, (long long)cols, t);
            free(dy), free(got), free(want);
        }
        pft_ctx_free(ctx);
    }
}

/* dropout's mask is pft_rng_uniform_f(seed, counter + i) < p, element by element, whatever the kernels
 * compute it with (the keyed draws and the integer threshold): checked against that definition on 1 and 2
 * threads, for probabilities whose p 2^24 is and is not a whole number */
static void test_dropout_definition(void) {
    const float ps[] = {0.1f, 0.25f, 0.5f, 1e-7f, 0.9999999f};
    const int64_t n = 70001;
    float *x = rand_buf(n, 0.5f, 1.5f), *y = malloc(sizeof(float) * (size_t)n);
    for (int t = 1; t <= 2; t++) {
        pft_ctx *ctx = pft_ctx_new(t, seed);
        for (int k = 0; k < 5; k++) {
            const float p = ps[k], keep_scale = 1.0f / (1.0f - p);
            pft_backend_cpu.dropout_forward(ctx, y, x, p, 1234 + k, 777, n);
            int64_t wrong = 0;
            for (int64_t i = 0; i < n; i++) {
                const float want = pft_rng_uniform_f(1234 + k, 777 + (uint64_t)i) < p ? 0.0f : x[i] * keep_scale;
                wrong += memcmp(&y[i], &want, sizeof want) != 0;
            }
            CHECK(wrong == 0, "dropout p %g, %d threads: %lld elements off the definition", p, t, (long long)wrong);
        }
        pft_ctx_free(ctx);
    }
    int64_t wrong = 0; /* the threshold alone, on draws near it */
    for (int k = 0; k < 5; k++)
        for (int64_t d = -3; d <= 3; d++) {
            const uint64_t thr = pft_rng_drop_threshold(ps[k]), x24 = (uint64_t)((int64_t)thr + d) & 0xffffff;
            wrong += ((float)x24 * (1.0f / 16777216.0f) < ps[k]) != (x24 < thr);
        }
    CHECK(wrong == 0, "dropout threshold: %lld draws decided otherwise than u < p", (long long)wrong);
    free(x), free(y);
}

static void test_clip_kernels(void) {
    pft_ctx *ctx = pft_ctx_new(1, seed);
    const int64_t n = 1001;
    float *x = rand_buf(n, -3, 3);
    double want = 0;
    for (int64_t i = 0; i < n; i++) want += (double)x[i] * (double)x[i];
    const double got = pft_backend_cpu.sum_squares(ctx, x, n);
    CHECK(fabs(got - want) <= 1e-12 * want, "sum_squares: %.17g, want %.17g", got, want);
    CHECK(pft_backend_cpu.sum_squares(ctx, x, 0) == 0, "sum_squares of nothing is 0");
    /* many chunks (over the threads, partial sums): near the serial sum, and the same bits for 1, 2, 3 threads */
    const int64_t nbig[] = {8192, 8193, 100003, 1 << 20};
    for (int k = 0; k < 4; k++) {
        float *xb = rand_buf(nbig[k], -3, 3);
        double serial = 0;
        for (int64_t i = 0; i < nbig[k]; i++) serial += (double)xb[i] * (double)xb[i];
        double by_threads[3];
        for (int t = 1; t <= 3; t++) {
            pft_ctx *ct = pft_ctx_new(t, seed);
            by_threads[t - 1] = pft_backend_cpu.sum_squares(ct, xb, nbig[k]);
            pft_ctx_free(ct);
        }
        CHECK(fabs(by_threads[0] - serial) <= 1e-12 * serial, "sum_squares n %lld: %.17g, want %.17g",
              (long long)nbig[k], by_threads[0], serial);
        CHECK(by_threads[0] == by_threads[1] && by_threads[0] == by_threads[2],
              "sum_squares n %lld: 1, 2, 3 threads give %.17g %.17g %.17g", (long long)nbig[k], by_threads[0],
              by_threads[1], by_threads[2]);
        free(xb);
    }
    /* sum_squares_rows: the bits of sum_squares over the whole matrix, zero rows read or not (rows of 384 and
     * of 37 elements straddle the chunks and the lanes; marked rows that are zero count as well). Magnitudes
     * over 2^-12 .. 2^12, so that sums in another order (another lane, chunk or tree) round differently. */
    const int64_t shapes[][2] = {{700, 384}, {3001, 37}, {5, 16}};
    for (int k = 0; k < 3; k++) {
        const int64_t rows = shapes[k][0], len = shapes[k][1];
        float *g = rand_buf(rows * len, -3, 3);
        for (int64_t i = 0; i < rows * len; i++) g[i] = ldexpf(g[i], (int)(pft_rng_u64(seed + 1, (uint64_t)i) % 25) - 12);
        uint8_t *used = calloc((size_t)rows, 1);
        for (int64_t r = 0; r < rows; r++) {
            const uint64_t h = pft_rng_u64(seed, (uint64_t)r) % 10;
            used[r] = h < 2 || h == 9; /* rows nonzero in a fifth, and a tenth marked though zero */
            if (h >= 2) memset(g + r * len, 0, sizeof(float) * (size_t)len);
        }
        for (int t = 1; t <= 2; t++) {
            pft_ctx *ct = pft_ctx_new(t, seed);
            const double whole = pft_backend_cpu.sum_squares(ct, g, rows * len);
            const double marked = pft_backend_cpu.sum_squares_rows(ct, g, rows, len, used);
            CHECK(whole == marked && whole > 0, "sum_squares_rows [%lld x %lld], %d threads: %.17g, whole %.17g",
                  (long long)rows, (long long)len, t, marked, whole);
            pft_ctx_free(ct);
        }
        free(g), free(used);
    }
    float *y = copy_buf(x, n);
    const float s = 0.3721f;
    pft_backend_cpu.scale_inplace(ctx, y, s, n);
    bool exact = true;
    for (int64_t i = 0; i < n; i++) exact = exact && y[i] == (float)((double)x[i] * (double)s); /* one rounding */
    CHECK(exact, "scale_inplace: each element x s, rounded once");
    free(x), free(y);
    pft_ctx_free(ctx);
}

/* LoRA's down projection against a double reference (forward xa, backward dx and da, with dropout: the
 * mask as dropout_forward draws it), and the same bits on 1, 2 and 3 threads; N not a multiple of the
 * backward's row blocks */
static void test_lora_down(void) {
    const int64_t N = 203, in = 45, r = 3;
    const float p = 0.25f, ks = 1.0f / (1.0f - p);
    const uint64_t counter = 777;
    float *x = rand_buf(N * in, -2, 2), *a = rand_buf(r * in, -1, 1), *dxa = rand_buf(N * r, -1, 1);
    float *dx0 = rand_buf(N * in, -1, 1), *da0 = rand_buf(r * in, -1, 1);
    double *xa_ref = calloc((size_t)(N * r), sizeof(double)), *dx_ref = calloc((size_t)(N * in), sizeof(double));
    double *da_ref = calloc((size_t)(r * in), sizeof(double));
    for (int64_t e = 0; e < N * in; e++) dx_ref[e] = dx0[e];
    for (int64_t e = 0; e < r * in; e++) da_ref[e] = da0[e];
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < in; k++) {
            const bool kept = !(pft_rng_uniform_f(seed, counter + (uint64_t)(n * in + k)) < p);
            const double d = kept ? (double)(x[n * in + k] * ks) : 0.0;
            for (int64_t j = 0; j < r; j++) {
                xa_ref[n * r + j] += d * a[j * in + k];
                da_ref[j * in + k] += (double)dxa[n * r + j] * d;
                if (kept) dx_ref[n * in + k] += (double)dxa[n * r + j] * a[j * in + k] * ks;
            }
        }
    float *got[3][3];
    for (int t = 1; t <= 3; t++) {
        pft_ctx *ctx = pft_ctx_new(t, seed);
        float *xa = malloc(sizeof(float) * (size_t)(N * r)), *dx = copy_buf(dx0, N * in), *da = copy_buf(da0, r * in);
        CHECK(pft_backend_cpu.lora_down_forward(ctx, xa, x, a, N, in, r, p, seed, counter) == PFT_OK &&
                  pft_backend_cpu.lora_down_backward(ctx, dx, da, x, dxa, a, N, in, r, p, seed, counter) == PFT_OK,
              "lora_down: %s", pft_ctx_error(ctx));
        got[t - 1][0] = xa, got[t - 1][1] = dx, got[t - 1][2] = da;
        pft_ctx_free(ctx);
    }
    const double exa = max_err(got[0][0], xa_ref, N * r), edx = max_err(got[0][1], dx_ref, N * in),
                 eda = max_err(got[0][2], da_ref, r * in);
    CHECK(exa < 1e-5 && edx < 1e-5 && eda < 1e-4, "lora_down vs double: xa %g, dx %g, da %g", exa, edx, eda);
    const int64_t len[3] = {N * r, N * in, r * in};
    for (int t = 1; t < 3; t++)
        for (int o = 0; o < 3; o++)
            CHECK(!memcmp(got[0][o], got[t][o], sizeof(float) * (size_t)len[o]), "lora_down output %d: %d threads differ from 1", o,
                  t + 1);
    for (int t = 0; t < 3; t++)
        for (int o = 0; o < 3; o++) free(got[t][o]);
    free(x), free(a), free(dxa), free(dx0), free(da0), free(xa_ref), free(dx_ref), free(da_ref);
}

int main(void) {
    TEST_BEGIN("backend");
    seed = test_seed();
    test_table_complete();
    test_strided_accumulate();
    test_attention_reference();
    test_attention_threads();
    test_adamw();
    test_adamw_rows();
    test_sgd();
    test_clip_kernels();
    test_fill();
    test_bias_column_sums();
    test_dropout_definition();
    test_lora_down();
    return TEST_END();
}
