/* lua_states.c - the frozen-prefix activation store of states.h for lua/pft/actcache.lua.
 *
 *     local w = core.states_writer(path, key_hex, enc, width, per_row)  -- enc: the split's pft.Encoded
 *     w:add(tensor, batch)      -- the next rows, in order: batch gives their real-token counts
 *     w:commit()                -- true | raises; w:abort() drops the temporary (also on collection)
 *     local s, why = core.states_open(path, key_hex, enc, width, per_row)  -- nil, "stale: ..." / "corrupt: ..."
 *     s:gather(rows) -> pft.Tensor [tokens of rows, width] (or [#rows, width] per row); rows 1-based
 *     s:count(), s:vectors(), s:bytes(), s:free()
 *     core.states_bytes(count, nvec, width, per_row) -> bytes on disk
 *     core.tensors_hash({t1, t2, ...}) -> 16 hex digits over their floats (the cache key's weights part)
 *     core.encoded_hash(enc) -> 16 hex digits over the rows' tokens
 *
 * OWNERSHIP: a writer box owns its pft_states_writer and the row lengths it reads (allocated after the
 * box is pushed); a store box its pft_states (the mapping). Both are freed once, by the method or by
 * __gc. Temporaries handed to core are Lua userdata, as everywhere in the binding. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "encoded.h"
#include "lua_pft.h"
#include "states.h"

#define WRITER_MT "pft.StatesWriter"
#define STATES_MT "pft.States"

typedef struct writer_box {
    pft_states_writer *w;
    int64_t *lengths;
    pftl_state *S;
} writer_box;

typedef struct states_box {
    pft_states *s;
    pftl_state *S;
} states_box;

static void push_hex(lua_State *L, uint64_t h) {
    char s[17];
    snprintf(s, sizeof s, "%016llx", (unsigned long long)h);
    lua_pushstring(L, s);
}

static uint64_t check_key(lua_State *L, int idx) {
    const char *s = luaL_checkstring(L, idx);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 16);
    if (*end || errno || !*s) pftl_errorf(L, "states: the key is not 16 hex digits: '%s'", s);
    return (uint64_t)v;
}

/* the rows' lengths of an encoded split, as int64, for a writer box to own (freed with it) */
static int64_t *row_lengths(lua_State *L, const pft_encoded *e) {
    int64_t *len = malloc(sizeof *len * (size_t)(e->n ? e->n : 1));
    if (!len) pftl_errorf(L, "states: out of memory");
    for (int64_t i = 0; i < e->n; i++) len[i] = pft_encoded_row_length(e, i);
    return len;
}

/* The arguments core.states_writer and core.states_open share: path, key, enc, width, per_row. */
typedef struct store_args {
    const char *path;
    uint64_t key;
    const pft_encoded *e;
    int64_t width;
    bool per_row;
} store_args;

static store_args check_store_args(lua_State *L) {
    store_args a = {luaL_checkstring(L, 1), check_key(L, 2), pftl_check_encoded(L, 3), pftl_check_int64(L, 4), lua_toboolean(L, 5)};
    return a;
}

/* --- the writer ------------------------------------------------------------------------------------ */

static void writer_drop(writer_box *b) {
    if (b->w) pft_states_writer_abort(b->w), pftl_state_unref(b->S);
    b->w = NULL;
    free(b->lengths), b->lengths = NULL;
}

static int w_gc(lua_State *L) {
    writer_drop(lua_touserdata(L, 1));
    return 0;
}

static writer_box *check_writer(lua_State *L) {
    writer_box *b = luaL_checkudata(L, 1, WRITER_MT);
    if (!b->w) luaL_argerror(L, 1, "states writer used after commit or abort");
    return b;
}

static int l_states_writer(lua_State *L) {
    const store_args a = check_store_args(L);
    pftl_state *S = pftl_state_get(L);
    writer_box *b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    b->S = S;
    luaL_getmetatable(L, WRITER_MT);
    lua_setmetatable(L, -2);
    b->lengths = row_lengths(L, a.e);
    if (!(b->w = pft_states_writer_open(S->ctx, a.path, a.key, a.e->n, b->lengths, a.width, a.per_row)))
        return pftl_core_error(L, S->ctx);
    S->handles++;
    return 1;
}

/* w:add(tensor, batch): tensor holds the batch's real tokens ([N, width] or [B, T, width] unpadded) or
 * one vector per row ([B, width]) */
static int w_add(lua_State *L) {
    writer_box *b = check_writer(L);
    pft_tensor *x = pftl_check_tensor(L, 2);
    pftl_batch_box *bb = pftl_check_batch(L, 3);
    if (!pft_tensor_is_contiguous(x)) return pftl_errorf(L, "states: w:add needs a contiguous tensor");
    int64_t *lens = lua_newuserdata(L, sizeof *lens * (size_t)bb->b.n);
    for (int i = 0; i < bb->b.n; i++) {
        lens[i] = 0;
        for (int t = 0; t < bb->b.t; t++) lens[i] += bb->b.mask[(size_t)i * bb->b.t + t] != 0;
    }
    int64_t width = x->shape[x->ndim - 1];
    pft_status st = pft_states_writer_add(b->w, pft_tensor_data(x), pft_tensor_numel(x) / width, bb->b.n, lens);
    if (st) { /* the writer is gone */
        b->w = NULL;
        pftl_state_unref(b->S);
        return pftl_core_error(L, b->S->ctx);
    }
    return 0;
}

static int w_commit(lua_State *L) {
    writer_box *b = check_writer(L);
    pft_status st = pft_states_writer_commit(b->w);
    b->w = NULL;
    pftl_state_unref(b->S);
    free(b->lengths), b->lengths = NULL;
    if (st) return pftl_core_error(L, b->S->ctx);
    lua_pushboolean(L, 1);
    return 1;
}

static int w_abort(lua_State *L) {
    writer_drop(luaL_checkudata(L, 1, WRITER_MT));
    return 0;
}

/* --- the store ------------------------------------------------------------------------------------- */

static int s_gc(lua_State *L) {
    states_box *b = lua_touserdata(L, 1);
    if (b && b->s) pft_states_free(b->s), b->s = NULL, pftl_state_unref(b->S);
    return 0;
}

static pft_states *check_states(lua_State *L) {
    states_box *b = luaL_checkudata(L, 1, STATES_MT);
    if (!b->s) luaL_argerror(L, 1, "states used after free");
    return b->s;
}

static int l_states_open(lua_State *L) {
    const store_args a = check_store_args(L);
    pftl_state *S = pftl_state_get(L);
    states_box *b = lua_newuserdata(L, sizeof *b);
    b->s = NULL, b->S = S;
    luaL_getmetatable(L, STATES_MT);
    lua_setmetatable(L, -2);
    int64_t *lens = lua_newuserdata(L, sizeof *lens * (size_t)(a.e->n ? a.e->n : 1));
    for (int64_t i = 0; i < a.e->n; i++) lens[i] = pft_encoded_row_length(a.e, i);
    b->s = pft_states_open(S->ctx, a.path, a.key, a.e->n, lens, a.width, a.per_row, NULL);
    lua_pop(L, 1);
    if (!b->s) {
        lua_pushnil(L);
        lua_pushstring(L, pft_ctx_error(S->ctx));
        return 2;
    }
    S->handles++;
    return 1;
}

static int s_gather(lua_State *L) {
    pft_states *s = check_states(L);
    states_box *b = lua_touserdata(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int64_t m = (int64_t)lua_objlen(L, 2);
    int64_t *rows = lua_newuserdata(L, sizeof *rows * (size_t)(m ? m : 1));
    for (int64_t i = 0; i < m; i++) {
        lua_rawgeti(L, 2, (int)(i + 1));
        rows[i] = (int64_t)lua_tonumber(L, -1) - 1;
        lua_pop(L, 1);
    }
    pftl_tensor_box *box = pftl_push_box(L, b->S);
    pft_tensor *x = pft_states_gather(s, m, rows);
    return pftl_own(L, box, x);
}

static int s_count(lua_State *L) { return lua_pushnumber(L, (lua_Number)check_states(L)->count), 1; }
static int s_vectors(lua_State *L) { return lua_pushnumber(L, (lua_Number)check_states(L)->nvec), 1; }
static int s_bytes(lua_State *L) { return lua_pushnumber(L, (lua_Number)check_states(L)->map_bytes), 1; }

/* --- hashes and sizes ------------------------------------------------------------------------------ */

static int l_states_bytes(lua_State *L) {
    lua_pushnumber(L, (lua_Number)pft_states_file_bytes(pftl_check_int64(L, 1), pftl_check_int64(L, 2),
                                                        pftl_check_int64(L, 3), lua_toboolean(L, 4)));
    return 1;
}

static int l_tensors_hash(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    uint64_t h = PFT_STATES_HASH_START;
    for (int i = 1; i <= (int)lua_objlen(L, 1); i++) {
        lua_rawgeti(L, 1, i);
        pft_tensor *t = pftl_check_tensor(L, -1);
        if (!pft_tensor_is_contiguous(t)) return pftl_errorf(L, "tensors_hash: tensor %d is not contiguous", i);
        int64_t n = pft_tensor_numel(t);
        h = pft_states_hash(h, &n, sizeof n); /* the size first: [a, b] + [c] differs from [a] + [b, c] */
        h = pft_states_hash(h, pft_tensor_data(t), sizeof(float) * (size_t)n);
        lua_pop(L, 1);
    }
    push_hex(L, h);
    return 1;
}

static int l_encoded_hash(lua_State *L) {
    push_hex(L, pft_encoded_content_hash(pftl_check_encoded(L, 1)));
    return 1;
}

void pftl_register_states(lua_State *L, int module_idx) {
    static const luaL_Reg w_methods[] = {{"add", w_add}, {"commit", w_commit}, {"abort", w_abort}, {NULL, NULL}};
    static const luaL_Reg s_methods[] = {{"gather", s_gather}, {"count", s_count},   {"vectors", s_vectors},
                                         {"bytes", s_bytes},   {"free", s_gc},       {NULL, NULL}};
    pftl_new_class(L, WRITER_MT, w_methods, w_gc, NULL);
    pftl_new_class(L, STATES_MT, s_methods, s_gc, NULL);
    static const luaL_Reg fns[] = {{"states_writer", l_states_writer}, {"states_open", l_states_open},
                                   {"states_bytes", l_states_bytes},   {"tensors_hash", l_tensors_hash},
                                   {"encoded_hash", l_encoded_hash},   {NULL, NULL}};
    pftl_set_funcs(L, module_idx, fns);
}
