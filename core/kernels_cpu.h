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
 * (0 below -87.34, where expf is denormal or 0); pft_normal_tail as its comment says. */
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

/* The normal distribution's tail: 0.5 erfc(|v| / sqrt 2), the probability beyond |v|, and e^(-v^2 / 2) in
 * *e (GELU's CDF and density from one exp). For a = |v| / sqrt 2 < 4 the tail is 0.5 e^(-v^2/2) Q(a - 2), Q a
 * degree-14 polynomial fitted (least squares, relative) to the scaled complement e^(t^2) erfc(t) on [0, 4]:
 * 1.5e-7 absolute where it is subtracted from 1, and relative error within 3e-7 but for e^(-v^2/2)'s
 * argument, whose rounding grows with v^2 (2e-6 relative at |v| = 5.3, where the tail is 5e-8); past a = 4
 * the tail (under 8e-9) is 0. One polynomial and one exp for every lane: the erf this replaced evaluated two
 * polynomials (|x| < 1 and beyond) and an exp of its own for every lane, and GELU's slope a second exp.
 * Always inlined: a call inside the vectorised loops (GCC declined to inline it at -O2) runs them scalar. */
__attribute__((always_inline)) static inline float pft_normal_tail(float v, float *e) {
    const float a = (v < 0 ? -v : v) * (float)M_SQRT1_2, u = (a < 4.0f ? a : 4.0f) - 2.0f;
    float q = 5.140753601e-08f;
    q = q * u - 2.435504882e-07f;
    q = q * u + 2.172140086e-07f;
    q = q * u - 2.469370486e-07f;
    q = q * u + 4.759838703e-06f;
    q = q * u - 1.953345054e-05f;
    q = q * u + 5.618697833e-05f;
    q = q * u - 1.795669523e-04f;
    q = q * u + 5.911630578e-04f;
    q = q * u - 1.835836098e-03f;
    q = q * u + 5.441868212e-03f;
    q = q * u - 1.545920782e-02f;
    q = q * u + 4.180243611e-02f;
    q = q * u - 1.067965999e-01f;
    q = q * u + 2.553956807e-01f;
    *e = pft_fast_expf(-0.5f * v * v);
    return a < 4.0f ? 0.5f * *e * q : 0.0f; /* NaN: 0 (the callers' products with v carry it) */
}

/* the table's gemm (backend_cpu.c); the attention kernels call it inside their parallel region */
void pft_cpu_gemm(pft_ctx *ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b,
                  float beta, float *C, int64_t ldc, int64_t stride_c, int64_t batch);

/* the linear layers' GEMMs through pft's tiled GEMM: bias and GELU in its pass, a weight's packing kept
 * (backend.h's gemm_linear) */
bool pft_cpu_gemm_linear(pft_ctx *ctx, bool trans_b, int64_t M, int64_t N, int64_t K, const float *A, const float *B,
                         int64_t ldb, float beta, float *C, const float *bias, float *G, bool slope,
                         const pft_operand_key *b_key);

/* GELU and its slope, one element: every GELU kernel (and the tiled GEMM's epilogue, gemm_tiles.c)
 * computes each element with these, so the fused ones give the plain kernels' bits. gelu(x) = x Phi(x),
 * d/dx = Phi(x) + x phi(x), Phi the normal CDF (1 - tail above 0, the tail below), phi its density. */
__attribute__((always_inline)) static inline float normal_cdf(float v, float *e) {
    const float t = pft_normal_tail(v, e);
    return v >= 0 ? 1.0f - t : t;
}

__attribute__((always_inline)) static inline float gelu_of(float v) {
    float e;
    return v * normal_cdf(v, &e);
}

/* gelu(v), and gelu'(v) in *slope, from one tail: the product is gelu_of's */
__attribute__((always_inline)) static inline float gelu_with_slope(float v, float *slope) {
    const float r2pi = (float)(0.5 * M_2_SQRTPI * M_SQRT1_2); /* 1/sqrt(2 pi) */
    float e;
    const float cdf = normal_cdf(v, &e);
    *slope = cdf + v * (r2pi * e);
    return v * cdf;
}

__attribute__((always_inline)) static inline float gelu_slope(float v) {
    float s;
    gelu_with_slope(v, &s); /* (the unused product is not computed) */
    return s;
}

/* the same with libm's erff / expf, single-threaded: the reference the fast kernels are tested against */
void pft_cpu_gelu_forward_ref(float *y, const float *x, int64_t n);
void pft_cpu_gelu_backward_ref(float *dx, const float *dy, const float *x, int64_t n);

#endif
