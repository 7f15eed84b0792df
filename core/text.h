/* text.h - the BERT WordPiece tokenizer, id for id the same as Hugging Face BertTokenizerFast.
 *
 *     pft_tokenizer *tok = pft_tokenizer_load(ctx, "checkpoints/minilm");   // vocab.txt + tokenizer_config.json
 *     if (!tok) fprintf(stderr, "%s\n", pft_ctx_error(ctx));
 *     pft_encoding e;
 *     pft_tokenizer_encode(tok, "Hello world!", PFT_TEXT_CSTR, NULL, 0, 128, &e);  // [CLS] hello world ! [SEP]
 *     pft_batch b = {0};                                  // reused across calls; free once at the end
 *     const char *texts[] = {"a film", "the best film of the year"};
 *     pft_tokenizer_encode_batch(tok, 2, texts, NULL, NULL, NULL, 128, 0, &b);  // b.ids is (2, b.t)
 *     pft_batch_free(&b);
 *     pft_tokenizer_free(tok);
 *
 * Ownership: whoever calls pft_tokenizer_load owns the tokenizer and frees it with pft_tokenizer_free.
 * A pft_encoding points into the tokenizer's scratch buffers and is valid until the next call on that
 * tokenizer. A pft_batch owns its arrays (the caller frees them with pft_batch_free); passing the same
 * batch again reuses its memory. A tokenizer is not thread-safe (it holds scratch buffers): load one per
 * thread.
 *
 * Pipeline (that of BertTokenizerFast, i.e. the `tokenizers` library):
 *   1. special tokens ([UNK] [CLS] [SEP] [PAD] [MASK], as configured) are cut out of the raw text first,
 *      case-sensitively, wherever they occur, and become their own ids;
 *   2. cleaning: U+0000, U+FFFD and control characters (Cc, Cf, Co; but \t \n \r count as whitespace)
 *      are dropped, whitespace becomes a space;
 *   3. CJK ideographs get a space on each side (tokenize_chinese_chars);
 *   4. strip accents (NFD, then drop Mn) if strip_accents, then lowercase if do_lower_case;
 *   5. split on whitespace, and around each punctuation character (ASCII 33-47, 58-64, 91-96, 123-126
 *      and Unicode P*);
 *   6. WordPiece: greedy longest match first, "##" before continuations; a word with no match, or longer
 *      than 100 characters, becomes [UNK];
 *   7. [CLS] A [SEP] or [CLS] A [SEP] B [SEP], token_type_ids 0 for A's part and 1 for B's.
 * The Unicode data follows tokenizers, not the newest standard: tokenizers' categories come from an
 * older Unicode version than utf8proc's, and text.c keeps small override tables for the difference
 * (regenerate with `python3 tests/gen_tokenizer_fixtures.py tables`).
 *
 * Invalid UTF-8: each ill-formed byte sequence is read as U+FFFD (as Python's
 * bytes.decode('utf-8', 'replace') does), which cleaning then drops; it never ends a word. So
 * "ab\xffcd" encodes like "abcd". Encoding never fails on text content.
 *
 * Truncation (max_length > 0): the specials count toward max_length. One text keeps its first
 * max_length - 2 tokens. A pair follows tokenizers' longest_first: with room L = max_length - 3, if the
 * shorter part fits in half the room, the longer part gets the rest; otherwise each gets L / 2 and the
 * longer one (the second on a tie) gets the odd token. Tokens are only ever dropped from the end, and
 * nothing overflows into further rows. max_length = 0 means no truncation. */
#ifndef PFT_TEXT_H
#define PFT_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "ctx.h"

typedef struct pft_tokenizer pft_tokenizer;

/* Pass as a length to mean "NUL-terminated: use strlen". */
#define PFT_TEXT_CSTR ((size_t)-1)

typedef enum pft_special {
    PFT_SPECIAL_UNK = 0,
    PFT_SPECIAL_CLS,
    PFT_SPECIAL_SEP,
    PFT_SPECIAL_PAD,
    PFT_SPECIAL_MASK,
    PFT_SPECIAL_COUNT
} pft_special;

/* Normalization settings, read from tokenizer_config.json (defaults in brackets). */
typedef struct pft_tokenizer_config {
    int lowercase;        /* do_lower_case [1] */
    int strip_accents;    /* strip_accents; -1 (JSON null) follows lowercase [-1] */
    int chinese_chars;    /* tokenize_chinese_chars [1] */
    int model_max_length; /* model_max_length, clamped to INT_MAX; informational [512] */
} pft_tokenizer_config;

/* One encoded text or pair; ids and type_ids have n entries. The attention mask is n ones. */
typedef struct pft_encoding {
    const int32_t *ids;
    const int32_t *type_ids;
    int n;
} pft_encoding;

/* A padded batch. ids is padded with the pad id, type_ids and mask with 0 (right padding). */
typedef struct pft_batch {
    int n, t;            /* rows (texts), columns (tokens) */
    int32_t *ids;        /* (n, t) */
    int32_t *type_ids;   /* (n, t) */
    int32_t *mask;       /* (n, t) 1 for a token, 0 for padding */
    int32_t *lengths;    /* (n) tokens per row, specials included */
    size_t cap_rows, cap_cells; /* allocated sizes, so that a batch can be reused */
} pft_batch;

/* Reads dir/vocab.txt (one token per line, id = line number from 0) and, when present,
 * dir/tokenizer_config.json and dir/special_tokens_map.json (which wins for special tokens, as in
 * transformers). Returns NULL with the error in ctx (naming the file, and the line where it applies)
 * when a file is unreadable or malformed, or when the vocab lacks the unk, cls, sep or pad token. */
pft_tokenizer *pft_tokenizer_load(pft_ctx *ctx, const char *dir);
void pft_tokenizer_free(pft_tokenizer *tok);

pft_tokenizer_config pft_tokenizer_get_config(const pft_tokenizer *tok);
/* Replaces the normalization settings (e.g. a cased run over an uncased vocab). */
pft_status pft_tokenizer_set_config(pft_tokenizer *tok, const pft_tokenizer_config *cfg);

int pft_tokenizer_vocab_size(const pft_tokenizer *tok);
/* Id of a vocab token (exact bytes; the last line wins for duplicates, as in transformers), or -1. */
int32_t pft_tokenizer_id(const pft_tokenizer *tok, const char *token);
/* Token of an id (NUL-terminated, owned by tok), or NULL when id is out of range. */
const char *pft_tokenizer_token(const pft_tokenizer *tok, int32_t id);
int32_t pft_tokenizer_special_id(const pft_tokenizer *tok, pft_special which); /* -1 for an absent mask */

/* Encodes text a (alen bytes, or PFT_TEXT_CSTR) or the pair (a, b) when b is not NULL. max_length 0:
 * no truncation; otherwise it must be >= 2 (>= 3 for a pair). Fails only on bad arguments or memory.
 * An empty b (0 bytes) means no pair here, as in transformers' tok(a, ""), while in a batch it stays
 * a pair ([CLS] a [SEP] [SEP]), as in tok([a], [""]). */
pft_status pft_tokenizer_encode(pft_tokenizer *tok, const char *a, size_t alen, const char *b, size_t blen,
                                int max_length, pft_encoding *out);

/* Encodes n texts a[i] (or pairs a[i], b[i] when b is not NULL) into out. alen / blen may be NULL
 * (all NUL-terminated). pad_to 0: t = the longest row; pad_to > 0: t = pad_to exactly, which then needs
 * 0 < max_length <= pad_to so that no row can overflow. */
pft_status pft_tokenizer_encode_batch(pft_tokenizer *tok, int n, const char *const *a, const size_t *alen,
                                      const char *const *b, const size_t *blen, int max_length, int pad_to,
                                      pft_batch *out);
void pft_batch_free(pft_batch *batch);

/* The words WordPiece would see (after steps 1-5 above), one callback each; for tests and debugging.
 * A special token is passed as its own word. */
pft_status pft_tokenizer_words(pft_tokenizer *tok, const char *text, size_t len,
                               void (*fn)(void *ud, const char *word, size_t n), void *ud);

#endif
