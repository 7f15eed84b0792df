/* bench/train: one training step (forward + backward + AdamW) of MiniLM with a sequence-classification
 * head on the first B SST-2 train sentences padded to T tokens, train mode (dropout as configured).
 * CONFIG full: every parameter trains. CONFIG top2: the top 2 encoder layers, the pooler and the head
 * train; embeddings and the lower layers have requires_grad false and run in eval mode (no tape).
 * CONFIG lora: LoRA adapters (r 8, alpha 16, dropout 0.1, PEFT's set-up) on every layer's query and value;
 * every base parameter has requires_grad false, the adapters and the classifier train (the pooler is frozen,
 * as PEFT's SEQ_CLS trains only the classifier as modules_to_save); every layer runs in training mode, the
 * frozen embeddings in eval mode.
 * The step as pft train runs it (default): padding skipped, and past its attention the last layer runs
 * only the [CLS] rows the head reads (nn.h, hidden_states). PFT_BENCH_DENSE=1: every position of every
 * layer, the padding too: the peer's work.
 * PFT_BENCH_PRECISION=bf16: the GEMMs in bf16 (train.precision = "bf16"; refused where the processor has none).
 * A list, PFT_BENCH_PRECISION=fp32,bf16: the precisions take turns step by step in this one process (each
 * with its own warm-up step), one line per precision: their ratio is then free of the machine's drift
 * between runs (on a shared machine the same binary's rate moved 10-20% between minutes).
 * PFT_BENCH_STATIC=1: the tiled GEMM's threads keep to their static shares, no work stealing (bench/steal).
 * PFT_BENCH_PERF_CTL=FIFO: perf record's control fifo (bench/profile): "enable" is written to it after the warm-up
 * step and "disable" after the last, so a profile holds the measured steps only, not loading and first touches.
 * Usage: bench_train MODEL_DIR DATA_TSV B T THREADS REPS full|top2|lora
 * Prints `pft steps/s: X` (median over REPS after one warm-up step), and the FLOPs of a step as pft counts
 * them (ctx stats: its GEMMs and attention blocks, forward and backward). */
#include "../common.h"
#include "autograd.h"
#include "nn.h"
#include "optim.h"
#include "text.h"
#include "hugepages.h"

/* a command to perf record's control fifo, where PFT_BENCH_PERF_CTL names one */
static void perf_control(const char *command) {
    const char *fifo = getenv("PFT_BENCH_PERF_CTL");
    FILE *f = fifo && *fifo ? fopen(fifo, "w") : NULL;
    if (!f) return;
    fprintf(f, "%s\n", command);
    fclose(f);
}

/* PFT_BENCH_PRECISION as a list of up to 4 names separated by commas (unset or empty: fp32); the count */
static int precision_list(const char *list, char names[4][16]) {
    int n = 0;
    for (const char *p = list && *list ? list : "fp32"; *p && n < 4;) {
        size_t len = strcspn(p, ",");
        snprintf(names[n++], 16, "%.*s", (int)len, p);
        p += len + (p[len] == ',');
    }
    return n > 0 ? n : 1;
}

int main(int argc, char **argv) {
    pft_hugepages_reexec(argv); /* as the pft binary runs: its heap on huge pages */
    if (argc != 8) {
        fprintf(stderr, "usage: %s MODEL_DIR DATA_TSV B T THREADS REPS full|top2|lora\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1], *data = argv[2], *config = argv[7];
    int B = atoi(argv[3]), T = atoi(argv[4]), threads = atoi(argv[5]), reps = atoi(argv[6]);
    const int top2 = strcmp(config, "top2") == 0, lora = strcmp(config, "lora") == 0;
    if (!top2 && !lora && strcmp(config, "full") != 0) {
        fprintf(stderr, "%s: CONFIG must be full, top2 or lora, got '%s'\n", argv[0], config);
        return 2;
    }
    char **sent = calloc((size_t)B, sizeof *sent);
    int *labels = calloc((size_t)B, sizeof *labels);
    int32_t *lab = calloc((size_t)B, sizeof *lab);
    if (bench_read_tsv(data, B, sent, labels) != B) {
        fprintf(stderr, "%s: fewer than %d sentences\n", data, B);
        return 1;
    }
    for (int i = 0; i < B; i++) lab[i] = labels[i];
    pft_ctx *ctx = pft_ctx_new(threads, 1234);
    pft_tokenizer *tok = pft_tokenizer_load(ctx, dir);
    pft_bert *m = tok ? pft_bert_load(ctx, dir, PFT_HEAD_SEQCLS, 2) : NULL;
    pft_batch batch = {0};
    if (!m || pft_tokenizer_encode_batch(tok, B, (const char *const *)sent, NULL, NULL, NULL, T, T, &batch)) {
        fprintf(stderr, "pft: %s\n", pft_ctx_error(ctx));
        return 1;
    }
    const char *fixed = getenv("PFT_BENCH_STATIC");
    ctx->gemm_static = fixed && fixed[0] == '1';
    char precisions[4][16] = {"fp32"};
    int nprec = precision_list(getenv("PFT_BENCH_PRECISION"), precisions);
    for (int i = 0; i < nprec; i++) /* each refused here, before any step, where the processor has none */
        if (pft_ctx_set_precision(ctx, precisions[i])) {
            fprintf(stderr, "pft: %s\n", pft_ctx_error(ctx));
            return 1;
        }
    pft_bert_set_training(m, true);
    /* PFT_BENCH_DENSE=1: compute the padding and every row of the last layer too (the peer's work) */
    const char *dense = getenv("PFT_BENCH_DENSE");
    m->pack_padding = !(dense && dense[0] == '1');
    m->hidden_states = !m->pack_padding; /* as pft train runs: the last layer's [CLS] rows only (nn.h) */
    const int L = m->cfg.num_layers;
    if (top2) {
        m->embeddings_training = false;
        for (int i = 0; i < pft_bert_param_count(m); i++) {
            pft_tensor *p = pft_bert_param(m, i);
            int layer = -1;
            if (strstr(p->name, "embeddings.")) p->requires_grad = false;
            const char *s = strstr(p->name, "encoder.layer.");
            if (s) layer = atoi(s + 14);
            if (layer >= 0 && layer < L - 2) p->requires_grad = false;
        }
        for (int l = 0; l < L - 2; l++) m->layers[l].training = false;
    }
    if (lora) {
        unsigned *targets = calloc((size_t)L, sizeof *targets);
        for (int l = 0; l < L; l++) targets[l] = (1u << PFT_LORA_QUERY) | (1u << PFT_LORA_VALUE);
        pft_lora_config lc = {.r = 8, .alpha = 16, .dropout = 0.1f, .scale = 0, .targets = targets};
        pft_status st = pft_bert_add_lora(m, &lc);
        free(targets);
        if (st) {
            fprintf(stderr, "pft: %s\n", pft_ctx_error(ctx));
            return 1;
        }
        for (int i = 0; i < pft_bert_param_count(m); i++) {
            pft_tensor *p = pft_bert_param(m, i);
            p->requires_grad = strstr(p->name, ".lora_") != NULL || strncmp(p->name, "classifier.", 11) == 0;
        }
        m->embeddings_training = false; /* frozen: eval mode, as pft's trainer runs them */
    }
    pft_optim *opt = pft_optim_new(ctx, PFT_OPTIM_ADAMW);
    pft_optim_group g = pft_optim_group_defaults(PFT_OPTIM_ADAMW);
    g.lr = 2e-5;
    if (pft_optim_add_group(opt, &g, pft_bert_param_count(m), m->params) < 0) {
        fprintf(stderr, "pft: %s\n", pft_ctx_error(ctx));
        return 1;
    }
    pft_bert_batch in = {B, batch.t, batch.ids, batch.type_ids, batch.mask};
    double *times = calloc((size_t)(reps * nprec), sizeof *times); /* [precision][rep] */
    float last_loss = 0;
    int64_t flops = 0;
    for (int r = -nprec; r < reps * nprec; r++) { /* r < 0: a warm-up step per precision */
        const int which = (r + nprec) % nprec;
        if (nprec > 1) pft_ctx_set_precision(ctx, precisions[which]);
        const int64_t flops0 = ctx->stats.forward_flops + ctx->stats.backward_flops;
        double t0 = bench_now();
        pft_optim_zero_grad(opt);
        pft_bert_output out;
        pft_tensor *loss = NULL;
        if (pft_bert_forward(m, &in, &out) || !(loss = pft_bert_loss(m, out.logits, lab, NULL)) ||
            pft_backward(loss, NULL) || pft_optim_step(opt)) {
            fprintf(stderr, "pft: %s\n", pft_ctx_error(ctx));
            return 1;
        }
        last_loss = pft_tensor_data(loss)[0];
        flops = ctx->stats.forward_flops + ctx->stats.backward_flops - flops0; /* a step's (every step's: the same batch) */
        pft_tensor_release(loss);
        pft_bert_output_release(&out);
        double dt = bench_now() - t0;
        if (r >= 0) times[which * reps + r / nprec] = dt;
        if (r == -1) perf_control("enable");
    }
    perf_control("disable");
    if (getenv("PFT_BENCH_STEPS")) /* every step's time, in order: how much steps vary */
        for (int r = 0; r < reps * nprec; r++) fprintf(stderr, "step %d: %.3f s\n", r + 1, times[r % nprec * reps + r / nprec]);
    for (int i = 0; i < nprec; i++) {
        double med = bench_median(times + i * reps, reps);
        char turns[64] = "";
        if (nprec > 1) snprintf(turns, sizeof turns, "; precision %s, steps in turn", precisions[i]);
        printf("pft steps/s: %.3f  tokens/s %.0f  (%s: %lld of %lld parameters train; B %d, T %d, threads %d, median of %d, "
               "last loss %.4f, %.3f GFLOP a step%s)\n",
               1.0 / med, B * batch.t / med, config, (long long)pft_bert_numel(m, true), (long long)pft_bert_numel(m, false),
               B, batch.t, ctx->threads, reps, last_loss, (double)flops * 1e-9, turns);
    }
    pft_optim_free(opt);
    pft_batch_free(&batch);
    pft_bert_free(m);
    pft_tokenizer_free(tok);
    pft_ctx_free(ctx);
    for (int i = 0; i < B; i++) free(sent[i]);
    free(sent), free(labels), free(lab), free(times);
    return 0;
}
