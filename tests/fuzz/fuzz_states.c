/* fuzz_states.c - the activation-cache reader, pft_states_open (core/states.c), on arbitrary files, and
 * what an opened store then does (gather, write again with pft_states_writer_*, open again).
 *
 * Input: byte 0 is a control byte, the rest the store file. Bit 0: the harness writes the right checksum
 * into the header (pft_states_hash over the data, then the offsets, laid out as the header says), else a
 * mutated body stops at the checksum test; bit 1: key, count, width and per_row passed to pft_states_open
 * are the file's own header's (count up to 65536, width 1 .. 2^20), else fixed values (key 0x1234, 2 rows,
 * width 4, per_row = bit 7), so that the stale paths run; the row lengths passed are those of the offsets
 * at the file's end (all 1 when there are none); bit 2: one of them (row bits 3-5, modulo the count) is
 * one more, or with bit 6 one less, than the file says (stale). The format: states.h.
 *
 * Checks: pft_states_open returns a store, or NULL with a missing / stale / corrupt verdict and a message
 * starting with that word; an opened store has count rows and nvec vectors of width floats right after
 * the header, and the file is that long (computed without overflow; up to 7 bytes of alignment padding
 * before the offsets allowed), offsets at its end, from 0, monotone, ending at nvec and equal to the
 * lengths (tokens), or nvec = count (per_row); every row gathers into a tensor of the right shape holding
 * exactly the data region's bytes, and so do reversed and repeated rows; rows out of range are refused;
 * the writer, given the same key, lengths, width and kind and the data in two batches, writes a file
 * equal byte for byte to the one read (or refuses lengths under 1 at open), which opens again. Gather and
 * rewrite only for count <= 65536 and nvec x width <= 2^22.
 *
 * Its first findings (fixed in states.c, their inputs kept in the corpus as regress-*): a width from
 * the header whose nvec x width x 4 overflowed int64 in pft_states_file_bytes, so that a short file read
 * as a huge store; offsets 4 bytes off 8-byte alignment when nvec x width was odd; a nonzero
 * header.reserved accepted. PFT_FUZZ_VERBOSE=1 prints each verdict, for writing seeds. */
#include "fuzz.h"

#include "states.h"

#define HEADER ((size_t)sizeof(pft_states_header))
#define COUNT_CAP ((uint64_t)1 << 16)  /* rows taken from a header (the lengths array is the harness's) */
#define FLOATS_CAP ((uint64_t)1 << 22) /* gather and rewrite: 16 MiB of data at most */

static pft_ctx *ctx;
static bool verbose;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    ctx = pft_ctx_new(1, 0);
    FUZZ_CHECK(ctx, "pft_ctx_new");
    const char *e = getenv("PFT_FUZZ_VERBOSE");
    verbose = e && strcmp(e, "1") == 0;
    return 0;
}

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static uint64_t u64_at(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Offset i of a tokens store, read through memcpy (the harness does not rely on the alignment it checks). */
static int64_t offset_of(const pft_states *s, int64_t i) {
    return (int64_t)u64_at((const uint8_t *)(const void *)s->offsets + (size_t)i * sizeof(uint64_t));
}

/* What pft_states_open is asked for. */
typedef struct expect {
    uint64_t key;
    int64_t count, width;
    bool per_row;
    int64_t *lengths; /* [count] (at least one element) */
} expect;

/* The checksum the reader computes: pft_states_hash over the data (the body's first nvec x width x 4
 * bytes, size_t arithmetic wrapping as the reader's does), then the count + 1 offsets (its last bytes:
 * the same bytes while they follow the data directly, and still the offsets if a format pads the data).
 * A layout that does not fit the body never reaches the checksum test (the size test comes first), so
 * then the whole body. */
static void fix_checksum(uint8_t *file, size_t n) {
    pft_states_header h;
    memcpy(&h, file, sizeof h);
    const uint8_t *body = file + HEADER;
    size_t rest = n - HEADER;
    size_t data_bytes = (size_t)h.nvec * (size_t)h.width * sizeof(float);
    size_t off_bytes = (h.flags & PFT_STATES_PER_ROW) ? 0 : ((size_t)h.count + 1) * sizeof(uint64_t);
    uint64_t sum;
    if (data_bytes <= rest && off_bytes <= rest - data_bytes) {
        sum = pft_states_hash(PFT_STATES_HASH_START, body, data_bytes);
        sum = pft_states_hash(sum, body + rest - off_bytes, off_bytes);
    } else {
        sum = pft_states_hash(PFT_STATES_HASH_START, body, rest);
    }
    memcpy(file + offsetof(pft_states_header, checksum), &sum, sizeof sum);
}

/* The file's size for this shape without padding, or 0 when it does not fit in 63 bits. */
static uint64_t file_size_for(int64_t count, uint64_t nvec, int64_t width, bool per_row) {
    unsigned __int128 bytes = (unsigned __int128)HEADER + (unsigned __int128)nvec * (uint64_t)width * sizeof(float);
    if (!per_row) bytes += ((unsigned __int128)(uint64_t)count + 1) * sizeof(uint64_t);
    return bytes > (unsigned __int128)INT64_MAX ? 0 : (uint64_t)bytes;
}

/* rows[0..m) gathered: shape, and each row's vectors equal to its slice of the file's data region. */
static void check_gather(const pft_states *s, const uint8_t *data, int64_t m, const int64_t *rows, const char *what) {
    pft_tensor *x = pft_states_gather(s, m, rows);
    FUZZ_CHECK(x, "gather of %s (%lld rows): %s", what, (long long)m, pft_ctx_error(ctx));
    int64_t want = 0;
    for (int64_t i = 0; i < m; i++) want += s->per_row ? 1 : offset_of(s, rows[i] + 1) - offset_of(s, rows[i]);
    FUZZ_CHECK(x->ndim == 2 && x->shape[0] == want && x->shape[1] == s->width, "gather of %s: shape [%lld, %lld], want [%lld, %lld]",
               what, (long long)x->shape[0], (long long)x->shape[1], (long long)want, (long long)s->width);
    const uint8_t *got = (const uint8_t *)pft_tensor_data(x);
    size_t vec = (size_t)s->width * sizeof(float);
    for (int64_t i = 0; i < m; i++) {
        int64_t from = s->per_row ? rows[i] : offset_of(s, rows[i]);
        int64_t len = s->per_row ? 1 : offset_of(s, rows[i] + 1) - offset_of(s, rows[i]);
        FUZZ_CHECK(len == 0 || memcmp(got, data + (size_t)from * vec, (size_t)len * vec) == 0,
                   "gather of %s: row %lld (entry %lld) differs from the file", what, (long long)rows[i], (long long)i);
        got += (size_t)len * vec;
    }
    pft_tensor_release(x);
}

/* The store written again from its own data: the same file, byte for byte, which opens again. */
static void check_rewrite(const pft_states *s, const expect *ex, const uint8_t *file, size_t n, const char *copy) {
    bool short_row = false;
    for (int64_t i = 0; i < ex->count; i++) short_row |= ex->lengths[i] < 1;
    pft_states_writer *w = pft_states_writer_open(ctx, copy, ex->key, ex->count, ex->lengths, ex->width, ex->per_row);
    if (short_row) { /* a row without tokens: the writer refuses it (the reader only compares) */
        FUZZ_CHECK(!w, "the writer took a row of under 1 token");
        return;
    }
    FUZZ_CHECK(w, "writer_open: %s", pft_ctx_error(ctx));
    const uint8_t *data = file + HEADER;
    size_t vec = (size_t)s->width * sizeof(float);
    /* two batches: the first half of the rows, then the rest (the data is the file's, 4-byte aligned) */
    int64_t half = ex->count / 2;
    int64_t nv1 = ex->per_row ? half : offset_of(s, half);
    float *buf = malloc((size_t)s->nvec * vec + 1);
    FUZZ_CHECK(buf, "malloc");
    memcpy(buf, data, (size_t)s->nvec * vec);
    pft_status st = pft_states_writer_add(w, buf, nv1, half, ex->lengths);
    FUZZ_CHECK(st == PFT_OK, "writer_add (rows 0..%lld): %s", (long long)half, pft_ctx_error(ctx));
    st = pft_states_writer_add(w, buf + (size_t)nv1 * (size_t)s->width, s->nvec - nv1, ex->count - half, ex->lengths + half);
    FUZZ_CHECK(st == PFT_OK, "writer_add (rows %lld..%lld): %s", (long long)half, (long long)ex->count, pft_ctx_error(ctx));
    free(buf);
    FUZZ_CHECK(pft_states_writer_commit(w) == PFT_OK, "writer_commit: %s", pft_ctx_error(ctx));

    FILE *f = fopen(copy, "rb");
    FUZZ_CHECK(f, "%s: cannot read back", copy);
    uint8_t *saved = malloc(n + 1), *want = malloc(n);
    FUZZ_CHECK(saved && want, "malloc");
    size_t got = fread(saved, 1, n + 1, f);
    fclose(f);
    memcpy(want, file, n);
    if (got == n && memcmp(saved, want, n) != 0) {
        size_t at = 0;
        while (saved[at] == want[at]) at++;
        FUZZ_CHECK(0, "the rewritten file differs from the one read at byte %zu", at);
    }
    FUZZ_CHECK(got == n, "the rewritten file has %zu bytes, the one read %zu", got, n);
    free(saved), free(want);
    pft_states_miss why = PFT_STATES_MISSING;
    pft_states *again = pft_states_open(ctx, copy, ex->key, ex->count, ex->lengths, ex->width, ex->per_row, &why);
    FUZZ_CHECK(again && why == PFT_STATES_HIT, "a rewritten store does not open: %s", pft_ctx_error(ctx));
    FUZZ_CHECK(again->count == s->count && again->nvec == s->nvec && again->width == s->width, "another shape after rewrite");
    pft_states_free(again);
    remove(copy);
}

static void check_store(const pft_states *s, const expect *ex, const uint8_t *file, size_t n, const char *copy) {
    pft_states_header h;
    memcpy(&h, file, sizeof h);
    FUZZ_CHECK(s->count == ex->count && s->width == ex->width && s->per_row == ex->per_row,
               "a store of %lld rows, width %lld, per_row %d; asked %lld, %lld, %d", (long long)s->count,
               (long long)s->width, s->per_row, (long long)ex->count, (long long)ex->width, ex->per_row);
    FUZZ_CHECK(s->nvec >= 0 && (uint64_t)s->nvec == h.nvec, "nvec %lld, the header's %llu", (long long)s->nvec,
               (unsigned long long)h.nvec);
    uint64_t size = file_size_for(s->count, h.nvec, s->width, s->per_row);
    FUZZ_CHECK(size && size <= n && n - size <= (s->per_row ? 0 : 7),
               "accepted a file of %zu bytes for %lld rows, %llu vectors of %lld floats (%s%llu bytes)", n,
               (long long)s->count, (unsigned long long)h.nvec, (long long)s->width, size ? "" : "over 2^63: ",
               (unsigned long long)size);
    FUZZ_CHECK(s->map_bytes == n && (const uint8_t *)s->data == (const uint8_t *)s->map + HEADER, "data not right after the header");
    const uint8_t *data = (const uint8_t *)s->data;
    FUZZ_CHECK(memcmp(s->map, file, n) == 0, "the mapping differs from the file");
    if (s->per_row) {
        FUZZ_CHECK(!s->offsets && s->nvec == s->count, "per_row: offsets %p, %lld vectors for %lld rows", (const void *)s->offsets,
                   (long long)s->nvec, (long long)s->count);
    } else {
        size_t off_bytes = ((size_t)s->count + 1) * sizeof(uint64_t);
        const uint8_t *at = (const uint8_t *)(const void *)s->offsets;
        FUZZ_CHECK(at && at + off_bytes == (const uint8_t *)s->map + n &&
                       at >= data + (size_t)s->nvec * (size_t)s->width * sizeof(float),
                   "offsets not between the data and the file's end");
        const uint8_t *off = file + n - off_bytes; /* the same bytes, read unaligned */
        FUZZ_CHECK(u64_at(off) == 0 && u64_at(off + (size_t)s->count * 8) == (uint64_t)s->nvec, "offsets from %llu to %llu, %lld vectors",
                   (unsigned long long)u64_at(off), (unsigned long long)u64_at(off + (size_t)s->count * 8), (long long)s->nvec);
        for (int64_t i = 0; i < s->count; i++) {
            uint64_t a = u64_at(off + (size_t)i * 8), b = u64_at(off + (size_t)i * 8 + 8);
            FUZZ_CHECK(a <= b && (int64_t)(b - a) == ex->lengths[i], "row %lld: offsets %llu..%llu, length %lld", (long long)i,
                       (unsigned long long)a, (unsigned long long)b, (long long)ex->lengths[i]);
        }
    }
    if ((uint64_t)s->count > COUNT_CAP || (uint64_t)s->nvec > FLOATS_CAP / (uint64_t)s->width) return;

    int64_t m = s->count, *rows = malloc(((size_t)m * 2 + 3) * sizeof *rows);
    FUZZ_CHECK(rows, "malloc");
    for (int64_t i = 0; i < m; i++) rows[i] = i;
    check_gather(s, data, m, rows, "every row");
    /* every row in reverse, then row 0 and the last twice more */
    for (int64_t i = 0; i < m; i++) rows[i] = m - 1 - i;
    int64_t k = m;
    if (m > 0) rows[k++] = 0, rows[k++] = m - 1, rows[k++] = 0;
    check_gather(s, data, k, rows, "reversed and repeated rows");
    check_gather(s, data, 0, rows, "no row");
    rows[0] = m; /* one past the end */
    FUZZ_CHECK(!pft_states_gather(s, 1, rows), "gather of row %lld of %lld", (long long)m, (long long)m);
    rows[0] = -1;
    FUZZ_CHECK(!pft_states_gather(s, 1, rows), "gather of row -1");
    free(rows);
    check_rewrite(s, ex, file, n, copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t ctl = data[0];
    size_t n = size - 1;
    uint8_t *file = malloc(n ? n : 1);
    FUZZ_CHECK(file, "malloc");
    memcpy(file, data + 1, n);
    if ((ctl & 1) && n >= HEADER) fix_checksum(file, n);
    char path[PATH_MAX], copy[PATH_MAX];
    fuzz_path(path, sizeof path, "in.act");
    fuzz_path(copy, sizeof copy, "copy.act");
    fuzz_write(path, file, n);

    pft_states_header h;
    memset(&h, 0, sizeof h);
    if (n >= HEADER) memcpy(&h, file, sizeof h);
    expect ex = {.key = 0x1234, .count = 2, .width = 4, .per_row = (ctl & 0x80) != 0};
    if ((ctl & 2) && n >= HEADER) {
        ex.key = h.key, ex.per_row = (h.flags & PFT_STATES_PER_ROW) != 0;
        if (h.count <= COUNT_CAP) ex.count = (int64_t)h.count;
        if (h.width >= 1 && h.width <= (uint64_t)INT64_MAX) ex.width = (int64_t)h.width;
    }
    /* the lengths the offsets at the file's end say, else 1 each; bit 2: one of them off by one */
    ex.lengths = malloc(((size_t)ex.count + 1) * sizeof *ex.lengths);
    FUZZ_CHECK(ex.lengths, "malloc");
    size_t off_bytes = ((size_t)ex.count + 1) * sizeof(uint64_t);
    bool tail = !ex.per_row && n >= HEADER + off_bytes;
    for (int64_t i = 0; i < ex.count; i++) {
        const uint8_t *off = file + n - off_bytes + (size_t)i * 8;
        ex.lengths[i] = tail ? (int64_t)(u64_at(off + 8) - u64_at(off)) : 1;
    }
    if ((ctl & 4) && ex.count > 0) {
        int64_t r = ((ctl >> 3) & 7) % ex.count;
        ex.lengths[r] = (int64_t)((uint64_t)ex.lengths[r] + ((ctl & 0x40) ? (uint64_t)-1 : 1));
    }

    pft_states_miss why = PFT_STATES_HIT;
    pft_states *s = pft_states_open(ctx, path, ex.key, ex.count, ex.lengths, ex.width, ex.per_row, &why);
    if (verbose) fprintf(stderr, "fuzz_states: %s\n", s ? "hit" : pft_ctx_error(ctx));
    if (s) {
        FUZZ_CHECK(why == PFT_STATES_HIT, "a store with verdict %d", (int)why);
        check_store(s, &ex, file, n, copy);
    } else {
        static const char *const word[] = {"", "missing: ", "stale: ", "corrupt: "};
        FUZZ_CHECK(why >= PFT_STATES_MISSING && why <= PFT_STATES_CORRUPT && starts_with(pft_ctx_error(ctx), word[why]),
                   "NULL with verdict %d and message '%s'", (int)why, pft_ctx_error(ctx));
    }
    pft_states_free(s);
    free(ex.lengths);
    free(file);
    return 0;
}
