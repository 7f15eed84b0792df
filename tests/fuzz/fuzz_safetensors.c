/* fuzz_safetensors.c - the safetensors reader (core/safetensors.c) on arbitrary files.
 *
 * Input: the bytes of a .safetensors file (8-byte length, JSON header, data). Checks: pft_st_open either
 * fails with an error message or returns a handle whose every entry lies inside the data section with
 * numel * dtype size bytes, that pft_st_find finds by name, and that pft_st_read_f32 converts (F32, F16,
 * BF16) or refuses (other dtypes); the metadata is readable. When every tensor is a float, the file is
 * written again with pft_st_write and read back: same names, shapes, metadata and F32 bits. */
#include <math.h>

#include "fuzz.h"
#include "safetensors.h"

static pft_ctx *ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    ctx = pft_ctx_new(1, 0);
    return 0;
}

/* e's data as F32 (malloc'ed, numel floats), or NULL for a dtype that cannot be read as floats. */
static float *read_floats(const pft_st_file *f, const pft_st_entry *e) {
    float *buf = malloc((size_t)(e->numel ? e->numel : 1) * sizeof *buf);
    FUZZ_CHECK(buf, "malloc of %lld floats", (long long)e->numel);
    pft_status st = pft_st_read_f32(ctx, f, e, buf);
    int is_float = e->dtype == PFT_ST_F32 || e->dtype == PFT_ST_F16 || e->dtype == PFT_ST_BF16;
    FUZZ_CHECK((st == PFT_OK) == is_float, "read_f32 of a %s tensor returned %d", pft_st_dtype_name(e->dtype), (int)st);
    if (st != PFT_OK) {
        FUZZ_CHECK(pft_ctx_error(ctx)[0], "read_f32 failed without a message");
        free(buf);
        return NULL;
    }
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[PATH_MAX], out[PATH_MAX];
    fuzz_path(path, sizeof path, "in.safetensors");
    fuzz_path(out, sizeof out, "out.safetensors");
    fuzz_write(path, data, size);

    pft_st_file *f = pft_st_open(ctx, path);
    if (!f) {
        FUZZ_CHECK(pft_ctx_error(ctx)[0], "pft_st_open failed without a message");
        return 0;
    }
    int n = pft_st_count(f), all_float = 1;
    FUZZ_CHECK(n >= 0, "count %d", n);
    float **vals = calloc((size_t)n + 1, sizeof *vals);
    pft_st_entry_in *in = calloc((size_t)n + 1, sizeof *in);
    FUZZ_CHECK(vals && in, "calloc");
    for (int i = 0; i < n; i++) {
        const pft_st_entry *e = pft_st_entry_at(f, i);
        FUZZ_CHECK(e && e->name, "entry %d", i);
        FUZZ_CHECK(pft_st_find(f, e->name) == e, "find('%s') is not entry %d", e->name, i);
        FUZZ_CHECK(e->ndim >= 0 && e->ndim <= PFT_ST_MAX_DIMS, "ndim %d", e->ndim);
        FUZZ_CHECK(e->begin <= e->end && e->end <= size, "range [%llu, %llu] of a %zu-byte file",
                   (unsigned long long)e->begin, (unsigned long long)e->end, size);
        FUZZ_CHECK(e->end - e->begin == (uint64_t)e->numel * pft_st_dtype_size(e->dtype), "'%s': %llu bytes for %lld x %zu",
                   e->name, (unsigned long long)(e->end - e->begin), (long long)e->numel, pft_st_dtype_size(e->dtype));
        int64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= e->shape[d];
        FUZZ_CHECK(numel == e->numel, "'%s': numel %lld, shape product %lld", e->name, (long long)e->numel, (long long)numel);
        vals[i] = read_floats(f, e);
        if (!vals[i]) all_float = 0;
        in[i] = (pft_st_entry_in){e->name, vals[i], e->ndim, e->shape};
    }
    int nm = pft_st_metadata_count(f);
    pft_st_meta *meta = calloc((size_t)nm + 1, sizeof *meta);
    FUZZ_CHECK(meta, "calloc");
    for (int i = 0; i < nm; i++) {
        const pft_st_meta *m = pft_st_metadata_at(f, i);
        FUZZ_CHECK(m && m->key && m->value, "metadata %d", i);
        FUZZ_CHECK(pft_st_metadata_get(f, m->key) != NULL, "metadata '%s' not found by key", m->key);
        meta[i] = *m;
    }

    /* round trip: what was read writes and reads back the same (the writer may refuse odd names) */
    if (all_float && pft_st_write(ctx, out, n, in, nm, meta) == PFT_OK) {
        pft_st_file *g = pft_st_open(ctx, out);
        FUZZ_CHECK(g, "re-reading the written file: %s", pft_ctx_error(ctx));
        FUZZ_CHECK(pft_st_count(g) == n, "%d tensors written, %d read", n, pft_st_count(g));
        FUZZ_CHECK(pft_st_metadata_count(g) == nm, "%d metadata written, %d read", nm, pft_st_metadata_count(g));
        for (int i = 0; i < n; i++) {
            const pft_st_entry *e = pft_st_entry_at(f, i), *e2 = pft_st_find(g, e->name);
            FUZZ_CHECK(e2, "'%s' lost in the round trip", e->name);
            FUZZ_CHECK(e2->dtype == PFT_ST_F32 && e2->ndim == e->ndim && e2->numel == e->numel, "'%s' changed", e->name);
            FUZZ_CHECK(!memcmp(e2->shape, e->shape, (size_t)e->ndim * sizeof *e->shape), "'%s': shape changed", e->name);
            float *v2 = read_floats(g, e2);
            FUZZ_CHECK(!memcmp(v2, vals[i], (size_t)e->numel * sizeof *v2), "'%s': values changed", e->name);
            free(v2);
        }
        pft_st_close(g);
    }
    for (int i = 0; i < n; i++) free(vals[i]);
    free(vals);
    free(in);
    free(meta);
    pft_st_close(f);
    return 0;
}
