/* bench_tokenize.c - sentences/s of the pft batch tokenizer on all of SST-2 train, single thread.
 *
 *     bench_tokenize MODEL_DIR TSV [REPS]      prints "pft sentences/s: X (median of REPS)"
 *
 * Each repetition encodes every sentence with pft_tokenizer_encode_batch in batches of 1024, padded
 * to the longest row and truncated at 128 (what the peer does), reusing one pft_batch. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s MODEL_DIR TSV [REPS]\n", argv[0]); return 2; }
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    if (reps < 1) reps = 1;
    FILE *f = fopen(argv[2], "rb");
    if (!f) { perror(argv[2]); return 1; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "%s: read error\n", argv[2]); return 1; }
    fclose(f);
    buf[n] = '\0';
    /* sentences in place: skip the header line, cut each line at its last TAB */
    size_t cap = 1 << 16, ns = 0;
    const char **sent = malloc(cap * sizeof *sent);
    size_t *len = malloc(cap * sizeof *len);
    char *p = strchr(buf, '\n');
    p = p ? p + 1 : buf + n;
    while (p < buf + n) {
        char *e = strchr(p, '\n');
        if (!e) e = buf + n;
        *e = '\0';
        char *tab = strrchr(p, '\t');
        if (tab) *tab = '\0';
        if (*p) {
            if (ns == cap) {
                cap *= 2;
                sent = realloc(sent, cap * sizeof *sent);
                len = realloc(len, cap * sizeof *len);
            }
            sent[ns] = p;
            len[ns++] = strlen(p);
        }
        p = e + 1;
    }
    pft_ctx *ctx = pft_ctx_new(1, 0);
    pft_tokenizer *tok = pft_tokenizer_load(ctx, argv[1]);
    if (!tok) { fprintf(stderr, "%s\n", pft_ctx_error(ctx)); return 1; }
    pft_batch b = {0};
    double *t = malloc((size_t)reps * sizeof *t);
    long long tokens = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        tokens = 0;
        for (size_t s = 0; s < ns; s += 1024) {
            int m = (int)(ns - s < 1024 ? ns - s : 1024);
            if (pft_tokenizer_encode_batch(tok, m, sent + s, len + s, NULL, NULL, 128, 0, &b) != PFT_OK) {
                fprintf(stderr, "%s\n", pft_ctx_error(ctx));
                return 1;
            }
            for (int i = 0; i < m; i++) tokens += b.lengths[i];
        }
        t[r] = now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    printf("pft sentences/s: %.0f (median of %d, %zu sentences, %lld tokens)\n", (double)ns / t[reps / 2], reps, ns, tokens);
    pft_batch_free(&b);
    pft_tokenizer_free(tok);
    pft_ctx_free(ctx);
    free(t); free(sent); free(len); free(buf);
    return 0;
}
