/* kernels_cpu.h - the CPU kernels behind the backend table (backend_cpu.c fills pft_backend_cpu with them).
 * Signatures and semantics are the table's, documented in backend.h. Only the CPU backend itself
 * (backend_cpu.c, kernels_cpu.c) includes this header: the ops reach these through pft_backend_for.
 * (tests/c/ may, to check the fast exp/erf and the reference GELU.) */
#ifndef PFT_KERNELS_CPU_H
#define PFT_KERNELS_CPU_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"

/* --- vectorisable float exp and erf ------------------------------------------------------------------
 * Plain C that the compiler turns into SIMD code inside `#pragma omp simd` loops (libm's expf/erff are
 * scalar calls, and expf takes a slow errno path on underflow, which masked attention scores hit on every
 * padded column). No -ffast-math: the results are the same on every run and for every thread count.
 * Accuracy (checked against libm in tests/c/test_threads.c): pft_fast_expf within 2 ulp where expf is a normal number
 * (0 below -87.34, where expf is denormal or 0); pft_fast_erff within 3 ulp. */
static inline float pft_bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float pft_fast_expf(float x) {
    /* NaN fails both tests and clamps to -87.5 (no NaN reaches the int conversion; it is returned below) */
    const float xc = x > -87.5f ? (x < 88.72283f ? x : 88.72283f) : -87.5f;
    /* x = n ln2 + r, |r| <= ln2 / 2; n rounded to nearest by the 1.5 * 2^23 trick (no rint call) */
    const float shift = 12582912.0f;
    const float n = (xc * 1.44269504088896341f + shift) - shift;
    const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187e-06f; /* ln2 split hi + lo */
    /* e^r by its Taylor polynomial to degree 7 (remainder < 6e-9 relative on |r| <= 0.347) */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t e = (int32_t)n; /* in [-126, 128] after the clamp */
    /* 2^n as two factors so that n = 128 (x near 88.7) and n = -126 both stay normal */
    const float s1 = pft_bits_to_float((uint32_t)(127 + e / 2) << 23), s2 = pft_bits_to_float((uint32_t)(127 + e - e / 2) << 23);
    const float y = p * s1 * s2;
    return x < -87.33654f ? 0.0f : (x > 88.72283f ? INFINITY : (x != x ? x : y));
}

/* erf: |x| < 1: x P(x^2) (P fitted to erf(t)/t, 1.6e-9 relative); 1 <= |x| < 4: 1 - e^(-x^2) Q(|x| - 2.5)
 * (Q fitted to e^(t^2) erfc(t), 8e-9 relative); |x| >= 4: +-1 (erf rounds to 1 in float above 3.92). */
static inline float pft_fast_erff(float x) {
    const float a = x < 0 ? -x : x, a2 = a * a;
    float s = -9.728410931e-06f;
    s = s * a2 + 1.128817561e-04f;
    s = s * a2 - 8.487267842e-04f;
    s = s * a2 + 5.221261503e-03f;
    s = s * a2 - 2.686551745e-02f;
    s = s * a2 + 1.128378411e-01f;
    s = s * a2 - 3.761263859e-01f;
    s = s * a2 + 1.128379167e+00f;
    const float small = a * s;
    const float u = (a < 4.0f ? a : 4.0f) - 2.5f;
    float q = 1.065085087e-07f;
    q = q * u - 4.269337102e-07f;
    q = q * u + 9.528693509e-07f;
    q = q * u - 3.744433372e-06f;
    q = q * u + 1.617346030e-05f;
    q = q * u - 5.952952681e-05f;
    q = q * u + 2.108489829e-04f;
    q = q * u - 7.331467206e-04f;
    q = q * u + 2.467101960e-03f;
    q = q * u - 8.001696382e-03f;
    q = q * u + 2.493798782e-02f;
    q = q * u - 7.434733646e-02f;
    q = q * u + 2.108063643e-01f;
    const float big = 1.0f - pft_fast_expf(-(a < 4.0f ? a2 : 16.0f)) * q;
    const float r = a < 1.0f ? small : (a < 4.0f ? big : 1.0f);
    return x != x ? x : (x < 0 ? -r : r);
}

/* the table's gemm (backend_cpu.c); the attention kernels call it inside their parallel region */
void pft_cpu_gemm(pft_ctx *ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b,
                  float beta, float *C, int64_t ldc, int64_t stride_c, int64_t batch);

void pft_cpu_binary(pft_ctx *ctx, float *out, const float *a, const int64_t *stride_a, const float *b,
                    const int64_t *stride_b, pft_binary_op op, int ndim, const int64_t *shape);
void pft_cpu_binary_backward(pft_ctx *ctx, float *dst, const int64_t *stride_dst, const float *dy, const float *other,
                             const int64_t *stride_other, float alpha, int ndim, const int64_t *shape);
void pft_cpu_scale(pft_ctx *ctx, float *y, const float *x, float s, int64_t n);
void pft_cpu_axpy(pft_ctx *ctx, float *y, const float *x, float s, int64_t n);
void pft_cpu_gelu_forward(pft_ctx *ctx, float *y, const float *x, int64_t n);
void pft_cpu_gelu_backward(pft_ctx *ctx, float *dx, const float *dy, const float *x, int64_t n);
/* the same with libm's erff / expf, single-threaded: the reference the fast kernels are tested against */
void pft_cpu_gelu_forward_ref(float *y, const float *x, int64_t n);
void pft_cpu_gelu_backward_ref(float *dx, const float *dy, const float *x, int64_t n);
void pft_cpu_tanh_forward(pft_ctx *ctx, float *y, const float *x, int64_t n);
void pft_cpu_tanh_backward(pft_ctx *ctx, float *dx, const float *dy, const float *y, int64_t n);

void pft_cpu_sum_dim(pft_ctx *ctx, float *y, const float *x, float scale, int64_t outer, int64_t n, int64_t inner);
void pft_cpu_sum_dim_backward(pft_ctx *ctx, float *dx, const float *dy, float scale, int64_t outer, int64_t n,
                              int64_t inner);

void pft_cpu_softmax_forward(pft_ctx *ctx, float *y, const float *x, const float *mask, const int64_t *mask_stride,
                             int ndim, const int64_t *shape);
void pft_cpu_softmax_backward(pft_ctx *ctx, float *dx, const float *dy, const float *y, int64_t rows, int64_t cols);
void pft_cpu_layernorm_forward(pft_ctx *ctx, float *y, float *mean, float *rstd, const float *x, const float *w,
                               const float *b, float eps, int64_t rows, int64_t cols);
void pft_cpu_layernorm_backward(pft_ctx *ctx, float *dx, float *dw, float *db, const float *dy, const float *mean,
                                const float *rstd, const float *x, const float *w, int64_t rows, int64_t cols);
void pft_cpu_dropout_forward(pft_ctx *ctx, float *y, const float *x, float p, uint64_t seed, uint64_t counter,
                             int64_t n);
void pft_cpu_dropout_backward(pft_ctx *ctx, float *dx, const float *dy, float p, uint64_t seed, uint64_t counter,
                              int64_t n);

void pft_cpu_embedding_forward(pft_ctx *ctx, float *y, const int32_t *ids, const float *weight, int64_t n, int64_t C);
void pft_cpu_embedding_backward(pft_ctx *ctx, float *dweight, const float *dy, const int32_t *ids, int64_t n,
                                int64_t C);
void pft_cpu_cross_entropy_forward(pft_ctx *ctx, float *loss, float *lse, const float *logits, const int32_t *targets,
                                   int32_t ignore_index, float inv_count, int64_t N, int64_t K);
void pft_cpu_cross_entropy_backward(pft_ctx *ctx, float *dlogits, const float *dloss, const float *lse,
                                    const float *logits, const int32_t *targets, int32_t ignore_index, float inv_count,
                                    int64_t N, int64_t K);
void pft_cpu_mse_forward(pft_ctx *ctx, float *loss, const float *pred, const float *target, int64_t n);
void pft_cpu_mse_backward(pft_ctx *ctx, float *dpred, const float *dloss, const float *pred, const float *target,
                          int64_t n);

void pft_cpu_strided_accumulate(pft_ctx *ctx, float *dst, const int64_t *stride_dst, const float *dy, int ndim,
                                const int64_t *shape);

pft_status pft_cpu_attention_forward(pft_ctx *ctx, float *out, float *P, const float *q, const float *k, const float *v,
                                     const float *mask, float scale, float p, uint64_t seed, uint64_t counter,
                                     const pft_attention_layout *layout);
pft_status pft_cpu_attention_backward(pft_ctx *ctx, float *dq, float *dk, float *dv, const float *P, const float *dout,
                                      const float *q, const float *k, const float *v, float scale, float p,
                                      uint64_t seed, uint64_t counter, const pft_attention_layout *layout);

void pft_cpu_adamw_step(pft_ctx *ctx, float *p, float *m, float *v, const float *g, float b1, float b2, float eps,
                        float decay, float step, float inv_sqrt_bc2, int64_t n);
void pft_cpu_sgd_step(pft_ctx *ctx, float *p, float *buf, const float *g, float lr, float wd, float mu, bool first,
                      int64_t n);
double pft_cpu_sum_squares(pft_ctx *ctx, const float *x, int64_t n);
void pft_cpu_scale_inplace(pft_ctx *ctx, float *x, float s, int64_t n);

#endif
