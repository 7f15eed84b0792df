/* lua_train.c - the C helpers of lua/pft/train.lua: gradient clipping, the dropout RNG position,
 * optimizer state for checkpoints, tensor files, terminal and interrupt queries.
 *
 *     local norm = core.clip_grad_norm(params, 1.0)         -- as torch.nn.utils.clip_grad_norm_
 *     local seed, counter = core.rng_state(); core.set_rng_state(seed, counter)
 *     local st = opt:state()                                 -- {[name] = {step = n, m = tensor, v = tensor}}
 *     opt:load_state(st)
 *     core.save_tensors("x.safetensors", {w = t}, {note = "..."})   -- atomic (pft_st_write)
 *     core.isatty(1); core.clock(); core.interrupted(); core.watch_interrupts(true); core.remove_dir(path)
 *
 * Interrupts: the host binary (core/pft_main.c) owns the SIGINT flag and publishes its address in the
 * registry under INTERRUPT_KEY as a light userdata pointing at two sig_atomic_t: [0] the number of
 * SIGINTs received while watched, [1] whether a trainer watches (armed). In plain luajit (pft/core.so)
 * the key is absent: core.watch_interrupts returns false and core.interrupted() is always false.
 * Ownership: as lua_pft.h; opt:state() returns new tensors holding copies of the optimizer's buffers. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lua_pft.h"
#include "safetensors.h"

#define INTERRUPT_KEY "pft.host.interrupt" /* set by core/pft_main.c */

/* core.clip_grad_norm(params, max_norm) -> the global gradient norm before clipping */
static int l_clip_grad_norm(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Number max_norm = luaL_checknumber(L, 2);
    luaL_argcheck(L, max_norm > 0 && isfinite(max_norm), 2, "max_norm must be a finite number > 0");
    int n = (int)lua_objlen(L, 1);
    pft_tensor **params = lua_newuserdata(L, sizeof *params * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        if (!pftl_is_tensor(L, -1)) luaL_error(L, "clip_grad_norm: entry %d is a %s, expected pft.Tensor", i + 1, luaL_typename(L, -1));
        params[i] = pftl_check_tensor(L, -1);
        lua_pop(L, 1);
    }
    lua_pushnumber(L, pft_clip_grad_norm(n, params, max_norm));
    return 1;
}

/* Counters are exact in a Lua number below 2^53; seeds and counters in pft stay far below that. */
#define EXACT_LIMIT 9007199254740992.0

static int l_rng_state(lua_State *L) {
    pft_ctx *ctx = pftl_state_get(L)->ctx;
    if ((double)ctx->seed >= EXACT_LIMIT || (double)ctx->rng_counter >= EXACT_LIMIT)
        return luaL_error(L, "rng_state: seed or counter beyond 2^53 cannot be saved exactly");
    lua_pushnumber(L, (lua_Number)ctx->seed);
    lua_pushnumber(L, (lua_Number)ctx->rng_counter);
    return 2;
}

static uint64_t check_u53(lua_State *L, int arg) {
    lua_Number v = luaL_checknumber(L, arg);
    luaL_argcheck(L, v >= 0 && v == floor(v) && v < EXACT_LIMIT, arg, "an integer in [0, 2^53) expected");
    return (uint64_t)v;
}

static int l_set_rng_state(lua_State *L) {
    uint64_t seed = check_u53(L, 1), counter = check_u53(L, 2);
    pft_ctx *ctx = pftl_state_get(L)->ctx;
    pft_ctx_set_seed(ctx, seed);
    ctx->rng_counter = counter;
    return 0;
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

/* The pft_optim of a pft.Optimizer box (layout in lua_pft.h). */
static pft_optim *check_opt(lua_State *L, int idx) {
    pftl_optim_box *b = luaL_checkudata(L, idx, PFTL_OPTIM_MT);
    if (!b->o) luaL_argerror(L, idx, "optimizer used after free");
    return b->o;
}

static void push_copy(lua_State *L, pftl_state *S, const pft_tensor *like, const float *data) {
    pftl_tensor_box *b = pftl_push_box(L, S);
    pftl_own(L, b, pft_tensor_from_data(S->ctx, like->ndim, like->shape, data));
}

/* opt:state() -> {[name] = {step = n, m = tensor, v = tensor or nil}} for the parameters that have state */
static int o_state(lua_State *L) {
    pft_optim *o = check_opt(L, 1);
    pftl_state *S = pftl_state_get(L);
    lua_newtable(L);
    for (int i = 0, n = pft_optim_param_count(o); i < n; i++) {
        pft_optim_param_state ps;
        if (!pft_optim_state_export(o, i, &ps)) continue;
        if (!ps.param->name) return luaL_error(L, "optimizer state: parameter %d has no name", i + 1);
        lua_createtable(L, 0, 3);
        lua_pushnumber(L, (lua_Number)ps.step), lua_setfield(L, -2, "step");
        if (ps.m) push_copy(L, S, ps.param, ps.m), lua_setfield(L, -2, "m");
        if (ps.v) push_copy(L, S, ps.param, ps.v), lua_setfield(L, -2, "v");
        lua_setfield(L, -2, ps.param->name);
    }
    return 1;
}

static const float *contiguous_data(lua_State *L, pftl_state *S, int idx) {
    pft_tensor *t = pftl_check_tensor(L, idx);
    if (pft_tensor_is_contiguous(t)) return pft_tensor_data(t);
    pftl_tensor_box *b = pftl_push_box(L, S); /* left on the stack until the caller's return */
    pftl_own(L, b, pft_tensor_contiguous(t));
    return pft_tensor_data(b->t);
}

/* opt:load_state(state): the inverse of opt:state() (a table of that shape, e.g. read back from a file) */
static int o_load_state(lua_State *L) {
    pft_optim *o = check_opt(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    pftl_state *S = pftl_state_get(L);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        int top = lua_gettop(L);
        const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (!name || !lua_istable(L, -1)) return luaL_error(L, "load_state: expected {[name] = {step =, m =, v =}}");
        lua_getfield(L, top, "step");
        lua_Number step = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || step < 0 || step != floor(step))
            return luaL_error(L, "load_state: '%s' has no integer step", name);
        lua_getfield(L, top, "m");
        lua_getfield(L, top, "v");
        int mi = top + 2, vi = top + 3;
        if (!pftl_is_tensor(L, mi)) return luaL_error(L, "load_state: '%s' has no tensor m", name);
        const float *m = contiguous_data(L, S, mi);
        const float *v = pftl_is_tensor(L, vi) ? contiguous_data(L, S, vi) : NULL;
        int64_t numel = pft_tensor_numel(pftl_check_tensor(L, mi));
        if (v && pft_tensor_numel(pftl_check_tensor(L, vi)) != numel)
            return luaL_error(L, "load_state: '%s': m and v differ in size", name);
        if (pft_optim_state_import(o, name, (int64_t)step, numel, m, v)) return pftl_core_error(L, S->ctx);
        lua_settop(L, top - 1);
    }
    return 0;
}

static int l_isatty(lua_State *L) {
    int64_t fd = pftl_check_int64(L, 1);
    lua_pushboolean(L, fd >= 0 && fd <= 1024 && isatty((int)fd));
    return 1;
}

/* core.clock() -> seconds on a monotonic clock (progress, tokens/s, wall time) */
static int l_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

static volatile sig_atomic_t *interrupt_flags(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, INTERRUPT_KEY);
    volatile sig_atomic_t *f = lua_islightuserdata(L, -1) ? lua_touserdata(L, -1) : NULL;
    lua_pop(L, 1);
    return f;
}

/* core.interrupted() -> true once a SIGINT arrived while watched (always false outside the host) */
static int l_interrupted(lua_State *L) {
    volatile sig_atomic_t *f = interrupt_flags(L);
    lua_pushboolean(L, f && f[0] > 0);
    return 1;
}

/* core.watch_interrupts(on) -> whether the host supports it. While on, a first SIGINT only sets the flag
 * (a second exits at once, status 130); while off, SIGINT ends the process as usual. Resets the count. */
static int l_watch_interrupts(lua_State *L) {
    volatile sig_atomic_t *f = interrupt_flags(L);
    if (f) {
        f[0] = 0;
        f[1] = lua_toboolean(L, 1);
    }
    lua_pushboolean(L, f != NULL);
    return 1;
}

void pftl_register_train(lua_State *L, int module_idx) {
    static const luaL_Reg fns[] = {{"clip_grad_norm", l_clip_grad_norm}, {"rng_state", l_rng_state},
                                   {"set_rng_state", l_set_rng_state},   {"save_tensors", l_save_tensors},
                                   {"isatty", l_isatty},                 {"interrupted", l_interrupted},
                                   {"watch_interrupts", l_watch_interrupts},
                                   {"clock", l_clock},
                                   {NULL, NULL}};
    for (const luaL_Reg *r = fns; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, module_idx, r->name);
    }
    /* methods on pft.Optimizer (its metatable is made by pftl_register_optim) */
    luaL_getmetatable(L, PFTL_OPTIM_MT);
    lua_getfield(L, -1, "__index");
    lua_pushcfunction(L, o_state), lua_setfield(L, -2, "state");
    lua_pushcfunction(L, o_load_state), lua_setfield(L, -2, "load_state");
    lua_pop(L, 2);
}
