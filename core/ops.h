/* ops.h - differentiable operations on tensors.
 *
 *     pft_tensor *h = pft_linear(x, w1, b1);     // x [B, T, C] . w1 [4C, C]^T + b1 [4C] -> [B, T, 4C]
 *     pft_tensor *a = pft_gelu(h);
 *     pft_tensor *y = pft_linear(a, w2, b2);     // -> [B, T, C]
 *     pft_tensor *loss = pft_mse(y, target);    // scalar
 *     pft_backward(loss, NULL);
 *
 * Dimension legend, used in every comment of core/: B batch, T tokens, C channels (hidden size),
 * H heads, D head size (C / H), F feed-forward size, V vocabulary, L layers, N rows of a 2-D view.
 *
 * Every op returns a new tensor (one reference for the caller) or NULL with the error in the context.
 * Inputs may be any view (strided, transposed, broadcast); matmul hands transposed operands to BLAS as
 * transpose flags instead of copying them. An op records itself for backward only when an input
 * requires a gradient and grad mode is on; its backward computes the gradient of an input only when that
 * input requires one (a frozen weight costs no weight-gradient GEMM) and accumulates into it.
 * Integer inputs (token ids, targets) are plain int32 arrays: they are never differentiable. */
#ifndef PFT_OPS_H
#define PFT_OPS_H

#include "autograd.h"
#include "tensor.h"

/* --- views (ops_view.c): share storage; differentiable, gradients flow back through them ---------- */
pft_tensor *pft_tensor_reshape(pft_tensor *t, int ndim, const int64_t *shape); /* one dim may be -1; copies when t is not viewable */
pft_tensor *pft_tensor_permute(pft_tensor *t, const int *perm);
pft_tensor *pft_tensor_transpose(pft_tensor *t, int dim0, int dim1);
pft_tensor *pft_tensor_narrow(pft_tensor *t, int dim, int64_t start, int64_t length);
pft_tensor *pft_tensor_expand(pft_tensor *t, int ndim, const int64_t *shape); /* broadcast: size-1 dims get stride 0 */
pft_tensor *pft_tensor_contiguous(pft_tensor *t); /* t itself (retained) when already contiguous */

/* --- linear algebra (BLAS) ----------------------------------------------------------------------- */
/* a [..., M, K] x b [..., K, N] -> [..., M, N]; batch dims equal, or b 2-D and shared by every batch. */
pft_tensor *pft_matmul(pft_tensor *a, pft_tensor *b);
/* x [..., in] . w [out, in]^T + bias [out] -> [..., out]; bias may be NULL. */
pft_tensor *pft_linear(pft_tensor *x, pft_tensor *w, pft_tensor *bias);
/* gelu(linear(x, w, bias)) as one op, for a feed-forward's first projection: GEMM into h (no bias rows
 * written first), then one pass over h adds the bias and writes the GELU; backward's one pass over dy
 * and h gives dh (no zero-filled buffer) and the bias gradient, then linear's GEMMs from dh. h is kept for
 * backward, only the GELU returned. Results match linear + gelu's to rounding, not bit for bit (the bias
 * is added after the product rather than handed to the GEMM; its gradient sums in double). bias may be
 * NULL. */
pft_tensor *pft_linear_gelu(pft_tensor *x, pft_tensor *w, pft_tensor *bias);
/* LoRA: linear(x, w, bias) + scale (dropout(x) a^T) b^T, a [r, in], b [out, r], as one op: the down
 * projection in one pass over x (the backend's lora_down_*: dropout(x) is never written) and a thin GEMM
 * onto the base product (w + b a is never formed), dropout's mask drawn again in backward rather than
 * kept, and no gradient work for what needs none (a frozen w costs no dw). */
pft_tensor *pft_linear_lora(pft_tensor *x, pft_tensor *w, pft_tensor *bias, pft_tensor *a, pft_tensor *b, float scale,
                            float p, bool train);

/* --- elementwise, broadcasting as numpy does ---------------------------------------------------- */
pft_tensor *pft_add(pft_tensor *a, pft_tensor *b);
pft_tensor *pft_sub(pft_tensor *a, pft_tensor *b);
pft_tensor *pft_mul(pft_tensor *a, pft_tensor *b);
pft_tensor *pft_scale(pft_tensor *a, float s);
pft_tensor *pft_gelu(pft_tensor *a); /* exact: 0.5 x (1 + erf(x / sqrt 2)), as BERT uses */
pft_tensor *pft_tanh(pft_tensor *a);

/* --- reductions ---------------------------------------------------------------------------------- */
pft_tensor *pft_sum(pft_tensor *a, int dim, bool keepdim);
pft_tensor *pft_mean(pft_tensor *a, int dim, bool keepdim);
pft_tensor *pft_sum_all(pft_tensor *a);  /* -> scalar */
pft_tensor *pft_mean_all(pft_tensor *a); /* -> scalar */

/* --- normalisation, attention pieces ------------------------------------------------------------ */
/* softmax over the last dim of (a + mask); mask (may be NULL) broadcasts to a and gets no gradient.
 * A row whose every entry is -inf gives zeros (and zero gradient) where PyTorch gives NaN. */
pft_tensor *pft_softmax(pft_tensor *a, pft_tensor *mask);
/* layer norm over the last dim: (x - mean) / sqrt(var + eps) * w + b, biased variance as PyTorch. */
pft_tensor *pft_layernorm(pft_tensor *x, pft_tensor *w, pft_tensor *b, float eps);
/* Inverted dropout: zero with probability p, scale the rest by 1/(1-p). The mask of element i is a
 * function of (ctx seed, ctx counter + i) only; the counter advances by numel. Off when !train or p == 0
 * (then the result is x itself, retained). */
pft_tensor *pft_dropout(pft_tensor *x, float p, bool train);
/* layernorm(dropout(h, p, train) + residual, w, b, eps) as one op: the same result and gradients, bit for
 * bit, and the same draws of the ctx counter as the three ops; dropout(h) + residual is the only
 * intermediate kept (for backward). h and residual have one shape. */
pft_tensor *pft_dropout_add_layernorm(pft_tensor *h, pft_tensor *residual, pft_tensor *w, pft_tensor *b, float p,
                                      bool train, float eps);

/* Fused self-attention over q, k, v [B, T, C] split into H heads of D = C / H: per (batch, head)
 * softmax(q k^T * scale + mask) (dropout p on the probabilities when training) . v -> [B, T, C].
 * mask: additive float [B, T] over keys (0 attend, a large negative for padding), may be NULL. */
pft_tensor *pft_attention(pft_tensor *q, pft_tensor *k, pft_tensor *v, const float *mask, int64_t heads, float scale,
                          float dropout, bool train);
/* The same over packed sequences: q, k, v [N, C] hold n sequences back to back, sequence b being lens[b]
 * rows (padding removed, so no mask and no work on padding). */
pft_tensor *pft_attention_packed(pft_tensor *q, pft_tensor *k, pft_tensor *v, int64_t n, const int64_t *lens, int64_t heads,
                                 float scale, float dropout, bool train);
/* The same with each sequence's first token as its only query (what a sequence head reads of the last
 * layer): q [n, C] holds that token's query per sequence, out is [n, C]; k and v are [B, T, C] (lens NULL:
 * n = B, mask as above) or packed [N, C] (n sequences of lens, mask NULL). The probabilities, their dropout masks and
 * the counter's advance are those of the first row of pft_attention's / pft_attention_packed's blocks. */
pft_tensor *pft_attention_first(pft_tensor *q, pft_tensor *k, pft_tensor *v, const float *mask, const int64_t *lens,
                                int64_t n, int64_t heads, float scale, float dropout, bool train);

/* --- lookups and losses -------------------------------------------------------------------------- */
/* weight [V, C], ids [ndim..] -> [ids..., C]; backward scatter-adds into the rows of dweight. Ids out of
 * [0, V) are an error naming the position. */
pft_tensor *pft_embedding(pft_tensor *weight, const int32_t *ids, int ndim, const int64_t *shape);
/* The same, except that row padding_idx gets no gradient wherever it occurs (torch's
 * nn.Embedding(padding_idx=...), which BERT's word embeddings use for [PAD]). */
pft_tensor *pft_embedding_padded(pft_tensor *weight, const int32_t *ids, int ndim, const int64_t *shape, int32_t padding_idx);
/* logits [N, K], targets [N] -> scalar mean over targets != ignore_index (0 when every target is ignored). */
pft_tensor *pft_cross_entropy(pft_tensor *logits, const int32_t *targets, int64_t n, int32_t ignore_index);
/* x [n, C] -> [total, C]: row r of x goes to row rows[r], every other row is 0. The inverse of gathering
 * rows with pft_embedding(x, rows, ...); backward gathers the gradient's rows. Indices must be distinct. */
pft_tensor *pft_scatter_rows(pft_tensor *x, const int32_t *rows, int64_t total);
/* mean((pred - target)^2) over all elements; target gets no gradient. */
pft_tensor *pft_mse(pft_tensor *pred, pft_tensor *target);

#endif
