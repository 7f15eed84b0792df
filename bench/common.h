/* bench/common.h - shared by the C benchmarks: read the first B sentences (and labels) of a GLUE-style TSV
 * (header line, then "sentence<TAB>label"), a monotonic clock, a median, a context for pft's tiled GEMM. */
#ifndef PFT_BENCH_COMMON_H
#define PFT_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm_tiles.h"

static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bench_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Reads up to B rows; sentences[i] is malloc'd, labels[i] the integer after the tab (0 if none). */
static inline int bench_read_tsv(const char *path, int B, char **sentences, int *labels) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[65536];
    int n = 0;
    if (!fgets(line, sizeof line, f)) { fclose(f); return -1; } /* header */
    while (n < B && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *tab = strchr(line, '\t');
        if (tab) *tab = 0;
        sentences[n] = strdup(line);
        labels[n] = tab ? atoi(tab + 1) : 0;
        n++;
    }
    fclose(f);
    return n;
}

/* The GEMM benchmarks' arguments: [threads=2] [reps] [precision=fp32] [T], reps and T defaulting to the given
 * values; false (with the usage, naming `bench`) where one is out of range */
typedef struct bench_gemm_args {
    int threads, reps;
    const char *precision;
    int64_t T;
} bench_gemm_args;

static inline bool bench_gemm_args_parse(const char *bench, int argc, char **argv, int reps, int64_t T,
                                         bench_gemm_args *a) {
    a->threads = argc > 1 ? atoi(argv[1]) : 2, a->reps = argc > 2 ? atoi(argv[2]) : reps;
    a->precision = argc > 3 ? argv[3] : "fp32";
    a->T = argc > 4 ? atoll(argv[4]) : T;
    if (a->threads >= 1 && a->reps >= 1 && a->reps <= 1000 && a->T >= 1) return true;
    fprintf(stderr, "usage: %s [threads=2] [reps=%d] [precision=fp32] [T=%lld]\n", bench, reps, (long long)T);
    return false;
}

/* A context of `threads` computing GEMMs in `precision` through pft's tiled GEMM, *kind its kind; NULL, with
 * a message naming `bench`, where the precision is refused or the GEMM here is OpenBLAS's */
static inline pft_ctx *bench_tiles_ctx(const char *bench, int threads, const char *precision, pft_gemm_kind *kind) {
    pft_ctx *ctx = pft_ctx_new(threads, 1);
    if (!ctx || pft_ctx_set_precision(ctx, precision)) {
        fprintf(stderr, "%s: %s\n", bench, ctx ? pft_ctx_error(ctx) : "out of memory");
        pft_ctx_free(ctx);
        return NULL;
    }
    *kind = ctx->bf16_gemm ? ctx->bf16_gemm : ctx->f32_gemm;
    if (*kind == PFT_GEMM_BLAS) {
        fprintf(stderr, "%s: the GEMM here is OpenBLAS's, not pft's tiled GEMM\n", bench);
        pft_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

#endif
