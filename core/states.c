/* states.c - the frozen-prefix activation store and its file (states.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "states.h"

/* Bump when the file layout or what the vectors mean changes: older files then read as stale. */
#define STATES_VERSION 2u

_Static_assert(sizeof(pft_states_header) == 64, "the states header is 64 bytes, without padding");

#define FNV_PRIME 1099511628211ull

uint64_t pft_states_hash(uint64_t h, const void *p, size_t bytes) {
    const unsigned char *s = p;
    size_t i = 0;
    for (; i + 4 <= bytes; i += 4) {
        uint32_t w;
        memcpy(&w, s + i, 4);
        h = (h ^ w) * FNV_PRIME;
    }
    for (; i < bytes; i++) h = (h ^ s[i]) * FNV_PRIME;
    return h;
}

/* Bytes of the data region, for a tokens store padded to 8 so that the offsets after it are aligned;
 * -1 on overflow. */
static int64_t data_region(int64_t nvec, int64_t width, bool per_row) {
    int64_t n;
    if (nvec < 0 || width < 0 || __builtin_mul_overflow(nvec, width, &n) || __builtin_mul_overflow(n, (int64_t)sizeof(float), &n))
        return -1;
    return per_row ? n : n + (n & 4);
}

int64_t pft_states_file_bytes(int64_t count, int64_t nvec, int64_t width, bool per_row) {
    int64_t data = data_region(nvec, width, per_row), offs = 0, total;
    if (data < 0 || count < 0 || count == INT64_MAX ||
        (!per_row && __builtin_mul_overflow(count + 1, (int64_t)sizeof(uint64_t), &offs)) ||
        __builtin_add_overflow(data, offs, &total) || __builtin_add_overflow(total, (int64_t)sizeof(pft_states_header), &total))
        return -1;
    return total;
}

/* --- writing --------------------------------------------------------------------------------------- */

struct pft_states_writer {
    pft_ctx *ctx;
    FILE *f;
    char *path, *tmp;
    pft_states_header h;
    uint64_t *offsets;  /* [count + 1]: from the lengths given at open */
    const int64_t *lengths;
    int64_t next_row;   /* rows added so far */
    uint64_t hash;      /* over the data written so far */
};

static pft_status writer_fail(pft_states_writer *w, pft_status st) {
    pft_states_writer_abort(w);
    return st;
}

pft_states_writer *pft_states_writer_open(pft_ctx *ctx, const char *path, uint64_t key, int64_t count,
                                          const int64_t *lengths, int64_t width, bool per_row) {
    if (count < 0 || width < 1) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "states: %s: bad shape (%lld rows, width %lld)", path, (long long)count,
                       (long long)width);
        return NULL;
    }
    pft_states_writer *w = calloc(1, sizeof *w);
    size_t room = strlen(path) + 32;
    if (w) w->path = strdup(path), w->tmp = malloc(room), w->offsets = malloc(sizeof(uint64_t) * (size_t)(count + 1));
    if (!w || !w->path || !w->tmp || !w->offsets) {
        pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "states: %s: out of memory", path);
        pft_states_writer_abort(w);
        return NULL;
    }
    w->ctx = ctx, w->lengths = lengths, w->hash = PFT_STATES_HASH_START;
    w->offsets[0] = 0;
    for (int64_t i = 0; i < count; i++) {
        if (lengths[i] < 1) {
            pft_ctx_seterr(ctx, PFT_ERR_ARG, "states: %s: row %lld has no tokens", path, (long long)i);
            pft_states_writer_abort(w);
            return NULL;
        }
        w->offsets[i + 1] = w->offsets[i] + (uint64_t)lengths[i];
    }
    memcpy(w->h.magic, PFT_STATES_MAGIC, sizeof w->h.magic);
    w->h.version = STATES_VERSION, w->h.flags = per_row ? PFT_STATES_PER_ROW : 0, w->h.key = key;
    w->h.count = (uint64_t)count, w->h.width = (uint64_t)width;
    w->h.nvec = per_row ? (uint64_t)count : w->offsets[count];
    snprintf(w->tmp, room, "%s.tmp.%d", path, (int)getpid()); /* beside path: rename never crosses a file system */
    w->f = fopen(w->tmp, "wb");
    pft_states_header blank;
    memset(&blank, 0, sizeof blank); /* the real header goes in at commit: a crash leaves no valid file */
    if (!w->f || fwrite(&blank, sizeof blank, 1, w->f) != 1) {
        pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: %s", w->tmp, strerror(errno));
        pft_states_writer_abort(w);
        return NULL;
    }
    return w;
}

static pft_status write_vectors(pft_states_writer *w, const float *x, int64_t n) {
    size_t bytes = (size_t)n * (size_t)w->h.width * sizeof(float);
    w->hash = pft_states_hash(w->hash, x, bytes);
    if (n && fwrite(x, sizeof(float) * (size_t)w->h.width, (size_t)n, w->f) != (size_t)n)
        return pft_ctx_seterr(w->ctx, PFT_ERR_IO, "%s: %s", w->tmp, strerror(errno));
    return PFT_OK;
}

pft_status pft_states_writer_add(pft_states_writer *w, const float *x, int64_t nvec, int64_t m, const int64_t *lens) {
    const bool per_row = w->h.flags & PFT_STATES_PER_ROW;
    if (m < 0 || w->next_row + m > (int64_t)w->h.count)
        return writer_fail(w, pft_ctx_seterr(w->ctx, PFT_ERR_ARG, "states: %s: %lld rows added past the %llu of the split",
                                             w->path, (long long)(w->next_row + m), (unsigned long long)w->h.count));
    int64_t tokens = 0;
    for (int64_t i = 0; i < m; i++) {
        int64_t want = w->lengths[w->next_row + i];
        if (lens[i] != want)
            return writer_fail(w, pft_ctx_seterr(w->ctx, PFT_ERR_ARG, "states: %s: row %lld has %lld tokens in the batch, %lld in the split",
                                                 w->path, (long long)(w->next_row + i), (long long)lens[i], (long long)want));
        tokens += lens[i];
    }
    pft_status st = PFT_OK;
    if (nvec == tokens && !(per_row && nvec != m)) {
        st = write_vectors(w, x, nvec);
    } else if (per_row && nvec == tokens) { /* tokens given: each row's first */
        for (int64_t i = 0, at = 0; i < m && !st; at += lens[i], i++) st = write_vectors(w, x + at * (int64_t)w->h.width, 1);
    } else if (per_row && nvec == m) {
        st = write_vectors(w, x, m);
    } else {
        st = pft_ctx_seterr(w->ctx, PFT_ERR_SHAPE, "states: %s: %lld vectors for %lld rows of %lld tokens", w->path,
                            (long long)nvec, (long long)m, (long long)tokens);
    }
    if (st) return writer_fail(w, st);
    w->next_row += m;
    return PFT_OK;
}

pft_status pft_states_writer_commit(pft_states_writer *w) {
    const bool per_row = w->h.flags & PFT_STATES_PER_ROW;
    if (w->next_row != (int64_t)w->h.count)
        return writer_fail(w, pft_ctx_seterr(w->ctx, PFT_ERR_STATE, "states: %s: %lld of %llu rows added", w->path,
                                             (long long)w->next_row, (unsigned long long)w->h.count));
    size_t noff = per_row ? 0 : (size_t)w->h.count + 1;
    if (noff) w->hash = pft_states_hash(w->hash, w->offsets, noff * sizeof *w->offsets);
    w->h.checksum = w->hash;
    static const char pad[4] = {0}; /* a tokens store's data is padded to 8 bytes: aligned offsets after it */
    const size_t npad = !per_row && ((w->h.nvec * w->h.width) & 1) ? sizeof pad : 0;
    int ok = (!npad || fwrite(pad, 1, npad, w->f) == npad) &&
             (!noff || fwrite(w->offsets, sizeof *w->offsets, noff, w->f) == noff) && fseek(w->f, 0, SEEK_SET) == 0 &&
             fwrite(&w->h, sizeof w->h, 1, w->f) == 1;
    int err = errno;
    if (fclose(w->f)) ok = 0, err = errno;
    w->f = NULL;
    if (ok && rename(w->tmp, w->path)) ok = 0, err = errno;
    if (!ok) return writer_fail(w, pft_ctx_seterr(w->ctx, PFT_ERR_IO, "%s: %s", w->path, strerror(err)));
    free(w->tmp), w->tmp = NULL; /* renamed: nothing to remove */
    pft_states_writer_abort(w);
    return PFT_OK;
}

void pft_states_writer_abort(pft_states_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    if (w->tmp) remove(w->tmp);
    free(w->tmp), free(w->path), free(w->offsets), free(w);
}

/* --- reading --------------------------------------------------------------------------------------- */

static pft_states *miss_with(pft_ctx *ctx, pft_states_miss *miss, pft_states_miss why, const char *path,
                             const char *what) {
    static const char *const word[] = {"", "missing", "stale", "corrupt"};
    static const pft_status code[] = {PFT_OK, PFT_ERR_IO, PFT_ERR_ARG, PFT_ERR_FORMAT};
    if (what) pft_ctx_seterr(ctx, code[why], "%s: %s: %s", word[why], path, what);
    else pft_ctx_seterr(ctx, code[why], "%s: %s", word[why], path);
    if (miss) *miss = why;
    return NULL;
}

/* The header's verdict against what the caller expects; *what says why not. */
static pft_states_miss check_header(const pft_states_header *h, uint64_t key, int64_t count, int64_t width,
                                    bool per_row, const char **what) {
    if (memcmp(h->magic, PFT_STATES_MAGIC, sizeof h->magic) || (h->flags & ~PFT_STATES_PER_ROW) || h->reserved)
        return *what = "bad header", PFT_STATES_CORRUPT;
    if (h->version != STATES_VERSION) return *what = "another format version", PFT_STATES_STALE;
    if (h->key != key) return *what = "another key (other weights, tokens or boundary)", PFT_STATES_STALE;
    if (count < 0 || width < 1 || h->count != (uint64_t)count || h->width != (uint64_t)width)
        return *what = "another shape", PFT_STATES_STALE;
    if (!(h->flags & PFT_STATES_PER_ROW) != !per_row) return *what = "another kind of store", PFT_STATES_STALE;
    if (per_row && h->nvec != h->count) return *what = "bad vector count", PFT_STATES_CORRUPT;
    if (h->nvec > (uint64_t)1 << 40) return *what = "bad vector count", PFT_STATES_CORRUPT;
    return PFT_STATES_HIT;
}

/* Offsets against the rows' lengths: monotone and ending at nvec (else corrupt), then equal (else stale). */
static pft_states_miss check_offsets(const pft_states *s, const int64_t *lengths, const char **what) {
    if (s->offsets[0] != 0 || s->offsets[s->count] != (uint64_t)s->nvec) return *what = "bad offsets", PFT_STATES_CORRUPT;
    for (int64_t i = 0; i < s->count; i++)
        if (s->offsets[i + 1] < s->offsets[i]) return *what = "bad offsets", PFT_STATES_CORRUPT;
    for (int64_t i = 0; i < s->count; i++)
        if ((int64_t)(s->offsets[i + 1] - s->offsets[i]) != lengths[i]) return *what = "other row lengths", PFT_STATES_STALE;
    return PFT_STATES_HIT;
}

pft_states *pft_states_open(pft_ctx *ctx, const char *path, uint64_t key, int64_t count, const int64_t *lengths,
                            int64_t width, bool per_row, pft_states_miss *miss) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return miss_with(ctx, miss, PFT_STATES_MISSING, path, NULL);
    struct stat st;
    pft_states_header h;
    const char *what = NULL;
    pft_states_miss why = PFT_STATES_HIT;
    if (fstat(fd, &st) || st.st_size < (off_t)sizeof h || pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
        why = PFT_STATES_CORRUPT, what = "shorter than its header";
    else why = check_header(&h, key, count, width, per_row, &what);
    const int64_t want = why ? -1 : pft_states_file_bytes(count, (int64_t)h.nvec, width, per_row);
    if (!why && (want < 0 || st.st_size != (off_t)want)) why = PFT_STATES_CORRUPT, what = "wrong size (truncated?)";
    void *map = MAP_FAILED;
    if (!why && (map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED)
        why = PFT_STATES_MISSING, what = strerror(errno);
    close(fd);
    if (why) return miss_with(ctx, miss, why, path, what);
    pft_states *s = calloc(1, sizeof *s);
    if (!s) {
        munmap(map, (size_t)st.st_size);
        pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "states: %s: out of memory", path);
        if (miss) *miss = PFT_STATES_MISSING;
        return NULL;
    }
    s->ctx = ctx, s->count = count, s->nvec = (int64_t)h.nvec, s->width = width, s->per_row = per_row;
    s->map = map, s->map_bytes = (size_t)st.st_size;
    s->data = (const float *)(const void *)((const char *)map + sizeof h);
    size_t data_bytes = (size_t)s->nvec * (size_t)width * sizeof(float);
    s->offsets = per_row ? NULL : (const uint64_t *)(const void *)((const char *)s->data + data_region(s->nvec, width, false));
    uint64_t sum = pft_states_hash(PFT_STATES_HASH_START, s->data, data_bytes);
    const unsigned char *pad = (const unsigned char *)s->data + data_bytes; /* 0 or 4 bytes, written as zeros */
    for (int64_t i = 0; i < data_region(s->nvec, width, per_row) - (int64_t)data_bytes; i++)
        if (pad[i]) sum = ~h.checksum; /* a padding byte set: reported with the checksum */
    if (!per_row) sum = pft_states_hash(sum, s->offsets, (size_t)(count + 1) * sizeof(uint64_t));
    if (sum != h.checksum) why = PFT_STATES_CORRUPT, what = "checksum mismatch";
    else if (!per_row) why = check_offsets(s, lengths, &what);
    if (why) {
        pft_states_free(s);
        return miss_with(ctx, miss, why, path, what);
    }
    if (miss) *miss = PFT_STATES_HIT;
    return s;
}

void pft_states_free(pft_states *s) {
    if (!s) return;
    if (s->map) munmap(s->map, s->map_bytes);
    free(s);
}

pft_tensor *pft_states_gather(const pft_states *s, int64_t m, const int64_t *rows) {
    int64_t n = 0;
    for (int64_t i = 0; i < m; i++) {
        if (rows[i] < 0 || rows[i] >= s->count) {
            pft_ctx_seterr(s->ctx, PFT_ERR_ARG, "states: row %lld outside [0, %lld)", (long long)rows[i], (long long)s->count);
            return NULL;
        }
        n += s->per_row ? 1 : (int64_t)(s->offsets[rows[i] + 1] - s->offsets[rows[i]]);
    }
    pft_tensor *x = pft_tensor_empty(s->ctx, 2, (int64_t[]){n, s->width});
    if (!x) return NULL;
    float *dst = pft_tensor_data(x);
    for (int64_t i = 0; i < m; i++) {
        int64_t from = s->per_row ? rows[i] : (int64_t)s->offsets[rows[i]];
        int64_t len = s->per_row ? 1 : (int64_t)(s->offsets[rows[i] + 1] - s->offsets[rows[i]]);
        memcpy(dst, s->data + from * s->width, sizeof(float) * (size_t)(len * s->width));
        dst += len * s->width;
    }
    return x;
}
