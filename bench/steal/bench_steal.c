/* bench_steal.c - the tiled GEMM with work stealing (threads that run out of blocks take from another's
 * share, core/gemm_tiles.c) against static shares alone (ctx->gemm_static), the two taking turns in one
 * run: MiniLM's nine GEMM shapes of a dense step (4,096 rows: forward, input gradient, weight gradient of
 * the three weight shapes). bench/steal/run.sh runs it on a quiet machine and with one busy process
 * beside it, which slows one of the two threads. Medians of the repetitions.
 * Usage: bench_steal [threads=2] [reps=11] [precision=fp32] [T=4096] */
#include "../common.h"
#include "hugepages.h"

typedef struct shape {
    const char *what;
    bool ta, tb;
    int64_t M, N, K; /* M, K as multiples of T where negative: -1 is T */
} shape;

int main(int argc, char **argv) {
    pft_hugepages_reexec(argv); /* as the pft binary runs: its heap on huge pages */
    bench_gemm_args args;
    if (!bench_gemm_args_parse("bench_steal", argc, argv, 11, 4096, &args)) return 2;
    const int threads = args.threads, reps = args.reps;
    const int64_t T = args.T;
    pft_gemm_kind kind;
    pft_ctx *ctx = bench_tiles_ctx("bench_steal", threads, args.precision, &kind);
    if (!ctx) return 1;
    const shape shapes[] = {
        {"x[T,384] W[384,384]^T  ", false, true, -1, 384, 384},   {"x[T,384] W[1536,384]^T ", false, true, -1, 1536, 384},
        {"x[T,1536] W[384,1536]^T", false, true, -1, 384, 1536},  {"dY[T,384] W[384,384]   ", false, false, -1, 384, 384},
        {"dY[T,1536] W[1536,384] ", false, false, -1, 384, 1536}, {"dY[T,384] W[384,1536]  ", false, false, -1, 1536, 384},
        {"dY^T[384,T] x[T,384]   ", true, false, 384, 384, -1},   {"dY^T[1536,T] x[T,384]  ", true, false, 1536, 384, -1},
        {"dY^T[384,T] x[T,1536]  ", true, false, 384, 1536, -1},
    };
    double *t_static = malloc(sizeof(double) * (size_t)reps), *t_steal = malloc(sizeof(double) * (size_t)reps);
    printf("bench/steal: T %lld, threads %d, median of %d, static shares and stealing in turn; %s GEMM\n",
           (long long)T, threads, reps, pft_gemm_kind_name(kind));
    double sum_static = 0, sum_steal = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape *sh = &shapes[s];
        const int64_t M = sh->M < 0 ? T : sh->M, N = sh->N, K = sh->K < 0 ? T : sh->K;
        float *A = malloc(sizeof(float) * (size_t)(M * K)), *B = malloc(sizeof(float) * (size_t)(K * N));
        float *C = malloc(sizeof(float) * (size_t)(M * N));
        for (int64_t i = 0; i < M * K; i++) A[i] = (float)(i * 7 % 13 - 6) / 7.0f;
        for (int64_t i = 0; i < K * N; i++) B[i] = (float)(i * 5 % 11 - 5) / 9.0f;
        for (int r = -1; r < reps; r++) /* r = -1: warm-up */
            for (int steal = 0; steal < 2; steal++) {
                ctx->gemm_static = !steal;
                const double t0 = bench_now();
                pft_gemm_tiles(ctx, kind, sh->ta, sh->tb, M, N, K, 1.0f, A, sh->ta ? M : K, 0, B, sh->tb ? K : N, 0, 0.0f,
                               C, N, 0, 1);
                if (r >= 0) (steal ? t_steal : t_static)[r] = bench_now() - t0;
            }
        const double a = bench_median(t_static, reps), b = bench_median(t_steal, reps), flop = 2.0 * (double)(M * N * K);
        printf("%s GFLOP/s: static %6.1f  stealing %6.1f  ratio %.3f\n", sh->what, flop / a / 1e9, flop / b / 1e9, a / b);
        sum_static += a, sum_steal += b;
        free(A), free(B), free(C);
    }
    printf("all nine, time static / time stealing: %.3f (blocks stolen: %lld)\n", sum_static / sum_steal,
           (long long)ctx->stats.stolen_blocks);
    free(t_static), free(t_steal);
    pft_ctx_free(ctx);
    return 0;
}
