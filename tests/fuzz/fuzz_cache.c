/* fuzz_cache.c - the encoded-dataset cache reader, pft_encoded_load (core/encoded.c), on arbitrary files,
 * and what a loaded store then does (row lengths, gather, save and load again).
 *
 * Input: byte 0 is a control byte, the rest the cache file. Bit 0: the harness writes the right checksum
 * of the body into the header (else a mutated body stops at the checksum test); bit 1: the key passed to
 * pft_encoded_load is read from the file's own header (else fixed values, so that the stale paths run);
 * bits 2-4: pad_to for gather (0 = the longest row, else that many tokens more). The format: encoded.h.
 *
 * Checks: pft_encoded_load returns a store, or NULL with a missing / stale / corrupt verdict and a message
 * starting with that word; a loaded store has count rows whose lengths add up to its token count and are
 * at most max_length, gathers every row into a batch, and saves to a file equal byte for byte to the one
 * it was read from, which loads back with the same rows. */
#include "fuzz.h"

#include "encoded.h"

static pft_ctx *ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    ctx = pft_ctx_new(1, 0);
    FUZZ_CHECK(ctx, "pft_ctx_new");
    return 0;
}

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* A loaded store: its rows, a gather of all of them, and a save that reproduces the file. */
/* A store with words (whatever the file put there): token labels and word argmax over every row, with
 * as many tags as the row's largest word index says (when that is small), stay in bounds. */
static void check_word_calls(const pft_encoded *e, const int64_t *rows, int64_t t) {
    int64_t *at = malloc((size_t)(e->n + 1) * sizeof *at), *nw = malloc((size_t)e->n * sizeof *nw), total = 0;
    FUZZ_CHECK(at && nw, "malloc");
    for (int64_t i = 0; i < e->n; i++) {
        int32_t most = -1;
        for (uint64_t j = e->offsets[i]; j < e->offsets[i + 1]; j++) most = e->words[j] > most ? e->words[j] : most;
        at[i] = total, nw[i] = most < 4096 ? most + 1 : 0, total += nw[i];
    }
    int32_t *tags = calloc((size_t)total + 1, sizeof *tags), *labels = malloc((size_t)(e->n * (t ? t : 1)) * sizeof *labels);
    float *logits = calloc((size_t)(e->n * (t ? t : 1)) * 2, sizeof *logits);
    FUZZ_CHECK(tags && labels && logits, "malloc");
    pft_encoded_token_labels(e, e->n, rows, t ? t : 1, tags, at, nw, NULL, 0, labels); /* may refuse: a word past nw */
    pft_encoded_word_argmax(e, e->n, rows, t ? t : 1, 2, logits, at, nw, tags);
    free(at), free(nw), free(tags), free(labels), free(logits);
}

static void check_store(const pft_encoded *e, const pft_encoded_key *key, const uint8_t *file, size_t n, int pad_extra,
                        const char *copy) {
    FUZZ_CHECK(e->n >= 0 && (uint64_t)e->n == key->count, "%lld rows, key count %llu", (long long)e->n,
               (unsigned long long)key->count);
    int64_t sum = 0, longest = 0;
    for (int64_t i = 0; i < e->n; i++) {
        int64_t len = pft_encoded_row_length(e, i);
        FUZZ_CHECK(len >= 0 && (e->max_length < 0 || len <= e->max_length), "row %lld: %lld tokens, max_length %d",
                   (long long)i, (long long)len, e->max_length);
        sum += len;
        if (len > longest) longest = len;
    }
    FUZZ_CHECK(sum == e->ntok, "rows hold %lld tokens, the store %lld", (long long)sum, (long long)e->ntok);
    if (e->n > 0 && e->n <= 4096 && longest <= 4096) {
        int64_t *rows = malloc((size_t)e->n * sizeof *rows);
        FUZZ_CHECK(rows, "malloc");
        for (int64_t i = 0; i < e->n; i++) rows[i] = i;
        pft_batch b = {0};
        pft_status st = pft_encoded_gather(e, e->n, rows, pad_extra > 0 ? longest + pad_extra : 0, &b);
        FUZZ_CHECK(st == PFT_OK, "gather of every row: %s", pft_ctx_error(ctx));
        for (int64_t i = 0; i < e->n; i++)
            FUZZ_CHECK(b.lengths[i] == pft_encoded_row_length(e, i), "gathered row %lld: %d tokens", (long long)i, b.lengths[i]);
        pft_batch_free(&b);
        if (e->words) check_word_calls(e, rows, longest);
        free(rows);
    }
    FUZZ_CHECK(pft_encoded_save(e, copy, &key->source) == PFT_OK, "save: %s", pft_ctx_error(ctx));
    FILE *f = fopen(copy, "rb");
    FUZZ_CHECK(f, "%s: cannot read back", copy);
    uint8_t *saved = malloc(n + 1);
    size_t got = fread(saved, 1, n + 1, f);
    fclose(f);
    FUZZ_CHECK(got == n && memcmp(saved, file, n) == 0, "the saved file (%zu bytes) differs from the loaded one (%zu)", got, n);
    free(saved);
    pft_encoded_miss why;
    pft_encoded *again = pft_encoded_load(ctx, copy, key, &why);
    FUZZ_CHECK(again && why == PFT_ENCODED_HIT, "a saved store does not load: %s", pft_ctx_error(ctx));
    for (int64_t i = 0; i < e->n; i++)
        FUZZ_CHECK(pft_encoded_row_length(again, i) == pft_encoded_row_length(e, i), "row %lld: other length after save",
                   (long long)i);
    pft_encoded_free(again);
    remove(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t ctl = data[0];
    size_t n = size - 1;
    uint8_t *file = malloc(n ? n : 1);
    FUZZ_CHECK(file, "malloc");
    memcpy(file, data + 1, n);
    const size_t header = sizeof(pft_encoded_header);
    if ((ctl & 1) && n >= header) { /* the body's checksum, as the reader computes it (the arrays are contiguous) */
        uint64_t h = pft_encoded_hash(PFT_ENCODED_HASH_START, file + header, n - header);
        memcpy(file + offsetof(pft_encoded_header, checksum), &h, sizeof h);
    }
    char path[PATH_MAX], copy[PATH_MAX];
    fuzz_path(path, sizeof path, "in.enc");
    fuzz_path(copy, sizeof copy, "copy.enc");
    fuzz_write(path, file, n);

    pft_encoded_key key = {.vocab_hash = 0x1234, .max_length = 128, .source = {100, 0, 0x5678}, .count = 1};
    if ((ctl & 2) && n >= header) {
        pft_encoded_header h;
        memcpy(&h, file, sizeof h);
        key = (pft_encoded_key){.vocab_hash = h.vocab_hash, .max_length = h.max_length,
                                .source = {h.source_size, h.source_mtime, h.text_hash}, .count = h.count,
                                .words = (h.flags & PFT_ENCODED_WORDS) != 0};
    }
    pft_encoded_miss why = PFT_ENCODED_HIT;
    pft_encoded *e = pft_encoded_load(ctx, path, &key, &why);
    if (e) {
        FUZZ_CHECK(why == PFT_ENCODED_HIT, "a store with verdict %d", (int)why);
        check_store(e, &key, file, n, (ctl >> 2) & 7, copy);
    } else {
        static const char *const word[] = {"", "missing: ", "stale: ", "corrupt: ", "load_encoded: out of memory"};
        FUZZ_CHECK(why >= PFT_ENCODED_MISSING && why <= PFT_ENCODED_FAILED && starts_with(pft_ctx_error(ctx), word[why]),
                   "NULL with verdict %d and message '%s'", (int)why, pft_ctx_error(ctx));
    }
    pft_encoded_free(e);
    free(file);
    return 0;
}
