/* test_matmul.c - matmul and linear against a naive triple loop (all four transpose combinations,
 * batched, shared right operand) and their gradients against finite differences. */
#include "check.h"

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

int main(void) {
    TEST_BEGIN("matmul");
    uint64_t seed = test_seed();
    pft_ctx *ctx = pft_ctx_new(2, seed);
    test_transposes(ctx);
    test_batched(ctx);
    test_errors(ctx);
    test_grads(ctx, seed);
    CHECK(ctx->stats.live_tensors == 0, "live tensors at exit: %lld", (long long)ctx->stats.live_tensors);
    pft_ctx_free(ctx);
    return TEST_END();
}
