/* lua_tensor.c - pft.Tensor: construction, conversion to Lua tables, views, the ops of ops.h as
 * core.op(a, b) functions, a:op(b) methods and arithmetic metamethods, and autograd entry points.
 *
 *     local a = core.tensor({{1, 2}, {3, 4}}); local b = core.randn({2, 2}):requires_grad(true)
 *     local loss = (a:matmul(b) + 1):sum(); loss:backward(); print(b:grad():totable())
 *
 * Every function checks its arguments, pushes the result box, then calls core once (lua_pft.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "autograd.h"
#include "lua_pft.h"
#include "ops.h"

/* --- lifetime ------------------------------------------------------------------------------------- */

static void box_release(pftl_tensor_box *b) {
    if (!b->t) return;
    pft_tensor_release(b->t);
    b->t = NULL;
    pftl_state_unref(b->S);
}

static int t_gc(lua_State *L) {
    pftl_tensor_box *b = lua_touserdata(L, 1);
    if (b) box_release(b);
    return 0;
}

/* t:free() drops the tensor now instead of at the next collection; freeing twice is a no-op. */
static int t_free(lua_State *L) {
    box_release(luaL_checkudata(L, 1, PFTL_TENSOR_MT));
    return 0;
}

/* --- construction --------------------------------------------------------------------------------- */

static int pushed_shape_result(lua_State *L, pft_tensor *(*make)(pft_ctx *, int, const int64_t *)) {
    int64_t shape[PFT_MAX_DIMS];
    int nd = pftl_check_shape(L, 1, shape);
    pftl_state *S = pftl_state_get(L);
    pftl_tensor_box *b = pftl_push_box(L, S);
    return pftl_own(L, b, make(S->ctx, nd, shape));
}

static int l_zeros(lua_State *L) { return pushed_shape_result(L, pft_tensor_zeros); }

static int l_full(lua_State *L) {
    int64_t shape[PFT_MAX_DIMS];
    int nd = pftl_check_shape(L, 1, shape);
    float v = (float)luaL_checknumber(L, 2);
    pftl_state *S = pftl_state_get(L);
    pftl_tensor_box *b = pftl_push_box(L, S);
    return pftl_own(L, b, pft_tensor_full(S->ctx, nd, shape, v));
}

static int l_randn(lua_State *L) {
    int64_t shape[PFT_MAX_DIMS];
    int nd = pftl_check_shape(L, 1, shape);
    float mean = (float)luaL_optnumber(L, 2, 0.0), std = (float)luaL_optnumber(L, 3, 1.0);
    pftl_state *S = pftl_state_get(L);
    pftl_tensor_box *b = pftl_push_box(L, S);
    return pftl_own(L, b, pft_tensor_randn(S->ctx, nd, shape, mean, std));
}

static int l_rand(lua_State *L) {
    int64_t shape[PFT_MAX_DIMS];
    int nd = pftl_check_shape(L, 1, shape);
    float lo = (float)luaL_optnumber(L, 2, 0.0), hi = (float)luaL_optnumber(L, 3, 1.0);
    pftl_state *S = pftl_state_get(L);
    pftl_tensor_box *b = pftl_push_box(L, S);
    return pftl_own(L, b, pft_tensor_rand(S->ctx, nd, shape, lo, hi));
}

/* Writes "[2][3]" (1-based) for the first `depth` entries of pos. */
static const char *pos_str(char *buf, size_t n, const int64_t *pos, int depth) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < depth && used < n; i++) used += (size_t)snprintf(buf + used, n - used, "[%lld]", (long long)pos[i] + 1);
    return buf;
}

/* Walks the nested table at the top of the stack, checking it is rectangular with the given shape, and
 * writes numbers into buf (as floats, or as int32 ids when ids != NULL). */
static void fill_nested(lua_State *L, const char *op, int nd, const int64_t *shape, int depth, int64_t *pos,
                        float *buf, int32_t *ids, int64_t *k) {
    char where[160];
    int64_t n = (int64_t)lua_objlen(L, -1);
    if (n != shape[depth])
        pftl_errorf(L, "%s: table is not rectangular: %s has %lld entries, expected %lld", op,
                   depth ? pos_str(where, sizeof where, pos, depth) : "the outer table", (long long)n,
                   (long long)shape[depth]);
    for (int64_t i = 0; i < n; i++) {
        pos[depth] = i;
        lua_rawgeti(L, -1, (int)(i + 1));
        if (depth + 1 < nd) {
            if (!lua_istable(L, -1))
                luaL_error(L, "%s: table is not rectangular: %s is a %s, expected a table", op,
                           pos_str(where, sizeof where, pos, depth + 1), luaL_typename(L, -1));
            fill_nested(L, op, nd, shape, depth + 1, pos, buf, ids, k);
        } else {
            if (lua_type(L, -1) != LUA_TNUMBER)
                luaL_error(L, "%s: element %s is a %s, expected a number", op, pos_str(where, sizeof where, pos, depth + 1),
                           luaL_typename(L, -1));
            lua_Number v = lua_tonumber(L, -1);
            if (ids) {
                if (v != floor(v) || v < -2147483648.0 || v > 2147483647.0)
                    luaL_error(L, "%s: element %s is %f, expected an integer id", op,
                               pos_str(where, sizeof where, pos, depth + 1), v);
                ids[(*k)++] = (int32_t)v;
            } else {
                buf[(*k)++] = (float)v;
            }
        }
        lua_pop(L, 1);
    }
}

/* Reads the nested table at idx: its shape into shape (returns ndim) and its numbers into a Lua-owned
 * buffer pushed on the stack (*buf as floats, or *ids as int32 when ids != NULL). */
static int read_nested(lua_State *L, int idx, const char *op, int64_t *shape, float **buf, int32_t **ids) {
    int nd = 0;
    lua_pushvalue(L, idx);
    while (lua_istable(L, -1)) { /* the shape comes from the first element at each depth */
        if (nd == PFT_MAX_DIMS) luaL_error(L, "%s: a tensor has at most %d dims", op, PFT_MAX_DIMS);
        shape[nd] = (int64_t)lua_objlen(L, -1);
        nd++;
        if (shape[nd - 1] == 0) break;
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    int64_t numel = 1, pos[PFT_MAX_DIMS], k = 0;
    for (int i = 0; i < nd; i++) numel *= shape[i];
    size_t esize = ids ? sizeof(int32_t) : sizeof(float);
    void *mem = lua_newuserdata(L, (size_t)(numel ? numel : 1) * esize); /* stays on the stack: the caller pops */
    if (ids) *ids = mem; else *buf = mem;
    lua_pushvalue(L, idx);
    fill_nested(L, op, nd, shape, 0, pos, ids ? NULL : *buf, ids ? *ids : NULL, &k);
    lua_pop(L, 1);
    return nd;
}

/* core.tensor({{1, 2}, {3, 4}}) or core.tensor(3.5) for a scalar */
static int l_tensor(lua_State *L) {
    int64_t shape[PFT_MAX_DIMS];
    float *buf = NULL, scalar;
    int nd = 0;
    if (lua_type(L, 1) == LUA_TNUMBER) {
        scalar = (float)lua_tonumber(L, 1);
        buf = &scalar;
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        nd = read_nested(L, 1, "tensor", shape, &buf, NULL);
    }
    pftl_state *S = pftl_state_get(L);
    pftl_tensor_box *b = pftl_push_box(L, S);
    return pftl_own(L, b, pft_tensor_from_data(S->ctx, nd, shape, buf));
}

/* core.from_table(flat, shape) */
static int l_from_table(lua_State *L) {
    int64_t shape[PFT_MAX_DIMS], numel = 1;
    luaL_checktype(L, 1, LUA_TTABLE);
    int nd = pftl_check_shape(L, 2, shape);
    for (int i = 0; i < nd; i++) numel *= shape[i];
    int64_t n = (int64_t)lua_objlen(L, 1);
    if (n != numel) {
        char sh[128];
        return pftl_errorf(L, "from_table: %lld values for shape %s (%lld elements)", (long long)n,
                          pft_shape_str(sh, sizeof sh, nd, shape), (long long)numel);
    }
    float *buf = lua_newuserdata(L, (size_t)(numel ? numel : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        lua_rawgeti(L, 1, (int)(i + 1));
        if (lua_type(L, -1) != LUA_TNUMBER)
            return pftl_errorf(L, "from_table: value %lld is a %s, expected a number", (long long)i + 1, luaL_typename(L, -1));
        buf[i] = (float)lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    pftl_state *S = pftl_state_get(L);
    pftl_tensor_box *b = pftl_push_box(L, S);
    return pftl_own(L, b, pft_tensor_from_data(S->ctx, nd, shape, buf));
}

/* --- conversion and queries ----------------------------------------------------------------------- */

/* The elements in row-major order, in a Lua-owned buffer pushed on the stack. */
static float *elements(lua_State *L, const pft_tensor *t) {
    int64_t n = pft_tensor_numel(t);
    float *buf = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof(float));
    pft_tensor_to_buffer(t, buf);
    return buf;
}

static void push_nested(lua_State *L, const pft_tensor *t, int depth, const float *buf, int64_t *k) {
    int64_t n = t->shape[depth];
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        if (depth + 1 < t->ndim)
            push_nested(L, t, depth + 1, buf, k);
        else
            lua_pushnumber(L, buf[(*k)++]);
        lua_rawseti(L, -2, (int)(i + 1));
    }
}

static int t_totable(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    float *buf = elements(L, t);
    if (t->ndim == 0) {
        lua_pushnumber(L, buf[0]);
        return 1;
    }
    int64_t k = 0;
    push_nested(L, t, 0, buf, &k);
    return 1;
}

static int t_flat(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    int64_t n = pft_tensor_numel(t);
    float *buf = elements(L, t);
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        lua_pushnumber(L, buf[i]);
        lua_rawseti(L, -2, (int)(i + 1));
    }
    return 1;
}

static int t_item(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    if (pft_tensor_numel(t) != 1) {
        char sh[128];
        return pftl_errorf(L, "item: tensor of shape %s has %lld elements, expected 1", pft_tensor_shape_str(t, sh, sizeof sh),
                          (long long)pft_tensor_numel(t));
    }
    int64_t idx[PFT_MAX_DIMS] = {0};
    lua_pushnumber(L, pft_tensor_get(t, idx));
    return 1;
}

/* t:get(i, j, ...), 1-based */
static int t_get(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    int nidx = lua_gettop(L) - 1;
    char sh[128];
    if (nidx != t->ndim)
        return luaL_error(L, "get: %d indices for a tensor of shape %s", nidx, pft_tensor_shape_str(t, sh, sizeof sh));
    int64_t idx[PFT_MAX_DIMS];
    for (int i = 0; i < nidx; i++) {
        int64_t v = pftl_check_int64(L, i + 2);
        if (v < 1 || v > t->shape[i])
            return pftl_errorf(L, "get: index %lld out of range for dim %d of shape %s", (long long)v, i + 1,
                              pft_tensor_shape_str(t, sh, sizeof sh));
        idx[i] = v - 1;
    }
    lua_pushnumber(L, pft_tensor_get(t, idx));
    return 1;
}

static int t_shape(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    if (!lua_isnoneornil(L, 2)) { /* t:shape(d): one size */
        lua_pushnumber(L, (lua_Number)t->shape[pftl_check_dim(L, 2, t, "shape")]);
        return 1;
    }
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushnumber(L, (lua_Number)t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int t_numel(lua_State *L) {
    lua_pushnumber(L, (lua_Number)pft_tensor_numel(pftl_check_tensor(L, 1)));
    return 1;
}

static int t_dim(lua_State *L) {
    lua_pushinteger(L, pftl_check_tensor(L, 1)->ndim);
    return 1;
}

/* #t is the size of the first dim (0 for a scalar), as len() of a torch tensor */
static int t_len(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    lua_pushnumber(L, t->ndim ? (lua_Number)t->shape[0] : 0);
    return 1;
}

static int t_is_contiguous(lua_State *L) {
    lua_pushboolean(L, pft_tensor_is_contiguous(pftl_check_tensor(L, 1)));
    return 1;
}

#define TOSTRING_VALUES 6

static int t_tostring(lua_State *L) {
    pftl_tensor_box *b = luaL_checkudata(L, 1, PFTL_TENSOR_MT);
    if (!b->t) {
        lua_pushliteral(L, "pft.Tensor (freed)");
        return 1;
    }
    pft_tensor *t = b->t;
    char sh[128], num[32];
    int64_t n = pft_tensor_numel(t);
    float *buf = elements(L, t);
    luaL_Buffer lb;
    luaL_buffinit(L, &lb);
    luaL_addstring(&lb, "pft.Tensor");
    luaL_addstring(&lb, pft_tensor_shape_str(t, sh, sizeof sh));
    if (t->name) {
        luaL_addstring(&lb, " '");
        luaL_addstring(&lb, t->name);
        luaL_addstring(&lb, "'");
    }
    luaL_addstring(&lb, " {");
    for (int64_t i = 0; i < n && i < TOSTRING_VALUES; i++) {
        snprintf(num, sizeof num, i ? ", %.4g" : "%.4g", buf[i]);
        luaL_addstring(&lb, num);
    }
    if (n > TOSTRING_VALUES) luaL_addstring(&lb, ", ...");
    luaL_addstring(&lb, "}");
    luaL_pushresult(&lb);
    return 1;
}

/* --- views ---------------------------------------------------------------------------------------- */

static int t_reshape(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    int64_t shape[PFT_MAX_DIMS];
    int nd = pftl_check_shape(L, 2, shape);
    pftl_tensor_box *b = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, b, pft_tensor_reshape(t, nd, shape));
}

static int t_expand(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    int64_t shape[PFT_MAX_DIMS];
    int nd = pftl_check_shape(L, 2, shape);
    pftl_tensor_box *b = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, b, pft_tensor_expand(t, nd, shape));
}

static int t_transpose(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    int d0 = pftl_check_dim(L, 2, t, "transpose"), d1 = pftl_check_dim(L, 3, t, "transpose");
    pftl_tensor_box *b = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, b, pft_tensor_transpose(t, d0, d1));
}

/* t:permute(2, 1, 3) or t:permute({2, 1, 3}), 1-based */
static int t_permute(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    int64_t p64[PFT_MAX_DIMS];
    int n = pftl_check_shape(L, 2, p64), perm[PFT_MAX_DIMS];
    if (n != t->ndim) {
        char sh[128];
        return luaL_error(L, "permute: %d dims given for shape %s", n, pft_tensor_shape_str(t, sh, sizeof sh));
    }
    for (int i = 0; i < n; i++) perm[i] = (int)p64[i] - 1;
    pftl_tensor_box *b = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, b, pft_tensor_permute(t, perm));
}

/* t:narrow(dim, start, length), dim and start 1-based as in torch7 */
static int t_narrow(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    int d = pftl_check_dim(L, 2, t, "narrow");
    int64_t start = pftl_check_int64(L, 3), len = pftl_check_int64(L, 4);
    if (start < 1 || len < 0 || start - 1 + len > t->shape[d]) {
        char sh[128];
        return pftl_errorf(L, "narrow: start %lld, length %lld out of range for dim %d of shape %s", (long long)start,
                          (long long)len, d + 1, pft_tensor_shape_str(t, sh, sizeof sh));
    }
    pftl_tensor_box *b = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, b, pft_tensor_narrow(t, d, start - 1, len));
}

static int t_contiguous(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    pftl_tensor_box *b = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, b, pft_tensor_contiguous(t));
}

static int t_detach(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    pftl_tensor_box *b = pftl_push_box(L, pftl_state_get(L));
    return pftl_own(L, b, pft_tensor_detach(t));
}

/* t:copy_(src): in place, never recorded (initialisation, tests); returns t */
static int t_copy_(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1), *src = pftl_check_tensor(L, 2);
    if (pft_tensor_copy_(t, src)) return pftl_core_error(L, t->ctx);
    lua_settop(L, 1);
    return 1;
}

static int t_fill_(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    pft_tensor_fill_(t, (float)luaL_checknumber(L, 2));
    lua_settop(L, 1);
    return 1;
}

/* --- autograd ------------------------------------------------------------------------------------- */

/* t:requires_grad() -> bool; t:requires_grad(flag) sets it on a leaf and returns t */
static int t_requires_grad(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    if (lua_isnone(L, 2)) {
        lua_pushboolean(L, t->requires_grad);
        return 1;
    }
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    if (t->grad_fn) return luaL_error(L, "requires_grad: only a leaf tensor's flag can be set (this one is the result of '%s')",
                                      t->grad_fn->op);
    t->requires_grad = lua_toboolean(L, 2);
    lua_settop(L, 1);
    return 1;
}

/* t:grad(): the gradient as it is now. After t:zero_grad() (or opt:zero_grad()) the buffer is only marked
 * zero until the next backward writes it; t:grad() writes the zeros first, so take the gradient again
 * after zeroing rather than keeping an older t:grad() tensor (it shows the numbers before the zeroing). */
static int t_grad(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1), *g = pft_tensor_grad(t);
    if (!g) {
        lua_pushnil(L);
        return 1;
    }
    return pftl_push_tensor(L, pftl_state_get(L), g);
}

static int t_zero_grad(lua_State *L) {
    pft_tensor_zero_grad(pftl_check_tensor(L, 1));
    return 0;
}

static int t_backward(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1), *g = pftl_opt_tensor(L, 2);
    if (pft_backward(t, g)) return pftl_core_error(L, t->ctx);
    return 0;
}

static int t_name(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    if (t->name) lua_pushstring(L, t->name); else lua_pushnil(L);
    return 1;
}

static int t_set_name(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    const char *name = luaL_checkstring(L, 2);
    if (pft_tensor_set_name(t, name)) return pftl_core_error(L, t->ctx);
    lua_settop(L, 1);
    return 1;
}

/* --- ops ------------------------------------------------------------------------------------------ */

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
    int nd = read_nested(L, 2, "embedding", shape, NULL, &ids);
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
    int nd = read_nested(L, 2, "cross_entropy", shape, NULL, &targets);
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

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, pftl_is_tensor(L, 1));
    return 1;
}

/* --- registration --------------------------------------------------------------------------------- */

static const luaL_Reg module_fns[] = {
    {"tensor", l_tensor}, {"zeros", l_zeros},         {"full", l_full},           {"randn", l_randn},
    {"rand", l_rand},     {"from_table", l_from_table}, {"is_tensor", l_is_tensor}, {NULL, NULL}};

/* methods that are also module functions: core.reshape(t, ...) == t:reshape(...) */
static const luaL_Reg tensor_fns[] = {
    {"free", t_free},
    {"totable", t_totable},
    {"flat", t_flat},
    {"item", t_item},
    {"get", t_get},
    {"shape", t_shape},
    {"numel", t_numel},
    {"dim", t_dim},
    {"is_contiguous", t_is_contiguous},
    {"reshape", t_reshape},
    {"expand", t_expand},
    {"transpose", t_transpose},
    {"permute", t_permute},
    {"narrow", t_narrow},
    {"contiguous", t_contiguous},
    {"detach", t_detach},
    {"copy_", t_copy_},
    {"fill_", t_fill_},
    {"requires_grad", t_requires_grad},
    {"grad", t_grad},
    {"zero_grad", t_zero_grad},
    {"backward", t_backward},
    {"name", t_name},
    {"set_name", t_set_name},
    {NULL, NULL}};

/* the ops of ops.h, also module functions: core.add(a, b) == a:add(b) */
static const luaL_Reg op_fns[] = {
    {"add", l_add},         {"sub", l_sub},           {"mul", l_mul},
    {"scale", l_scale},     {"matmul", l_matmul},     {"linear", l_linear},
    {"gelu", l_gelu},       {"tanh", l_tanh},         {"sum", l_sum},
    {"mean", l_mean},       {"sum_all", l_sum_all},   {"mean_all", l_mean_all},
    {"softmax", l_softmax}, {"layernorm", l_layernorm}, {"dropout", l_dropout},
    {"embedding", l_embedding}, {"cross_entropy", l_cross_entropy}, {"mse", l_mse},
    {NULL, NULL}};

/* each function of r as both core.name and t:name (one function object) */
static void set_method_funcs(lua_State *L, int module_idx, int methods_idx, const luaL_Reg *r) {
    for (; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_pushvalue(L, -1);
        lua_setfield(L, module_idx, r->name);
        lua_setfield(L, methods_idx, r->name);
    }
}

void pftl_register_tensor(lua_State *L, int module_idx) {
    luaL_newmetatable(L, PFTL_TENSOR_MT);
    int meta = lua_gettop(L);
    lua_newtable(L); /* the methods */
    int methods = lua_gettop(L);
    pftl_set_funcs(L, module_idx, module_fns);
    set_method_funcs(L, module_idx, methods, tensor_fns);
    set_method_funcs(L, module_idx, methods, op_fns);
    lua_pushcfunction(L, t_gc), lua_setfield(L, meta, "__gc");
    lua_pushcfunction(L, t_tostring), lua_setfield(L, meta, "__tostring");
    lua_pushcfunction(L, t_len), lua_setfield(L, meta, "__len");
    lua_pushcfunction(L, l_add), lua_setfield(L, meta, "__add");
    lua_pushcfunction(L, l_sub), lua_setfield(L, meta, "__sub");
    lua_pushcfunction(L, l_mul), lua_setfield(L, meta, "__mul");
    lua_pushcfunction(L, l_unm), lua_setfield(L, meta, "__unm");
    lua_pushliteral(L, PFTL_TENSOR_MT), lua_setfield(L, meta, "__name");
    lua_pushvalue(L, methods), lua_setfield(L, meta, "__index");
    lua_pushvalue(L, methods), lua_setfield(L, module_idx, "Tensor"); /* methods table, for extension from Lua */
    lua_pop(L, 2);
}
