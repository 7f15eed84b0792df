/* kernels_cpu.c - the CPU's elementwise, reduction, normalisation, loss, view, attention and optimizer
 * kernels.
 *
 * Threads: the big kernels split their rows (or fixed chunks of elements) over ctx->threads OpenMP
 * threads. Each row is computed by one thread with the same code whatever the split, and reductions
 * across rows (LayerNorm's dw, db) are split by column instead, each column summed over rows in row
 * order, or (where the rows' pass computes what is summed: LoRA's da, linear_gelu's bias gradient) summed
 * per fixed block of rows, the blocks then added in block order: results are bit-identical for every
 * thread count (tests/c/test_threads.c). Small inputs
 * (under PAR_MIN elements) stay on the calling thread.
 *
 * Each kernel is one plain loop nest over contiguous buffers; the broadcasting kernels first merge the
 * dims they can (so [B, T, C] + [C] runs as rows of C) and pick a tight inner loop for the common
 * stride patterns (1 and 0). Outputs never alias inputs (they are fresh tensors or gradient buffers), so
 * pointers are `restrict` and loops vectorise without alias checks. Reductions sum in a fixed order into
 * double accumulators: the result depends only on the data, never on how work is split. */
#include "kernels_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "rng.h"

/* --- threads ---------------------------------------------------------------------------------------- */

#define PAR_MIN 32768 /* elements: below this, a parallel region costs more than it saves */
#define CHUNK 8192    /* elementwise work is split into chunks of this many elements */

/* threads to use for `work` elements */
static int par_threads(const pft_ctx *ctx, int64_t work) {
#ifdef _OPENMP
    return work >= PAR_MIN && ctx->threads > 1 ? ctx->threads : 1;
#else
    (void)ctx, (void)work;
    return 1;
#endif
}

/* for (c = 0; c < nchunks(n); c++) { lo = c * CHUNK; hi = min(n, lo + CHUNK); BODY } over the threads */
#define PAR_CHUNKS(ctx, n, ...)                                                                            \
    do {                                                                                                   \
        const int64_t n_ = (n), nc_ = (n_ + CHUNK - 1) / CHUNK;                                            \
        const int nt_ = par_threads(ctx, n_);                                                              \
        _Pragma("omp parallel for num_threads(nt_) schedule(static) if (nt_ > 1)")                         \
        for (int64_t c_ = 0; c_ < nc_; c_++) {                                                             \
            const int64_t lo = c_ * CHUNK, hi = lo + CHUNK < n_ ? lo + CHUNK : n_;                         \
            __VA_ARGS__                                                                                    \
        }                                                                                                  \
    } while (0)

/* --- strided iteration ------------------------------------------------------------------------------ */

#define MAX_OPS 3

/* Dims of a broadcast loop after merging: operand k reads element (i0, .., in) at sum_d i_d st[k][d]. */
typedef struct loop_dims {
    int nd;
    int64_t shape[PFT_MAX_DIMS];
    int64_t st[MAX_OPS][PFT_MAX_DIMS];
} loop_dims;

/* Drops size-1 dims and merges a dim into the one outside it when every operand steps through both as
 * one (outer stride == inner stride * inner size). A NULL stride array reads as all zeros. */
static void loop_dims_init(loop_dims *L, int ndim, const int64_t *shape, int nops, const int64_t *const *st) {
    L->nd = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        int last = L->nd - 1;
        bool merge = last >= 0;
        for (int k = 0; k < nops && merge; k++) {
            int64_t s = st[k] ? st[k][d] : 0;
            merge = L->st[k][last] == s * shape[d];
        }
        if (merge) {
            L->shape[last] *= shape[d];
            for (int k = 0; k < nops; k++) L->st[k][last] = st[k] ? st[k][d] : 0;
        } else {
            L->shape[L->nd] = shape[d];
            for (int k = 0; k < nops; k++) L->st[k][L->nd] = st[k] ? st[k][d] : 0;
            L->nd++;
        }
    }
    if (L->nd == 0) { /* a single element */
        L->nd = 1;
        L->shape[0] = 1;
        for (int k = 0; k < nops; k++) L->st[k][0] = 0;
    }
}

/* Steps the outer (all but the innermost) dims' index and the operands' offsets; row-major order. */
static void loop_dims_next(const loop_dims *L, int nops, int64_t *idx, int64_t *off) {
    for (int d = L->nd - 2; d >= 0; d--) {
        for (int k = 0; k < nops; k++) off[k] += L->st[k][d];
        if (++idx[d] < L->shape[d]) return;
        for (int k = 0; k < nops; k++) off[k] -= L->st[k][d] * L->shape[d];
        idx[d] = 0;
    }
}

static int64_t loop_dims_rows(const loop_dims *L) {
    int64_t rows = 1;
    for (int d = 0; d < L->nd - 1; d++) rows *= L->shape[d];
    return rows;
}

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        stride[d] = s;
        s *= shape[d];
    }
}

/* Row sums in double as 8 interleaved partial sums, added pairwise at the end: one fixed order (so the
 * result is reproducible) that does not serialise on the adder's latency. */
#define LANES 8

/* The LANES partial sums as vectors, in as many registers as each kernel table's processor needs (the same
 * IEEE operation per lane, so the same bits in every table): written as a loop over an array of LANES
 * doubles, GCC kept the sums scalar; as one 8-double vector where the processor's vectors are narrower, it
 * split it through memory. */
#if defined(__AVX512F__)
#define LANE_VECS 1
#elif defined(__AVX__)
#define LANE_VECS 2
#else
#define LANE_VECS 4
#endif
#define VEC_LANES (LANES / LANE_VECS)
typedef float vec_f __attribute__((vector_size(VEC_LANES * sizeof(float))));
typedef double vec_d __attribute__((vector_size(VEC_LANES * sizeof(double))));

/* the u-th VEC_LANES of the LANES floats at x, as doubles */
#define LOAD_D(x, u) (__extension__({ vec_f f_; memcpy(&f_, (x) + (u) * VEC_LANES, sizeof f_); __builtin_convertvector(f_, vec_d); }))

/* LANES partial sums added pairwise */
static double pairwise(const double *p) { return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7])); }

/* The vectors' partial sums into an array p[LANES], for a row's tail */
#define UNPACK_LANES(p, v) double p[LANES]; memcpy(p, (v), sizeof p)

static double row_sum(const float *x, int64_t n) {
    vec_d v[LANE_VECS] = {{0}};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int u = 0; u < LANE_VECS; u++) v[u] += LOAD_D(x + i, u);
    UNPACK_LANES(p, v);
    for (int l = 0; i < n; i++, l++) p[l] += x[i];
    return pairwise(p);
}

/* sum of (x - mu)^2 over the row, in the same order as row_sum */
static double row_sqdev(const float *x, int64_t n, double mu) {
    vec_d v[LANE_VECS] = {{0}};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int u = 0; u < LANE_VECS; u++) {
            const vec_d d = LOAD_D(x + i, u) - mu;
            v[u] += d * d;
        }
    UNPACK_LANES(p, v);
    for (int l = 0; i < n; i++, l++) {
        const double d = x[i] - mu;
        p[l] += d * d;
    }
    return pairwise(p);
}

/* sum of a[i] b[i] in double, in the order of row_sum */
static double row_dot(const float *restrict a, const float *restrict b, int64_t n) {
    vec_d v[LANE_VECS] = {{0}};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int u = 0; u < LANE_VECS; u++) v[u] += LOAD_D(a + i, u) * LOAD_D(b + i, u);
    UNPACK_LANES(p, v);
    for (int l = 0; i < n; i++, l++) p[l] += (double)a[i] * b[i];
    return pairwise(p);
}

/* The largest of x[0..n) (-inf for none), from 16 lane maxima: max is exact in any order, so this is the
 * serial loop's value, in vector registers. */
static float row_max(const float *restrict x, int64_t n) {
    float lane[16];
    for (int l = 0; l < 16; l++) lane[l] = -INFINITY;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) lane[l] = x[i + l] > lane[l] ? x[i + l] : lane[l];
    for (int l = 0; i < n; i++, l++) lane[l] = x[i] > lane[l] ? x[i] : lane[l];
    for (int w = 8; w > 0; w /= 2)
        for (int l = 0; l < w; l++) lane[l] = lane[l + w] > lane[l] ? lane[l + w] : lane[l];
    return lane[0];
}

/* --- elementwise ------------------------------------------------------------------------------------ */

/* one row of out = a op b, with x = a's element and y = b's in EXPR; the op is chosen outside the loops */
#define BINARY_ROW(EXPR)                                                                                   \
    do {                                                                                                   \
        if (sa == 1 && sb == 1) {                                                                          \
            for (int64_t i = 0; i < n; i++) {                                                              \
                const float x = pa[i], y = pb[i];                                                          \
                po[i] = (EXPR);                                                                            \
            }                                                                                              \
        } else if (sa == 1 && sb == 0) {                                                                   \
            const float y = pb[0];                                                                         \
            for (int64_t i = 0; i < n; i++) {                                                              \
                const float x = pa[i];                                                                     \
                po[i] = (EXPR);                                                                            \
            }                                                                                              \
        } else if (sa == 0 && sb == 1) {                                                                   \
            const float x = pa[0];                                                                         \
            for (int64_t i = 0; i < n; i++) {                                                              \
                const float y = pb[i];                                                                     \
                po[i] = (EXPR);                                                                            \
            }                                                                                              \
        } else {                                                                                           \
            for (int64_t i = 0; i < n; i++) {                                                              \
                const float x = pa[i * sa], y = pb[i * sb];                                                \
                po[i] = (EXPR);                                                                            \
            }                                                                                              \
        }                                                                                                  \
    } while (0)

static void cpu_binary(pft_ctx *ctx, float *restrict out, const float *restrict a, const int64_t *stride_a,
                       const float *restrict b, const int64_t *stride_b, pft_binary_op op, int ndim,
                       const int64_t *shape) {
    int64_t so[PFT_MAX_DIMS];
    contiguous_strides(ndim, shape, so);
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) return;
    loop_dims L;
    loop_dims_init(&L, ndim, shape, 3, (const int64_t *const[]){so, stride_a, stride_b});
    const int64_t sa = L.st[1][L.nd - 1], sb = L.st[2][L.nd - 1];
    if (L.nd <= 2) { /* rows (or chunks of one row) over the threads; every element as in the serial loop */
        const int64_t rows = L.nd == 2 ? L.shape[0] : 1, cols = L.shape[L.nd - 1];
        const int64_t per = L.nd == 2 || cols < CHUNK ? cols : CHUNK, pieces = rows * ((cols + per - 1) / per);
        const int nt = par_threads(ctx, rows * cols);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < pieces; t++) {
            const int64_t r = t / ((cols + per - 1) / per), lo = (t % ((cols + per - 1) / per)) * per;
            const int64_t n = lo + per < cols ? per : cols - lo;
            const int64_t o0 = L.nd == 2 ? r * L.st[0][0] : 0, o1 = L.nd == 2 ? r * L.st[1][0] : 0, o2 = L.nd == 2 ? r * L.st[2][0] : 0;
            float *po = out + o0 + lo;
            const float *pa = a + o1 + lo * sa, *pb = b + o2 + lo * sb;
            switch (op) {
            case PFT_BINARY_ADD: BINARY_ROW(x + y); break;
            case PFT_BINARY_SUB: BINARY_ROW(x - y); break;
            case PFT_BINARY_MUL: BINARY_ROW(x * y); break;
            }
        }
        return;
    }
    const int64_t n = L.shape[L.nd - 1];
    int64_t idx[PFT_MAX_DIMS] = {0}, off[MAX_OPS] = {0};
    for (int64_t r = 0, rows = loop_dims_rows(&L); r < rows; r++) {
        float *po = out + off[0];
        const float *pa = a + off[1], *pb = b + off[2];
        switch (op) {
        case PFT_BINARY_ADD: BINARY_ROW(x + y); break;
        case PFT_BINARY_SUB: BINARY_ROW(x - y); break;
        case PFT_BINARY_MUL: BINARY_ROW(x * y); break;
        }
        loop_dims_next(&L, 3, idx, off);
    }
}

#undef BINARY_ROW

/* dst [cols] += alpha * dy's column sums over rows, each column in row order (what the general loop below
 * computes for this pattern, bit for bit): the linear layers' bias gradients, over the threads by column
 * ranges (the general loop ran on one thread while the other waited) */
static void column_sums(pft_ctx *ctx, float *restrict dst, const float *restrict dy, float alpha, int64_t rows,
                        int64_t cols) {
    const int nt = par_threads(ctx, rows * cols);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int b = 0; b < nt; b++) { /* nt column ranges of whole 16s */
        const int64_t lo = cols * b / nt / 16 * 16, hi = b == nt - 1 ? cols : cols * (b + 1) / nt / 16 * 16;
        for (int64_t r = 0; r < rows; r++) {
            const float *restrict g = dy + r * cols;
#pragma omp simd
            for (int64_t i = lo; i < hi; i++) dst[i] += alpha * g[i];
        }
    }
}

static void cpu_binary_backward(pft_ctx *ctx, float *restrict dst, const int64_t *stride_dst, const float *restrict dy,
                                const float *restrict other, const int64_t *stride_other, float alpha, int ndim,
                                const int64_t *shape) {
    if (ndim == 2 && stride_dst[0] == 0 && stride_dst[1] == 1 && !other && shape[0] > 0 && shape[1] > 0) {
        column_sums(ctx, dst, dy, alpha, shape[0], shape[1]);
        return;
    }
    int64_t sg[PFT_MAX_DIMS];
    contiguous_strides(ndim, shape, sg);
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) return;
    loop_dims L;
    loop_dims_init(&L, ndim, shape, 3, (const int64_t *const[]){sg, stride_dst, other ? stride_other : NULL});
    const int64_t n = L.shape[L.nd - 1], sd = L.st[1][L.nd - 1], sx = L.st[2][L.nd - 1];
    int64_t idx[PFT_MAX_DIMS] = {0}, off[MAX_OPS] = {0};
    for (int64_t r = 0, rows = loop_dims_rows(&L); r < rows; r++) {
        const float *g = dy + off[0];
        float *d = dst + off[1];
        const float *o = other ? other + off[2] : NULL;
        if (sd == 0) { /* the row reduces into one element */
            double acc = 0;
            if (!o)
                for (int64_t i = 0; i < n; i++) acc += g[i];
            else
                for (int64_t i = 0; i < n; i++) acc += (double)g[i] * o[i * sx];
            d[0] += alpha * (float)acc;
        } else if (sd == 1 && !o) {
            for (int64_t i = 0; i < n; i++) d[i] += alpha * g[i];
        } else if (sd == 1 && sx == 1) {
            for (int64_t i = 0; i < n; i++) d[i] += alpha * g[i] * o[i];
        } else if (sd == 1 && sx == 0) {
            const float s = alpha * o[0];
            for (int64_t i = 0; i < n; i++) d[i] += s * g[i];
        } else {
            for (int64_t i = 0; i < n; i++) d[i * sd] += alpha * g[i] * (o ? o[i * sx] : 1.0f);
        }
        loop_dims_next(&L, 3, idx, off);
    }
}

static void cpu_scale(pft_ctx *ctx, float *restrict y, const float *restrict x, float s, int64_t n) {
    PAR_CHUNKS(ctx, n, for (int64_t i = lo; i < hi; i++) y[i] = s * x[i];);
}

static void cpu_axpy(pft_ctx *ctx, float *restrict y, const float *restrict x, float s, int64_t n) {
    PAR_CHUNKS(ctx, n, for (int64_t i = lo; i < hi; i++) y[i] += s * x[i];);
}

#ifndef PFT_CPU_VARIANT /* one definition, in the baseline object */
/* the reference GELU forward, with libm's erff: tests compare the fast kernel against it */
void pft_cpu_gelu_forward_ref(float *restrict y, const float *restrict x, int64_t n) {
    const float r2 = (float)M_SQRT1_2;
    for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * r2));
}

void pft_cpu_gelu_backward_ref(float *restrict dx, const float *restrict dy, const float *restrict x, int64_t n) {
    const float r2 = (float)M_SQRT1_2, r2pi = (float)(0.5 * M_2_SQRTPI * M_SQRT1_2);
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        const float cdf = 0.5f * (1.0f + erff(v * r2)), pdf = r2pi * expf(-0.5f * v * v);
        dx[i] += dy[i] * (cdf + v * pdf);
    }
}
#endif

static void cpu_gelu_forward(pft_ctx *ctx, float *restrict y, const float *restrict x, int64_t n) {
    PAR_CHUNKS(ctx, n, { _Pragma("omp simd") for (int64_t i = lo; i < hi; i++) y[i] = gelu_of(x[i]); });
}

static void cpu_gelu_backward(pft_ctx *ctx, float *restrict dx, const float *restrict dy, const float *restrict x,
                              int64_t n) {
    PAR_CHUNKS(ctx, n, { _Pragma("omp simd") for (int64_t i = lo; i < hi; i++) dx[i] += dy[i] * gelu_slope(x[i]); });
}

/* linear_gelu's epilogue (backend.h): the GEMM's rows over the threads, h += bias, g = gelu(h) and (with
 * slope) h = gelu'(h) in one pass over each row */
static void cpu_bias_gelu_forward(pft_ctx *ctx, float *restrict g, float *restrict h, const float *restrict bias,
                                  int64_t rows, int64_t cols, bool slope) {
    const int nt = par_threads(ctx, rows * cols);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t r = 0; r < rows; r++) {
        float *restrict hr = h + r * cols, *restrict gr = g + r * cols;
        if (slope) {
#pragma omp simd
            for (int64_t j = 0; j < cols; j++) {
                float s;
                gr[j] = gelu_with_slope(bias ? hr[j] + bias[j] : hr[j], &s);
                hr[j] = s;
            }
        } else if (bias) {
#pragma omp simd
            for (int64_t j = 0; j < cols; j++) {
                const float v = hr[j] + bias[j];
                hr[j] = v;
                gr[j] = gelu_of(v);
            }
        } else {
#pragma omp simd
            for (int64_t j = 0; j < cols; j++) gr[j] = gelu_of(hr[j]);
        }
    }
}

#define BIAS_ROWS 64 /* rows per block of the bias gradient's partial sums: fixed, so the result is too */

/* dh = dy gelu'(h) (written; the slopes from the forward) and dbias += its column sums, in one pass over dy
 * and the slopes: blocks of BIAS_ROWS rows over the threads, each block's column sums in double in row
 * order, then the blocks' sums added in block order; so the bits depend on neither the thread count nor
 * the table */
static pft_status cpu_bias_gelu_backward(pft_ctx *ctx, float *restrict dh, float *restrict dbias, const float *restrict dy,
                                         const float *restrict slope, int64_t rows, int64_t cols) {
    if ((!dh && !dbias) || rows <= 0 || cols <= 0) return PFT_OK;
    const int64_t nb = (rows + BIAS_ROWS - 1) / BIAS_ROWS;
    double *part = NULL;
    if (dbias && !(part = malloc(sizeof(double) * (size_t)(nb * cols))))
        return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "linear_gelu backward: out of memory");
    const int nt = par_threads(ctx, rows * cols);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t blk = 0; blk < nb; blk++) {
        const int64_t r1 = (blk + 1) * BIAS_ROWS < rows ? (blk + 1) * BIAS_ROWS : rows;
        double *restrict pb = part ? part + blk * cols : NULL;
        if (pb) memset(pb, 0, sizeof(double) * (size_t)cols);
        for (int64_t r = blk * BIAS_ROWS; r < r1; r++) {
            const float *restrict gr = dy + r * cols, *restrict sr = slope + r * cols;
            float *restrict dr = dh ? dh + r * cols : NULL;
            if (dr && pb) {
#pragma omp simd
                for (int64_t j = 0; j < cols; j++) {
                    const float d = gr[j] * sr[j];
                    dr[j] = d;
                    pb[j] += d;
                }
            } else if (dr) {
#pragma omp simd
                for (int64_t j = 0; j < cols; j++) dr[j] = gr[j] * sr[j];
            } else {
#pragma omp simd
                for (int64_t j = 0; j < cols; j++) pb[j] += gr[j] * sr[j];
            }
        }
    }
    if (dbias) {
        for (int64_t blk = 1; blk < nb; blk++) {
            const double *restrict pb = part + blk * cols;
            for (int64_t j = 0; j < cols; j++) part[j] += pb[j];
        }
        for (int64_t j = 0; j < cols; j++) dbias[j] += (float)part[j];
        free(part);
    }
    return PFT_OK;
}

static void cpu_tanh_forward(pft_ctx *ctx, float *restrict y, const float *restrict x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
}

static void cpu_tanh_backward(pft_ctx *ctx, float *restrict dx, const float *restrict dy, const float *restrict y,
                              int64_t n) {
    PAR_CHUNKS(ctx, n, for (int64_t i = lo; i < hi; i++) dx[i] += dy[i] * (1.0f - y[i] * y[i]););
}

/* --- reductions ------------------------------------------------------------------------------------- */

#define SUM_BLOCK 256 /* columns summed at once into a stack block of double accumulators */

static void cpu_sum_dim(pft_ctx *ctx, float *restrict y, const float *restrict x, float scale, int64_t outer, int64_t n,
                        int64_t inner) {
    for (int64_t o = 0; o < outer; o++) {
        const float *xo = x + o * n * inner;
        if (inner == 1) {
            double acc = 0;
            for (int64_t k = 0; k < n; k++) acc += xo[k];
            y[o] = (float)(acc * scale);
            continue;
        }
        for (int64_t i0 = 0; i0 < inner; i0 += SUM_BLOCK) {
            const int64_t w = inner - i0 < SUM_BLOCK ? inner - i0 : SUM_BLOCK;
            double acc[SUM_BLOCK];
            for (int64_t i = 0; i < w; i++) acc[i] = 0;
            for (int64_t k = 0; k < n; k++) {
                const float *row = xo + k * inner + i0;
                for (int64_t i = 0; i < w; i++) acc[i] += row[i];
            }
            for (int64_t i = 0; i < w; i++) y[o * inner + i0 + i] = (float)(acc[i] * scale);
        }
    }
}

static void cpu_sum_dim_backward(pft_ctx *ctx, float *restrict dx, const float *restrict dy, float scale, int64_t outer,
                                 int64_t n, int64_t inner) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < n; k++) {
            float *row = dx + (o * n + k) * inner;
            const float *g = dy + o * inner;
            for (int64_t i = 0; i < inner; i++) row[i] += scale * g[i];
        }
}

/* --- rows ------------------------------------------------------------------------------------------- */

static void cpu_softmax_forward(pft_ctx *ctx, float *restrict y, const float *restrict x, const float *restrict mask,
                                const int64_t *mask_stride, int ndim, const int64_t *shape) {
    const int64_t cols = shape[ndim - 1];
    int64_t rows = 1;
    for (int d = 0; d < ndim - 1; d++) rows *= shape[d];
    if (cols == 0) return;
    const int64_t ms = mask ? mask_stride[ndim - 1] : 0;
    const int nt = par_threads(ctx, rows * cols);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t r = 0; r < rows; r++) {
        int64_t moff = 0;
        if (mask) /* the mask's offset of row r over the leading dims */
            for (int64_t d = ndim - 2, rem = r; d >= 0; d--) {
                moff += (rem % shape[d]) * mask_stride[d];
                rem /= shape[d];
            }
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float m = -INFINITY;
        if (mask) {
            const float *mr = mask + moff;
            for (int64_t j = 0; j < cols; j++) {
                yr[j] = xr[j] + mr[j * ms];
                m = yr[j] > m ? yr[j] : m;
            }
        } else {
            for (int64_t j = 0; j < cols; j++) {
                yr[j] = xr[j];
                m = xr[j] > m ? xr[j] : m;
            }
        }
        if (m == -INFINITY) { /* every position masked: no distribution to form; the row is zero */
            memset(yr, 0, sizeof(float) * (size_t)cols);
        } else {
#pragma omp simd
            for (int64_t j = 0; j < cols; j++) yr[j] = pft_fast_expf(yr[j] - m);
            const float inv = (float)(1.0 / row_sum(yr, cols));
            for (int64_t j = 0; j < cols; j++) yr[j] *= inv;
        }
    }
}

/* dx = y (dy - sum_j dy_j y_j) per row */
static void cpu_softmax_backward(pft_ctx *ctx, float *restrict dx, const float *restrict dy, const float *restrict y,
                                 int64_t rows, int64_t cols) {
    const int nt = par_threads(ctx, rows * cols);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * cols, *gr = dy + r * cols;
        float *dr = dx + r * cols;
        double dot = 0;
        for (int64_t j = 0; j < cols; j++) dot += (double)gr[j] * yr[j];
        const float fd = (float)dot;
        for (int64_t j = 0; j < cols; j++) dr[j] += yr[j] * (gr[j] - fd);
    }
}

/* one row of layernorm_forward */
static void layernorm_row(float *restrict yr, float *restrict mean, float *restrict rstd, const float *restrict xr,
                          const float *restrict w, const float *restrict b, float eps, int64_t cols) {
    const double mu = row_sum(xr, cols) / (double)cols;
    const double rs = 1.0 / sqrt(row_sqdev(xr, cols, mu) / (double)cols + eps); /* biased variance, as PyTorch */
    *mean = (float)mu;
    *rstd = (float)rs;
    const float fm = (float)mu, fr = (float)rs;
    if (w && b)
        for (int64_t j = 0; j < cols; j++) yr[j] = (xr[j] - fm) * fr * w[j] + b[j];
    else if (w)
        for (int64_t j = 0; j < cols; j++) yr[j] = (xr[j] - fm) * fr * w[j];
    else if (b)
        for (int64_t j = 0; j < cols; j++) yr[j] = (xr[j] - fm) * fr + b[j];
    else
        for (int64_t j = 0; j < cols; j++) yr[j] = (xr[j] - fm) * fr;
}

static void cpu_layernorm_forward(pft_ctx *ctx, float *restrict y, float *restrict mean, float *restrict rstd,
                                  const float *restrict x, const float *restrict w, const float *restrict b, float eps,
                                  int64_t rows, int64_t cols) {
    const int nt = par_threads(ctx, rows * cols);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t r = 0; r < rows; r++) layernorm_row(y + r * cols, mean + r, rstd + r, x + r * cols, w, b, eps, cols);
}

/* The row means of g and g h that a row's dx needs (layernorm_backward), summed in row_sum's order */
static void layernorm_row_means(float *m1, float *m2, const float *restrict gr, const float *restrict xr,
                                const float *restrict w, float mu, float rs, int64_t cols) {
    vec_d v1[LANE_VECS] = {{0}}, v2[LANE_VECS] = {{0}};
    int64_t j = 0;
    for (; j + LANES <= cols; j += LANES)
        for (int u = 0; u < LANE_VECS; u++) {
            vec_f g, x, wl;
            memcpy(&g, gr + j + u * VEC_LANES, sizeof g), memcpy(&x, xr + j + u * VEC_LANES, sizeof x);
            if (w) memcpy(&wl, w + j + u * VEC_LANES, sizeof wl), g = g * wl;
            const vec_f h = (x - mu) * rs;
            const vec_d gd = __builtin_convertvector(g, vec_d);
            v1[u] += gd;
            v2[u] += gd * __builtin_convertvector(h, vec_d);
        }
    UNPACK_LANES(p1, v1);
    UNPACK_LANES(p2, v2);
    for (int l = 0; j < cols; j++, l++) {
        const float g = w ? gr[j] * w[j] : gr[j], h = (xr[j] - mu) * rs;
        p1[l] += g;
        p2[l] += (double)g * h;
    }
    *m1 = (float)(pairwise(p1) / (double)cols), *m2 = (float)(pairwise(p2) / (double)cols);
}

/* dw += dy h, db += dy over the rows, split by column blocks, each column summed in row order */
static void layernorm_param_grads(pft_ctx *ctx, float *restrict dw, float *restrict db, const float *restrict dy,
                                  const float *restrict mean, const float *restrict rstd, const float *restrict x,
                                  int64_t rows, int64_t cols) {
    const int nt = par_threads(ctx, rows * cols);
    const int64_t CB = 64, nb = (cols + CB - 1) / CB;
    const int ntc = nb > 1 ? nt : 1;
#pragma omp parallel for num_threads(ntc) schedule(static) if (ntc > 1)
    for (int64_t cb = 0; cb < nb; cb++) {
        const int64_t j0 = cb * CB, j1 = j0 + CB < cols ? j0 + CB : cols;
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * cols, *gr = dy + r * cols;
            const float mu = mean[r], rs = rstd[r];
            if (dw)
                for (int64_t j = j0; j < j1; j++) dw[j] += gr[j] * ((xr[j] - mu) * rs);
            if (db)
                for (int64_t j = j0; j < j1; j++) db[j] += gr[j];
        }
    }
}

/* With h = (x - mean) rstd and g = dy w: dx = rstd (g - mean(g) - h mean(g h)); dw += dy h; db += dy.
 * dw and db sum over rows in row order. */
static void cpu_layernorm_backward(pft_ctx *ctx, float *restrict dx, float *restrict dw, float *restrict db,
                                   const float *restrict dy, const float *restrict mean, const float *restrict rstd,
                                   const float *restrict x, const float *restrict w, int64_t rows, int64_t cols) {
    const int nt = par_threads(ctx, rows * cols);
    if (dx) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * cols, *gr = dy + r * cols;
            const float mu = mean[r], rs = rstd[r];
            float m1, m2;
            layernorm_row_means(&m1, &m2, gr, xr, w, mu, rs, cols);
            float *dr = dx + r * cols;
            for (int64_t j = 0; j < cols; j++) {
                const float g = w ? gr[j] * w[j] : gr[j], h = (xr[j] - mu) * rs;
                dr[j] += rs * (g - m1 - h * m2);
            }
        }
    }
    if (dw || db) layernorm_param_grads(ctx, dw, db, dy, mean, rstd, x, rows, cols);
}

/* Dropout of n elements whose masks are drawn at counters base, base + 1, ...: dst = src / (1 - p) or 0.
 * Plain functions rather than loops inside the OpenMP chunk macro: GCC vectorises the 64-bit hash of the
 * counters here (AVX-512's 64-bit multiply) and judged the same loop unprofitable in the outlined body. */
static void dropout_block(float *restrict dst, const float *restrict src, int64_t n, float p, uint64_t seed, uint64_t base) {
    const float keep_scale = 1.0f / (1.0f - p);
    const uint64_t key = pft_rng_key(seed), thr = pft_rng_drop_threshold(p);
    uint64_t c = base * PFT_RNG_STEP;
    for (int64_t e = 0; e < n; e++, c += PFT_RNG_STEP)
        dst[e] = (pft_rng_u64_keyed(key, c) >> 40) < thr ? 0.0f : src[e] * keep_scale;
}

/* dx += the dropout of dy, the masks drawn again at base, base + 1, ... (a dropped element left as it was) */
static void dropout_accumulate_block(float *restrict dx, const float *restrict dy, int64_t n, float p, uint64_t seed,
                                     uint64_t base) {
    const float keep_scale = 1.0f / (1.0f - p);
    const uint64_t key = pft_rng_key(seed), thr = pft_rng_drop_threshold(p);
    uint64_t c = base * PFT_RNG_STEP;
    for (int64_t e = 0; e < n; e++, c += PFT_RNG_STEP)
        dx[e] = (pft_rng_u64_keyed(key, c) >> 40) < thr ? dx[e] : dx[e] + dy[e] * keep_scale;
}

/* g = g * keep_scale where kept[e] is nonzero, else 0 */
static void mask_like(float *restrict g, const float *restrict kept, int64_t n, float keep_scale) {
    for (int64_t e = 0; e < n; e++) g[e] = kept[e] != 0.0f ? g[e] * keep_scale : 0.0f;
}

static void cpu_dropout_forward(pft_ctx *ctx, float *restrict y, const float *restrict x, float p, uint64_t seed,
                                uint64_t counter, int64_t n) {
    PAR_CHUNKS(ctx, n, dropout_block(y + lo, x + lo, hi - lo, p, seed, counter + (uint64_t)lo););
}

/* the mask is drawn again from (seed, counter): nothing was stored */
static void cpu_dropout_backward(pft_ctx *ctx, float *restrict dx, const float *restrict dy, float p, uint64_t seed,
                                 uint64_t counter, int64_t n) {
    PAR_CHUNKS(ctx, n, dropout_accumulate_block(dx + lo, dy + lo, hi - lo, p, seed, counter + (uint64_t)lo););
}

/* y = layernorm(dropout(h) + r), row by row, s = dropout(h) + r kept for backward: what dropout_forward,
 * binary's add and layernorm_forward compute one after another, bit for bit, in one pass over each row
 * (element i's mask drawn at counter + i; p = 0: no dropout). */
static void cpu_dropout_add_layernorm_forward(pft_ctx *ctx, float *restrict y, float *restrict s, float *restrict mean,
                                              float *restrict rstd, const float *restrict h, const float *restrict r,
                                              const float *restrict w, const float *restrict b, float p, uint64_t seed,
                                              uint64_t counter, float eps, int64_t rows, int64_t cols) {
    const int nt = par_threads(ctx, rows * cols);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t row = 0; row < rows; row++) {
        const int64_t o = row * cols;
        float *sr = s + o;
        if (p > 0)
            dropout_block(sr, h + o, cols, p, seed, counter + (uint64_t)o);
        else
            memcpy(sr, h + o, sizeof(float) * (size_t)cols);
        for (int64_t j = 0; j < cols; j++) sr[j] = sr[j] + r[o + j];
        layernorm_row(y + o, mean + row, rstd + row, sr, w, b, eps, cols);
    }
}

/* ds = layernorm's dx of a piece of a row, as accumulated onto zeros (the +0 turns a -0 into +0, as that sum
 * did) */
static void layernorm_ds(float *restrict ds, const float *restrict gr, const float *restrict sr, const float *restrict w,
                         float mu, float rs, float m1, float m2, int64_t n) {
    if (w)
        for (int64_t j = 0; j < n; j++) ds[j] = 0.0f + rs * (gr[j] * w[j] - m1 - ((sr[j] - mu) * rs) * m2);
    else
        for (int64_t j = 0; j < n; j++) ds[j] = 0.0f + rs * (gr[j] - m1 - ((sr[j] - mu) * rs) * m2);
}

/* d = (add ? d : 0) + g */
static void add_onto(float *restrict d, const float *restrict g, bool add, int64_t n) {
    if (add)
        for (int64_t j = 0; j < n; j++) d[j] = d[j] + g[j];
    else
        for (int64_t j = 0; j < n; j++) d[j] = 0.0f + g[j];
}

/* d = (add ? d : 0) + the dropout of ds, the masks drawn again at base, base + 1, ... (a dropped element: d
 * as it was, or 0). Onto 0 this is dropout's forward: ds is never -0 and is scaled up, so 0 + its product
 * is the product. */
static void dropout_onto(float *restrict d, const float *restrict ds, bool add, int64_t n, float p, uint64_t seed,
                         uint64_t base) {
    if (add)
        dropout_accumulate_block(d, ds, n, p, seed, base);
    else
        dropout_block(d, ds, n, p, seed, base);
}

#define DS_PIECE 256 /* columns of ds on the stack at a time */

/* The gradients of that: ds = layernorm's dx (as accumulated onto zeros), dr += ds, dh += dropout'(ds)
 * (dh, dr, dw, db may each be NULL) -- the three ops' backward, bit for bit. ds goes through a piece of a row
 * on the stack, each output then in a loop of its own: one loop testing which outputs there are and drawing
 * the mask by the unkeyed generator per element ran scalar (4% of a dense bf16 step). */
static void cpu_dropout_add_layernorm_backward(pft_ctx *ctx, float *restrict dh, float *restrict dr, float *restrict dw,
                                               float *restrict db, const float *beta, const float *restrict dy,
                                               const float *restrict mean,
                                               const float *restrict rstd, const float *restrict s,
                                               const float *restrict w, float p, uint64_t seed, uint64_t counter,
                                               int64_t rows, int64_t cols) {
    const int nt = par_threads(ctx, rows * cols);
    const bool add_h = !beta || beta[0] != 0.0f, add_r = !beta || beta[1] != 0.0f; /* else onto 0, not read */
    if (dh || dr) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t row = 0; row < rows; row++) {
            const int64_t o = row * cols;
            const float *sr = s + o, *gr = dy + o;
            const float mu = mean[row], rs = rstd[row];
            float m1, m2, ds[DS_PIECE];
            layernorm_row_means(&m1, &m2, gr, sr, w, mu, rs, cols);
            for (int64_t j0 = 0; j0 < cols; j0 += DS_PIECE) {
                const int64_t n = cols - j0 < DS_PIECE ? cols - j0 : DS_PIECE;
                layernorm_ds(ds, gr + j0, sr + j0, w ? w + j0 : NULL, mu, rs, m1, m2, n);
                if (dr) add_onto(dr + o + j0, ds, add_r, n);
                if (dh && p > 0) dropout_onto(dh + o + j0, ds, add_h, n, p, seed, counter + (uint64_t)(o + j0));
                else if (dh) add_onto(dh + o + j0, ds, add_h, n);
            }
        }
    }
    if (dw || db) layernorm_param_grads(ctx, dw, db, dy, mean, rstd, s, rows, cols);
}

/* --- lookups and losses ----------------------------------------------------------------------------- */

static void cpu_embedding_forward(pft_ctx *ctx, float *restrict y, const int32_t *restrict ids,
                                  const float *restrict weight, int64_t n, int64_t C) {
    for (int64_t k = 0; k < n; k++) memcpy(y + k * C, weight + (int64_t)ids[k] * C, sizeof(float) * (size_t)C);
}

/* rows are added in position order, so a repeated id sums its gradients deterministically; a negative id
 * (a padding_idx position, see pft_embedding_padded) adds nothing */
static void cpu_embedding_backward(pft_ctx *ctx, float *restrict dweight, const float *restrict dy,
                                   const int32_t *restrict ids, int64_t n, int64_t C) {
    for (int64_t k = 0; k < n; k++) {
        if (ids[k] < 0) continue;
        float *row = dweight + (int64_t)ids[k] * C;
        const float *g = dy + k * C;
        for (int64_t c = 0; c < C; c++) row[c] += g[c];
    }
}

static void cpu_cross_entropy_forward(pft_ctx *ctx, float *restrict loss, float *restrict lse,
                                      const float *restrict logits, const int32_t *restrict targets, int32_t ignore_index,
                                      float inv_count, int64_t N, int64_t K) {
    double total = 0;
    for (int64_t r = 0; r < N; r++) {
        const float *xr = logits + r * K;
        float m = -INFINITY;
        for (int64_t j = 0; j < K; j++) m = xr[j] > m ? xr[j] : m;
        double s = 0;
        for (int64_t j = 0; j < K; j++) s += expf(xr[j] - m);
        const double l = (double)m + log(s);
        lse[r] = (float)l;
        if (targets[r] != ignore_index) total += l - xr[targets[r]];
    }
    loss[0] = (float)(total * inv_count);
}

/* dlogits += dloss / count * (softmax(row) - onehot(target)) for rows that count */
static void cpu_cross_entropy_backward(pft_ctx *ctx, float *restrict dlogits, const float *restrict dloss,
                                       const float *restrict lse, const float *restrict logits,
                                       const int32_t *restrict targets, int32_t ignore_index, float inv_count, int64_t N,
                                       int64_t K) {
    const float g = dloss[0] * inv_count;
    for (int64_t r = 0; r < N; r++) {
        if (targets[r] == ignore_index) continue;
        const float *xr = logits + r * K;
        float *dr = dlogits + r * K;
        const float l = lse[r];
        for (int64_t j = 0; j < K; j++) dr[j] += g * expf(xr[j] - l);
        dr[targets[r]] -= g;
    }
}

static void cpu_mse_forward(pft_ctx *ctx, float *restrict loss, const float *restrict pred, const float *restrict target,
                            int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)pred[i] - target[i];
        s += d * d;
    }
    loss[0] = (float)(s / (double)n);
}

static void cpu_mse_backward(pft_ctx *ctx, float *restrict dpred, const float *restrict dloss, const float *restrict pred,
                             const float *restrict target, int64_t n) {
    const float s = dloss[0] * 2.0f / (float)n;
    for (int64_t i = 0; i < n; i++) dpred[i] += s * (pred[i] - target[i]);
}

/* --- views ------------------------------------------------------------------------------------------ */

/* sequential in row-major order: that also fixes the order in which an expanded (stride 0) element sums */
static void cpu_strided_accumulate(pft_ctx *ctx, float *dst, const int64_t *stride_dst, const float *restrict dy, int ndim,
                                   const int64_t *shape) {
    int64_t n = 1, idx[PFT_MAX_DIMS] = {0};
    for (int i = 0; i < ndim; i++) n *= shape[i];
    for (int64_t k = 0; k < n; k++) {
        int64_t off = 0;
        for (int i = 0; i < ndim; i++) off += idx[i] * stride_dst[i];
        dst[off] += dy[k];
        for (int i = ndim - 1; i >= 0; i--) {
            if (++idx[i] < shape[i]) break;
            idx[i] = 0;
        }
    }
}

/* --- attention -------------------------------------------------------------------------------------- *
 * Threads: the (sequence, head) blocks are independent (each writes its own columns of out, dq, dk, dv),
 * so forward and backward hand whole blocks to ctx->threads OpenMP threads, each running the small GEMMs
 * single-threaded (pft_cpu_gemm sees it is inside a parallel region) with its own [T, T] scratch, and
 * fusing scores -> mask -> softmax -> dropout -> P V so the block stays in cache. A block's arithmetic is
 * the same whichever thread runs it: results do not depend on the thread count. */

/* A GEMM of batch 0 outside the region: sets BLAS to one thread before the region's threads call it
 * concurrently. */
static void blas_ready(pft_ctx *ctx) {
    pft_cpu_gemm(ctx, false, false, 1, 1, 1, 1.0f, NULL, 1, 0, NULL, 1, 0, 0.0f, NULL, 1, 0, 0);
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* threads for the blocks, given the work of all of them */
static int att_threads(const pft_ctx *ctx, int64_t blocks, int64_t work) {
#ifdef _OPENMP
    return ctx->threads > 1 && blocks > 1 && work >= 32768 ? (int)(blocks < ctx->threads ? blocks : ctx->threads) : 1;
#else
    (void)ctx, (void)blocks, (void)work;
    return 1;
#endif
}

static pft_status cpu_attention_forward(pft_ctx *ctx, float *out, float *P, const float *q, const float *k, const float *v,
                                        const float *mask, float scale, float p, uint64_t seed, uint64_t counter,
                                        const pft_attention_layout *L) {
    const int64_t H = L->H, C = L->C, D = C / H, n = L->n, maxlen = L->maxlen;
    const int64_t *start = L->start, *len = L->len, *poff = L->poff, *coff = L->coff;
    const bool drop = p > 0;
    const int nt = att_threads(ctx, n * H, L->total);
    float *scratch = drop ? malloc(sizeof(float) * (size_t)(maxlen * maxlen) * (size_t)nt + sizeof(float)) : NULL;
    if (drop && !scratch) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "attention: out of memory");
    if (L->rows * C > 0 && !pft_attention_rows_covered(L)) /* rows in no sequence are 0 */
        memset(out, 0, sizeof(float) * (size_t)(L->rows * C));
    blas_ready(ctx);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *mine = drop ? scratch + (size_t)thread_id() * (size_t)(maxlen * maxlen) : NULL;
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < n * H; bh++) {
            const int64_t b = bh / H, h = bh % H, T = len[b], QT = pft_attention_queries(L, b);
            if (T == 0) continue;
            const int64_t blk = start[b] * C + h * D, qblk = pft_attention_query_row(L, b) * C + h * D;
            float *S = P + poff[bh];
            pft_cpu_gemm(ctx, false, true, QT, T, D, scale, q + qblk, C, 0, k + blk, C, 0, 0.0f, S, T, 0, 1);
            for (int64_t r = 0; r < QT; r++) {
                float *row = S + r * T, mx = -INFINITY;
                if (mask)
#pragma omp simd
                    for (int64_t c = 0; c < T; c++) row[c] += mask[b * T + c];
                mx = row_max(row, T);
                /* sum in 8 interleaved lanes, added in a fixed order (vectorisable, reproducible) */
                float lane[8] = {0};
                int64_t c = 0;
                for (; c + 8 <= T; c += 8)
                    for (int l = 0; l < 8; l++) lane[l] += (row[c + l] = pft_fast_expf(row[c + l] - mx));
                for (; c < T; c++) lane[c % 8] += (row[c] = pft_fast_expf(row[c] - mx));
                const float sum = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
                const float inv = 1.0f / sum;
#pragma omp simd
                for (int64_t c2 = 0; c2 < T; c2++) row[c2] *= inv;
            }
            const float *Pv = S;
            if (drop) {
                dropout_block(mine, S, QT * T, p, seed, counter + (uint64_t)coff[bh]);
                Pv = mine;
            }
            pft_cpu_gemm(ctx, false, false, QT, D, T, 1.0f, Pv, T, 0, v + blk, C, 0, 0.0f, out + qblk, C, 0, 1);
        }
    }
    free(scratch);
    return PFT_OK;
}

static pft_status cpu_attention_backward(pft_ctx *ctx, float *dq, float *dk, float *dv, const float *beta, const float *P,
                                         const float *dO, const float *q, const float *k, const float *v, float scale, float p,
                                         uint64_t seed, uint64_t counter, const pft_attention_layout *L) {
    const int64_t H = L->H, C = L->C, D = C / H, n = L->n, maxlen = L->maxlen;
    const int64_t *start = L->start, *len = L->len, *poff = L->poff, *coff = L->coff;
    const bool drop = p > 0;
    const float bq = beta ? beta[0] : 1.0f, bk = beta ? beta[1] : 1.0f, bv = beta ? beta[2] : 1.0f;
    const int nt = att_threads(ctx, n * H, L->total);
    float *scratch = malloc(sizeof(float) * (size_t)(maxlen * maxlen * 2) * (size_t)nt + sizeof(float));
    if (!scratch) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "attention backward: out of memory");
    blas_ready(ctx);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *dP = scratch + (size_t)thread_id() * (size_t)(maxlen * maxlen * 2), *Pd = dP + maxlen * maxlen;
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < n * H; bh++) {
            const int64_t b = bh / H, h = bh % H, T = len[b], QT = pft_attention_queries(L, b);
            if (T == 0) continue;
            const int64_t blk = start[b] * C + h * D, qblk = pft_attention_query_row(L, b) * C + h * D;
            const float *Pbh = P + poff[bh];
            const uint64_t cbase = counter + (uint64_t)coff[bh];
            /* the forward's dropped P, its mask drawn once here for both dV and dP */
            if (drop) dropout_block(Pd, Pbh, QT * T, p, seed, cbase);
            if (dv) pft_cpu_gemm(ctx, true, false, T, D, QT, 1.0f, drop ? Pd : Pbh, T, 0, dO + qblk, C, 0, bv, dv + blk, C, 0, 1);
            if (!dq && !dk) continue; /* (a `continue` of the omp for: goes to the next block) */
            pft_cpu_gemm(ctx, false, true, QT, T, D, 1.0f, dO + qblk, C, 0, v + blk, C, 0, 0.0f, dP, T, 0, 1);
            /* dropout's backward with the mask read off Pd: an element of P that was kept is nonzero there
             * (P > 0, scaled up); where P is 0 the mask does not matter, dS below is P * (...) = 0 */
            if (drop) mask_like(dP, Pd, QT * T, 1.0f / (1.0f - p));
            for (int64_t r = 0; r < QT; r++) { /* dS = P * (dP - <dP, P>) row by row, in place in dP */
                float *g = dP + r * T;
                const float *pr = Pbh + r * T;
                const float dot = (float)row_dot(g, pr, T);
#pragma omp simd
                for (int64_t c = 0; c < T; c++) g[c] = pr[c] * (g[c] - dot);
            }
            if (dq) pft_cpu_gemm(ctx, false, false, QT, D, T, scale, dP, T, 0, k + blk, C, 0, bq, dq + qblk, C, 0, 1);
            if (dk) pft_cpu_gemm(ctx, true, false, T, D, QT, scale, dP, T, 0, q + qblk, C, 0, bk, dk + blk, C, 0, 1);
        }
    }
    free(scratch);
    return PFT_OK;
}

/* --- LoRA's down projection ---------------------------------------------------------------------- *
 * xa = dropout(x) a^T with a [r, in] and r small (4-64): a GEMM of that shape is bound by reading x,
 * and the dropout would need dropout(x) written out and read back. These read x once per row: the mask
 * drawn as dropout_forward draws it (element i at counter + i), the dropped row kept in a row buffer. */

#define LORA_ROWS 64 /* rows per block of the backward's partial sums of da: fixed, so the result is too */

/* d = dropout(x row) (p = 0: a copy) */
static void lora_dropped_row(float *restrict d, const float *restrict x, int64_t in, float p, uint64_t seed,
                             uint64_t base) {
    if (p > 0)
        dropout_block(d, x, in, p, seed, base);
    else
        memcpy(d, x, sizeof(float) * (size_t)in);
}

/* sum of a[k] b[k] in 16 float lanes, added in a fixed tree */
static float dot16(const float *restrict a, const float *restrict b, int64_t n) {
    float lane[16] = {0};
    int64_t k = 0;
    for (; k + 16 <= n; k += 16)
        for (int l = 0; l < 16; l++) lane[l] += a[k + l] * b[k + l];
    for (int l = 0; k < n; k++, l++) lane[l] += a[k] * b[k];
    for (int w = 8; w > 0; w /= 2)
        for (int l = 0; l < w; l++) lane[l] += lane[l + w];
    return lane[0];
}

static pft_status cpu_lora_down_forward(pft_ctx *ctx, float *restrict xa, const float *restrict x, const float *restrict a,
                                        int64_t N, int64_t in, int64_t r, float p, uint64_t seed, uint64_t counter) {
    const int nt = par_threads(ctx, N * in);
    float *scratch = malloc(sizeof(float) * (size_t)(in * nt) + sizeof(float));
    if (!scratch) return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "lora: out of memory");
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *d = scratch + (size_t)thread_id() * (size_t)in;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            lora_dropped_row(d, x + n * in, in, p, seed, counter + (uint64_t)(n * in));
            for (int64_t j = 0; j < r; j++) xa[n * r + j] = dot16(d, a + j * in, in);
        }
    }
    free(scratch);
    return PFT_OK;
}

/* From dxa [N, r], the gradient of xa: dx += dropout'(dxa a) and da += dxa^T dropout(x), either may be
 * NULL. da sums over blocks of LORA_ROWS rows, each block's partial sum then added in block order. */
static pft_status cpu_lora_down_backward(pft_ctx *ctx, float *restrict dx, float *restrict da, const float *restrict x,
                                         const float *restrict dxa, const float *restrict a, int64_t N, int64_t in,
                                         int64_t r, float p, uint64_t seed, uint64_t counter) {
    const int64_t nb = (N + LORA_ROWS - 1) / LORA_ROWS, ra = r * in;
    const int nt = par_threads(ctx, N * in) < nb ? par_threads(ctx, N * in) : (int)(nb > 0 ? nb : 1);
    float *scratch = malloc(sizeof(float) * (size_t)(2 * in * nt) + sizeof(float));
    float *part = da ? calloc((size_t)(nb * ra) + 1, sizeof(float)) : NULL;
    if (!scratch || (da && !part)) {
        free(scratch), free(part);
        return pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "lora backward: out of memory");
    }
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *d = scratch + (size_t)thread_id() * (size_t)(2 * in), *acc = d + in;
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < nb; blk++)
            for (int64_t n = blk * LORA_ROWS; n < N && n < (blk + 1) * LORA_ROWS; n++) {
                const float *g = dxa + n * r;
                const uint64_t base = counter + (uint64_t)(n * in);
                if (dx) { /* acc = dxa[n] a, then the kept elements into dx */
                    for (int64_t k = 0; k < in; k++) acc[k] = 0.0f;
                    for (int64_t j = 0; j < r; j++)
                        for (int64_t k = 0; k < in; k++) acc[k] += g[j] * a[j * in + k];
                    dropout_accumulate_block(dx + n * in, acc, in, p, seed, base); /* p = 0: dx += acc */
                }
                if (da) {
                    lora_dropped_row(d, x + n * in, in, p, seed, base);
                    float *pb = part + blk * ra;
                    for (int64_t j = 0; j < r; j++)
                        for (int64_t k = 0; k < in; k++) pb[j * in + k] += g[j] * d[k];
                }
            }
    }
    if (da) {
        PAR_CHUNKS(ctx, ra, for (int64_t e = lo; e < hi; e++) {
            float sum = 0.0f;
            for (int64_t blk = 0; blk < nb; blk++) sum += part[blk * ra + e];
            da[e] += sum;
        });
    }
    free(scratch), free(part);
    return PFT_OK;
}

/* --- optimizers ------------------------------------------------------------------------------------- *
 * Elementwise: AdamW splits into chunks over the threads (each element's update is the same whoever runs
 * it); SGD runs on one thread. */

/* One element's update: the one formula both entries below run */
static inline void adamw_element(float *restrict p, float *restrict m, float *restrict v, float gi, float b1, float b2,
                                 float eps, float decay, float step, float inv_sqrt_bc2) {
    *m = b1 * *m + (1.0f - b1) * gi;
    *v = b2 * *v + (1.0f - b2) * gi * gi;
    const float denom = sqrtf(*v) * inv_sqrt_bc2 + eps;
    *p = *p * decay - step * *m / denom;
}

static void cpu_adamw_step(pft_ctx *ctx, float *restrict p, float *restrict m, float *restrict v, const float *restrict g,
                           float gs, float b1, float b2, float eps, float decay, float step, float inv_sqrt_bc2, int64_t n) {
    PAR_CHUNKS(ctx, n, for (int64_t i = lo; i < hi; i++)
                           adamw_element(p + i, m + i, v + i, gs * g[i], b1, b2, eps, decay, step, inv_sqrt_bc2););
}

/* adamw_step where only the rows marked in used may hold a nonzero gradient: the others' gradient is +0 (a
 * zeroed buffer), taken as the product gs * +0 the full kernel would form, without reading it; of those,
 * the rows marked in zero_rows (m and v +0) only decay: m = b1 0 + (1 - b1) 0 = +0, v likewise, and
 * p decay - step 0 / eps is p decay, bit for bit */
static void cpu_adamw_step_rows(pft_ctx *ctx, float *restrict p, float *restrict m, float *restrict v,
                                const float *restrict g, float gs, float b1, float b2, float eps, float decay, float step,
                                float inv_sqrt_bc2, int64_t rows, int64_t len, const uint8_t *used, const uint8_t *zero_rows) {
    const float g0 = gs * 0.0f;
    PAR_CHUNKS(ctx, rows * len, for (int64_t i = lo; i < hi;) {
        const int64_t r = i / len, end = (r + 1) * len < hi ? (r + 1) * len : hi;
        if (used[r])
            for (; i < end; i++) adamw_element(p + i, m + i, v + i, gs * g[i], b1, b2, eps, decay, step, inv_sqrt_bc2);
        else if (zero_rows && zero_rows[r])
            for (; i < end; i++) p[i] *= decay;
        else
            for (; i < end; i++) adamw_element(p + i, m + i, v + i, g0, b1, b2, eps, decay, step, inv_sqrt_bc2);
    });
}

static void cpu_sgd_step(pft_ctx *ctx, float *restrict p, float *restrict buf, const float *restrict g, float gs, float lr,
                         float wd, float mu, bool first, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float d = gs * g[i] + wd * p[i];
        if (buf) {
            buf[i] = first ? d : mu * buf[i] + d;
            d = buf[i];
        }
        p[i] -= lr * d;
    }
}

/* Squares of a chunk in SQ_LANES running sums (element i into sum i % SQ_LANES), added in a fixed tree:
 * independent sums instead of one chain of dependent adds, so the loop vectorises and pipelines, and the
 * order is set by the chunk alone (every table, every thread count gives the same bits). */
#define SQ_LANES 16
static double sum_squares_chunk(const float *restrict x, int64_t n) {
    double lane[SQ_LANES] = {0};
    int64_t i = 0;
    for (; i + SQ_LANES <= n; i += SQ_LANES)
        for (int j = 0; j < SQ_LANES; j++) lane[j] += (double)x[i + j] * x[i + j];
    for (int j = 0; i < n; i++, j++) lane[j] += (double)x[i] * x[i];
    for (int w = SQ_LANES / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++) lane[j] += lane[j + w];
    return lane[0];
}

/* sum_squares_chunk of x[lo, hi) reading only the rows (of len elements) that `used` marks: each element
 * goes to the lane it has there (lo is a multiple of SQ_LANES), and the rows left out are zero, adding
 * nothing, so the bits are the whole chunk's */
static double sum_squares_chunk_rows(const float *restrict x, int64_t lo, int64_t hi, int64_t len, const uint8_t *used) {
    double lane[SQ_LANES] = {0};
    for (int64_t r = lo / len; r * len < hi; r++) {
        if (!used[r]) continue;
        const int64_t a = r * len > lo ? r * len : lo, b = (r + 1) * len < hi ? (r + 1) * len : hi;
        for (int64_t i = a; i < b; i++) lane[(i - lo) % SQ_LANES] += (double)x[i] * x[i];
    }
    for (int w = SQ_LANES / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++) lane[j] += lane[j + w];
    return lane[0];
}

static double chunk_sum(const float *restrict x, int64_t lo, int64_t hi, int64_t len, const uint8_t *used) {
    return used ? sum_squares_chunk_rows(x, lo, hi, len, used) : sum_squares_chunk(x + lo, hi - lo);
}

/* The chunks' sums over the threads, then added in chunk order; used (rows of len): as sum_squares_chunk_rows */
static double sum_squares_chunks(pft_ctx *ctx, const float *restrict x, int64_t n, int64_t len, const uint8_t *used) {
    const int64_t nc = (n + CHUNK - 1) / CHUNK;
    if (nc <= 1) return chunk_sum(x, 0, n, len, used);
    double part_stack[64], *part = nc <= 64 ? part_stack : malloc(sizeof(double) * (size_t)nc);
    if (!part) { /* no memory for the partial sums: the same chunks, on this thread */
        double s = 0;
        for (int64_t c = 0; c < nc; c++) s += chunk_sum(x, c * CHUNK, c + 1 < nc ? (c + 1) * CHUNK : n, len, used);
        return s;
    }
    PAR_CHUNKS(ctx, n, part[c_] = chunk_sum(x, lo, hi, len, used););
    double s = 0;
    for (int64_t c = 0; c < nc; c++) s += part[c];
    if (part != part_stack) free(part);
    return s;
}

static double cpu_sum_squares(pft_ctx *ctx, const float *restrict x, int64_t n) {
    return sum_squares_chunks(ctx, x, n, 0, NULL);
}

static double cpu_sum_squares_rows(pft_ctx *ctx, const float *restrict x, int64_t rows, int64_t len, const uint8_t *used) {
    return sum_squares_chunks(ctx, x, rows * len, len, used);
}

static void cpu_fill(pft_ctx *ctx, float *restrict x, float value, int64_t n) {
    if (value == 0.0f && !signbit(value)) /* +0.0f is all zero bits: libc's memset, over the threads */
        PAR_CHUNKS(ctx, n, memset(x + lo, 0, sizeof(float) * (size_t)(hi - lo)););
    else
        PAR_CHUNKS(ctx, n, for (int64_t i = lo; i < hi; i++) x[i] = value;);
}

static void cpu_scale_inplace(pft_ctx *ctx, float *restrict x, float s, int64_t n) {
    PAR_CHUNKS(ctx, n, for (int64_t i = lo; i < hi; i++) x[i] *= s;);
}

/* --- the table ---------------------------------------------------------------------------------------- */

static bool cpu_supports(const char *op) {
    (void)op;
    return true; /* every op in ops.h has a CPU implementation */
}

/* This file is compiled once per instruction set (Makefile: the baseline, and on x86-64 also -march=x86-64-v3
 * and x86-64-v4), each object defining its own table; backend_cpu.c picks the one the processor runs. */
#ifndef PFT_CPU_VARIANT
#define PFT_CPU_TABLE pft_backend_cpu
#define PFT_CPU_NAME "cpu"
#endif

const pft_backend PFT_CPU_TABLE = {
    .name = PFT_CPU_NAME,
    .device = PFT_DEVICE_CPU,
    .supports = cpu_supports,
    .gemm = pft_cpu_gemm,
    .gemm_linear = pft_cpu_gemm_linear,
    .binary = cpu_binary,
    .binary_backward = cpu_binary_backward,
    .scale = cpu_scale,
    .axpy = cpu_axpy,
    .gelu_forward = cpu_gelu_forward,
    .gelu_backward = cpu_gelu_backward,
    .bias_gelu_forward = cpu_bias_gelu_forward,
    .bias_gelu_backward = cpu_bias_gelu_backward,
    .tanh_forward = cpu_tanh_forward,
    .tanh_backward = cpu_tanh_backward,
    .sum_dim = cpu_sum_dim,
    .sum_dim_backward = cpu_sum_dim_backward,
    .softmax_forward = cpu_softmax_forward,
    .softmax_backward = cpu_softmax_backward,
    .layernorm_forward = cpu_layernorm_forward,
    .layernorm_backward = cpu_layernorm_backward,
    .dropout_add_layernorm_forward = cpu_dropout_add_layernorm_forward,
    .dropout_add_layernorm_backward = cpu_dropout_add_layernorm_backward,
    .lora_down_forward = cpu_lora_down_forward,
    .lora_down_backward = cpu_lora_down_backward,
    .dropout_forward = cpu_dropout_forward,
    .dropout_backward = cpu_dropout_backward,
    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,
    .cross_entropy_forward = cpu_cross_entropy_forward,
    .cross_entropy_backward = cpu_cross_entropy_backward,
    .mse_forward = cpu_mse_forward,
    .mse_backward = cpu_mse_backward,
    .strided_accumulate = cpu_strided_accumulate,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .adamw_step = cpu_adamw_step,
    .adamw_step_rows = cpu_adamw_step_rows,
    .sgd_step = cpu_sgd_step,
    .sum_squares = cpu_sum_squares,
    .sum_squares_rows = cpu_sum_squares_rows,
    .fill = cpu_fill,
    .scale_inplace = cpu_scale_inplace,
};
