/* test_safetensors.c - reader, writer and header validation of core/safetensors.c.
 *
 * Standalone (needs only ctx.c and safetensors.c): run from the repository root so that the fixture at
 * tests/fixtures/safetensors/ is found, or set PFT_ST_FIXTURE to its path. Temporary files live in a
 * mkdtemp directory under /tmp that is removed at the end. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkdtemp, strndup, setrlimit */
#endif
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctx.h"
#include "safetensors.h"

static int passed, failed;

#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (cond) {                                                                                          \
            passed++;                                                                                        \
        } else {                                                                                             \
            failed++;                                                                                        \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                      \
            printf(__VA_ARGS__);                                                                             \
            printf("\n");                                                                                    \
        }                                                                                                    \
    } while (0)

static char tmpdir[64];

static const char *tpath(const char *name) {
    static char buf[8][256]; /* a few live paths at once */
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return 0;
    size_t w = fwrite(p, 1, n, fp);
    return fclose(fp) == 0 && w == n;
}

/* Whole file into a malloc'd buffer; *n gets the size. NULL when missing. */
static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len + 1);
    *n = fread(buf, 1, (size_t)len, fp);
    fclose(fp);
    return buf;
}

/* A safetensors file from a header text and a data section; hlen_override >= 0 forges the length field. */
static void make_file(const char *path, const char *json, const void *data, size_t ndata, int64_t hlen_override) {
    size_t jl = strlen(json), n = 8 + jl + ndata;
    unsigned char *buf = malloc(n);
    uint64_t hl = hlen_override >= 0 ? (uint64_t)hlen_override : jl;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hl >> (8 * i));
    memcpy(buf + 8, json, jl);
    if (ndata) memcpy(buf + 8 + jl, data, ndata);
    if (!write_bytes(path, buf, n)) printf("cannot write %s\n", path);
    free(buf);
}

static int count_tmp_files(void) {
    int n = 0;
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) remove_tree(p);
        else unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

static int same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0; }

/* Opens path expecting failure with code; every NULL-terminated substring must be in the message. */
static void expect_open_fail(pft_ctx *ctx, const char *what, const char *path, pft_status code, ...) {
    pft_ctx_clear_error(ctx);
    pft_st_file *f = pft_st_open(ctx, path);
    CHECK(f == NULL, "%s: open should fail", what);
    pft_st_close(f);
    CHECK(ctx->last_status == code, "%s: status %d, want %d (%s)", what, ctx->last_status, code, ctx->error);
    CHECK(strstr(ctx->error, path) != NULL, "%s: message does not name the file: %s", what, ctx->error);
    va_list ap;
    va_start(ap, code);
    for (const char *s; (s = va_arg(ap, const char *));)
        CHECK(strstr(ctx->error, s) != NULL, "%s: message lacks '%s': %s", what, s, ctx->error);
    va_end(ap);
}

static void test_round_trip(pft_ctx *ctx) {
    const char *path = tpath("rt.safetensors");
    float a[6] = {1.0f, -2.5f, 3.25f, 1e-40f /* subnormal */, -0.0f, 123456.789f};
    float s[1] = {42.0f};
    float v[5] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
    const int64_t sa[2] = {2, 3}, sz[2] = {0, 4}, sv[1] = {5};
    /* given unsorted: the writer sorts */
    pft_st_entry_in in[4] = {
        {"zeta.vec", v, 1, sv}, {"alpha.mat", a, 2, sa}, {"mid.scalar", s, 0, NULL}, {"empty", NULL, 2, sz}};
    pft_st_meta meta[2] = {{"format", "pt"}, {"note", "quote \" and \\ and \xc3\xa9"}};
    pft_status st = pft_st_write(ctx, path, 4, in, 2, meta);
    CHECK(st == PFT_OK, "round trip write: %s", ctx->error);
    CHECK(count_tmp_files() == 0, "round trip: temporary file left behind");

    size_t n = 0;
    unsigned char *raw = read_bytes(path, &n);
    uint64_t hl = 0;
    for (int i = 7; raw && i >= 0; i--) hl = hl << 8 | raw[i];
    CHECK(raw && hl % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)hl);
    CHECK(raw && n == 8 + hl + (6 + 1 + 5) * 4, "file size %zu", n);
    if (raw) {
        char *h = strndup((char *)raw + 8, (size_t)hl);
        const char *m = strstr(h, "\"__metadata__\""), *k1 = strstr(h, "\"alpha.mat\""), *k2 = strstr(h, "\"empty\""),
                   *k3 = strstr(h, "\"mid.scalar\""), *k4 = strstr(h, "\"zeta.vec\"");
        CHECK(m == h + 1 && k1 && k2 && k3 && k4 && m < k1 && k1 < k2 && k2 < k3 && k3 < k4,
              "header keys not __metadata__ then sorted: %s", h);
        CHECK(strstr(h, "\"alpha.mat\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}") != NULL,
              "compact entry format: %s", h);
        CHECK(strstr(h, "\"mid.scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[24,28]}") != NULL,
              "scalar entry: %s", h);
        size_t jl = strlen(h);
        while (jl && h[jl - 1] == ' ') jl--;
        CHECK(h[jl - 1] == '}' && hl - jl < 8, "padding: %zu spaces", (size_t)(hl - jl));
        free(h);
    }
    free(raw);

    pft_st_file *f = pft_st_open(ctx, path);
    CHECK(f != NULL, "round trip open: %s", ctx->error);
    if (!f) return;
    CHECK(pft_st_count(f) == 4, "count %d", pft_st_count(f));
    const pft_st_entry *e = pft_st_find(f, "alpha.mat");
    CHECK(e && e->dtype == PFT_ST_F32 && e->ndim == 2 && e->shape[0] == 2 && e->shape[1] == 3 && e->numel == 6,
          "alpha.mat entry");
    float out[6] = {0};
    if (e) {
        CHECK(pft_st_read_f32(ctx, f, e, out) == PFT_OK, "read alpha.mat: %s", ctx->error);
        int ok = 1;
        for (int i = 0; i < 6; i++) ok &= same_bits(out[i], a[i]);
        CHECK(ok, "alpha.mat values differ");
        CHECK(e->end - e->begin == 24 && (const unsigned char *)e->data != NULL, "alpha.mat range");
    }
    e = pft_st_find(f, "mid.scalar");
    CHECK(e && e->ndim == 0 && e->numel == 1, "scalar entry");
    if (e) CHECK(pft_st_read_f32(ctx, f, e, out) == PFT_OK && out[0] == 42.0f, "scalar value %g", out[0]);
    e = pft_st_find(f, "empty");
    CHECK(e && e->numel == 0 && e->begin == e->end && e->shape[0] == 0 && e->shape[1] == 4, "empty entry");
    if (e) CHECK(pft_st_read_f32(ctx, f, e, out) == PFT_OK, "read empty: %s", ctx->error);
    e = pft_st_find(f, "zeta.vec");
    if (e) {
        CHECK(pft_st_read_f32(ctx, f, e, out) == PFT_OK && !memcmp(out, v, sizeof v), "zeta.vec values");
    } else {
        CHECK(0, "zeta.vec missing");
    }
    CHECK(pft_st_find(f, "nope") == NULL && pft_st_find(f, "") == NULL, "missing names found");
    CHECK(strcmp(pft_st_entry_at(f, 0)->name, "alpha.mat") == 0 && pft_st_entry_at(f, 4) == NULL, "entry_at");

    CHECK(pft_st_metadata_count(f) == 2, "metadata count %d", pft_st_metadata_count(f));
    const char *fmt = pft_st_metadata_get(f, "format"), *note = pft_st_metadata_get(f, "note");
    CHECK(fmt && !strcmp(fmt, "pt"), "metadata format");
    CHECK(note && !strcmp(note, meta[1].value), "metadata escaping: %s", note ? note : "(null)");
    CHECK(pft_st_metadata_get(f, "absent") == NULL, "absent metadata key");
    const pft_st_meta *m0 = pft_st_metadata_at(f, 0);
    CHECK(m0 && !strcmp(m0->key, "format") && pft_st_metadata_at(f, 2) == NULL, "metadata_at");
    pft_st_close(f);

    /* the reference reader agrees, when it is installed */
    if (system("python3 -c 'import safetensors, numpy' 2>/dev/null") == 0) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "python3 -c 'import sys, numpy as np; from safetensors.numpy import load_file; "
                 "from safetensors import safe_open; t = load_file(sys.argv[1]); "
                 "m = safe_open(sys.argv[1], \"np\").metadata(); "
                 "ok = t[\"alpha.mat\"].shape == (2, 3) and t[\"alpha.mat\"][0, 1] == -2.5 and "
                 "t[\"mid.scalar\"].shape == () and t[\"empty\"].shape == (0, 4) and "
                 "np.allclose(t[\"zeta.vec\"], [0.1, 0.2, 0.3, 0.4, 0.5]) and m[\"format\"] == \"pt\"; "
                 "sys.exit(0 if ok else 1)' %s",
                 path);
        CHECK(system(cmd) == 0, "python safetensors does not read our file as written");
    }
    /* a file with no tensors and no metadata is legal */
    CHECK(pft_st_write(ctx, tpath("none.safetensors"), 0, NULL, 0, NULL) == PFT_OK, "empty write: %s", ctx->error);
    f = pft_st_open(ctx, tpath("none.safetensors"));
    CHECK(f && pft_st_count(f) == 0 && pft_st_metadata_count(f) == 0 && !pft_st_find(f, "x"), "empty file");
    pft_st_close(f);
}

/* Independent reference for the conversions: the value formula, not bit shuffling. */
static double f16_value(unsigned h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static double bf16_value(unsigned h) {
    int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
    double v = e == 0 ? ldexp(m, -133) : ldexp(128 + m, e - 134);
    return s ? -v : v;
}

static void test_half_exhaustive(pft_ctx *ctx, const char *dtype, int exp_max, int man_bits,
                                 double (*value)(unsigned)) {
    unsigned char *data = malloc(65536 * 2);
    for (unsigned i = 0; i < 65536; i++) data[2 * i] = (unsigned char)i, data[2 * i + 1] = (unsigned char)(i >> 8);
    char json[128];
    snprintf(json, sizeof json, "{\"all\":{\"dtype\":\"%s\",\"shape\":[256,256],\"data_offsets\":[0,131072]}}", dtype);
    const char *path = tpath("half.safetensors");
    make_file(path, json, data, 65536 * 2, -1);
    free(data);
    pft_st_file *f = pft_st_open(ctx, path);
    CHECK(f != NULL, "%s open: %s", dtype, ctx->error);
    if (!f) return;
    float *out = malloc(65536 * sizeof *out);
    CHECK(pft_st_read_f32(ctx, f, pft_st_find(f, "all"), out) == PFT_OK, "%s read: %s", dtype, ctx->error);
    int bad = 0;
    for (unsigned h = 0; h < 65536; h++) {
        unsigned e = (h >> man_bits) & (unsigned)exp_max, m = h & ((1u << man_bits) - 1);
        uint32_t bits;
        memcpy(&bits, &out[h], 4);
        int ok;
        if ((int)e == exp_max) /* inf / NaN: sign, class and payload must survive */
            ok = (bits >> 31) == (h >> 15) && ((bits >> 23) & 255) == 255 &&
                 (bits & 0x7fffff) == m << (23 - man_bits);
        else
            ok = (double)out[h] == value(h) && !signbit(out[h]) == !signbit(value(h));
        if (!ok && bad++ < 5) printf("  %s 0x%04x -> %a (bits 0x%08x), want %a\n", dtype, h, out[h], bits, value(h));
    }
    CHECK(bad == 0, "%s conversion: %d of 65536 patterns wrong", dtype, bad);
    free(out);
    pft_st_close(f);
}

static void test_fixture(pft_ctx *ctx) {
    const char *path = getenv("PFT_ST_FIXTURE");
    if (!path) path = "tests/fixtures/safetensors/small_f32_f16_bf16.safetensors";
    pft_st_file *f = pft_st_open(ctx, path);
    CHECK(f != NULL, "fixture (run from the repository root): %s", ctx->error);
    if (!f) return;
    CHECK(pft_st_count(f) == 4, "fixture count %d", pft_st_count(f));
    const char *fmt = pft_st_metadata_get(f, "format"), *gen = pft_st_metadata_get(f, "generator");
    CHECK(fmt && !strcmp(fmt, "pt") && gen && !strncmp(gen, "gen.py safetensors ", 19), "fixture metadata");

    float out[8];
    const pft_st_entry *e = pft_st_find(f, "encoder.weight");
    const float w[6] = {1.5f, -2.25f, 0.0f, (float)1e-30, (float)3.4e38, -0.125f};
    CHECK(e && e->dtype == PFT_ST_F32 && e->ndim == 2 && e->shape[0] == 2 && e->shape[1] == 3, "fixture F32 entry");
    if (e) {
        CHECK(pft_st_read_f32(ctx, f, e, out) == PFT_OK, "fixture F32 read: %s", ctx->error);
        for (int i = 0; i < 6; i++) CHECK(same_bits(out[i], w[i]), "fixture F32 [%d] = %a, want %a", i, out[i], w[i]);
    }
    e = pft_st_find(f, "head.f16");
    const float h[8] = {1.0f, -0.5f, 65504.0f, 0x1p-24f, 0x1p-14f, -0.0f, INFINITY, -INFINITY};
    CHECK(e && e->dtype == PFT_ST_F16 && e->ndim == 1 && e->shape[0] == 8, "fixture F16 entry");
    if (e) {
        CHECK(pft_st_read_f32(ctx, f, e, out) == PFT_OK, "fixture F16 read: %s", ctx->error);
        for (int i = 0; i < 8; i++) CHECK(same_bits(out[i], h[i]), "fixture F16 [%d] = %a, want %a", i, out[i], h[i]);
    }
    e = pft_st_find(f, "head.bf16");
    const float b[6] = {1.0f, -2.0f, 0.15625f, 0x1p-133f, 0x1p100f, -3.0f};
    CHECK(e && e->dtype == PFT_ST_BF16 && e->ndim == 2 && e->numel == 6, "fixture BF16 entry");
    if (e) {
        CHECK(pft_st_read_f32(ctx, f, e, out) == PFT_OK, "fixture BF16 read: %s", ctx->error);
        for (int i = 0; i < 6; i++) CHECK(same_bits(out[i], b[i]), "fixture BF16 [%d] = %a, want %a", i, out[i], b[i]);
    }
    e = pft_st_find(f, "embeddings.position_ids");
    CHECK(e && e->dtype == PFT_ST_I64 && e->numel == 4, "fixture I64 entry recognised");
    if (e) {
        int64_t ids[4];
        memcpy(ids, e->data, sizeof ids);
        CHECK(ids[0] == 0 && ids[3] == 3, "fixture I64 data pointer");
        pft_ctx_clear_error(ctx);
        CHECK(pft_st_read_f32(ctx, f, e, out) == PFT_ERR_UNSUPPORTED && strstr(ctx->error, "embeddings.position_ids") &&
                  strstr(ctx->error, "I64"),
              "I64 read_f32 refused with a message naming it: %s", ctx->error);
    }
    pft_st_close(f);
}

static void test_bad_headers(pft_ctx *ctx) {
    const char *p = tpath("bad.safetensors");
    float z[8] = {0};

    write_bytes(p, "\x05\0\0\0\0", 5);
    expect_open_fail(ctx, "short file", p, PFT_ERR_FORMAT, "5 bytes", "fewer than the 8", NULL);

    expect_open_fail(ctx, "missing file", tpath("does-not-exist.safetensors"), PFT_ERR_IO, "cannot open", NULL);

    make_file(p, "{}", NULL, 0, 1000); /* 8 + 2 bytes on disk */
    expect_open_fail(ctx, "header beyond file", p, PFT_ERR_FORMAT, "header length 1000", "(2 bytes after", NULL);

    make_file(p, "{}", NULL, 0, 200000000);
    expect_open_fail(ctx, "oversized header", p, PFT_ERR_FORMAT, "200000000", "100000000-byte limit", NULL);

    make_file(p, "{\"a\": {\"dtype\": \"F32\",", NULL, 0, -1);
    expect_open_fail(ctx, "invalid JSON", p, PFT_ERR_FORMAT, "header JSON (22 bytes) is invalid", NULL);

    make_file(p, "{} x", NULL, 0, -1);
    expect_open_fail(ctx, "trailing garbage", p, PFT_ERR_FORMAT, "trailing garbage at byte 3", NULL);

    make_file(p, "[1, 2]", NULL, 0, -1);
    expect_open_fail(ctx, "root not an object", p, PFT_ERR_FORMAT, "not an object", NULL);

    /* the data section holds 16 bytes but the entry claims 32: what a cut-off download looks like */
    make_file(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]}}", z, 16, -1);
    expect_open_fail(ctx, "truncated data", p, PFT_ERR_FORMAT, "tensor 'w'", "[0, 32]", "data section of 16 bytes",
                     "truncated", NULL);

    make_file(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[984,1000]}}", z, 32, -1);
    expect_open_fail(ctx, "out-of-range offsets", p, PFT_ERR_FORMAT, "tensor 'w'", "[984, 1000]", "32 bytes", NULL);

    make_file(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,8]}}", z, 32, -1);
    expect_open_fail(ctx, "begin > end", p, PFT_ERR_FORMAT, "tensor 'w'", "[16, 8]", "begin > end", NULL);

    make_file(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
              z, 32, -1);
    expect_open_fail(ctx, "overlap", p, PFT_ERR_FORMAT, "tensor 'b' data_offsets [8, 24] overlap tensor 'a' [0, 16]",
                     NULL);

    /* a small range nested in a large one that began earlier is caught too */
    make_file(p,
              "{\"big\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},"
              "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
              "\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[20,24]}}",
              z, 32, -1);
    expect_open_fail(ctx, "nested overlap", p, PFT_ERR_FORMAT, "'x'", "'big'", NULL);

    { /* a data section big enough that only the size disagrees */
        unsigned char big[256] = {0};
        make_file(p, "{\"bert.pooler.dense.weight\":{\"dtype\":\"F32\",\"shape\":[4,8],\"data_offsets\":[100,200]}}",
                  big, sizeof big, -1);
        expect_open_fail(ctx, "size mismatch", p, PFT_ERR_FORMAT,
                         "tensor 'bert.pooler.dense.weight': data_offsets [100, 200] give 100 bytes but shape [4, 8] "
                         "x F32 needs 128",
                         NULL);
        make_file(p, "{\"h\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,12]}}", big, sizeof big, -1);
        expect_open_fail(ctx, "size mismatch BF16", p, PFT_ERR_FORMAT, "give 12 bytes but shape [3] x BF16 needs 6",
                         NULL);
    }

    make_file(p, "{\"q\":{\"dtype\":\"Q4_K\",\"shape\":[4],\"data_offsets\":[0,16]}}", z, 32, -1);
    expect_open_fail(ctx, "unknown dtype", p, PFT_ERR_FORMAT, "tensor 'q'", "unknown dtype 'Q4_K'", NULL);

    make_file(p, "{\"q\":{\"shape\":[4],\"data_offsets\":[0,16]}}", z, 32, -1);
    expect_open_fail(ctx, "missing dtype", p, PFT_ERR_FORMAT, "tensor 'q'", "\"dtype\"", NULL);

    make_file(p, "{\"q\":{\"dtype\":\"F32\",\"shape\":[4]}}", z, 32, -1);
    expect_open_fail(ctx, "missing data_offsets", p, PFT_ERR_FORMAT, "tensor 'q'", "missing \"data_offsets\"", NULL);

    make_file(p, "{\"q\":{\"dtype\":\"F32\",\"data_offsets\":[0,16]}}", z, 32, -1);
    expect_open_fail(ctx, "missing shape", p, PFT_ERR_FORMAT, "tensor 'q'", "\"shape\"", NULL);

    make_file(p, "{\"q\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,1.5]}}", z, 32, -1);
    expect_open_fail(ctx, "fractional offset", p, PFT_ERR_FORMAT, "tensor 'q'", "[begin, end]", NULL);

    make_file(p, "{\"q\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}}", z, 32, -1);
    expect_open_fail(ctx, "one offset", p, PFT_ERR_FORMAT, "tensor 'q'", "[begin, end]", NULL);

    make_file(p, "{\"q\":{\"dtype\":\"F32\",\"shape\":[2,-2],\"data_offsets\":[0,16]}}", z, 32, -1);
    expect_open_fail(ctx, "negative dim", p, PFT_ERR_FORMAT, "tensor 'q'", "dimension 1", NULL);

    make_file(p, "{\"q\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}}", z, 32, -1);
    expect_open_fail(ctx, "shape overflow", p, PFT_ERR_FORMAT, "tensor 'q'", "[4294967296, 4294967296]", NULL);

    make_file(p, "{\"q\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", z, 32, -1);
    expect_open_fail(ctx, "too many dims", p, PFT_ERR_FORMAT, "tensor 'q'", "9 dimensions", NULL);

    make_file(p, "{\"q\":[1,2]}", z, 32, -1);
    expect_open_fail(ctx, "entry not an object", p, PFT_ERR_FORMAT, "tensor 'q'", "not a JSON object", NULL);

    make_file(p,
              "{\"d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              z, 32, -1);
    expect_open_fail(ctx, "duplicate name", p, PFT_ERR_FORMAT, "tensor 'd' appears twice", NULL);

    make_file(p, "{\"__metadata__\":{\"epoch\":3}}", NULL, 0, -1);
    expect_open_fail(ctx, "non-string metadata", p, PFT_ERR_FORMAT, "'epoch'", "not a string", NULL);

    /* valid corner cases: gaps, an empty tensor sitting inside another's range, whitespace padding */
    make_file(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"e\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
              "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[16,18]}}   \n",
              z, 32, -1);
    pft_st_file *f = pft_st_open(ctx, p);
    CHECK(f && pft_st_count(f) == 3, "gaps and empty tensors are legal: %s", ctx->error);
    pft_st_close(f);
}

static int file_equals(const char *path, const unsigned char *want, size_t n) {
    size_t got_n = 0;
    unsigned char *got = read_bytes(path, &got_n);
    int eq = got && got_n == n && !memcmp(got, want, n);
    free(got);
    return eq;
}

static void test_atomic_write(pft_ctx *ctx) {
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6};
    const int64_t s4[1] = {4}, s2[1] = {2};
    pft_st_entry_in ea = {"a", a, 1, s4}, eb = {"b", b, 1, s2};

    /* a directory that does not exist: clean IO error, nothing created */
    pft_ctx_clear_error(ctx);
    const char *nodir = tpath("no/such/dir/x.safetensors");
    CHECK(pft_st_write(ctx, nodir, 1, &ea, 0, NULL) == PFT_ERR_IO && strstr(ctx->error, nodir) &&
              strstr(ctx->error, "temporary"),
          "write into a missing directory: %s", ctx->error);
    CHECK(access(tpath("no"), F_OK) != 0, "missing directory was created");

    /* overwriting replaces the file */
    const char *target = tpath("target.safetensors");
    CHECK(pft_st_write(ctx, target, 1, &ea, 0, NULL) == PFT_OK, "first write: %s", ctx->error);
    CHECK(pft_st_write(ctx, target, 1, &eb, 0, NULL) == PFT_OK, "overwrite: %s", ctx->error);
    pft_st_file *f = pft_st_open(ctx, target);
    CHECK(f && pft_st_count(f) == 1 && pft_st_find(f, "b") && !pft_st_find(f, "a"), "overwrite did not replace");
    pft_st_close(f);
    struct stat sb;
    CHECK(stat(target, &sb) == 0 && (sb.st_mode & 0777) == 0644, "mode %o", (unsigned)(sb.st_mode & 0777));
    size_t old_n = 0;
    unsigned char *old = read_bytes(target, &old_n);

    /* bad arguments fail before anything touches the disk */
    pft_st_entry_in nul = {"broken", NULL, 1, s4};
    pft_ctx_clear_error(ctx);
    CHECK(pft_st_write(ctx, target, 1, &nul, 0, NULL) == PFT_ERR_ARG && strstr(ctx->error, "'broken'"),
          "NULL data: %s", ctx->error);
    pft_st_entry_in dup[2] = {ea, ea};
    CHECK(pft_st_write(ctx, target, 2, dup, 0, NULL) == PFT_ERR_ARG && strstr(ctx->error, "'a' given twice"),
          "duplicate names: %s", ctx->error);
    pft_st_entry_in res = {"__metadata__", a, 1, s4};
    CHECK(pft_st_write(ctx, target, 1, &res, 0, NULL) == PFT_ERR_ARG, "reserved name accepted");
    pft_st_meta twice[2] = {{"k", "1"}, {"k", "2"}};
    CHECK(pft_st_write(ctx, target, 1, &ea, 2, twice) == PFT_ERR_ARG && strstr(ctx->error, "'k' given twice"),
          "duplicate metadata keys: %s", ctx->error);
    const int64_t neg[1] = {-1};
    pft_st_entry_in ng = {"n", a, 1, neg};
    CHECK(pft_st_write(ctx, target, 1, &ng, 0, NULL) == PFT_ERR_ARG && strstr(ctx->error, "[-1]"),
          "negative dim: %s", ctx->error);
    CHECK(file_equals(target, old, old_n), "failed argument check changed the old file");
    CHECK(count_tmp_files() == 0, "temporary file left after argument errors");

    /* a failure after the temporary file exists: rename over a directory (EISDIR) */
    const char *dirtarget = tpath("is_a_dir");
    mkdir(dirtarget, 0755);
    pft_ctx_clear_error(ctx);
    CHECK(pft_st_write(ctx, dirtarget, 1, &ea, 0, NULL) == PFT_ERR_IO && strstr(ctx->error, "rename"),
          "rename over a directory: %s", ctx->error);
    CHECK(stat(dirtarget, &sb) == 0 && S_ISDIR(sb.st_mode), "directory target damaged");
    CHECK(count_tmp_files() == 0, "temporary file left after a failed rename");

    /* a failure mid-write: the file size limit stops the data after 4 KB (EFBIG instead of SIGXFSZ) */
    float *bigdata = calloc(1 << 16, sizeof *bigdata);
    const int64_t sbig[1] = {1 << 16};
    pft_st_entry_in big = {"big", bigdata, 1, sbig};
    struct rlimit saved;
    getrlimit(RLIMIT_FSIZE, &saved);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {4096, saved.rlim_max};
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        pft_ctx_clear_error(ctx);
        pft_status st = pft_st_write(ctx, target, 1, &big, 0, NULL);
        setrlimit(RLIMIT_FSIZE, &saved);
        CHECK(st == PFT_ERR_IO && strstr(ctx->error, ".tmp."), "write past the size limit: %d %s", st, ctx->error);
        CHECK(file_equals(target, old, old_n), "failed write changed the old file");
        CHECK(count_tmp_files() == 0, "temporary file left after a failed write");
    } else {
        CHECK(0, "setrlimit(RLIMIT_FSIZE) failed");
    }
    signal(SIGXFSZ, prev);
    free(bigdata);
    free(old);

    /* replacing a file keeps its mode */
    chmod(target, 0600);
    CHECK(pft_st_write(ctx, target, 1, &ea, 0, NULL) == PFT_OK, "rewrite: %s", ctx->error);
    CHECK(stat(target, &sb) == 0 && (sb.st_mode & 0777) == 0600, "mode not kept: %o", (unsigned)(sb.st_mode & 0777));

    /* a relative path (no directory part) syncs "." */
    char cwd[512];
    if (getcwd(cwd, sizeof cwd) && chdir(tmpdir) == 0) {
        CHECK(pft_st_write(ctx, "rel.safetensors", 1, &ea, 0, NULL) == PFT_OK, "relative path: %s", ctx->error);
        CHECK(access("rel.safetensors", F_OK) == 0, "relative path file missing");
        CHECK(chdir(cwd) == 0, "chdir back");
    }
}

int main(void) {
    strcpy(tmpdir, "/tmp/pft_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    pft_ctx *ctx = pft_ctx_new(1, 0);
    test_round_trip(ctx);
    test_half_exhaustive(ctx, "F16", 31, 10, f16_value);
    test_half_exhaustive(ctx, "BF16", 255, 7, bf16_value);
    test_fixture(ctx);
    test_bad_headers(ctx);
    test_atomic_write(ctx);
    pft_ctx_free(ctx);
    remove_tree(tmpdir);
    printf("safetensors: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
