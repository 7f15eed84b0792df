/* lua_ctx.c - the per-state context of ctx.h: threads, seed and the dropout RNG position, grad mode,
 * counters, and the allocation-failure hook of the tests.
 *
 *     core.set_threads(4); core.seed(1234)
 *     local seed, counter = core.rng_state(); core.set_rng_state(seed, counter)   -- checkpoints
 *     core.no_grad(function() ... end)                                             -- nothing recorded inside
 *     core.stats().live_tensors, core.live_tensors(), core.reset_stats()
 *     core.cpu_kernels() --> "avx512"; core.set_cpu_kernels("avx2"); core.cpu_kernels_list() --> {"baseline", ...}
 *     core.set_precision("bf16"); core.precision() --> "bf16-amx" (the GEMMs' precision: ctx.h) */
#include <math.h>

#include "backend.h"
#include "lua_pft.h"

static int l_set_threads(lua_State *L) {
    int64_t n = pftl_check_int64(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 4096, 1, "thread count must be at least 1");
    pftl_state_get(L)->ctx->threads = (int)n;
    return 0;
}

static int l_threads(lua_State *L) {
    lua_pushinteger(L, pftl_state_get(L)->ctx->threads);
    return 1;
}

static int l_seed(lua_State *L) {
    lua_Number v = luaL_checknumber(L, 1);
    luaL_argcheck(L, v >= 0 && v == floor(v), 1, "seed must be a non-negative integer");
    pft_ctx_set_seed(pftl_state_get(L)->ctx, (uint64_t)v);
    return 0;
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

/* core.no_grad(fn, ...) -> fn's results; grad mode is restored even when fn raises */
static int l_no_grad(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    pft_ctx *ctx = pftl_state_get(L)->ctx;
    pft_ctx_no_grad_enter(ctx);
    int rc = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0); /* fn at index 1, its arguments after it */
    pft_ctx_no_grad_leave(ctx);
    if (rc) return lua_error(L); /* the error object, unchanged */
    return lua_gettop(L);
}

static int l_grad_enabled(lua_State *L) {
    lua_pushboolean(L, pftl_state_get(L)->ctx->grad_enabled > 0);
    return 1;
}

static int l_live_tensors(lua_State *L) {
    lua_pushnumber(L, (lua_Number)pftl_state_get(L)->ctx->stats.live_tensors);
    return 1;
}

static int l_stats(lua_State *L) {
    const pft_stats *s = &pftl_state_get(L)->ctx->stats;
    lua_createtable(L, 0, 5);
    lua_pushnumber(L, (lua_Number)s->live_tensors), lua_setfield(L, -2, "live_tensors");
    lua_pushnumber(L, (lua_Number)s->live_storages), lua_setfield(L, -2, "live_storages");
    lua_pushnumber(L, (lua_Number)s->backward_kernels), lua_setfield(L, -2, "backward_kernels");
    lua_pushnumber(L, (lua_Number)s->backward_flops), lua_setfield(L, -2, "backward_flops");
    lua_pushnumber(L, (lua_Number)s->forward_flops), lua_setfield(L, -2, "forward_flops");
    return 1;
}

static int l_reset_stats(lua_State *L) {
    pft_ctx_reset_stats(pftl_state_get(L)->ctx);
    return 0;
}

static int l_cpu_kernels(lua_State *L) {
    lua_pushstring(L, pft_ctx_cpu_kernels(pftl_state_get(L)->ctx));
    return 1;
}

static int l_set_cpu_kernels(lua_State *L) {
    pft_ctx *ctx = pftl_state_get(L)->ctx;
    if (pft_ctx_set_cpu_kernels(ctx, luaL_checkstring(L, 1))) return pftl_core_error(L, ctx);
    return 0;
}

/* the instruction sets this build has and this processor runs, narrowest first */
static int l_cpu_kernels_list(lua_State *L) {
    const char *isas[8];
    const int n = pft_backend_cpu_list(isas, 8);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, isas[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* the GEMMs' precision: "fp32", "bf16-amx", "bf16-avx512" (ctx.h) */
static int l_precision(lua_State *L) {
    lua_pushstring(L, pft_ctx_precision(pftl_state_get(L)->ctx));
    return 1;
}

static int l_set_precision(lua_State *L) {
    pft_ctx *ctx = pftl_state_get(L)->ctx;
    if (pft_ctx_set_precision(ctx, luaL_checkstring(L, 1))) return pftl_core_error(L, ctx);
    return 0;
}

/* Testing hook: the n-th next storage allocation fails (n = 0: the next one); a negative n turns it off. */
static int l_fail_alloc_after(lua_State *L) {
    pftl_state_get(L)->ctx->alloc_fail_after = (int)pftl_check_int64(L, 1);
    return 0;
}

void pftl_register_ctx(lua_State *L, int module_idx) {
    static const luaL_Reg fns[] = {
        {"set_threads", l_set_threads},   {"threads", l_threads},
        {"seed", l_seed},                 {"rng_state", l_rng_state},
        {"set_rng_state", l_set_rng_state}, {"no_grad", l_no_grad},
        {"grad_enabled", l_grad_enabled}, {"live_tensors", l_live_tensors},
        {"stats", l_stats},               {"reset_stats", l_reset_stats},
        {"fail_alloc_after", l_fail_alloc_after},
        {"cpu_kernels", l_cpu_kernels},   {"set_cpu_kernels", l_set_cpu_kernels},
        {"cpu_kernels_list", l_cpu_kernels_list},
        {"precision", l_precision},       {"set_precision", l_set_precision},
        {NULL, NULL}};
    pftl_set_funcs(L, module_idx, fns);
}
