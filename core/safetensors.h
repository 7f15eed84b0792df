/* safetensors.h - read and write .safetensors files, independent of the tensor type.
 *
 *     pft_st_file *f = pft_st_open(ctx, "model.safetensors");
 *     if (!f) { fprintf(stderr, "%s\n", pft_ctx_error(ctx)); return; }
 *     const pft_st_entry *e = pft_st_find(f, "bert.pooler.dense.weight");
 *     float *w = malloc((size_t)e->numel * sizeof *w);
 *     if (pft_st_read_f32(ctx, f, e, w) != PFT_OK) fprintf(stderr, "%s\n", pft_ctx_error(ctx));
 *     const char *fmt = pft_st_metadata_get(f, "format");   // NULL when absent
 *     pft_st_close(f);
 *
 *     const int64_t shape[2] = {2, 3};
 *     pft_st_entry_in in = {"w", w, 2, shape};
 *     pft_st_meta meta = {"format", "pt"};
 *     pft_st_write(ctx, "out.safetensors", 1, &in, 1, &meta);  // atomic: old file or new, never half
 *
 * Ownership: pft_st_open returns a handle the caller frees with pft_st_close. Everything reachable from
 * it (entries, names, shapes, data pointers, metadata strings) is owned by the handle and stays valid
 * until pft_st_close; data pointers point into a read-only mmap of the file, so never write through them.
 * pft_st_read_f32 writes into a caller-owned buffer of e->numel floats. pft_st_write only reads its
 * arguments and keeps no pointer to them.
 *
 * Format: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
 * {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data section that follows the
 * header) plus an optional "__metadata__" string->string map. The header is treated as untrusted: every
 * offset, size and overlap is checked at open, and errors name the file, the tensor and the numbers. */
#ifndef PFT_SAFETENSORS_H
#define PFT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "ctx.h"

#define PFT_ST_MAX_DIMS 8 /* same bound as the tensor core's PFT_MAX_DIMS */

/* Every dtype name the format defines is recognised so that a file holding, say, an I64 position-id
 * buffer still opens; only F32, F16 and BF16 can be read as floats. */
typedef enum pft_st_dtype {
    PFT_ST_F32,
    PFT_ST_F16,
    PFT_ST_BF16,
    PFT_ST_F64,
    PFT_ST_I64,
    PFT_ST_I32,
    PFT_ST_I16,
    PFT_ST_I8,
    PFT_ST_U64,
    PFT_ST_U32,
    PFT_ST_U16,
    PFT_ST_U8,
    PFT_ST_BOOL,
    PFT_ST_F8_E4M3,
    PFT_ST_F8_E5M2,
    PFT_ST_NDTYPES
} pft_st_dtype;

/* One tensor of an open file. Read-only; owned by the pft_st_file. */
typedef struct pft_st_entry {
    const char *name;
    pft_st_dtype dtype;
    int ndim;                         /* 0 for a scalar */
    int64_t shape[PFT_ST_MAX_DIMS];
    int64_t numel;                    /* product of shape (1 for a scalar) */
    uint64_t begin, end;              /* byte range within the data section */
    const void *data;                 /* points into the map; may be unaligned */
} pft_st_entry;

typedef struct pft_st_file pft_st_file;

/* A tensor to write: F32 data, contiguous, row-major. */
typedef struct pft_st_entry_in {
    const char *name;
    const float *data;
    int ndim;
    const int64_t *shape;
} pft_st_entry_in;

/* One "__metadata__" pair. */
typedef struct pft_st_meta {
    const char *key;
    const char *value;
} pft_st_meta;

/* Returns NULL and sets PFT_ERR_IO / PFT_ERR_FORMAT / PFT_ERR_ALLOC on failure. */
pft_st_file *pft_st_open(pft_ctx *ctx, const char *path);
void pft_st_close(pft_st_file *f); /* NULL is fine */

const char *pft_st_path(const pft_st_file *f);
int pft_st_count(const pft_st_file *f);
const pft_st_entry *pft_st_entry_at(const pft_st_file *f, int i);          /* header order */
const pft_st_entry *pft_st_find(const pft_st_file *f, const char *name);   /* NULL if absent */

int pft_st_metadata_count(const pft_st_file *f);
const pft_st_meta *pft_st_metadata_at(const pft_st_file *f, int i);        /* header order */
const char *pft_st_metadata_get(const pft_st_file *f, const char *key);    /* NULL if absent */

/* Converts the entry to F32 into dst (e->numel floats). F16 and BF16 convert exactly, subnormals, infinities
 * and NaNs included. Other dtypes give PFT_ERR_UNSUPPORTED naming the tensor and dtype. */
pft_status pft_st_read_f32(pft_ctx *ctx, const pft_st_file *f, const pft_st_entry *e, float *dst);

/* Writes n F32 tensors and n_meta metadata pairs (meta may be NULL when n_meta is 0). Header keys are
 * "__metadata__" first, then tensor names in byte order, as the reference writer produces for F32.
 * Atomic: the data goes to path.tmp.XXXXXX in the same directory, is synced, then renamed over path; on
 * any failure the temporary file is removed and an existing file at path is left untouched. */
pft_status pft_st_write(pft_ctx *ctx, const char *path, int n, const pft_st_entry_in *entries, int n_meta,
                        const pft_st_meta *meta);

const char *pft_st_dtype_name(pft_st_dtype dt);
size_t pft_st_dtype_size(pft_st_dtype dt);

#endif
