/* lua_ops.c - ops of ops.h as core.op(a, b) functions, a:op(b) methods and arithmetic metamethods.
 * Every function checks its arguments, pushes the result box, then calls core once (lua_pft.h). */
#include <string.h>

#include "lua_pft.h"

typedef pft_tensor *(*binary_fn)(pft_tensor *, pft_tensor *);

/* a op b where one side may be a number: a number becomes a scalar tensor that broadcasts
 * (mul by a number is a scale). */
static int binary(lua_State *L, binary_fn fn, int is_mul) {
    int anum = lua_type(L, 1) == LUA_TNUMBER, bnum = lua_type(L, 2) == LUA_TNUMBER;
    pft_tensor *a = NULL, *b = NULL;
    if (anum && bnum) pftl_check_tensor(L, 1); /* raises: pft.Tensor expected, got number */
    if (!anum) a = pftl_check_tensor(L, 1);
    if (!bnum) b = pftl_check_tensor(L, 2);
    float v = anum ? (float)lua_tonumber(L, 1) : bnum ? (float)lua_tonumber(L, 2) : 0.0f;
    pftl_state *S = pftl_state_get(L);
    pftl_tensor_box *box = pftl_push_box(L, S);
    if (!anum && !bnum) return pftl_own(L, box, fn(a, b));
    if (is_mul) return pftl_own(L, box, pft_scale(anum ? b : a, v));
    pft_tensor *c = pft_tensor_full(S->ctx, 0, NULL, v);
    if (!c) return pftl_core_error(L, S->ctx);
    pft_tensor *r = anum ? fn(c, b) : fn(a, c);
    pft_tensor_release(c);
    return pftl_own(L, box, r);
}

static int l_add(lua_State *L) { return binary(L, pft_add, 0); }
static int l_sub(lua_State *L) { return binary(L, pft_sub, 0); }
static int l_mul(lua_State *L) { return binary(L, pft_mul, 1); }

static int l_unm(lua_State *L) {
    pft_tensor *a = pftl_check_tensor(L, 1);
    pftl_tensor_box *box = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, box, pft_scale(a, -1.0f));
}

static int l_scale(lua_State *L) {
    pft_tensor *a = pftl_check_tensor(L, 1);
    float s = (float)luaL_checknumber(L, 2);
    pftl_tensor_box *box = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, box, pft_scale(a, s));
}

static int l_matmul(lua_State *L) {
    pft_tensor *a = pftl_check_tensor(L, 1), *b = pftl_check_tensor(L, 2);
    pftl_tensor_box *box = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, box, pft_matmul(a, b));
}

/* linear(x, w [, b]) */
static int l_linear(lua_State *L) {
    pft_tensor *x = pftl_check_tensor(L, 1), *w = pftl_check_tensor(L, 2), *b = pftl_opt_tensor(L, 3);
    pftl_tensor_box *box = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, box, pft_linear(x, w, b));
}

static int unary(lua_State *L, pft_tensor *(*fn)(pft_tensor *)) {
    pft_tensor *a = pftl_check_tensor(L, 1);
    pftl_tensor_box *box = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, box, fn(a));
}

static int l_gelu(lua_State *L) { return unary(L, pft_gelu); }
static int l_tanh(lua_State *L) { return unary(L, pft_tanh); }
static int l_sum_all(lua_State *L) { return unary(L, pft_sum_all); }
static int l_mean_all(lua_State *L) { return unary(L, pft_mean_all); }

/* sum(a [, dim [, keepdim]]): dim 1-based (negative from the end); no dim: over everything */
static int reduce(lua_State *L, pft_tensor *(*fn)(pft_tensor *, int, bool), pft_tensor *(*all)(pft_tensor *),
                  const char *op) {
    pft_tensor *a = pftl_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) return unary(L, all);
    int dim = pftl_check_dim(L, 2, a, op);
    bool keepdim = lua_toboolean(L, 3);
    pftl_tensor_box *box = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, box, fn(a, dim, keepdim));
}

static int l_sum(lua_State *L) { return reduce(L, pft_sum, pft_sum_all, "sum"); }
static int l_mean(lua_State *L) { return reduce(L, pft_mean, pft_mean_all, "mean"); }

/* softmax(x [, mask]) over the last dim */
static int l_softmax(lua_State *L) {
    pft_tensor *x = pftl_check_tensor(L, 1), *mask = pftl_opt_tensor(L, 2);
    pftl_tensor_box *box = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, box, pft_softmax(x, mask));
}

/* layernorm(x, w, b [, eps = 1e-5]) */
static int l_layernorm(lua_State *L) {
    pft_tensor *x = pftl_check_tensor(L, 1), *w = pftl_opt_tensor(L, 2), *b = pftl_opt_tensor(L, 3);
    float eps = (float)luaL_optnumber(L, 4, 1e-5);
    pftl_tensor_box *box = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, box, pft_layernorm(x, w, b, eps));
}

/* dropout(x, p [, train = true]) */
static int l_dropout(lua_State *L) {
    pft_tensor *x = pftl_check_tensor(L, 1);
    lua_Number p = luaL_checknumber(L, 2);
    luaL_argcheck(L, p >= 0 && p < 1, 2, "dropout probability must be in [0, 1)");
    bool train = lua_isnoneornil(L, 3) ? true : lua_toboolean(L, 3);
    pftl_tensor_box *box = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, box, pft_dropout(x, (float)p, train));
}

/* embedding(weight [V, C], ids): ids a (nested) table of 0-based token ids -> [ids shape..., C] */
static int l_embedding(lua_State *L) {
    pft_tensor *w = pftl_check_tensor(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int64_t shape[PFT_MAX_DIMS];
    int32_t *ids = NULL;
    int nd = pftl_read_nested(L, 2, "embedding", shape, NULL, &ids);
    pftl_tensor_box *box = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, box, pft_embedding(w, ids, nd, shape));
}

/* cross_entropy(logits [N, K], targets, ignore_index = -100): targets a list of N 0-based class ids */
static int l_cross_entropy(lua_State *L) {
    pft_tensor *logits = pftl_check_tensor(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Number ignore = luaL_optnumber(L, 3, -100);
    int64_t shape[PFT_MAX_DIMS], n = 1, rows = 1;
    int32_t *targets = NULL;
    int nd = pftl_read_nested(L, 2, "cross_entropy", shape, NULL, &targets);
    for (int i = 0; i < nd; i++) n *= shape[i];
    for (int i = 0; i + 1 < logits->ndim; i++) rows *= logits->shape[i];
    if (logits->ndim < 1 || n != rows) {
        char sh[128];
        return pftl_errorf(L, "cross_entropy: %lld targets for logits of shape %s", (long long)n,
                          pft_tensor_shape_str(logits, sh, sizeof sh));
    }
    pftl_tensor_box *box = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, box, pft_cross_entropy(logits, targets, n, (int32_t)ignore));
}

static int l_mse(lua_State *L) {
    pft_tensor *pred = pftl_check_tensor(L, 1), *target = pftl_check_tensor(L, 2);
    pftl_tensor_box *box = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, box, pft_mse(pred, target));
}

static const luaL_Reg op_fns[] = {
    {"add", l_add},         {"sub", l_sub},           {"mul", l_mul},
    {"scale", l_scale},     {"matmul", l_matmul},     {"linear", l_linear},
    {"gelu", l_gelu},       {"tanh", l_tanh},         {"sum", l_sum},
    {"mean", l_mean},       {"sum_all", l_sum_all},   {"mean_all", l_mean_all},
    {"softmax", l_softmax}, {"layernorm", l_layernorm}, {"dropout", l_dropout},
    {"embedding", l_embedding}, {"cross_entropy", l_cross_entropy}, {"mse", l_mse},
    {NULL, NULL}};

void pftl_register_ops(lua_State *L, int module_idx, int methods_idx, int meta_idx) {
    for (const luaL_Reg *r = op_fns; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_pushvalue(L, -1);
        lua_setfield(L, module_idx, r->name);
        lua_setfield(L, methods_idx, r->name);
    }
    lua_pushcfunction(L, l_add), lua_setfield(L, meta_idx, "__add");
    lua_pushcfunction(L, l_sub), lua_setfield(L, meta_idx, "__sub");
    lua_pushcfunction(L, l_mul), lua_setfield(L, meta_idx, "__mul");
    lua_pushcfunction(L, l_unm), lua_setfield(L, meta_idx, "__unm");
}
