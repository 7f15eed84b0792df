/* tensor.h - float32 tensors with shape, strides and offset over refcounted storage.
 *
 *     pft_ctx *ctx = pft_ctx_new(2, 42);
 *     pft_tensor *x = pft_tensor_from_data(ctx, 2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
 *     pft_tensor *xt = pft_tensor_transpose(x, 0, 1);   // a view (ops.h): shares x's storage, shape [3, 2]
 *     pft_tensor *c = pft_tensor_contiguous(xt);       // a copy (ops.h), since xt is not contiguous
 *     pft_tensor_release(c); pft_tensor_release(xt); pft_tensor_release(x);
 *
 * LAYERING: this is the data layer, under the tape (autograd.h) and the ops (ops.h). The views that
 * gradients flow back through (reshape, permute, transpose, narrow, expand, contiguous) record tape
 * nodes, so they are ops: declared in ops.h, implemented in ops_view.c over pft_tensor_alias below.
 *
 * OWNERSHIP - the one rule:
 *   Every function that returns a pft_tensor * hands the caller one reference; the caller gives it back
 *   with pft_tensor_release. pft_tensor_retain adds a reference. A view holds a reference to its storage,
 *   not to the tensor it was taken from, so releasing the base while a view lives is fine. Storage is
 *   refcounted by the tensors over it and freed with the last of them (a storage over an mmap'ed file
 *   calls its own release hook instead of free). An autograd node holds references to its inputs; it never
 *   holds its own output (saved outputs are detached aliases), so graphs have no cycles. Borrowed
 *   pointers (const pft_tensor * arguments, t->grad) are valid while the owner holds its reference.
 *
 * Constructors return NULL on failure with the reason in pft_ctx_error(ctx). Data is 64-byte aligned.
 * Offsets and strides count elements, not bytes. Shapes are row-major; a scalar has ndim 0, numel 1. */
#ifndef PFT_TENSOR_H
#define PFT_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctx.h"

#define PFT_MAX_DIMS 8

typedef enum pft_device { PFT_DEVICE_CPU = 0, PFT_DEVICE_CUDA = 1, PFT_DEVICE_COUNT } pft_device;

typedef struct pft_storage {
    float *data;
    size_t numel;
    size_t bytes; /* allocated size (a multiple of 64); 0 for wrapped storage */
    int refcount;
    pft_device device;
    pft_ctx *ctx;
    /* Non-NULL for storage that pft did not allocate (an mmap'ed checkpoint): called instead of free. */
    void (*release)(struct pft_storage *s);
    void *owner;
    /* id: unique in its context, never reused. version: changed by every write to the data after the
     * storage was made (pft_tensor_mark_written), so that what was computed from the data once (a frozen
     * weight's packed GEMM operand, ctx.h) is known to be stale. */
    uint64_t id, version;
} pft_storage;

struct pft_node;

typedef struct pft_tensor {
    pft_ctx *ctx;
    pft_storage *storage;
    int ndim;
    int64_t shape[PFT_MAX_DIMS];
    int64_t stride[PFT_MAX_DIMS];
    int64_t offset;
    int refcount;
    bool requires_grad;       /* leaves: set by the user; results: set when the op was recorded */
    struct pft_tensor *grad;  /* leaves only: contiguous, same shape, allocated by the first backward;
                               * read it through pft_tensor_grad (autograd.h) */
    bool grad_zeroed;         /* grad's elements are zero but not yet written (pft_tensor_zero_grad) */
    uint8_t *grad_rows;       /* leaves, where known: grad_rows[r] != 0 for every row r (of shape[0]) of the grad
                               * buffer that may hold a nonzero (an embedding's gradient touches only the rows
                               * of a batch's ids); NULL: any row may (autograd.c) */
    struct pft_node *grad_fn; /* the node that produced this tensor; NULL for leaves */
    /* how the tensor drops its reference to grad_fn: set with it by the tape (pft_node_release), so that
     * this layer never calls into autograd.c */
    void (*grad_fn_release)(struct pft_node *node);
    char *name;               /* optional; parameters carry their Hugging Face name */
} pft_tensor;

/* --- construction ------------------------------------------------------------------------------- */
pft_tensor *pft_tensor_empty(pft_ctx *ctx, int ndim, const int64_t *shape); /* uninitialised */
pft_tensor *pft_tensor_zeros(pft_ctx *ctx, int ndim, const int64_t *shape);
pft_tensor *pft_tensor_full(pft_ctx *ctx, int ndim, const int64_t *shape, float value);
pft_tensor *pft_tensor_from_data(pft_ctx *ctx, int ndim, const int64_t *shape, const float *data);
/* A tensor over storage someone else owns (e.g. an mmap): `release` is called when the last view goes;
 * with release NULL the memory is only borrowed and must outlive every tensor over it. */
pft_tensor *pft_tensor_wrap(pft_ctx *ctx, int ndim, const int64_t *shape, float *data, size_t numel,
                            void (*release)(pft_storage *), void *owner);
/* Normal(mean, std) from the context's seed (Box-Muller over a counter-based generator). */
pft_tensor *pft_tensor_randn(pft_ctx *ctx, int ndim, const int64_t *shape, float mean, float std);
/* The counters pft_tensor_randn takes for numel values: a tensor that would be drawn but is about to be
 * overwritten (a weight a checkpoint holds) skips its draws by adding this to ctx->rng_counter, so that every
 * later draw (a new head, dropout) is the one it would have been. */
uint64_t pft_randn_counters(int64_t numel);
pft_tensor *pft_tensor_rand(pft_ctx *ctx, int ndim, const int64_t *shape, float lo, float hi);

pft_tensor *pft_tensor_retain(pft_tensor *t);
void pft_tensor_release(pft_tensor *t); /* NULL is fine */

/* --- queries ------------------------------------------------------------------------------------ */
int64_t pft_tensor_numel(const pft_tensor *t);
bool pft_tensor_is_contiguous(const pft_tensor *t);
bool pft_tensor_same_shape(const pft_tensor *a, const pft_tensor *b);
static inline float *pft_tensor_data(const pft_tensor *t) { return t->storage->data + t->offset; }
/* element at a multi-index (slow; for tests and printing) */
float pft_tensor_get(const pft_tensor *t, const int64_t *index);
/* Writes the elements in row-major order into dst (numel floats), whatever the strides. */
void pft_tensor_to_buffer(const pft_tensor *t, float *dst);
pft_status pft_tensor_set_name(pft_tensor *t, const char *name);
/* "[2, 3]" into buf */
char *pft_tensor_shape_str(const pft_tensor *t, char *buf, size_t n);

/* --- aliases (share storage; not differentiable; the differentiable views are in ops.h) ---------- */
/* An alias of t's data with no gradient history and requires_grad off. */
pft_tensor *pft_tensor_detach(pft_tensor *t);

/* --- in-place (never recorded; for optimizers, initialisation, tests) ---------------------------- */
/* Says that t's data was written in place: every writer of an existing tensor's data calls it (copy_ and
 * fill_ below do), so that nothing computed from the old contents is read again (ctx.h's packed operands).
 * The storage's kept packings are freed with the old contents: a weight written is one being trained,
 * whose packings an evaluation kept (an optimizer step writes it next), and they held its size in memory
 * through the training that followed until the next evaluation packed them again. */
void pft_tensor_mark_written(pft_tensor *t);
pft_status pft_tensor_copy_(pft_tensor *dst, const pft_tensor *src); /* same shape; any strides */
void pft_tensor_fill_(pft_tensor *t, float value);

/* --- internal (core/ only: the op layer builds its views on it) ---------------------------------- */
/* A new header over t's storage with the given geometry (ndim dims, strides and offset in elements), no
 * gradient history, requires_grad off; NULL on allocation failure (error set). ops_view.c records the
 * tape node of a differentiable view over it. */
pft_tensor *pft_tensor_alias(pft_tensor *t, int ndim, const int64_t *shape, const int64_t *stride, int64_t offset);

#endif
