/* lua_pft.h - shared pieces of the `pft.core` Lua binding (core/lua_*.c); not part of the C API.
 *
 *     pftl_state *S = pftl_state_get(L);            // this Lua state's context, from the registry
 *     pftl_tensor_box *box = pftl_push_box(L, S);    // push an empty pft.Tensor (owns nothing yet)
 *     pft_tensor *r = pft_add(a, b);                 // call core first ...
 *     return pftl_own(L, box, r);                    // ... the box owns r, or raise the core error
 *
 * OWNERSHIP in the binding: a pft.Tensor userdata owns one reference to its pft_tensor and drops it in
 * __gc or t:free(), then sets the pointer to NULL, so it is released exactly once. The box is pushed
 * (with its metatable) BEFORE core is called, so a result is owned by Lua the moment core returns it and
 * a later Lua error cannot leak it. Temporary buffers handed to core (shapes, data, ids) are Lua userdata
 * on the stack, never malloc, for the same reason. Core never calls into Lua, and no Lua call that can
 * raise sits between a core call and the point where its result is owned.
 *
 * The context lives in a malloc'ed pftl_state found through the registry. Every tensor or optimizer box
 * counts as a handle on it; the sentinel's __gc (at lua_close) marks it closed, and the context is freed
 * when the last handle goes, whatever order the finalizers run in. */
#ifndef PFT_LUA_PFT_H
#define PFT_LUA_PFT_H

#include <lauxlib.h>
#include <lua.h>

#include "autograd.h"
#include "ops.h"
#include "optim.h"
#include "tensor.h"
#include "text.h"

#define PFTL_TENSOR_MT "pft.Tensor"
#define PFTL_OPTIM_MT "pft.Optimizer"

typedef struct pftl_state {
    pft_ctx *ctx;
    long handles; /* live tensor and optimizer boxes holding a core object */
    int closed;   /* the module's sentinel was collected (lua_close) */
} pftl_state;

/* Boxes shared across binding files: each layout is defined once, here. */
#define PFTL_TOKENIZER_MT "pft.Tokenizer"
#define PFTL_BATCH_MT "pft.Batch"

typedef struct pftl_tok_box {
    struct pft_tokenizer *tok;
    pftl_state *S;
} pftl_tok_box;

typedef struct pftl_batch_box {
    pft_batch b; /* b.ids == NULL until filled */
    int filled;
} pftl_batch_box;

typedef struct pftl_optim_box {
    pft_optim *o; /* first member: lua_train.c reads it through the box */
    pftl_state *S;
    const char *kind; /* "adamw" or "sgd", for messages */
} pftl_optim_box;

typedef struct pftl_tensor_box {
    pft_tensor *t;
    pftl_state *S;
} pftl_tensor_box;

/* lua_pft.c */
pftl_state *pftl_state_get(lua_State *L);
void pftl_state_unref(pftl_state *S);
pftl_tensor_box *pftl_push_box(lua_State *L, pftl_state *S); /* an empty pft.Tensor on the stack */
int pftl_own(lua_State *L, pftl_tensor_box *box, pft_tensor *t); /* box owns t; raises when t is NULL */
int pftl_push_tensor(lua_State *L, pftl_state *S, pft_tensor *t); /* boxes an existing reference (retains) */
pft_tensor *pftl_check_tensor(lua_State *L, int idx);
pft_tensor *pftl_opt_tensor(lua_State *L, int idx); /* nil or none -> NULL */
int pftl_is_tensor(lua_State *L, int idx);
int pftl_core_error(lua_State *L, pft_ctx *ctx);
/* luaL_error with the whole printf syntax (lua_pushfstring knows no %lld); adds the caller's position. */
int pftl_errorf(lua_State *L, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
int pftl_check_shape(lua_State *L, int idx, int64_t *shape); /* a table of sizes; returns ndim */
int pftl_check_dim(lua_State *L, int arg, const pft_tensor *t, const char *op); /* 1-based or negative -> 0-based */
int64_t pftl_check_int64(lua_State *L, int arg);
/* Reads the nested table at idx: its shape into shape (returns ndim) and its numbers into a Lua-owned
 * buffer pushed on the stack (*buf as floats, or *ids as int32 when ids != NULL). */
int pftl_read_nested(lua_State *L, int idx, const char *op, int64_t *shape, float **buf, int32_t **ids);

/* lua_ops.c, lua_optim.c, lua_bert.c */
void pftl_register_ops(lua_State *L, int module_idx, int methods_idx, int meta_idx);
void pftl_register_optim(lua_State *L, int module_idx);
void pftl_register_fs(lua_State *L, int module_idx);
void pftl_register_bert(lua_State *L, int module_idx);
void pftl_register_train(lua_State *L, int module_idx); /* lua_train.c: after pftl_register_optim */
void pftl_register_data(lua_State *L, int module_idx);  /* lua_data.c: after pftl_register_bert (uses pft.Batch) */

#endif
