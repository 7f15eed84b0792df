/* lua_optim.c - pft.Optimizer: core.adamw / core.sgd over parameter groups, checkpoint state, and
 * gradient clipping (optim.h).
 *
 *     local opt = core.adamw({ {params = {w1, b1}, lr = 1e-3}, {params = {w2}, weight_decay = 0} }, {lr = 3e-4})
 *     opt:step(); opt:zero_grad(); opt:set_lr(1, 1e-4)     -- groups are 1-based
 *     local st = opt:state()                                 -- {[name] = {step = n, m = tensor, v = tensor}}
 *     opt:load_state(st)
 *     local norm = core.clip_grad_norm(params, 1.0)         -- as torch.nn.utils.clip_grad_norm_
 *     local norm, coef = core.grad_norm(params, 1.0); opt:step(coef)  -- the same step, gradients left unscaled
 *
 * `groups` is a list of group tables (params plus settings that override `opts`) or a plain list of
 * tensors (one group). The C optimizer retains its parameters; the userdata also keeps the Lua boxes in
 * its environment table, so a parameter's box lives as long as the optimizer. opt:state() returns new
 * tensors holding copies of the optimizer's buffers. */
#include <math.h>
#include <string.h>

#include "lua_pft.h"
#include "ops.h" /* pft_tensor_contiguous */
#include "optim.h"

#define OPTIM_MT "pft.Optimizer"

typedef struct optim_box {
    pft_optim *o;
    pftl_state *S;
    const char *kind; /* "adamw" or "sgd", for messages */
} optim_box;

static optim_box *check_optim(lua_State *L, int idx) {
    optim_box *b = luaL_checkudata(L, idx, OPTIM_MT);
    if (!b->o) luaL_argerror(L, idx, "optimizer used after free");
    return b;
}

static void optim_release(optim_box *b) {
    if (!b->o) return;
    pft_optim_free(b->o);
    b->o = NULL;
    pftl_state_unref(b->S);
}

static int o_gc(lua_State *L) {
    optim_box *b = lua_touserdata(L, 1);
    if (b) optim_release(b);
    return 0;
}

static int o_free(lua_State *L) {
    optim_release(luaL_checkudata(L, 1, OPTIM_MT));
    return 0;
}

/* Reads the settings in the table at idx over g; unknown keys raise, naming the key. params and name
 * are skipped when `group` is set (they belong to a group table). */
static void read_settings(lua_State *L, int idx, const char *kind, pft_optim_group *g, int group) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        double *slot = NULL;
        if (!k) luaL_error(L, "%s: option keys must be strings (group %d)", kind, group);
        if (group && (!strcmp(k, "params") || !strcmp(k, "name"))) {
            lua_pop(L, 1);
            continue;
        }
        if (!strcmp(k, "lr")) slot = &g->lr;
        else if (!strcmp(k, "weight_decay")) slot = &g->weight_decay;
        else if (!strcmp(k, "momentum")) slot = &g->momentum;
        else if (!strcmp(k, "beta1")) slot = &g->beta1;
        else if (!strcmp(k, "beta2")) slot = &g->beta2;
        else if (!strcmp(k, "eps")) slot = &g->eps;
        else if (!strcmp(k, "betas") && lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            if (!lua_isnumber(L, -2) || !lua_isnumber(L, -1)) luaL_error(L, "%s: betas must be {beta1, beta2}", kind);
            g->beta1 = lua_tonumber(L, -2);
            g->beta2 = lua_tonumber(L, -1);
            lua_pop(L, 3);
            continue;
        } else if (group) luaL_error(L, "%s: unknown option '%s' in group %d", kind, k, group);
        else luaL_error(L, "%s: unknown option '%s'", kind, k);
        if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "%s: option '%s' must be a number, got %s", kind, k, luaL_typename(L, -1));
        *slot = lua_tonumber(L, -1);
        if (!isfinite(*slot) || *slot < 0) luaL_error(L, "%s: option '%s' must be a finite number >= 0", kind, k);
        lua_pop(L, 1);
    }
}

/* Adds the tensors of the list at idx as one group; appends their boxes to the env table at env. */
static void add_group(lua_State *L, optim_box *b, int idx, int env, const pft_optim_group *g, int group) {
    int n = (int)lua_objlen(L, idx);
    pft_tensor **params = lua_newuserdata(L, sizeof *params * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        if (!pftl_is_tensor(L, -1))
            luaL_error(L, "%s: parameter %d of group %d is a %s, expected pft.Tensor", b->kind, i + 1, group, luaL_typename(L, -1));
        pftl_tensor_box *tb = lua_touserdata(L, -1);
        if (!tb->t) luaL_error(L, "%s: parameter %d of group %d: tensor used after free", b->kind, i + 1, group);
        params[i] = tb->t;
        lua_rawseti(L, env, (int)lua_objlen(L, env) + 1);
    }
    if (pft_optim_add_group(b->o, g, n, params) < 0) pftl_core_error(L, b->S->ctx);
    lua_pop(L, 1);
}

static int make_optim(lua_State *L, pft_optim_kind kind, const char *name) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    pftl_state *S = pftl_state_get(L);
    pft_optim_group defaults = pft_optim_group_defaults(kind);
    if (!lua_isnil(L, 2)) read_settings(L, 2, name, &defaults, 0);

    optim_box *b = lua_newuserdata(L, sizeof *b); /* 3 */
    b->o = NULL;
    b->S = S;
    b->kind = name;
    luaL_getmetatable(L, OPTIM_MT);
    lua_setmetatable(L, 3);
    lua_newtable(L); /* 4: the parameters' boxes */
    lua_pushvalue(L, 4);
    lua_setfenv(L, 3);
    b->o = pft_optim_new(S->ctx, kind);
    if (!b->o) return pftl_core_error(L, S->ctx);
    S->handles++;

    lua_rawgeti(L, 1, 1);
    int plain = lua_isnil(L, -1) || pftl_is_tensor(L, -1);
    lua_pop(L, 1);
    if (plain) {
        add_group(L, b, 1, 4, &defaults, 1);
    } else {
        int ng = (int)lua_objlen(L, 1);
        for (int i = 1; i <= ng; i++) {
            lua_rawgeti(L, 1, i); /* 5 */
            if (!lua_istable(L, 5)) return luaL_error(L, "%s: group %d is a %s, expected a table", name, i, luaL_typename(L, 5));
            pft_optim_group g = defaults;
            read_settings(L, 5, name, &g, i);
            lua_getfield(L, 5, "params"); /* 6 */
            if (!lua_istable(L, 6)) return luaL_error(L, "%s: group %d has no 'params' list", name, i);
            add_group(L, b, 6, 4, &g, i);
            lua_settop(L, 4);
        }
    }
    lua_settop(L, 3);
    return 1;
}

static int l_adamw(lua_State *L) { return make_optim(L, PFT_OPTIM_ADAMW, "adamw"); }
static int l_sgd(lua_State *L) { return make_optim(L, PFT_OPTIM_SGD, "sgd"); }

/* opt:step([grad_scale]): every gradient read as grad_scale g (default 1) */
static int o_step(lua_State *L) {
    optim_box *b = check_optim(L, 1);
    const lua_Number gs = luaL_optnumber(L, 2, 1.0);
    luaL_argcheck(L, isfinite(gs), 2, "grad_scale must be a finite number");
    if (pft_optim_step_scaled(b->o, (float)gs)) return pftl_core_error(L, b->S->ctx);
    return 0;
}

static int o_zero_grad(lua_State *L) {
    pft_optim_zero_grad(check_optim(L, 1)->o);
    return 0;
}

static pft_optim_group *check_group(lua_State *L, optim_box *b, int arg) {
    int64_t g = lua_isnoneornil(L, arg) ? 1 : pftl_check_int64(L, arg);
    int n = pft_optim_group_count(b->o);
    if (g < 1 || g > n) luaL_error(L, "%s: group %d out of range (the optimizer has %d)", b->kind, (int)g, n);
    return pft_optim_group_get(b->o, (int)g - 1);
}

/* opt:set_lr(group, lr), group 1-based */
static int o_set_lr(lua_State *L) {
    optim_box *b = check_optim(L, 1);
    pft_optim_group *g = check_group(L, b, 2);
    lua_Number lr = luaL_checknumber(L, 3);
    luaL_argcheck(L, lr >= 0 && isfinite(lr), 3, "learning rate must be a finite number >= 0");
    g->lr = lr;
    return 0;
}

static int o_lr(lua_State *L) {
    optim_box *b = check_optim(L, 1);
    lua_pushnumber(L, check_group(L, b, 2)->lr); /* opt:lr() is group 1's */
    return 1;
}

static int o_groups(lua_State *L) {
    lua_pushinteger(L, pft_optim_group_count(check_optim(L, 1)->o));
    return 1;
}

static int o_state_bytes(lua_State *L) {
    lua_pushnumber(L, (lua_Number)pft_optim_state_bytes(check_optim(L, 1)->o));
    return 1;
}

static int o_has_state(lua_State *L) {
    optim_box *b = check_optim(L, 1);
    lua_pushboolean(L, pft_optim_has_state(b->o, pftl_check_tensor(L, 2)));
    return 1;
}

/* opt:params() -> the list of parameter tensors, in group order */
static int o_params(lua_State *L) {
    check_optim(L, 1);
    lua_getfenv(L, 1);
    int n = (int)lua_objlen(L, -1);
    lua_createtable(L, n, 0);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -2, i);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

/* --- checkpoint state ------------------------------------------------------------------------------ */

static void push_copy(lua_State *L, pftl_state *S, const pft_tensor *like, const float *data) {
    pftl_tensor_box *b = pftl_push_box(L, S);
    pftl_own(L, b, pft_tensor_from_data(S->ctx, like->ndim, like->shape, data));
}

/* opt:state() -> {[name] = {step = n, m = tensor, v = tensor or nil}} for the parameters that have state */
static int o_state(lua_State *L) {
    pft_optim *o = check_optim(L, 1)->o;
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
    pft_optim *o = check_optim(L, 1)->o;
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

/* the tensors of the list at index 1 (a userdata array on the stack, freed with it), their count in *n */
static pft_tensor **param_list(lua_State *L, const char *fn, int *n) {
    luaL_checktype(L, 1, LUA_TTABLE);
    *n = (int)lua_objlen(L, 1);
    pft_tensor **params = lua_newuserdata(L, sizeof *params * (size_t)(*n ? *n : 1));
    for (int i = 0; i < *n; i++) {
        lua_rawgeti(L, 1, i + 1);
        if (!pftl_is_tensor(L, -1)) luaL_error(L, "%s: entry %d is a %s, expected pft.Tensor", fn, i + 1, luaL_typename(L, -1));
        params[i] = pftl_check_tensor(L, -1);
        lua_pop(L, 1);
    }
    return params;
}

static lua_Number check_max_norm(lua_State *L, int arg) {
    lua_Number max_norm = luaL_checknumber(L, arg);
    luaL_argcheck(L, max_norm > 0 && isfinite(max_norm), arg, "max_norm must be a finite number > 0");
    return max_norm;
}

/* core.clip_grad_norm(params, max_norm) -> the global gradient norm before clipping */
static int l_clip_grad_norm(lua_State *L) {
    lua_Number max_norm = check_max_norm(L, 2);
    int n;
    pft_tensor **params = param_list(L, "clip_grad_norm", &n);
    lua_pushnumber(L, pft_clip_grad_norm(n, params, max_norm));
    return 1;
}

/* core.grad_norm(params[, max_norm]) -> the global gradient norm[, the factor clipping to max_norm would
 * scale the gradients by (1: none), for opt:step]; the gradients are not touched */
static int l_grad_norm(lua_State *L) {
    const bool clip = !lua_isnoneornil(L, 2);
    lua_Number max_norm = clip ? check_max_norm(L, 2) : 0;
    int n;
    pft_tensor **params = param_list(L, "grad_norm", &n);
    const double norm = pft_grad_norm(n, params);
    lua_pushnumber(L, norm);
    if (!clip) return 1;
    lua_pushnumber(L, pft_clip_coef(norm, max_norm));
    return 2;
}

static int o_tostring(lua_State *L) {
    optim_box *b = luaL_checkudata(L, 1, OPTIM_MT);
    if (!b->o) lua_pushfstring(L, "pft.Optimizer(%s, freed)", b->kind);
    else lua_pushfstring(L, "pft.Optimizer(%s, %d groups)", b->kind, pft_optim_group_count(b->o));
    return 1;
}

static const luaL_Reg optim_methods[] = {
    {"step", o_step},         {"zero_grad", o_zero_grad}, {"set_lr", o_set_lr},         {"lr", o_lr},
    {"groups", o_groups},     {"state_bytes", o_state_bytes}, {"has_state", o_has_state}, {"params", o_params},
    {"state", o_state},       {"load_state", o_load_state}, {"free", o_free},           {NULL, NULL}};

void pftl_register_optim(lua_State *L, int module_idx) {
    pftl_new_class(L, OPTIM_MT, optim_methods, o_gc, o_tostring);
    static const luaL_Reg fns[] = {
        {"adamw", l_adamw}, {"sgd", l_sgd}, {"clip_grad_norm", l_clip_grad_norm}, {"grad_norm", l_grad_norm}, {NULL, NULL}};
    pftl_set_funcs(L, module_idx, fns);
}
