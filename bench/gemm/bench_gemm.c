/* bench_gemm.c - pft's matmul/linear against a bare cblas_sgemm on BERT shapes, in one run.
 *
 * For each shape both sides compute the same product on the same buffers, alternating A B A B, and the
 * median of the repetitions is quoted. The pft side goes through the whole op layer: shape checks,
 * operand description (transposed views handed to BLAS as flags), result allocation, FLOP accounting.
 * The BLAS side is OpenBLAS with its own thread pool of the same size; pft runs OpenBLAS single-threaded
 * inside its OpenMP blocks (core/backend_cpu.c).
 * Usage: bench_gemm [threads=2] [reps=7]. Prints GFLOP/s of both and the ratio pft / BLAS. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ops.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef enum { LINEAR_FWD, DX, DW } kind;
typedef struct shape { const char *what; kind k; int64_t T, in, out; } shape;

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 7;
    pft_ctx *ctx = pft_ctx_new(threads, 1);
    openblas_set_num_threads(threads);
    const int64_t T = 4096;
    shape shapes[] = {
        {"ffn up    x[T,384]  W[1536,384]^T", LINEAR_FWD, T, 384, 1536},
        {"ffn up dX dY[T,1536] W[1536,384]", DX, T, 384, 1536},
        {"ffn up dW dY^T[1536,T] x[T,384] ", DW, T, 384, 1536},
        {"attn proj x[T,768] W[768,768]^T ", LINEAR_FWD, T, 768, 768},
        {"attn dX  dY[T,768] W[768,768]   ", DX, T, 768, 768},
        {"attn dW  dY^T[768,T] x[T,768]   ", DW, T, 768, 768},
        {"ffn up   x[T,768] W[3072,768]^T ", LINEAR_FWD, T, 768, 3072},
        {"ffn dX   dY[T,3072] W[3072,768] ", DX, T, 768, 3072},
        {"ffn dW   dY^T[3072,T] x[T,768]  ", DW, T, 768, 3072},
    };
    printf("bench/gemm: tokens %lld, threads %d (pft ctx and OpenBLAS), median of %d, alternating pft/BLAS\n",
           (long long)T, threads, reps);
    double worst = 1e9, sum_ratio = 0;
    int n_shapes = (int)(sizeof shapes / sizeof *shapes);
    for (int s = 0; s < n_shapes; s++) {
        shape sh = shapes[s];
        pft_tensor *x = pft_tensor_rand(ctx, 2, (int64_t[]){sh.T, sh.in}, -1, 1);
        pft_tensor *w = pft_tensor_rand(ctx, 2, (int64_t[]){sh.out, sh.in}, -1, 1);
        pft_tensor *dy = pft_tensor_rand(ctx, 2, (int64_t[]){sh.T, sh.out}, -1, 1);
        int64_t M, N, K;
        float *c = NULL;
        if (sh.k == LINEAR_FWD) M = sh.T, N = sh.out, K = sh.in;
        else if (sh.k == DX) M = sh.T, N = sh.in, K = sh.out;
        else M = sh.out, N = sh.in, K = sh.T;
        c = aligned_alloc(64, sizeof(float) * (size_t)(M * N));
        double flops = 2.0 * M * N * K, tp[64], tb[64];
        pft_tensor *dyt = pft_tensor_transpose(dy, 0, 1); /* a view: BLAS gets a transpose flag */
        for (int r = -1; r < reps; r++) {
            double t0 = now();
            pft_tensor *y = sh.k == LINEAR_FWD ? pft_linear(x, w, NULL) : sh.k == DX ? pft_matmul(dy, w) : pft_matmul(dyt, x);
            double t1 = now();
            if (!y) {
                fprintf(stderr, "bench_gemm: %s\n", pft_ctx_error(ctx));
                return 1;
            }
            pft_tensor_release(y);
            /* bare BLAS with its own pool of `threads` (pft itself keeps OpenBLAS at one thread and splits
             * GEMMs over its OpenMP threads; set before every call since pft resets it) */
            openblas_set_num_threads(threads);
            double t2 = now();
            if (sh.k == LINEAR_FWD)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, pft_tensor_data(x), K, pft_tensor_data(w), K, 0, c, N);
            else if (sh.k == DX)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, pft_tensor_data(dy), K, pft_tensor_data(w), N, 0, c, N);
            else
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1, pft_tensor_data(dy), M, pft_tensor_data(x), N, 0, c, N);
            double t3 = now();
            if (r >= 0) tp[r] = t1 - t0, tb[r] = t3 - t2; /* r = -1 is the warm-up */
        }
        qsort(tp, (size_t)reps, sizeof *tp, cmp);
        qsort(tb, (size_t)reps, sizeof *tb, cmp);
        double gp = flops / tp[reps / 2] * 1e-9, gb = flops / tb[reps / 2] * 1e-9, ratio = gp / gb;
        printf("%s  GFLOP/s: pft %6.1f  BLAS %6.1f  ratio %.3f\n", sh.what, gp, gb, ratio);
        worst = ratio < worst ? ratio : worst;
        sum_ratio += ratio;
        free(c);
        pft_tensor_release(dyt), pft_tensor_release(x), pft_tensor_release(w), pft_tensor_release(dy);
    }
    printf("ratio pft/BLAS: mean %.3f, worst %.3f (goal >= 0.97)\n", sum_ratio / n_shapes, worst);
    pft_ctx_free(ctx);
    return 0;
}
