/* autograd.h - the tape: record, backward, gradient accumulation, no-grad.
 *
 *     pft_tensor *w = ...; w->requires_grad = true;         // a parameter (a leaf)
 *     pft_tensor *y = pft_linear(x, w, b);                  // recorded: w needs a gradient
 *     pft_tensor *loss = pft_mean_all(y);
 *     pft_backward(loss, NULL);                             // w->grad += dloss/dw; the graph is freed
 *     pft_tensor_release(loss); pft_tensor_release(y);
 *
 * How it works. An op records a node only when grad mode is on and one of its inputs requires a gradient;
 * the result then requires a gradient and points at the node (grad_fn). A node holds references to its
 * inputs and whatever it saved for backward. pft_backward sorts the nodes reachable from the root,
 * gives the root the gradient (1 for a scalar) and runs each node's backward in reverse topological order.
 * A backward function asks pft_node_input_grad for the buffer of input i: NULL means that input needs no
 * gradient, so the kernel for it is skipped (this is where a frozen weight costs nothing); otherwise
 * it accumulates (+=) into the returned buffer: a leaf's .grad, or the producing node's gradient buffer.
 * A backward that writes every element (a GEMM with beta) asks pft_node_input_grad_beta instead: a new
 * buffer is then written over, not zero-filled first and read back. pft_tensor_zero_grad only marks a
 * leaf's gradient zero; the next backward or pft_tensor_grad writes it.
 * After backward every node of the graph is released (saved tensors and inputs dropped); running backward
 * again through it is an error, as is recording an op whose backward does not exist. */
#ifndef PFT_AUTOGRAD_H
#define PFT_AUTOGRAD_H

#include "tensor.h"

#define PFT_NODE_MAX_INPUTS 6
#define PFT_NODE_MAX_SAVED 6

struct pft_node;
/* dout: the gradient of the node's output, contiguous, shape of the output. */
typedef pft_status (*pft_backward_fn)(pft_ctx *ctx, struct pft_node *node, const pft_tensor *dout);

typedef struct pft_node {
    const char *op;                  /* for messages: "linear", "softmax", ... */
    pft_backward_fn backward;
    int refcount;
    bool released;                   /* true after backward ran through it */
    int n_inputs;
    pft_tensor *inputs[PFT_NODE_MAX_INPUTS];
    int n_saved;
    pft_tensor *saved[PFT_NODE_MAX_SAVED]; /* detached aliases: never the output itself */
    double f[4];                     /* scalar arguments (eps, p, scale, ...) */
    int64_t i[PFT_MAX_DIMS * 2];     /* integer arguments (dims, view geometry, ...) */
    void *extra;                     /* op-specific owned data, freed with free() on release */
    int out_ndim;
    int64_t out_shape[PFT_MAX_DIMS];
    pft_tensor *dout;                /* accumulated gradient of the output during backward */
    uint64_t visit;                  /* traversal stamp */
} pft_node;

/* True when an op over these inputs must be recorded (grad mode on, some input requires grad). */
bool pft_autograd_needed(pft_ctx *ctx, int n, pft_tensor *const *inputs);

/* Records `out` as produced by `op` from inputs. Retains the inputs. Returns the node (owned by out)
 * so the op can save tensors and arguments into it, or NULL on allocation failure (error set). */
pft_node *pft_autograd_record(pft_ctx *ctx, pft_tensor *out, const char *op, pft_backward_fn backward,
                              int n, pft_tensor *const *inputs);
/* Saves a detached alias of t in the node's next saved slot. */
pft_status pft_node_save(pft_ctx *ctx, pft_node *node, pft_tensor *t);

/* For use inside backward functions: the buffer to accumulate input i's gradient into, or NULL when
 * input i needs none. Allocated zero-filled on first use; counts one backward kernel. When that
 * allocation fails it also returns NULL with the error set, and pft_backward reports the failure. */
pft_tensor *pft_node_input_grad(pft_ctx *ctx, pft_node *node, int i);
/* The same buffer for a backward that writes every element of it, as a GEMM with beta does: *beta is 0 when
 * the buffer is new (not zero-filled: its elements are undefined until written; the zero fill and reading
 * the zeros back cost a step ~4% of its time), 1 when an earlier backward already added to it. */
pft_tensor *pft_node_input_grad_beta(pft_ctx *ctx, pft_node *node, int i, float *beta);
/* pft_node_input_grad for a backward that adds to rows[0 .. n-1] (of dim 0) of the buffer only (an
 * embedding's): a leaf's gradient then keeps which rows may be nonzero (tensor.h: grad_rows), and zeroing
 * it and the gradient norm touch those rows alone. */
pft_tensor *pft_node_input_grad_rows(pft_ctx *ctx, pft_node *node, int i, const int32_t *rows, int64_t n);

/* Backpropagates from root. droot may be NULL only when root is a scalar (numel 1). */
pft_status pft_backward(pft_tensor *root, const pft_tensor *droot);

/* Sets a leaf's gradient to zero (keeps the buffer; the zeros are written when read, below) or frees it. */
void pft_tensor_zero_grad(pft_tensor *t);
void pft_tensor_free_grad(pft_tensor *t);
/* t's gradient (NULL: none yet). Zeroing only marks the buffer (a step's zero fill of every gradient, then
 * the first GEMM reading the zeros back, cost ~2% of a dense step); this writes the zeros when someone
 * reads them. The backward's own kernels take the buffer through pft_node_input_grad(_beta). */
pft_tensor *pft_tensor_grad(pft_tensor *t);
/* Which rows (of dim 0) of t's gradient may be nonzero (grad_rows[r] != 0), or NULL where that is not known:
 * not an embedding's, another op added to it, or the buffer is held elsewhere too (a Lua t:grad() tensor,
 * which may be written anywhere). Readers that can skip zero rows (the gradient norm) ask here. */
const uint8_t *pft_tensor_grad_rows(const pft_tensor *t);
/* True when t has no gradient or it is zero by pft_tensor_zero_grad and not written since (readers that
 * would only find zeros may skip it) */
bool pft_tensor_grad_is_zero(const pft_tensor *t);

void pft_node_release(pft_node *node);

#endif
