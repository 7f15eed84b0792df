/* safetensors.c - mmap reader with a fully checked header, F16/BF16 -> F32 conversion, atomic writer. */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The format is little-endian and F32 data is copied with memcpy. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* The reference implementation refuses headers over 100 MB. A corrupt or hostile length field would
 * otherwise make us parse (and let cJSON allocate for) an arbitrarily large JSON text; real headers,
 * even for models with tens of thousands of tensors, are a few MB. Refusing what the reference refuses
 * also keeps the files we accept a subset of the files every other reader accepts. */
#define ST_MAX_HEADER 100000000ull

/* JSON numbers are doubles: integers above 2^53 are not exact, so refuse them rather than round. */
#define ST_MAX_JSON_INT 9007199254740992.0

struct pft_st_file {
    char *path;
    const uint8_t *map;
    size_t map_size;
    const uint8_t *data; /* data section: map + 8 + header length */
    uint64_t data_size;
    cJSON *root;         /* kept: names and metadata strings point into it */
    int n;
    pft_st_entry *entries;   /* header order */
    pft_st_entry **by_name;  /* sorted by name, for bsearch */
    int n_meta;
    pft_st_meta *meta;
};

static const struct {
    const char *name;
    size_t size;
} dtype_info[PFT_ST_NDTYPES] = {
    [PFT_ST_F32] = {"F32", 4},     [PFT_ST_F16] = {"F16", 2},         [PFT_ST_BF16] = {"BF16", 2},
    [PFT_ST_F64] = {"F64", 8},     [PFT_ST_I64] = {"I64", 8},         [PFT_ST_I32] = {"I32", 4},
    [PFT_ST_I16] = {"I16", 2},     [PFT_ST_I8] = {"I8", 1},           [PFT_ST_U64] = {"U64", 8},
    [PFT_ST_U32] = {"U32", 4},     [PFT_ST_U16] = {"U16", 2},         [PFT_ST_U8] = {"U8", 1},
    [PFT_ST_BOOL] = {"BOOL", 1},   [PFT_ST_F8_E4M3] = {"F8_E4M3", 1}, [PFT_ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *pft_st_dtype_name(pft_st_dtype dt) {
    return (unsigned)dt < PFT_ST_NDTYPES ? dtype_info[dt].name : "?";
}

size_t pft_st_dtype_size(pft_st_dtype dt) { return (unsigned)dt < PFT_ST_NDTYPES ? dtype_info[dt].size : 0; }

static int dtype_from_name(const char *s, pft_st_dtype *out) {
    for (int i = 0; i < PFT_ST_NDTYPES; i++)
        if (strcmp(s, dtype_info[i].name) == 0) {
            *out = (pft_st_dtype)i;
            return 1;
        }
    return 0;
}

/* ---- reader ---------------------------------------------------------------------------------------- */

void pft_st_close(pft_st_file *f) {
    if (!f) return;
    if (f->map) munmap((void *)f->map, f->map_size);
    cJSON_Delete(f->root);
    free(f->entries);
    free(f->by_name);
    free(f->meta);
    free(f->path);
    free(f);
}

const char *pft_st_path(const pft_st_file *f) { return f->path; }
int pft_st_count(const pft_st_file *f) { return f->n; }
int pft_st_metadata_count(const pft_st_file *f) { return f->n_meta; }

const pft_st_entry *pft_st_entry_at(const pft_st_file *f, int i) {
    return i >= 0 && i < f->n ? &f->entries[i] : NULL;
}

const pft_st_meta *pft_st_metadata_at(const pft_st_file *f, int i) {
    return i >= 0 && i < f->n_meta ? &f->meta[i] : NULL;
}

const char *pft_st_metadata_get(const pft_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++) /* a handful of pairs: a scan is enough */
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp((*(pft_st_entry *const *)a)->name, (*(pft_st_entry *const *)b)->name);
}

static int cmp_key_entry(const void *key, const void *b) {
    return strcmp((const char *)key, (*(pft_st_entry *const *)b)->name);
}

const pft_st_entry *pft_st_find(const pft_st_file *f, const char *name) {
    if (!f->n) return NULL;
    pft_st_entry **hit = bsearch(name, f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_key_entry);
    return hit ? *hit : NULL;
}

static int cmp_entry_range(const void *a, const void *b) {
    const pft_st_entry *x = *(pft_st_entry *const *)a, *y = *(pft_st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* A JSON number that is an exact non-negative integer no larger than 2^53. */
static int json_uint(const cJSON *it, uint64_t *out) {
    if (!cJSON_IsNumber(it)) return 0;
    double v = it->valuedouble;
    if (!(v >= 0.0) || v > ST_MAX_JSON_INT || v != (double)(uint64_t)v) return 0;
    *out = (uint64_t)v;
    return 1;
}

/* Fills e from one header item; the data pointer is set once the range is known to be in bounds. */
static pft_status parse_entry(pft_ctx *ctx, pft_st_file *f, const cJSON *item, pft_st_entry *e) {
    const char *path = f->path, *name = item->string;
    char sh[256];
    e->name = name;
    if (!cJSON_IsObject(item))
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: tensor '%s': header entry is not a JSON object", path,
                              name);

    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(dt))
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: tensor '%s': missing or non-string \"dtype\"", path,
                              name);
    if (!dtype_from_name(dt->valuestring, &e->dtype))
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", path, name,
                              dt->valuestring);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(shape))
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: tensor '%s': missing or non-array \"shape\"", path,
                              name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > PFT_ST_MAX_DIMS)
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: tensor '%s': shape has %d dimensions, at most %d supported",
                              path, name, ndim, PFT_ST_MAX_DIMS);
    e->ndim = ndim;
    int d = 0, has_zero = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        uint64_t v;
        if (!json_uint(dim, &v))
            return pft_ctx_seterr(ctx, PFT_ERR_FORMAT,
                                  "%s: tensor '%s': shape dimension %d is not a non-negative integer <= 2^53", path,
                                  name, d);
        e->shape[d++] = (int64_t)v;
        has_zero |= v == 0;
    }
    /* numel and byte count, overflow-checked; a zero dimension makes the product 0 whatever the rest */
    uint64_t numel = 1, esize = dtype_info[e->dtype].size;
    if (has_zero) numel = 0;
    else
        for (int i = 0; i < ndim; i++) {
            uint64_t v = (uint64_t)e->shape[i];
            if (numel > (uint64_t)INT64_MAX / v)
                return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: tensor '%s': shape %s has more than 2^63 elements",
                                      path, name, pft_shape_str(sh, sizeof sh, ndim, e->shape));
            numel *= v;
        }
    if (numel > UINT64_MAX / esize)
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: tensor '%s': shape %s x %s overflows 64-bit byte count",
                              path, name, pft_shape_str(sh, sizeof sh, ndim, e->shape), dtype_info[e->dtype].name);
    e->numel = (int64_t)numel;
    uint64_t need = numel * esize;

    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!off)
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: tensor '%s': missing \"data_offsets\"", path, name);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_uint(cJSON_GetArrayItem(off, 0), &e->begin) ||
        !json_uint(cJSON_GetArrayItem(off, 1), &e->end))
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT,
                              "%s: tensor '%s': \"data_offsets\" must be [begin, end] of non-negative integers", path,
                              name);
    if (e->begin > e->end)
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] have begin > end",
                              path, name, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > f->data_size)
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] run past the data section of %llu bytes "
                              "(file truncated?)",
                              path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                              (unsigned long long)f->data_size);
    if (e->end - e->begin != need)
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] give %llu bytes but shape %s x %s needs %llu",
                              path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                              (unsigned long long)(e->end - e->begin), pft_shape_str(sh, sizeof sh, ndim, e->shape),
                              dtype_info[e->dtype].name, (unsigned long long)need);
    e->data = f->data + e->begin;
    return PFT_OK;
}

static pft_status parse_metadata(pft_ctx *ctx, pft_st_file *f, const cJSON *md) {
    if (!cJSON_IsObject(md))
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: \"__metadata__\" is not a JSON object", f->path);
    int n = cJSON_GetArraySize(md);
    if (!(f->meta = calloc((size_t)n + 1, sizeof *f->meta)))
        return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "%s: out of memory for %d metadata pairs", f->path, n);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, md) {
        if (!cJSON_IsString(kv))
            return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: \"__metadata__\" value for '%s' is not a string",
                                  f->path, kv->string);
        f->meta[f->n_meta++] = (pft_st_meta){kv->string, kv->valuestring};
    }
    return PFT_OK;
}

static pft_status parse_header(pft_ctx *ctx, pft_st_file *f, const char *json, size_t len) {
    const char *end = NULL;
    f->root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!f->root) {
        size_t at = end && end >= json && end <= json + len ? (size_t)(end - json) : 0;
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: header JSON (%zu bytes) is invalid near byte %zu", f->path,
                              len, at);
    }
    /* the reference pads the header with spaces; anything else after the object is corruption */
    for (const char *p = end; p < json + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: header JSON has trailing garbage at byte %zu of %zu",
                                  f->path, (size_t)(p - json), len);
    if (!cJSON_IsObject(f->root))
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: header JSON is not an object", f->path);

    int total = cJSON_GetArraySize(f->root);
    /* + 1: never a zero-size allocation */
    if (!(f->entries = calloc((size_t)total + 1, sizeof *f->entries)) ||
        !(f->by_name = calloc((size_t)total + 1, sizeof *f->by_name)))
        return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "%s: out of memory for %d header entries", f->path, total);
    const cJSON *item;
    int seen_meta = 0;
    cJSON_ArrayForEach(item, f->root) {
        pft_status st;
        if (strcmp(item->string, "__metadata__") == 0) {
            if (seen_meta++)
                return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: \"__metadata__\" appears twice", f->path);
            st = parse_metadata(ctx, f, item);
        } else {
            st = parse_entry(ctx, f, item, &f->entries[f->n]);
            if (st == PFT_OK) f->n++;
        }
        if (st != PFT_OK) return st;
    }
    if (f->n == 0) return PFT_OK;

    /* duplicates: cJSON keeps repeated keys, so sort by name and compare neighbours */
    for (int i = 0; i < f->n; i++) f->by_name[i] = &f->entries[i];
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_entry_name);
    for (int i = 1; i < f->n; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
            return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", f->path,
                                  f->by_name[i]->name);

    /* overlaps: sort by range and compare each with the furthest-reaching range before it. Empty tensors
     * own no bytes and cannot overlap anything. Gaps are allowed: each range was checked on its own. */
    pft_st_entry **by_range = malloc((size_t)f->n * sizeof *by_range);
    if (!by_range) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "%s: out of memory", f->path);
    for (int i = 0; i < f->n; i++) by_range[i] = &f->entries[i];
    qsort(by_range, (size_t)f->n, sizeof *by_range, cmp_entry_range);
    const pft_st_entry *reach = NULL;
    pft_status st = PFT_OK;
    for (int i = 0; i < f->n && st == PFT_OK; i++) {
        const pft_st_entry *e = by_range[i];
        if (e->begin == e->end) continue;
        if (reach && e->begin < reach->end)
            st = pft_ctx_seterr(ctx, PFT_ERR_FORMAT,
                                "%s: tensor '%s' data_offsets [%llu, %llu] overlap tensor '%s' [%llu, %llu]", f->path,
                                e->name, (unsigned long long)e->begin, (unsigned long long)e->end, reach->name,
                                (unsigned long long)reach->begin, (unsigned long long)reach->end);
        if (!reach || e->end > reach->end) reach = e;
    }
    free(by_range);
    return st;
}

pft_st_file *pft_st_open(pft_ctx *ctx, const char *path) {
    pft_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "%s: out of memory", path);
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: not a regular file", path);
        close(fd);
        goto fail;
    }
    if (sb.st_size < 8) {
        pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: file has %lld bytes, fewer than the 8-byte header length", path,
                       (long long)sb.st_size);
        close(fd);
        goto fail;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) {
        pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: mmap of %lld bytes failed: %s", path, (long long)sb.st_size,
                       strerror(map_errno));
        goto fail;
    }
    f->map = map;
    f->map_size = (size_t)sb.st_size;

    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->map[i];
    if (hlen > ST_MAX_HEADER) {
        pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit", path,
                       (unsigned long long)hlen, ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > f->map_size - 8) {
        pft_ctx_seterr(ctx, PFT_ERR_FORMAT,
                       "%s: header length %llu runs past the end of the file (%zu bytes after the length field)", path,
                       (unsigned long long)hlen, f->map_size - 8);
        goto fail;
    }
    f->data = f->map + 8 + hlen;
    f->data_size = f->map_size - 8 - hlen;
    if (parse_header(ctx, f, (const char *)f->map + 8, (size_t)hlen) != PFT_OK) goto fail;
    return f;
fail:
    pft_st_close(f);
    return NULL;
}

/* F16 -> F32 by bit manipulation: every F16 value, subnormals included, is exactly representable. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13; /* inf, or NaN with its payload kept */
    } else if (exp != 0) {
        bits = sign | (exp + 112) << 23 | man << 13; /* rebias 15 -> 127 */
    } else if (man == 0) {
        bits = sign; /* signed zero */
    } else {
        /* subnormal man * 2^-24: shift until the leading one becomes the implicit bit */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        bits = sign | (uint32_t)(112 - e) << 23 | (man & 0x3ff) << 13;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

pft_status pft_st_read_f32(pft_ctx *ctx, const pft_st_file *f, const pft_st_entry *e, float *dst) {
    if (!f || !e || (!dst && e->numel > 0)) return pft_ctx_seterr(ctx, PFT_ERR_ARG, "pft_st_read_f32: NULL argument");
    const uint8_t *src = e->data;
    size_t n = (size_t)e->numel;
    switch (e->dtype) {
    case PFT_ST_F32:
        if (n) memcpy(dst, src, n * 4); /* memcpy: the source may be unaligned */
        return PFT_OK;
    case PFT_ST_F16:
        for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        return PFT_OK;
    case PFT_ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)(src[2 * i] | src[2 * i + 1] << 8) << 16; /* BF16 is the top half of F32 */
            memcpy(&dst[i], &bits, 4);
        }
        return PFT_OK;
    default:
        return pft_ctx_seterr(ctx, PFT_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s cannot be read as F32", f->path,
                              e->name, pft_st_dtype_name(e->dtype));
    }
}

/* ---- writer ---------------------------------------------------------------------------------------- */

static int cmp_in_name(const void *a, const void *b) {
    return strcmp((*(const pft_st_entry_in *const *)a)->name, (*(const pft_st_entry_in *const *)b)->name);
}

/* Builds the compact header JSON. Numbers go in as raw text: cJSON prints large doubles in exponent form,
 * which readers that parse offsets as u64 reject. */
static pft_status build_header(pft_ctx *ctx, const char *path, int n, const pft_st_entry_in *const *sorted,
                               const uint64_t *nbytes, int n_meta, const pft_st_meta *meta, char **out) {
    cJSON *root = cJSON_CreateObject();
    if (!root) goto oom;
    if (n_meta > 0) {
        cJSON *md = cJSON_AddObjectToObject(root, "__metadata__");
        if (!md) goto oom;
        for (int i = 0; i < n_meta; i++)
            if (!cJSON_AddStringToObject(md, meta[i].key, meta[i].value)) goto oom;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const pft_st_entry_in *in = sorted[i];
        char buf[32 * (PFT_ST_MAX_DIMS + 1)];
        size_t used = 0;
        cJSON *t = cJSON_AddObjectToObject(root, in->name);
        if (!t || !cJSON_AddStringToObject(t, "dtype", "F32")) goto oom;
        used += (size_t)snprintf(buf, sizeof buf, "[");
        for (int d = 0; d < in->ndim; d++)
            used += (size_t)snprintf(buf + used, sizeof buf - used, d ? ",%lld" : "%lld", (long long)in->shape[d]);
        snprintf(buf + used, sizeof buf - used, "]");
        if (!cJSON_AddRawToObject(t, "shape", buf)) goto oom;
        snprintf(buf, sizeof buf, "[%llu,%llu]", (unsigned long long)off, (unsigned long long)(off + nbytes[i]));
        if (!cJSON_AddRawToObject(t, "data_offsets", buf)) goto oom;
        off += nbytes[i];
    }
    *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!*out) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "%s: out of memory printing the header", path);
    return PFT_OK;
oom:
    cJSON_Delete(root);
    return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "%s: out of memory building the header", path);
}

/* Checks every argument before any file is created, so bad input never touches the disk. */
static pft_status check_inputs(pft_ctx *ctx, const char *path, int n, const pft_st_entry_in *entries, int n_meta,
                               const pft_st_meta *meta) {
    char sh[256];
    if (n < 0 || (n > 0 && !entries) || n_meta < 0 || (n_meta > 0 && !meta))
        return pft_ctx_seterr(ctx, PFT_ERR_ARG, "%s: bad entry or metadata count (%d, %d)", path, n, n_meta);
    for (int i = 0; i < n_meta; i++) {
        if (!meta[i].key || !meta[i].value)
            return pft_ctx_seterr(ctx, PFT_ERR_ARG, "%s: metadata pair %d has a NULL key or value", path, i);
        for (int j = 0; j < i; j++) /* a handful of pairs: quadratic is fine */
            if (strcmp(meta[i].key, meta[j].key) == 0)
                return pft_ctx_seterr(ctx, PFT_ERR_ARG, "%s: metadata key '%s' given twice", path, meta[i].key);
    }
    for (int i = 0; i < n; i++) {
        const pft_st_entry_in *in = &entries[i];
        if (!in->name || !in->name[0] || strcmp(in->name, "__metadata__") == 0)
            return pft_ctx_seterr(ctx, PFT_ERR_ARG, "%s: entry %d has a NULL, empty or reserved name", path, i);
        if (in->ndim < 0 || in->ndim > PFT_ST_MAX_DIMS || (in->ndim > 0 && !in->shape))
            return pft_ctx_seterr(ctx, PFT_ERR_ARG, "%s: tensor '%s': ndim %d outside [0, %d] or NULL shape", path,
                                  in->name, in->ndim, PFT_ST_MAX_DIMS);
        uint64_t numel = 1;
        for (int d = 0; d < in->ndim; d++) {
            if (in->shape[d] < 0)
                return pft_ctx_seterr(ctx, PFT_ERR_ARG, "%s: tensor '%s': negative dimension in shape %s", path,
                                      in->name, pft_shape_str(sh, sizeof sh, in->ndim, in->shape));
            uint64_t v = (uint64_t)in->shape[d];
            if (v && numel > (uint64_t)INT64_MAX / 4 / v)
                return pft_ctx_seterr(ctx, PFT_ERR_ARG, "%s: tensor '%s': shape %s is too large", path, in->name,
                                      pft_shape_str(sh, sizeof sh, in->ndim, in->shape));
            numel *= v;
        }
        if (numel > 0 && !in->data)
            return pft_ctx_seterr(ctx, PFT_ERR_ARG, "%s: tensor '%s': NULL data for shape %s", path, in->name,
                                  pft_shape_str(sh, sizeof sh, in->ndim, in->shape));
    }
    return PFT_OK;
}

static pft_status write_all(pft_ctx *ctx, FILE *fp, const char *tmp, const void *p, size_t len) {
    if (len && fwrite(p, 1, len, fp) != len)
        return pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: write of %zu bytes failed: %s", tmp, len, strerror(errno));
    return PFT_OK;
}

/* fsync the directory holding path so that the rename itself survives a crash. */
static pft_status sync_dir(pft_ctx *ctx, const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "%s: out of memory", path);
    pft_status st = PFT_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    /* some file systems refuse fsync on directories (EINVAL); there is nothing more to do there */
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))
        st = pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: written, but syncing directory '%s' failed: %s", path, dir,
                            strerror(errno));
    if (fd >= 0) close(fd);
    free(dir);
    return st;
}

pft_status pft_st_write(pft_ctx *ctx, const char *path, int n, const pft_st_entry_in *entries, int n_meta,
                        const pft_st_meta *meta) {
    if (!path) return pft_ctx_seterr(ctx, PFT_ERR_ARG, "pft_st_write: NULL path");
    pft_status st = PFT_OK;
    uint64_t *nbytes = calloc((size_t)(n > 0 ? n : 1), sizeof *nbytes);
    const pft_st_entry_in **sorted = calloc((size_t)(n > 0 ? n : 1), sizeof *sorted);
    char *json = NULL, *tmp = NULL;
    FILE *fp = NULL;
    int fd = -1;
    if (!nbytes || !sorted) {
        st = pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "%s: out of memory", path);
        goto done;
    }
    if ((st = check_inputs(ctx, path, n, entries, n_meta, meta)) != PFT_OK) goto done;
    for (int i = 0; i < n; i++) sorted[i] = &entries[i];
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_in_name);
    for (int i = 1; i < n; i++)
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0) {
            st = pft_ctx_seterr(ctx, PFT_ERR_ARG, "%s: tensor '%s' given twice", path, sorted[i]->name);
            goto done;
        }
    for (int i = 0; i < n; i++) { /* shapes were validated: no overflow */
        uint64_t numel = 1;
        for (int d = 0; d < sorted[i]->ndim; d++) numel *= (uint64_t)sorted[i]->shape[d];
        nbytes[i] = numel * 4;
    }
    if ((st = build_header(ctx, path, n, sorted, nbytes, n_meta, meta, &json)) != PFT_OK) goto done;

    size_t jlen = strlen(json), pad = (8 - jlen % 8) % 8; /* pad with spaces so data starts 8-aligned */
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)(jlen + pad) >> (8 * i));

    size_t plen = strlen(path);
    if (!(tmp = malloc(plen + sizeof ".tmp.XXXXXX"))) {
        st = pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "%s: out of memory", path);
        goto done;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    if ((fd = mkstemp(tmp)) < 0) {
        st = pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: cannot create temporary file '%s': %s", path, tmp, strerror(errno));
        free(tmp);
        tmp = NULL; /* nothing to remove */
        goto done;
    }
    /* mkstemp creates 0600: keep the mode of the file being replaced, else use the common 0644 (the umask
     * cannot be read without changing it, which would race with other threads) */
    struct stat old;
    fchmod(fd, stat(path, &old) == 0 && S_ISREG(old.st_mode) ? old.st_mode & 07777 : 0644);
    if (!(fp = fdopen(fd, "wb"))) {
        st = pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: fdopen failed: %s", tmp, strerror(errno));
        goto done;
    }
    fd = -1; /* owned by fp now */
    static const char spaces[8] = "        ";
    if ((st = write_all(ctx, fp, tmp, lenbuf, 8)) || (st = write_all(ctx, fp, tmp, json, jlen)) ||
        (st = write_all(ctx, fp, tmp, spaces, pad)))
        goto done;
    for (int i = 0; i < n; i++)
        if ((st = write_all(ctx, fp, tmp, sorted[i]->data, (size_t)nbytes[i]))) goto done;
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        st = pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: flush/fsync failed: %s", tmp, strerror(errno));
        goto done;
    }
    int rc = fclose(fp);
    fp = NULL;
    if (rc != 0) {
        st = pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        st = pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: cannot rename '%s' over it: %s", path, tmp, strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL; /* renamed: no longer ours to remove */
    st = sync_dir(ctx, path);
done:
    if (fp) fclose(fp);
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(json);
    free(sorted);
    free(nbytes);
    return st;
}
