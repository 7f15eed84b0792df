/* encoded.c - the encoded-dataset store, its cache file and the batch-order permutation (encoded.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "encoded.h"
#include "rng.h"

/* Bump when the layout of the file or the meaning of its rows changes: older files then read as stale
 * ("another format version") and are encoded again, never misread. */
#define CACHE_VERSION 1u
/* Rows per pft_tokenizer_encode_batch call: bounds the padded scratch batch (rows x longest row). */
#define ENCODE_CHUNK 512
#define MAX_LENGTH_LIMIT (1 << 20)

_Static_assert(sizeof(pft_encoded_header) == 80, "the cache header is 80 bytes, without padding");

/* --- hashes ------------------------------------------------------------------------------------------ */

#define FNV_PRIME 1099511628211ull

uint64_t pft_encoded_hash(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * FNV_PRIME;
    return h;
}

/* a number enters a hash as its 8 native bytes */
static uint64_t fnv_u64(uint64_t h, uint64_t v) { return pft_encoded_hash(h, &v, sizeof v); }

uint64_t pft_encoded_vocab_hash(const pft_tokenizer *tok) {
    uint64_t h = PFT_ENCODED_HASH_START;
    int nv = pft_tokenizer_vocab_size(tok);
    for (int i = 0; i < nv; i++) {
        const char *s = pft_tokenizer_token(tok, i);
        h = pft_encoded_hash(h, s, strlen(s) + 1); /* the NUL separates tokens: {"ab","c"} != {"a","bc"} */
    }
    pft_tokenizer_config c = pft_tokenizer_get_config(tok);
    h = fnv_u64(h, (uint64_t)(int64_t)c.lowercase);
    h = fnv_u64(h, (uint64_t)(int64_t)c.strip_accents);
    h = fnv_u64(h, (uint64_t)(int64_t)c.chinese_chars);
    for (int s = 0; s < PFT_SPECIAL_COUNT; s++)
        h = fnv_u64(h, (uint64_t)(int64_t)pft_tokenizer_special_id(tok, (pft_special)s));
    return h;
}

uint64_t pft_encoded_text_hash_begin(int64_t n, bool pairs) {
    return fnv_u64(fnv_u64(PFT_ENCODED_HASH_START, (uint64_t)n), (uint64_t)pairs);
}

/* the length first, so that texts cannot run into each other */
uint64_t pft_encoded_text_hash_add(uint64_t h, const char *s, size_t len) {
    return pft_encoded_hash(fnv_u64(h, (uint64_t)len), s, len);
}

uint64_t pft_encoded_text_hash(int64_t n, const char *const *a, const size_t *alen, const char *const *b,
                               const size_t *blen) {
    uint64_t h = pft_encoded_text_hash_begin(n, b != NULL);
    for (int64_t i = 0; i < n; i++) h = pft_encoded_text_hash_add(h, a[i], alen ? alen[i] : strlen(a[i]));
    for (int64_t i = 0; b && i < n; i++) h = pft_encoded_text_hash_add(h, b[i], blen ? blen[i] : strlen(b[i]));
    return h;
}

/* --- the store --------------------------------------------------------------------------------------- */

pft_encoded *pft_encoded_new(pft_ctx *ctx, int64_t max_length, bool pairs) {
    if (max_length < (pairs ? 3 : 2) || max_length > MAX_LENGTH_LIMIT) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "encode_dataset: max_length %lld out of range (at least %d)", (long long)max_length,
                       pairs ? 3 : 2);
        return NULL;
    }
    pft_encoded *e = calloc(1, sizeof *e);
    if (e) e->offsets = calloc(1, sizeof *e->offsets);
    if (!e || !e->offsets) {
        free(e);
        pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "encode_dataset: out of memory");
        return NULL;
    }
    e->ctx = ctx;
    e->max_length = (int32_t)max_length;
    return e;
}

void pft_encoded_free(pft_encoded *e) {
    if (!e) return;
    free(e->offsets);
    free(e->ids);
    free(e->type_ids);
    free(e->words);
    free(e);
}

pft_status pft_encoded_track_words(pft_encoded *e) {
    if (e->n > 0) return pft_ctx_seterr(e->ctx, PFT_ERR_STATE, "encode_dataset: word tracking must start on an empty store");
    if (!e->words && !(e->words = malloc(sizeof *e->words)))
        return pft_ctx_seterr(e->ctx, PFT_ERR_ALLOC, "encode_dataset: out of memory");
    return PFT_OK;
}

/* Room for need tokens; doubling keeps appending chunk after chunk linear. */
static int reserve_tokens(pft_encoded *e, int64_t need) {
    if (need <= e->cap_tok) return 0;
    int64_t cap = e->cap_tok ? e->cap_tok : 4096;
    while (cap < need) cap *= 2;
    int32_t *ids = realloc(e->ids, (size_t)cap * sizeof *ids);
    if (!ids) return -1;
    e->ids = ids;
    uint8_t *ty = realloc(e->type_ids, (size_t)cap);
    if (!ty) return -1;
    e->type_ids = ty;
    if (e->words) {
        int32_t *w = realloc(e->words, (size_t)cap * sizeof *w);
        if (!w) return -1;
        e->words = w;
    }
    e->cap_tok = cap;
    return 0;
}

/* The word of each token of row i of an encoded chunk: how many spaces precede the token's first byte
 * in its text (offsets increase along a row, so one pass over the text). */
static void row_words(int32_t *out, const pft_batch *b, int i, const char *text) {
    const int32_t *wid = b->word_ids + (size_t)i * b->t, *off = b->offsets + (size_t)i * b->t * 2;
    int32_t spaces = 0, at = 0;
    for (int j = 0; j < b->lengths[i]; j++) {
        if (wid[j] < 0) { out[j] = -1; continue; }
        for (; at < off[2 * j]; at++) spaces += text[at] == ' ';
        out[j] = spaces;
    }
}

/* Appends the rows of a padded batch, each cut to its length (and their words, from the texts). */
static int append_rows(pft_encoded *e, const pft_batch *b, const char *const *texts) {
    int64_t add = 0;
    for (int i = 0; i < b->n; i++) add += b->lengths[i];
    if (reserve_tokens(e, e->ntok + add)) return -1;
    for (int i = 0; i < b->n; i++) {
        const int32_t *ids = b->ids + (size_t)i * b->t, *ty = b->type_ids + (size_t)i * b->t;
        int len = b->lengths[i];
        if (len) memcpy(e->ids + e->ntok, ids, (size_t)len * sizeof *ids);
        for (int j = 0; j < len; j++) e->type_ids[e->ntok + j] = (uint8_t)ty[j];
        if (e->words) row_words(e->words + e->ntok, b, i, texts[i]);
        e->ntok += len;
        e->offsets[++e->n] = (uint64_t)e->ntok;
    }
    return 0;
}

pft_status pft_encoded_add(pft_encoded *e, pft_tokenizer *tok, int64_t n, const char *const *a, const size_t *alen,
                           const char *const *b, const size_t *blen) {
    pft_ctx *ctx = e->ctx;
    if (n < 0 || (n > 0 && !a)) return pft_ctx_seterr(ctx, PFT_ERR_ARG, "encode_dataset: %lld texts", (long long)n);
    if (e->n + n > INT32_MAX) return pft_ctx_seterr(ctx, PFT_ERR_ARG, "encode_dataset: too many rows");
    if (b && e->max_length < 3)
        return pft_ctx_seterr(ctx, PFT_ERR_ARG, "encode_dataset: max_length %d out of range (at least 3)", (int)e->max_length);
    if (b && e->words) return pft_ctx_seterr(ctx, PFT_ERR_ARG, "encode_dataset: word tracking is for single texts");
    uint64_t vocab = pft_encoded_vocab_hash(tok);
    if (e->n > 0 && vocab != e->vocab_hash)
        return pft_ctx_seterr(ctx, PFT_ERR_ARG, "encode_dataset: the store holds rows of another tokenizer");
    uint64_t *offsets = realloc(e->offsets, (size_t)(e->n + n + 1) * sizeof *offsets);
    if (!offsets) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "encode_dataset: out of memory");
    e->offsets = offsets;
    int64_t n0 = e->n, ntok0 = e->ntok;
    pft_batch chunk = {0};
    pft_status st = e->words ? pft_tokenizer_track_offsets(tok, 1) : PFT_OK;
    for (int64_t at = 0; at < n && !st; at += ENCODE_CHUNK) {
        int m = (int)(n - at < ENCODE_CHUNK ? n - at : ENCODE_CHUNK);
        st = pft_tokenizer_encode_batch(tok, m, a + at, alen ? alen + at : NULL, b ? b + at : NULL, blen ? blen + at : NULL,
                                        e->max_length, 0, &chunk);
        if (!st && append_rows(e, &chunk, a + at)) st = pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "encode_dataset: out of memory");
    }
    if (e->words) pft_tokenizer_track_offsets(tok, 0);
    pft_batch_free(&chunk);
    if (st) {
        e->n = n0, e->ntok = ntok0;
        return st;
    }
    if (n0 == 0) {
        e->vocab_hash = vocab;
        e->pad_id = pft_tokenizer_special_id(tok, PFT_SPECIAL_PAD);
    }
    return PFT_OK;
}

/* Arrays of out for m rows of t tokens, reusing what it has (as pft_tokenizer_encode_batch does). */
static int reserve_batch(pft_batch *out, size_t m, size_t cells) {
    if (cells > out->cap_cells || !out->ids) {
        int32_t *p1 = realloc(out->ids, (cells ? cells : 1) * sizeof *p1);
        if (p1) out->ids = p1;
        int32_t *p2 = realloc(out->type_ids, (cells ? cells : 1) * sizeof *p2);
        if (p2) out->type_ids = p2;
        int32_t *p3 = realloc(out->mask, (cells ? cells : 1) * sizeof *p3);
        if (p3) out->mask = p3;
        if (!p1 || !p2 || !p3) return -1;
        out->cap_cells = cells ? cells : 1;
    }
    if (m > out->cap_rows || !out->lengths) {
        int32_t *p = realloc(out->lengths, (m ? m : 1) * sizeof *p);
        if (!p) return -1;
        out->lengths = p;
        out->cap_rows = m ? m : 1;
    }
    return 0;
}

pft_status pft_encoded_gather(const pft_encoded *e, int64_t m, const int64_t *rows, int64_t pad_to, pft_batch *out) {
    pft_ctx *ctx = e->ctx;
    if (m < 1) return pft_ctx_seterr(ctx, PFT_ERR_ARG, "gather: no rows");
    if (m > INT32_MAX / 2) return pft_ctx_seterr(ctx, PFT_ERR_ARG, "gather: too many rows");
    int64_t t = 0;
    for (int64_t i = 0; i < m; i++) {
        if (rows[i] < 0 || rows[i] >= e->n)
            return pft_ctx_seterr(ctx, PFT_ERR_ARG, "gather: row index %lld out of range [0, %lld)", (long long)rows[i],
                                  (long long)e->n);
        int64_t len = pft_encoded_row_length(e, rows[i]);
        if (len > t) t = len;
    }
    if (pad_to > 0) {
        if (pad_to < t)
            return pft_ctx_seterr(ctx, PFT_ERR_ARG, "gather: pad_to %lld is shorter than the longest row (%lld)",
                                  (long long)pad_to, (long long)t);
        t = pad_to;
    }
    if (t * m > INT32_MAX) return pft_ctx_seterr(ctx, PFT_ERR_ARG, "gather: batch too large");
    if (reserve_batch(out, (size_t)m, (size_t)(t * m))) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "gather: out of memory");
    out->n = (int)m, out->t = (int)t;
    free(out->word_ids), free(out->offsets); /* a tokenizer's tracking from an earlier fill would not match */
    out->word_ids = out->offsets = NULL, out->cap_track = 0;
    for (int64_t i = 0; i < m; i++) {
        uint64_t off = e->offsets[rows[i]];
        int len = (int)pft_encoded_row_length(e, rows[i]);
        int32_t *ids = out->ids + i * t, *ty = out->type_ids + i * t, *mask = out->mask + i * t;
        if (len) memcpy(ids, e->ids + off, (size_t)len * sizeof *ids);
        for (int j = 0; j < len; j++) ty[j] = e->type_ids[off + j], mask[j] = 1;
        for (int64_t j = len; j < t; j++) ids[j] = e->pad_id, ty[j] = 0, mask[j] = 0;
        out->lengths[i] = len;
    }
    return PFT_OK;
}

/* --- token classification: labels per token, predictions per word ---------------------------------- */

static pft_status check_word_rows(const pft_encoded *e, const char *what, int64_t m, const int64_t *rows, int64_t t) {
    if (!e->words) return pft_ctx_seterr(e->ctx, PFT_ERR_STATE, "%s: the store was encoded without word tracking", what);
    for (int64_t i = 0; i < m; i++) {
        if (rows[i] < 0 || rows[i] >= e->n)
            return pft_ctx_seterr(e->ctx, PFT_ERR_ARG, "%s: row index %lld out of range [0, %lld)", what, (long long)rows[i],
                                  (long long)e->n);
        if (pft_encoded_row_length(e, rows[i]) > t)
            return pft_ctx_seterr(e->ctx, PFT_ERR_ARG, "%s: row %lld has %lld tokens, the batch only %lld", what,
                                  (long long)rows[i], (long long)pft_encoded_row_length(e, rows[i]), (long long)t);
    }
    return PFT_OK;
}

pft_status pft_encoded_token_labels(const pft_encoded *e, int64_t m, const int64_t *rows, int64_t t,
                                    const int32_t *word_labels, const int64_t *label_at, const int64_t *nwords,
                                    const int32_t *continuation, int32_t k, int32_t *out) {
    pft_status st = check_word_rows(e, "token_labels", m, rows, t);
    if (st) return st;
    for (int64_t i = 0; i < m; i++) {
        const int32_t *w = e->words + e->offsets[rows[i]];
        int64_t len = pft_encoded_row_length(e, rows[i]);
        int32_t *o = out + i * t;
        for (int64_t j = 0; j < t; j++) o[j] = -100;
        for (int64_t j = 0; j < len; j++) {
            if (w[j] < 0) continue;
            if (w[j] >= nwords[i])
                return pft_ctx_seterr(e->ctx, PFT_ERR_ARG, "token_labels: row %lld has a token of word %d but %lld tags",
                                      (long long)rows[i], (int)w[j], (long long)nwords[i]);
            int32_t label = word_labels[label_at[i] + w[j]];
            if (j == 0 || w[j - 1] != w[j]) o[j] = label;
            else if (continuation && label >= 0 && label < k) o[j] = continuation[label];
        }
    }
    return PFT_OK;
}

pft_status pft_encoded_word_argmax(const pft_encoded *e, int64_t m, const int64_t *rows, int64_t t, int32_t k,
                                   const float *logits, const int64_t *label_at, const int64_t *nwords, int32_t *out) {
    pft_status st = check_word_rows(e, "word_argmax", m, rows, t);
    if (st) return st;
    for (int64_t i = 0; i < m; i++) {
        const int32_t *w = e->words + e->offsets[rows[i]];
        int64_t len = pft_encoded_row_length(e, rows[i]);
        int32_t *o = out + label_at[i];
        for (int64_t x = 0; x < nwords[i]; x++) o[x] = -1;
        for (int64_t j = 0; j < len; j++) {
            if (w[j] < 0 || w[j] >= nwords[i] || (j > 0 && w[j - 1] == w[j])) continue;
            const float *z = logits + ((size_t)i * (size_t)t + (size_t)j) * (size_t)k;
            int32_t best = 0;
            for (int32_t c = 1; c < k; c++) if (z[c] > z[best]) best = c;
            o[w[j]] = best;
        }
    }
    return PFT_OK;
}

/* --- the cache file ---------------------------------------------------------------------------------- */

/* The body is three arrays written back to back, so this equals pft_encoded_hash over the file after the header. */
static uint64_t body_checksum(const pft_encoded *e) {
    uint64_t h = pft_encoded_hash(PFT_ENCODED_HASH_START, e->offsets, (size_t)(e->n + 1) * sizeof *e->offsets);
    h = pft_encoded_hash(h, e->ids, (size_t)e->ntok * sizeof *e->ids);
    h = pft_encoded_hash(h, e->type_ids, (size_t)e->ntok);
    return e->words ? pft_encoded_hash(h, e->words, (size_t)e->ntok * sizeof *e->words) : h;
}

uint64_t pft_encoded_content_hash(const pft_encoded *e) { return body_checksum(e); }

/* (an empty store has no token arrays: fwrite's pointer must not be NULL even for no items) */
static int write_array(FILE *f, const void *p, size_t size, size_t count) { return !count || fwrite(p, size, count, f) == count; }

static int write_file(FILE *f, const pft_encoded *e, const pft_encoded_header *h) {
    return write_array(f, h, sizeof *h, 1) && write_array(f, e->offsets, sizeof *e->offsets, (size_t)e->n + 1) &&
           write_array(f, e->ids, sizeof *e->ids, (size_t)e->ntok) && write_array(f, e->type_ids, 1, (size_t)e->ntok) &&
           (!e->words || write_array(f, e->words, sizeof *e->words, (size_t)e->ntok));
}

pft_status pft_encoded_save(const pft_encoded *e, const char *path, const pft_encoded_source *src) {
    pft_encoded_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, PFT_ENCODED_MAGIC, sizeof h.magic);
    h.version = CACHE_VERSION;
    h.flags = e->words ? PFT_ENCODED_WORDS : 0;
    h.vocab_hash = e->vocab_hash;
    h.max_length = e->max_length, h.pad_id = e->pad_id;
    h.count = (uint64_t)e->n, h.ntok = (uint64_t)e->ntok;
    h.source_size = src->size;
    h.source_mtime = src->mtime;
    h.text_hash = src->text_hash;
    h.checksum = body_checksum(e);
    size_t room = strlen(path) + 32;
    char *tmp = malloc(room);
    if (!tmp) return pft_ctx_seterr(e->ctx, PFT_ERR_ALLOC, "%s: out of memory", path);
    snprintf(tmp, room, "%s.tmp.%d", path, (int)getpid()); /* beside path: rename never crosses a file system */
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        pft_ctx_seterr(e->ctx, PFT_ERR_IO, "%s: %s", tmp, strerror(errno));
        free(tmp);
        return PFT_ERR_IO;
    }
    int ok = write_file(f, e, &h);
    int err = errno;
    if (fclose(f)) ok = 0, err = errno;
    if (ok && rename(tmp, path)) ok = 0, err = errno;
    if (!ok) remove(tmp);
    free(tmp);
    if (!ok) return pft_ctx_seterr(e->ctx, PFT_ERR_IO, "%s: %s", path, strerror(err));
    return PFT_OK;
}

/* Sets the message and *miss; NULL for the caller to return. */
static pft_encoded *miss_with(pft_ctx *ctx, pft_encoded_miss *miss, pft_encoded_miss why, FILE *f, const char *what,
                              const char *path) {
    static const char *const word[] = {"", "missing", "stale", "corrupt", ""};
    static const pft_status code[] = {PFT_OK, PFT_ERR_IO, PFT_ERR_ARG, PFT_ERR_FORMAT, PFT_ERR_ALLOC};
    if (f) fclose(f);
    if (why == PFT_ENCODED_FAILED) pft_ctx_seterr(ctx, code[why], "%s", what);
    else if (what) pft_ctx_seterr(ctx, code[why], "%s: %s: %s", word[why], path, what);
    else pft_ctx_seterr(ctx, code[why], "%s: %s", word[why], path);
    if (miss) *miss = why;
    return NULL;
}

/* The header's verdict against key: PFT_ENCODED_HIT, or why not, with *what set. */
static pft_encoded_miss check_header(const pft_encoded_header *h, const pft_encoded_key *key, const char **what) {
    if (memcmp(h->magic, PFT_ENCODED_MAGIC, sizeof h->magic) || (h->flags & ~PFT_ENCODED_WORDS))
        return *what = "bad header", PFT_ENCODED_CORRUPT;
    if (h->version != CACHE_VERSION) return *what = "another format version", PFT_ENCODED_STALE;
    if (h->vocab_hash != key->vocab_hash) return *what = "another tokenizer", PFT_ENCODED_STALE;
    if (h->max_length != key->max_length) return *what = "another max_length", PFT_ENCODED_STALE;
    if (h->source_size != key->source.size || h->source_mtime != key->source.mtime)
        return *what = "the source file changed", PFT_ENCODED_STALE;
    if (h->text_hash != key->source.text_hash || h->count != key->count) return *what = "other texts", PFT_ENCODED_STALE;
    if (!(h->flags & PFT_ENCODED_WORDS) != !key->words)
        return *what = key->words ? "no word indices" : "word indices, not asked for", PFT_ENCODED_STALE;
    return PFT_ENCODED_HIT;
}

/* Row bounds a file could get wrong while its checksum is right (a writer bug, a crafted file). */
static int offsets_sane(const pft_encoded *e) {
    int sane = e->offsets[0] == 0 && e->offsets[e->n] == (uint64_t)e->ntok;
    for (int64_t i = 0; sane && i < e->n; i++)
        sane = e->offsets[i + 1] >= e->offsets[i] && e->offsets[i + 1] - e->offsets[i] <= (uint64_t)e->max_length;
    return sane;
}

static int read_body(FILE *f, pft_encoded *e) {
    return fread(e->offsets, sizeof *e->offsets, (size_t)e->n + 1, f) == (size_t)e->n + 1 &&
           fread(e->ids, sizeof *e->ids, (size_t)e->ntok, f) == (size_t)e->ntok &&
           fread(e->type_ids, 1, (size_t)e->ntok, f) == (size_t)e->ntok &&
           (!e->words || fread(e->words, sizeof *e->words, (size_t)e->ntok, f) == (size_t)e->ntok);
}

pft_encoded *pft_encoded_load(pft_ctx *ctx, const char *path, const pft_encoded_key *key, pft_encoded_miss *miss) {
    FILE *f = fopen(path, "rb");
    if (!f) return miss_with(ctx, miss, PFT_ENCODED_MISSING, NULL, NULL, path);
    pft_encoded_header h;
    const char *what = NULL;
    if (fread(&h, sizeof h, 1, f) != 1) return miss_with(ctx, miss, PFT_ENCODED_CORRUPT, f, "bad header", path);
    pft_encoded_miss why = check_header(&h, key, &what);
    if (why) return miss_with(ctx, miss, why, f, what, path);
    struct stat st;
    uint64_t body = (h.count + 1) * 8 + h.ntok * ((h.flags & PFT_ENCODED_WORDS) ? 9 : 5); /* bounded: no wrap */
    if (h.count > (1ull << 40) || h.ntok > (1ull << 40) || fstat(fileno(f), &st) || (uint64_t)st.st_size != sizeof h + body)
        return miss_with(ctx, miss, PFT_ENCODED_CORRUPT, f, "wrong size", path);
    pft_encoded *e = calloc(1, sizeof *e);
    if (e) {
        e->ctx = ctx;
        e->n = (int64_t)h.count, e->ntok = e->cap_tok = (int64_t)h.ntok;
        e->max_length = h.max_length, e->pad_id = h.pad_id, e->vocab_hash = h.vocab_hash;
        e->offsets = malloc((size_t)(e->n + 1) * sizeof *e->offsets);
        e->ids = malloc((size_t)(e->ntok ? e->ntok : 1) * sizeof *e->ids);
        e->type_ids = malloc((size_t)(e->ntok ? e->ntok : 1));
        if (h.flags & PFT_ENCODED_WORDS) e->words = malloc((size_t)(e->ntok ? e->ntok : 1) * sizeof *e->words);
    }
    if (!e || !e->offsets || !e->ids || !e->type_ids || ((h.flags & PFT_ENCODED_WORDS) && !e->words)) {
        pft_encoded_free(e);
        return miss_with(ctx, miss, PFT_ENCODED_FAILED, f, "load_encoded: out of memory", path);
    }
    int ok = read_body(f, e);
    fclose(f);
    if (!ok || body_checksum(e) != h.checksum) why = PFT_ENCODED_CORRUPT, what = "checksum mismatch";
    else if (!offsets_sane(e)) why = PFT_ENCODED_CORRUPT, what = "bad offsets";
    if (why) {
        pft_encoded_free(e);
        return miss_with(ctx, miss, why, NULL, what, path);
    }
    if (miss) *miss = PFT_ENCODED_HIT;
    return e;
}

/* --- batch order ------------------------------------------------------------------------------------- */

/* splitmix64: a Weyl sequence through rng.h's finaliser */
static uint64_t splitmix64(uint64_t *s) { return pft_rng_mix(*s += 0x9e3779b97f4a7c15ull); }

void pft_permutation(uint64_t seed, uint64_t stream, int64_t n, int64_t *out) {
    uint64_t s = seed;
    s = splitmix64(&s) ^ (stream * 0xd1b54a32d192ed03ull); /* streams of one seed start far apart */
    for (int64_t i = 0; i < n; i++) out[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        uint64_t j = ((splitmix64(&s) >> 32) * (uint64_t)(i + 1)) >> 32; /* in [0, i] by multiply-shift, not modulo */
        int64_t x = out[i];
        out[i] = out[(int64_t)j], out[(int64_t)j] = x;
    }
}
