/* text.h - the BERT WordPiece tokenizer, id for id the same as Hugging Face BertTokenizerFast.
 *
 *     pft_tokenizer *tok = pft_tokenizer_load(ctx, "checkpoints/minilm");   // vocab.txt + tokenizer_config.json
 *     if (!tok) fprintf(stderr, "%s\n", pft_ctx_error(ctx));
 *     pft_encoding e;
 *     pft_tokenizer_encode(tok, "Hello world!", PFT_TEXT_CSTR, NULL, 0, 128, &e);  // [CLS] hello world ! [SEP]
 *     pft_tokenizer_track_offsets(tok, 1);                // word ids and byte offsets too (off by default)
 *     pft_tokenizer_encode(tok, "Hello, world!", PFT_TEXT_CSTR, NULL, 0, 128, &e);
 *         // tokens    [CLS]  hello  ,      world   !        [SEP]
 *         // word_ids  -1     0      1      2       3        -1
 *         // offsets   (0,0)  (0,5)  (5,6)  (7,12)  (12,13)  (0,0)   e.offsets[2i], e.offsets[2i+1]
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
 * older Unicode version than utf8proc's (its NFD's combining classes from Unicode 9: later marks are
 * starters there, which changes how they reorder), and text.c keeps small override tables for the
 * difference (regenerate with `python3 tests/gen_tokenizer_fixtures.py tables`).
 *
 * Invalid UTF-8: each ill-formed byte sequence is read as U+FFFD (as Python's
 * bytes.decode('utf-8', 'replace') does), which cleaning then drops; it never ends a word. So
 * "ab\xffcd" encodes like "abcd". Encoding never fails on text content.
 *
 * Offsets and word ids (pft_tokenizer_track_offsets): for each token, the index of the word it comes
 * from and the half-open byte range [start, end) of the input it was made from, the same values as
 * BertTokenizerFast's word_ids() and offset_mapping (transformers counts characters of the Python
 * string; pft counts bytes of the UTF-8 input, so text + start is where a token's source begins).
 * A word is what step 5 makes: a run of non-space characters, each punctuation character alone, and a
 * special token cut from the text (step 1); the words of A count from 0 and so do B's. A "##" piece
 * gets the range of its part of the word ("unaffable": una (0,3), ##ffa (3,6), ##ble (6,9)); [UNK]
 * for a whole word gets the whole word; [CLS] and [SEP] get word -1 and (0, 0). A range runs from the
 * start of the source of the token's first normalized character to the end of that of its last, so
 * normalization is followed: "é" stripped to "e" keeps both bytes of "é", "İ" lowercased to "i" +
 * U+0307 keeps its two; dropped characters (controls, U+FFFD, invalid bytes, stripped accents) are
 * never a range's first or last character but can lie inside one ("ab\xFFcd" -> abc (0,4), ##d (4,5)).
 * One oddity of tokenizers is kept: after NFD reorders combining marks, sources are handed out by
 * position, not by character, so where a kept mark (e.g. U+1D165) moved, a range can stop short of
 * or run past the mark's own bytes. Truncation keeps the first tokens with their offsets. Tracking
 * costs about 30% of the throughput; off, the encoder runs the same code as without it.
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
    /* With pft_tokenizer_track_offsets on (NULL otherwise): word_ids has n entries (-1 for [CLS] and
     * [SEP]), offsets 2n (start, end byte offsets into the token's own text, a or b; (0, 0) for
     * [CLS] and [SEP]). */
    const int32_t *word_ids;
    const int32_t *offsets;
} pft_encoding;

/* A padded batch. ids is padded with the pad id, type_ids and mask with 0 (right padding). */
typedef struct pft_batch {
    int n, t;            /* rows (texts), columns (tokens) */
    int32_t *ids;        /* (n, t) */
    int32_t *type_ids;   /* (n, t) */
    int32_t *mask;       /* (n, t) 1 for a token, 0 for padding */
    int32_t *lengths;    /* (n) tokens per row, specials included */
    size_t cap_rows, cap_cells; /* allocated sizes, so that a batch can be reused */
    int32_t *word_ids;   /* (n, t) with offset tracking on, -1 for specials and padding; else NULL */
    int32_t *offsets;    /* (n, t, 2) with offset tracking on, (0, 0) for specials and padding; else NULL */
    size_t cap_track;    /* cells word_ids (and pairs offsets) can hold */
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

/* Turns offset tracking on (on != 0) or off (the default). When on, pft_tokenizer_encode fills
 * word_ids and offsets of the encoding and pft_tokenizer_encode_batch those of the batch; see the top
 * of this file. Returns PFT_ERR_ARG for a NULL tokenizer. */
pft_status pft_tokenizer_track_offsets(pft_tokenizer *tok, int on);

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
