/* test_encoded.c - the encoded-dataset store, its cache file and the batch-order permutation
 * (core/encoded.c).
 *
 * Run from the repository root: the tokenizer is tests/fixtures/bert/tiny_seqcls. Temporary files live in
 * a mkdtemp directory under /tmp, removed at the end. The known answers (hashes, whole cache files, the
 * permutations) were recorded from core.permutation, core.text_hash, core.tokenizer_hash and enc:save of
 * the Lua binding before the store moved into core/: equal answers mean old caches still load, new caches
 * equal old ones byte for byte, and a run resumed across the move shuffles as before. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkdtemp */
#endif
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "encoded.h"
#include "text.h"

#define TOKENIZER_DIR "tests/fixtures/bert/tiny_seqcls"

static char tmpdir[64];

static const char *tpath(const char *name) {
    static char buf[8][256]; /* a few live paths at once */
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

/* Whole file into a malloc'd buffer; *n gets the size. NULL when missing. */
static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    *n = fread(p, 1, (size_t)len, fp);
    fclose(fp);
    return p;
}

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return 0;
    size_t w = fwrite(p, 1, n, fp);
    return fclose(fp) == 0 && w == n;
}

/* the dataset of the known answers */
static const char *const texts[] = {"a funny film", "hello world", "", "the best film of the year, really the best", "x"};
static const char *const pairs[] = {"not boring", "", "world", "ok", "another pair text"};
#define NTEXTS 5

static pft_encoded *encode(pft_ctx *ctx, pft_tokenizer *tok, int max_length, int with_pairs) {
    pft_encoded *e = pft_encoded_new(ctx, max_length, with_pairs);
    if (e && pft_encoded_add(e, tok, NTEXTS, texts, NULL, with_pairs ? pairs : NULL, NULL)) {
        printf("encode: %s\n", pft_ctx_error(ctx));
        pft_encoded_free(e);
        return NULL;
    }
    return e;
}

/* --- hashes -------------------------------------------------------------------------------------------- */

static void test_hashes(pft_tokenizer *tok) {
    CHECK(pft_encoded_vocab_hash(tok) == 0xdcabddfacd5e07d4ull, "vocab hash %016llx",
          (unsigned long long)pft_encoded_vocab_hash(tok));
    CHECK(pft_encoded_text_hash(NTEXTS, texts, NULL, NULL, NULL) == 0x861eccaaf36172fdull, "text hash");
    CHECK(pft_encoded_text_hash(NTEXTS, texts, NULL, pairs, NULL) == 0x0083458dcd08b62aull, "text hash with pairs");
    CHECK(pft_encoded_text_hash(0, NULL, NULL, NULL, NULL) == 0xa31e272015f12c43ull, "text hash of no texts");
    const char *a[] = {"a", "b"}, *b[] = {"c", "d"};
    CHECK(pft_encoded_text_hash(2, a, NULL, b, NULL) == 0x362377699cf7bf0cull, "text hash of two pairs");
    /* begin/add is the same hash, and explicit lengths equal NUL-terminated ones */
    uint64_t h = pft_encoded_text_hash_begin(2, true);
    for (int i = 0; i < 2; i++) h = pft_encoded_text_hash_add(h, a[i], 1);
    for (int i = 0; i < 2; i++) h = pft_encoded_text_hash_add(h, b[i], 1);
    CHECK(h == 0x362377699cf7bf0cull, "begin/add equals the one-call hash");
    /* lengths keep texts apart: {"ab", ""} and {"a", "b"} differ */
    const char *c[] = {"ab", ""};
    CHECK(pft_encoded_text_hash(2, c, NULL, NULL, NULL) != pft_encoded_text_hash(2, a, NULL, NULL, NULL), "text boundaries");
    CHECK(pft_encoded_hash(PFT_ENCODED_HASH_START, "", 0) == PFT_ENCODED_HASH_START, "fnv of nothing");
    CHECK(pft_encoded_hash(PFT_ENCODED_HASH_START, "a", 1) == 0x44bd8ad473cd9906ull, "hash of \"a\" (FNV-1a from pft's start)");
}

/* --- the store ----------------------------------------------------------------------------------------- */

static int batches_equal(const pft_batch *x, const pft_batch *y) {
    if (x->n != y->n || x->t != y->t) return 0;
    size_t cells = (size_t)x->n * (size_t)x->t;
    return !memcmp(x->ids, y->ids, cells * 4) && !memcmp(x->type_ids, y->type_ids, cells * 4) &&
           !memcmp(x->mask, y->mask, cells * 4) && !memcmp(x->lengths, y->lengths, (size_t)x->n * 4);
}

/* gather(rows) equals encode_batch(texts of rows), id for id, with and without pairs and pad_to */
static void test_store_matches_encode_batch(pft_ctx *ctx, pft_tokenizer *tok) {
    for (int with_pairs = 0; with_pairs <= 1; with_pairs++) {
        int ml = with_pairs ? 8 : 16;
        pft_encoded *e = encode(ctx, tok, ml, with_pairs);
        CHECK(e && e->n == NTEXTS, "encoded %d rows", e ? (int)e->n : -1);
        if (!e) continue;
        CHECK(e->vocab_hash == pft_encoded_vocab_hash(tok), "the store's vocab hash");
        CHECK(e->pad_id == pft_tokenizer_special_id(tok, PFT_SPECIAL_PAD), "the store's pad id");
        CHECK(e->max_length == ml, "the store's max_length");
        int64_t sum = 0;
        for (int64_t i = 0; i < e->n; i++) sum += pft_encoded_row_length(e, i);
        CHECK(sum == e->ntok && e->offsets[0] == 0, "row lengths add up to %lld tokens", (long long)e->ntok);

        int64_t rows[] = {3, 0, 4, 0};
        const char *ra[4], *rb[4];
        for (int i = 0; i < 4; i++) ra[i] = texts[rows[i]], rb[i] = pairs[rows[i]];
        for (int pad_to = 0; pad_to <= ml + 4; pad_to += ml + 4) {
            pft_batch want = {0}, got = {0};
            CHECK(pft_tokenizer_encode_batch(tok, 4, ra, NULL, with_pairs ? rb : NULL, NULL, ml, pad_to, &want) == PFT_OK,
                  "encode_batch: %s", pft_ctx_error(ctx));
            CHECK(pft_encoded_gather(e, 4, rows, pad_to, &got) == PFT_OK, "gather: %s", pft_ctx_error(ctx));
            CHECK(batches_equal(&want, &got), "gather equals encode_batch (pairs %d, pad_to %d)", with_pairs, pad_to);
            /* a batch is reused: gathering fewer rows into it again gives the smaller batch */
            CHECK(pft_encoded_gather(e, 1, rows + 2, 0, &got) == PFT_OK && got.n == 1 &&
                      got.t == pft_encoded_row_length(e, 4) && got.mask[got.t - 1] == 1,
                  "a reused batch");
            pft_batch_free(&want), pft_batch_free(&got);
        }
        pft_encoded_free(e);
    }
}

/* rows beyond one encode chunk (512), and two adds, store the same rows as one add */
static void test_store_chunks_and_adds(pft_ctx *ctx, pft_tokenizer *tok) {
    enum { N = 1100 };
    static char buf[N][40];
    const char *many[N];
    for (int i = 0; i < N; i++) {
        snprintf(buf[i], sizeof buf[i], i % 3 ? "film %d of the year" : "hello %d", i);
        many[i] = buf[i];
    }
    pft_encoded *one = pft_encoded_new(ctx, 6, false), *two = pft_encoded_new(ctx, 6, false);
    CHECK(pft_encoded_add(one, tok, N, many, NULL, NULL, NULL) == PFT_OK, "one add: %s", pft_ctx_error(ctx));
    CHECK(pft_encoded_add(two, tok, 700, many, NULL, NULL, NULL) == PFT_OK &&
              pft_encoded_add(two, tok, N - 700, many + 700, NULL, NULL, NULL) == PFT_OK,
          "two adds");
    CHECK(one->n == N && two->n == N && one->ntok == two->ntok, "%lld and %lld rows", (long long)one->n, (long long)two->n);
    CHECK(!memcmp(one->offsets, two->offsets, (N + 1) * sizeof *one->offsets) &&
              !memcmp(one->ids, two->ids, (size_t)one->ntok * 4) && !memcmp(one->type_ids, two->type_ids, (size_t)one->ntok),
          "the same rows");
    int longest = 0;
    for (int64_t i = 0; i < one->n; i++)
        if (pft_encoded_row_length(one, i) > longest) longest = (int)pft_encoded_row_length(one, i);
    CHECK(longest == 6, "rows are cut to max_length (longest %d)", longest);
    pft_encoded_free(one), pft_encoded_free(two);
}

static void test_store_errors(pft_ctx *ctx, pft_tokenizer *tok) {
    CHECK(!pft_encoded_new(ctx, 1, false) && strstr(pft_ctx_error(ctx), "max_length 1 out of range (at least 2)"),
          "max_length 1: %s", pft_ctx_error(ctx));
    CHECK(!pft_encoded_new(ctx, 2, true) && strstr(pft_ctx_error(ctx), "(at least 3)"), "max_length 2 with pairs");
    CHECK(!pft_encoded_new(ctx, (1 << 20) + 1, false), "max_length above 2^20");
    pft_encoded *e = encode(ctx, tok, 16, 0);
    pft_batch b = {0};
    int64_t bad[] = {0, 5}, good[] = {3};
    CHECK(pft_encoded_gather(e, 0, good, 0, &b) == PFT_ERR_ARG && !strcmp(pft_ctx_error(ctx), "gather: no rows"), "no rows");
    CHECK(pft_encoded_gather(e, 2, bad, 0, &b) == PFT_ERR_ARG && strstr(pft_ctx_error(ctx), "row index 5 out of range [0, 5)"),
          "row out of range: %s", pft_ctx_error(ctx));
    CHECK(pft_encoded_gather(e, 1, good, 3, &b) == PFT_ERR_ARG &&
              !strcmp(pft_ctx_error(ctx), "gather: pad_to 3 is shorter than the longest row (15)"),
          "pad_to too short: %s", pft_ctx_error(ctx));
    CHECK(pft_encoded_add(e, tok, 1, texts, NULL, pairs, NULL) == PFT_OK && e->n == NTEXTS + 1, "pairs after texts, max_length 16");
    pft_batch_free(&b);
    pft_encoded_free(e);
    pft_encoded_free(NULL);
}

/* --- the cache file ------------------------------------------------------------------------------------ */

static pft_encoded_key key_of(const pft_encoded *e, pft_encoded_source src) {
    return (pft_encoded_key){.vocab_hash = e->vocab_hash, .max_length = e->max_length, .source = src, .count = (uint64_t)e->n,
                             .words = e->words != NULL};
}

static int stores_equal(const pft_encoded *x, const pft_encoded *y) {
    return x->n == y->n && x->ntok == y->ntok && x->max_length == y->max_length && x->pad_id == y->pad_id &&
           x->vocab_hash == y->vocab_hash && !memcmp(x->offsets, y->offsets, (size_t)(x->n + 1) * 8) &&
           !memcmp(x->ids, y->ids, (size_t)x->ntok * 4) && !memcmp(x->type_ids, y->type_ids, (size_t)x->ntok) &&
           !x->words == !y->words && (!x->words || !memcmp(x->words, y->words, (size_t)x->ntok * 4));
}

/* The files the binding wrote before the move, as (size, FNV-1a 64 of the whole file). */
static void test_cache_known_files(pft_ctx *ctx, pft_tokenizer *tok) {
    struct {
        const char *name;
        int max_length, with_pairs;
        pft_encoded_source src;
        size_t size;
        uint64_t fnv;
    } cases[] = {
        {"single.enc", 16, 0, {1234, 1700000000, 0x861eccaaf36172fdull}, 273, 0x028b60d9f8588cc1ull},
        {"pairs.enc", 8, 1, {99, -5, 0x0083458dcd08b62aull}, 288, 0x577f62caa2b77dbdull},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        pft_encoded *e = encode(ctx, tok, cases[k].max_length, cases[k].with_pairs);
        const char *path = tpath(cases[k].name);
        CHECK(e && pft_encoded_save(e, path, &cases[k].src) == PFT_OK, "save %s: %s", cases[k].name, pft_ctx_error(ctx));
        size_t n = 0;
        unsigned char *bytes = read_bytes(path, &n);
        uint64_t h = bytes ? pft_encoded_hash(PFT_ENCODED_HASH_START, bytes, n) : 0;
        CHECK(bytes && n == cases[k].size && h == cases[k].fnv, "%s: %zu bytes, fnv %016llx: not the file of before the move",
              cases[k].name, n, (unsigned long long)h);
        free(bytes);
        pft_encoded_free(e);
    }
    /* an empty store (as the binding wrote it: source 0, 0, text hash 0) */
    pft_encoded *e = pft_encoded_new(ctx, 4, false);
    pft_encoded_add(e, tok, 0, NULL, NULL, NULL, NULL);
    pft_encoded_source src = {0, 0, 0};
    CHECK(pft_encoded_save(e, tpath("empty.enc"), &src) == PFT_OK, "save empty");
    size_t n = 0;
    unsigned char *bytes = read_bytes(tpath("empty.enc"), &n);
    CHECK(bytes && n == 88 && pft_encoded_hash(PFT_ENCODED_HASH_START, bytes, n) == 0xc37661492c188b3full,
          "empty.enc as before the move");
    free(bytes);
    pft_encoded_key key = key_of(e, src);
    pft_encoded_miss why;
    pft_encoded *back = pft_encoded_load(ctx, tpath("empty.enc"), &key, &why);
    CHECK(back && why == PFT_ENCODED_HIT && back->n == 0 && back->ntok == 0, "an empty store loads back");
    pft_encoded_free(back), pft_encoded_free(e);
}

static void test_cache_round_trip(pft_ctx *ctx, pft_tokenizer *tok) {
    pft_encoded *e = encode(ctx, tok, 8, 1);
    pft_encoded_source src = {99, -5, pft_encoded_text_hash(NTEXTS, texts, NULL, pairs, NULL)};
    const char *path = tpath("rt.enc");
    CHECK(pft_encoded_save(e, path, &src) == PFT_OK, "save: %s", pft_ctx_error(ctx));
    pft_encoded_key key = key_of(e, src);
    pft_encoded_miss why = PFT_ENCODED_FAILED;
    pft_encoded *back = pft_encoded_load(ctx, path, &key, &why);
    CHECK(back && why == PFT_ENCODED_HIT, "load: %s", pft_ctx_error(ctx));
    CHECK(back && stores_equal(e, back), "the loaded store equals the saved one");
    /* the header is what the format says, field by field */
    size_t n = 0;
    unsigned char *bytes = read_bytes(path, &n);
    pft_encoded_header h;
    memcpy(&h, bytes, sizeof h);
    CHECK(!memcmp(h.magic, "PFTENC\0\0", 8) && h.version == 1 && h.flags == 0 && h.count == NTEXTS &&
              h.ntok == (uint64_t)e->ntok && h.source_size == 99 && h.source_mtime == -5 && h.text_hash == src.text_hash &&
              h.checksum == pft_encoded_hash(PFT_ENCODED_HASH_START, bytes + 80, n - 80) &&
              n == 80 + (NTEXTS + 1) * 8 + (size_t)e->ntok * 5,
          "the header fields and the body checksum");
    free(bytes);
    /* a loaded store gathers like the one it was saved from */
    pft_batch x = {0}, y = {0};
    int64_t rows[] = {4, 1, 2};
    CHECK(back && pft_encoded_gather(e, 3, rows, 0, &x) == PFT_OK && pft_encoded_gather(back, 3, rows, 0, &y) == PFT_OK &&
              batches_equal(&x, &y),
          "gathers from the loaded store");
    pft_batch_free(&x), pft_batch_free(&y);
    /* no temporary left beside the file */
    DIR *d = opendir(tmpdir);
    struct dirent *ent;
    int tmps = 0;
    while (d && (ent = readdir(d))) tmps += strstr(ent->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    CHECK(tmps == 0, "%d temporary files left", tmps);
    /* saving into a missing directory fails naming the path */
    CHECK(pft_encoded_save(e, tpath("no/such/dir.enc"), &src) == PFT_ERR_IO && strstr(pft_ctx_error(ctx), "no/such/dir.enc.tmp."),
          "save into a missing directory: %s", pft_ctx_error(ctx));
    pft_encoded_free(back), pft_encoded_free(e);
}

/* Loads path with key; checks the verdict and that the message is "<word>: <path>[: <detail>]". */
static void expect_miss(pft_ctx *ctx, const char *path, const pft_encoded_key *key, pft_encoded_miss want, const char *message,
                        const char *what) {
    pft_encoded_miss why = PFT_ENCODED_HIT;
    pft_encoded *e = pft_encoded_load(ctx, path, key, &why);
    char expect[512];
    snprintf(expect, sizeof expect, message, path);
    CHECK(!e && why == want && !strcmp(pft_ctx_error(ctx), expect), "%s: got %d '%s', expected %d '%s'", what, (int)why,
          pft_ctx_error(ctx), (int)want, expect);
    pft_encoded_free(e);
}

static void test_cache_rejects(pft_ctx *ctx, pft_tokenizer *tok) {
    pft_encoded *e = encode(ctx, tok, 16, 0);
    pft_encoded_source src = {1234, 1700000000, pft_encoded_text_hash(NTEXTS, texts, NULL, NULL, NULL)};
    const char *good = tpath("good.enc"), *bad = tpath("bad.enc");
    pft_encoded_save(e, good, &src);
    size_t n = 0;
    unsigned char *bytes = read_bytes(good, &n), *copy = malloc(n + 1);
    pft_encoded_key key = key_of(e, src), k;

    expect_miss(ctx, tpath("absent.enc"), &key, PFT_ENCODED_MISSING, "missing: %s", "a missing file");
    /* stale: each part of the key */
    k = key, k.vocab_hash ^= 1;
    expect_miss(ctx, good, &k, PFT_ENCODED_STALE, "stale: %s: another tokenizer", "another vocab hash");
    k = key, k.max_length = 32;
    expect_miss(ctx, good, &k, PFT_ENCODED_STALE, "stale: %s: another max_length", "another max_length");
    k = key, k.source.size++;
    expect_miss(ctx, good, &k, PFT_ENCODED_STALE, "stale: %s: the source file changed", "another source size");
    k = key, k.source.mtime--;
    expect_miss(ctx, good, &k, PFT_ENCODED_STALE, "stale: %s: the source file changed", "another source mtime");
    k = key, k.source.text_hash ^= 1;
    expect_miss(ctx, good, &k, PFT_ENCODED_STALE, "stale: %s: other texts", "another text hash");
    k = key, k.count++;
    expect_miss(ctx, good, &k, PFT_ENCODED_STALE, "stale: %s: other texts", "another count");
    memcpy(copy, bytes, n), copy[8] = 2; /* version 2 */
    write_bytes(bad, copy, n);
    expect_miss(ctx, bad, &key, PFT_ENCODED_STALE, "stale: %s: another format version", "another format version");

    /* corrupt: header, size, body */
    memcpy(copy, bytes, n), copy[0] = 'X';
    write_bytes(bad, copy, n);
    expect_miss(ctx, bad, &key, PFT_ENCODED_CORRUPT, "corrupt: %s: bad header", "bad magic");
    memcpy(copy, bytes, n), copy[12] = 2; /* a flag no version knows */
    write_bytes(bad, copy, n);
    expect_miss(ctx, bad, &key, PFT_ENCODED_CORRUPT, "corrupt: %s: bad header", "an unknown flag set");
    memcpy(copy, bytes, n), copy[12] = 1; /* the words flag on a file without words */
    write_bytes(bad, copy, n);
    pft_encoded_key wkey = key;
    wkey.words = true;
    expect_miss(ctx, bad, &wkey, PFT_ENCODED_CORRUPT, "corrupt: %s: wrong size", "the words flag without the words");
    write_bytes(bad, bytes, 40);
    expect_miss(ctx, bad, &key, PFT_ENCODED_CORRUPT, "corrupt: %s: bad header", "a file shorter than a header");
    write_bytes(bad, bytes, n - 1);
    expect_miss(ctx, bad, &key, PFT_ENCODED_CORRUPT, "corrupt: %s: wrong size", "truncated by a byte");
    memcpy(copy, bytes, n), copy[n] = 0;
    write_bytes(bad, copy, n + 1);
    expect_miss(ctx, bad, &key, PFT_ENCODED_CORRUPT, "corrupt: %s: wrong size", "a byte appended");
    memcpy(copy, bytes, n), copy[n - 3] ^= 0x40;
    write_bytes(bad, copy, n);
    expect_miss(ctx, bad, &key, PFT_ENCODED_CORRUPT, "corrupt: %s: checksum mismatch", "a flipped body byte");
    /* a row longer than max_length behind a right checksum: the offsets are checked too */
    memcpy(copy, bytes, n);
    uint64_t off1 = 16;
    memcpy(copy + 80 + 8, &off1, 8);
    uint64_t sum = pft_encoded_hash(PFT_ENCODED_HASH_START, copy + 80, n - 80);
    memcpy(copy + offsetof(pft_encoded_header, checksum), &sum, 8);
    write_bytes(bad, copy, n);
    expect_miss(ctx, bad, &key, PFT_ENCODED_CORRUPT, "corrupt: %s: bad offsets", "a row beyond max_length");
    memcpy(copy, bytes, n);
    uint64_t first = 1;
    memcpy(copy + 80, &first, 8);
    sum = pft_encoded_hash(PFT_ENCODED_HASH_START, copy + 80, n - 80);
    memcpy(copy + offsetof(pft_encoded_header, checksum), &sum, 8);
    write_bytes(bad, copy, n);
    expect_miss(ctx, bad, &key, PFT_ENCODED_CORRUPT, "corrupt: %s: bad offsets", "offsets not starting at 0");
    /* a huge count in the header is a wrong size, not an allocation */
    memcpy(copy, bytes, n);
    uint64_t huge = 1ull << 50;
    memcpy(copy + offsetof(pft_encoded_header, count), &huge, 8);
    write_bytes(bad, copy, n);
    k = key, k.count = huge;
    expect_miss(ctx, bad, &k, PFT_ENCODED_CORRUPT, "corrupt: %s: wrong size", "a count of 2^50");
    /* the miss pointer is optional */
    CHECK(!pft_encoded_load(ctx, tpath("absent.enc"), &key, NULL), "load without a miss pointer");
    free(bytes), free(copy);
    pft_encoded_free(e);
}

/* --- batch order --------------------------------------------------------------------------------------- */

static void test_permutation(void) {
    /* (n, seed, stream) -> core.permutation before the move (1-based there) */
    static const struct {
        int64_t n;
        uint64_t seed, stream;
        int32_t want[34];
    } known[] = {
        {1, 7, 0, {1}},
        {10, 42, 0, {2, 8, 3, 6, 7, 5, 1, 10, 9, 4}},
        {10, 42, 1, {7, 3, 4, 9, 1, 6, 2, 10, 8, 5}},
        {16, 1234, 3, {13, 10, 3, 7, 15, 4, 14, 12, 5, 1, 16, 6, 11, 2, 8, 9}},
        {20, 0, 5, {5, 6, 18, 17, 15, 3, 4, 16, 19, 1, 12, 8, 13, 10, 7, 9, 20, 2, 11, 14}},
        {33, 4503599627370497ull, 2, {30, 5, 1, 31, 13, 23, 14, 2, 15, 8, 22, 6, 12, 16, 3, 10, 20,
                                      32, 29, 21, 28, 7, 17, 27, 4, 11, 26, 18, 33, 25, 19, 24, 9}},
    };
    int64_t out[128];
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
        pft_permutation(known[k].seed, known[k].stream, known[k].n, out);
        int same = 1;
        for (int64_t i = 0; i < known[k].n; i++) same &= out[i] + 1 == known[k].want[i];
        CHECK(same, "permutation(n %lld, seed %llu, stream %llu) differs from before the move", (long long)known[k].n,
              (unsigned long long)known[k].seed, (unsigned long long)known[k].stream);
    }
    static const int32_t want100[100] = {
        63, 62, 25, 70, 98, 79, 53, 9, 23, 37, 58, 38, 83, 47, 72, 80, 57, 67, 4, 42,
        84, 56, 11, 97, 59, 93, 1, 74, 52, 3, 55, 6, 45, 26, 12, 29, 100, 14, 7, 68,
        92, 69, 28, 43, 87, 96, 22, 61, 41, 8, 15, 89, 71, 44, 54, 85, 50, 48, 99, 82,
        66, 88, 39, 17, 31, 30, 49, 13, 51, 90, 60, 78, 27, 32, 40, 35, 24, 10, 5, 36,
        64, 73, 18, 77, 16, 94, 95, 76, 91, 21, 86, 81, 2, 19, 46, 65, 33, 20, 34, 75,
    };
    pft_permutation(20261129, 7, 100, out);
    int same = 1;
    for (int i = 0; i < 100; i++) same &= out[i] + 1 == want100[i];
    CHECK(same, "permutation(100, 20261129, 7) differs from before the move");
    /* every n from 0 to 128 gives each index once, and two streams of one seed differ */
    int all_perms = 1, streams_differ = 1;
    for (int64_t n = 0; n <= 128; n++) {
        int seen[128] = {0};
        pft_permutation(99, 4, n, out);
        for (int64_t i = 0; i < n; i++) all_perms &= out[i] >= 0 && out[i] < n && !seen[out[i]]++;
        if (n >= 8) {
            int64_t other[128];
            pft_permutation(99, 5, n, other);
            streams_differ &= memcmp(out, other, (size_t)n * 8) != 0;
        }
    }
    CHECK(all_perms, "a permutation holds each index once");
    CHECK(streams_differ, "streams 4 and 5 give other orders");
    pft_permutation(1, 0, 0, NULL); /* n 0 touches nothing */
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *ent;
    char p[512];
    while (d && (ent = readdir(d))) {
        if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, ent->d_name);
        remove(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

/* Word tracking (token classification): each token's space-separated word, the loss labels at first
 * pieces, word-level argmax, truncation, and the cache with words (flagged, stale without the flag). */
static void test_words(pft_ctx *ctx, pft_tokenizer *tok) {
    /* tiny vocab: [CLS] the film ##s , play ##ing fast [SEP] */
    const char *t[] = {"the films , playing fast", "the films , playing fast"};
    pft_encoded *e = pft_encoded_new(ctx, 16, false), *cut = pft_encoded_new(ctx, 5, false);
    CHECK(e && cut && pft_encoded_track_words(e) == PFT_OK && pft_encoded_track_words(cut) == PFT_OK, "track words");
    CHECK(pft_encoded_add(e, tok, 2, t, NULL, NULL, NULL) == PFT_OK && pft_encoded_add(cut, tok, 1, t, NULL, NULL, NULL) == PFT_OK,
          "encode with words: %s", pft_ctx_error(ctx));
    const int32_t want_words[] = {-1, 0, 1, 1, 2, 3, 3, 4, -1};
    CHECK(e->n == 2 && pft_encoded_row_length(e, 0) == 9 && !memcmp(e->words, want_words, sizeof want_words),
          "the word of each token");
    CHECK(pft_encoded_track_words(e) == PFT_ERR_STATE, "word tracking only starts on an empty store");
    const char *pair_a[] = {"a"}, *pair_b[] = {"b"};
    pft_encoded *p = pft_encoded_new(ctx, 8, true);
    CHECK(p && pft_encoded_track_words(p) == PFT_OK && pft_encoded_add(p, tok, 1, pair_a, NULL, pair_b, NULL) == PFT_ERR_ARG,
          "word tracking refuses pairs");
    pft_encoded_free(p);
    /* labels: row 0 of a batch of width 10, tags 0..4 */
    int32_t tags[] = {0, 1, 2, 3, 4, 4, 3, 2, 1, 0};
    int64_t at[] = {0, 5}, nw[] = {5, 5}, rows[] = {0, 1};
    int32_t out[20], cont[] = {0, 5, 6, 7, 8};
    const int32_t want_first[] = {-100, 0, 1, -100, 2, 3, -100, 4, -100, -100, -100, 4, 3, -100, 2, 1, -100, 0, -100, -100};
    CHECK(pft_encoded_token_labels(e, 2, rows, 10, tags, at, nw, NULL, 0, out) == PFT_OK && !memcmp(out, want_first, sizeof out),
          "first pieces get the word's tag, the rest -100");
    const int32_t want_all[] = {-100, 0, 1, 5, 2, 3, 7, 4, -100, -100};
    CHECK(pft_encoded_token_labels(e, 1, rows, 10, tags, at, nw, cont, 5, out) == PFT_OK && !memcmp(out, want_all, sizeof want_all),
          "label_all_tokens: later pieces get the continuation tag");
    int64_t short_nw[] = {3};
    CHECK(pft_encoded_token_labels(e, 1, rows, 10, tags, at, short_nw, NULL, 0, out) == PFT_ERR_ARG &&
              strstr(pft_ctx_error(ctx), "has a token of word 3 but 3 tags"),
          "fewer tags than words: %s", pft_ctx_error(ctx));
    CHECK(pft_encoded_token_labels(e, 1, rows, 8, tags, at, nw, NULL, 0, out) == PFT_ERR_ARG, "a batch narrower than the row");
    /* word argmax: the first piece's, ties to the first class; -1 past truncation */
    float logits[10 * 3] = {0};
    for (int j = 0; j < 10; j++) logits[j * 3 + (j % 3)] = 1.0f; /* token j votes class j % 3 */
    int32_t words_out[5];
    const int32_t want_pred[] = {1, 2, 1, 2, 1}; /* first pieces at tokens 1, 2, 4, 5, 7 */
    CHECK(pft_encoded_word_argmax(e, 1, rows, 10, 3, logits, at, nw, words_out) == PFT_OK &&
              !memcmp(words_out, want_pred, sizeof want_pred),
          "word predictions from first pieces: %d %d %d %d %d", words_out[0], words_out[1], words_out[2], words_out[3], words_out[4]);
    const int32_t want_cut[] = {1, 2, -1, -1, -1}; /* max_length 5: [CLS] the film ##s [SEP] */
    CHECK(pft_encoded_word_argmax(cut, 1, rows, 5, 3, logits, at, nw, words_out) == PFT_OK && !memcmp(words_out, want_cut, sizeof want_cut),
          "words cut off by max_length predict -1");
    pft_encoded *plain = encode(ctx, tok, 16, 0);
    CHECK(pft_encoded_token_labels(plain, 1, rows, 10, tags, at, nw, NULL, 0, out) == PFT_ERR_STATE, "a store without words refuses");
    pft_encoded_free(plain);
    /* the cache keeps the words, flagged; a key without words calls it stale */
    pft_encoded_source src = {7, 8, pft_encoded_text_hash(2, t, NULL, NULL, NULL)};
    const char *path = tpath("words.enc");
    CHECK(pft_encoded_save(e, path, &src) == PFT_OK, "save with words");
    pft_encoded_key key = key_of(e, src);
    pft_encoded_miss why;
    pft_encoded *back = pft_encoded_load(ctx, path, &key, &why);
    CHECK(back && why == PFT_ENCODED_HIT && stores_equal(e, back), "words round-trip: %s", pft_ctx_error(ctx));
    size_t n = 0;
    unsigned char *bytes = read_bytes(path, &n);
    pft_encoded_header h;
    memcpy(&h, bytes, sizeof h);
    CHECK(h.flags == PFT_ENCODED_WORDS && n == 80 + 3 * 8 + (size_t)e->ntok * 9, "flag and body size with words");
    free(bytes);
    key.words = false;
    expect_miss(ctx, path, &key, PFT_ENCODED_STALE, "stale: %s: word indices, not asked for", "words not asked for");
    pft_encoded_free(back), pft_encoded_free(e), pft_encoded_free(cut);
}

int main(void) {
    TEST_BEGIN("encoded");
    strcpy(tmpdir, "/tmp/pft_enc_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    pft_ctx *ctx = pft_ctx_new(1, 0);
    pft_tokenizer *tok = pft_tokenizer_load(ctx, TOKENIZER_DIR);
    CHECK(tok != NULL, "tokenizer %s: %s (run from the repository root)", TOKENIZER_DIR, pft_ctx_error(ctx));
    if (tok) {
        test_hashes(tok);
        test_store_matches_encode_batch(ctx, tok);
        test_store_chunks_and_adds(ctx, tok);
        test_store_errors(ctx, tok);
        test_cache_known_files(ctx, tok);
        test_cache_round_trip(ctx, tok);
        test_cache_rejects(ctx, tok);
        test_words(ctx, tok);
    }
    test_permutation();
    pft_tokenizer_free(tok);
    pft_ctx_free(ctx);
    remove_tree(tmpdir);
    return TEST_END();
}
