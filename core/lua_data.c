/* lua_data.c - the encoded dataset of encoded.h for lua/pft/data.lua: pft.Encoded, batches gathered
 * from it (pft.Batch, lua_text.c), its cache file, the hashes of the cache key and the batch-order
 * permutation.
 *
 *     local enc = core.encode_dataset(tok, texts, pairs_or_nil, 128)  -- tok: pft.Tokenizer or a dir
 *     enc:count(), enc:lengths() -> {n}, enc:tokens(), enc:max_length(), enc:vocab_hash()
 *     local b = enc:gather({5, 2, 9}, 0)          -- pft.Batch (3, longest of the three); pad_to > 0: fixed t
 *     -- token classification: texts are words joined by spaces; tags per word, 0-based ids
 *     local w = core.encode_dataset(tok, texts, nil, 128, { words = true })
 *     w:words(5) -> {-1, 0, 0, 1, ..., -1}        -- each token's word (0-based), -1 for [CLS] / [SEP]
 *     w:token_labels(rows, tags, t[, continuation]) -> {m * t ids, -100 where ignored}   -- tags[row] = {...}
 *     w:word_argmax(rows, logits, tags) -> { {tag id per word, -1 when cut off}, ... }    -- logits (m, t, k)
 *     enc:save(path, {source_size =, source_mtime =, text_hash =})   -- true | nil, message
 *     local enc2, why = core.load_encoded(path, {vocab_hash =, max_length =, source_size =, source_mtime =,
 *                                               text_hash =, count =})   -- nil, "stale: ..." / "corrupt: ..."
 *     core.tokenizer_hash(tok), core.text_hash(texts, pairs) -> 16 hex digits
 *     core.permutation(n, seed, stream) -> {1..n shuffled}
 *
 * Hashes cross into Lua as 16 hex digits: a Lua number holds only 53 bits exactly. Rows are 1-based here
 * and 0-based in encoded.h.
 *
 * OWNERSHIP: a pft.Encoded box owns its pft_encoded (a handle on the per-state context) and frees it in
 * __gc or enc:free(), once. The box is pushed before the store is made or loaded, so a Lua error leaves
 * nothing behind. A tokenizer loaded from a directory for one call is freed before any error is raised. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "encoded.h"
#include "lua_pft.h"

#define ENCODED_MT "pft.Encoded"

typedef struct encoded_box {
    pft_encoded *e; /* NULL until made, and after free */
    pftl_state *S;
} encoded_box;

/* --- hashes ----------------------------------------------------------------------------------------- */

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

/* The tokenizer at idx: a pft.Tokenizer (*owned = 0) or a directory to load one from (*owned = 1; the
 * caller frees it). */
static pft_tokenizer *get_tokenizer(lua_State *L, int idx, int *owned) {
    *owned = 0;
    if (lua_type(L, idx) == LUA_TUSERDATA) return pftl_check_tokenizer(L, idx);
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_argerror(L, idx, lua_pushfstring(L, "pft.Tokenizer or tokenizer directory expected, got %s", luaL_typename(L, idx)));
    pft_ctx *ctx = pftl_state_get(L)->ctx;
    pft_tokenizer *tok = pft_tokenizer_load(ctx, lua_tostring(L, idx));
    if (!tok) pftl_core_error(L, ctx);
    *owned = 1;
    return tok;
}

/* core.tokenizer_hash(tok) -> 16 hex digits over the vocab, the normalization settings and special ids */
static int l_tokenizer_hash(lua_State *L) {
    int owned;
    pft_tokenizer *tok = get_tokenizer(L, 1, &owned);
    uint64_t h = pft_encoded_vocab_hash(tok);
    if (owned) pft_tokenizer_free(tok);
    push_hex(L, h);
    return 1;
}

/* core.text_hash(texts, pairs_or_nil) -> 16 hex digits over every text (and pair) and the row count.
 * Numbers in the tables hash as the strings Lua makes of them. */
static int l_text_hash(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int has_pairs = !lua_isnoneornil(L, 2);
    if (has_pairs) luaL_checktype(L, 2, LUA_TTABLE);
    int64_t n = (int64_t)lua_objlen(L, 1);
    uint64_t h = pft_encoded_text_hash_begin(n, has_pairs);
    for (int t = 1; t <= 1 + has_pairs; t++) {
        for (int64_t i = 0; i < n; i++) {
            size_t len;
            lua_rawgeti(L, t, (int)(i + 1));
            const char *s = lua_tolstring(L, -1, &len);
            if (!s) return pftl_errorf(L, "text_hash: entry %lld is not a string", (long long)i + 1);
            h = pft_encoded_text_hash_add(h, s, len);
            lua_pop(L, 1);
        }
    }
    push_hex(L, h);
    return 1;
}

/* --- pft.Encoded -------------------------------------------------------------------------------------- */

static encoded_box *push_encoded(lua_State *L, pftl_state *S) {
    encoded_box *b = lua_newuserdata(L, sizeof *b);
    b->e = NULL;
    b->S = S;
    luaL_getmetatable(L, ENCODED_MT);
    lua_setmetatable(L, -2);
    return b;
}

/* the box owns e from here on (e not NULL) */
static void own_encoded(encoded_box *b, pft_encoded *e) {
    b->e = e;
    b->S->handles++;
}

pft_encoded *pftl_check_encoded(lua_State *L, int idx) {
    encoded_box *b = luaL_checkudata(L, idx, ENCODED_MT);
    if (!b->e) luaL_argerror(L, idx, "encoded dataset used after free");
    return b->e;
}

static int e_gc(lua_State *L) {
    encoded_box *b = lua_touserdata(L, 1);
    if (b && b->e) {
        pft_encoded_free(b->e);
        b->e = NULL;
        pftl_state_unref(b->S);
    }
    return 0;
}

static int e_free(lua_State *L) {
    luaL_checkudata(L, 1, ENCODED_MT);
    return e_gc(L);
}

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

/* core.encode_dataset(tok, texts, pairs_or_nil, max_length[, {words = true}]) -> pft.Encoded */
static int l_encode_dataset(lua_State *L) {
    luaL_checktype(L, 2, LUA_TTABLE);
    int has_pairs = !lua_isnoneornil(L, 3);
    if (has_pairs) luaL_checktype(L, 3, LUA_TTABLE);
    int64_t max_length = pftl_check_int64(L, 4);
    int words = 0;
    if (!lua_isnoneornil(L, 5)) {
        luaL_checktype(L, 5, LUA_TTABLE);
        lua_getfield(L, 5, "words");
        words = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    int64_t n = (int64_t)lua_objlen(L, 2);
    lua_settop(L, 4);
    pftl_state *S = pftl_state_get(L);
    encoded_box *box = push_encoded(L, S); /* 5 */
    pft_encoded *e = pft_encoded_new(S->ctx, max_length, has_pairs);
    if (!e) return pftl_core_error(L, S->ctx);
    own_encoded(box, e);
    if (words && pft_encoded_track_words(e)) return pftl_core_error(L, S->ctx);
    if (has_pairs && (int64_t)lua_objlen(L, 3) != n)
        return pftl_errorf(L, "encode_dataset: %lld texts but %lld pairs", (long long)n, (long long)lua_objlen(L, 3));
    const char **a, **b = NULL;
    size_t *alen, *blen = NULL;
    read_strings(L, 2, "texts", n, &a, &alen);
    if (has_pairs) read_strings(L, 3, "pairs", n, &b, &blen);
    int owned;
    pft_tokenizer *tok = get_tokenizer(L, 1, &owned); /* from here on, no Lua error until it is freed */
    pft_status st = pft_encoded_add(e, tok, n, a, alen, b, blen);
    if (owned) pft_tokenizer_free(tok);
    if (st) return pftl_core_error(L, S->ctx);
    lua_pushvalue(L, 5);
    return 1;
}

static int e_count(lua_State *L) {
    lua_pushnumber(L, (lua_Number)pftl_check_encoded(L, 1)->n);
    return 1;
}

static int e_tokens(lua_State *L) {
    lua_pushnumber(L, (lua_Number)pftl_check_encoded(L, 1)->ntok);
    return 1;
}

static int e_max_length(lua_State *L) {
    lua_pushinteger(L, pftl_check_encoded(L, 1)->max_length);
    return 1;
}

static int e_vocab_hash(lua_State *L) {
    push_hex(L, pftl_check_encoded(L, 1)->vocab_hash);
    return 1;
}

/* enc:lengths() -> {tokens of row 1, ...}, specials included */
static int e_lengths(lua_State *L) {
    pft_encoded *e = pftl_check_encoded(L, 1);
    lua_createtable(L, (int)e->n, 0);
    for (int64_t i = 0; i < e->n; i++) {
        lua_pushinteger(L, (lua_Integer)pft_encoded_row_length(e, i));
        lua_rawseti(L, -2, (int)(i + 1));
    }
    return 1;
}

/* enc:gather(rows, pad_to) -> pft.Batch of the 1-based rows in that order; pad_to 0: the longest row */
static int e_gather(lua_State *L) {
    pft_encoded *e = pftl_check_encoded(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int64_t pad_to = lua_isnoneornil(L, 3) ? 0 : pftl_check_int64(L, 3);
    int64_t m = (int64_t)lua_objlen(L, 2);
    int64_t *rows = lua_newuserdata(L, (size_t)(m ? m : 1) * sizeof *rows);
    for (int64_t i = 0; i < m; i++) {
        lua_rawgeti(L, 2, (int)(i + 1));
        lua_Number v = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || v != (lua_Number)(int64_t)v || v < 1 || v > (lua_Number)e->n)
            return pftl_errorf(L, "gather: row %lld is %s, expected an integer in 1..%lld", (long long)i + 1,
                               lua_tostring(L, -1) ? lua_tostring(L, -1) : luaL_typename(L, -1), (long long)e->n);
        lua_pop(L, 1);
        rows[i] = (int64_t)v - 1;
    }
    pftl_batch_box *box = pftl_push_batch(L); /* __gc frees what a failed gather allocated */
    if (pft_encoded_gather(e, m, rows, pad_to, &box->b)) return pftl_core_error(L, e->ctx);
    box->filled = 1;
    return 1;
}

/* --- token classification ----------------------------------------------------------------------------- */

/* enc:words(row) -> the word (0-based) of each token of the 1-based row, -1 for specials */
static int e_words(lua_State *L) {
    pft_encoded *e = pftl_check_encoded(L, 1);
    int64_t r = pftl_check_int64(L, 2);
    if (!e->words) return luaL_error(L, "words: the dataset was encoded without {words = true}");
    if (r < 1 || r > e->n) return luaL_error(L, "words: row %d out of range 1..%d", (int)r, (int)e->n);
    int64_t len = pft_encoded_row_length(e, r - 1);
    lua_createtable(L, (int)len, 0);
    for (int64_t j = 0; j < len; j++) {
        lua_pushinteger(L, e->words[e->offsets[r - 1] + (uint64_t)j]);
        lua_rawseti(L, -2, (int)(j + 1));
    }
    return 1;
}

/* The 1-based rows at idx (checked against e) as 0-based int64s, in a userdata left on the stack. */
static int64_t *check_rows(lua_State *L, int idx, const pft_encoded *e, const char *what, int64_t *m) {
    luaL_checktype(L, idx, LUA_TTABLE);
    *m = (int64_t)lua_objlen(L, idx);
    int64_t *rows = lua_newuserdata(L, (size_t)(*m ? *m : 1) * sizeof *rows);
    for (int64_t i = 0; i < *m; i++) {
        lua_rawgeti(L, idx, (int)(i + 1));
        lua_Number v = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || v != (lua_Number)(int64_t)v || v < 1 || v > (lua_Number)e->n)
            pftl_errorf(L, "%s: row %lld is not an integer in 1..%lld", what, (long long)i + 1, (long long)e->n);
        lua_pop(L, 1);
        rows[i] = (int64_t)v - 1;
    }
    return rows;
}

/* The per-word tag lists tags[row] of the m rows, flattened: labels, where each row starts, how many. */
static int32_t *flat_tags(lua_State *L, int idx, const int64_t *rows, int64_t m, const char *what, int64_t **at,
                          int64_t **nwords) {
    luaL_checktype(L, idx, LUA_TTABLE);
    *at = lua_newuserdata(L, (size_t)(m + 1) * sizeof **at);
    *nwords = lua_newuserdata(L, (size_t)(m ? m : 1) * sizeof **nwords);
    int64_t total = 0;
    for (int64_t i = 0; i < m; i++) {
        lua_rawgeti(L, idx, (int)(rows[i] + 1));
        if (!lua_istable(L, -1)) pftl_errorf(L, "%s: the tags of row %lld are not a list", what, (long long)rows[i] + 1);
        (*at)[i] = total, (*nwords)[i] = (int64_t)lua_objlen(L, -1);
        total += (*nwords)[i];
        lua_pop(L, 1);
    }
    int32_t *flat = lua_newuserdata(L, (size_t)(total ? total : 1) * sizeof *flat);
    for (int64_t i = 0; i < m; i++) {
        lua_rawgeti(L, idx, (int)(rows[i] + 1));
        for (int64_t w = 0; w < (*nwords)[i]; w++) {
            lua_rawgeti(L, -1, (int)(w + 1));
            flat[(*at)[i] + w] = (int32_t)lua_tointeger(L, -1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return flat;
}

/* enc:token_labels(rows, tags, t[, continuation]) -> Lua array of m * t loss labels (see encoded.h) */
static int e_token_labels(lua_State *L) {
    pft_encoded *e = pftl_check_encoded(L, 1);
    lua_settop(L, 5); /* scratch goes above the arguments */
    int64_t m, *at, *nwords;
    int64_t *rows = check_rows(L, 2, e, "token_labels", &m);
    int64_t t = pftl_check_int64(L, 4);
    if (t < 1 || t * m > INT32_MAX) return luaL_error(L, "token_labels: batch width %d out of range", (int)t);
    int32_t *flat = flat_tags(L, 3, rows, m, "token_labels", &at, &nwords);
    int32_t *cont = NULL, k = 0;
    if (!lua_isnoneornil(L, 5)) {
        luaL_checktype(L, 5, LUA_TTABLE);
        k = (int32_t)lua_objlen(L, 5);
        cont = lua_newuserdata(L, (size_t)(k ? k : 1) * sizeof *cont);
        for (int32_t c = 0; c < k; c++) {
            lua_rawgeti(L, 5, c + 1);
            cont[c] = (int32_t)lua_tointeger(L, -1);
            lua_pop(L, 1);
        }
    }
    int32_t *out = lua_newuserdata(L, (size_t)(m * t) * sizeof *out);
    if (pft_encoded_token_labels(e, m, rows, t, flat, at, nwords, cont, k, out)) return pftl_core_error(L, e->ctx);
    lua_createtable(L, (int)(m * t), 0);
    for (int64_t i = 0; i < m * t; i++) {
        lua_pushinteger(L, out[i]);
        lua_rawseti(L, -2, (int)(i + 1));
    }
    return 1;
}

/* enc:word_argmax(rows, logits, tags) -> per row, the predicted tag id of each of its #tags[row] words
 * (-1 for a word cut off); logits a pft.Tensor (m, t, k) of the gathered batch */
static int e_word_argmax(lua_State *L) {
    pft_encoded *e = pftl_check_encoded(L, 1);
    lua_settop(L, 4);
    int64_t m, *at, *nwords;
    int64_t *rows = check_rows(L, 2, e, "word_argmax", &m);
    pft_tensor *logits = pftl_check_tensor(L, 3);
    if (logits->ndim != 3 || logits->shape[0] != m || !pft_tensor_is_contiguous(logits))
        return luaL_error(L, "word_argmax: logits must be a contiguous (%d, t, k) tensor", (int)m);
    int64_t t = logits->shape[1], k = logits->shape[2];
    flat_tags(L, 4, rows, m, "word_argmax", &at, &nwords);
    int64_t total = m ? at[m - 1] + nwords[m - 1] : 0;
    int32_t *out = lua_newuserdata(L, (size_t)(total ? total : 1) * sizeof *out);
    if (pft_encoded_word_argmax(e, m, rows, t, (int32_t)k, pft_tensor_data(logits), at, nwords, out))
        return pftl_core_error(L, e->ctx);
    lua_createtable(L, (int)m, 0);
    for (int64_t i = 0; i < m; i++) {
        lua_createtable(L, (int)nwords[i], 0);
        for (int64_t w = 0; w < nwords[i]; w++) {
            lua_pushinteger(L, out[at[i] + w]);
            lua_rawseti(L, -2, (int)(w + 1));
        }
        lua_rawseti(L, -2, (int)(i + 1));
    }
    return 1;
}

/* --- the cache file -------------------------------------------------------------------------------- */

static double field_number(lua_State *L, int idx, const char *k) {
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
    pft_encoded *e = pftl_check_encoded(L, 1);
    const char *path = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    pft_encoded_source src;
    src.size = (uint64_t)field_number(L, 3, "source_size");
    src.mtime = (int64_t)field_number(L, 3, "source_mtime");
    src.text_hash = field_hex(L, 3, "text_hash");
    if (pft_encoded_save(e, path, &src)) {
        lua_pushnil(L);
        lua_pushstring(L, pft_ctx_error(e->ctx));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.load_encoded(path, expect) -> pft.Encoded | nil, "missing: ..." / "stale: ..." / "corrupt: ..." */
static int l_load_encoded(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    pft_encoded_key key;
    key.vocab_hash = field_hex(L, 2, "vocab_hash");
    key.source.text_hash = field_hex(L, 2, "text_hash");
    key.max_length = (int32_t)field_number(L, 2, "max_length");
    key.source.size = (uint64_t)field_number(L, 2, "source_size");
    key.source.mtime = (int64_t)field_number(L, 2, "source_mtime");
    key.count = (uint64_t)field_number(L, 2, "count");
    lua_getfield(L, 2, "words");
    key.words = lua_toboolean(L, -1);
    lua_pop(L, 1);
    pftl_state *S = pftl_state_get(L);
    encoded_box *box = push_encoded(L, S);
    pft_encoded_miss why;
    pft_encoded *e = pft_encoded_load(S->ctx, path, &key, &why);
    if (e) {
        own_encoded(box, e);
        return 1;
    }
    if (why == PFT_ENCODED_FAILED) return pftl_core_error(L, S->ctx);
    lua_pushnil(L);
    lua_pushstring(L, pft_ctx_error(S->ctx));
    return 2;
}

/* --- batch order ------------------------------------------------------------------------------------ */

/* core.permutation(n, seed, stream) -> {1..n} in an order that depends only on (seed, stream) */
static int l_permutation(lua_State *L) {
    int64_t n = pftl_check_int64(L, 1);
    uint64_t seed = (uint64_t)pftl_check_int64(L, 2), stream = lua_isnoneornil(L, 3) ? 0 : (uint64_t)pftl_check_int64(L, 3);
    if (n < 0 || n > INT32_MAX) return luaL_error(L, "permutation: n out of range");
    int64_t *p = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *p);
    pft_permutation(seed, stream, n, p);
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        lua_pushinteger(L, (lua_Integer)(p[i] + 1));
        lua_rawseti(L, -2, (int)(i + 1));
    }
    return 1;
}

/* --- registration ------------------------------------------------------------------------------------ */

static int e_tostring(lua_State *L) {
    encoded_box *b = luaL_checkudata(L, 1, ENCODED_MT);
    const pft_encoded *e = b->e;
    if (!e) lua_pushliteral(L, "pft.Encoded (freed)");
    else lua_pushfstring(L, "pft.Encoded(%d rows, %d tokens, max_length %d)", (int)e->n, (int)e->ntok, e->max_length);
    return 1;
}

static const luaL_Reg encoded_methods[] = {
    {"count", e_count},   {"tokens", e_tokens},         {"lengths", e_lengths}, {"gather", e_gather},
    {"save", e_save},     {"max_length", e_max_length}, {"vocab_hash", e_vocab_hash},
    {"words", e_words},   {"token_labels", e_token_labels}, {"word_argmax", e_word_argmax},
    {"free", e_free},     {NULL, NULL}};

void pftl_register_data(lua_State *L, int module_idx) {
    pftl_new_class(L, ENCODED_MT, encoded_methods, e_gc, e_tostring);
    static const luaL_Reg fns[] = {
        {"encode_dataset", l_encode_dataset}, {"load_encoded", l_load_encoded}, {"tokenizer_hash", l_tokenizer_hash},
        {"text_hash", l_text_hash},           {"permutation", l_permutation},   {NULL, NULL}};
    pftl_set_funcs(L, module_idx, fns);
}
