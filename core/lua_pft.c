/* lua_pft.c - the `pft.core` Lua module: context, pft.Tensor userdata, construction, conversion, views,
 * autograd entry points. Ops are in lua_ops.c, optimizers in lua_optim.c, BERT, its tokenizer and
 * encoded batches in lua_bert.c. Ownership rules: lua_pft.h.
 * Dims and indices are 1-based in Lua (negative dims count from the end); token ids are 0-based. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_pft.h"

#define STATE_KEY "pft.core.state"

/* --- the per-Lua-state context -------------------------------------------------------------------- */

pftl_state *pftl_state_get(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY);
    pftl_state **p = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!p || !*p) luaL_error(L, "pft.core: the context is gone (module closed)");
    return *p;
}

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

static int state_gc(lua_State *L) {
    pftl_state **p = lua_touserdata(L, 1);
    if (p && *p) {
        (*p)->closed = 1;
        state_maybe_free(*p);
        *p = NULL;
    }
    return 0;
}

/* --- errors and argument checks -------------------------------------------------------------------- */

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

/* --- boxes ---------------------------------------------------------------------------------------- */

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

int pftl_read_nested(lua_State *L, int idx, const char *op, int64_t *shape, float **buf, int32_t **ids) {
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
        nd = pftl_read_nested(L, 1, "tensor", shape, &buf, NULL);
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

static int t_grad(lua_State *L) {
    pft_tensor *t = pftl_check_tensor(L, 1);
    if (!t->grad) {
        lua_pushnil(L);
        return 1;
    }
    return pftl_push_tensor(L, pftl_state_get(L), t->grad);
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

/* --- context functions ---------------------------------------------------------------------------- */

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

/* Testing hook: the n-th next storage allocation fails (n = 0: the next one); a negative n turns it off. */
static int l_fail_alloc_after(lua_State *L) {
    pftl_state_get(L)->ctx->alloc_fail_after = (int)pftl_check_int64(L, 1);
    return 0;
}

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, pftl_is_tensor(L, 1));
    return 1;
}

/* --- module --------------------------------------------------------------------------------------- */

static const luaL_Reg module_fns[] = {
    {"tensor", l_tensor},           {"zeros", l_zeros},
    {"full", l_full},               {"randn", l_randn},
    {"rand", l_rand},               {"from_table", l_from_table},
    {"set_threads", l_set_threads}, {"threads", l_threads},
    {"seed", l_seed},               {"no_grad", l_no_grad},
    {"grad_enabled", l_grad_enabled}, {"live_tensors", l_live_tensors},
    {"stats", l_stats},             {"reset_stats", l_reset_stats},
    {"fail_alloc_after", l_fail_alloc_after}, {"is_tensor", l_is_tensor},
    {NULL, NULL}};

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

static void set_fns(lua_State *L, int idx, const luaL_Reg *r) {
    for (; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, idx, r->name);
    }
}

int luaopen_pft_core(lua_State *L) {
    /* one context per Lua state, reused when the module is loaded again in the same state */
    lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY);
    int fresh = lua_isnil(L, -1);
    lua_pop(L, 1);
    if (fresh) {
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
            return luaL_error(L, "pft.core: cannot allocate a context");
        }
        S->ctx = ctx;
        *p = S;
        lua_setfield(L, LUA_REGISTRYINDEX, STATE_KEY);
    }

    lua_newtable(L); /* module */
    int M = lua_gettop(L);
    lua_newtable(L); /* methods */
    int methods = lua_gettop(L);
    luaL_newmetatable(L, PFTL_TENSOR_MT);
    int meta = lua_gettop(L);

    set_fns(L, M, module_fns);
    set_fns(L, M, tensor_fns);
    set_fns(L, methods, tensor_fns);
    lua_pushcfunction(L, t_gc), lua_setfield(L, meta, "__gc");
    lua_pushcfunction(L, t_tostring), lua_setfield(L, meta, "__tostring");
    lua_pushcfunction(L, t_len), lua_setfield(L, meta, "__len");
    lua_pushliteral(L, "pft.Tensor"), lua_setfield(L, meta, "__name");
    lua_pushvalue(L, methods), lua_setfield(L, meta, "__index");
    lua_pushvalue(L, methods), lua_setfield(L, M, "Tensor"); /* methods table, for extension from Lua */

    pftl_register_ops(L, M, methods, meta);
    pftl_register_optim(L, M);
    pftl_register_fs(L, M);
    pftl_register_bert(L, M);
    pftl_register_train(L, M);
    pftl_register_data(L, M);
    lua_settop(L, M);
    return 1;
}
