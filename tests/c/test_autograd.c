/* test_autograd.c - the tape itself: gradcheck catches a wrong backward, backward's error cases, no-grad,
 * gradient accumulation, and the frozen-prefix test (frozen bottom layers cost no backward kernels and no
 * weight-gradient GEMMs, counted exactly). Every test ends with no live tensors. */
#include "check.h"
#include "backend.h"
#include "optim.h"

static pft_ctx *ctx;
static uint64_t seed;

static void check_live(const char *what) {
    CHECK(ctx->stats.live_tensors == 0, "%s: %lld tensors still alive", what, (long long)ctx->stats.live_tensors);
}

/* --- (1) gradcheck must be able to fail ---------------------------------------------------------------
 * y = x * x recorded by hand, once with the right backward (2 x dy) and once with a wrong one (x dy). */
static pft_status square_backward_right(pft_ctx *c, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dx = pft_node_input_grad(c, node, 0);
    if (!dx) return PFT_OK;
    const float *x = pft_tensor_data(node->inputs[0]), *g = pft_tensor_data(dout);
    for (int64_t i = 0, n = pft_tensor_numel(dx); i < n; i++) pft_tensor_data(dx)[i] += 2.0f * x[i] * g[i];
    return PFT_OK;
}

static pft_status square_backward_wrong(pft_ctx *c, pft_node *node, const pft_tensor *dout) {
    pft_tensor *dx = pft_node_input_grad(c, node, 0);
    if (!dx) return PFT_OK;
    const float *x = pft_tensor_data(node->inputs[0]), *g = pft_tensor_data(dout);
    for (int64_t i = 0, n = pft_tensor_numel(dx); i < n; i++) pft_tensor_data(dx)[i] += x[i] * g[i]; /* missing the 2 */
    return PFT_OK;
}

static pft_tensor *square(pft_tensor *x, pft_backward_fn bw) { /* x contiguous */
    pft_tensor *y = pft_tensor_empty(ctx, x->ndim, x->shape);
    for (int64_t i = 0, n = pft_tensor_numel(x); i < n; i++) pft_tensor_data(y)[i] = pft_tensor_data(x)[i] * pft_tensor_data(x)[i];
    if (pft_autograd_needed(ctx, 1, &x) && !pft_autograd_record(ctx, y, "square", bw, 1, &x)) {
        pft_tensor_release(y);
        return NULL;
    }
    return y;
}

typedef struct square_case {
    pft_backward_fn backward;
} square_case;

static pft_tensor *f_square(void *u, pft_tensor **in) { return square(in[0], ((square_case *)u)->backward); }

static void test_gradcheck_can_fail(void) {
    pft_tensor *x = rand_param(ctx, 2, (int64_t[]){3, 4});
    square_case rc = {square_backward_right}, wc = {square_backward_wrong};
    double right = gradcheck(ctx, "square (right backward)", f_square, &rc, 1, &x, seed);
    printf("autograd: the next gradcheck is expected to report a mismatch\n");
    double wrong = gradcheck(ctx, "square (wrong backward)", f_square, &wc, 1, &x, seed);
    CHECK(right <= 1, "gradcheck passes the right backward: error %g", right);
    CHECK(wrong > 1, "gradcheck catches the wrong backward: error %g", wrong);
    pft_tensor_release(x);
    check_live("gradcheck can fail");
}

/* --- (2)-(4) backward and record error cases --------------------------------------------------------- */

static void test_backward_errors(void) {
    pft_tensor *x = rand_param(ctx, 2, (int64_t[]){2, 3});
    pft_tensor *y = pft_scale(x, 2.0f);
    pft_ctx_clear_error(ctx);
    pft_status st = pft_backward(y, NULL);
    CHECK(st == PFT_ERR_SHAPE && strstr(pft_ctx_error(ctx), "backward: the output has shape [2, 3]") &&
              strstr(pft_ctx_error(ctx), "scalar"),
          "backward of a non-scalar without a gradient: status %d, '%s'", st, pft_ctx_error(ctx));

    pft_tensor *xx = pft_mul(x, x), *loss = pft_sum_all(xx);
    CHECK(pft_backward(loss, NULL) == PFT_OK, "first backward: %s", pft_ctx_error(ctx));
    pft_ctx_clear_error(ctx);
    st = pft_backward(loss, NULL);
    CHECK(st == PFT_ERR_STATE && strstr(pft_ctx_error(ctx), "already released"),
          "second backward over a released graph: status %d, '%s'", st, pft_ctx_error(ctx));

    pft_tensor *z = pft_tensor_zeros(ctx, 1, (int64_t[]){3});
    pft_ctx_clear_error(ctx);
    pft_node *node = pft_autograd_record(ctx, z, "nobackward", NULL, 1, &x);
    CHECK(!node && ctx->last_status != PFT_OK && strstr(pft_ctx_error(ctx), "nobackward: op has no backward") && !z->grad_fn,
          "recording an op without a backward: '%s'", pft_ctx_error(ctx));

    pft_tensor_release(z), pft_tensor_release(loss), pft_tensor_release(xx), pft_tensor_release(y), pft_tensor_release(x);
    check_live("backward errors");
}

/* --- (5) no-grad scope ------------------------------------------------------------------------------- */

static void test_no_grad(void) {
    pft_tensor *x = rand_param(ctx, 2, (int64_t[]){4, 6}), *w = rand_param(ctx, 2, (int64_t[]){5, 6});
    pft_tensor *v = rand_param(ctx, 1, (int64_t[]){6});
    pft_ctx_no_grad_enter(ctx);
    pft_ctx_no_grad_enter(ctx); /* scopes nest */
    pft_ctx_no_grad_leave(ctx);
    pft_tensor *ys[] = {pft_add(x, v),         pft_mul(x, x),           pft_gelu(x),   pft_tanh(x),
                        pft_linear(x, w, NULL), pft_softmax(x, NULL),    pft_sum(x, 1, false), pft_layernorm(x, v, v, 1e-5f),
                        pft_dropout(x, 0.5f, true), pft_tensor_transpose(x, 0, 1), pft_mse(x, x)};
    pft_ctx_no_grad_leave(ctx);
    int recorded = 0;
    for (size_t i = 0; i < sizeof ys / sizeof *ys; i++) {
        recorded += !ys[i] || ys[i]->grad_fn || ys[i]->requires_grad;
        pft_tensor_release(ys[i]);
    }
    CHECK(recorded == 0, "no-grad: %d ops recorded (or failed)", recorded);
    pft_tensor *y = pft_gelu(x);
    CHECK(y->grad_fn && y->requires_grad, "after the scope, ops record again");
    pft_tensor_release(y), pft_tensor_release(x), pft_tensor_release(w), pft_tensor_release(v);
    check_live("no-grad");
}

/* --- (6) accumulation -------------------------------------------------------------------------------- */

static void test_accumulation(void) {
    pft_tensor *x = rand_param(ctx, 1, (int64_t[]){5});
    for (int pass = 1; pass <= 2; pass++) {
        pft_tensor *y = pft_scale(x, 3.0f), *l = pft_sum_all(y);
        CHECK(pft_backward(l, NULL) == PFT_OK, "backward %d: %s", pass, pft_ctx_error(ctx));
        bool ok = x->grad != NULL;
        for (int i = 0; ok && i < 5; i++) ok = pft_tensor_data(x->grad)[i] == 3.0f * pass;
        CHECK(ok, "after %d backward passes the gradient is %d x 3", pass, pass);
        pft_tensor_release(l), pft_tensor_release(y);
    }
    float *buf = pft_tensor_data(x->grad);
    pft_tensor_zero_grad(x);
    CHECK(pft_tensor_grad_is_zero(x), "after zero_grad the gradient counts as zero");
    bool zero = pft_tensor_data(pft_tensor_grad(x)) == buf;
    for (int i = 0; zero && i < 5; i++) zero = buf[i] == 0.0f;
    CHECK(zero, "zero_grad zeroes the gradient (read through pft_tensor_grad) and keeps its buffer");
    CHECK(!pft_tensor_grad_is_zero(x), "once read, the zeros are written");
    pft_tensor_free_grad(x);
    CHECK(!x->grad, "free_grad drops the gradient");
    pft_tensor_release(x);
    check_live("accumulation");
}

/* --- (6b) gradient buffers a GEMM writes whole -------------------------------------------------------- */

/* x (a leaf) and h = 2x (a node's output) each feed linear, linear_gelu, matmul, gelu, attention and dropout
 * + add + layernorm: the first backward to reach a buffer may write it without zero-filling it first (a GEMM
 * with beta 0), every later one adds to it. Before backward, the buffer cache is filled with NaN buffers of every gradient's size, so
 * a buffer that is taken fresh and not written whole, or written over instead of added to, shows. */
typedef struct shared_case {
    int64_t rows, in, out;
} shared_case;

static void poison_cache(int64_t a, int64_t b) {
    pft_tensor *t[4];
    for (int i = 0; i < 4; i++) t[i] = pft_tensor_full(ctx, 2, (int64_t[]){a, b}, NAN);
    for (int i = 0; i < 4; i++) pft_tensor_release(t[i]);
}

static pft_tensor *f_shared(void *u, pft_tensor **in) {
    const shared_case *c = u;
    pft_tensor *x = in[0], *w1 = in[1], *w2 = in[2], *wm = in[3], *b2 = in[4];
    pft_tensor *h = pft_scale(x, 2.0f), *sum = NULL;
    for (int k = 0; k < 2; k++) {
        pft_tensor *v = k ? h : x;
        pft_tensor *parts[6] = {pft_linear(v, w1, NULL), pft_linear_gelu(v, w2, b2), pft_matmul(v, wm), NULL, NULL, NULL};
        pft_tensor *g = pft_gelu(v);
        parts[3] = pft_linear(g, w1, NULL);
        pft_tensor_release(g);
        /* attention writes its q, k, v gradients block by block (two sequences cover the rows) */
        pft_tensor *att = pft_attention_packed(v, k ? x : h, k ? h : x, 2, (const int64_t[]){2, c->rows - 2}, 1, 0.5f, 0.0f, false);
        parts[4] = pft_linear(att, w1, NULL);
        pft_tensor_release(att);
        /* dropout + add + layernorm writes both input gradients (x as both inputs, then 2x and x) */
        pft_tensor *ln = pft_dropout_add_layernorm(v, x, NULL, NULL, 0.0f, false, 1e-5f);
        parts[5] = pft_linear(ln, w1, NULL);
        pft_tensor_release(ln);
        for (int i = 0; i < 6; i++) {
            pft_tensor *s = sum ? pft_add(sum, parts[i]) : parts[i];
            if (sum) pft_tensor_release(sum), pft_tensor_release(parts[i]);
            sum = s;
        }
    }
    pft_tensor_release(h);
    poison_cache(c->rows, c->in);
    poison_cache(c->rows, c->out);
    poison_cache(c->out, c->in);
    return sum;
}

/* one tensor as two inputs of one op that writes both gradients, that op the only one to reach the buffer:
 * attention with x as q, k and v, dropout + add + layernorm with x as h and as the residual */
static pft_tensor *f_self(void *u, pft_tensor **in) {
    const shared_case *c = u;
    pft_tensor *x = in[0], *mid = c->out == 0 ? pft_attention_packed(x, x, x, 2, (const int64_t[]){2, c->rows - 2}, 1, 0.5f, 0.0f, false)
                                            : pft_dropout_add_layernorm(x, x, NULL, NULL, 0.0f, false, 1e-5f);
    pft_tensor *y = pft_scale(mid, 3.0f);
    pft_tensor_release(mid);
    poison_cache(c->rows, c->in);
    return y;
}

static void test_gradients_written_whole(void) {
    for (int op = 0; op < 2; op++) {
        shared_case c = {5, 7, op};
        pft_tensor *x = rand_param(ctx, 2, (int64_t[]){c.rows, c.in});
        double worst = gradcheck(ctx, op ? "x as h and residual" : "x as q, k, v", f_self, &c, 1, &x, seed);
        CHECK(worst <= 1, "%s, its gradient new and written by that op alone: error %g",
              op ? "dropout + add + layernorm of x and x" : "attention of x, x, x", worst);
        pft_tensor_release(x);
    }
    shared_case c = {5, 7, 6};
    pft_tensor *in[5] = {rand_param(ctx, 2, (int64_t[]){c.rows, c.in}), rand_param(ctx, 2, (int64_t[]){c.out, c.in}),
                         rand_param(ctx, 2, (int64_t[]){c.out, c.in}), rand_param(ctx, 2, (int64_t[]){c.in, c.out}),
                         rand_param(ctx, 1, (int64_t[]){c.out})};
    double worst = gradcheck(ctx, "shared inputs", f_shared, &c, 5, in, seed);
    CHECK(worst <= 1, "a gradient buffer shared by GEMM and other backwards, over a dirty buffer cache: error %g", worst);
    for (int i = 0; i < 5; i++) pft_tensor_release(in[i]);
    check_live("gradients written whole");
}

/* zero_grad only marks a gradient: the next backward writes it (beta 0 GEMMs, zero-filled kernels) instead
 * of adding to the stale numbers still in the buffer, which are poisoned here with NaN. w feeds a linear (a
 * GEMM writes dw) twice, b a bias add (its kernel adds into a zero-filled buffer). */
static void test_zeroed_gradients_rewritten(void) {
    pft_tensor *x = rand_param(ctx, 2, (int64_t[]){4, 5}), *w = rand_param(ctx, 2, (int64_t[]){3, 5});
    pft_tensor *b = rand_param(ctx, 1, (int64_t[]){3});
    float first[2][15];
    bool same = true;
    for (int pass = 0; pass < 3; pass++) {
        pft_tensor *y1 = pft_linear(x, w, b), *y2 = pft_linear(x, w, NULL), *y = pft_add(y1, y2), *l = pft_sum_all(y);
        CHECK(pft_backward(l, NULL) == PFT_OK, "backward %d: %s", pass, pft_ctx_error(ctx));
        for (int k = 0; k < 2; k++) {
            pft_tensor *g = pft_tensor_grad(k ? b : w);
            int64_t n = pft_tensor_numel(g);
            if (pass == 0) memcpy(first[k], pft_tensor_data(g), sizeof(float) * (size_t)n);
            else same = same && !memcmp(first[k], pft_tensor_data(g), sizeof(float) * (size_t)n);
            pft_tensor_fill_(g, NAN); /* what zero_grad must not let through */
            pft_tensor_zero_grad(k ? b : w);
        }
        if (pass == 1) CHECK(pft_grad_norm(2, (pft_tensor *const[]){w, b}) == 0.0, "zeroed gradients have norm 0");
        pft_tensor_release(l), pft_tensor_release(y), pft_tensor_release(y1), pft_tensor_release(y2);
    }
    CHECK(same, "after zero_grad, backward gives the first pass's gradients, bit for bit");
    pft_tensor_release(x), pft_tensor_release(w), pft_tensor_release(b);
    check_live("zeroed gradients");
}

/* --- (6b) an embedding's gradient keeps which rows may be nonzero -------------------------------------
 * Marked: exactly the rows of the ids since the gradient was last zero; zeroing clears those rows; the norm
 * has the bits of the whole sum; any other writer, or a holder of the buffer who may write it (a Lua
 * t:grad() tensor), forgets them. */

static bool marks_are(const pft_tensor *w, const int32_t *ids, int n) {
    const uint8_t *marks = pft_tensor_grad_rows(w);
    if (!marks) return false;
    for (int64_t r = 0; r < w->shape[0]; r++) {
        bool want = false;
        for (int k = 0; k < n; k++) want = want || ids[k] == r;
        if (!marks[r] != !want) return false;
    }
    return true;
}

/* the rows of ids looked up in w, through a linear map, summed: dW's row r gets (count of r in ids) v */
static void embed_backward(pft_tensor *w, pft_tensor *map, const int32_t *ids, int n, bool tied) {
    pft_tensor *e = pft_embedding(w, ids, 1, (int64_t[]){n}), *y = pft_linear(e, map, NULL), *l = pft_sum_all(y);
    pft_tensor *yt = tied ? pft_linear(map, w, NULL) : NULL, *lt = tied ? pft_sum_all(yt) : NULL; /* w as a weight */
    pft_tensor *total = tied ? pft_add(l, lt) : pft_tensor_retain(l);
    CHECK(total && pft_backward(total, NULL) == PFT_OK, "embedding backward: %s", pft_ctx_error(ctx));
    pft_tensor_release(total), pft_tensor_release(lt), pft_tensor_release(yt);
    pft_tensor_release(l), pft_tensor_release(y), pft_tensor_release(e);
}

static bool norm_is_whole_sum(pft_tensor *w) {
    const double whole = sqrt(pft_backend_for(w->grad)->sum_squares(ctx, pft_tensor_data(w->grad), pft_tensor_numel(w->grad)));
    return pft_grad_norm(1, &w) == whole && whole > 0;
}

static void test_embedding_grad_rows(void) {
    enum { V = 600, C = 37 }; /* three of sum_squares' chunks, rows straddling them */
    pft_tensor *w = rand_param(ctx, 2, (int64_t[]){V, C}), *map = rand_param(ctx, 2, (int64_t[]){3, C});
    const int32_t a[] = {3, 221, 3, 599}, b[] = {100, 221}, ab[] = {3, 100, 221, 599};
    embed_backward(w, map, a, 4, false);
    CHECK(marks_are(w, a, 4), "after one backward the rows of its ids are marked");
    CHECK(norm_is_whole_sum(w), "the norm from the marked rows has the whole sum's bits");
    pft_tensor_zero_grad(w);
    embed_backward(w, map, b, 2, false);
    CHECK(marks_are(w, b, 2), "zero_grad, then a backward: the new ids' rows alone");
    const float *g = pft_tensor_data(w->grad);
    bool cleared = true;
    for (int c = 0; c < C; c++) cleared = cleared && g[3 * C + c] == 0.0f && g[599 * C + c] == 0.0f;
    CHECK(cleared, "rows marked before zero_grad are zero after it");
    float once[C];
    memcpy(once, g + 100 * C, sizeof once);
    embed_backward(w, map, a, 4, false); /* accumulated, not zeroed */
    CHECK(marks_are(w, ab, 4), "accumulating: the union of the rows");
    bool doubled = true;
    for (int c = 0; c < C; c++) doubled = doubled && pft_tensor_data(w->grad)[221 * C + c] == 2.0f * pft_tensor_data(w->grad)[100 * C + c];
    CHECK(doubled && !memcmp(once, pft_tensor_data(w->grad) + 100 * C, sizeof once), "accumulating: the values add");
    CHECK(norm_is_whole_sum(w), "the norm over accumulated rows");
    pft_tensor *held = pft_tensor_retain(pft_tensor_grad(w)); /* as Lua's t:grad() holds it */
    CHECK(!pft_tensor_grad_rows(w), "a gradient held elsewhere: its rows are not known");
    pft_tensor_fill_(held, 1.0f); /* what such a holder may do */
    CHECK(norm_is_whole_sum(w), "the norm of a held gradient reads every row");
    pft_tensor_zero_grad(w);
    embed_backward(w, map, b, 2, false);
    CHECK(!pft_tensor_grad_rows(w) && pft_tensor_data(w->grad)[0] == 0.0f, "held: zeroed whole, rows untracked");
    pft_tensor_fill_(held, 1.0f); /* written again through the old handle */
    pft_tensor_zero_grad(w);
    embed_backward(w, map, b, 2, false);
    CHECK(pft_tensor_data(w->grad)[0] == 0.0f, "a write through a held buffer is zeroed by the next zero_grad");
    pft_tensor_release(held);
    pft_tensor_zero_grad(w);
    embed_backward(w, map, b, 2, false);
    CHECK(marks_are(w, b, 2), "let go and zeroed whole: the rows are known again");
    pft_tensor_zero_grad(w);
    embed_backward(w, map, b, 2, true);
    CHECK(!pft_tensor_grad_rows(w), "another op adding to every row: the rows are forgotten");
    CHECK(norm_is_whole_sum(w), "the norm without marks");
    pft_tensor_release(w), pft_tensor_release(map);
    check_live("embedding gradient rows");
}

/* --- (7) the frozen prefix --------------------------------------------------------------------------- */

enum { ROWS = 8, LAYERS = 4 };
static const int64_t dims[LAYERS + 1] = {6, 10, 12, 9, 4}; /* layer l maps dims[l] -> dims[l+1] */

typedef struct mlp_run {
    int64_t kernels, flops;
    float *grads[LAYERS][2]; /* copies of dW, db of each layer (NULL when it has none) */
} mlp_run;

/* loss = mse(gelu(linear(... gelu(linear(x)) ...)), target); layers < frozen have requires_grad off */
static mlp_run run_mlp(int frozen) {
    mlp_run r = {0};
    pft_ctx_set_seed(ctx, seed); /* the same weights for every run */
    pft_tensor *x = pft_tensor_rand(ctx, 2, (int64_t[]){ROWS, dims[0]}, -1, 1);
    pft_tensor *target = pft_tensor_rand(ctx, 2, (int64_t[]){ROWS, dims[LAYERS]}, -1, 1);
    pft_tensor *w[LAYERS], *b[LAYERS], *h = pft_tensor_retain(x);
    for (int l = 0; l < LAYERS; l++) {
        w[l] = pft_tensor_rand(ctx, 2, (int64_t[]){dims[l + 1], dims[l]}, -0.5f, 0.5f);
        b[l] = pft_tensor_rand(ctx, 1, &dims[l + 1], -0.5f, 0.5f);
        w[l]->requires_grad = b[l]->requires_grad = l >= frozen;
    }
    for (int l = 0; l < LAYERS; l++) {
        pft_tensor *z = pft_linear(h, w[l], b[l]);
        pft_tensor_release(h);
        h = pft_gelu(z);
        pft_tensor_release(z);
        CHECK((h->grad_fn != NULL) == (l >= frozen), "layer %d records a node only when it is trainable", l);
    }
    pft_tensor *loss = pft_mse(h, target);
    pft_ctx_reset_stats(ctx);
    CHECK(pft_backward(loss, NULL) == PFT_OK, "MLP backward: %s", pft_ctx_error(ctx));
    r.kernels = ctx->stats.backward_kernels;
    r.flops = ctx->stats.backward_flops;
    for (int l = 0; l < LAYERS; l++) {
        CHECK((w[l]->grad != NULL) == (l >= frozen) && (b[l]->grad != NULL) == (l >= frozen),
              "layer %d (frozen below %d): weight and bias have a gradient only when trainable", l, frozen);
        for (int k = 0; k < 2; k++) {
            pft_tensor *g = (k ? b[l] : w[l])->grad;
            if (!g) continue;
            r.grads[l][k] = malloc(sizeof(float) * (size_t)pft_tensor_numel(g));
            memcpy(r.grads[l][k], pft_tensor_data(g), sizeof(float) * (size_t)pft_tensor_numel(g));
        }
    }
    pft_tensor_release(loss), pft_tensor_release(h), pft_tensor_release(x), pft_tensor_release(target);
    for (int l = 0; l < LAYERS; l++) pft_tensor_release(w[l]), pft_tensor_release(b[l]);
    return r;
}

/* Expected backward work, by hand. Per trainable layer l (top down): gelu dx (1 kernel) only if its
 * linear needs a gradient (always, for a trainable layer); linear dW and db (2 kernels, dW a GEMM of
 * 2 ROWS in out FLOPs); linear dx (1 kernel + 1 GEMM of the same size) only when the layer's input
 * needs a gradient, i.e. when layer l-1 is trainable too. Plus the mse dpred (1 kernel). */
static void expected(int frozen, int64_t *kernels, int64_t *flops) {
    *kernels = 1; /* mse */
    *flops = 0;
    for (int l = frozen; l < LAYERS; l++) {
        int64_t gemm = 2 * ROWS * dims[l] * dims[l + 1];
        *kernels += 1 + 2; /* gelu dx, dW, db */
        *flops += gemm;    /* dW */
        if (l > frozen) {  /* the input comes from a trainable layer: dx */
            *kernels += 1;
            *flops += gemm;
        }
    }
}

static void test_frozen_prefix(void) {
    mlp_run all = run_mlp(0), top = run_mlp(2);
    int64_t ek_all, ef_all, ek_top, ef_top;
    expected(0, &ek_all, &ef_all);
    expected(2, &ek_top, &ef_top);
    /* spelled out for the frozen case: mse 1 + gelu4 1 + L4 (dx, dW, db) 3 + gelu3 1 + L3 (dW, db) 2 = 8 */
    CHECK(ek_top == 8, "hand count for the frozen prefix: %lld", (long long)ek_top);
    CHECK(ef_top == 2 * ROWS * (dims[2] * dims[3] + 2 * dims[3] * dims[4]), "hand FLOPs: dW3 + dW4 + dx4");
    CHECK(top.kernels == ek_top, "frozen prefix: %lld backward kernels, expected %lld", (long long)top.kernels, (long long)ek_top);
    CHECK(top.flops == ef_top, "frozen prefix: %lld backward FLOPs, expected %lld", (long long)top.flops, (long long)ef_top);
    CHECK(all.kernels == ek_all, "all trainable: %lld backward kernels, expected %lld", (long long)all.kernels, (long long)ek_all);
    CHECK(all.flops == ef_all, "all trainable: %lld backward FLOPs, expected %lld", (long long)all.flops, (long long)ef_all);
    printf("autograd: frozen prefix: %lld kernels / %lld FLOPs vs all trainable %lld / %lld (%.0f%% of the FLOPs)\n",
           (long long)top.kernels, (long long)top.flops, (long long)all.kernels, (long long)all.flops,
           100.0 * (double)top.flops / (double)all.flops);
    CHECK(top.kernels < all.kernels && top.flops < all.flops, "freezing saves backward work");
    /* the top layers' gradients do not depend on whether the layers below are frozen */
    float worst = 0;
    for (int l = 2; l < LAYERS; l++)
        for (int k = 0; k < 2; k++) {
            int64_t n = k ? dims[l + 1] : dims[l] * dims[l + 1];
            float d = max_abs_diff(all.grads[l][k], top.grads[l][k], n);
            worst = d > worst ? d : worst;
        }
    CHECK(worst == 0.0f, "top layers' gradients are the same with and without the frozen prefix: max diff %g", worst);
    for (int l = 0; l < LAYERS; l++)
        for (int k = 0; k < 2; k++) free(all.grads[l][k]), free(top.grads[l][k]);
    check_live("frozen prefix");
}

int main(void) {
    TEST_BEGIN("autograd");
    seed = test_seed();
    ctx = pft_ctx_new(1, seed);
    ctx->cache_min = 0; /* poison_cache needs its small blocks cached, whatever GLIBC_TUNABLES says */
    test_gradcheck_can_fail();
    test_backward_errors();
    test_no_grad();
    test_accumulation();
    test_gradients_written_whole();
    test_zeroed_gradients_rewritten();
    test_embedding_grad_rows();
    test_frozen_prefix();
    pft_ctx_free(ctx);
    return TEST_END();
}
