/* lua_text.c - the tokenizer of text.h: core.tokenizer_load (pft.Tokenizer), encoded batches
 * (pft.Batch), and the UTF-8 check the data readers use.
 *
 *     local tok = core.tokenizer_load("tests/fixtures/bert/tiny_seqcls")
 *     local e = tok:encode("a funny film", "not boring", 128)     -- {ids = {...}, type_ids = {...}}
 *     local b = tok:encode_batch({"a funny film", "hello"}, {"not boring", "world"}, {max_length = 128})
 *     local B, T = b:size(); b:ids(), b:mask(), b:lengths()
 *     core.utf8_valid(s) -> true | false, 1-based offset of the first bad byte
 *
 * OWNERSHIP as in lua_pft.h: a tokenizer box counts as a handle on the per-state context. A pft.Batch
 * owns plain int32 arrays (B*T ids, type ids, mask; B lengths) and no context; pft.Encoded's gather
 * (lua_data.c) fills one too. */
#include <stdint.h>
#include <string.h>

#include "lua_pft.h"

#define TOKENIZER_MT "pft.Tokenizer"
#define BATCH_MT "pft.Batch"

typedef struct tok_box {
    pft_tokenizer *tok;
    pftl_state *S;
} tok_box;

/* --- pft.Batch ------------------------------------------------------------------------------------ */

pftl_batch_box *pftl_push_batch(lua_State *L) {
    pftl_batch_box *b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, BATCH_MT);
    lua_setmetatable(L, -2);
    return b;
}

pftl_batch_box *pftl_check_batch(lua_State *L, int idx) {
    pftl_batch_box *b = luaL_checkudata(L, idx, BATCH_MT);
    if (!b->filled) luaL_argerror(L, idx, "batch is empty (freed or never filled)");
    return b;
}

static int batch_gc(lua_State *L) {
    pftl_batch_box *b = lua_touserdata(L, 1);
    if (b) pft_batch_free(&b->b), b->filled = 0;
    return 0;
}

static int batch_free(lua_State *L) {
    pftl_batch_box *b = luaL_checkudata(L, 1, BATCH_MT);
    pft_batch_free(&b->b);
    b->filled = 0;
    return 0;
}

/* b:size() -> B, T */
static int batch_size(lua_State *L) {
    pftl_batch_box *b = pftl_check_batch(L, 1);
    lua_pushinteger(L, b->b.n);
    lua_pushinteger(L, b->b.t);
    return 2;
}

static int push_rows(lua_State *L, const pft_batch *b, const int32_t *a) {
    lua_createtable(L, b->n, 0);
    for (int i = 0; i < b->n; i++) {
        lua_createtable(L, b->t, 0);
        for (int j = 0; j < b->t; j++) {
            lua_pushinteger(L, a[(size_t)i * (size_t)b->t + (size_t)j]);
            lua_rawseti(L, -2, j + 1);
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* b:ids(), b:type_ids(), b:mask() -> nested {B}{T} tables (tests, debugging) */
static int batch_ids(lua_State *L) { const pft_batch *b = &pftl_check_batch(L, 1)->b; return push_rows(L, b, b->ids); }
static int batch_type_ids(lua_State *L) { const pft_batch *b = &pftl_check_batch(L, 1)->b; return push_rows(L, b, b->type_ids); }
static int batch_mask(lua_State *L) { const pft_batch *b = &pftl_check_batch(L, 1)->b; return push_rows(L, b, b->mask); }

static int batch_lengths(lua_State *L) {
    pftl_batch_box *b = pftl_check_batch(L, 1);
    lua_createtable(L, b->b.n, 0);
    for (int i = 0; i < b->b.n; i++) {
        lua_pushinteger(L, b->b.lengths[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* b:tokens() -> non-pad tokens in the batch, specials included */
static int batch_tokens(lua_State *L) {
    pftl_batch_box *b = pftl_check_batch(L, 1);
    lua_Number n = 0;
    for (int i = 0; i < b->b.n; i++) n += b->b.lengths[i];
    lua_pushnumber(L, n);
    return 1;
}

static int batch_tostring(lua_State *L) {
    pftl_batch_box *b = luaL_checkudata(L, 1, BATCH_MT);
    if (!b->filled) lua_pushliteral(L, "pft.Batch (empty)");
    else lua_pushfstring(L, "pft.Batch(%d x %d)", b->b.n, b->b.t);
    return 1;
}

static const luaL_Reg batch_methods[] = {
    {"size", batch_size},     {"ids", batch_ids},       {"type_ids", batch_type_ids}, {"mask", batch_mask},
    {"lengths", batch_lengths}, {"tokens", batch_tokens}, {"free", batch_free},        {NULL, NULL}};

/* --- pft.Tokenizer -------------------------------------------------------------------------------- */

static tok_box *check_tok(lua_State *L, int idx) {
    tok_box *b = luaL_checkudata(L, idx, TOKENIZER_MT);
    if (!b->tok) luaL_argerror(L, idx, "tokenizer used after free");
    return b;
}

pft_tokenizer *pftl_check_tokenizer(lua_State *L, int idx) { return check_tok(L, idx)->tok; }

static void tok_release(tok_box *b) {
    if (!b->tok) return;
    pft_tokenizer_free(b->tok);
    b->tok = NULL;
    pftl_state_unref(b->S);
}

static int tok_gc(lua_State *L) {
    tok_box *b = lua_touserdata(L, 1);
    if (b) tok_release(b);
    return 0;
}

static int tok_free(lua_State *L) {
    tok_release(luaL_checkudata(L, 1, TOKENIZER_MT));
    return 0;
}

/* core.tokenizer_load(dir): dir/vocab.txt plus tokenizer_config.json / special_tokens_map.json if present */
static int l_tokenizer_load(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    pftl_state *S = pftl_state_get(L);
    tok_box *b = lua_newuserdata(L, sizeof *b);
    b->tok = NULL;
    b->S = S;
    luaL_getmetatable(L, TOKENIZER_MT);
    lua_setmetatable(L, -2);
    pft_tokenizer *tok = pft_tokenizer_load(S->ctx, dir);
    if (!tok) return pftl_core_error(L, S->ctx);
    b->tok = tok;
    S->handles++;
    return 1;
}

static int check_max_length(lua_State *L, int arg, int pair) {
    int64_t v = pftl_check_int64(L, arg);
    if (v != 0 && (v < (pair ? 3 : 2) || v > 1000000000))
        pftl_errorf(L, "bad argument #%d (max_length must be 0 (no truncation) or >= %d, got %lld)", arg, pair ? 3 : 2,
                    (long long)v);
    return (int)v;
}

static void push_int_array(lua_State *L, const int32_t *a, int n) {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, a[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* tok:encode(text[, pair][, max_length = 0]) -> {ids = {...}, type_ids = {...}} (0-based ids) */
static int tok_encode(lua_State *L) {
    tok_box *tb = check_tok(L, 1);
    size_t alen, blen = 0;
    const char *a = luaL_checklstring(L, 2, &alen), *b = NULL;
    int ml_arg = 3;
    if (lua_type(L, 3) == LUA_TSTRING) {
        b = lua_tolstring(L, 3, &blen);
        ml_arg = 4;
    } else if (!lua_isnoneornil(L, 3) && lua_type(L, 3) != LUA_TNUMBER) {
        return luaL_typerror(L, 3, "string or number");
    } else if (lua_isnil(L, 3)) {
        ml_arg = 4;
    }
    int ml = lua_isnoneornil(L, ml_arg) ? 0 : check_max_length(L, ml_arg, b != NULL);
    pft_encoding e;
    if (pft_tokenizer_encode(tb->tok, a, alen, b, blen, ml, &e)) return pftl_core_error(L, tb->S->ctx);
    /* e points into the tokenizer's scratch: copy it out before anything else touches the tokenizer */
    lua_createtable(L, 0, 2);
    push_int_array(L, e.ids, e.n);
    lua_setfield(L, -2, "ids");
    push_int_array(L, e.type_ids, e.n);
    lua_setfield(L, -2, "type_ids");
    return 1;
}

/* Reads a Lua array of strings at idx into Lua-owned pointer and length arrays; the strings stay
 * referenced by the table, which stays on the stack. With allow_false, a `false` entry gives a NULL
 * pointer (a row of pairs without a second text). */
static int read_texts(lua_State *L, int idx, const char *what, const char ***ptrs, size_t **lens, int allow_false) {
    int n = (int)lua_objlen(L, idx);
    *ptrs = lua_newuserdata(L, sizeof **ptrs * (size_t)(n ? n : 1));
    *lens = lua_newuserdata(L, sizeof **lens * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        if (allow_false && lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
            (*ptrs)[i] = NULL, (*lens)[i] = 0;
            lua_pop(L, 1);
            continue;
        }
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "encode_batch: %s[%d] is a %s, expected a string%s", what, i + 1, luaL_typename(L, -1),
                       allow_false ? " or false" : "");
        (*ptrs)[i] = lua_tolstring(L, -1, &(*lens)[i]);
        lua_pop(L, 1);
    }
    return n;
}

/* tok:encode_batch(texts[, pairs][, opts]) -> pft.Batch. pairs[i] = false: row i is a single text
 * ("" keeps a pair: [CLS] a [SEP] [SEP], as transformers). opts: max_length (128; 0 = no truncation),
 * pad_to (0 = the longest row; else every row is padded to exactly pad_to, which needs max_length <=
 * pad_to), into (a pft.Batch whose memory is reused and which is returned). */
static int tok_encode_batch(lua_State *L) {
    tok_box *tb = check_tok(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int pairs = 3, opts = 4;
    if (lua_istable(L, 3) && lua_isnoneornil(L, 4)) {
        lua_rawgeti(L, 3, 1);
        int is_list = !lua_isnil(L, -1) || lua_objlen(L, 2) == 0;
        lua_pop(L, 1);
        if (!is_list) pairs = 0, opts = 3;
    }
    if (pairs && !lua_isnoneornil(L, pairs)) luaL_checktype(L, pairs, LUA_TTABLE);
    if (!lua_isnoneornil(L, opts)) luaL_checktype(L, opts, LUA_TTABLE);
    int use_pairs = pairs && lua_istable(L, pairs);
    int ml = 128, pad_to = 0, into = 0;
    if (!lua_isnoneornil(L, opts)) {
        lua_pushnil(L);
        while (lua_next(L, opts)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            int top = lua_gettop(L);
            if (!strcmp(k, "max_length")) ml = check_max_length(L, top, use_pairs);
            else if (!strcmp(k, "pad_to")) {
                int64_t v = pftl_check_int64(L, top);
                if (v < 0 || v > 1000000000) luaL_error(L, "encode_batch: pad_to must be >= 0");
                pad_to = (int)v;
            } else if (!strcmp(k, "into")) {
                luaL_checkudata(L, top, BATCH_MT);
            } else luaL_error(L, "encode_batch: unknown option '%s' (max_length, pad_to, into)", k);
            lua_pop(L, 1);
        }
        lua_getfield(L, opts, "into");
        if (!lua_isnil(L, -1)) into = lua_gettop(L); else lua_pop(L, 1);
    }
    if (pad_to > 0 && (ml == 0 || ml > pad_to))
        return luaL_error(L, "encode_batch: pad_to %d needs 0 < max_length <= pad_to (max_length is %d)", pad_to, ml);
    const char **a, **b = NULL;
    size_t *alen, *blen = NULL;
    int n = read_texts(L, 2, "texts", &a, &alen, 0);
    if (n == 0) return luaL_error(L, "encode_batch: texts is empty");
    if (use_pairs) {
        int nb = read_texts(L, pairs, "pairs", &b, &blen, 1);
        if (nb != n) return luaL_error(L, "encode_batch: %d texts but %d pairs", n, nb);
    }
    pftl_batch_box *bb;
    if (into) {
        bb = lua_touserdata(L, into);
        lua_pushvalue(L, into);
    } else {
        bb = pftl_push_batch(L);
    }
    bb->filled = 0;
    if (pft_tokenizer_encode_batch(tb->tok, n, a, alen, b, blen, ml, pad_to, &bb->b)) return pftl_core_error(L, tb->S->ctx);
    bb->filled = 1;
    return 1;
}

static int tok_id(lua_State *L) {
    tok_box *tb = check_tok(L, 1);
    int32_t id = pft_tokenizer_id(tb->tok, luaL_checkstring(L, 2));
    if (id < 0) lua_pushnil(L); else lua_pushinteger(L, id);
    return 1;
}

static int tok_token(lua_State *L) {
    tok_box *tb = check_tok(L, 1);
    int64_t id = pftl_check_int64(L, 2);
    const char *s = id >= 0 && id <= INT32_MAX ? pft_tokenizer_token(tb->tok, (int32_t)id) : NULL;
    if (s) lua_pushstring(L, s); else lua_pushnil(L);
    return 1;
}

static int tok_vocab_size(lua_State *L) {
    lua_pushinteger(L, pft_tokenizer_vocab_size(check_tok(L, 1)->tok));
    return 1;
}

/* tok:config() -> {lowercase, strip_accents (nil: follows lowercase), chinese_chars, model_max_length,
 * unk_id, cls_id, sep_id, pad_id, mask_id (nil when absent)} */
static int tok_config(lua_State *L) {
    pft_tokenizer *t = check_tok(L, 1)->tok;
    pft_tokenizer_config c = pft_tokenizer_get_config(t);
    lua_createtable(L, 0, 9);
    lua_pushboolean(L, c.lowercase), lua_setfield(L, -2, "lowercase");
    if (c.strip_accents >= 0) lua_pushboolean(L, c.strip_accents), lua_setfield(L, -2, "strip_accents");
    lua_pushboolean(L, c.chinese_chars), lua_setfield(L, -2, "chinese_chars");
    lua_pushinteger(L, c.model_max_length), lua_setfield(L, -2, "model_max_length");
    static const char *const names[PFT_SPECIAL_COUNT] = {"unk_id", "cls_id", "sep_id", "pad_id", "mask_id"};
    for (int i = 0; i < PFT_SPECIAL_COUNT; i++) {
        int32_t id = pft_tokenizer_special_id(t, (pft_special)i);
        if (id >= 0) lua_pushinteger(L, id), lua_setfield(L, -2, names[i]);
    }
    return 1;
}

static int tok_tostring(lua_State *L) {
    tok_box *b = luaL_checkudata(L, 1, TOKENIZER_MT);
    if (!b->tok) lua_pushliteral(L, "pft.Tokenizer (freed)");
    else lua_pushfstring(L, "pft.Tokenizer(%d tokens)", pft_tokenizer_vocab_size(b->tok));
    return 1;
}

static const luaL_Reg tok_methods[] = {
    {"encode", tok_encode},         {"encode_batch", tok_encode_batch}, {"id", tok_id},
    {"token", tok_token},           {"vocab_size", tok_vocab_size},     {"config", tok_config},
    {"free", tok_free},             {NULL, NULL}};

/* --- UTF-8 ------------------------------------------------------------------------------------------ */

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

/* --- registration --------------------------------------------------------------------------------- */

void pftl_register_text(lua_State *L, int module_idx) {
    pftl_new_class(L, TOKENIZER_MT, tok_methods, tok_gc, tok_tostring);
    pftl_new_class(L, BATCH_MT, batch_methods, batch_gc, batch_tostring);
    static const luaL_Reg fns[] = {{"tokenizer_load", l_tokenizer_load}, {"utf8_valid", l_utf8_valid}, {NULL, NULL}};
    pftl_set_funcs(L, module_idx, fns);
}
