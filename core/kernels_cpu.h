/* kernels_cpu.h - what the CPU backend's files share: the vectorisable exp and erf, the gemm that
 * backend_cpu.c defines and the attention kernels call, and the reference GELU. The kernels themselves are
 * static in kernels_cpu.c, reached only through its tables (backend.h: one per instruction set), so that
 * the one source compiles into several objects. Only the CPU backend includes this header (and tests/c/,
 * to check the fast exp/erf against libm). */
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

/* linear layers' forward in the GEMM's own pass where pft's tiled GEMM computes (backend.h's
 * gemm_bias_gelu) */
bool pft_cpu_gemm_bias_gelu(pft_ctx *ctx, bool trans_b, int64_t M, int64_t N, int64_t K, const float *A, const float *B,
                            int64_t ldb, float *C, const float *bias, float *G, bool slope);

/* GELU and its slope, one element: every GELU kernel (and the tiled GEMM's epilogue, gemm_tiles.c)
 * computes each element with these, so the fused ones give the plain kernels' bits. d/dx [x Phi(x)] =
 * Phi(x) + x phi(x), Phi the normal CDF, phi its density. */
static inline float gelu_of(float v) {
    const float r2 = (float)M_SQRT1_2;
    return 0.5f * v * (1.0f + pft_fast_erff(v * r2));
}

static inline float gelu_slope(float v) {
    const float r2 = (float)M_SQRT1_2, r2pi = (float)(0.5 * M_2_SQRTPI * M_SQRT1_2); /* 1/sqrt(2), 1/sqrt(2 pi) */
    const float cdf = 0.5f * (1.0f + pft_fast_erff(v * r2)), pdf = r2pi * pft_fast_expf(-0.5f * v * v);
    return cdf + v * pdf;
}

/* gelu(v), and gelu'(v) in *slope, from one erf: each the bits of gelu_of and gelu_slope (the same
 * expressions) */
static inline float gelu_with_slope(float v, float *slope) {
    const float r2 = (float)M_SQRT1_2, r2pi = (float)(0.5 * M_2_SQRTPI * M_SQRT1_2);
    const float e = pft_fast_erff(v * r2);
    *slope = 0.5f * (1.0f + e) + v * (r2pi * pft_fast_expf(-0.5f * v * v));
    return 0.5f * v * (1.0f + e);
}

/* the same with libm's erff / expf, single-threaded: the reference the fast kernels are tested against */
void pft_cpu_gelu_forward_ref(float *y, const float *x, int64_t n);
void pft_cpu_gelu_backward_ref(float *dx, const float *dy, const float *x, int64_t n);

#endif
