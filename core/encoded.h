/* encoded.h - a tokenized dataset kept in C: every row's token ids once, without padding, plus the
 * cache file that saves re-tokenizing a split on the next run, and the seeded permutation that orders
 * its batches.
 *
 *     pft_encoded *e = pft_encoded_new(ctx, 128, false);          // max_length 128, single texts
 *     const char *texts[] = {"a film", "the best film of the year"};
 *     if (pft_encoded_add(e, tok, 2, texts, NULL, NULL, NULL)) fprintf(stderr, "%s\n", pft_ctx_error(ctx));
 *     pft_batch b = {0};
 *     int64_t rows[] = {1, 0};                                    // 0-based, in batch order
 *     pft_encoded_gather(e, 2, rows, 0, &b);                      // (2, longest of the two), right-padded
 *
 *     pft_encoded_source src = {.size = st.st_size, .mtime = st.st_mtime,
 *                               .text_hash = pft_encoded_text_hash(2, texts, NULL, NULL, NULL)};
 *     pft_encoded_save(e, "train.enc", &src);                     // temporary file + rename
 *     pft_encoded_key key = {.vocab_hash = pft_encoded_vocab_hash(tok), .max_length = 128, .source = src, .count = 2};
 *     pft_encoded_miss why;
 *     pft_encoded *again = pft_encoded_load(ctx, "train.enc", &key, &why);  // NULL: ctx says "stale: ..." etc.
 *
 *     int64_t order[2];
 *     pft_permutation(seed, epoch, 2, order);                     // 0..1 shuffled; same (seed, stream), same order
 *     pft_batch_free(&b), pft_encoded_free(e), pft_encoded_free(again);
 *
 * Why a store: a training run reads every example once per epoch in a new order. Tokenizing once and
 * keeping rows unpadded means an epoch costs a copy per batch, and each batch is padded only to its own
 * longest row (dynamic padding), not to max_length.
 *
 * Rows are encoded exactly as pft_tokenizer_encode_batch encodes them (in chunks of rows through it, each
 * row cut to its length), so gathering rows gives, id for id, the batch pft_tokenizer_encode_batch would
 * give for the same texts. Type ids are stored as bytes (they are 0 or 1).
 *
 * Ownership: pft_encoded_new and pft_encoded_load return a store the caller frees with pft_encoded_free.
 * The store keeps the context for its error messages (it must not outlive it) but no pointer to the
 * tokenizer or the texts. pft_encoded_gather writes into a caller-owned pft_batch (text.h), reusing its
 * memory when it is large enough. Nothing here is global: two stores, or two threads each with their
 * own store and context, never interact.
 *
 * Errors: the functions return a pft_status (or NULL) with the message in the context. The store's
 * messages start with the Lua call that reaches them (encode_dataset, gather), as the Lua layer's users
 * see them; the cache file's with its verdict (missing, stale, corrupt) or its path.
 *
 * Cache file. Native byte order (a cache is machine-local: it lives in the build tree or PFT_CACHE), in
 * this order: the 80-byte pft_encoded_header below, then the body: u64 offsets[count + 1], i32
 * ids[ntok], u8 type_ids[ntok], and with the PFT_ENCODED_WORDS flag i32 words[ntok] (a store without
 * words writes exactly the bytes it wrote before word tracking existed). header.checksum is pft_encoded_hash of the body. A file of the other byte
 * order reads as another format version (stale); a truncated or damaged one fails the magic, size or
 * checksum test (corrupt). Either way it is encoded again, never misread. A cache is used only when its key
 * matches: the tokenizer (vocab_hash), max_length, the source file (size, mtime) and the texts
 * (text_hash, count); anything else means the rows would differ, so the file is "stale" and is encoded
 * again. Old caches keep loading as long as CACHE_VERSION (encoded.c) stays; a change to the layout or
 * to what the rows hold must bump it. */
#ifndef PFT_ENCODED_H
#define PFT_ENCODED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctx.h"
#include "text.h"

/* The store. Read-only for callers: row i is ids[offsets[i] .. offsets[i + 1]), with its type ids at the
 * same positions. */
typedef struct pft_encoded {
    pft_ctx *ctx;
    int64_t n, ntok;      /* rows, tokens over all rows (specials included) */
    uint64_t *offsets;    /* (n + 1), offsets[0] = 0, offsets[n] = ntok */
    int32_t *ids;         /* (ntok) */
    uint8_t *type_ids;    /* (ntok) 0 or 1 */
    int32_t *words;       /* (ntok) with pft_encoded_track_words: the word of each token, -1 for specials; else NULL */
    int32_t max_length;   /* no row is longer */
    int32_t pad_id;       /* the tokenizer's, used by pft_encoded_gather */
    uint64_t vocab_hash;  /* pft_encoded_vocab_hash of the tokenizer the rows came from */
    int64_t cap_tok;      /* allocated entries of ids and type_ids */
} pft_encoded;

/* An empty store whose rows will be cut to max_length tokens (specials included). max_length must be
 * in [2, 2^20] ([3, 2^20] when pairs: [CLS] a [SEP] b [SEP] needs three specials). NULL + ctx error. */
pft_encoded *pft_encoded_new(pft_ctx *ctx, int64_t max_length, bool pairs);
void pft_encoded_free(pft_encoded *e); /* NULL is fine */

/* Encodes n texts a[i] (or pairs a[i], b[i] when b is not NULL; lengths as in text.h, alen / blen may
 * be NULL) and appends them as rows. The first call on an empty store takes the tokenizer's vocab hash
 * and pad id; later calls must use a tokenizer with the same vocab hash. On failure the store keeps the
 * rows it had before the call. */
pft_status pft_encoded_add(pft_encoded *e, pft_tokenizer *tok, int64_t n, const char *const *a, const size_t *alen,
                           const char *const *b, const size_t *blen);

/* Token classification: on an empty store of single texts, makes every later pft_encoded_add record for
 * each token the word it comes from, words being the text's space-separated parts (a tagged sentence is
 * its words joined by single spaces: word k is the k-th part, whatever the tokenizer's pre-tokenizer
 * splits inside it). Specials get -1. From the tokenizer's byte offsets (text.h). */
pft_status pft_encoded_track_words(pft_encoded *e);

static inline int64_t pft_encoded_row_length(const pft_encoded *e, int64_t row) {
    return (int64_t)(e->offsets[row + 1] - e->offsets[row]);
}

/* Fills out with the m rows rows[0..m) (0-based, any order, repeats allowed), right-padded with the pad
 * id (type ids and mask 0). pad_to 0: out->t is the longest of the m rows; pad_to > 0: exactly pad_to,
 * which must not be shorter than that row. */
pft_status pft_encoded_gather(const pft_encoded *e, int64_t m, const int64_t *rows, int64_t pad_to, pft_batch *out);

/* Loss labels for a gathered batch of token-classification rows (rows as for pft_encoded_gather, t its
 * width): out (m, t) gets, at the first token of each word w of row i, word_labels[label_at[i] + w];
 * -100 (ignored by the loss) at specials, padding, and the word's other tokens, unless continuation is
 * given: then they get continuation[label] (transformers' label_all_tokens, with B-X mapped to I-X by
 * the caller's table of k entries). nwords[i] words per row; a word beyond them is an error. */
pft_status pft_encoded_token_labels(const pft_encoded *e, int64_t m, const int64_t *rows, int64_t t,
                                    const int32_t *word_labels, const int64_t *label_at, const int64_t *nwords,
                                    const int32_t *continuation, int32_t k, int32_t *out);

/* Word-level predictions from token logits (m, t, k) of a gathered batch: out[label_at[i] + w] = the
 * argmax over k at the first token of word w of row i (the first maximum on ties), or -1 for a word the
 * row has no token of (cut off by max_length). */
pft_status pft_encoded_word_argmax(const pft_encoded *e, int64_t m, const int64_t *rows, int64_t t, int32_t k,
                                   const float *logits, const int64_t *label_at, const int64_t *nwords, int32_t *out);

/* --- the cache key: hashes ---------------------------------------------------------------------------
 * All three are FNV-1a 64 (pft_encoded_hash): cheap, stable across runs and machines of one byte order,
 * and a cache miss costs only a re-encoding, so no cryptographic strength is needed. The start value is
 * not FNV's published offset basis (14695981039346656037) but that number with its last digit missing;
 * every cache file's key and checksum depend on it, so it stays. */

#define PFT_ENCODED_HASH_START 1469598103934665603ull
uint64_t pft_encoded_hash(uint64_t h, const void *p, size_t n); /* h: PFT_ENCODED_HASH_START, or a previous result */

/* Everything about a tokenizer that changes the ids it gives: its vocab (token by token), the
 * normalization settings and the special ids. */
uint64_t pft_encoded_vocab_hash(const pft_tokenizer *tok);

/* The texts of a split: n, whether there are pairs, then each text as (its length, its bytes), all of a
 * first, then all of b. The three calls below give the same hash; begin/add serve a caller that walks
 * its texts one at a time (the Lua binding, reading a table). */
uint64_t pft_encoded_text_hash(int64_t n, const char *const *a, const size_t *alen, const char *const *b,
                               const size_t *blen);
uint64_t pft_encoded_text_hash_begin(int64_t n, bool pairs);
uint64_t pft_encoded_text_hash_add(uint64_t h, const char *s, size_t len);

/* The rows themselves: offsets, ids, type ids (and words), as the cache file's checksum covers them.
 * Two stores with the same content hash give the same batches: the activation cache's data key. */
uint64_t pft_encoded_content_hash(const pft_encoded *e);

/* --- the cache file --------------------------------------------------------------------------------- */

#define PFT_ENCODED_MAGIC "PFTENC\0\0"
#define PFT_ENCODED_WORDS 1u /* header flag: the body ends with i32 words[ntok] */

/* The file's first 80 bytes, as written (no padding: every field is at its natural alignment). */
typedef struct pft_encoded_header {
    char magic[8];         /* PFT_ENCODED_MAGIC */
    uint32_t version;      /* CACHE_VERSION in encoded.c */
    uint32_t flags;        /* PFT_ENCODED_WORDS, or 0 (every file before word tracking) */
    uint64_t vocab_hash;
    int32_t max_length, pad_id;
    uint64_t count, ntok;  /* rows, tokens */
    uint64_t source_size;
    int64_t source_mtime;
    uint64_t text_hash;
    uint64_t checksum;     /* pft_encoded_hash of the body */
} pft_encoded_header;

/* What the rows were encoded from, as recorded in the file. */
typedef struct pft_encoded_source {
    uint64_t size;      /* the source file's size in bytes */
    int64_t mtime;      /* its modification time, in seconds */
    uint64_t text_hash; /* pft_encoded_text_hash of the texts as encoded (after any preprocessing) */
} pft_encoded_source;

/* What a cache file must match to be used instead of encoding again. */
typedef struct pft_encoded_key {
    uint64_t vocab_hash;
    int32_t max_length;
    pft_encoded_source source;
    uint64_t count;
    bool words;         /* a store with word tracking (pft_encoded_track_words) */
} pft_encoded_key;

/* Why pft_encoded_load returned NULL; the context's message starts with the same word. */
typedef enum pft_encoded_miss {
    PFT_ENCODED_HIT = 0,
    PFT_ENCODED_MISSING, /* "missing: PATH": the file cannot be opened */
    PFT_ENCODED_STALE,   /* "stale: PATH: why": a well-formed cache for another key */
    PFT_ENCODED_CORRUPT, /* "corrupt: PATH: why": not a whole cache file of this format */
    PFT_ENCODED_FAILED   /* out of memory (PFT_ERR_ALLOC) */
} pft_encoded_miss;

/* Writes the store with src to path.tmp.PID beside path, then renames it over path (a reader sees the
 * old file or the new one, never half). PFT_ERR_IO "PATH: reason" on failure; no temporary is left. */
pft_status pft_encoded_save(const pft_encoded *e, const char *path, const pft_encoded_source *src);

/* Reads a cache file written by pft_encoded_save and checks it against key, in this order: header
 * (corrupt), format version and key (stale), file size (corrupt), body checksum (corrupt), offsets
 * (corrupt: each row within max_length, together exactly ntok tokens). NULL with *miss set (miss may be
 * NULL) and the message in ctx; on success *miss is PFT_ENCODED_HIT. */
pft_encoded *pft_encoded_load(pft_ctx *ctx, const char *path, const pft_encoded_key *key, pft_encoded_miss *miss);

/* --- batch order ------------------------------------------------------------------------------------ */

/* out[0..n) = 0..n-1 in an order that depends only on (seed, stream): Fisher-Yates driven by splitmix64
 * started from (seed, stream). The data loader derives its streams from the epoch number, so a run
 * resumed at epoch k shuffles exactly as the run it continues. */
void pft_permutation(uint64_t seed, uint64_t stream, int64_t n, int64_t *out);

#endif
