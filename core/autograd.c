/* autograd.c - recording nodes, the backward pass, releasing the graph. See autograd.h. */
#include "autograd.h"

#include "backend.h"

#include <stdlib.h>
#include <string.h>

bool pft_autograd_needed(pft_ctx *ctx, int n, pft_tensor *const *inputs) {
    if (ctx->grad_enabled <= 0) return false;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad) return true;
    return false;
}

pft_node *pft_autograd_record(pft_ctx *ctx, pft_tensor *out, const char *op, pft_backward_fn backward, int n,
                              pft_tensor *const *inputs) {
    if (!backward) {
        pft_ctx_seterr(ctx, PFT_ERR_UNSUPPORTED, "%s: op has no backward, but an input requires a gradient", op);
        return NULL;
    }
    if (n > PFT_NODE_MAX_INPUTS) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "%s: %d inputs (at most %d)", op, n, PFT_NODE_MAX_INPUTS);
        return NULL;
    }
    pft_node *node = calloc(1, sizeof *node);
    if (!node) {
        pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "%s: cannot allocate an autograd node", op);
        return NULL;
    }
    node->op = op;
    node->backward = backward;
    node->refcount = 1;
    node->n_inputs = n;
    for (int i = 0; i < n; i++) node->inputs[i] = pft_tensor_retain(inputs[i]);
    node->out_ndim = out->ndim;
    memcpy(node->out_shape, out->shape, sizeof node->out_shape);
    pft_node_release(out->grad_fn);
    out->grad_fn = node;
    out->grad_fn_release = pft_node_release; /* tensor.c drops the node through it */
    out->requires_grad = true;
    return node;
}

pft_status pft_node_save(pft_ctx *ctx, pft_node *node, pft_tensor *t) {
    if (node->n_saved >= PFT_NODE_MAX_SAVED)
        return pft_ctx_seterr(ctx, PFT_ERR_ARG, "%s: too many saved tensors", node->op);
    pft_tensor *alias = pft_tensor_detach(t);
    if (!alias) return ctx->last_status;
    node->saved[node->n_saved++] = alias;
    return PFT_OK;
}

/* Drops what backward needed; the node stays as a marker that the graph was used. */
static void node_clear(pft_node *node) {
    for (int i = 0; i < node->n_inputs; i++) {
        pft_tensor_release(node->inputs[i]);
        node->inputs[i] = NULL;
    }
    for (int i = 0; i < node->n_saved; i++) {
        pft_tensor_release(node->saved[i]);
        node->saved[i] = NULL;
    }
    pft_tensor_release(node->dout);
    node->dout = NULL;
    free(node->extra);
    node->extra = NULL;
}

void pft_node_release(pft_node *node) {
    if (!node || --node->refcount > 0) return;
    node_clear(node);
    free(node);
}

/* --- which rows of a leaf's gradient may be nonzero (tensor.h: grad_rows) ----------------------------- *
 * An embedding's backward adds to the rows of a batch's ids only: a few hundred of a vocabulary's 30,522
 * rows (47 MB), which zeroing every step and summing for the gradient norm read whole. The rows are known
 * only while the leaf alone holds its buffer: a buffer someone else holds (Lua's t:grad()) may be written
 * anywhere, so its rows are forgotten and not tracked until a zeroing in full after that holder let go. */

static int64_t grad_row_count(const pft_tensor *t) { return t->ndim > 0 ? t->shape[0] : 0; }

static void forget_grad_rows(pft_tensor *t) {
    free(t->grad_rows);
    t->grad_rows = NULL;
}

static bool grad_held_elsewhere(const pft_tensor *t) { return t->grad && t->grad->refcount > 1; }

const uint8_t *pft_tensor_grad_rows(const pft_tensor *t) { return grad_held_elsewhere(t) ? NULL : t->grad_rows; }

/* Writes a leaf's gradient zero: only the rows that may hold nonzeros where those are known */
static void zero_leaf_grad(pft_tensor *t) {
    if (!pft_tensor_grad_rows(t)) {
        forget_grad_rows(t);
        pft_tensor_fill_(t->grad, 0.0f);
        return;
    }
    const pft_backend *be = pft_backend_for(t->grad);
    const int64_t rows = grad_row_count(t), len = pft_tensor_numel(t->grad) / rows;
    float *g = pft_tensor_data(t->grad);
    for (int64_t r = 0; r < rows;) { /* runs of marked rows, one fill each */
        if (!t->grad_rows[r]) {
            r++;
            continue;
        }
        int64_t end = r;
        while (end < rows && t->grad_rows[end]) t->grad_rows[end++] = 0;
        be->fill(t->ctx, g + r * len, 0.0f, (end - r) * len);
        r = end;
    }
}

/* After a backward took leaf t's buffer to add to rows[0 .. n-1] of it (rows NULL: to any row); zero: the
 * buffer was all zero when it was taken. Rows stay known while every writer names its rows. */
static void note_grad_rows(pft_tensor *t, bool zero, const int32_t *rows, int64_t n) {
    if (!rows || grad_held_elsewhere(t)) {
        forget_grad_rows(t);
        return;
    }
    const int64_t count = grad_row_count(t);
    if (!t->grad_rows) {
        if (!zero || count == 0) return; /* added onto rows nobody named: stays unknown */
        t->grad_rows = calloc((size_t)count, 1);
        if (!t->grad_rows) return; /* no memory for the marks: unknown, which is always correct */
    }
    for (int64_t k = 0; k < n; k++)
        if (rows[k] >= 0 && rows[k] < count) t->grad_rows[rows[k]] = 1;
}

/* Input i's gradient buffer, allocated on first use: zero-filled, or (zero_fill false) left unwritten with
 * *fresh true. rows: the rows (of dim 0) the caller adds to, NULL for any. */
static pft_tensor *input_grad(pft_ctx *ctx, pft_node *node, int i, bool zero_fill, bool *fresh, const int32_t *rows,
                              int64_t n_rows) {
    pft_tensor *t = node->inputs[i];
    if (fresh) *fresh = false;
    if (!t || !t->requires_grad) return NULL;
    pft_tensor **slot = t->grad_fn ? &t->grad_fn->dout : &t->grad;
    bool zero = false;
    if (!*slot) {
        *slot = zero_fill ? pft_tensor_zeros(ctx, t->ndim, t->shape) : pft_tensor_empty(ctx, t->ndim, t->shape);
        if (!*slot) return NULL;
        if (fresh) *fresh = true;
        zero = zero_fill;
    } else if (!t->grad_fn && t->grad_zeroed) { /* a leaf's zeroed gradient: zero it now, or let it be written */
        if (zero_fill) zero_leaf_grad(t), zero = true;
        else *fresh = true;
        t->grad_zeroed = false;
    }
    if (!t->grad_fn) note_grad_rows(t, zero, rows, n_rows);
    ctx->stats.backward_kernels++;
    return *slot;
}

pft_tensor *pft_node_input_grad(pft_ctx *ctx, pft_node *node, int i) {
    return input_grad(ctx, node, i, true, NULL, NULL, 0);
}

pft_tensor *pft_node_input_grad_rows(pft_ctx *ctx, pft_node *node, int i, const int32_t *rows, int64_t n) {
    return input_grad(ctx, node, i, true, NULL, rows, n);
}

pft_tensor *pft_node_input_grad_beta(pft_ctx *ctx, pft_node *node, int i, float *beta) {
    bool fresh;
    pft_tensor *g = input_grad(ctx, node, i, false, &fresh, NULL, 0);
    *beta = fresh ? 0.0f : 1.0f;
    return g;
}

/* Iterative DFS post-order over nodes reachable from root: parents after children, so the reverse of
 * the list runs every node after all the nodes that consume its output. */
static pft_status topo_sort(pft_ctx *ctx, pft_node *root, pft_node ***out, int *count) {
    uint64_t stamp = ++ctx->visit_stamp;
    int cap = 64, n = 0, sp = 0, scap = 64;
    pft_node **list = malloc(sizeof *list * (size_t)cap);
    struct frame { pft_node *node; int next; } *stack = malloc(sizeof *stack * (size_t)scap);
    if (!list || !stack) goto oom;
    root->visit = stamp;
    stack[sp++] = (struct frame){root, 0};
    while (sp) {
        struct frame *f = &stack[sp - 1];
        if (f->next < f->node->n_inputs) {
            pft_tensor *in = f->node->inputs[f->next++];
            pft_node *child = in ? in->grad_fn : NULL;
            if (!child || child->visit == stamp) continue;
            if (child->released) {
                free(list);
                free(stack);
                return pft_ctx_seterr(ctx, PFT_ERR_STATE,
                                      "backward: the graph through '%s' was already released by an earlier backward", child->op);
            }
            child->visit = stamp;
            if (sp == scap) {
                scap *= 2;
                void *p = realloc(stack, sizeof *stack * (size_t)scap);
                if (!p) goto oom;
                stack = p;
            }
            stack[sp++] = (struct frame){child, 0};
        } else {
            if (n == cap) {
                cap *= 2;
                void *p = realloc(list, sizeof *list * (size_t)cap);
                if (!p) goto oom;
                list = p;
            }
            list[n++] = f->node;
            sp--;
        }
    }
    free(stack);
    *out = list;
    *count = n;
    return PFT_OK;
oom:
    free(list);
    free(stack);
    return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "backward: out of memory sorting the graph");
}

pft_status pft_backward(pft_tensor *root, const pft_tensor *droot) {
    pft_ctx *ctx = root->ctx;
    char a[128], b[128];
    if (!droot && pft_tensor_numel(root) != 1)
        return pft_ctx_seterr(ctx, PFT_ERR_SHAPE,
                              "backward: the output has shape %s; backward without a gradient needs a scalar",
                              pft_tensor_shape_str(root, a, sizeof a));
    if (droot && pft_tensor_numel(droot) != pft_tensor_numel(root))
        return pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "backward: gradient of shape %s for an output of shape %s",
                              pft_tensor_shape_str(droot, b, sizeof b), pft_tensor_shape_str(root, a, sizeof a));
    if (!root->requires_grad)
        return pft_ctx_seterr(ctx, PFT_ERR_STATE, "backward: the output does not require a gradient "
                                                  "(no input requires one, or it was computed under no-grad)");
    pft_node *top = root->grad_fn;
    pft_tensor **seed_slot = top ? &top->dout : &root->grad;
    if (!top) forget_grad_rows(root); /* the seed is added to every element */
    if (top && top->released)
        return pft_ctx_seterr(ctx, PFT_ERR_STATE,
                              "backward: the graph through '%s' was already released by an earlier backward", top->op);
    if (!*seed_slot) {
        *seed_slot = pft_tensor_zeros(ctx, root->ndim, root->shape);
        if (!*seed_slot) return ctx->last_status;
    }
    float *g = pft_tensor_data(*seed_slot);
    if (droot) {
        float *tmp = malloc(sizeof(float) * (size_t)pft_tensor_numel(root));
        if (!tmp) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "backward: out of memory");
        pft_tensor_to_buffer(droot, tmp);
        for (int64_t k = 0, n = pft_tensor_numel(root); k < n; k++) g[k] += tmp[k];
        free(tmp);
    } else {
        g[0] += 1.0f;
    }
    if (!top) return PFT_OK; /* a leaf: its gradient is the seed */

    pft_node **order = NULL;
    int n = 0;
    pft_status st = topo_sort(ctx, top, &order, &n);
    if (st) return st;
    for (int k = 0; k < n; k++) order[k]->refcount++; /* keep nodes alive while inputs are dropped */
    pft_ctx_clear_error(ctx); /* a failure inside a backward (an allocation) shows up as last_status */
    for (int k = n - 1; k >= 0 && st == PFT_OK; k--) {
        pft_node *node = order[k];
        if (node->dout) st = node->backward(ctx, node, node->dout);
        if (st == PFT_OK && ctx->last_status != PFT_OK) st = ctx->last_status;
        node_clear(node);
        node->released = true;
    }
    for (int k = 0; k < n; k++) {
        if (st) { /* after a failure, leave no half-used graph behind either */
            node_clear(order[k]);
            order[k]->released = true;
        }
        pft_node_release(order[k]);
    }
    free(order);
    return st;
}

void pft_tensor_zero_grad(pft_tensor *t) {
    if (t->grad) t->grad_zeroed = true;
}

void pft_tensor_free_grad(pft_tensor *t) {
    pft_tensor_release(t->grad);
    t->grad = NULL;
    t->grad_zeroed = false;
    forget_grad_rows(t);
}

pft_tensor *pft_tensor_grad(pft_tensor *t) {
    if (t->grad && t->grad_zeroed) zero_leaf_grad(t);
    t->grad_zeroed = false;
    return t->grad;
}


bool pft_tensor_grad_is_zero(const pft_tensor *t) { return !t->grad || t->grad_zeroed; }
