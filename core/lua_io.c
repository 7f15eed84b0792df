/* lua_io.c - safetensors files (safetensors.h) to and from pft.Tensor.
 *
 *     local ts = core.read_safetensors("model.safetensors")       -- {name = tensor}, every dtype as F32
 *     core.save_tensors("x.safetensors", {w = t}, {note = "..."})  -- F32, atomic (pft_st_write)
 *
 * OWNERSHIP as in lua_pft.h; an open file is held by a pft.SafetensorsFile guard on the stack, so that a
 * Lua error while the tensors are read closes it. */
#include "lua_pft.h"
#include "ops.h" /* pft_tensor_contiguous */
#include "safetensors.h"

#define STFILE_MT "pft.SafetensorsFile"

static int stfile_gc(lua_State *L) {
    pft_st_file **f = lua_touserdata(L, 1);
    if (f && *f) pft_st_close(*f), *f = NULL;
    return 0;
}

/* core.read_safetensors(path) -> {name = tensor} (every tensor converted to F32) */
static int l_read_safetensors(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    pftl_state *S = pftl_state_get(L);
    pft_st_file **fp = lua_newuserdata(L, sizeof *fp); /* closes the file if a Lua error comes first */
    *fp = NULL;
    luaL_getmetatable(L, STFILE_MT);
    lua_setmetatable(L, -2);
    int guard = lua_gettop(L);
    if (!(*fp = pft_st_open(S->ctx, path))) return pftl_core_error(L, S->ctx);
    int n = pft_st_count(*fp);
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        const pft_st_entry *e = pft_st_entry_at(*fp, i);
        pftl_tensor_box *b = pftl_push_box(L, S);
        pftl_own(L, b, pft_tensor_empty(S->ctx, e->ndim, e->shape));
        if (pft_st_read_f32(S->ctx, *fp, e, pft_tensor_data(b->t))) return pftl_core_error(L, S->ctx);
        lua_setfield(L, -2, e->name);
    }
    pft_st_close(*fp);
    *fp = NULL;
    lua_remove(L, guard);
    return 1;
}

/* core.save_tensors(path, {name = tensor}, metadata_or_nil): F32 safetensors, written atomically.
 * Names are written in byte order; metadata values must be strings (numbers are converted). */
static int l_save_tensors(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    pftl_state *S = pftl_state_get(L);
    int n = 0, nm = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "save_tensors: tensor names must be strings");
        if (!pftl_is_tensor(L, -1)) luaL_error(L, "save_tensors: '%s' is a %s, expected pft.Tensor", lua_tostring(L, -2), luaL_typename(L, -1));
        n++;
        lua_pop(L, 1);
    }
    if (!lua_isnil(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
                luaL_error(L, "save_tensors: metadata must map strings to strings");
            nm++;
            lua_pop(L, 1);
        }
    }
    /* Lua-owned scratch (4): entries, 5: metadata, 6: a table keeping contiguous copies alive */
    pft_st_entry_in *in = lua_newuserdata(L, sizeof *in * (size_t)(n ? n : 1));
    pft_st_meta *meta = lua_newuserdata(L, sizeof *meta * (size_t)(nm ? nm : 1));
    lua_newtable(L);
    int keep = lua_gettop(L), k = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        pft_tensor *t = pftl_check_tensor(L, -1);
        if (!pft_tensor_is_contiguous(t)) {
            pftl_tensor_box *b = pftl_push_box(L, S);
            pftl_own(L, b, pft_tensor_contiguous(t));
            t = b->t;
            lua_rawseti(L, keep, (int)lua_objlen(L, keep) + 1);
        }
        in[k++] = (pft_st_entry_in){lua_tostring(L, -2), pft_tensor_data(t), t->ndim, t->shape};
        lua_pop(L, 1);
    }
    k = 0;
    if (!lua_isnil(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            lua_pushvalue(L, -1);
            const char *v = lua_tostring(L, -1); /* a number becomes a string in the copy, not the key's value */
            lua_rawseti(L, keep, (int)lua_objlen(L, keep) + 1);
            meta[k++] = (pft_st_meta){lua_tostring(L, -2), v};
            lua_pop(L, 1);
        }
    }
    if (pft_st_write(S->ctx, path, n, in, nm, meta)) return pftl_core_error(L, S->ctx);
    return 0;
}

void pftl_register_io(lua_State *L, int module_idx) {
    pftl_new_class(L, STFILE_MT, NULL, stfile_gc, NULL);
    static const luaL_Reg fns[] = {{"read_safetensors", l_read_safetensors}, {"save_tensors", l_save_tensors}, {NULL, NULL}};
    pftl_set_funcs(L, module_idx, fns);
}
