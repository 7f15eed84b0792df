/* fuzz_tokenizer.c - the BERT tokenizer (core/text.c) on arbitrary text, every normalization setting,
 * single texts, pairs, batches, truncation and fixed padding, over the real all-MiniLM-L6-v2 vocab
 * (tests/fixtures/tokenizer/minilm).
 *
 * Input: byte 0 picks the settings (bit 0 do_lower_case, bits 1-2 strip_accents -1 / 0 / 1 / an invalid 2
 * that set_config must refuse, bit 3 tokenize_chinese_chars, bits 4-6 the call: encode a text, encode a
 * pair, a batch of texts, a batch of pairs, the word splitter); byte 1 max_length (0 = no truncation;
 * 1 and 2 are invalid for a pair and must be refused); byte 2 pad_to for batches (0 = longest row, else
 * max_length + byte 2 % 8, or an invalid value when max_length is 0). The rest is the texts, split at
 * byte 0x1e (a control character the tokenizer drops anyway); a pair takes two consecutive pieces.
 *
 * Checks, beyond the sanitizers: every encoding is [CLS] ... [SEP] (... [SEP]) with ids in the vocab,
 * type ids 0 then 1, at most max_length tokens, truncated exactly as text.h documents (longest_first
 * for pairs) and only at the end (the truncated ids are prefixes of the untruncated ones); a batch row
 * equals the same text encoded alone, is right-padded with [PAD] and masked; the word splitter never
 * passes an empty word, whitespace or NUL, nor (lowercasing) an ASCII capital outside a special token. */
#include "fuzz.h"
#include "text.h"

#define MAX_ROWS 64
#define SEP_BYTE 0x1e

static pft_ctx *ctx;
static pft_tokenizer *tok;
static int32_t cls_id, sep_id, pad_id, vocab;
static pft_batch batch; /* reused across inputs, as callers do */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    ctx = pft_ctx_new(1, 0);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizer/minilm", fuzz_root());
    tok = pft_tokenizer_load(ctx, dir);
    if (!tok) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", pft_ctx_error(ctx));
        exit(2);
    }
    cls_id = pft_tokenizer_special_id(tok, PFT_SPECIAL_CLS);
    sep_id = pft_tokenizer_special_id(tok, PFT_SPECIAL_SEP);
    pad_id = pft_tokenizer_special_id(tok, PFT_SPECIAL_PAD);
    vocab = pft_tokenizer_vocab_size(tok);
    return 0;
}

/* A copy of an encoding (the tokenizer's buffers are overwritten by the next call). */
typedef struct enc {
    int32_t *ids, *types;
    int n, n0; /* n0: tokens of type 0 ([CLS] A [SEP]) */
} enc;

static int encode(enc *e, const char *a, size_t alen, const char *b, size_t blen, int max_length) {
    pft_encoding out;
    if (pft_tokenizer_encode(tok, a, alen, b, blen, max_length, &out) != PFT_OK) return 0;
    e->n = out.n;
    e->ids = malloc((size_t)out.n * sizeof *e->ids);
    e->types = malloc((size_t)out.n * sizeof *e->types);
    FUZZ_CHECK(e->ids && e->types, "malloc");
    memcpy(e->ids, out.ids, (size_t)out.n * sizeof *e->ids);
    memcpy(e->types, out.type_ids, (size_t)out.n * sizeof *e->types);
    e->n0 = 0;
    while (e->n0 < e->n && e->types[e->n0] == 0) e->n0++;
    return 1;
}

static void enc_free(enc *e) { free(e->ids), free(e->types); }

/* The shape every encoding has, whatever the text. */
static void check_shape(const enc *e, int pair, int max_length) {
    FUZZ_CHECK(e->n >= 2 + pair && (max_length == 0 || e->n <= max_length), "%d tokens, max_length %d", e->n, max_length);
    FUZZ_CHECK(e->ids[0] == cls_id && e->ids[e->n - 1] == sep_id, "not [CLS] ... [SEP]");
    FUZZ_CHECK(e->ids[e->n0 - 1] == sep_id, "type-0 part does not end in [SEP]");
    FUZZ_CHECK(pair ? e->n0 < e->n : e->n0 == e->n, "type ids: %d of %d tokens type 0 (pair %d)", e->n0, e->n, pair);
    for (int i = 0; i < e->n; i++) {
        FUZZ_CHECK(e->ids[i] >= 0 && e->ids[i] < vocab, "id %d out of the vocab", e->ids[i]);
        FUZZ_CHECK(e->types[i] == (i >= e->n0), "type id %d at %d (n0 %d)", e->types[i], i, e->n0);
    }
}

/* text.h's truncation rule, written again from its description. */
static void expect_lengths(int na, int nb, int pair, int max_length, int *ka, int *kb) {
    *ka = na, *kb = nb;
    if (max_length == 0) return;
    if (!pair) {
        if (na > max_length - 2) *ka = max_length - 2;
        return;
    }
    int room = max_length - 3;
    if (na + nb <= room) return;
    int shorter = na < nb ? na : nb;
    if (2 * shorter <= room) { /* the shorter part fits in half the room: the longer one gets the rest */
        if (na < nb) *kb = room - na;
        else *ka = room - nb;
        return;
    }
    int half = room / 2; /* each gets half; the longer (the second on a tie) the odd token */
    *ka = half, *kb = half;
    if (na > nb) *ka += room % 2;
    else *kb += room % 2;
}

/* e (truncated to max_length) against full (the same text untruncated): lengths by the rule, prefixes. */
static void check_truncation(const enc *e, const enc *full, int pair, int max_length) {
    int na = full->n0 - 2, nb = pair ? full->n - full->n0 - 1 : 0, ka, kb;
    expect_lengths(na, nb, pair, max_length, &ka, &kb);
    FUZZ_CHECK(e->n0 - 2 == ka && (!pair || e->n - e->n0 - 1 == kb),
               "truncation to %d: parts %d + %d became %d + %d, expected %d + %d", max_length, na, nb, e->n0 - 2,
               pair ? e->n - e->n0 - 1 : 0, ka, kb);
    FUZZ_CHECK(!memcmp(e->ids + 1, full->ids + 1, (size_t)ka * sizeof *e->ids), "first part is not a prefix");
    if (pair) FUZZ_CHECK(!memcmp(e->ids + e->n0, full->ids + full->n0, (size_t)kb * sizeof *e->ids), "second part is not a prefix");
}

typedef struct words_state {
    int lower, count;
} words_state;

static void on_word(void *ud, const char *w, size_t n) {
    words_state *s = ud;
    s->count++;
    FUZZ_CHECK(n > 0, "empty word");
    int special = 0;
    for (int k = 0; k < PFT_SPECIAL_COUNT; k++) {
        int32_t id = pft_tokenizer_special_id(tok, (pft_special)k);
        const char *sp = id >= 0 ? pft_tokenizer_token(tok, id) : NULL;
        if (sp && strlen(sp) == n && !memcmp(sp, w, n)) special = 1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)w[i];
        FUZZ_CHECK(c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != 0, "byte 0x%02x in a word", c);
        FUZZ_CHECK(special || !s->lower || !(c >= 'A' && c <= 'Z'), "capital '%c' in a lowercased word", c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    uint8_t c0 = data[0], c1 = data[1], c2 = data[2];
    pft_tokenizer_config cfg = pft_tokenizer_get_config(tok);
    cfg.lowercase = c0 & 1;
    cfg.strip_accents = ((c0 >> 1) & 3) - 1;
    cfg.chinese_chars = (c0 >> 3) & 1;
    pft_tokenizer_config before = pft_tokenizer_get_config(tok);
    pft_status st = pft_tokenizer_set_config(tok, &cfg);
    if (cfg.strip_accents == 2) {
        FUZZ_CHECK(st != PFT_OK, "strip_accents 2 accepted");
        pft_tokenizer_config now = pft_tokenizer_get_config(tok);
        FUZZ_CHECK(!memcmp(&now, &before, sizeof now), "a refused config changed the settings");
        cfg.strip_accents = -1;
        FUZZ_CHECK(pft_tokenizer_set_config(tok, &cfg) == PFT_OK, "set_config: %s", pft_ctx_error(ctx));
    } else {
        FUZZ_CHECK(st == PFT_OK, "set_config: %s", pft_ctx_error(ctx));
    }
    int mode = (c0 >> 4) & 7, max_length = c1;
    int pair = mode == 1 || mode == 3, batched = mode == 2 || mode == 3;

    /* the texts */
    const char *piece[2 * MAX_ROWS];
    size_t plen[2 * MAX_ROWS];
    int np = 0;
    const char *p = (const char *)data + 3, *end = (const char *)data + size;
    while (np < 2 * MAX_ROWS) {
        const char *q = memchr(p, SEP_BYTE, (size_t)(end - p));
        piece[np] = p, plen[np] = (size_t)((q ? q : end) - p), np++;
        if (!q) break;
        p = q + 1;
    }

    if (mode >= 4) { /* the word splitter */
        words_state ws = {cfg.lowercase, 0};
        for (int i = 0; i < np; i++)
            FUZZ_CHECK(pft_tokenizer_words(tok, piece[i], plen[i], on_word, &ws) == PFT_OK, "words: %s", pft_ctx_error(ctx));
        return 0;
    }

    int rows = pair ? np / 2 : np;
    if (rows > MAX_ROWS) rows = MAX_ROWS;
    if (!batched && rows > 1) rows = 1;
    if (rows == 0) return 0;
    int valid_max = max_length == 0 || max_length >= (pair ? 3 : 2);
    enc e[MAX_ROWS];
    int ok[MAX_ROWS], na_full[MAX_ROWS]; /* tokens of the first text, untruncated */
    for (int i = 0; i < rows; i++) {
        const char *a = piece[pair ? 2 * i : i], *b = pair ? piece[2 * i + 1] : NULL;
        size_t alen = plen[pair ? 2 * i : i], blen = pair ? plen[2 * i + 1] : 0;
        ok[i] = encode(&e[i], a, alen, b, blen, max_length);
        FUZZ_CHECK(ok[i] == valid_max, "encode with max_length %d (pair %d): %s", max_length, pair,
                   ok[i] ? "accepted" : pft_ctx_error(ctx));
        if (!ok[i]) continue;
        int is_pair = pair && blen > 0; /* tok(a, "") is a single text, as in transformers */
        check_shape(&e[i], is_pair, max_length);
        na_full[i] = e[i].n0 - 2;
        if (max_length > 0) {
            enc full;
            FUZZ_CHECK(encode(&full, a, alen, b, blen, 0), "untruncated encode: %s", pft_ctx_error(ctx));
            check_shape(&full, is_pair, 0);
            check_truncation(&e[i], &full, is_pair, max_length);
            na_full[i] = full.n0 - 2;
            enc_free(&full);
        }
    }
    if (!valid_max) return 0;

    if (batched) {
        const char *a[MAX_ROWS], *b[MAX_ROWS];
        size_t alen[MAX_ROWS], blen[MAX_ROWS];
        for (int i = 0; i < rows; i++) {
            a[i] = piece[pair ? 2 * i : i], alen[i] = plen[pair ? 2 * i : i];
            if (pair) b[i] = piece[2 * i + 1], blen[i] = plen[2 * i + 1];
        }
        int pad_to = c2 == 0 ? 0 : max_length > 0 ? max_length + c2 % 8 : c2;
        int valid_pad = pad_to == 0 || (max_length > 0 && max_length <= pad_to);
        st = pft_tokenizer_encode_batch(tok, rows, a, alen, pair ? b : NULL, pair ? blen : NULL, max_length, pad_to, &batch);
        FUZZ_CHECK((st == PFT_OK) == valid_pad, "encode_batch with max_length %d pad_to %d: %s", max_length, pad_to,
                   st == PFT_OK ? "accepted" : pft_ctx_error(ctx));
        if (st == PFT_OK) {
            FUZZ_CHECK(batch.n == rows && batch.t >= 2 && (pad_to == 0 || batch.t == pad_to), "batch %d x %d", batch.n, batch.t);
            int longest = 0;
            for (int i = 0; i < rows; i++) {
                int len = batch.lengths[i];
                const int32_t *ids = batch.ids + (size_t)i * batch.t, *ty = batch.type_ids + (size_t)i * batch.t,
                              *m = batch.mask + (size_t)i * batch.t;
                if (len > longest) longest = len;
                FUZZ_CHECK(len <= batch.t, "row %d: length %d > t %d", i, len, batch.t);
                if (pair && blen[i] == 0) {
                    /* in a batch an empty second text stays a pair: [CLS] a [SEP] [SEP], a cut to the pair's room */
                    int ka = max_length > 0 && na_full[i] > max_length - 3 ? max_length - 3 : na_full[i];
                    FUZZ_CHECK(len == ka + 3, "row %d: %d tokens in the batch, expected %d + 3", i, len, ka);
                    FUZZ_CHECK(!memcmp(ids, e[i].ids, (size_t)(ka + 1) * sizeof *ids), "row %d: first text differs", i);
                    FUZZ_CHECK(ids[len - 2] == sep_id && ids[len - 1] == sep_id && ty[len - 1] == 1 && ty[len - 2] == 0,
                               "row %d: not [CLS] a [SEP] [SEP]", i);
                } else {
                    FUZZ_CHECK(len == e[i].n, "row %d: %d tokens in the batch, %d alone", i, len, e[i].n);
                    FUZZ_CHECK(!memcmp(ids, e[i].ids, (size_t)len * sizeof *ids), "row %d differs from the text alone", i);
                    FUZZ_CHECK(!memcmp(ty, e[i].types, (size_t)len * sizeof *ty), "row %d: type ids differ", i);
                }
                for (int j = 0; j < batch.t; j++) {
                    FUZZ_CHECK(m[j] == (j < len), "row %d: mask %d at %d (length %d)", i, m[j], j, len);
                    if (j >= len) FUZZ_CHECK(ids[j] == pad_id && ty[j] == 0, "row %d: padding at %d is %d/%d", i, j, ids[j], ty[j]);
                }
            }
            FUZZ_CHECK(pad_to > 0 || batch.t == longest, "t %d, longest row %d", batch.t, longest);
        }
    }
    for (int i = 0; i < rows; i++)
        if (ok[i]) enc_free(&e[i]);
    return 0;
}
