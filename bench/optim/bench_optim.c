/* bench_optim.c - AdamW on a word embedding as an SST-2 run updates it: MiniLM's vocabulary [30522, 384]
 * (random), each step the rows of one batch of 32 training sentences (the tokenizer's ids) through an
 * embedding lookup and its backward, then the optimizer step alone timed. Rows no batch has used yet have
 * moments of zero; how the step treats them is what differs between builds (core/optim.c's zero_rows).
 * Prints the median step time over the steps of each tenth of the run, and the rows used by then.
 * For comparing two builds: bench/optim/run.sh runs this tree's and a revision's binaries in turn.
 * Usage: [BUILD=build] bash bench/build.sh optim && build/bench_optim MODEL_DIR DATA_TSV [steps=500] [threads=2] */
#include <stdio.h>
#include <stdlib.h>

#include "../common.h"

#include "autograd.h"
#include "hugepages.h"
#include "ops.h"
#include "optim.h"
#include "text.h"

enum { B = 32, MAX_SENT = 32000 };

int main(int argc, char **argv) {
    pft_hugepages_reexec(argv); /* as the pft binary runs */
    if (argc < 3) {
        fprintf(stderr, "usage: bench_optim MODEL_DIR DATA_TSV [steps=500] [threads=2]\n");
        return 2;
    }
    const int steps = argc > 3 ? atoi(argv[3]) : 500, threads = argc > 4 ? atoi(argv[4]) : 2;
    if (steps < 10 || steps * B > MAX_SENT || threads < 1) {
        fprintf(stderr, "bench_optim: steps in [10, %d], threads >= 1\n", MAX_SENT / B);
        return 2;
    }
    char **sent = calloc(MAX_SENT, sizeof *sent);
    int *labels = calloc(MAX_SENT, sizeof *labels);
    const int n = bench_read_tsv(argv[2], steps * B, sent, labels);
    pft_ctx *ctx = pft_ctx_new(threads, 1);
    pft_tokenizer *tok = pft_tokenizer_load(ctx, argv[1]);
    if (n < steps * B || !tok) {
        fprintf(stderr, "bench_optim: %s\n", n < steps * B ? "too few sentences" : pft_ctx_error(ctx));
        return 1;
    }
    const int64_t V = 30522, C = 384;
    pft_tensor *w = pft_tensor_rand(ctx, 2, (int64_t[]){V, C}, -0.05f, 0.05f);
    w->requires_grad = true;
    pft_optim *opt = pft_optim_new(ctx, PFT_OPTIM_ADAMW);
    pft_optim_group g = pft_optim_group_defaults(PFT_OPTIM_ADAMW);
    g.lr = 5e-5; /* the sst2 recipe's */
    pft_optim_add_group(opt, &g, 1, &w);
    uint8_t *seen = calloc((size_t)V, 1);
    double *t = calloc((size_t)steps, sizeof *t);
    int64_t used = 0, used_at[10] = {0};
    for (int s = 0; s < steps; s++) {
        pft_batch batch = {0};
        if (pft_tokenizer_encode_batch(tok, B, (const char *const *)(sent + s * B), NULL, NULL, NULL, 64, 64, &batch)) {
            fprintf(stderr, "bench_optim: %s\n", pft_ctx_error(ctx));
            return 1;
        }
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)(B * batch.t));
        int64_t k = 0;
        for (int64_t i = 0; i < B * batch.t; i++)
            if (batch.mask[i]) {
                ids[k++] = batch.ids[i];
                used += !seen[batch.ids[i]], seen[batch.ids[i]] = 1;
            }
        pft_optim_zero_grad(opt);
        pft_tensor *rows = pft_embedding(w, ids, 1, &k), *y = rows ? pft_sum_all(rows) : NULL;
        if (!y || pft_backward(y, NULL)) {
            fprintf(stderr, "bench_optim: %s\n", pft_ctx_error(ctx));
            return 1;
        }
        const double t0 = bench_now();
        pft_optim_step(opt);
        t[s] = bench_now() - t0;
        used_at[s * 10 / steps] = used;
        pft_tensor_release(rows), pft_tensor_release(y);
        pft_batch_free(&batch);
        free(ids);
    }
    printf("bench/optim: AdamW on [%lld, %lld] word embeddings, threads %d, %d steps of %d sentences; per tenth of the "
           "run, median step ms (rows used by its end):", (long long)V, (long long)C, threads, steps, B);
    double all = 0;
    for (int d = 0; d < 10; d++) {
        const int lo = d * steps / 10, hi = (d + 1) * steps / 10;
        printf(" %.2f (%lld)", bench_median(t + lo, hi - lo) * 1e3, (long long)used_at[d]);
    }
    for (int s = 0; s < steps; s++) all += t[s];
    printf("; mean %.3f ms\n", all / steps * 1e3);
    pft_optim_free(opt);
    pft_tensor_release(w);
    pft_tokenizer_free(tok);
    pft_ctx_free(ctx);
    for (int i = 0; i < n; i++) free(sent[i]);
    free(sent), free(labels), free(seen), free(t);
    return 0;
}
