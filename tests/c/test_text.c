/* test_text.c - the tokenizer against BertTokenizerFast: unit cases, then the parity fixtures written
 * by tests/gen_tokenizer_fixtures.py (tricky texts, every SST-2 sentence, every code point, and the
 * word ids and byte offsets of offset tracking).
 * Run from the repository root; reads tests/fixtures/tokenizer/ and ../shared/data/sst2/. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/fixtures/tokenizer"
#define MODEL FIX "/minilm"
#define DATA "../shared/data/sst2"

static int passed, failed;

static void check(int ok, const char *fmt, ...) {
    if (ok) { passed++; return; }
    failed++;
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static uint64_t fnv_bytes(const void *p, size_t n, uint64_t h) {
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ULL;
    return h;
}
#define FNV0 0xcbf29ce484222325ULL

/* int32 ids as little-endian bytes, as the generator hashes them */
static uint64_t hash_ids(const int32_t *ids, int n, uint64_t h) {
    for (int i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
        h = fnv_bytes(b, 4, h);
    }
    return h;
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) buf[len] = '\0', *n = (size_t)len;
    return buf;
}

/* Splits buf in place into lines (on '\n'); returns the count. */
static size_t split_lines(char *buf, size_t n, char ***lines) {
    size_t cnt = 0, cap = 1024;
    char **l = malloc(cap * sizeof *l);
    size_t s = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || buf[i] == '\n') {
            if (i == n && s == n) break; /* no empty last line after a final '\n' */
            if (cnt == cap) l = realloc(l, (cap *= 2) * sizeof *l);
            buf[i] = '\0';
            l[cnt++] = buf + s;
            s = i + 1;
        }
    }
    *lines = l;
    return cnt;
}

/* ---- words ---------------------------------------------------------------------------------------- */

typedef struct words { char buf[8192]; size_t n; } words;

static void collect(void *ud, const char *w, size_t n) {
    words *ws = ud;
    if (ws->n + n + 2 >= sizeof ws->buf) return;
    if (ws->n) ws->buf[ws->n++] = '|';
    memcpy(ws->buf + ws->n, w, n);
    ws->n += n;
    ws->buf[ws->n] = '\0';
}

/* The words of text (len bytes) joined with '|'. */
static const char *words_of(pft_tokenizer *t, const char *text, size_t len, words *ws) {
    ws->n = 0;
    ws->buf[0] = '\0';
    pft_tokenizer_words(t, text, len, collect, ws);
    return ws->buf;
}

static void check_words(pft_tokenizer *t, const char *text, size_t len, const char *want, const char *what) {
    words ws;
    const char *got = words_of(t, text, len, &ws);
    check(strcmp(got, want) == 0, "%s: words \"%s\", want \"%s\"", what, got, want);
}

static int ids_equal(const pft_encoding *e, const int32_t *want, int n) {
    if (e->n != n) return 0;
    for (int i = 0; i < n; i++)
        if (e->ids[i] != want[i]) return 0;
    return 1;
}

static void ids_str(const int32_t *ids, int n, char *out, size_t cap) {
    size_t u = 0;
    out[0] = '\0';
    for (int i = 0; i < n && u + 12 < cap; i++) u += (size_t)snprintf(out + u, cap - u, i ? " %d" : "%d", ids[i]);
}

/* ---- unit cases ----------------------------------------------------------------------------------- */

static void unit(pft_ctx *ctx, pft_tokenizer *t) {
    check(pft_tokenizer_vocab_size(t) == 30522, "vocab size %d", pft_tokenizer_vocab_size(t));
    check(pft_tokenizer_id(t, "[UNK]") == 100 && pft_tokenizer_id(t, "##ing") == 2075 &&
              pft_tokenizer_id(t, "no-such-token") == -1, "pft_tokenizer_id");
    check(pft_tokenizer_token(t, 101) && strcmp(pft_tokenizer_token(t, 101), "[CLS]") == 0 &&
              !pft_tokenizer_token(t, -1) && !pft_tokenizer_token(t, 30522), "pft_tokenizer_token");
    check(pft_tokenizer_special_id(t, PFT_SPECIAL_PAD) == 0 && pft_tokenizer_special_id(t, PFT_SPECIAL_CLS) == 101 &&
              pft_tokenizer_special_id(t, PFT_SPECIAL_SEP) == 102 && pft_tokenizer_special_id(t, PFT_SPECIAL_MASK) == 103,
          "special ids");
    pft_tokenizer_config cfg = pft_tokenizer_get_config(t);
    check(cfg.lowercase == 1 && cfg.strip_accents == -1 && cfg.chinese_chars == 1 && cfg.model_max_length == 512,
          "config from tokenizer_config.json");

    /* cleaning: NUL, U+FFFD, Cc and Cf vanish without splitting; \t \n \r and Unicode spaces split */
    check_words(t, "a\0b\xEF\xBF\xBD" "c\x01" "d\xE2\x80\x8B" "e", 13, "abcde", "cleaning drops");
    check_words(t, "a\tb\nc\rd\xC2\xA0" "e\xE3\x80\x80" "f", 15, "a|b|c|d|e|f", "whitespace");
    check_words(t, "a\x0B" "b\x0C" "c", PFT_TEXT_CSTR, "abc", "VT and FF are controls first");
    /* accents: NFD then drop Mn, then lowercase */
    check_words(t, "Héllo NAÏVE e\xCC\x81", PFT_TEXT_CSTR, "hello|naive|e", "strip accents");
    check_words(t, "\xC4\xB0stanbul", PFT_TEXT_CSTR, "istanbul", "U+0130 decomposes before lowercasing");
    check_words(t, "\xEA\xB0\x80", PFT_TEXT_CSTR, "\xE1\x84\x80\xE1\x85\xA1", "Hangul syllable to jamo (NFD)");
    /* CJK: each ideograph its own word; kana are not split */
    check_words(t, "ab中文cd", PFT_TEXT_CSTR, "ab|中|文|cd", "CJK split");
    check_words(t, "カタカナ", PFT_TEXT_CSTR, "カタカナ", "kana not split");
    /* punctuation: ASCII symbol ranges and Unicode P* */
    check_words(t, "a$b+c~d", PFT_TEXT_CSTR, "a|$|b|+|c|~|d", "ASCII symbols are punctuation");
    check_words(t, "a\xE2\x80\x94" "b\xC2\xBF" "c\xE2\x82\xAC" "d", PFT_TEXT_CSTR, "a|\xE2\x80\x94|b|\xC2\xBF|c\xE2\x82\xAC" "d",
                "Pd and Po split, Sc does not");
    /* invalid UTF-8 becomes U+FFFD, which cleaning drops: no split, nothing emitted */
    check_words(t, "ab\xFF" "cd e\xC3" "f \xE2\x82" "g \xED\xA0\x80h", PFT_TEXT_CSTR, "abcd|ef|g|h", "invalid UTF-8 is dropped");
    check_words(t, "\xE2[CLS]", PFT_TEXT_CSTR, "[CLS]", "a truncated sequence does not eat the next byte");
    /* special tokens are cut out of the raw text, case-sensitively */
    check_words(t, "x[MASK]y [mask]", PFT_TEXT_CSTR, "x|[MASK]|y|[|mask|]", "special tokens in text");

    pft_encoding e;
    pft_status st = pft_tokenizer_encode(t, "", 0, NULL, 0, 0, &e);
    check(st == PFT_OK && ids_equal(&e, (int32_t[]){101, 102}, 2), "empty string -> [CLS] [SEP]");
    pft_tokenizer_encode(t, " \t\n ", PFT_TEXT_CSTR, NULL, 0, 0, &e);
    check(ids_equal(&e, (int32_t[]){101, 102}, 2), "whitespace only -> [CLS] [SEP]");
    pft_tokenizer_encode(t, "unaffable xyzzyq\xE2\x98\x83", PFT_TEXT_CSTR, NULL, 0, 0, &e);
    check(ids_equal(&e, (int32_t[]){101, 14477, 20961, 3468, 100, 102}, 6),
          "WordPiece continuations, and [UNK] for a whole word when a piece has no match");
    /* max_input_chars_per_word counts characters, not bytes: 100 e-acute (200 bytes) is still one word */
    char longw[512];
    for (int i = 0; i < 101; i++) memcpy(longw + 2 * i, "\xC3\xA9", 2);
    pft_tokenizer_encode(t, longw, 200, NULL, 0, 0, &e);
    check(e.n > 3, "100 characters is not too long (%d ids)", e.n);
    pft_tokenizer_encode(t, longw, 202, NULL, 0, 0, &e);
    check(ids_equal(&e, (int32_t[]){101, 100, 102}, 3), "101 characters -> [UNK]");

    /* pairs and truncation: A = 7 tokens, B = 3 tokens */
    const char *A = "a b c d e f g", *B = "h i j";
    pft_tokenizer_encode(t, A, PFT_TEXT_CSTR, B, PFT_TEXT_CSTR, 0, &e);
    check(e.n == 13 && e.type_ids[8] == 0 && e.type_ids[9] == 1 && e.type_ids[12] == 1 && e.ids[8] == 102,
          "pair layout");
    pft_tokenizer_encode(t, A, PFT_TEXT_CSTR, B, PFT_TEXT_CSTR, 10, &e); /* room 7: B fits in half, A gets 4 */
    check(ids_equal(&e, (int32_t[]){101, 1037, 1038, 1039, 1040, 102, 1044, 1045, 1046, 102}, 10), "longest_first, longer cut");
    pft_tokenizer_encode(t, A, PFT_TEXT_CSTR, "h i j k l m", PFT_TEXT_CSTR, 9, &e); /* room 6: 3 + 3 */
    check(ids_equal(&e, (int32_t[]){101, 1037, 1038, 1039, 102, 1044, 1045, 1046, 102}, 9), "longest_first, both cut");
    pft_tokenizer_encode(t, "a b c d", PFT_TEXT_CSTR, "e f g h i", PFT_TEXT_CSTR, 8, &e); /* room 5: 2 + 3 */
    check(ids_equal(&e, (int32_t[]){101, 1037, 1038, 102, 1041, 1042, 1043, 102}, 8), "odd room goes to the longer");
    pft_tokenizer_encode(t, "a", PFT_TEXT_CSTR, "", 0, 0, &e);
    check(ids_equal(&e, (int32_t[]){101, 1037, 102}, 3), "an empty second text is no pair (transformers' truthiness)");
    pft_tokenizer_encode(t, "", 0, "b", PFT_TEXT_CSTR, 0, &e);
    check(ids_equal(&e, (int32_t[]){101, 102, 1038, 102}, 4) && e.type_ids[2] == 1, "an empty first text still pairs");
    pft_tokenizer_encode(t, A, PFT_TEXT_CSTR, NULL, 0, 4, &e);
    check(ids_equal(&e, (int32_t[]){101, 1037, 1038, 102}, 4), "single truncation");
    pft_tokenizer_encode(t, A, PFT_TEXT_CSTR, NULL, 0, 2, &e);
    check(ids_equal(&e, (int32_t[]){101, 102}, 2), "max_length 2 keeps only the specials");
    check(pft_tokenizer_encode(t, A, PFT_TEXT_CSTR, B, PFT_TEXT_CSTR, 2, &e) == PFT_ERR_ARG, "pair max_length 2 is an error");
    check(pft_tokenizer_encode(t, A, PFT_TEXT_CSTR, NULL, 0, 1, &e) == PFT_ERR_ARG, "max_length 1 is an error");

    /* batches: padding, masks, fixed length, reuse */
    const char *texts[3] = {"hello", "the best film of the year", ""};
    pft_batch b = {0};
    st = pft_tokenizer_encode_batch(t, 3, texts, NULL, NULL, NULL, 0, 0, &b);
    check(st == PFT_OK && b.n == 3 && b.t == 8 && b.lengths[0] == 3 && b.lengths[1] == 8 && b.lengths[2] == 2,
          "batch shape (t %d)", b.t);
    check(b.ids[0 * 8 + 3] == 0 && b.mask[0 * 8 + 2] == 1 && b.mask[0 * 8 + 3] == 0 && b.ids[2 * 8 + 1] == 102,
          "batch padding and mask");
    st = pft_tokenizer_encode_batch(t, 3, texts, NULL, texts, NULL, 6, 6, &b);
    check(st == PFT_OK && b.t == 6 && b.lengths[1] == 6 && b.type_ids[1 * 6 + 5] == 1 && b.type_ids[0 * 6 + 4] == 1 &&
              b.type_ids[0 * 6 + 5] == 0 && b.ids[2 * 6 + 3] == 0,
          "fixed-length pair batch");
    const char *one[1] = {"a"}, *none[1] = {""};
    pft_tokenizer_encode_batch(t, 1, one, NULL, none, NULL, 0, 0, &b);
    check(b.t == 4 && b.ids[3] == 102 && b.type_ids[3] == 1, "in a batch an empty second text still pairs (as in transformers)");
    check(pft_tokenizer_encode_batch(t, 3, texts, NULL, NULL, NULL, 0, 6, &b) == PFT_ERR_ARG,
          "pad_to without max_length is an error (rows could overflow)");
    check(pft_tokenizer_encode_batch(t, 3, texts, NULL, NULL, NULL, 8, 6, &b) == PFT_ERR_ARG, "max_length > pad_to is an error");
    pft_batch_free(&b);

    /* errors naming the file */
    char dir[] = "/tmp/pft_test_text_XXXXXX";
    if (!mkdtemp(dir)) { check(0, "mkdtemp"); return; }
    char path[256];
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    FILE *f = fopen(path, "w");
    fputs("[PAD]\n[CLS]\n[SEP]\nhello\n", f);
    fclose(f);
    pft_tokenizer *bad = pft_tokenizer_load(ctx, dir);
    check(!bad && strstr(pft_ctx_error(ctx), path) && strstr(pft_ctx_error(ctx), "[UNK]"),
          "vocab without [UNK]: \"%s\"", pft_ctx_error(ctx));
    pft_tokenizer_free(bad);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    f = fopen(path, "w");
    fputs("{\"unk_token\": \"hello\",\n \"do_lower_case\": \"yes\"}", f);
    fclose(f);
    bad = pft_tokenizer_load(ctx, dir);
    check(!bad && strstr(pft_ctx_error(ctx), path) && strstr(pft_ctx_error(ctx), "do_lower_case"),
          "bad do_lower_case: \"%s\"", pft_ctx_error(ctx));
    pft_tokenizer_free(bad);
    f = fopen(path, "w");
    fputs("{\"unk_token\": {\"content\": \"hello\"},\n \"do_lower_case\": false}", f);
    fclose(f);
    bad = pft_tokenizer_load(ctx, dir);
    check(bad && pft_tokenizer_special_id(bad, PFT_SPECIAL_UNK) == 3 && pft_tokenizer_special_id(bad, PFT_SPECIAL_MASK) == -1 &&
              pft_tokenizer_get_config(bad).lowercase == 0,
          "configured unk token (AddedToken form): %s", bad ? "" : pft_ctx_error(ctx));
    pft_tokenizer_free(bad);
    f = fopen(path, "w");
    fputs("{\"unk_token\": \"hello\",\n\n \"do_lower_case\": tru}", f);
    fclose(f);
    bad = pft_tokenizer_load(ctx, dir);
    snprintf(path, sizeof path, "%s/tokenizer_config.json:3", dir);
    check(!bad && strstr(pft_ctx_error(ctx), path), "malformed JSON names file and line: \"%s\"", pft_ctx_error(ctx));
    pft_tokenizer_free(bad);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    f = fopen(path, "w");
    fputs("[PAD]\n[UNK]\n[CLS]\n[SEP]\nbad\xFF\n", f);
    fclose(f);
    bad = pft_tokenizer_load(ctx, dir);
    snprintf(path, sizeof path, "%s/vocab.txt:5", dir);
    check(!bad && strstr(pft_ctx_error(ctx), path), "invalid UTF-8 in the vocab names the line: \"%s\"", pft_ctx_error(ctx));
    pft_tokenizer_free(bad);
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    remove(path);
    bad = pft_tokenizer_load(ctx, dir);
    check(!bad && ctx->last_status == PFT_ERR_IO && strstr(pft_ctx_error(ctx), path), "missing vocab: \"%s\"", pft_ctx_error(ctx));
    rmdir(dir);
}

/* ---- offsets and word ids: unit cases ------------------------------------------------------------ */

/* Encodes with tracking on; checks the word ids and the (start, end) pairs (n of each). */
static void check_offsets(pft_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen, int ml,
                          const int32_t *wids, const int32_t *offs, int n, const char *what) {
    pft_encoding e;
    pft_status st = pft_tokenizer_encode(t, a, alen, b, blen, ml, &e);
    int same = st == PFT_OK && e.n == n && e.word_ids && e.offsets;
    for (int i = 0; same && i < n; i++)
        same = e.word_ids[i] == wids[i] && e.offsets[2 * i] == offs[2 * i] && e.offsets[2 * i + 1] == offs[2 * i + 1];
    if (same) { check(1, "%s", what); return; }
    char got[1024] = "", gw[512] = "";
    if (st == PFT_OK && e.word_ids && e.offsets) {
        ids_str(e.word_ids, e.n, gw, sizeof gw);
        size_t u = 0;
        for (int i = 0; i < e.n && u + 24 < sizeof got; i++)
            u += (size_t)snprintf(got + u, sizeof got - u, "(%d,%d)", e.offsets[2 * i], e.offsets[2 * i + 1]);
    }
    check(0, "%s: word ids [%s] offsets %s", what, gw, got);
}

#define OFFS(...) (int32_t[]){__VA_ARGS__}

static void unit_offsets(pft_tokenizer *t) {
    pft_encoding e;
    pft_tokenizer_encode(t, "Hello, world!", PFT_TEXT_CSTR, NULL, 0, 0, &e);
    check(e.word_ids == NULL && e.offsets == NULL, "tracking off (the default): no word ids or offsets");
    check(pft_tokenizer_track_offsets(NULL, 1) == PFT_ERR_ARG, "track_offsets(NULL) is an error");
    check(pft_tokenizer_track_offsets(t, 1) == PFT_OK, "track_offsets on");

    check_offsets(t, "Hello, world!", PFT_TEXT_CSTR, NULL, 0, 0, OFFS(-1, 0, 1, 2, 3, -1),
                  OFFS(0, 0, 0, 5, 5, 6, 7, 12, 12, 13, 0, 0), 6, "Hello, world! (hand-checked)");
    check_offsets(t, "unaffable xyzzyq\xE2\x98\x83", PFT_TEXT_CSTR, NULL, 0, 0, OFFS(-1, 0, 0, 0, 1, -1),
                  OFFS(0, 0, 0, 3, 3, 6, 6, 9, 10, 19, 0, 0), 6, "una ##ffa ##ble, then [UNK] over the whole word");
    /* a precomposed é (2 bytes) is one source character: "hello" covers all of it; a decomposed e + U+0301
     * is two, and the dropped mark at the end of "e" is outside its range (as in transformers) */
    check_offsets(t, "H\xC3\xA9llo na\xC3\xAFve caf\xC3\xA9 e\xCC\x81", PFT_TEXT_CSTR, NULL, 0, 0, OFFS(-1, 0, 1, 2, 3, -1),
                  OFFS(0, 0, 0, 6, 7, 13, 14, 19, 20, 21, 0, 0), 6, "stripped accents");
    check_offsets(t, "\xC4\xB0stanbul", PFT_TEXT_CSTR, NULL, 0, 0, OFFS(-1, 0, -1), OFFS(0, 0, 0, 9, 0, 0), 3,
                  "U+0130 (one source char, two normalized)");
    check_offsets(t, "ab中文cd", PFT_TEXT_CSTR, NULL, 0, 0, OFFS(-1, 0, 1, 2, 3, -1),
                  OFFS(0, 0, 0, 2, 2, 5, 5, 8, 8, 10, 0, 0), 6, "CJK ideographs are words of their own");
    /* a dropped byte inside a word stays inside its range, never at an edge */
    check_offsets(t, "ab\xFF" "cd \x01" "ab\xEF\xBF\xBD", PFT_TEXT_CSTR, NULL, 0, 0, OFFS(-1, 0, 0, 1, -1),
                  OFFS(0, 0, 0, 4, 4, 5, 7, 9, 0, 0), 5, "invalid UTF-8, controls and U+FFFD are dropped");
    check_offsets(t, "a [SEP] b", PFT_TEXT_CSTR, NULL, 0, 0, OFFS(-1, 0, 1, 2, -1), OFFS(0, 0, 0, 1, 2, 7, 8, 9, 0, 0), 5,
                  "a literal [SEP] is a word with its raw range");
    check_offsets(t, "How old", PFT_TEXT_CSTR, "are you?", PFT_TEXT_CSTR, 0, OFFS(-1, 0, 1, -1, 0, 1, 2, -1),
                  OFFS(0, 0, 0, 3, 4, 7, 0, 0, 0, 3, 4, 7, 7, 8, 0, 0), 8, "pair: B's word ids and offsets start again");
    check_offsets(t, "Hello, world!", PFT_TEXT_CSTR, NULL, 0, 4, OFFS(-1, 0, 1, -1), OFFS(0, 0, 0, 5, 5, 6, 0, 0), 4,
                  "truncation keeps the first tokens' offsets");
    check_offsets(t, "a b c d e f g", PFT_TEXT_CSTR, "h i j", PFT_TEXT_CSTR, 10, OFFS(-1, 0, 1, 2, 3, -1, 0, 1, 2, -1),
                  OFFS(0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0), 10, "pair truncation");
    check_offsets(t, "", 0, NULL, 0, 0, OFFS(-1, -1), OFFS(0, 0, 0, 0), 2, "empty text");

    /* the ids do not change with tracking */
    const char *s = "H\xC3\xA9llo [MASK] na\xC3\xAFve 中文 \xC4\xB0 x\xFF" "y unaffable!";
    pft_tokenizer_encode(t, s, PFT_TEXT_CSTR, "b", PFT_TEXT_CSTR, 0, &e);
    int32_t on[64];
    int non = e.n < 64 ? e.n : 64;
    memcpy(on, e.ids, (size_t)non * sizeof *on);
    pft_tokenizer_track_offsets(t, 0);
    pft_tokenizer_encode(t, s, PFT_TEXT_CSTR, "b", PFT_TEXT_CSTR, 0, &e);
    check(ids_equal(&e, on, non) && !e.word_ids && !e.offsets, "same ids with and without tracking; off again: NULL");

    /* a batch with tracking: padding gets -1 and (0, 0); off again frees and clears them */
    const char *texts[2] = {"Hello, world!", "a"};
    pft_batch b = {0};
    pft_tokenizer_encode_batch(t, 2, texts, NULL, NULL, NULL, 0, 0, &b);
    check(b.word_ids == NULL && b.offsets == NULL, "batch without tracking: NULL");
    pft_tokenizer_track_offsets(t, 1);
    pft_status st = pft_tokenizer_encode_batch(t, 2, texts, NULL, NULL, NULL, 0, 0, &b);
    int ok = st == PFT_OK && b.t == 6 && b.word_ids && b.offsets;
    const int32_t w0[6] = {-1, 0, 1, 2, 3, -1}, o0[12] = {0, 0, 0, 5, 5, 6, 7, 12, 12, 13, 0, 0};
    const int32_t w1[6] = {-1, 0, -1, -1, -1, -1}, o1[12] = {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int j = 0; ok && j < 6; j++)
        ok = b.word_ids[j] == w0[j] && b.word_ids[6 + j] == w1[j] && b.offsets[2 * j] == o0[2 * j] &&
             b.offsets[2 * j + 1] == o0[2 * j + 1] && b.offsets[12 + 2 * j] == o1[2 * j] && b.offsets[12 + 2 * j + 1] == o1[2 * j + 1];
    check(ok, "batch with tracking: word ids and offsets, padding -1 and (0, 0)");
    const char *pa[3] = {"How old", "x", "a b c d e f g"}, *pb[3] = {"are you?", "", "h i j"};
    st = pft_tokenizer_encode_batch(t, 3, pa, NULL, pb, NULL, 10, 12, &b); /* grows the batch */
    ok = st == PFT_OK && b.t == 12;
    const int32_t pw[36] = {-1, 0, 1, -1, 0, 1, 2, -1, -1, -1, -1, -1, -1, 0, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                            -1, 0, 1, 2, 3, -1, 0, 1, 2, -1, -1, -1};
    const int32_t po[72] = {0, 0, 0, 3, 4, 7, 0, 0, 0, 3, 4, 7, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                            0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                            0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0};
    for (int j = 0; ok && j < 36; j++) ok = b.word_ids[j] == pw[j];
    for (int j = 0; ok && j < 72; j++) ok = b.offsets[j] == po[j];
    check(ok, "pair batch with tracking, padded to 12");
    pft_tokenizer_track_offsets(t, 0);
    pft_tokenizer_encode_batch(t, 2, texts, NULL, NULL, NULL, 0, 0, &b);
    check(b.word_ids == NULL && b.offsets == NULL && b.t == 6 && b.ids[1] == 7592, "tracking off again: batch arrays freed");
    pft_tokenizer_track_offsets(t, 1);
    pft_tokenizer_encode_batch(t, 2, texts, NULL, NULL, NULL, 0, 0, &b);
    check(b.word_ids && b.word_ids[4] == 3 && b.offsets[9] == 13 && b.word_ids[6 + 2] == -1, "and on again");
    /* code that grows a batch's ids itself (as pft_encoded_gather does) leaves word_ids to their own capacity */
    size_t big = 64 * 64;
    b.ids = realloc(b.ids, big * sizeof *b.ids), b.type_ids = realloc(b.type_ids, big * sizeof *b.type_ids);
    b.mask = realloc(b.mask, big * sizeof *b.mask), b.cap_cells = big;
    const char *many[64];
    for (int j = 0; j < 64; j++) many[j] = "the best film of the year , and of all time";
    st = pft_tokenizer_encode_batch(t, 64, many, NULL, NULL, NULL, 0, 0, &b);
    check(st == PFT_OK && b.cap_track >= (size_t)(64 * b.t) && b.word_ids[63 * b.t + 11] == 10 &&
              b.offsets[2 * (63 * b.t + 11) + 1] == 43,
          "tracking arrays grow by their own capacity");
    pft_batch_free(&b);
    check(b.word_ids == NULL && b.offsets == NULL && b.ids == NULL && b.cap_track == 0, "pft_batch_free clears the tracking arrays");
    /* words mode is unaffected by tracking */
    check_words(t, "Héllo, 中文", PFT_TEXT_CSTR, "hello|,|中|文", "words with tracking on");
    pft_tokenizer_track_offsets(t, 0);
}

/* ---- tricky texts --------------------------------------------------------------------------------- */

/* Decodes the escapes of tricky.txt (see tests/gen_tokenizer_fixtures.py) into out; returns the length. */
static size_t unescape(const char *s, char *out) {
    size_t n = 0;
    while (*s) {
        if (*s != '\\') { out[n++] = *s++; continue; }
        char e = s[1];
        if (e == '\\' || e == 't' || e == 'n' || e == 'r' || e == '0') {
            out[n++] = e == '\\' ? '\\' : e == 't' ? '\t' : e == 'n' ? '\n' : e == 'r' ? '\r' : '\0';
            s += 2;
        } else if (e == 'x' || e == 'u' || e == 'U') {
            int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            char hex[9] = {0};
            memcpy(hex, s + 2, (size_t)digits);
            unsigned long v = strtoul(hex, NULL, 16);
            s += 2 + digits;
            if (e == 'x') { out[n++] = (char)v; continue; }
            if (v < 0x80) out[n++] = (char)v;
            else if (v < 0x800) { out[n++] = (char)(0xC0 | (v >> 6)); out[n++] = (char)(0x80 | (v & 0x3F)); }
            else if (v < 0x10000) {
                out[n++] = (char)(0xE0 | (v >> 12)); out[n++] = (char)(0x80 | ((v >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (v & 0x3F));
            } else {
                out[n++] = (char)(0xF0 | (v >> 18)); out[n++] = (char)(0x80 | ((v >> 12) & 0x3F));
                out[n++] = (char)(0x80 | ((v >> 6) & 0x3F)); out[n++] = (char)(0x80 | (v & 0x3F));
            }
        } else {
            out[n++] = *s++;
        }
    }
    return n;
}

typedef struct tcase { char *a, *b; size_t na, nb; } tcase;

/* The cases of tricky.txt (text, or text TAB pair, escapes decoded; # lines skipped) from its bytes in
 * buf, which the lines (returned in *lines, for the caller to free) point into. */
static tcase *tricky_cases(char *buf, char ***lines, size_t *nc) {
    size_t nl = split_lines(buf, strlen(buf), lines);
    tcase *cases = calloc(nl, sizeof *cases);
    *nc = 0;
    for (size_t i = 0; i < nl; i++) {
        char *line = (*lines)[i];
        if (line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        if (tab) *tab = '\0';
        cases[*nc].a = malloc(strlen(line) + 1);
        cases[*nc].na = unescape(line, cases[*nc].a);
        if (tab) {
            cases[*nc].b = malloc(strlen(tab + 1) + 1);
            cases[*nc].nb = unescape(tab + 1, cases[*nc].b);
        }
        (*nc)++;
    }
    return cases;
}

static void tricky(pft_tokenizer *t) {
    size_t n;
    char *buf = slurp(FIX "/tricky.txt", &n);
    char *exp = slurp(FIX "/tricky_expected.txt", &n);
    check(buf && exp, "read " FIX "/tricky.txt and tricky_expected.txt");
    if (!buf || !exp) { free(buf); free(exp); return; }
    char **lines;
    size_t nc;
    tcase *cases = tricky_cases(buf, &lines, &nc);
    char **el;
    size_t ne = split_lines(exp, n, &el);
    pft_tokenizer_config base = pft_tokenizer_get_config(t);
    int ok = 0, bad = 0;
    for (size_t i = 0; i < ne; i++) {
        if (el[i][0] == '#') continue;
        char *f[5];
        int k = 0;
        for (char *p = el[i]; k < 5; k++) {
            f[k] = p;
            char *tab = strchr(p, '\t');
            if (!tab) { k++; break; }
            *tab = '\0';
            p = tab + 1;
        }
        if (k != 5) { check(0, "tricky_expected.txt line %zu malformed", i + 1); continue; }
        pft_tokenizer_config cfg = base;
        if (strcmp(f[0], "cased") == 0) cfg.lowercase = 0;
        else if (strcmp(f[0], "lower_nostrip") == 0) cfg.strip_accents = 0;
        pft_tokenizer_set_config(t, &cfg);
        size_t ci = strtoul(f[1], NULL, 10);
        int ml = atoi(f[2]);
        if (ci >= nc) { check(0, "tricky_expected.txt line %zu: no case %zu", i + 1, ci); continue; }
        int32_t want[4096], wtype[4096];
        int nw = 0, nt = 0;
        for (char *p = f[3]; *p && nw < 4096;) want[nw++] = (int32_t)strtol(p, &p, 10);
        for (char *p = f[4]; *p && nt < 4096;) wtype[nt++] = (int32_t)strtol(p, &p, 10);
        pft_encoding e;
        pft_status st = pft_tokenizer_encode(t, cases[ci].a, cases[ci].na, cases[ci].b, cases[ci].nb, ml, &e);
        int same = st == PFT_OK && ids_equal(&e, want, nw) && nt == nw;
        for (int j = 0; same && j < nt; j++) same = e.type_ids[j] == wtype[j];
        if (same) { ok++; continue; }
        bad++;
        char got[2048], exps[2048];
        ids_str(e.ids, st == PFT_OK ? e.n : 0, got, sizeof got);
        ids_str(want, nw, exps, sizeof exps);
        check(0, "tricky %s case %zu max_length %d: got [%s] want [%s]", f[0], ci, ml, got, exps);
    }
    pft_tokenizer_set_config(t, &base);
    check(ok > 0 && bad == 0, "tricky: %d of %d expectations", ok, ok + bad);
    printf("tricky: %zu cases, %d of %d expectations identical\n", nc, ok, ok + bad);
    for (size_t i = 0; i < nc; i++) free(cases[i].a), free(cases[i].b);
    free(cases); free(lines); free(el); free(buf); free(exp);
}

/* ---- SST-2 ---------------------------------------------------------------------------------------- */

typedef struct split { char *buf; char **sent; size_t *len; size_t n; } split;

/* Reads DATA/name.tsv in place: the sentence is everything before the last TAB. */
static int read_split(const char *name, split *s) {
    char path[256];
    snprintf(path, sizeof path, DATA "/%s.tsv", name);
    size_t n;
    memset(s, 0, sizeof *s);
    s->buf = slurp(path, &n);
    if (!s->buf) { check(0, "cannot read %s (the SST-2 data must be there)", path); return 0; }
    char **lines;
    size_t nl = split_lines(s->buf, n, &lines);
    if (nl == 0 || strncmp(lines[0], "sentence\t", 9) != 0) { check(0, "%s: no 'sentence<TAB>label' header", path); free(lines); return 0; }
    s->sent = malloc(nl * sizeof *s->sent);
    s->len = malloc(nl * sizeof *s->len);
    for (size_t i = 1; i < nl; i++) {
        size_t l = strlen(lines[i]);
        if (l && lines[i][l - 1] == '\r') lines[i][--l] = '\0';
        if (!l) continue;
        char *tab = strrchr(lines[i], '\t');
        if (tab) *tab = '\0';
        s->sent[s->n] = lines[i];
        s->len[s->n++] = strlen(lines[i]);
    }
    free(lines);
    return 1;
}

static void free_split(split *s) { free(s->buf); free((void *)s->sent); free(s->len); }

static void sst2(pft_ctx *ctx, pft_tokenizer *t) {
    size_t n;
    char *fx = slurp(FIX "/sst2.txt", &n);
    check(fx != NULL, "read " FIX "/sst2.txt");
    if (!fx) return;
    char **l;
    size_t nl = split_lines(fx, n, &l);
    split sp[3];
    const char *names[3] = {"train", "dev", "test"};
    int have[3];
    for (int k = 0; k < 3; k++) have[k] = read_split(names[k], &sp[k]);
    pft_batch b = {0};
    int total_ok = 0, total = 0;
    for (size_t i = 0; i < nl;) {
        if (l[i][0] != '@') { i++; continue; }
        char name[32];
        size_t cnt;
        int ml;
        if (sscanf(l[i], "@ %31s %zu %d", name, &cnt, &ml) != 3) { check(0, "sst2.txt line %zu malformed", i + 1); break; }
        i++;
        int pairs = strcmp(name, "devpairs") == 0;
        int k = pairs ? 1 : strcmp(name, "train") == 0 ? 0 : strcmp(name, "dev") == 0 ? 1 : 2;
        if (!have[k] || (pairs ? sp[k].n - 1 : sp[k].n) != cnt) {
            check(0, "sst2 %s: fixture has %zu rows, data %zu", name, cnt, have[k] ? sp[k].n : 0);
            i += cnt;
            continue;
        }
        /* the batch API in chunks of 1024 (what a data loader does), checked row by row */
        int ok = 0, shown = 0;
        for (size_t s0 = 0; s0 < cnt; s0 += 1024) {
            int m = (int)(cnt - s0 < 1024 ? cnt - s0 : 1024);
            pft_status st = pft_tokenizer_encode_batch(t, m, (const char *const *)sp[k].sent + s0, sp[k].len + s0,
                                                       pairs ? (const char *const *)sp[k].sent + s0 + 1 : NULL,
                                                       pairs ? sp[k].len + s0 + 1 : NULL, ml, 0, &b);
            if (st != PFT_OK) { check(0, "sst2 %s batch: %s", name, pft_ctx_error(ctx)); break; }
            for (int r = 0; r < m; r++) {
                const int32_t *ids = b.ids + (size_t)r * b.t;
                uint64_t h = hash_ids(ids, b.lengths[r], FNV0);
                if (pairs) h = hash_ids(b.type_ids + (size_t)r * b.t, b.lengths[r], h);
                unsigned long long want = strtoull(l[i + s0 + (size_t)r], NULL, 16);
                if (h == want) { ok++; continue; }
                if (shown++ < 10) {
                    char got[1024];
                    ids_str(ids, b.lengths[r], got, sizeof got);
                    check(0, "sst2 %s row %zu (max_length %d): hash differs; ids [%s] for \"%s\"", name, s0 + (size_t)r, ml,
                          got, sp[k].sent[s0 + (size_t)r]);
                }
            }
        }
        /* the untruncated hash, where the fixture has one, through the single-text API */
        for (size_t r = 0; r < cnt && !pairs; r++) {
            const char *sp2 = strchr(l[i + r], ' ');
            if (!sp2) continue;
            pft_encoding e;
            pft_tokenizer_encode(t, sp[k].sent[r], sp[k].len[r], NULL, 0, 0, &e);
            check(hash_ids(e.ids, e.n, FNV0) == strtoull(sp2 + 1, NULL, 16), "sst2 %s row %zu untruncated", name, r);
        }
        check(ok == (int)cnt, "sst2 %s (max_length %d): %d of %zu identical", name, ml, ok, cnt);
        printf("sst2 %s (max_length %d): %d of %zu identical\n", name, ml, ok, cnt);
        total_ok += ok;
        total += (int)cnt;
        i += cnt;
    }
    printf("sst2: %d of %d identical\n", total_ok, total);
    check(total > 0, "sst2 fixture has rows");
    pft_batch_free(&b);
    for (int k = 0; k < 3; k++) if (have[k]) free_split(&sp[k]);
    free(l);
    free(fx);
}

/* ---- offsets fixture ------------------------------------------------------------------------------ */

static uint64_t hash_offsets(const int32_t *wids, const int32_t *offs, int n) {
    return hash_ids(offs, 2 * n, hash_ids(wids, n, FNV0));
}

/* Parses "s,e s,e ..." into out (pairs); returns the number of pairs. */
static int parse_pairs(char *p, int32_t *out, int cap) {
    int k = 0;
    while (*p && k < cap) {
        out[2 * k] = (int32_t)strtol(p, &p, 10);
        if (*p != ',') break;
        out[2 * k + 1] = (int32_t)strtol(p + 1, &p, 10);
        k++;
        while (*p == ' ') p++;
    }
    return k;
}

/* tests/fixtures/tokenizer/offsets.txt: the tricky cases in full, SST-2 train rows and pairs hashed. */
static void offsets_fixture(pft_ctx *ctx, pft_tokenizer *t) {
    size_t n;
    char *fx = slurp(FIX "/offsets.txt", &n), *tb = slurp(FIX "/tricky.txt", &n);
    check(fx && tb, "read " FIX "/offsets.txt and tricky.txt");
    if (!fx || !tb) { free(fx); free(tb); return; }
    char **lines;
    size_t nc;
    tcase *cases = tricky_cases(tb, &lines, &nc);
    char **l;
    size_t nfx = split_lines(fx, strlen(fx), &l);
    split train;
    int have = read_split("train", &train);
    pft_tokenizer_config base = pft_tokenizer_get_config(t);
    pft_tokenizer_track_offsets(t, 1);
    pft_batch b = {0}, b0 = {0};
    int tokens = 0;
    for (size_t i = 0; i < nfx;) {
        if (l[i][0] != '@') { i++; continue; }
        char name[32];
        size_t cnt;
        int ml = 0;
        if (sscanf(l[i], "@ %31s %zu %d", name, &cnt, &ml) < 2 || i + 1 + cnt > nfx) { check(0, "offsets.txt line %zu malformed", i + 1); break; }
        i++;
        int ok = 0, shown = 0;
        if (strcmp(name, "tricky") == 0) {
            for (size_t r = 0; r < cnt; r++) {
                char *f[5], *p = l[i + r];
                int k = 0;
                for (; k < 5; k++) {
                    f[k] = p;
                    char *tab = strchr(p, '\t');
                    if (!tab) { k++; break; }
                    *tab = '\0';
                    p = tab + 1;
                }
                size_t ci = strtoul(f[1], NULL, 10);
                if (k != 5 || ci >= nc) { check(0, "offsets.txt tricky row %zu malformed", r); continue; }
                pft_tokenizer_config cfg = base;
                if (strcmp(f[0], "cased") == 0) cfg.lowercase = 0;
                else if (strcmp(f[0], "lower_nostrip") == 0) cfg.strip_accents = 0;
                pft_tokenizer_set_config(t, &cfg);
                int mlr = atoi(f[2]);
                static int32_t ww[4096], wo[8192];
                int nw = 0;
                for (char *q = f[3]; *q && nw < 4096;) ww[nw++] = (int32_t)strtol(q, &q, 10);
                int no = parse_pairs(f[4], wo, 4096);
                pft_encoding e;
                pft_status st = pft_tokenizer_encode(t, cases[ci].a, cases[ci].na, cases[ci].b, cases[ci].nb, mlr, &e);
                int same = st == PFT_OK && e.n == nw && no == nw;
                for (int j = 0; same && j < nw; j++)
                    same = e.word_ids[j] == ww[j] && e.offsets[2 * j] == wo[2 * j] && e.offsets[2 * j + 1] == wo[2 * j + 1];
                if (same) { ok++; tokens += nw; continue; }
                if (shown++ < 10) {
                    char got[2048] = "", gw[1024] = "";
                    if (st == PFT_OK) {
                        ids_str(e.word_ids, e.n, gw, sizeof gw);
                        size_t u = 0;
                        for (int j = 0; j < e.n && u + 24 < sizeof got; j++)
                            u += (size_t)snprintf(got + u, sizeof got - u, " %d,%d", e.offsets[2 * j], e.offsets[2 * j + 1]);
                    }
                    check(0, "offsets tricky %s case %zu max_length %d: word ids [%s] want [%s]; offsets%s want %s", f[0], ci, mlr,
                          gw, f[3], got, f[4]);
                }
            }
            pft_tokenizer_set_config(t, &base);
        } else if (strcmp(name, "extra") == 0) {
            for (size_t r = 0; r < cnt; r++) {
                char *f[3], *p = l[i + r];
                int k = 0;
                for (; k < 3; k++) {
                    f[k] = p;
                    char *tab = strchr(p, '\t');
                    if (!tab) { k++; break; }
                    *tab = '\0';
                    p = tab + 1;
                }
                if (k != 3) { check(0, "offsets.txt extra row %zu malformed", r); continue; }
                char text[1024];
                size_t tl = unescape(f[0], text);
                static int32_t ww[512], wo[1024];
                int nw = 0;
                for (char *q = f[1]; *q && nw < 512;) ww[nw++] = (int32_t)strtol(q, &q, 10);
                int no = parse_pairs(f[2], wo, 512);
                pft_encoding e;
                pft_status st = pft_tokenizer_encode(t, text, tl, NULL, 0, 0, &e);
                int same = st == PFT_OK && e.n == nw && no == nw;
                for (int j = 0; same && j < nw; j++)
                    same = e.word_ids[j] == ww[j] && e.offsets[2 * j] == wo[2 * j] && e.offsets[2 * j + 1] == wo[2 * j + 1];
                if (same) { ok++; tokens += nw; continue; }
                char got[2048] = "", gw[1024] = "";
                if (st == PFT_OK) {
                    ids_str(e.word_ids, e.n, gw, sizeof gw);
                    size_t u = 0;
                    for (int j = 0; j < e.n && u + 24 < sizeof got; j++)
                        u += (size_t)snprintf(got + u, sizeof got - u, " %d,%d", e.offsets[2 * j], e.offsets[2 * j + 1]);
                }
                check(0, "offsets extra \"%s\": word ids [%s] want [%s]; offsets%s want %s", f[0], gw, f[1], got, f[2]);
            }
        } else if (strcmp(name, "train") == 0 || strcmp(name, "trainpairs") == 0) {
            int pairs = name[5] == 'p';
            if (!have || train.n < cnt + (size_t)pairs) { check(0, "offsets %s: the SST-2 train data is missing or short", name); i += cnt; continue; }
            if (!pairs) {
                /* the batch API, checked against the same batch without tracking */
                for (size_t s0 = 0; s0 < cnt; s0 += 500) {
                    int m = (int)(cnt - s0 < 500 ? cnt - s0 : 500);
                    pft_status st = pft_tokenizer_encode_batch(t, m, (const char *const *)train.sent + s0, train.len + s0,
                                                               NULL, NULL, ml, 0, &b);
                    pft_tokenizer_track_offsets(t, 0);
                    pft_status st0 = pft_tokenizer_encode_batch(t, m, (const char *const *)train.sent + s0, train.len + s0,
                                                                NULL, NULL, ml, 0, &b0);
                    pft_tokenizer_track_offsets(t, 1);
                    if (st != PFT_OK || st0 != PFT_OK) { check(0, "offsets train batch: %s", pft_ctx_error(ctx)); break; }
                    size_t cells = (size_t)m * (size_t)b.t;
                    check(b.t == b0.t && memcmp(b.ids, b0.ids, cells * sizeof *b.ids) == 0 &&
                              memcmp(b.mask, b0.mask, cells * sizeof *b.mask) == 0 && !b0.word_ids,
                          "offsets train rows %zu..: ids the same with tracking", s0);
                    for (int r = 0; r < m; r++) {
                        const int32_t *w = b.word_ids + (size_t)r * b.t, *o = b.offsets + 2 * (size_t)r * b.t;
                        int len = b.lengths[r];
                        int pad_ok = 1;
                        for (int j = len; j < b.t; j++) pad_ok &= w[j] == -1 && o[2 * j] == 0 && o[2 * j + 1] == 0;
                        if (pad_ok && hash_offsets(w, o, len) == strtoull(l[i + s0 + (size_t)r], NULL, 16)) { ok++; tokens += len; continue; }
                        if (shown++ < 10)
                            check(0, "offsets train row %zu: word ids / offsets differ for \"%s\"", s0 + (size_t)r, train.sent[s0 + (size_t)r]);
                    }
                }
            } else {
                for (size_t r = 0; r < cnt; r++) {
                    pft_encoding e;
                    pft_status st = pft_tokenizer_encode(t, train.sent[r], train.len[r], train.sent[r + 1], train.len[r + 1], ml, &e);
                    if (st == PFT_OK && hash_offsets(e.word_ids, e.offsets, e.n) == strtoull(l[i + r], NULL, 16)) { ok++; tokens += e.n; continue; }
                    if (shown++ < 10) check(0, "offsets trainpairs row %zu differs", r);
                }
            }
        } else {
            check(0, "offsets.txt: unknown section %s", name);
        }
        check(ok == (int)cnt, "offsets %s: %d of %zu identical", name, ok, cnt);
        printf("offsets %s: %d of %zu identical\n", name, ok, cnt);
        i += cnt;
    }
    printf("offsets: %d tokens' word ids and offsets checked\n", tokens);
    pft_tokenizer_track_offsets(t, 0);
    pft_batch_free(&b);
    pft_batch_free(&b0);
    if (have) free_split(&train);
    for (size_t i = 0; i < nc; i++) free(cases[i].a), free(cases[i].b);
    free(cases); free(lines); free(l); free(fx); free(tb);
}

/* ---- every code point ----------------------------------------------------------------------------- */

typedef struct hasher { uint64_t h; } hasher;

static void hash_word(void *ud, const char *w, size_t n) {
    hasher *hs = ud;
    hs->h = fnv_bytes(w, n, hs->h);
    hs->h = fnv_bytes("\x01", 1, hs->h);
}

static void unicode(pft_tokenizer *t) {
    size_t n;
    char *fx = slurp(FIX "/unicode.txt", &n);
    check(fx != NULL, "read " FIX "/unicode.txt");
    if (!fx) return;
    char **l;
    size_t nl = split_lines(fx, n, &l);
    pft_tokenizer_config base = pft_tokenizer_get_config(t), cased = base;
    cased.lowercase = 0;
    int blocks = 0, ok = 0;
    for (size_t i = 0; i < nl; i++) {
        if (l[i][0] == '#') continue;
        unsigned blk;
        unsigned long long want[2];
        if (sscanf(l[i], "%u %llx %llx", &blk, &want[0], &want[1]) != 3) { check(0, "unicode.txt line %zu malformed", i + 1); continue; }
        for (int c = 0; c < 2; c++) {
            pft_tokenizer_set_config(t, c ? &cased : &base);
            hasher hs = {FNV0};
            for (uint32_t cp = blk << 12; cp < (blk + 1) << 12; cp++) {
                if (cp >= 0xD800 && cp <= 0xDFFF) continue;
                char s[6] = {'a'};
                size_t k = 1;
                if (cp < 0x80) s[k++] = (char)cp;
                else if (cp < 0x800) { s[k++] = (char)(0xC0 | (cp >> 6)); s[k++] = (char)(0x80 | (cp & 0x3F)); }
                else if (cp < 0x10000) {
                    s[k++] = (char)(0xE0 | (cp >> 12)); s[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    s[k++] = (char)(0x80 | (cp & 0x3F));
                } else {
                    s[k++] = (char)(0xF0 | (cp >> 18)); s[k++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                    s[k++] = (char)(0x80 | ((cp >> 6) & 0x3F)); s[k++] = (char)(0x80 | (cp & 0x3F));
                }
                s[k++] = 'a';
                pft_tokenizer_words(t, s, k, hash_word, &hs);
                hs.h = fnv_bytes("\x02", 1, hs.h);
            }
            blocks++;
            if (hs.h == want[c]) ok++;
            else check(0, "unicode block U+%04X-U+%04X %s: words differ", blk << 12, ((blk + 1) << 12) - 1, c ? "cased" : "uncased");
        }
    }
    pft_tokenizer_set_config(t, &base);
    check(blocks == 2 * 272, "unicode: %d blocks checked", blocks);
    printf("unicode: %d of %d blocks of 4096 code points identical (uncased and cased)\n", ok, blocks);
    free(l);
    free(fx);
}

int main(void) {
    pft_ctx *ctx = pft_ctx_new(1, 0);
    pft_tokenizer *t = pft_tokenizer_load(ctx, MODEL);
    check(t != NULL, "load %s: %s", MODEL, pft_ctx_error(ctx));
    if (t) {
        unit(ctx, t);
        unit_offsets(t);
        tricky(t);
        sst2(ctx, t);
        unicode(t);
        offsets_fixture(ctx, t);
        pft_tokenizer_free(t);
    }
    pft_ctx_free(ctx);
    printf("text: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
