/* bench/forward: MiniLM (any BERT dir) forward in eval mode without a tape, on the first B sentences of a
 * TSV padded to T tokens by the C tokenizer (the same ids as the peer's fast tokenizer).
 * Usage: bench_forward MODEL_DIR DATA_TSV B T THREADS REPS
 * Prints `pft sentences/s: X` (median over REPS after one warm-up). pft skips padded positions unless
 * PFT_BENCH_DENSE=1 (then it does the same padded work as the peer). */
#include "../common.h"
#include "nn.h"
#include "text.h"
#include "hugepages.h"

int main(int argc, char **argv) {
    pft_hugepages_reexec(argv); /* as the pft binary runs: its heap on huge pages */
    if (argc != 7) {
        fprintf(stderr, "usage: %s MODEL_DIR DATA_TSV B T THREADS REPS\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1], *data = argv[2];
    int B = atoi(argv[3]), T = atoi(argv[4]), threads = atoi(argv[5]), reps = atoi(argv[6]);
    char **sent = calloc((size_t)B, sizeof *sent);
    int *labels = calloc((size_t)B, sizeof *labels);
    if (bench_read_tsv(data, B, sent, labels) != B) {
        fprintf(stderr, "%s: fewer than %d sentences\n", data, B);
        return 1;
    }
    pft_ctx *ctx = pft_ctx_new(threads, 1234);
    pft_tokenizer *tok = pft_tokenizer_load(ctx, dir);
    pft_bert *m = tok ? pft_bert_load(ctx, dir, PFT_HEAD_NONE, 0) : NULL;
    pft_batch batch = {0};
    if (!m || pft_tokenizer_encode_batch(tok, B, (const char *const *)sent, NULL, NULL, NULL, T, T, &batch)) {
        fprintf(stderr, "pft: %s\n", pft_ctx_error(ctx));
        return 1;
    }
    pft_bert_set_training(m, false);
    /* PFT_BENCH_DENSE=1: compute the padding too (the same work as the peer) instead of skipping it */
    const char *dense = getenv("PFT_BENCH_DENSE");
    m->pack_padding = !(dense && dense[0] == '1');
    pft_bert_batch in = {B, batch.t, batch.ids, batch.type_ids, batch.mask};
    double *times = calloc((size_t)reps, sizeof *times);
    pft_ctx_no_grad_enter(ctx);
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        pft_bert_output out;
        double t0 = bench_now();
        if (pft_bert_forward(m, &in, &out)) {
            fprintf(stderr, "pft: %s\n", pft_ctx_error(ctx));
            return 1;
        }
        double dt = bench_now() - t0;
        pft_bert_output_release(&out);
        if (r >= 0) times[r] = dt;
    }
    pft_ctx_no_grad_leave(ctx);
    int64_t real = 0;
    for (int i = 0; i < B; i++) real += batch.lengths[i];
    printf("pft sentences/s: %.1f  (B %d, T %d, %lld real tokens, %s, threads %d, median of %d)\n",
           B / bench_median(times, reps), B, batch.t, (long long)real, m->pack_padding ? "padding skipped" : "dense",
           ctx->threads, reps);
    pft_batch_free(&batch);
    pft_bert_free(m);
    pft_tokenizer_free(tok);
    pft_ctx_free(ctx);
    for (int i = 0; i < B; i++) free(sent[i]);
    free(sent), free(labels), free(times);
    return 0;
}
