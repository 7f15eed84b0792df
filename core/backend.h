/* backend.h - the table of device kernels behind the ops.
 *
 *     const pft_backend *be = pft_backend_for(t);      // the table of t's device
 *     be->gemm(ctx, false, true, M, N, K, 1.0f, x, K, 0, w, K, 0, 0.0f, y, N, 0, 1);
 *
 * The op layer (ops_*.c) checks shapes, allocates results and records the tape; it reaches the data
 * only through this table, so a CUDA backend is one more table (pft_backend_cuda) and no caller of
 * ops.h changes. All pointers are device pointers of that backend; matrices are row-major. Kernels
 * that a backend lacks are NULL and `supports` says so, so an op can fail with PFT_ERR_UNSUPPORTED.
 *
 * Kernel argument order (every entry below gemm): ctx, outputs (for backward: the gradients it writes),
 * saved statistics, the incoming gradient dy, inputs, weights, scalars, dims. Buffers are contiguous
 * unless a stride array comes with them (strides count elements; 0 on a broadcast dim). Backward
 * kernels ACCUMULATE (+=) into their outputs; a NULL output is a gradient nobody needs: skipped.
 * Every reduction sums in one fixed order (double accumulators), so results never depend on threads. */
#ifndef PFT_BACKEND_H
#define PFT_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor.h"

typedef enum pft_binary_op { PFT_BINARY_ADD, PFT_BINARY_SUB, PFT_BINARY_MUL } pft_binary_op;

/* The sequences of one attention call (ops_attention.c): q, k, v and out are `rows` rows of C floats, head
 * h in columns [h D, (h+1) D) with D = C / H; sequence b (of n) has len[b] rows from row start[b], and its
 * head h's probabilities [len[b], len[b]] start at poff[b H + h] in P (`total` floats in all), their
 * dropout draws at counter + coff[b H + h] (the same offsets as poff, but below). Dense [B, T, C] input is
 * n = B sequences of T at b T; packed input has its sequences back to back.
 * first_query: each sequence's first token is its only query (a sequence head reads nothing else of the
 * last layer). q, out, and their gradients then hold one row per sequence, row b (`rows` is n); k and v
 * are as above; block (b, h)'s probabilities are [1, len[b]] at poff[b H + h], and its
 * draws those of the whole block's first row: coff is where every query's blocks would start, so the
 * masks, and the counter the call advances by, are those of attention over every query. */
typedef struct pft_attention_layout {
    int64_t n, H, C, rows;
    int64_t maxlen, total; /* the longest len, the floats of P */
    const int64_t *start, *len, *poff, *coff;
    bool first_query;
} pft_attention_layout;

/* query rows of a sequence of len tokens: all of them, or its first */
static inline int64_t pft_attention_query_count(bool first_query, int64_t len) { return first_query ? (len > 0) : len; }

/* query rows of sequence b's blocks, and the row of q and out where they start */
static inline int64_t pft_attention_queries(const pft_attention_layout *L, int64_t b) {
    return pft_attention_query_count(L->first_query, L->len[b]);
}
static inline int64_t pft_attention_query_row(const pft_attention_layout *L, int64_t b) {
    return L->first_query ? b : L->start[b];
}

/* True when the sequences' queries cover every row of out (their counts add up to rows; they never
 * overlap): then an output written block by block is written whole */
static inline bool pft_attention_rows_covered(const pft_attention_layout *L) {
    int64_t covered = 0;
    for (int64_t b = 0; b < L->n; b++) covered += L->len[b] > 0 ? pft_attention_queries(L, b) : 0;
    return covered == L->rows;
}

typedef struct pft_backend {
    const char *name;
    pft_device device;
    bool (*supports)(const char *op);
    /* For b in [0, batch): C_b = alpha * op(A_b) op(B_b) + beta * C_b, with X_b = X + b * strideX
     * (stride 0 shares one matrix across the batch); op(X) is X or X^T per the flag; row-major. */
    void (*gemm)(pft_ctx *ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b,
                 float beta, float *C, int64_t ldc, int64_t stride_c, int64_t batch);
    /* The linear layers' GEMMs, in one pass over C where the backend can: C [M, N] = A [M, K] op(B) + beta C (B
     * [K, N], or [N, K] with trans_b, leading dim ldb), then bias [N] (NULL: none) added to every row, and
     * with G (NULL: none) also G [M, N] = gelu(C), each element as gelu_forward's; with slope as well, C is
     * left holding gelu'(C) instead, each element as gelu_backward's factor (what linear_gelu's backward
     * needs). b_key (NULL: none) names what B holds, a weight's contents (ctx.h): the backend may keep B's
     * packing between calls. false: not here (nothing written; the op runs gemm and any separate pass). */
    bool (*gemm_linear)(pft_ctx *ctx, bool trans_b, int64_t M, int64_t N, int64_t K, const float *A, const float *B,
                        int64_t ldb, float beta, float *C, const float *bias, float *G, bool slope,
                        const pft_operand_key *b_key);

    /* --- elementwise: `shape` (ndim dims) is the output's; out and dy are contiguous over it -------- */
    /* out = a op b, a and b read through their strides */
    void (*binary)(pft_ctx *ctx, float *out, const float *a, const int64_t *stride_a, const float *b,
                   const int64_t *stride_b, pft_binary_op op, int ndim, const int64_t *shape);
    /* dst (through stride_dst) += alpha * dy * other (through stride_other; other NULL reads as 1); a dst
     * element that several dy elements map to (stride 0) receives their sum, in row-major order */
    void (*binary_backward)(pft_ctx *ctx, float *dst, const int64_t *stride_dst, const float *dy, const float *other,
                            const int64_t *stride_other, float alpha, int ndim, const int64_t *shape);
    void (*scale)(pft_ctx *ctx, float *y, const float *x, float s, int64_t n); /* y = s x */
    void (*axpy)(pft_ctx *ctx, float *y, const float *x, float s, int64_t n);  /* y += s x */
    void (*gelu_forward)(pft_ctx *ctx, float *y, const float *x, int64_t n);   /* exact erf GELU */
    void (*gelu_backward)(pft_ctx *ctx, float *dx, const float *dy, const float *x, int64_t n);
    /* linear_gelu's epilogue over rows of `cols`: h += bias (NULL: none), g = gelu(h), each g element as
     * gelu_forward computes it, and with slope h is left holding gelu'(h) (as gelu_backward's factor), so
     * that the backward only multiplies; backward: dh = dy slope WRITTEN (not accumulated: dh is the op's own
     * scratch, so it needs no zero-fill; each element's product as gelu_backward's) and dbias += dh's
     * column sums (accumulated, as every gradient; either may be NULL), summed over fixed blocks of rows
     * in row order and the blocks then in block order (double accumulators). The only fallible part is
     * the blocks' scratch: PFT_OK, or an error set in ctx. */
    void (*bias_gelu_forward)(pft_ctx *ctx, float *g, float *h, const float *bias, int64_t rows, int64_t cols, bool slope);
    pft_status (*bias_gelu_backward)(pft_ctx *ctx, float *dh, float *dbias, const float *dy, const float *slope,
                                     int64_t rows, int64_t cols);
    void (*tanh_forward)(pft_ctx *ctx, float *y, const float *x, int64_t n);
    void (*tanh_backward)(pft_ctx *ctx, float *dx, const float *dy, const float *y, int64_t n); /* from the output */

    /* --- reductions over the middle dim of x viewed as [outer, n, inner] ---------------------------- */
    void (*sum_dim)(pft_ctx *ctx, float *y, const float *x, float scale, int64_t outer, int64_t n, int64_t inner);
    void (*sum_dim_backward)(pft_ctx *ctx, float *dx, const float *dy, float scale, int64_t outer, int64_t n,
                             int64_t inner);

    /* --- rows: x viewed as [rows, cols] ------------------------------------------------------------- */
    /* softmax of (x + mask) per row; mask (may be NULL) read through mask_stride over `shape` (x's);
     * a row whose every entry is -inf gives zeros (PyTorch would give NaN) */
    void (*softmax_forward)(pft_ctx *ctx, float *y, const float *x, const float *mask, const int64_t *mask_stride,
                            int ndim, const int64_t *shape);
    void (*softmax_backward)(pft_ctx *ctx, float *dx, const float *dy, const float *y, int64_t rows, int64_t cols);
    /* w, b may be NULL (no affine part); mean and rstd [rows] are saved for backward */
    void (*layernorm_forward)(pft_ctx *ctx, float *y, float *mean, float *rstd, const float *x, const float *w,
                              const float *b, float eps, int64_t rows, int64_t cols);
    void (*layernorm_backward)(pft_ctx *ctx, float *dx, float *dw, float *db, const float *dy, const float *mean,
                               const float *rstd, const float *x, const float *w, int64_t rows, int64_t cols);
    /* y = layernorm(dropout(h) + r) with s = dropout(h) + r saved, as dropout_forward, binary's add and
     * layernorm_forward in turn (p = 0: no dropout); backward: dh += dropout'(ds), dr += ds, dw, db as
     * layernorm_backward's, ds never stored (any of dh, dr, dw, db may be NULL); beta (NULL: both added)
     * 0 for dh or dr (beta[0], beta[1]) writes that gradient over its buffer instead, with the bits of adding
     * onto zeros */
    void (*dropout_add_layernorm_forward)(pft_ctx *ctx, float *y, float *s, float *mean, float *rstd, const float *h,
                                          const float *r, const float *w, const float *b, float p, uint64_t seed,
                                          uint64_t counter, float eps, int64_t rows, int64_t cols);
    void (*dropout_add_layernorm_backward)(pft_ctx *ctx, float *dh, float *dr, float *dw, float *db, const float *beta,
                                           const float *dy, const float *mean, const float *rstd, const float *s,
                                           const float *w, float p, uint64_t seed, uint64_t counter, int64_t rows,
                                           int64_t cols);
    /* LoRA's down projection, a [r, in] and x [N, in]: xa [N, r] = dropout(x) a^T (the mask of element i
     * at counter + i, as dropout_forward; p = 0: none); backward from dxa [N, r]: dx += dropout'(dxa a),
     * da += dxa^T dropout(x) (dx or da may be NULL), the mask drawn again */
    pft_status (*lora_down_forward)(pft_ctx *ctx, float *xa, const float *x, const float *a, int64_t N, int64_t in,
                                    int64_t r, float p, uint64_t seed, uint64_t counter);
    pft_status (*lora_down_backward)(pft_ctx *ctx, float *dx, float *da, const float *x, const float *dxa,
                                     const float *a, int64_t N, int64_t in, int64_t r, float p, uint64_t seed,
                                     uint64_t counter);
    /* element i is dropped when pft_rng_uniform_f(seed, counter + i) < p; kept ones scale by 1/(1-p) */
    void (*dropout_forward)(pft_ctx *ctx, float *y, const float *x, float p, uint64_t seed, uint64_t counter, int64_t n);
    void (*dropout_backward)(pft_ctx *ctx, float *dx, const float *dy, float p, uint64_t seed, uint64_t counter,
                             int64_t n);

    /* --- lookups and losses (ids and targets are host int32, already checked against their range) --- */
    void (*embedding_forward)(pft_ctx *ctx, float *y, const int32_t *ids, const float *weight, int64_t n, int64_t C);
    /* ids < 0 contribute nothing (padding_idx) */
    void (*embedding_backward)(pft_ctx *ctx, float *dweight, const float *dy, const int32_t *ids, int64_t n, int64_t C);
    /* loss[0] = inv_count * sum over rows whose target != ignore_index of (logsumexp(row) - row[target]);
     * lse [N] keeps each row's logsumexp for backward; dloss is the gradient of the scalar loss */
    void (*cross_entropy_forward)(pft_ctx *ctx, float *loss, float *lse, const float *logits, const int32_t *targets,
                                  int32_t ignore_index, float inv_count, int64_t N, int64_t K);
    void (*cross_entropy_backward)(pft_ctx *ctx, float *dlogits, const float *dloss, const float *lse,
                                   const float *logits, const int32_t *targets, int32_t ignore_index, float inv_count,
                                   int64_t N, int64_t K);
    void (*mse_forward)(pft_ctx *ctx, float *loss, const float *pred, const float *target, int64_t n);
    void (*mse_backward)(pft_ctx *ctx, float *dpred, const float *dloss, const float *pred, const float *target,
                         int64_t n);

    /* --- views -------------------------------------------------------------------------------------- */
    /* dst (through stride_dst, over `shape`) += dy (contiguous over shape), element by element in row-major
     * order: a dst element that several dy elements map to (stride 0, expand) adds them one by one in that
     * order (float adds, no double accumulator: the view backward's historical order) */
    void (*strided_accumulate)(pft_ctx *ctx, float *dst, const int64_t *stride_dst, const float *dy, int ndim,
                               const int64_t *shape);

    /* --- attention (fused, per (sequence, head) block; layout above) -------------------------------- */
    /* out = softmax(scale q k^T + mask) . v per block, with dropout p on the probabilities; P keeps the
     * probabilities before dropout (the mask is in them). out is written whole: rows in no sequence are 0.
     * mask (may be NULL; dense layouts only, all len equal to T): additive, [n, T] over keys. p == 0: no
     * dropout; otherwise element e of block (b, h) is dropped when pft_rng_uniform_f(seed, counter +
     * poff[b H + h] + e) < p, the kept ones scaled by 1/(1-p). The only fallible kernels (scratch memory):
     * PFT_OK, or an error set in ctx. */
    pft_status (*attention_forward)(pft_ctx *ctx, float *out, float *P, const float *q, const float *k, const float *v,
                                    const float *mask, float scale, float p, uint64_t seed, uint64_t counter,
                                    const pft_attention_layout *layout);
    /* from the forward's P and the same (p, seed, counter): with Pd = dropout(P), dV = Pd^T dO,
     * dS = P * (dP - rowsum(dP * P)) where dP = dropout'(dO V^T), dQ = scale dS K, dK = scale dS^T Q, each
     * added to its buffer, or (beta[i] 0, for dq, dk, dv in turn; beta NULL: all added) written over it:
     * rows in no sequence are then not written */
    pft_status (*attention_backward)(pft_ctx *ctx, float *dq, float *dk, float *dv, const float *beta, const float *P,
                                     const float *dout, const float *q, const float *k, const float *v, float scale, float p,
                                     uint64_t seed, uint64_t counter, const pft_attention_layout *layout);

    /* --- optimizers: in place over one dense parameter of n elements (optim.c) ----------------------- */
    /* Both read the gradient as gs g (gradient clipping's coefficient, 1 when it does not clip: the
     * product a clipped gradient would have held, without a pass that writes it).
     * AdamW (torch.optim.AdamW), with the step's scalars from optim.c: m = b1 m + (1-b1) g,
     * v = b2 v + (1-b2) g^2, p = p decay - step m / (sqrt(v) inv_sqrt_bc2 + eps) */
    void (*adamw_step)(pft_ctx *ctx, float *p, float *m, float *v, const float *g, float gs, float b1, float b2,
                       float eps, float decay, float step, float inv_sqrt_bc2, int64_t n);
    /* adamw_step over p[rows][len] where only the rows r with used[r] != 0 may hold a nonzero gradient: the
     * others' gradients are not read (an embedding's: autograd.h, pft_node_input_grad_rows); the same bits.
     * zero_rows (may be NULL) marks rows whose m and v are all +0 (a vocabulary's rows no batch has used
     * yet): unused, their update is p decay, and m and v are neither read nor written (the formula with g, m
     * and v +0 gives those bits and leaves m and v +0). NULL: adamw_step. */
    void (*adamw_step_rows)(pft_ctx *ctx, float *p, float *m, float *v, const float *g, float gs, float b1, float b2,
                            float eps, float decay, float step, float inv_sqrt_bc2, int64_t rows, int64_t len,
                            const uint8_t *used, const uint8_t *zero_rows);
    /* SGD (torch.optim.SGD, dampening 0): d = g + wd p; with buf (NULL: no momentum) buf = first ? d :
     * mu buf + d, d = buf; p -= lr d */
    void (*sgd_step)(pft_ctx *ctx, float *p, float *buf, const float *g, float gs, float lr, float wd, float mu,
                     bool first, int64_t n);
    /* sum of x_i^2 in double, in index order; returned to the host (gradient clipping's norm) */
    double (*sum_squares)(pft_ctx *ctx, const float *x, int64_t n);
    /* sum_squares of x[rows][len] where only the rows r with used[r] != 0 may be nonzero, reading those alone:
     * the same bits (an embedding's gradient: autograd.h, pft_node_input_grad_rows). NULL: sum_squares. */
    double (*sum_squares_rows)(pft_ctx *ctx, const float *x, int64_t rows, int64_t len, const uint8_t *used);
    /* x[i] = value for i < n (zeroed gradients: fresh ones in backward, and zero_grad's every step) */
    void (*fill)(pft_ctx *ctx, float *x, float value, int64_t n);
    void (*scale_inplace)(pft_ctx *ctx, float *x, float s, int64_t n); /* x *= s */
} pft_backend;

/* The CPU tables (immutable: function pointers, not state). pft_backend_cpu is the baseline build of the
 * kernels; on x86-64 the same kernels are also built for AVX2 and for AVX-512 (isa "avx2", "avx512"), and a
 * context uses the widest one the processor runs unless told otherwise (ctx.h, PFT_CPU_KERNELS). Every
 * table gives bit-identical results. */
extern const pft_backend pft_backend_cpu;
/* The table for isa ("baseline", "avx2", "avx512"; NULL or "auto": the widest this processor runs), or
 * NULL when this build lacks it or this processor cannot run it. */
const pft_backend *pft_backend_cpu_kernels(const char *isa);
const char *pft_backend_cpu_isa(const pft_backend *table); /* "baseline", ...; NULL for a non-CPU table */
/* The isas this build has and this processor runs, narrowest first: writes at most max, returns the count */
int pft_backend_cpu_list(const char **isas, int max);

const pft_backend *pft_backend_for(const pft_tensor *t);

#endif
