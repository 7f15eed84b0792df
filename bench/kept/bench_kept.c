/* bench_kept.c - a frozen weight's GEMMs with its packing kept (core/ctx.h, packed operands) against the
 * same GEMMs packing it on every call, in one run, the two taking turns: MiniLM's linear forwards
 * (x W^T) and input gradients (dY W) on T rows (420: an SST-2 batch of 32 without its padding). Before each
 * call a 64 MB buffer is written, so that neither finds the weight or its tiles in the caches, as in a
 * training step, where a layer's weights were last read a whole step before. Medians of the repetitions.
 * Usage: bench_kept [threads=2] [reps=21] [precision=fp32] [T=420] */
#include "../common.h"
#include "hugepages.h"

typedef struct shape {
    const char *what;
    bool trans_b; /* forward: x [T, in] W^T; input gradient: dY [T, out] W */
    int64_t N, K;
} shape;

int main(int argc, char **argv) {
    pft_hugepages_reexec(argv); /* as the pft binary runs: its heap on huge pages */
    bench_gemm_args args;
    if (!bench_gemm_args_parse("bench_kept", argc, argv, 21, 420, &args)) return 2;
    const int threads = args.threads, reps = args.reps;
    const int64_t T = args.T;
    pft_gemm_kind kind;
    pft_ctx *ctx = bench_tiles_ctx("bench_kept", threads, args.precision, &kind);
    if (!ctx) return 1;
    const shape shapes[] = {
        {"q, k, v, out  x[T,384] W[384,384]^T  ", true, 384, 384},   {"ffn up        x[T,384] W[1536,384]^T ", true, 1536, 384},
        {"ffn down      x[T,1536] W[384,1536]^T", true, 384, 1536},  {"q, k, v dX    dY[T,384] W[384,384]   ", false, 384, 384},
        {"ffn up dX     dY[T,1536] W[1536,384] ", false, 384, 1536}, {"ffn down dX   dY[T,384] W[384,1536]  ", false, 1536, 384},
    };
    const size_t flush_bytes = (size_t)64 << 20;
    char *flush = malloc(flush_bytes);
    double *t_packed = malloc(sizeof(double) * (size_t)reps), *t_kept = malloc(sizeof(double) * (size_t)reps);
    printf("bench/kept: T %lld, threads %d, median of %d, caches flushed before each call; %s GEMM\n", (long long)T,
           threads, reps, pft_gemm_kind_name(kind));
    double sum_packed = 0, sum_kept = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t M = T, N = shapes[s].N, K = shapes[s].K;
        float *A = malloc(sizeof(float) * (size_t)(M * K)), *B = malloc(sizeof(float) * (size_t)(K * N));
        float *C = malloc(sizeof(float) * (size_t)(M * N));
        for (int64_t i = 0; i < M * K; i++) A[i] = (float)(i * 7 % 13 - 6) / 7.0f;
        for (int64_t i = 0; i < K * N; i++) B[i] = (float)(i * 5 % 11 - 5) / 9.0f;
        const pft_operand_key key = {.storage = 1 + s, .version = 1, .offset = 0};
        for (int r = -1; r < reps; r++) /* r = -1: warm-up (and the kept packing made) */
            for (int kept = 0; kept < 2; kept++) {
                memset(flush, r + kept, flush_bytes);
                const double t0 = bench_now();
                pft_gemm_tiles_epilogue(ctx, kind, false, shapes[s].trans_b, M, N, K, 1.0f, A, K, B,
                                        shapes[s].trans_b ? K : N, 0.0f, C, N, NULL, kept ? &key : NULL);
                if (r >= 0) (kept ? t_kept : t_packed)[r] = bench_now() - t0;
            }
        const double p = bench_median(t_packed, reps), k = bench_median(t_kept, reps), flop = 2.0 * (double)(M * N * K);
        printf("%s GFLOP/s: packed every call %6.1f  kept %6.1f  ratio %.3f\n", shapes[s].what, flop / p / 1e9,
               flop / k / 1e9, p / k);
        sum_packed += p, sum_kept += k;
        free(A), free(B), free(C);
    }
    printf("all six, time packed every call / time kept: %.3f\n", sum_packed / sum_kept);
    free(flush), free(t_packed), free(t_kept);
    pft_ctx_free(ctx);
    return 0;
}
