/* bench_kernels.c - the row kernels of a dense step that are not GEMMs, alone: the CPU backend's dropout +
 * residual add + LayerNorm forward and backward (two a layer), on [T, C] activations, p = 0.1, medians.
 * For comparing two builds of core/kernels_cpu.c: run each build's binary in turn (the kernels are the
 * same bits in every build, only their time differs).
 * Usage: [BUILD=build] bash bench/build.sh kernels && [PFT_CPU_KERNELS=baseline|avx2|avx512] build/bench_kernels
 *        [threads=2] [reps=41] [T=4096] [C=384]   (PFT_CPU_KERNELS: the kernel table, as for pft; default the widest) */
#include <stdio.h>
#include <stdlib.h>

#include "../common.h"

#include "backend.h"
#include "hugepages.h"

static float *filled(int64_t n, float lo, float hi) {
    float *p = aligned_alloc(64, sizeof(float) * (size_t)((n + 15) / 16 * 16));
    if (!p) exit(1);
    for (int64_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * (float)((i * 7919) % 1000) / 1000.0f;
    return p;
}

int main(int argc, char **argv) {
    pft_hugepages_reexec(argv); /* as the pft binary runs */
    const int threads = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 41;
    const int64_t rows = argc > 3 ? atoll(argv[3]) : 4096, cols = argc > 4 ? atoll(argv[4]) : 384, n = rows * cols;
    if (threads < 1 || reps < 1 || reps > 1000 || rows < 1 || cols < 1) {
        fprintf(stderr, "usage: bench_kernels [threads=2] [reps=41] [T=4096] [C=384]\n");
        return 2;
    }
    pft_ctx *ctx = pft_ctx_new(threads, 1);
    const char *isa = getenv("PFT_CPU_KERNELS");
    const pft_backend *be = pft_backend_cpu_kernels(isa);
    if (!be) {
        fprintf(stderr, "bench_kernels: PFT_CPU_KERNELS=%s: no such kernel table here\n", isa);
        return 2;
    }
    float *h = filled(n, -2, 2), *r = filled(n, -1, 1), *w = filled(cols, 0.5f, 1.5f), *b = filled(cols, -1, 1);
    float *y = filled(n, 0, 0), *s = filled(n, 0, 0), *mean = filled(rows, 0, 0), *rstd = filled(rows, 0, 0);
    float *dy = filled(n, -1, 1), *dh = filled(n, 0, 0), *dr = filled(n, 0, 0), *dw = filled(cols, 0, 0), *db = filled(cols, 0, 0);
    double tf[1000], tb[1000];
    for (int k = -1; k < reps; k++) { /* k = -1: warm-up */
        double t0 = bench_now();
        be->dropout_add_layernorm_forward(ctx, y, s, mean, rstd, h, r, w, b, 0.1f, 7, 1000, 1e-12f, rows, cols);
        double t1 = bench_now();
        be->dropout_add_layernorm_backward(ctx, dh, dr, dw, db, NULL, dy, mean, rstd, s, w, 0.1f, 7, 1000, rows, cols);
        double t2 = bench_now();
        if (k >= 0) tf[k] = t1 - t0, tb[k] = t2 - t1;
    }
    qsort(tf, (size_t)reps, sizeof *tf, bench_cmp);
    qsort(tb, (size_t)reps, sizeof *tb, bench_cmp);
    printf("bench/kernels: [%lld, %lld], threads %d, table %s, median of %d: dropout_add_layernorm forward %.3f ms, "
           "backward %.3f ms\n", (long long)rows, (long long)cols, threads, pft_backend_cpu_isa(be), reps,
           tf[reps / 2] * 1e3, tb[reps / 2] * 1e3);
    pft_ctx_free(ctx);
    return 0;
}
