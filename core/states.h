/* states.h - the frozen-prefix activation cache: one split's hidden states at one layer boundary, every
 * row's vectors packed one after another (real tokens only), in a file that readers map instead of read.
 *
 *     // write: rows in order 0..n-1, a batch at a time, then commit (temporary file + rename)
 *     pft_states_writer *w = pft_states_writer_open(ctx, "acts/train-b4.act", key, n, lengths, 384, false);
 *     pft_states_writer_add(w, x_data, nvec, rows_in_batch, batch_lengths);   // x: [nvec, 384]
 *     pft_states_writer_commit(w);                                            // frees w either way
 *     // read: checked against the key, the rows' lengths and the checksum; then gather a batch's rows
 *     pft_states *s = pft_states_open(ctx, "acts/train-b4.act", key, n, lengths, 384, false, &miss);
 *     pft_tensor *x = pft_states_gather(s, 2, (int64_t[]){7, 3});             // [len7 + len3, 384]
 *     pft_states_free(s);
 *
 * Why: a frozen prefix (the embeddings and the layers below the lowest trainable one) runs in eval mode,
 * so its output is a fixed function of each example's tokens. Computed once, it serves every later step,
 * epoch and run that trains only the layers above it: such a step starts at the boundary (nn.h,
 * pft_bert_forward_from) and nothing below it runs.
 *
 * Two kinds of store: tokens (every real token of a row, the input of a layer) and one vector per row
 * (per_row: the [CLS] vector after the last layer, which is all a pooler reads, or the pooler's output,
 * all a classifier reads). The caller names a store by a 64-bit key that covers everything its vectors
 * depend on (the prefix's weights, the rows' tokens, the boundary); a file under another key, of another
 * shape, or with other row lengths is "stale", a damaged one "corrupt"; neither is ever used.
 *
 * File (native byte order, machine-local like the encoded-data cache): the 64-byte pft_states_header
 * (reserved 0), then f32 data[nvec * width], then for a tokens store 0 or 4 zero bytes (to 8-byte
 * alignment) and u64 offsets[count + 1] (row i's vectors are offsets[i] .. offsets[i + 1]).
 * header.checksum is pft_states_hash of the data (without the padding), then the offsets.
 *
 * Ownership: a reader maps its file read-only and shares it with no one; another process replacing the
 * file (a rename) leaves this mapping intact. pft_states_gather returns a new contiguous tensor. The
 * writer owns a temporary file beside the destination until commit or abort. Nothing is global. */
#ifndef PFT_STATES_H
#define PFT_STATES_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor.h"

#define PFT_STATES_MAGIC "PFTACT\0\0"
#define PFT_STATES_PER_ROW 1u /* header flag: one vector per row, no offsets */

typedef struct pft_states_header {
    char magic[8];
    uint32_t version, flags;
    uint64_t key;
    uint64_t count, nvec, width; /* rows, vectors, floats per vector */
    uint64_t checksum;
    uint64_t reserved;
} pft_states_header;

typedef struct pft_states {
    pft_ctx *ctx;
    int64_t count, nvec, width;
    bool per_row;
    const float *data;        /* [nvec, width] inside the mapping */
    const uint64_t *offsets;  /* [count + 1] inside the mapping; NULL when per_row */
    void *map;
    size_t map_bytes;
} pft_states;

typedef enum pft_states_miss {
    PFT_STATES_HIT = 0,
    PFT_STATES_MISSING, /* "missing: PATH" */
    PFT_STATES_STALE,   /* "stale: PATH: why": another key, shape or row lengths */
    PFT_STATES_CORRUPT  /* "corrupt: PATH: why": truncated, damaged, not this format */
} pft_states_miss;

/* A 64-bit hash of n floats (their bits), continued from h (PFT_STATES_HASH_START to begin): the cache
 * key's part for a tensor of weights, and the file checksum. Word-wise FNV-1a: 4 bytes per multiply. */
#define PFT_STATES_HASH_START 0xcbf29ce484222325ull
uint64_t pft_states_hash(uint64_t h, const void *p, size_t bytes);

/* Bytes a store of this shape takes on disk; -1 when that overflows (a header no writer made). */
int64_t pft_states_file_bytes(int64_t count, int64_t nvec, int64_t width, bool per_row);

/* --- writing --------------------------------------------------------------------------------------- */

typedef struct pft_states_writer pft_states_writer;

/* A writer for `count` rows whose lengths (real tokens) are lengths[0..count); a per_row store keeps one
 * vector per row. Creates path.tmp.PID beside path. NULL + ctx error. */
pft_states_writer *pft_states_writer_open(pft_ctx *ctx, const char *path, uint64_t key, int64_t count,
                                          const int64_t *lengths, int64_t width, bool per_row);
/* Appends the next m rows (in row order): x holds nvec vectors of width floats, either every real token
 * of the m rows (nvec = the sum of lens) or one vector per row (nvec = m; per_row stores only). lens are
 * the rows' lengths as the batch had them; they must equal the lengths given at open (a row cut
 * differently would be another row). For a per_row store given tokens, each row's first vector is kept. */
pft_status pft_states_writer_add(pft_states_writer *w, const float *x, int64_t nvec, int64_t m, const int64_t *lens);
/* Writes offsets and header, then renames the file into place. Fails (and removes the temporary) when
 * not every row was added. Frees w. */
pft_status pft_states_writer_commit(pft_states_writer *w);
void pft_states_writer_abort(pft_states_writer *w); /* removes the temporary, frees w; NULL is fine */

/* --- reading --------------------------------------------------------------------------------------- */

/* Maps path and checks, in this order: header (corrupt), key, shape, flags (stale), file size
 * (corrupt), checksum (corrupt), row lengths against lengths[0..count) (stale when they differ, corrupt
 * when the offsets are not monotone). NULL with *miss (may be NULL) and the message in ctx. */
pft_states *pft_states_open(pft_ctx *ctx, const char *path, uint64_t key, int64_t count, const int64_t *lengths,
                            int64_t width, bool per_row, pft_states_miss *miss);
void pft_states_free(pft_states *s); /* NULL is fine */

/* The vectors of rows[0..m) (0-based, any order) in that order: [sum of their lengths, width] for a
 * tokens store, [m, width] per_row. A new tensor without a tape. */
pft_tensor *pft_states_gather(const pft_states *s, int64_t m, const int64_t *rows);

#endif
