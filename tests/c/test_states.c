/* test_states.c - the frozen-prefix activation store (states.h) and the forward from a boundary (nn.h):
 * file round trip, gather, the per-row kinds, every stale and corrupt verdict, the writer's checks; and
 * that a forward started from the states the taps gave equals the whole forward, at every boundary, for
 * a padded and an unpadded batch, sequence and token heads, and from states gathered across batches. */
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "nn.h"
#include "states.h"

#define DIR_TMPL "/tmp/pft-test-states-XXXXXX"

static void flip_byte(const char *path, long at) {
    FILE *f = fopen(path, "r+b");
    if (!f) return;
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x40, f);
    fclose(f);
}

static void truncate_by(const char *path, long n) {
    struct stat st;
    if (stat(path, &st) == 0 && truncate(path, st.st_size - n) != 0) perror("truncate");
}

static pft_status write_store(pft_ctx *ctx, const char *path, uint64_t key, const int64_t *lens, int64_t n, int64_t w,
                              bool per_row, const float *data) {
    pft_states_writer *wr = pft_states_writer_open(ctx, path, key, n, lens, w, per_row);
    if (!wr) return PFT_ERR_IO;
    /* two batches: rows 0..1, then the rest */
    int64_t first = lens[0] + lens[1];
    pft_status st = pft_states_writer_add(wr, data, first, 2, lens);
    if (st) return st;
    int64_t rest = 0;
    for (int64_t i = 2; i < n; i++) rest += lens[i];
    st = pft_states_writer_add(wr, data + first * w, rest, n - 2, lens + 2);
    return st ? st : pft_states_writer_commit(wr);
}

static void store_cases(pft_ctx *ctx, const char *dir) {
    enum { N = 4, W = 3 };
    const int64_t lens[N] = {2, 1, 3, 2}, other[N] = {2, 1, 2, 3};
    float data[8 * W];
    for (int i = 0; i < 8 * W; i++) data[i] = (float)i * 0.5f - 3;
    char path[256];
    snprintf(path, sizeof path, "%s/a.act", dir);
    CHECK(write_store(ctx, path, 77, lens, N, W, false, data) == PFT_OK, "write: %s", pft_ctx_error(ctx));
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == pft_states_file_bytes(N, 8, W, false), "file size");
    pft_states_miss miss = PFT_STATES_MISSING;
    pft_states *s = pft_states_open(ctx, path, 77, N, lens, W, false, &miss);
    CHECK(s && miss == PFT_STATES_HIT && s->nvec == 8, "open: %s", pft_ctx_error(ctx));
    if (s) {
        pft_tensor *x = pft_states_gather(s, 2, (int64_t[]){2, 0});
        CHECK(x && x->shape[0] == 5 && x->shape[1] == W, "gather shape");
        if (x) {
            const float *v = pft_tensor_data(x);
            CHECK(memcmp(v, data + 3 * W, sizeof(float) * 3 * W) == 0 && memcmp(v + 3 * W, data, sizeof(float) * 2 * W) == 0,
                  "gather: row 2 then row 0, bit for bit");
        }
        pft_tensor_release(x);
        CHECK(pft_states_gather(s, 1, (int64_t[]){4}) == NULL && strstr(pft_ctx_error(ctx), "outside"), "gather: bad row");
        pft_states_free(s);
    }
    /* the verdicts */
    CHECK(!pft_states_open(ctx, path, 78, N, lens, W, false, &miss) && miss == PFT_STATES_STALE &&
              strstr(pft_ctx_error(ctx), "stale: ") && strstr(pft_ctx_error(ctx), "another key"), "another key: stale");
    CHECK(!pft_states_open(ctx, path, 77, N, other, W, false, &miss) && miss == PFT_STATES_STALE &&
              strstr(pft_ctx_error(ctx), "row lengths"), "other row lengths: stale (%s)", pft_ctx_error(ctx));
    CHECK(!pft_states_open(ctx, path, 77, N, lens, W + 1, false, &miss) && miss == PFT_STATES_STALE, "another width");
    CHECK(!pft_states_open(ctx, path, 77, N, lens, W, true, &miss) && miss == PFT_STATES_STALE, "another kind");
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none.act", dir);
    CHECK(!pft_states_open(ctx, missing, 77, N, lens, W, false, &miss) && miss == PFT_STATES_MISSING &&
              strstr(pft_ctx_error(ctx), "missing: "), "missing");
    flip_byte(path, 64 + 5); /* inside the data */
    CHECK(!pft_states_open(ctx, path, 77, N, lens, W, false, &miss) && miss == PFT_STATES_CORRUPT &&
              strstr(pft_ctx_error(ctx), "checksum"), "flipped data byte: corrupt (%s)", pft_ctx_error(ctx));
    flip_byte(path, 64 + 5);
    flip_byte(path, (long)st.st_size - 3); /* inside the offsets */
    CHECK(!pft_states_open(ctx, path, 77, N, lens, W, false, &miss) && miss == PFT_STATES_CORRUPT, "flipped offset byte");
    flip_byte(path, (long)st.st_size - 3);
    flip_byte(path, 2); /* the magic */
    CHECK(!pft_states_open(ctx, path, 77, N, lens, W, false, &miss) && miss == PFT_STATES_CORRUPT &&
              strstr(pft_ctx_error(ctx), "bad header"), "flipped magic");
    flip_byte(path, 2);
    CHECK((s = pft_states_open(ctx, path, 77, N, lens, W, false, &miss)) != NULL, "restored bytes read again");
    pft_states_free(s);
    truncate_by(path, 4);
    CHECK(!pft_states_open(ctx, path, 77, N, lens, W, false, &miss) && miss == PFT_STATES_CORRUPT &&
              strstr(pft_ctx_error(ctx), "size"), "truncated: corrupt (%s)", pft_ctx_error(ctx));
    truncate_by(path, (long)st.st_size - 4 - 10);
    CHECK(!pft_states_open(ctx, path, 77, N, lens, W, false, &miss) && miss == PFT_STATES_CORRUPT, "cut inside the header");

    /* per row: given every token, the first of each row is kept */
    snprintf(path, sizeof path, "%s/first.act", dir);
    CHECK(write_store(ctx, path, 5, lens, N, W, true, data) == PFT_OK, "per-row write: %s", pft_ctx_error(ctx));
    s = pft_states_open(ctx, path, 5, N, lens, W, true, &miss);
    CHECK(s && s->nvec == N, "per-row open: %s", pft_ctx_error(ctx));
    if (s) {
        pft_tensor *x = pft_states_gather(s, 2, (int64_t[]){3, 1});
        CHECK(x && x->shape[0] == 2 && memcmp(pft_tensor_data(x), data + 6 * W, sizeof(float) * W) == 0 &&
                  memcmp(pft_tensor_data(x) + W, data + 2 * W, sizeof(float) * W) == 0, "per-row gather: first tokens of rows 3, 1");
        pft_tensor_release(x);
        pft_states_free(s);
    }

    /* the writer's checks: lengths that disagree, too many rows, an early commit; none leaves a file */
    snprintf(path, sizeof path, "%s/bad.act", dir);
    pft_states_writer *w = pft_states_writer_open(ctx, path, 1, N, lens, W, false);
    CHECK(w && pft_states_writer_add(w, data, 3, 2, (int64_t[]){1, 2}) == PFT_ERR_ARG &&
              strstr(pft_ctx_error(ctx), "row 0 has 1 tokens"), "lengths that disagree (%s)", pft_ctx_error(ctx));
    w = pft_states_writer_open(ctx, path, 1, N, lens, W, false);
    CHECK(w && pft_states_writer_add(w, data, 3, 2, lens) == PFT_OK && pft_states_writer_commit(w) == PFT_ERR_STATE &&
              strstr(pft_ctx_error(ctx), "2 of 4 rows"), "early commit (%s)", pft_ctx_error(ctx));
    w = pft_states_writer_open(ctx, path, 1, N, lens, W, false);
    CHECK(w && pft_states_writer_add(w, data, 8, 5, (int64_t[]){2, 1, 3, 2, 1}) == PFT_ERR_ARG, "too many rows");
    w = pft_states_writer_open(ctx, path, 1, N, lens, W, false);
    CHECK(w && pft_states_writer_add(w, data, 4, 2, lens) == PFT_ERR_SHAPE, "vectors that match no row count");
    w = pft_states_writer_open(ctx, path, 1, N, lens, W, false);
    pft_states_writer_abort(w);
    CHECK(access(path, F_OK) != 0, "no file after failed writes");
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    CHECK(access(tmp, F_OK) != 0, "no temporary after failed writes");
    CHECK(pft_states_hash(PFT_STATES_HASH_START, "abcd", 4) != pft_states_hash(PFT_STATES_HASH_START, "abce", 4) &&
              pft_states_hash(PFT_STATES_HASH_START, "abcde", 5) != pft_states_hash(PFT_STATES_HASH_START, "abcdf", 5),
          "the hash sees every byte, the tail too");
}

/* What the fuzzer found (tests/fuzz/fuzz_states.c): an odd number of floats left the offsets misaligned;
 * a header whose nvec x width x 4 overflowed passed the size test; a nonzero reserved field and a
 * negative count were accepted. */
static void fuzz_findings(pft_ctx *ctx, const char *dir) {
    char path[256];
    snprintf(path, sizeof path, "%s/odd.act", dir);
    const int64_t lens[3] = {2, 1, 2};
    float data[5 * 3];
    for (int i = 0; i < 15; i++) data[i] = (float)i;
    CHECK(write_store(ctx, path, 3, lens, 3, 3, false, data) == PFT_OK, "odd store: %s", pft_ctx_error(ctx));
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == pft_states_file_bytes(3, 5, 3, false) && st.st_size == 64 + 60 + 4 + 32,
          "15 floats padded to 64 bytes");
    pft_states *s = pft_states_open(ctx, path, 3, 3, lens, 3, false, NULL);
    CHECK(s && ((uintptr_t)(const void *)s->offsets % 8) == 0, "offsets 8-byte aligned: %s", s ? "" : pft_ctx_error(ctx));
    pft_states_free(s);
    flip_byte(path, 64 + 60 + 1); /* a padding byte */
    pft_states_miss miss;
    CHECK(!pft_states_open(ctx, path, 3, 3, lens, 3, false, &miss) && miss == PFT_STATES_CORRUPT, "a padding byte set: corrupt");
    CHECK(pft_states_file_bytes(2, (int64_t)1 << 40, (int64_t)1 << 22, false) == -1, "an overflowing shape: -1");
    CHECK(pft_states_file_bytes(INT64_MAX, 1, 1, false) == -1, "an overflowing count: -1");
    /* a header claiming 2^40 vectors of 2^22 floats in an 88-byte file */
    pft_states_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, PFT_STATES_MAGIC, 8);
    h.version = 2, h.key = 5, h.count = 1, h.nvec = (uint64_t)1 << 40, h.width = (uint64_t)1 << 22;
    snprintf(path, sizeof path, "%s/huge.act", dir);
    FILE *f = fopen(path, "wb");
    char zeros[24] = {0};
    fwrite(&h, sizeof h, 1, f), fwrite(zeros, 1, sizeof zeros, f), fclose(f);
    int64_t one = (int64_t)1 << 40;
    CHECK(!pft_states_open(ctx, path, 5, 1, &one, (int64_t)1 << 22, false, &miss) && miss == PFT_STATES_CORRUPT,
          "a header whose size overflows: corrupt (%s)", pft_ctx_error(ctx));
    snprintf(path, sizeof path, "%s/odd.act", dir);
    CHECK(write_store(ctx, path, 3, lens, 3, 3, false, data) == PFT_OK, "odd store again");
    flip_byte(path, 56); /* reserved */
    CHECK(!pft_states_open(ctx, path, 3, 3, lens, 3, false, &miss) && miss == PFT_STATES_CORRUPT &&
              strstr(pft_ctx_error(ctx), "bad header"), "a nonzero reserved field: corrupt");
    flip_byte(path, 56);
    CHECK(!pft_states_open(ctx, path, 3, -1, lens, 3, false, &miss) && miss == PFT_STATES_STALE, "a negative count: stale");
    CHECK(!pft_states_open(ctx, path, 3, 3, lens, 0, false, &miss) && miss == PFT_STATES_STALE, "width 0: stale");
}

/* --- forward from a boundary ------------------------------------------------------------------------- */

static pft_bert *tiny_model(pft_ctx *ctx, pft_head_kind head, int labels) {
    pft_bert_config c = {.vocab_size = 50, .hidden_size = 16, .num_layers = 3, .num_heads = 2, .intermediate_size = 32,
                         .max_position_embeddings = 32, .type_vocab_size = 2, .pad_token_id = 0, .layer_norm_eps = 1e-12f,
                         .hidden_dropout = 0.1f, .attention_dropout = 0.1f, .classifier_dropout = 0.1f,
                         .initializer_range = 0.2f};
    snprintf(c.model_type, sizeof c.model_type, "bert");
    return pft_bert_new(ctx, &c, head, labels);
}

/* B rows of the given lengths, right-padded to the longest; ids from a fixed formula */
static pft_bert_batch make_batch(int64_t B, const int64_t *lens) {
    int64_t T = 0;
    for (int64_t b = 0; b < B; b++) T = lens[b] > T ? lens[b] : T;
    int32_t *ids = calloc((size_t)(B * T), sizeof *ids), *mask = calloc((size_t)(B * T), sizeof *mask);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < lens[b]; t++) ids[b * T + t] = (int32_t)(1 + (b * 7 + t * 3) % 49), mask[b * T + t] = 1;
    return (pft_bert_batch){.B = B, .T = T, .input_ids = ids, .attention_mask = mask};
}

static void free_batch(pft_bert_batch *in) { free((void *)in->input_ids), free((void *)in->attention_mask); }

static bool same_floats(const pft_tensor *a, const pft_tensor *b) {
    if (!a || !b || pft_tensor_numel(a) != pft_tensor_numel(b)) return false;
    return memcmp(pft_tensor_data(a), pft_tensor_data(b), sizeof(float) * (size_t)pft_tensor_numel(a)) == 0;
}

/* Every boundary of one batch: the forward from taps[b] gives the whole forward's logits, bit for bit. */
static void boundary_cases(pft_ctx *ctx, pft_head_kind head, const int64_t *lens, int64_t B, const char *what) {
    pft_bert *m = tiny_model(ctx, head, 3);
    const int L = m->cfg.num_layers;
    pft_bert_batch in = make_batch(B, lens);
    pft_tensor *taps[4];
    pft_bert_output full, part;
    CHECK(pft_bert_forward_ex(m, &in, NULL, taps, &full) == PFT_OK, "%s: forward with taps: %s", what, pft_ctx_error(ctx));
    int64_t N = 0;
    for (int64_t b = 0; b < B; b++) N += lens[b];
    for (int b = 0; b <= L; b++) {
        CHECK(taps[b] && pft_tensor_numel(taps[b]) == N * 16, "%s: tap %d holds the %lld real tokens", what, b, (long long)N);
        pft_tensor *x = taps[b] ? pft_tensor_reshape(taps[b], 2, (int64_t[]){N, 16}) : NULL;
        pft_bert_start s = {.kind = PFT_START_TOKENS, .boundary = b, .x = x};
        CHECK(x && pft_bert_forward_ex(m, &in, &s, NULL, &part) == PFT_OK && same_floats(part.logits, full.logits) &&
                  same_floats(part.hidden, full.hidden), "%s: from boundary %d: the same logits and hidden states", what, b);
        pft_bert_output_release(&part);
        pft_tensor_release(x);
    }
    if (head == PFT_HEAD_SEQCLS) {
        /* the last layer's [CLS] rows, then the pooled output */
        int32_t first[8];
        for (int64_t b = 0, r = 0; b < B; r += lens[b], b++) first[b] = (int32_t)r;
        pft_tensor *flat = pft_tensor_reshape(taps[L], 2, (int64_t[]){N, 16});
        pft_tensor *cls = flat ? pft_embedding(flat, first, 1, &B) : NULL;
        pft_bert_start s = {.kind = PFT_START_FIRST, .x = cls};
        CHECK(cls && pft_bert_forward_ex(m, &in, &s, NULL, &part) == PFT_OK && same_floats(part.logits, full.logits) &&
                  same_floats(part.pooled, full.pooled) && !part.hidden, "%s: from [CLS]", what);
        pft_bert_output_release(&part);
        s = (pft_bert_start){.kind = PFT_START_POOLED, .x = full.pooled};
        CHECK(pft_bert_forward_ex(m, &in, &s, NULL, &part) == PFT_OK && same_floats(part.logits, full.logits), "%s: from pooled", what);
        pft_bert_output_release(&part);
        pft_tensor_release(cls), pft_tensor_release(flat);
    }
    /* errors: a start of the wrong shape, a boundary beyond the layers */
    pft_bert_start bad = {.kind = PFT_START_TOKENS, .boundary = 1, .x = full.pooled ? full.pooled : full.logits};
    CHECK(pft_bert_forward_ex(m, &in, &bad, NULL, &part) == PFT_ERR_SHAPE && strstr(pft_ctx_error(ctx), "start states"),
          "%s: start of the wrong shape (%s)", what, pft_ctx_error(ctx));
    pft_tensor *x0 = pft_tensor_reshape(taps[0], 2, (int64_t[]){N, 16});
    bad = (pft_bert_start){.kind = PFT_START_TOKENS, .boundary = L + 1, .x = x0};
    CHECK(pft_bert_forward_ex(m, &in, &bad, NULL, &part) == PFT_ERR_ARG, "%s: boundary past the last layer", what);
    if (head == PFT_HEAD_TOKCLS) {
        bad = (pft_bert_start){.kind = PFT_START_POOLED, .x = x0};
        CHECK(pft_bert_forward_ex(m, &in, &bad, NULL, &part) == PFT_ERR_ARG, "%s: pooled start needs a sequence head", what);
    }
    pft_tensor_release(x0);
    pft_bert_output_release(&full);
    for (int b = 0; b <= L; b++) pft_tensor_release(taps[b]);
    free_batch(&in);
    pft_bert_free(m);
}

/* States written from one batch of four rows, gathered for another batch (rows 2 and 0) and trained
 * from at boundary 2 (dropout on above it): the same loss and gradients as the live forward, in eval
 * mode below the boundary, within 1e-6. */
static void across_batches(pft_ctx *ctx, const char *dir) {
    pft_bert *m = tiny_model(ctx, PFT_HEAD_SEQCLS, 2);
    const int64_t lens[4] = {5, 3, 7, 4};
    pft_bert_batch all = make_batch(4, lens);
    pft_tensor *taps[4];
    pft_bert_output out;
    CHECK(pft_bert_forward_ex(m, &all, NULL, taps, &out) == PFT_OK, "capture");
    char path[256];
    snprintf(path, sizeof path, "%s/b2.act", dir);
    pft_states_writer *w = pft_states_writer_open(ctx, path, 9, 4, lens, 16, false);
    CHECK(w && pft_states_writer_add(w, pft_tensor_data(taps[2]), 19, 4, lens) == PFT_OK && pft_states_writer_commit(w) == PFT_OK,
          "write boundary 2: %s", pft_ctx_error(ctx));
    pft_bert_output_release(&out);
    for (int b = 0; b < 4; b++) pft_tensor_release(taps[b]);
    pft_states *s = pft_states_open(ctx, path, 9, 4, lens, 16, false, NULL);
    const int64_t sub_lens[2] = {7, 5};
    pft_bert_batch sub = make_batch(2, sub_lens); /* then given the ids of rows 2 and 0 of `all` */
    int32_t *ids = (int32_t *)sub.input_ids;
    for (int64_t t = 0; t < 7; t++) ids[t] = all.input_ids[2 * all.T + t];
    for (int64_t t = 0; t < 5; t++) ids[sub.T + t] = all.input_ids[0 * all.T + t];
    const int32_t labels[2] = {1, 0};
    float loss_live = 0, loss_cached = 0, grad_live[16 * 16], grad_cached[16 * 16];
    pft_tensor *qw = m->layers[2].q_w;
    for (int pass = 0; pass < 2; pass++) {
        pft_bert_set_training(m, true);
        m->embeddings_training = false, m->layers[0].training = m->layers[1].training = false;
        pft_ctx_set_seed(ctx, 1234); /* the same dropout masks in both passes */
        qw->requires_grad = true;
        pft_tensor_zero_grad(qw);
        pft_tensor *x = pass ? pft_states_gather(s, 2, (int64_t[]){2, 0}) : NULL;
        pft_bert_start st = {.kind = PFT_START_TOKENS, .boundary = 2, .x = x};
        CHECK(pft_bert_forward_ex(m, &sub, pass ? &st : NULL, NULL, &out) == PFT_OK, "pass %d forward: %s", pass, pft_ctx_error(ctx));
        pft_tensor *loss = pft_bert_loss(m, out.logits, labels, NULL);
        CHECK(loss && pft_backward(loss, NULL) == PFT_OK, "pass %d backward", pass);
        (pass ? &loss_cached : &loss_live)[0] = loss ? pft_tensor_data(loss)[0] : NAN;
        if (qw->grad) memcpy(pass ? grad_cached : grad_live, pft_tensor_data(qw->grad), sizeof grad_live);
        pft_tensor_release(loss), pft_tensor_release(x);
        pft_bert_output_release(&out);
    }
    CHECK(fabsf(loss_live - loss_cached) <= 1e-6f * fabsf(loss_live), "loss from gathered states %.9g vs live %.9g", loss_cached,
          loss_live);
    CHECK(max_abs_diff(grad_live, grad_cached, 16 * 16) <= 1e-5f, "gradient from gathered states");
    pft_states_free(s);
    free_batch(&all), free_batch(&sub);
    pft_bert_free(m);
}

int main(void) {
    TEST_BEGIN("states");
    pft_ctx *ctx = pft_ctx_new(1, 7);
    char dir[] = DIR_TMPL;
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    store_cases(ctx, dir);
    fuzz_findings(ctx, dir);
    boundary_cases(ctx, PFT_HEAD_SEQCLS, (int64_t[]){5, 2, 7}, 3, "seqcls padded");
    boundary_cases(ctx, PFT_HEAD_SEQCLS, (int64_t[]){4, 4}, 2, "seqcls unpadded");
    boundary_cases(ctx, PFT_HEAD_TOKCLS, (int64_t[]){3, 6}, 2, "tokcls padded");
    across_batches(ctx, dir);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("states: could not remove %s\n", dir);
    pft_ctx_free(ctx);
    return TEST_END();
}
