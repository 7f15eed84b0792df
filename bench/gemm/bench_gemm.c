/* bench_gemm.c - pft's matmul/linear on BERT shapes against the bare GEMM underneath, in one run.
 *
 * For each shape: (1) the pft op (shape checks, operand description with transposed views handed to BLAS
 * as flags, result allocation, FLOP accounting, autograd check) alternating with the CPU backend's GEMM
 * called directly on preallocated buffers with the same threads: their ratio is what the op layer costs
 * (goal >= 0.97); (2) for context, plain OpenBLAS with its own thread pool of the same size, timed in a
 * block of its own, against pft (which runs OpenBLAS single-threaded inside its OpenMP blocks, see
 * core/backend_cpu.c). Medians of the repetitions.
 * With precision bf16 the op and the backend GEMM run in bf16 (train.precision = "bf16": the best bf16
 * GEMM this processor has) and the OpenBLAS column stays fp32: pft/OpenBLAS is then bf16 over fp32.
 * Usage: [PFT_BENCH_TOKENS=4096] [PFT_BENCH_SHAPES=n] bench_gemm [threads=2] [reps=7] [precision=fp32].
 * PFT_BENCH_TOKENS: the rows T (480 is an SST-2 batch of 32 without its padding, where the packing weighs
 * more). PFT_BENCH_SHAPES: the first n shapes only (3: MiniLM's biggest, FFN up, in its three GEMMs; what
 * bench/train/roofline.sh times). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../common.h"

#include "backend.h"
#include "ops.h"
#include "hugepages.h"

typedef enum { LINEAR_FWD, DX, DW } kind;
typedef struct shape { const char *what; kind k; int64_t T, in, out; } shape;

int main(int argc, char **argv) {
    pft_hugepages_reexec(argv); /* as the pft binary runs: its heap on huge pages */
    int threads = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 7;
    pft_ctx *ctx = pft_ctx_new(threads, 1);
    const char *precision = argc > 3 ? argv[3] : "fp32";
    if (pft_ctx_set_precision(ctx, precision)) {
        fprintf(stderr, "bench_gemm: %s\n", pft_ctx_error(ctx));
        return 1;
    }
    openblas_set_num_threads(threads);
    const char *tokens = getenv("PFT_BENCH_TOKENS");
    const int64_t T = tokens && atoll(tokens) > 0 ? atoll(tokens) : 4096;
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
    printf("bench/gemm: tokens %lld, threads %d, median of %d; pft op and backend GEMM alternating; pft in %s, "
           "OpenBLAS in fp32\n", (long long)T, threads, reps, pft_ctx_precision(ctx));
    double worst = 1e9, sum_ratio = 0;
    int n_shapes = (int)(sizeof shapes / sizeof *shapes);
    const char *only = getenv("PFT_BENCH_SHAPES");
    if (only && atoi(only) > 0 && atoi(only) < n_shapes) n_shapes = atoi(only);
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
        double flops = 2.0 * M * N * K, tp[64], tk[64], tb[64];
        pft_tensor *dyt = pft_tensor_transpose(dy, 0, 1); /* a view: BLAS gets a transpose flag */
        /* the same product as the op computes, as (transpose flags, operands, leading dims) */
        const bool ta = sh.k == DW, tb_flag = sh.k == LINEAR_FWD;
        const float *A = sh.k == LINEAR_FWD ? pft_tensor_data(x) : pft_tensor_data(dy);
        const float *Bm = sh.k == DW ? pft_tensor_data(x) : pft_tensor_data(w);
        const int64_t lda = sh.k == DW ? M : K, ldb = sh.k == LINEAR_FWD ? K : N;
        /* 1. the op against the backend's GEMM on the same threads: what the op layer costs */
        for (int r = -1; r < reps; r++) {
            double t0 = bench_now();
            pft_tensor *y = sh.k == LINEAR_FWD ? pft_linear(x, w, NULL) : sh.k == DX ? pft_matmul(dy, w) : pft_matmul(dyt, x);
            double t1 = bench_now();
            if (!y) {
                fprintf(stderr, "bench_gemm: %s\n", pft_ctx_error(ctx));
                return 1;
            }
            pft_tensor_release(y);
            double t2 = bench_now();
            pft_backend_cpu.gemm(ctx, ta, tb_flag, M, N, K, 1.0f, A, lda, 0, Bm, ldb, 0, 0.0f, c, N, 0, 1);
            double t3 = bench_now();
            if (r >= 0) tp[r] = t1 - t0, tk[r] = t3 - t2; /* r = -1 is the warm-up */
        }
        /* 2. bare OpenBLAS with its own pool of `threads`, in a block of its own (interleaved with pft's
         * OpenMP threads, the two pools' spinning threads slow each other down) */
        openblas_set_num_threads(threads);
        for (int r = -1; r < reps; r++) {
            double t0 = bench_now();
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb_flag ? CblasTrans : CblasNoTrans, M, N, K, 1, A, lda,
                        Bm, ldb, 0, c, N);
            if (r >= 0) tb[r] = bench_now() - t0;
        }
        openblas_set_num_threads(1);
        qsort(tp, (size_t)reps, sizeof *tp, bench_cmp);
        qsort(tk, (size_t)reps, sizeof *tk, bench_cmp);
        qsort(tb, (size_t)reps, sizeof *tb, bench_cmp);
        double gp = flops / tp[reps / 2] * 1e-9, gk = flops / tk[reps / 2] * 1e-9, gb = flops / tb[reps / 2] * 1e-9;
        double ratio = gp / gk;
        printf("%s  GFLOP/s: pft op %6.1f  backend GEMM %6.1f  ratio %.3f   | OpenBLAS threaded %6.1f  pft/OpenBLAS %.2f\n",
               sh.what, gp, gk, ratio, gb, gp / gb);
        worst = ratio < worst ? ratio : worst;
        sum_ratio += ratio;
        free(c);
        pft_tensor_release(dyt), pft_tensor_release(x), pft_tensor_release(w), pft_tensor_release(dy);
    }
    printf("ratio pft op / backend GEMM: mean %.3f, worst %.3f (goal >= 0.97)\n", sum_ratio / n_shapes, worst);
    pft_ctx_free(ctx);
    return 0;
}
