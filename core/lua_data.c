/* lua_data.c - tokenized datasets for lua/pft/data.lua: a split encoded once into a C-side ragged store
 * (pft.Encoded), batches (pft.Batch, as lua_bert.c defines it) gathered from it with dynamic padding, a binary cache file, and the small
 * helpers the reader needs to stay out of per-byte Lua loops.
 *
 *     local enc = core.encode_dataset(tok, texts, pairs_or_nil, 128)  -- tok: pft.Tokenizer or a dir
 *     enc:count(), enc:lengths() -> {n}, enc:tokens()
 *     local b = enc:gather({5, 2, 9}, 0)          -- pft.Batch (3, longest of the three); pad_to > 0: fixed t
 *     enc:save(path, {source_size =, source_mtime =, text_hash =})   -- tmp file + rename
 *     local enc2, why = core.load_encoded(path, {vocab_hash =, max_length =, source_size =, source_mtime =,
 *                                               text_hash =, count =})   -- nil, "stale: ..." / "corrupt: ..."
 *     core.tokenizer_hash(tok), core.text_hash(texts, pairs), core.file_stat(path) -> size, mtime,
 *     core.permutation(n, seed, stream) -> {1..n shuffled}, core.utf8_valid(s) -> true | false, offset
 *
 * OWNERSHIP: a pft.Encoded owns its malloc'ed arrays and frees them in __gc (or enc:free()), once. The box
 * is pushed before anything is allocated, so a Lua error leaves nothing behind. A tokenizer loaded from a
 * directory for one call is freed before any error is raised.
 *
 * Rows are encoded exactly as pft_tokenizer_encode_batch encodes them (chunks of rows through it, each row
 * cut to its length), so enc:gather(rows) equals tok:encode_batch(texts of rows) id for id.
 *
 * Cache file (native byte order; a foreign or truncated file fails the magic, size or checksum test and is
 * reported corrupt): "PFTENC\0\0", u32 version, u32 0, u64 vocab_hash, i32 max_length, i32 pad_id,
 * u64 count, u64 ntok, u64 source_size, i64 source_mtime, u64 text_hash, u64 checksum (FNV-1a of the body);
 * body: u64 offsets[count + 1], i32 ids[ntok], u8 type_ids[ntok]. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lua_pft.h"
#include "text.h"

#define ENCODED_MT "pft.Encoded"

/* pft.Batch and pft.Tokenizer are registered by lua_bert.c; their box layouts are in lua_pft.h. */
#define BATCH_MT PFTL_BATCH_MT
#define TOKENIZER_MT PFTL_TOKENIZER_MT
typedef pftl_batch_box batch_box;
typedef pftl_tok_box tok_box;
#define CACHE_MAGIC "PFTENC\0\0"
#define CACHE_VERSION 1u
#define ENCODE_CHUNK 512

typedef struct encoded {
    int64_t n, ntok, cap_tok;
    uint64_t *offsets;  /* (n + 1): row i is [offsets[i], offsets[i + 1]) */
    int32_t *ids;       /* (ntok) */
    uint8_t *type_ids;  /* (ntok) 0 or 1 */
    int32_t max_length, pad_id;
    uint64_t vocab_hash;
    int freed;
} encoded;

/* --- hashing (FNV-1a 64) ---------------------------------------------------------------------------- */

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME 1099511628211ull

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * FNV_PRIME;
    return h;
}

static uint64_t fnv_u64(uint64_t h, uint64_t v) { return fnv(h, &v, sizeof v); }

static void push_hex(lua_State *L, uint64_t h) {
    char s[17];
    snprintf(s, sizeof s, "%016llx", (unsigned long long)h);
    lua_pushstring(L, s);
}

static uint64_t check_hex(lua_State *L, int idx, const char *what) {
    const char *s = lua_tostring(L, idx);
    char *end;
    if (!s) luaL_error(L, "expected '%s' to be a hex string", what);
    errno = 0;
    unsigned long long v = strtoull(s, &end, 16);
    if (*end || errno || !*s) luaL_error(L, "'%s' is not a hex hash: '%s'", what, s);
    return (uint64_t)v;
}

/* --- tokenizers --------------------------------------------------------------------------------------- */

/* The tokenizer at idx: a pft.Tokenizer (*owned = 0) or a directory to load one from (*owned = 1; the
 * caller frees it). */
static pft_tokenizer *get_tokenizer(lua_State *L, int idx, int *owned) {
    *owned = 0;
    if (lua_type(L, idx) == LUA_TUSERDATA) {
        tok_box *b = luaL_checkudata(L, idx, TOKENIZER_MT);
        if (!b->tok) luaL_argerror(L, idx, "tokenizer used after free");
        return b->tok;
    }
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_argerror(L, idx, lua_pushfstring(L, "pft.Tokenizer or tokenizer directory expected, got %s", luaL_typename(L, idx)));
    pft_ctx *ctx = pftl_state_get(L)->ctx;
    pft_tokenizer *tok = pft_tokenizer_load(ctx, lua_tostring(L, idx));
    if (!tok) pftl_core_error(L, ctx);
    *owned = 1;
    return tok;
}

static uint64_t tokenizer_hash(const pft_tokenizer *tok) {
    uint64_t h = FNV_OFFSET;
    int nv = pft_tokenizer_vocab_size(tok);
    for (int i = 0; i < nv; i++) {
        const char *s = pft_tokenizer_token(tok, i);
        h = fnv(h, s, strlen(s) + 1);
    }
    pft_tokenizer_config c = pft_tokenizer_get_config(tok);
    h = fnv_u64(h, (uint64_t)(int64_t)c.lowercase);
    h = fnv_u64(h, (uint64_t)(int64_t)c.strip_accents);
    h = fnv_u64(h, (uint64_t)(int64_t)c.chinese_chars);
    for (int s = 0; s < PFT_SPECIAL_COUNT; s++) h = fnv_u64(h, (uint64_t)(int64_t)pft_tokenizer_special_id(tok, (pft_special)s));
    return h;
}

/* core.tokenizer_hash(tok) -> 16 hex digits over the vocab, the normalization settings and special ids */
static int l_tokenizer_hash(lua_State *L) {
    int owned;
    pft_tokenizer *tok = get_tokenizer(L, 1, &owned);
    uint64_t h = tokenizer_hash(tok);
    if (owned) pft_tokenizer_free(tok);
    push_hex(L, h);
    return 1;
}

/* --- reading string arrays ------------------------------------------------------------------------ */

/* n strings of the table at idx into Lua-owned arrays pushed on the stack (pointers stay valid while the
 * table is on the stack). Raises naming the entry when one is not a string. */
static void read_strings(lua_State *L, int idx, const char *what, int64_t n, const char ***s, size_t **len) {
    *s = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof **s);
    *len = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof **len);
    for (int64_t i = 0; i < n; i++) {
        lua_rawgeti(L, idx, (int)(i + 1));
        if (lua_type(L, -1) != LUA_TSTRING)
            pftl_errorf(L, "%s[%lld] is a %s, expected a string", what, (long long)i + 1, luaL_typename(L, -1));
        (*s)[i] = lua_tolstring(L, -1, &(*len)[i]);
        lua_pop(L, 1); /* the table keeps the string alive */
    }
}

/* core.text_hash(texts, pairs_or_nil) -> 16 hex digits over every text (and pair) and the row count */
static int l_text_hash(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int has_pairs = !lua_isnoneornil(L, 2);
    if (has_pairs) luaL_checktype(L, 2, LUA_TTABLE);
    int64_t n = (int64_t)lua_objlen(L, 1);
    uint64_t h = fnv_u64(FNV_OFFSET, (uint64_t)n);
    h = fnv_u64(h, (uint64_t)has_pairs);
    for (int t = 1; t <= 1 + has_pairs; t++) {
        for (int64_t i = 0; i < n; i++) {
            size_t len;
            lua_rawgeti(L, t, (int)(i + 1));
            const char *s = lua_tolstring(L, -1, &len);
            if (!s) return pftl_errorf(L, "text_hash: entry %lld is not a string", (long long)i + 1);
            h = fnv(fnv_u64(h, (uint64_t)len), s, len);
            lua_pop(L, 1);
        }
    }
    push_hex(L, h);
    return 1;
}

/* --- pft.Encoded -------------------------------------------------------------------------------------- */

static encoded *push_encoded(lua_State *L) {
    encoded *e = lua_newuserdata(L, sizeof *e);
    memset(e, 0, sizeof *e);
    luaL_getmetatable(L, ENCODED_MT);
    lua_setmetatable(L, -2);
    return e;
}

static encoded *check_encoded(lua_State *L, int idx) {
    encoded *e = luaL_checkudata(L, idx, ENCODED_MT);
    if (e->freed) luaL_argerror(L, idx, "encoded dataset used after free");
    return e;
}

static void encoded_release(encoded *e) {
    free(e->offsets);
    free(e->ids);
    free(e->type_ids);
    e->offsets = NULL, e->ids = NULL, e->type_ids = NULL;
    e->freed = 1;
}

static int e_gc(lua_State *L) {
    encoded *e = lua_touserdata(L, 1);
    if (e && !e->freed) encoded_release(e);
    return 0;
}

static int e_free(lua_State *L) {
    luaL_checkudata(L, 1, ENCODED_MT);
    return e_gc(L);
}

static int reserve_tokens(encoded *e, int64_t need) {
    if (need <= e->cap_tok) return 0;
    int64_t cap = e->cap_tok ? e->cap_tok : 4096;
    while (cap < need) cap *= 2;
    int32_t *ids = realloc(e->ids, (size_t)cap * sizeof *ids);
    if (!ids) return -1;
    e->ids = ids;
    uint8_t *ty = realloc(e->type_ids, (size_t)cap);
    if (!ty) return -1;
    e->type_ids = ty;
    e->cap_tok = cap;
    return 0;
}

/* core.encode_dataset(tok, texts, pairs_or_nil, max_length) -> pft.Encoded */
static int l_encode_dataset(lua_State *L) {
    luaL_checktype(L, 2, LUA_TTABLE);
    int has_pairs = !lua_isnoneornil(L, 3);
    if (has_pairs) luaL_checktype(L, 3, LUA_TTABLE);
    int64_t max_length = pftl_check_int64(L, 4);
    int64_t n = (int64_t)lua_objlen(L, 2);
    if (max_length < (has_pairs ? 3 : 2) || max_length > 1 << 20)
        return pftl_errorf(L, "encode_dataset: max_length %lld out of range (at least %d)", (long long)max_length,
                           has_pairs ? 3 : 2);
    if (n > INT32_MAX) return luaL_error(L, "encode_dataset: too many rows");
    if (has_pairs && (int64_t)lua_objlen(L, 3) != n)
        return pftl_errorf(L, "encode_dataset: %lld texts but %lld pairs", (long long)n, (long long)lua_objlen(L, 3));
    const char **a, **b = NULL;
    size_t *alen, *blen = NULL;
    read_strings(L, 2, "texts", n, &a, &alen);
    if (has_pairs) read_strings(L, 3, "pairs", n, &b, &blen);

    encoded *e = push_encoded(L);
    e->max_length = (int32_t)max_length;
    e->offsets = malloc((size_t)(n + 1) * sizeof *e->offsets);
    if (!e->offsets) return luaL_error(L, "encode_dataset: out of memory");
    e->offsets[0] = 0;

    int owned;
    pft_tokenizer *tok = get_tokenizer(L, 1, &owned); /* from here on, no Lua error until it is freed */
    pft_ctx *ctx = pftl_state_get(L)->ctx;
    e->vocab_hash = tokenizer_hash(tok);
    e->pad_id = pft_tokenizer_special_id(tok, PFT_SPECIAL_PAD);
    pft_batch tmp = {0};
    const char *err = NULL;
    char msg[512];
    for (int64_t at = 0; at < n && !err; at += ENCODE_CHUNK) {
        int m = (int)(n - at < ENCODE_CHUNK ? n - at : ENCODE_CHUNK);
        if (pft_tokenizer_encode_batch(tok, m, a + at, alen + at, has_pairs ? b + at : NULL, has_pairs ? blen + at : NULL,
                                       (int)max_length, 0, &tmp)) {
            snprintf(msg, sizeof msg, "%s", pft_ctx_error(ctx));
            err = msg;
            break;
        }
        int64_t add = 0;
        for (int i = 0; i < m; i++) add += tmp.lengths[i];
        if (reserve_tokens(e, e->ntok + add)) {
            err = "encode_dataset: out of memory";
            break;
        }
        for (int i = 0; i < m; i++) {
            const int32_t *ids = tmp.ids + (size_t)i * tmp.t, *ty = tmp.type_ids + (size_t)i * tmp.t;
            int len = tmp.lengths[i];
            memcpy(e->ids + e->ntok, ids, (size_t)len * sizeof *ids);
            for (int j = 0; j < len; j++) e->type_ids[e->ntok + j] = (uint8_t)ty[j];
            e->ntok += len;
            e->offsets[at + i + 1] = (uint64_t)e->ntok;
        }
    }
    pft_batch_free(&tmp);
    if (owned) pft_tokenizer_free(tok);
    if (err) return luaL_error(L, "%s", err);
    e->n = n;
    return 1;
}

static int e_count(lua_State *L) {
    lua_pushnumber(L, (lua_Number)check_encoded(L, 1)->n);
    return 1;
}

static int e_tokens(lua_State *L) {
    lua_pushnumber(L, (lua_Number)check_encoded(L, 1)->ntok);
    return 1;
}

static int e_max_length(lua_State *L) {
    lua_pushinteger(L, check_encoded(L, 1)->max_length);
    return 1;
}

static int e_vocab_hash(lua_State *L) {
    push_hex(L, check_encoded(L, 1)->vocab_hash);
    return 1;
}

/* enc:lengths() -> {tokens of row 1, ...}, specials included */
static int e_lengths(lua_State *L) {
    encoded *e = check_encoded(L, 1);
    lua_createtable(L, (int)e->n, 0);
    for (int64_t i = 0; i < e->n; i++) {
        lua_pushinteger(L, (lua_Integer)(e->offsets[i + 1] - e->offsets[i]));
        lua_rawseti(L, -2, (int)(i + 1));
    }
    return 1;
}

/* enc:gather(rows, pad_to) -> pft.Batch of the 1-based rows in that order; pad_to 0: the longest row */
static int e_gather(lua_State *L) {
    encoded *e = check_encoded(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int64_t pad_to = lua_isnoneornil(L, 3) ? 0 : pftl_check_int64(L, 3);
    int64_t m = (int64_t)lua_objlen(L, 2);
    if (m < 1) return luaL_error(L, "gather: no rows");
    if (m > INT32_MAX / 2) return luaL_error(L, "gather: too many rows");
    int64_t *rows = lua_newuserdata(L, (size_t)m * sizeof *rows);
    int64_t t = 0;
    for (int64_t i = 0; i < m; i++) {
        lua_rawgeti(L, 2, (int)(i + 1));
        lua_Number v = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || v != (lua_Number)(int64_t)v || v < 1 || v > (lua_Number)e->n)
            return pftl_errorf(L, "gather: row %lld is %s, expected an integer in 1..%lld", (long long)i + 1,
                               lua_tostring(L, -1) ? lua_tostring(L, -1) : luaL_typename(L, -1), (long long)e->n);
        lua_pop(L, 1);
        rows[i] = (int64_t)v - 1;
        int64_t len = (int64_t)(e->offsets[rows[i] + 1] - e->offsets[rows[i]]);
        if (len > t) t = len;
    }
    if (pad_to > 0) {
        if (pad_to < t) return pftl_errorf(L, "gather: pad_to %lld is shorter than the longest row (%lld)", (long long)pad_to, (long long)t);
        t = pad_to;
    }
    if (t * m > INT32_MAX) return luaL_error(L, "gather: batch too large");
    batch_box *box = lua_newuserdata(L, sizeof *box);
    memset(box, 0, sizeof *box);
    luaL_getmetatable(L, BATCH_MT);
    if (lua_isnil(L, -1)) return luaL_error(L, "gather: pft.Batch is not registered (lua_bert.c)");
    lua_setmetatable(L, -2);
    pft_batch *b = &box->b;
    size_t cells = (size_t)(t * m);
    b->ids = malloc(cells * sizeof *b->ids);
    b->type_ids = malloc(cells * sizeof *b->type_ids);
    b->mask = malloc(cells * sizeof *b->mask);
    b->lengths = malloc((size_t)m * sizeof *b->lengths);
    b->cap_rows = (size_t)m, b->cap_cells = cells;
    if (!b->ids || !b->type_ids || !b->mask || !b->lengths) return luaL_error(L, "gather: out of memory"); /* __gc frees */
    b->n = (int)m, b->t = (int)t;
    for (int64_t i = 0; i < m; i++) {
        uint64_t off = e->offsets[rows[i]];
        int len = (int)(e->offsets[rows[i] + 1] - off);
        int32_t *ids = b->ids + i * t, *ty = b->type_ids + i * t, *mask = b->mask + i * t;
        memcpy(ids, e->ids + off, (size_t)len * sizeof *ids);
        for (int j = 0; j < len; j++) ty[j] = e->type_ids[off + j], mask[j] = 1;
        for (int64_t j = len; j < t; j++) ids[j] = e->pad_id, ty[j] = 0, mask[j] = 0;
        b->lengths[i] = len;
    }
    box->filled = 1;
    return 1;
}

/* --- the cache file -------------------------------------------------------------------------------- */

typedef struct cache_header {
    char magic[8];
    uint32_t version, zero;
    uint64_t vocab_hash;
    int32_t max_length, pad_id;
    uint64_t count, ntok, source_size;
    int64_t source_mtime;
    uint64_t text_hash, checksum;
} cache_header;

static uint64_t body_checksum(const encoded *e) {
    uint64_t h = fnv(FNV_OFFSET, e->offsets, (size_t)(e->n + 1) * sizeof *e->offsets);
    h = fnv(h, e->ids, (size_t)e->ntok * sizeof *e->ids);
    return fnv(h, e->type_ids, (size_t)e->ntok);
}

static double opt_field_number(lua_State *L, int idx, const char *k) {
    lua_getfield(L, idx, k);
    if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "encoded cache: field '%s' must be a number", k);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

static uint64_t field_hex(lua_State *L, int idx, const char *k) {
    lua_getfield(L, idx, k);
    uint64_t v = check_hex(L, -1, k);
    lua_pop(L, 1);
    return v;
}

/* enc:save(path, {source_size =, source_mtime =, text_hash =}) -> true | nil, message (written to a
 * temporary file beside path, then renamed over it) */
static int e_save(lua_State *L) {
    encoded *e = check_encoded(L, 1);
    const char *path = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    cache_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CACHE_MAGIC, 8);
    h.version = CACHE_VERSION;
    h.vocab_hash = e->vocab_hash;
    h.max_length = e->max_length, h.pad_id = e->pad_id;
    h.count = (uint64_t)e->n, h.ntok = (uint64_t)e->ntok;
    h.source_size = (uint64_t)opt_field_number(L, 3, "source_size");
    h.source_mtime = (int64_t)opt_field_number(L, 3, "source_mtime");
    h.text_hash = field_hex(L, 3, "text_hash");
    h.checksum = body_checksum(e);
    const char *tmp = lua_pushfstring(L, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", tmp, strerror(errno));
        return 2;
    }
    int ok = fwrite(&h, sizeof h, 1, f) == 1 &&
             fwrite(e->offsets, sizeof *e->offsets, (size_t)e->n + 1, f) == (size_t)e->n + 1 &&
             fwrite(e->ids, sizeof *e->ids, (size_t)e->ntok, f) == (size_t)e->ntok &&
             fwrite(e->type_ids, 1, (size_t)e->ntok, f) == (size_t)e->ntok;
    int err = errno;
    if (fclose(f)) ok = 0, err = errno;
    if (ok && rename(tmp, path)) ok = 0, err = errno;
    if (!ok) {
        remove(tmp);
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(err));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int load_fail(lua_State *L, FILE *f, const char *fmt, const char *path) {
    if (f) fclose(f);
    lua_pushnil(L);
    lua_pushfstring(L, fmt, path);
    return 2;
}

/* core.load_encoded(path, expect) -> pft.Encoded | nil, "missing: ..." / "stale: ..." / "corrupt: ..." */
static int l_load_encoded(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    uint64_t want_vocab = field_hex(L, 2, "vocab_hash"), want_text = field_hex(L, 2, "text_hash");
    int32_t want_max = (int32_t)opt_field_number(L, 2, "max_length");
    uint64_t want_size = (uint64_t)opt_field_number(L, 2, "source_size");
    int64_t want_mtime = (int64_t)opt_field_number(L, 2, "source_mtime");
    uint64_t want_count = (uint64_t)opt_field_number(L, 2, "count");
    FILE *f = fopen(path, "rb");
    if (!f) return load_fail(L, NULL, "missing: %s", path);
    cache_header h;
    if (fread(&h, sizeof h, 1, f) != 1 || memcmp(h.magic, CACHE_MAGIC, 8) || h.zero)
        return load_fail(L, f, "corrupt: %s: bad header", path);
    if (h.version != CACHE_VERSION) return load_fail(L, f, "stale: %s: another format version", path);
    if (h.vocab_hash != want_vocab) return load_fail(L, f, "stale: %s: another tokenizer", path);
    if (h.max_length != want_max) return load_fail(L, f, "stale: %s: another max_length", path);
    if (h.source_size != want_size || h.source_mtime != want_mtime)
        return load_fail(L, f, "stale: %s: the source file changed", path);
    if (h.text_hash != want_text || h.count != want_count) return load_fail(L, f, "stale: %s: other texts", path);
    struct stat st;
    uint64_t body = (h.count + 1) * 8 + h.ntok * 5;
    if (h.count > (1ull << 40) || h.ntok > (1ull << 40) || fstat(fileno(f), &st) ||
        (uint64_t)st.st_size != sizeof h + body)
        return load_fail(L, f, "corrupt: %s: wrong size", path);
    encoded *e = push_encoded(L);
    e->n = (int64_t)h.count, e->ntok = e->cap_tok = (int64_t)h.ntok;
    e->max_length = h.max_length, e->pad_id = h.pad_id, e->vocab_hash = h.vocab_hash;
    e->offsets = malloc((size_t)(e->n + 1) * sizeof *e->offsets);
    e->ids = malloc((size_t)(e->ntok ? e->ntok : 1) * sizeof *e->ids);
    e->type_ids = malloc((size_t)(e->ntok ? e->ntok : 1));
    if (!e->offsets || !e->ids || !e->type_ids) {
        fclose(f);
        return luaL_error(L, "load_encoded: out of memory");
    }
    int ok = fread(e->offsets, sizeof *e->offsets, (size_t)e->n + 1, f) == (size_t)e->n + 1 &&
             fread(e->ids, sizeof *e->ids, (size_t)e->ntok, f) == (size_t)e->ntok &&
             fread(e->type_ids, 1, (size_t)e->ntok, f) == (size_t)e->ntok;
    fclose(f);
    if (!ok || body_checksum(e) != h.checksum) {
        encoded_release(e);
        return load_fail(L, NULL, "corrupt: %s: checksum mismatch", path);
    }
    int sane = e->offsets[0] == 0 && e->offsets[e->n] == (uint64_t)e->ntok;
    for (int64_t i = 0; sane && i < e->n; i++)
        sane = e->offsets[i + 1] >= e->offsets[i] && e->offsets[i + 1] - e->offsets[i] <= (uint64_t)e->max_length;
    if (!sane) {
        encoded_release(e);
        return load_fail(L, NULL, "corrupt: %s: bad offsets", path);
    }
    return 1;
}

/* --- small helpers --------------------------------------------------------------------------------- */

/* core.file_stat(path) -> size, mtime (seconds) | nil, message */
static int l_file_stat(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st)) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushnumber(L, (lua_Number)st.st_size);
    lua_pushnumber(L, (lua_Number)st.st_mtime);
    return 2;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* core.permutation(n, seed, stream) -> {1..n} in an order that depends only on (seed, stream):
 * Fisher-Yates driven by splitmix64 */
static int l_permutation(lua_State *L) {
    int64_t n = pftl_check_int64(L, 1);
    uint64_t seed = (uint64_t)pftl_check_int64(L, 2), stream = lua_isnoneornil(L, 3) ? 0 : (uint64_t)pftl_check_int64(L, 3);
    if (n < 0 || n > INT32_MAX) return luaL_error(L, "permutation: n out of range");
    uint64_t s = seed;
    s = splitmix64(&s) ^ (stream * 0xd1b54a32d192ed03ull);
    int32_t *p = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = (int32_t)(i + 1);
    for (int64_t i = n - 1; i > 0; i--) {
        uint64_t j = ((splitmix64(&s) >> 32) * (uint64_t)(i + 1)) >> 32;
        int32_t x = p[i];
        p[i] = p[j], p[j] = x;
    }
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        lua_pushinteger(L, p[i]);
        lua_rawseti(L, -2, (int)(i + 1));
    }
    return 1;
}

/* Byte offset (0-based) of the first ill-formed UTF-8 sequence in s, or -1 (RFC 3629: no surrogates,
 * no overlongs, nothing above U+10FFFF). */
static int64_t utf8_invalid_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t k;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) k = 1;
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return (int64_t)i;
        if (i + k >= n) return (int64_t)i; /* truncated at the end */
        if (s[i + 1] < lo || s[i + 1] > hi) return (int64_t)i;
        for (size_t j = 2; j <= k; j++) if (s[i + j] < 0x80 || s[i + j] > 0xBF) return (int64_t)i;
        i += k + 1;
    }
    return -1;
}

/* core.utf8_valid(s) -> true | false, 1-based byte offset of the first bad sequence */
static int l_utf8_valid(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int64_t at = utf8_invalid_at((const unsigned char *)s, n);
    lua_pushboolean(L, at < 0);
    if (at < 0) return 1;
    lua_pushnumber(L, (lua_Number)at + 1);
    return 2;
}

/* --- registration ------------------------------------------------------------------------------------ */

static const luaL_Reg module_fns[] = {
    {"encode_dataset", l_encode_dataset}, {"load_encoded", l_load_encoded}, {"tokenizer_hash", l_tokenizer_hash},
    {"text_hash", l_text_hash},           {"file_stat", l_file_stat},       {"permutation", l_permutation},
    {"utf8_valid", l_utf8_valid},         {NULL, NULL}};

static const luaL_Reg encoded_methods[] = {
    {"count", e_count},   {"tokens", e_tokens},         {"lengths", e_lengths}, {"gather", e_gather},
    {"save", e_save},     {"max_length", e_max_length}, {"vocab_hash", e_vocab_hash},
    {"free", e_free},     {NULL, NULL}};

static int e_tostring(lua_State *L) {
    encoded *e = luaL_checkudata(L, 1, ENCODED_MT);
    if (e->freed) lua_pushliteral(L, "pft.Encoded (freed)");
    else lua_pushfstring(L, "pft.Encoded(%d rows, %d tokens, max_length %d)", (int)e->n, (int)e->ntok, e->max_length);
    return 1;
}

void pftl_register_data(lua_State *L, int module_idx) {
    for (const luaL_Reg *r = module_fns; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, module_idx, r->name);
    }
    luaL_newmetatable(L, ENCODED_MT);
    int meta = lua_gettop(L);
    lua_newtable(L);
    for (const luaL_Reg *r = encoded_methods; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
    lua_setfield(L, meta, "__index");
    lua_pushcfunction(L, e_gc), lua_setfield(L, meta, "__gc");
    lua_pushcfunction(L, e_tostring), lua_setfield(L, meta, "__tostring");
    lua_pushliteral(L, ENCODED_MT), lua_setfield(L, meta, "__name");
    lua_pop(L, 1);
}
