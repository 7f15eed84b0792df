/* lua_common.c - what every binding file uses: the per-state context, raising core errors, argument
 * checks, pft.Tensor boxes and class tables (lua_pft.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "lua_pft.h"

#define STATE_KEY "pft.core.state"

/* --- the per-Lua-state context ----------------------------------------------------------------------- */

static void state_maybe_free(pftl_state *S) {
    if (S->closed && S->handles == 0) {
        pft_ctx_free(S->ctx);
        free(S);
    }
}

void pftl_state_unref(pftl_state *S) {
    S->handles--;
    state_maybe_free(S);
}

/* the sentinel's __gc: runs at lua_close, maybe before boxes that still hold handles */
static int state_gc(lua_State *L) {
    pftl_state **p = lua_touserdata(L, 1);
    if (p && *p) {
        (*p)->closed = 1;
        state_maybe_free(*p);
        *p = NULL;
    }
    return 0;
}

void pftl_state_open(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY);
    int fresh = lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!fresh) return; /* the module loaded again in the same state: one context per Lua state */
    pftl_state **p = lua_newuserdata(L, sizeof *p);
    *p = NULL;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    pftl_state *S = calloc(1, sizeof *S);
    pft_ctx *ctx = pft_ctx_new(0, 0); /* threads: PFT_THREADS, else every online CPU */
    if (!S || !ctx) {
        free(S);
        pft_ctx_free(ctx);
        luaL_error(L, "pft.core: cannot allocate a context");
        return;
    }
    S->ctx = ctx;
    *p = S;
    lua_setfield(L, LUA_REGISTRYINDEX, STATE_KEY);
    const char *isa = getenv("PFT_CPU_KERNELS"); /* pft_ctx_new took it if valid: a bad value is an error here */
    if (isa && *isa && pft_ctx_set_cpu_kernels(ctx, isa)) luaL_error(L, "PFT_CPU_KERNELS=%s: %s", isa, pft_ctx_error(ctx));
    const char *gemm = getenv("PFT_CPU_GEMM"); /* likewise */
    if (gemm && *gemm && pft_ctx_set_cpu_gemm(ctx, gemm)) luaL_error(L, "PFT_CPU_GEMM=%s: %s", gemm, pft_ctx_error(ctx));
    const char *mb = getenv("PFT_PACKED_MB"); /* likewise */
    if (mb && *mb && pft_ctx_set_packed_mb(ctx, mb)) luaL_error(L, "PFT_PACKED_MB=%s: %s", mb, pft_ctx_error(ctx));
}

pftl_state *pftl_state_get(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY);
    pftl_state **p = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!p || !*p) luaL_error(L, "pft.core: the context is gone (module closed)");
    return *p;
}

/* --- errors and argument checks ---------------------------------------------------------------------- */

int pftl_core_error(lua_State *L, pft_ctx *ctx) {
    const char *msg = pft_ctx_error(ctx);
    return luaL_error(L, "%s", msg[0] ? msg : "pft: unknown core error");
}

int pftl_errorf(lua_State *L, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return luaL_error(L, "%s", msg);
}

int64_t pftl_check_int64(lua_State *L, int arg) {
    lua_Number v = luaL_checknumber(L, arg);
    if (v != floor(v) || fabs(v) > 9.0e15) luaL_argerror(L, arg, lua_pushfstring(L, "integer expected, got %f", v));
    return (int64_t)v;
}

int pftl_check_dim(lua_State *L, int arg, const pft_tensor *t, const char *op) {
    int64_t d = pftl_check_int64(L, arg);
    int64_t z = d < 0 ? d + t->ndim : d - 1;
    if (z < 0 || z >= t->ndim) {
        char sh[128];
        luaL_error(L, "%s: dim %d out of range for shape %s", op, (int)d, pft_tensor_shape_str(t, sh, sizeof sh));
    }
    return (int)z;
}

/* A shape from a table at idx ({2, 3}) or, when idx holds a number, from the numbers idx, idx+1, ... */
int pftl_check_shape(lua_State *L, int idx, int64_t *shape) {
    int n;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        n = 0;
        while (lua_type(L, idx + n) == LUA_TNUMBER) {
            if (n == PFT_MAX_DIMS) luaL_error(L, "a shape has at most %d dims", PFT_MAX_DIMS);
            shape[n] = pftl_check_int64(L, idx + n);
            n++;
        }
        return n;
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    n = (int)lua_objlen(L, idx);
    if (n > PFT_MAX_DIMS) luaL_argerror(L, idx, lua_pushfstring(L, "a shape has at most %d dims, got %d", PFT_MAX_DIMS, n));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        lua_Number v = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || v != floor(v) || fabs(v) > 9.0e15)
            luaL_argerror(L, idx, lua_pushfstring(L, "shape entry %d is not an integer", i + 1));
        shape[i] = (int64_t)v;
        lua_pop(L, 1);
    }
    return n;
}

/* --- pft.Tensor boxes -------------------------------------------------------------------------------- */

pftl_tensor_box *pftl_push_box(lua_State *L, pftl_state *S) {
    pftl_tensor_box *b = lua_newuserdata(L, sizeof *b);
    b->t = NULL;
    b->S = S;
    luaL_getmetatable(L, PFTL_TENSOR_MT);
    lua_setmetatable(L, -2);
    return b;
}

int pftl_own(lua_State *L, pftl_tensor_box *box, pft_tensor *t) {
    if (!t) return pftl_core_error(L, box->S->ctx);
    box->t = t;
    box->S->handles++;
    return 1;
}

int pftl_push_tensor(lua_State *L, pftl_state *S, pft_tensor *t) {
    pftl_tensor_box *b = pftl_push_box(L, S);
    return pftl_own(L, b, pft_tensor_retain(t));
}

int pftl_is_tensor(lua_State *L, int idx) {
    if (!lua_getmetatable(L, idx)) return 0;
    luaL_getmetatable(L, PFTL_TENSOR_MT);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same && lua_type(L, idx) == LUA_TUSERDATA;
}

pft_tensor *pftl_check_tensor(lua_State *L, int idx) {
    pftl_tensor_box *b = luaL_checkudata(L, idx, PFTL_TENSOR_MT);
    if (!b->t) luaL_argerror(L, idx, "tensor used after free");
    return b->t;
}

pft_tensor *pftl_opt_tensor(lua_State *L, int idx) {
    return lua_isnoneornil(L, idx) ? NULL : pftl_check_tensor(L, idx);
}

/* --- class tables ------------------------------------------------------------------------------------ */

void pftl_set_funcs(lua_State *L, int idx, const luaL_Reg *r) {
    if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1; /* stays put while we push */
    for (; r && r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, idx, r->name);
    }
}

void pftl_new_class(lua_State *L, const char *mt, const luaL_Reg *methods, lua_CFunction gc, lua_CFunction tostring) {
    luaL_newmetatable(L, mt);
    lua_newtable(L);
    pftl_set_funcs(L, -1, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc), lua_setfield(L, -2, "__gc");
    if (tostring) lua_pushcfunction(L, tostring), lua_setfield(L, -2, "__tostring");
    lua_pushstring(L, mt), lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}
