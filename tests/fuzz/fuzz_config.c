/* fuzz_config.c - the model and tokenizer configuration readers: config.json (pft_bert_config_load, then
 * a model built from it), tokenizer_config.json, special_tokens_map.json and vocab.txt (pft_tokenizer_load).
 *
 * Input: byte 0 picks the file, the rest is its content:
 *   0 config.json: a config that loads has hidden_size split into heads; when it describes a small model
 *     (so that memory stays bounded), the model is built with each head kind and run forward on a tiny
 *     batch in eval and training mode: either a clean error or outputs of the right shape;
 *   1 tokenizer_config.json, 2 special_tokens_map.json, 3 vocab.txt: beside the other two files of the
 *     tiny test tokenizer (tests/fixtures/bert/tiny_seqcls); a tokenizer that loads has its special
 *     tokens in the vocab, finds every token by its bytes (the last of duplicates), and encodes a few
 *     fixed texts into [CLS] ... [SEP] with ids in the vocab. */
#include <math.h>

#include "fuzz.h"
#include "nn.h"
#include "tensor.h"
#include "text.h"

static pft_ctx *ctx;
static char tokdir[PATH_MAX];
static char *fixture[3]; /* tokenizer_config.json, special_tokens_map.json, vocab.txt of the fixture */
static size_t fixture_len[3];
static const char *tok_files[3] = {"tokenizer_config.json", "special_tokens_map.json", "vocab.txt"};

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) free(buf), buf = NULL;
    fclose(f);
    if (buf) buf[len] = '\0', *n = (size_t)len;
    return buf;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    ctx = pft_ctx_new(1, 0);
    char p[PATH_MAX + 64];
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/tests/fixtures/bert/tiny_seqcls/%s", fuzz_root(), tok_files[k]);
        fixture[k] = slurp(p, &fixture_len[k]);
        if (!fixture[k] && k != 1) { /* the fixture has no special_tokens_map.json: the defaults apply */
            fprintf(stderr, "fuzz_config: cannot read %s\n", p);
            exit(2);
        }
    }
    fuzz_path(tokdir, sizeof tokdir, "tok");
    mkdir(tokdir, 0700);
    return 0;
}

/* --- config.json -> model ------------------------------------------------------------------------ */

static int small_model(const pft_bert_config *c) {
    return c->vocab_size <= 512 && c->hidden_size <= 64 && c->num_layers <= 3 && c->intermediate_size <= 256 &&
           c->max_position_embeddings <= 128 && c->type_vocab_size <= 8;
}

static void check_tensor(const pft_tensor *t, int ndim, const int64_t *shape, const char *what) {
    FUZZ_CHECK(t, "%s missing", what);
    FUZZ_CHECK(t->ndim == ndim, "%s: ndim %d, expected %d", what, t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        FUZZ_CHECK(t->shape[d] == shape[d], "%s: dim %d is %lld, expected %lld", what, d, (long long)t->shape[d], (long long)shape[d]);
}

static void run_model(const pft_bert_config *cfg, int head) {
    int num_labels = head == PFT_HEAD_NONE ? 0 : 1 + head;
    pft_bert *m = pft_bert_new(ctx, cfg, (pft_head_kind)head, num_labels);
    if (!m) {
        FUZZ_CHECK(pft_ctx_error(ctx)[0], "pft_bert_new failed without a message");
        return;
    }
    enum { B = 2, T = 3 };
    int32_t ids[B * T], types[B * T], mask[B * T] = {1, 1, 1, 1, 1, 0};
    for (int i = 0; i < B * T; i++) {
        ids[i] = cfg->vocab_size ? i % cfg->vocab_size : 0;
        types[i] = i % 2 ? 0 : (cfg->type_vocab_size > 1); /* 1 where the config has a second type */
    }
    pft_bert_batch in = {B, T, ids, types, mask};
    for (int training = 0; training < 2; training++) {
        pft_bert_set_training(m, training);
        pft_bert_output out = {0};
        if (pft_bert_forward(m, &in, &out) == PFT_OK) {
            const int64_t hs[3] = {B, T, cfg->hidden_size}, ls2[2] = {B, num_labels}, ls3[3] = {B, T, num_labels};
            check_tensor(out.hidden, 3, hs, "hidden");
            if (head == PFT_HEAD_SEQCLS) check_tensor(out.logits, 2, ls2, "logits");
            if (head == PFT_HEAD_TOKCLS) check_tensor(out.logits, 3, ls3, "logits");
            if (head == PFT_HEAD_NONE) FUZZ_CHECK(!out.logits, "logits without a head");
        } else {
            FUZZ_CHECK(pft_ctx_error(ctx)[0], "forward failed without a message");
        }
        pft_bert_output_release(&out);
    }
    pft_bert_free(m);
}

static void fuzz_bert_config(const char *path) {
    pft_bert_config cfg;
    if (pft_bert_config_load(ctx, path, &cfg) != PFT_OK) {
        FUZZ_CHECK(pft_ctx_error(ctx)[0], "config load failed without a message");
        return;
    }
    FUZZ_CHECK(cfg.hidden_size > 0 && cfg.num_heads > 0 && cfg.hidden_size % cfg.num_heads == 0,
               "hidden_size %d, %d heads accepted", cfg.hidden_size, cfg.num_heads);
    FUZZ_CHECK(cfg.vocab_size >= 0 && cfg.num_layers >= 0 && cfg.intermediate_size >= 0 &&
                   cfg.max_position_embeddings >= 0 && cfg.type_vocab_size >= 0,
               "a negative size accepted");
    if (!small_model(&cfg)) return;
    for (int head = PFT_HEAD_NONE; head <= PFT_HEAD_TOKCLS; head++) run_model(&cfg, head);
}

/* --- tokenizer files ------------------------------------------------------------------------------- */

static void check_encoding(const pft_tokenizer *tok, const pft_encoding *e) {
    int32_t nv = pft_tokenizer_vocab_size(tok);
    FUZZ_CHECK(e->n >= 2, "%d tokens", e->n);
    FUZZ_CHECK(e->ids[0] == pft_tokenizer_special_id(tok, PFT_SPECIAL_CLS), "no [CLS] first");
    FUZZ_CHECK(e->ids[e->n - 1] == pft_tokenizer_special_id(tok, PFT_SPECIAL_SEP), "no [SEP] last");
    for (int i = 0; i < e->n; i++) FUZZ_CHECK(e->ids[i] >= 0 && e->ids[i] < nv, "id %d of %d", e->ids[i], nv);
}

static void fuzz_tokenizer_files(int which, const uint8_t *data, size_t size) {
    char p[PATH_MAX + 64];
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", tokdir, tok_files[k]);
        if (k == which) fuzz_write(p, data, size);
        else if (fixture[k]) fuzz_write(p, fixture[k], fixture_len[k]);
        else unlink(p);
    }
    pft_tokenizer *tok = pft_tokenizer_load(ctx, tokdir);
    if (!tok) {
        FUZZ_CHECK(pft_ctx_error(ctx)[0], "tokenizer load failed without a message");
        return;
    }
    int32_t nv = pft_tokenizer_vocab_size(tok);
    FUZZ_CHECK(nv > 0, "vocab of %d tokens", nv);
    for (int k = 0; k < PFT_SPECIAL_COUNT; k++) {
        int32_t id = pft_tokenizer_special_id(tok, (pft_special)k);
        FUZZ_CHECK(id < nv && (id >= 0 || k == PFT_SPECIAL_MASK), "special %d has id %d", k, id);
    }
    /* every token is found by its bytes, as the last line with those bytes (a NUL in a line cuts the
     * C string short, so only a vocab without NUL is checked) */
    if (which != 2 || !memchr(data, 0, size)) {
        for (int32_t i = 0; i < nv; i++) {
            const char *s = pft_tokenizer_token(tok, i);
            FUZZ_CHECK(s, "token %d is NULL", i);
            int32_t j = pft_tokenizer_id(tok, s);
            FUZZ_CHECK(j >= i && j < nv && !strcmp(pft_tokenizer_token(tok, j), s), "token %d ('%s') has id %d", i, s, j);
        }
    }
    FUZZ_CHECK(pft_tokenizer_token(tok, nv) == NULL && pft_tokenizer_token(tok, -1) == NULL, "token out of range");
    static const char *texts[] = {"Hello, world! [CLS] the film", "na\xc3\xafve caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd",
                                  "[UNK][SEP][PAD][MASK] ##a", "unaffable", ""};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        pft_encoding e;
        FUZZ_CHECK(pft_tokenizer_encode(tok, texts[i], PFT_TEXT_CSTR, NULL, 0, 16, &e) == PFT_OK, "encode: %s", pft_ctx_error(ctx));
        check_encoding(tok, &e);
        FUZZ_CHECK(pft_tokenizer_encode(tok, texts[i], PFT_TEXT_CSTR, "a pair", PFT_TEXT_CSTR, 0, &e) == PFT_OK, "encode: %s",
                   pft_ctx_error(ctx));
        check_encoding(tok, &e);
    }
    pft_tokenizer_free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int which = data[0] % 4;
    if (which == 0) {
        char path[PATH_MAX];
        fuzz_path(path, sizeof path, "config.json");
        fuzz_write(path, data + 1, size - 1);
        fuzz_bert_config(path);
    } else {
        fuzz_tokenizer_files(which - 1, data + 1, size - 1);
    }
    return 0;
}
