/* lua_pft.h - shared pieces of the `pft.core` Lua binding (core/lua_*.c); not part of the C API.
 *
 *     pftl_state *S = pftl_state_get(L);            // this Lua state's context, from the registry
 *     pftl_tensor_box *box = pftl_push_box(L, S);    // push an empty pft.Tensor (owns nothing yet)
 *     pft_tensor *r = pft_add(a, b);                 // call core first ...
 *     return pftl_own(L, box, r);                    // ... the box owns r, or raise the core error
 *
 * One binding file per core subsystem, each registering its own functions and userdata types:
 *
 *     lua_open.c     luaopen_pft_core: the context, the module table, one pftl_register_* per file below
 *     lua_common.c   the per-state context, errors, argument checks, pft.Tensor boxes, class tables
 *     lua_ctx.c      ctx.h: threads, seed and RNG position, grad mode, counters, the allocation test hook
 *     lua_tensor.c   tensor.h, ops.h, autograd.h: pft.Tensor (construction, conversion, views, ops, backward)
 *     lua_optim.c    optim.h: pft.Optimizer (every method, checkpoint state included), clip_grad_norm
 *     lua_nn.c       nn.h: pft.Bert and its heads
 *     lua_text.c     text.h: pft.Tokenizer, pft.Batch, UTF-8 validation
 *     lua_io.c       safetensors.h: read_safetensors, save_tensors
 *     lua_data.c     encoded.h: pft.Encoded (the encoded dataset and its cache file), hashes, permutation
 *     lua_fs.c       the file system calls LuaJIT lacks (directories, file_stat)
 *     lua_host.c     the process: terminal, monotonic clock, SIGINT flags of the host (pft_main.c)
 *     lua_states.c   states.h: the frozen-prefix activation store (writer, mapped reader), weight hashes
 *
 * Files depend on lua_common.c, and lua_nn.c and lua_data.c on lua_text.c's pft.Batch and pft.Tokenizer
 * checkers; nothing calls back into lua_open.c. A metatable is created by the one file that owns the type;
 * the others only look it up by name when a function runs, so the order of registration does not matter.
 *
 * OWNERSHIP in the binding: a pft.Tensor userdata owns one reference to its pft_tensor and drops it in
 * __gc or t:free(), then sets the pointer to NULL, so it is released exactly once. The box is pushed
 * (with its metatable) BEFORE core is called, so a result is owned by Lua the moment core returns it and
 * a later Lua error cannot leak it. Temporary buffers handed to core (shapes, data, ids) are Lua userdata
 * on the stack, never malloc, for the same reason. Core never calls into Lua, and no Lua call that can
 * raise sits between a core call and the point where its result is owned. The other userdata types
 * (optimizer, model, tokenizer, batch, encoded dataset) follow the same rule with their own boxes.
 *
 * The context lives in a malloc'ed pftl_state found through the registry. Every box holding a core
 * object that uses the context counts as a handle on it; the sentinel's __gc (at lua_close) marks it
 * closed, and the context is freed when the last handle goes, whatever order the finalizers run in.
 * Dims and indices are 1-based in Lua (negative dims count from the end); token ids are 0-based. */
#ifndef PFT_LUA_PFT_H
#define PFT_LUA_PFT_H

#include <lauxlib.h>
#include <lua.h>

#include "ctx.h"
#include "tensor.h"
#include "text.h"

#define PFTL_TENSOR_MT "pft.Tensor"

typedef struct pftl_state {
    pft_ctx *ctx;
    long handles; /* live boxes holding a core object that uses ctx */
    int closed;   /* the module's sentinel was collected (lua_close) */
} pftl_state;

typedef struct pftl_tensor_box {
    pft_tensor *t;
    pftl_state *S;
} pftl_tensor_box;

/* --- lua_common.c ----------------------------------------------------------------------------------- */

/* The per-state context: created on the first luaopen in a Lua state, reused by later ones. */
void pftl_state_open(lua_State *L);
pftl_state *pftl_state_get(lua_State *L);
void pftl_state_unref(pftl_state *S); /* a box let go of its core object */

int pftl_core_error(lua_State *L, pft_ctx *ctx); /* raises the context's last error */
/* luaL_error with the whole printf syntax (lua_pushfstring knows no %lld); adds the caller's position. */
int pftl_errorf(lua_State *L, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

int64_t pftl_check_int64(lua_State *L, int arg); /* an integral number, |v| <= 9e15 */
int pftl_check_shape(lua_State *L, int idx, int64_t *shape); /* a table of sizes, or numbers from idx on; returns ndim */
int pftl_check_dim(lua_State *L, int arg, const pft_tensor *t, const char *op); /* 1-based or negative -> 0-based */

pftl_tensor_box *pftl_push_box(lua_State *L, pftl_state *S); /* an empty pft.Tensor on the stack */
int pftl_own(lua_State *L, pftl_tensor_box *box, pft_tensor *t); /* box owns t; raises when t is NULL */
int pftl_push_tensor(lua_State *L, pftl_state *S, pft_tensor *t); /* boxes an existing reference (retains) */
int pftl_is_tensor(lua_State *L, int idx);
pft_tensor *pftl_check_tensor(lua_State *L, int idx);
pft_tensor *pftl_opt_tensor(lua_State *L, int idx); /* nil or none -> NULL */

/* Sets each function of r (up to its {NULL, NULL}) as a field of the table at idx. */
void pftl_set_funcs(lua_State *L, int idx, const luaL_Reg *r);
/* Registers a userdata type: a metatable named mt (also its __name) with __index = a table of methods
 * (may be NULL), __gc and, when not NULL, __tostring. Leaves the stack as it was. */
void pftl_new_class(lua_State *L, const char *mt, const luaL_Reg *methods, lua_CFunction gc, lua_CFunction tostring);

/* --- lua_text.c: the types other files take as arguments ---------------------------------------------- */

typedef struct pftl_batch_box {
    pft_batch b; /* b.ids == NULL until filled */
    int filled;  /* b holds a whole batch (not freed, not half-written by a failed call) */
} pftl_batch_box;

pftl_batch_box *pftl_push_batch(lua_State *L);          /* an empty pft.Batch on the stack */
pftl_batch_box *pftl_check_batch(lua_State *L, int idx); /* a filled one, or raises */
pft_tokenizer *pftl_check_tokenizer(lua_State *L, int idx);

/* --- lua_data.c -------------------------------------------------------------------------------------- */

struct pft_encoded;
struct pft_encoded *pftl_check_encoded(lua_State *L, int idx); /* a live pft.Encoded, or raises */

/* --- one per file: add the file's functions to the module table at module_idx and register its types --- */

void pftl_register_ctx(lua_State *L, int module_idx);
void pftl_register_tensor(lua_State *L, int module_idx);
void pftl_register_optim(lua_State *L, int module_idx);
void pftl_register_nn(lua_State *L, int module_idx);
void pftl_register_text(lua_State *L, int module_idx);
void pftl_register_io(lua_State *L, int module_idx);
void pftl_register_data(lua_State *L, int module_idx);
void pftl_register_fs(lua_State *L, int module_idx);
void pftl_register_host(lua_State *L, int module_idx);
void pftl_register_states(lua_State *L, int module_idx);

#endif
