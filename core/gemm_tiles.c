/* gemm_tiles.c - C = alpha op(A) op(B) + beta C over tiles: fp32 on AVX-512, bf16 operands with fp32 sums on
 * AMX or AVX512-BF16 (gemm_tiles.h).
 *
 * Both operands are packed once per call, one k-chunk at a time (gemm_chunked; gemm_grouped and gemm_columns
 * pack B whole first), into 1 KB tiles in the layouts the hardware reads, except an fp32 A stored as used,
 * whose rows the kernel reads in place; in a chunk's buffer, strip s's i-th k-block of the chunk is at
 * (s stride + i) 512:
 *   bf16 (k-blocks of 32; packing rounds to bf16, its only arithmetic):
 *     A: strips of 16 rows, each k-block a [16][32] bf16 tile;
 *     B: strips of 16 columns, each k-block a [16][16][2] tile (k pairs interleaved per column, the "VNNI"
 *        layout);
 *   fp32 (k-blocks of 16): A tiles [16 rows][16 k], B tiles [16 k][16 columns].
 * Rows, columns and K are zero-padded to whole tiles, and strips to an even count, so every block of C is
 * 32 x 32 (2 x 2 tiles) and edges are clipped only when C is written. A block's K loop (one k-chunk, see
 * gemm_part) runs in registers (AMX: 4 accumulator tiles; AVX-512: 16 accumulators for 8 rows at a time). */
#include "gemm_tiles.h"
#include "kernels_cpu.h" /* gelu_of */

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__clang__) ? __clang_major__ >= 12 : __GNUC__ >= 11)
#define HAVE_TILE_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

void pft_gemm_scratch_release(pft_ctx *ctx) {
#ifdef HAVE_TILE_KERNELS
    if (ctx->gemm_scratch) munmap(ctx->gemm_scratch, ctx->gemm_scratch_bytes);
#endif
    ctx->gemm_scratch = NULL, ctx->gemm_scratch_bytes = 0;
}

float pft_bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) u |= 0x00400000u;  /* NaN: keep it a (quiet) NaN */
    else if ((u & 0x7f800000u) == 0) u &= 0x80000000u;        /* denormal: signed zero, as the hardware */
    else u += 0x7fffu + ((u >> 16) & 1u);                    /* round to nearest, ties to even */
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

const char *pft_gemm_kind_name(pft_gemm_kind kind) {
    return kind == PFT_GEMM_BF16_AMX      ? "amx"
           : kind == PFT_GEMM_BF16_AVX512 ? "avx512-bf16"
           : kind == PFT_GEMM_F32_AVX512  ? "avx512"
                                          : "openblas";
}

#ifdef HAVE_TILE_KERNELS

/* --- what runs here ---------------------------------------------------------------------------------- */

#define ARCH_REQ_XCOMP_PERM 0x1023 /* Linux: ask for a state component the kernel enables on request */
#define XFEATURE_XTILEDATA 18

static bool cpuid_bit(unsigned leaf, unsigned sub, int reg, unsigned bit) {
    unsigned r[4];
    if (!__get_cpuid_count(leaf, sub, &r[0], &r[1], &r[2], &r[3])) return false;
    return (r[reg] >> bit) & 1u;
}

static bool capped_below(const char *kind) { /* PFT_CPU_BF16 caps what counts as present */
    const char *cap = getenv("PFT_CPU_BF16");
    if (!cap || !*cap || !strcmp(cap, "amx")) return false;
    if (!strcmp(cap, "none")) return true;
    return !strcmp(kind, "amx"); /* avx512-bf16 (or anything else): no AMX */
}

/* bit 0: AVX512-BF16; bit 1: AMX-BF16 too, with Linux's leave to use the tiles (asked for here: the request
 * is per process and idempotent). CPUID exits to the hypervisor in a VM: asked when a precision is chosen,
 * never per GEMM. */
static int cpu_bf16_features(void) {
    __builtin_cpu_init();
    /* avx512f also checks that the OS saves the ZMM state; CPUID.(7,1):EAX[5] is AVX512_BF16 */
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && cpuid_bit(7, 1, 0, 5);
    /* CPUID.(7,0):EDX[22] AMX-BF16, [24] AMX-TILE */
    const bool amx = avx512 && cpuid_bit(7, 0, 3, 22) && cpuid_bit(7, 0, 3, 24) &&
                     syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return (avx512 ? 1 : 0) | (amx ? 2 : 0);
}

bool pft_gemm_kind_runs(pft_gemm_kind kind) {
    if (kind == PFT_GEMM_F32_AVX512) { /* the AVX512 target below (avx512f also checks the OS saves ZMM) */
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    }
    if (kind == PFT_GEMM_BF16_AMX) return (cpu_bf16_features() & 2) && !capped_below("amx");
    if (kind == PFT_GEMM_BF16_AVX512) return (cpu_bf16_features() & 1) && !capped_below("avx512-bf16");
    return kind == PFT_GEMM_BLAS;
}

/* --- packing --------------------------------------------------------------------------------------- */

#define TILE 512 /* 16-bit units in one packed tile (1 KB): 16 x 32 bf16, or 16 x 16 floats */

/* Packing runs on AVX-512 (every kind needs it; bf16's needs AVX512-BF16 too): VCVTNE2PS2BF16 rounds to
 * nearest even as pft_bf16_round does (and flushes fp32 denormals to zero, as the dot products would treat
 * them). */
#define AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

AVX512 static inline __mmask16 first_lanes(int64_t n) { /* the first n (clamped to 0..16) of 16 lanes */
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

AVX512_BF16 static inline __m512i to_bf16x32(__m512 lo, __m512 hi) { /* lo -> bf16 0..15, hi -> 16..31 */
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* bf16 pairs (even[i], odd[i]) side by side: the 16 32-bit units of a VNNI row */
AVX512_BF16 static inline __m512i interleave_bf16(__m512 even, __m512 odd) {
    static const uint16_t order[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(order), to_bf16x32(even, odd));
}

/* dst[i][j] = src[j][i] over 16 x 16 32-bit units (bf16 pairs or floats), in registers: 32-bit and 64-bit unpacks
 * within 128-bit lanes, then two rounds of 128-bit lane shuffles */
AVX512 static inline void transpose16(uint32_t *dst, const uint32_t *src) {
    __m512i r[16], t[16], u[16], v[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512(src + 16 * i);
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; g++) { /* u[4g + c], lane L: column 4L + c of rows 4g .. 4g+3 */
        u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    for (int c = 0; c < 4; c++) { /* v: columns c, 8+c (even) and 4+c, 12+c (odd) of row groups (0, 1), (2, 3) */
        v[4 * c + 0] = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88);
        v[4 * c + 1] = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd);
        v[4 * c + 2] = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88);
        v[4 * c + 3] = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
    }
    for (int c = 0; c < 4; c++) {
        _mm512_storeu_si512(dst + 16 * c, _mm512_shuffle_i32x4(v[4 * c], v[4 * c + 2], 0x88));
        _mm512_storeu_si512(dst + 16 * (8 + c), _mm512_shuffle_i32x4(v[4 * c], v[4 * c + 2], 0xdd));
        _mm512_storeu_si512(dst + 16 * (4 + c), _mm512_shuffle_i32x4(v[4 * c + 1], v[4 * c + 3], 0x88));
        _mm512_storeu_si512(dst + 16 * (12 + c), _mm512_shuffle_i32x4(v[4 * c + 1], v[4 * c + 3], 0xdd));
    }
}

/* 16 floats of row `row` from column col0 of a row-major matrix, lanes past `cols` (or every lane when
 * the row is past `rows`) zero */
AVX512 static inline __m512 load16(const float *X, int64_t ld, int64_t row, int64_t rows, int64_t col0,
                                        int64_t cols) {
    if (row >= rows) return _mm512_setzero_ps();
    return _mm512_maskz_loadu_ps(first_lanes(cols - col0), X + row * ld + col0);
}

/* k-block q of strip s of op(A) (rows 16 s ..): a [16][32] tile */
AVX512_BF16 static void pack_a_tile(uint16_t *t, const float *A, int64_t lda, bool trans, int64_t M, int64_t K,
                                    int64_t s, int64_t q) {
    const int64_t m0 = 16 * s, k0 = 32 * q;
    if (!trans) { /* rows of A are rows of the tile */
        for (int r = 0; r < 16; r++)
            _mm512_storeu_si512(t + 32 * r, to_bf16x32(load16(A, lda, m0 + r, M, k0, K), load16(A, lda, m0 + r, M, k0 + 16, K)));
        return;
    }
    uint32_t pairs[16 * 16] __attribute__((aligned(64))); /* [k pair][m]: rows 2i, 2i+1 of A side by side */
    for (int i = 0; i < 16; i++)
        _mm512_storeu_si512(pairs + 16 * i, interleave_bf16(load16(A, lda, k0 + 2 * i, K, m0, M),
                                                            load16(A, lda, k0 + 2 * i + 1, K, m0, M)));
    transpose16((uint32_t *)t, pairs);
}

/* k-block q of strip j of op(B) (columns 16 j ..): a [16 k pairs][16 columns][2] tile */
AVX512_BF16 static void pack_b_tile(uint16_t *t, const float *B, int64_t ldb, bool trans, int64_t N, int64_t K,
                                    int64_t j, int64_t q) {
    const int64_t n0 = 16 * j, k0 = 32 * q;
    if (!trans) { /* rows 2i, 2i+1 of B interleaved are row i of the tile */
        for (int i = 0; i < 16; i++)
            _mm512_storeu_si512(t + 32 * i, interleave_bf16(load16(B, ldb, k0 + 2 * i, K, n0, N),
                                                            load16(B, ldb, k0 + 2 * i + 1, K, n0, N)));
        return;
    }
    uint32_t cols[16 * 16] __attribute__((aligned(64))); /* [column][k pair]: a row of B is a column of op(B) */
    for (int n = 0; n < 16; n++)
        _mm512_storeu_si512(cols + 16 * n, to_bf16x32(load16(B, ldb, n0 + n, N, k0, K), load16(B, ldb, n0 + n, N, k0 + 16, K)));
    transpose16((uint32_t *)t, cols);
}

/* The source of the same k-block in the next strip, rows r0 .. r0 + 15 (of `rows`) at column k0, into L2:
 * where strips are packed one after the other (an operand whose K runs along its stored rows), a tile reads
 * 64 bytes from each of 16 rows, a pattern too short for the hardware prefetchers, and the packing waited
 * on every load (it ran at the latency of the caches below). Asked one strip ahead, the lines are there: the
 * fp32 GEMMs ran 3.5% faster, 1.8% more into L2 than into L1 (whose fill buffers the prefetches then held);
 * bf16's (AMX) did not, and do without. */
AVX512 static inline void prefetch_next_strip(const float *X, int64_t ld, int64_t r0, int64_t rows, int64_t k0) {
    for (int64_t r = r0; r < r0 + 16 && r < rows; r++) _mm_prefetch((const char *)(X + r * ld + k0), _MM_HINT_T1);
}

/* fp32 tiles (the fp32 GEMM): 16 x 16 floats, the same 1 KB as a bf16 tile. A: [16 rows][16 k]; B: [16 k][16
 * columns]. Transposed operands go through transpose16 (32-bit units: floats as well as bf16 pairs). */
AVX512 static void pack_a_tile_f32(uint16_t *tile, const float *A, int64_t lda, bool trans, int64_t M, int64_t K,
                                   int64_t s, int64_t q) {
    float *t = (float *)tile;
    const int64_t m0 = 16 * s, k0 = 16 * q;
    if (!trans) {
        prefetch_next_strip(A, lda, m0 + 16, M, k0);
        for (int r = 0; r < 16; r++) _mm512_storeu_ps(t + 16 * r, load16(A, lda, m0 + r, M, k0, K));
        return;
    }
    float rows[16 * 16] __attribute__((aligned(64))); /* [k][m] */
    for (int i = 0; i < 16; i++) _mm512_store_ps(rows + 16 * i, load16(A, lda, k0 + i, K, m0, M));
    transpose16((uint32_t *)t, (const uint32_t *)rows);
}

AVX512 static void pack_b_tile_f32(uint16_t *tile, const float *B, int64_t ldb, bool trans, int64_t N, int64_t K,
                                   int64_t j, int64_t q) {
    float *t = (float *)tile;
    const int64_t n0 = 16 * j, k0 = 16 * q;
    if (!trans) {
        for (int i = 0; i < 16; i++) _mm512_storeu_ps(t + 16 * i, load16(B, ldb, k0 + i, K, n0, N));
        return;
    }
    prefetch_next_strip(B, ldb, n0 + 16, N, k0);
    float cols[16 * 16] __attribute__((aligned(64))); /* [n][k] */
    for (int n = 0; n < 16; n++) _mm512_store_ps(cols + 16 * n, load16(B, ldb, n0 + n, N, k0, K));
    transpose16((uint32_t *)t, (const uint32_t *)cols);
}

/* the part [lo, hi) of [0, n) that thread `me` of `nth` takes: static, contiguous */
static void share(int64_t n, int me, int nth, int64_t *lo, int64_t *hi) {
    *lo = n * me / nth, *hi = n * (me + 1) / nth;
}

typedef void pack_tile_fn(uint16_t *t, const float *X, int64_t ld, bool trans, int64_t rows, int64_t K, int64_t strip,
                          int64_t q);

/* The tiles of k-blocks q0 .. q0 + nqc - 1 of strips s0 .. s0 + strips - 1 of one operand, this thread's
 * share: strip s0 + s, k-block q0 + i at dst + (s stride + i) TILE. k_major: the operand's K runs down its
 * stored rows (A transposed, B as stored), so a strip's tiles lie down the whole matrix, one 64-byte piece
 * per row: taken strip by strip that touched a page per row (5.9 GB/s against memcpy's 14.8); taken k-block
 * by k-block, all strips, the rows are swept in order. */
static void pack_operand(uint16_t *dst, int64_t stride, const float *X, int64_t ld, bool trans, bool k_major,
                         int64_t rows, int64_t K, int64_t s0, int64_t strips, int64_t q0, int64_t nqc, int me,
                         int nth, pack_tile_fn *tile) {
    int64_t lo, hi;
    share(k_major ? nqc : strips, me, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++)
        for (int64_t o = 0; o < (k_major ? strips : nqc); o++) {
            const int64_t s = k_major ? o : i, q = k_major ? i : o;
            tile(dst + (s * stride + q) * TILE, X, ld, trans, rows, K, s0 + s, q0 + q);
        }
}

/* --- the 32 x 32 block kernels: acc [32][32] = A strips (s, s+1) . B strips (j, j+1) over nq k-blocks -- */

typedef struct __attribute__((aligned(64))) amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

/* tiles 0-3 C, 4-5 A, 6-7 B: all 16 rows x 64 bytes. A constant: GCC 12's _tile_loadconfig tells the compiler
 * it reads 8 bytes, so a configuration built on the stack just before may be half written when it runs */
static const amx_config AMX_CONFIG = {.palette = 1,
                                      .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
                                      .rows = {16, 16, 16, 16, 16, 16, 16, 16}};

__attribute__((target("amx-tile"))) static void amx_begin(void) { _tile_loadconfig(&AMX_CONFIG); }

__attribute__((target("amx-tile"))) static void amx_end(void) { _tile_release(); }

__attribute__((target("amx-tile,amx-bf16"))) static void block_amx(float *acc, const uint16_t *a0, const uint16_t *a1,
                                                                   const uint16_t *b0, const uint16_t *b1, int64_t nq) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t q = 0; q < nq; q++) {
        _tile_loadd(4, a0 + q * TILE, 64);
        _tile_loadd(6, b0 + q * TILE, 64);
        _tile_loadd(5, a1 + q * TILE, 64);
        _tile_loadd(7, b1 + q * TILE, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, acc, 128);
    _tile_stored(1, acc + 16, 128);
    _tile_stored(2, acc + 16 * 32, 128);
    _tile_stored(3, acc + 16 * 32 + 16, 128);
}

/* 8 rows (from row r0 of A strip a) x 32 columns. The 16 accumulators are named, not an array: GCC kept an
 * array of them in memory (a load and a store around every dot product, a seventh of the speed). */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void rows8_avx512(float *acc, const uint16_t *a, int r0,
                                                                              const uint16_t *b0, const uint16_t *b1,
                                                                              int64_t nq) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    for (int64_t q = 0; q < nq; q++) {
        const uint16_t *at = a + q * TILE + r0 * 32, *bt0 = b0 + q * TILE, *bt1 = b1 + q * TILE;
        for (int kk = 0; kk < 16; kk++) {
            const __m512bh v0 = (__m512bh)_mm512_loadu_si512(bt0 + kk * 32);
            const __m512bh v1 = (__m512bh)_mm512_loadu_si512(bt1 + kk * 32);
#define ROW(r, x0, x1)                                                                                       \
    do {                                                                                                     \
        int32_t pair;                                                                                        \
        memcpy(&pair, at + (r) * 32 + 2 * kk, sizeof pair);                                                  \
        const __m512bh x = (__m512bh)_mm512_set1_epi32(pair);                                                \
        x0 = _mm512_dpbf16_ps(x0, x, v0);                                                                    \
        x1 = _mm512_dpbf16_ps(x1, x, v1);                                                                    \
    } while (0)
            ROW(0, c00, c01);
            ROW(1, c10, c11);
            ROW(2, c20, c21);
            ROW(3, c30, c31);
            ROW(4, c40, c41);
            ROW(5, c50, c51);
            ROW(6, c60, c61);
            ROW(7, c70, c71);
#undef ROW
        }
    }
    const __m512 out[16] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71};
    for (int i = 0; i < 16; i++) _mm512_store_ps(acc + 16 * i, out[i]);
}

static void block_avx512(float *acc, const uint16_t *a0, const uint16_t *a1, const uint16_t *b0, const uint16_t *b1,
                         int64_t nq) {
    rows8_avx512(acc, a0, 0, b0, b1, nq);
    rows8_avx512(acc + 8 * 32, a0, 8, b0, b1, nq);
    rows8_avx512(acc + 16 * 32, a1, 0, b0, b1, nq);
    rows8_avx512(acc + 24 * 32, a1, 8, b0, b1, nq);
}

/* Rows r0 .. r0 + 7 of a block of C (of `rows`) into L2 while the block's products run: the rows lie ldc
 * apart, a pattern the hardware prefetchers do not follow, and a block's write-back otherwise waited on
 * memory (loading C for the sum with beta, or taking the lines to store into). Eight rows at a time, so the
 * requests do not overflow the queue of misses in flight. */
static inline void prefetch_rows(const float *C, int64_t ldc, int r0, int64_t rows) {
    for (int64_t r = r0; r < r0 + 8 && r < rows; r++) {
        _mm_prefetch((const char *)(C + r * ldc), _MM_HINT_T1);
        _mm_prefetch((const char *)(C + r * ldc + 16), _MM_HINT_T1);
    }
}

/* fp32: 8 rows x 32 columns, FMAs on AVX-512; named accumulators as above. Row r, k-block q of op(A) at
 * a + q ks + r rs: a packed tile (rs 16, ks 256) or A itself (rs lda, ks 16: gemm_args' direct_panels). */
AVX512 static void rows8_f32(float *acc, const float *a, int64_t rs, int64_t ks, const float *b0, const float *b1,
                             int64_t nq) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    for (int64_t q = 0; q < nq; q++) {
        const float *at = a + q * ks, *bt0 = b0 + q * 256, *bt1 = b1 + q * 256;
        for (int kk = 0; kk < 16; kk++) {
            const __m512 v0 = _mm512_loadu_ps(bt0 + kk * 16), v1 = _mm512_loadu_ps(bt1 + kk * 16);
#define ROW(r, x0, x1)                                                                                       \
    do {                                                                                                     \
        const __m512 x = _mm512_set1_ps(at[(r) * rs + kk]);                                                  \
        x0 = _mm512_fmadd_ps(x, v0, x0);                                                                     \
        x1 = _mm512_fmadd_ps(x, v1, x1);                                                                     \
    } while (0)
            ROW(0, c00, c01);
            ROW(1, c10, c11);
            ROW(2, c20, c21);
            ROW(3, c30, c31);
            ROW(4, c40, c41);
            ROW(5, c50, c51);
            ROW(6, c60, c61);
            ROW(7, c70, c71);
#undef ROW
        }
    }
    const __m512 out[16] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71};
    for (int i = 0; i < 16; i++) _mm512_store_ps(acc + 16 * i, out[i]);
}

/* rows 0-15 of op(A) from a0, 16-31 from a1, each as rows8_f32 reads them */
static void block_f32(float *acc, const float *a0, const float *a1, int64_t rs, int64_t ks, const uint16_t *b0,
                      const uint16_t *b1, int64_t nq, const float *C, int64_t ldc, int64_t rows) {
    const float *fb0 = (const float *)b0, *fb1 = (const float *)b1;
    prefetch_rows(C, ldc, 0, rows);
    rows8_f32(acc, a0, rs, ks, fb0, fb1, nq);
    prefetch_rows(C, ldc, 8, rows);
    rows8_f32(acc + 8 * 32, a0 + 8 * rs, rs, ks, fb0, fb1, nq);
    prefetch_rows(C, ldc, 16, rows);
    rows8_f32(acc + 16 * 32, a1, rs, ks, fb0, fb1, nq);
    prefetch_rows(C, ldc, 24, rows);
    rows8_f32(acc + 24 * 32, a1 + 8 * rs, rs, ks, fb0, fb1, nq);
}

/* gelu of 32 values, with kernels_cpu.h's gelu_of: the GELU kernels' bits; with s also their slopes
 * (gelu_slope's bits) */
AVX512 static void gelu32(float *restrict g, float *restrict s, const float *restrict v) {
    if (s) {
#pragma omp simd
        for (int j = 0; j < 32; j++) g[j] = gelu_with_slope(v[j], &s[j]);
        return;
    }
#pragma omp simd
    for (int j = 0; j < 32; j++) g[j] = gelu_of(v[j]);
}

#ifndef EPILOGUE_STREAM /* (a macro a benchmark build may set) */
#define EPILOGUE_STREAM 1
#endif
/* 32 floats of a row of C (or G): streamed past the caches where asked, whole and aligned, else stored. The
 * GELU epilogue's two outputs are [tokens, intermediate] (25 MB each in a 4,096-token step), written once:
 * stored, each line is first read from memory, and the stores waited on those reads (write_block's
 * hottest instructions in a bf16 step); streamed, nothing is read. gemm_part fences them before the GEMM
 * returns. */
AVX512 static inline void store_row32(float *dst, __m512 x0, __m512 x1, __mmask16 lo, __mmask16 hi, bool stream) {
    if (EPILOGUE_STREAM && stream && lo == 0xffff && hi == 0xffff && ((uintptr_t)dst & 63) == 0) {
        _mm512_stream_ps(dst, x0), _mm512_stream_ps(dst + 16, x1);
        return;
    }
    _mm512_mask_storeu_ps(dst, lo, x0);
    _mm512_mask_storeu_ps(dst + 16, hi, x1);
}

/* C[rows][cols] = alpha acc + beta C (beta 0: C is not read, as BLAS); then, in the last k-chunk, the
 * epilogue: bias[j] added to column j, and G = gelu(C) (either NULL: not done), with slope C = gelu'(C) */
AVX512 static void write_block(float *C, int64_t ldc, const float *acc, int64_t rows, int64_t cols, float alpha,
                               float beta, const float *bias, float *G, int64_t ldg, bool slope) {
    const __mmask16 lo = first_lanes(cols), hi = first_lanes(cols - 16);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __m512 bias0 = bias ? _mm512_maskz_loadu_ps(lo, bias) : _mm512_setzero_ps();
    const __m512 bias1 = bias ? _mm512_maskz_loadu_ps(hi, bias + 16) : _mm512_setzero_ps();
    for (int64_t r = 0; r < rows; r++) {
        float *c = C + r * ldc;
        __m512 x0 = _mm512_mul_ps(va, _mm512_load_ps(acc + 32 * r)), x1 = _mm512_mul_ps(va, _mm512_load_ps(acc + 32 * r + 16));
        if (beta != 0.0f) {
            x0 = _mm512_add_ps(x0, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(lo, c)));
            x1 = _mm512_add_ps(x1, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(hi, c + 16)));
        }
        if (bias) x0 = _mm512_add_ps(x0, bias0), x1 = _mm512_add_ps(x1, bias1);
        if (G) {
            float v[32] __attribute__((aligned(64))), g[32] __attribute__((aligned(64))), s[32] __attribute__((aligned(64)));
            _mm512_store_ps(v, x0), _mm512_store_ps(v + 16, x1);
            gelu32(g, slope ? s : NULL, v);
            store_row32(G + r * ldg, _mm512_load_ps(g), _mm512_load_ps(g + 16), lo, hi, true);
            if (slope) x0 = _mm512_load_ps(s), x1 = _mm512_load_ps(s + 16);
        }
        store_row32(c, x0, x1, lo, hi, G != NULL);
    }
}

/* --- one GEMM -------------------------------------------------------------------------------------- */

#define PAR_MIN (1 << 21) /* multiply-adds: below this one thread (as backend_cpu.c's fp32 GEMM) */
#define LOCAL_PACK (96 << 10) /* bytes of packed operands on the stack inside a parallel region */

static bool in_parallel_region(void) {
#ifdef _OPENMP
    return omp_in_parallel();
#else
    return false;
#endif
}

/* Packing buffers outside a parallel region: the context's scratch, grown to the largest call (a step's
 * GEMMs repeat their shapes; taking them from the context's buffer cache crowded the activations out of
 * its slots, and every step faulted fresh pages in). Mapped from the OS, not malloc'd: freeing a large
 * malloc'd block raises glibc's mmap threshold to its size, and the activations then came from a heap that
 * fragmented (peak RSS +100 MB a step). Inside a parallel region (the attention kernels' per-head GEMMs,
 * one per thread): the thread's stack, or malloc beyond LOCAL_PACK. */
static uint16_t *ctx_scratch(pft_ctx *ctx, size_t bytes) {
    if (ctx->gemm_scratch_bytes < bytes) {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); /* page-aligned */
        if (p == MAP_FAILED) return NULL;
        madvise(p, bytes, MADV_HUGEPAGE); /* as glibc's heap under hugepages.h: a failure only costs speed */
        pft_gemm_scratch_release(ctx);
        ctx->gemm_scratch = p, ctx->gemm_scratch_bytes = bytes;
    }
    return ctx->gemm_scratch;
}

/* Cache blocking. K is cut into chunks of at most KC_BLOCKS (fp32: KC_BLOCKS_F32) k-blocks, of even sizes:
 * a chunk's sums go into C, the first chunk's with beta, later ones added. B's columns are cut into chunks
 * of at most B_CHUNK packed bytes, each swept by several 32-row panels of A while it stays in L2 (a whole B
 * streamed from L3 for every panel ran at a quarter of the tiles' speed). Which blocks a thread takes never
 * changes what a block computes: the same k-chunks, added in the same order. */
#ifndef KC_BLOCKS /* (these are macros a benchmark build may set) */
#define KC_BLOCKS 32          /* bf16: 1,024 of K */
#endif
#ifndef KC_BLOCKS_F32 /* fp32: 256 of K. On the MiniLM shapes 16 ran 0-8% faster than 8 and 32 */
#define KC_BLOCKS_F32 16
#endif
#ifndef B_CHUNK
#define B_CHUNK (384 << 10)   /* bytes */
#endif
#ifndef C_GROUP
#define C_GROUP (512 << 10)   /* bytes of C a thread keeps in L2 over all k-chunks (gemm_grouped) */
#endif

/* How a GEMM's K is cut: nq k-blocks in kchunks chunks of at most nq_max; a chunk's buffer holds nq_max tiles
 * of each strip (strips even: whole 32 x 32 blocks) */
typedef struct chunking {
    int64_t nq, kchunks, nq_max, a_strips, b_strips, a_tiles, b_tiles;
} chunking;

static chunking chunking_of(pft_gemm_kind kind, int64_t M, int64_t N, int64_t K) {
    const bool f32 = kind == PFT_GEMM_F32_AVX512;
    const int64_t kb = f32 ? 16 : 32, kcb = f32 ? KC_BLOCKS_F32 : KC_BLOCKS;
    chunking c;
    c.nq = (K + kb - 1) / kb;
    c.kchunks = (c.nq + kcb - 1) / kcb;
    c.nq_max = (c.nq + c.kchunks - 1) / c.kchunks;
    c.a_strips = (M + 31) / 32 * 2, c.b_strips = (N + 31) / 32 * 2;
    c.a_tiles = c.a_strips * c.nq_max, c.b_tiles = c.b_strips * c.nq_max;
    return c;
}

/* panels (32 rows of C) whose rows of C, all columns, fit in C_GROUP: gemm_grouped's group */
static int64_t group_panels(int64_t N) {
    const int64_t p = C_GROUP / (32 * ((N + 31) / 32 * 32) * (int64_t)sizeof(float));
    return p < 1 ? 1 : p;
}

/* column pairs (32 columns of C) in one chunk of B's columns */
static int64_t chunk_pairs(const chunking *ch) {
    const int64_t p = B_CHUNK / (2 * ch->nq_max * TILE * 2);
    return p < 1 ? 1 : p;
}

typedef struct gemm_args {
    pft_gemm_kind kind;
    bool ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
    uint16_t *pa, *pb;
    const float *bias; /* the epilogue (gemm_tiles.h); NULL: none */
    float *gelu;
    int64_t ld_gelu;
    bool slope;
    int64_t direct_panels; /* fp32, A as stored, K whole k-blocks: panels inside M read A itself, unpacked */
    bool b_whole;          /* pb holds every k-chunk of B (pack_b_whole's layout), not gemm_chunked's two */
    bool b_ready;          /* ... already packed (a kept packing, ctx.h): nothing to pack or wait for */
    uint64_t *ranges;      /* work stealing: 2 x STEAL_MAX ranges (NULL: static shares only) */
    int64_t *stolen;       /* ... counted here (ctx stats) */
    int hold_us;           /* ctx's gemm_hold_us */
} gemm_args;

/* Block (strips s, s+1 of A; j, j+1 of B) of k-chunk kc (k-blocks q0 .. q0 + nqc - 1) from the tiles at a0 (or
 * A itself) and b0, written into C: with beta in the first chunk, added in later ones, the epilogue in the last */
static void block_into_c(const gemm_args *g, float *acc, const uint16_t *a0, const uint16_t *b0, int64_t stride,
                         int64_t q0, int64_t nqc, int64_t s, int64_t j, int64_t kc, int64_t kchunks) {
    const uint16_t *a1 = a0 + stride * TILE, *b1 = b0 + stride * TILE;
    const int64_t r0 = 16 * s, c0 = 16 * j, rows = g->M - r0 < 32 ? g->M - r0 : 32;
    float *c = g->C + r0 * g->ldc + c0;
    if (g->kind == PFT_GEMM_BF16_AMX) block_amx(acc, a0, a1, b0, b1, nqc);
    else if (g->kind != PFT_GEMM_F32_AVX512) block_avx512(acc, a0, a1, b0, b1, nqc);
    else if (s / 2 < g->direct_panels) {
        const float *a = g->A + r0 * g->lda + 16 * q0;
        block_f32(acc, a, a + 16 * g->lda, g->lda, 16, b0, b1, nqc, c, g->ldc, rows);
    } else
        block_f32(acc, (const float *)a0, (const float *)a1, 16, 256, b0, b1, nqc, c, g->ldc, rows);
    const bool last = kc == kchunks - 1;
    write_block(c, g->ldc, acc, rows, g->N - c0 < 32 ? g->N - c0 : 32, g->alpha, kc == 0 ? g->beta : 1.0f,
                last && g->bias ? g->bias + c0 : NULL, last && g->gelu ? g->gelu + r0 * g->ld_gelu + c0 : NULL,
                g->ld_gelu, g->slope);
}

/* A's strips s0 .. s1 - 1 of k-chunk (q0, nqc) into dst laid out from strip `base`, but for the panels read
 * unpacked (direct_panels) */
static void pack_a_strips(const gemm_args *g, uint16_t *dst, int64_t stride, int64_t base, int64_t s0, int64_t s1,
                          int64_t q0, int64_t nqc, int me, int nth) {
    if (s0 < 2 * g->direct_panels) s0 = 2 * g->direct_panels;
    if (s0 >= s1) return;
    pack_operand(dst + (s0 - base) * stride * TILE, stride, g->A, g->lda, g->ta, g->ta, g->M, g->K, s0, s1 - s0, q0, nqc,
                 me, nth, g->kind == PFT_GEMM_F32_AVX512 ? pack_a_tile_f32 : pack_a_tile);
}

static pack_tile_fn *b_packer(pft_gemm_kind kind) { return kind == PFT_GEMM_F32_AVX512 ? pack_b_tile_f32 : pack_b_tile; }

/* Blocks t .. of a sweep in (column chunk, panel, column pair) order, the last column chunk maybe narrower:
 * the run of them up to hi in one panel (strip s) of one column chunk, from strip j0 of B */
typedef struct block_run {
    int64_t s, j0, pairs;
} block_run;

static block_run run_at(int64_t t, int64_t hi, int64_t panels, int64_t pairs, int64_t per_chunk) {
    const int64_t c0p = t / (panels * per_chunk) * per_chunk;
    const int64_t width = pairs - c0p < per_chunk ? pairs - c0p : per_chunk, in_chunk = t - c0p * panels;
    const int64_t jp = in_chunk % width;
    return (block_run){in_chunk / width * 2, (c0p + jp) * 2, hi - t < width - jp ? hi - t : width - jp};
}

/* every k-chunk of B, shared by the team (gemm_grouped, gemm_columns; gemm_chunked where B's packing is
 * kept), then the barrier before any thread reads it; nothing where the packing is there already */
static void pack_b_whole(const gemm_args *g, const chunking *ch, int me, int nth) {
    if (g->b_ready) return;
    for (int64_t kc = 0; kc < ch->kchunks; kc++) {
        const int64_t q0 = kc * ch->nq / ch->kchunks, nqc = (kc + 1) * ch->nq / ch->kchunks - q0;
        pack_operand(g->pb + kc * ch->b_tiles * TILE, ch->nq_max, g->B, g->ldb, g->tb, !g->tb, g->N, g->K, 0,
                     ch->b_strips, q0, nqc, me, nth, b_packer(g->kind));
    }
    if (nth > 1) {
#pragma omp barrier
    }
}

/* Work stealing (gemm_chunked, gemm_columns). Each thread owns a range [front, back) of the sweep's blocks, its static
 * share, in one 64-bit word: it takes runs from the front; a thread whose range is empty takes single
 * blocks from the back of another's. With static shares alone every GEMM waited for its slowest thread,
 * and on a shared machine a thread is often slowed from outside (another process on its core, a virtual
 * machine's neighbours): the other then idled at the barrier. Which thread computes a block never changes
 * what the block computes, so the bits stay those of any thread count. gemm_chunked's ranges alternate
 * between two sets by k-chunk: a thread sets its range of chunk kc before the chunk's barrier while another
 * may still be stealing in chunk kc - 1 (never in kc - 2: that ended before the barrier of kc - 1). */
#define STEAL_MAX 64 /* threads with ranges; a bigger team keeps static shares */

static inline uint64_t range_word(int64_t front, int64_t back) { return (uint64_t)front << 32 | (uint64_t)back; }

/* Takes blocks from range *r: the owner the run at its front (within one panel of one column chunk), a
 * thief the single block at its back; false: empty */
static bool take_blocks(uint64_t *r, bool owner, int64_t panels, int64_t pairs, int64_t per_chunk, block_run *run) {
    uint64_t w = __atomic_load_n(r, __ATOMIC_ACQUIRE);
    for (;;) {
        const int64_t front = (int64_t)(w >> 32), back = (int64_t)(w & 0xffffffffu);
        if (front >= back) return false;
        *run = run_at(owner ? front : back - 1, back, panels, pairs, per_chunk);
        const uint64_t taken = owner ? range_word(front + run->pairs, back) : range_word(front, back - 1);
        if (__atomic_compare_exchange_n(r, &w, taken, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return true;
    }
}

/* A thread's way through a sweep's blocks: its static share [t, hi) alone (ranges NULL), or its range and
 * then, from their backs, the others' (victim me + v) */
typedef struct sweep_cursor {
    const gemm_args *g;
    uint64_t *ranges;
    int me, nth, v;
    int64_t t, hi;
} sweep_cursor;

static sweep_cursor sweep_start(const gemm_args *g, uint64_t *ranges, int me, int nth, int64_t lo, int64_t hi) {
    if (g->hold_us && me == nth - 1 && nth > 1) usleep((useconds_t)g->hold_us);
    return (sweep_cursor){g, ranges, me, nth, 0, lo, hi};
}

static bool next_run(sweep_cursor *c, int64_t panels, int64_t pairs, int64_t per_chunk, block_run *r) {
    if (!c->ranges) {
        if (c->t >= c->hi) return false;
        *r = run_at(c->t, c->hi, panels, pairs, per_chunk);
        c->t += r->pairs;
        return true;
    }
    for (; c->v < c->nth; c->v++)
        if (take_blocks(&c->ranges[(c->me + c->v) % c->nth], c->v == 0, panels, pairs, per_chunk, r)) {
            if (c->v > 0) __atomic_fetch_add(c->g->stolen, 1, __ATOMIC_RELAXED);
            return true;
        }
    return false;
}

/* whether a team steals: more than one thread, ranges for each, block indices that fit a range's word */
static bool steals(const gemm_args *g, int nth, int64_t blocks) {
    return g->ranges && nth > 1 && nth <= STEAL_MAX && blocks < ((int64_t)1 << 31);
}

/* K a chunk at a time, over all of C: each chunk is packed just before it is used, into one of two buffers,
 * so the tiles are read back from the caches, not from memory (packing the whole operands first wrote and
 * read them again, 12% of a weight gradient's time). The barrier after a chunk's packing also says every
 * thread is done with the chunk before it, so the buffer of two chunks back is free. The blocks in sweep
 * order (column chunk, panel, column pair), a contiguous run of them per thread, the same run in every
 * chunk, so a thread adds only onto blocks it wrote itself. */
static void gemm_chunked(const gemm_args *g, const chunking *ch, int me, int nth) {
    const int64_t panels = ch->a_strips / 2, pairs = ch->b_strips / 2, stride = ch->nq_max;
    const int64_t per_chunk = chunk_pairs(ch);
    float acc[32 * 32] __attribute__((aligned(64)));
    int64_t lo, hi;
    share(panels * pairs, me, nth, &lo, &hi);
    const bool steal = steals(g, nth, panels * pairs);
    if (g->b_whole) pack_b_whole(g, ch, me, nth);
    for (int64_t kc = 0; kc < ch->kchunks; kc++) {
        const int64_t q0 = kc * ch->nq / ch->kchunks, nqc = (kc + 1) * ch->nq / ch->kchunks - q0;
        uint16_t *pa = g->pa + (kc % 2) * ch->a_tiles * TILE;
        uint16_t *pb = g->pb + (g->b_whole ? kc : kc % 2) * ch->b_tiles * TILE;
        uint64_t *ranges = steal ? g->ranges + (kc % 2) * STEAL_MAX : NULL;
        pack_a_strips(g, pa, stride, 0, 0, ch->a_strips, q0, nqc, me, nth);
        if (!g->b_whole)
            pack_operand(pb, stride, g->B, g->ldb, g->tb, !g->tb, g->N, g->K, 0, ch->b_strips, q0, nqc, me, nth, b_packer(g->kind));
        if (ranges) __atomic_store_n(&ranges[me], range_word(lo, hi), __ATOMIC_RELEASE);
        if (nth > 1) {
#pragma omp barrier
        }
        sweep_cursor cur = sweep_start(g, ranges, me, nth, lo, hi);
        block_run r;
        while (next_run(&cur, panels, pairs, per_chunk, &r))
            for (int64_t j = r.j0; j < r.j0 + 2 * r.pairs; j += 2)
                block_into_c(g, acc, pa + r.s * stride * TILE, pb + j * stride * TILE, stride, q0, nqc, r.s, j, kc,
                             ch->kchunks);
    }
}

/* K in several chunks: C was written back once per chunk, and a thread's part of C (a 4,096-token
 * activation: 6-25 MB) left L2 between its chunks, so every chunk's write-back waited on L3 for C (most of
 * the write-back's time). Here B is packed whole first (all chunks, shared), and each thread takes its run of
 * blocks (panel by panel) a group of panels at a time: the group's A, packed by the thread alone, and its C
 * (at most C_GROUP) stay in L2 over all the chunks. One barrier per GEMM instead of one per chunk. */
static void gemm_grouped(const gemm_args *g, const chunking *ch, int me, int nth) {
    const int64_t pairs = ch->b_strips / 2, stride = ch->nq_max, per_chunk = chunk_pairs(ch);
    const int64_t G = group_panels(g->N);
    float acc[32 * 32] __attribute__((aligned(64)));
    pack_b_whole(g, ch, me, nth);
    int64_t lo, hi;
    share(ch->a_strips / 2 * pairs, me, nth, &lo, &hi);
    if (lo == hi) return;
    uint16_t *pa = g->pa + me * 2 * G * stride * TILE; /* this thread's */
    const int64_t p_first = lo / pairs, p_last = (hi - 1) / pairs;
    for (int64_t gp = p_first; gp <= p_last; gp += G) {
        const int64_t ge = gp + G < p_last + 1 ? gp + G : p_last + 1;
        for (int64_t kc = 0; kc < ch->kchunks; kc++) {
            const int64_t q0 = kc * ch->nq / ch->kchunks, nqc = (kc + 1) * ch->nq / ch->kchunks - q0;
            const uint16_t *pb = g->pb + kc * ch->b_tiles * TILE;
            pack_a_strips(g, pa, stride, 2 * gp, 2 * gp, 2 * ge, q0, nqc, 0, 1);
            for (int64_t c0p = 0; c0p < pairs; c0p += per_chunk)
                for (int64_t p = gp; p < ge; p++) {
                    const int64_t from = p * pairs, j_lo = lo > from + c0p ? lo - from : c0p;
                    const int64_t end = c0p + per_chunk < pairs ? c0p + per_chunk : pairs, j_hi = hi < from + end ? hi - from : end;
                    for (int64_t jp = j_lo; jp < j_hi; jp++)
                        block_into_c(g, acc, pa + 2 * (p - gp) * stride * TILE, pb + 2 * jp * stride * TILE, stride, q0,
                                     nqc, 2 * p, 2 * jp, kc, ch->kchunks);
                }
        }
    }
}

/* K in two chunks, A read in place (fp32, as stored): gemm_chunked wrote all of a thread's C for the first
 * chunk before adding the second, and where that C outgrew L2 (a forward's or input gradient's K = 384 over
 * 4,096 tokens: 3-12 MB) the second write-back reloaded it from L3 (half of write_block's time in a dense
 * step). Here B is packed whole first (one barrier), and each thread runs its blocks a (column chunk, panel)
 * at a time through both chunks: that 32 x 512 of C (64 KB) is still in L2 for the second, and the column
 * chunk's B (both chunks, 768 KB) stays in L2 over the panels. A last, partial panel is packed by the thread
 * that meets it, a chunk at a time. The same k-chunks, added in the same order: gemm_chunked's bits. */
static void gemm_columns(const gemm_args *g, const chunking *ch, int me, int nth) {
    const int64_t panels = ch->a_strips / 2, pairs = ch->b_strips / 2, stride = ch->nq_max, per_chunk = chunk_pairs(ch);
    float acc[32 * 32] __attribute__((aligned(64)));
    uint16_t *pa = g->pa + me * 2 * stride * TILE; /* this thread's: a packed panel's chunk */
    int64_t lo, hi;
    share(panels * pairs, me, nth, &lo, &hi);
    uint64_t *ranges = steals(g, nth, panels * pairs) ? g->ranges : NULL;
    if (ranges) __atomic_store_n(&ranges[me], range_word(lo, hi), __ATOMIC_RELEASE);
    pack_b_whole(g, ch, me, nth); /* its barrier also says every range is set */
    if (ranges && g->b_ready) {
#pragma omp barrier
    }
    sweep_cursor cur = sweep_start(g, ranges, me, nth, lo, hi);
    block_run r;
    while (next_run(&cur, panels, pairs, per_chunk, &r)) {
        for (int64_t kc = 0; kc < ch->kchunks; kc++) {
            const int64_t q0 = kc * ch->nq / ch->kchunks, nqc = (kc + 1) * ch->nq / ch->kchunks - q0;
            const uint16_t *pb = g->pb + kc * ch->b_tiles * TILE;
            pack_a_strips(g, pa, stride, r.s, r.s, r.s + 2, q0, nqc, 0, 1); /* nothing where A is read in place */
            for (int64_t j = r.j0; j < r.j0 + 2 * r.pairs; j += 2)
                block_into_c(g, acc, pa, pb + j * stride * TILE, stride, q0, nqc, r.s, j, kc, ch->kchunks);
        }
    }
}

/* gemm_grouped where it saves write-backs: K in at least GROUP_MIN_KCHUNKS chunks (with two, B re-read from
 * L3 for every group cost more than the one write-back saved: the FFN's x W1^T ran 4% slower) and a thread's
 * part of C too big to stay in L2 over the chunks anyway (a weight gradient's 0.6-2.4 MB did: 6% slower) */
#ifndef GROUP_MIN_KCHUNKS
#define GROUP_MIN_KCHUNKS 3
#endif
#ifndef GROUP_MIN_C
#define GROUP_MIN_C (3 << 19) /* bytes of C per thread */
#endif
/* fp32 with A stored as used and K in whole k-blocks: the kernel reads A's rows in place (gemm_args'
 * direct_panels) */
static bool a_in_place(pft_gemm_kind kind, bool ta, int64_t K) { return kind == PFT_GEMM_F32_AVX512 && !ta && K % 16 == 0; }

/* How a GEMM's blocks are swept (see each function) */
typedef enum sweep { SWEEP_CHUNKED, SWEEP_GROUPED, SWEEP_COLUMNS } sweep;

static sweep sweep_of(const chunking *ch, pft_gemm_kind kind, bool ta, int64_t M, int64_t N, int64_t K, int nth) {
    if (ch->kchunks >= GROUP_MIN_KCHUNKS && M * N * (int64_t)sizeof(float) / nth > GROUP_MIN_C) return SWEEP_GROUPED;
    if (ch->kchunks == 2 && a_in_place(kind, ta, K)) return SWEEP_COLUMNS;
    return SWEEP_CHUNKED;
}

/* One GEMM by thread `me` of a team of nth (nth 1: the caller alone, no OpenMP construct, so it may run
 * inside someone else's parallel region; a nested team of one cost a fresh team, and its pages, per call). */
static void gemm_part(const gemm_args *g, const chunking *ch, sweep sw, int me, int nth) {
    if (g->kind == PFT_GEMM_BF16_AMX) amx_begin(); /* tile configuration is per thread */
    if (sw == SWEEP_GROUPED) gemm_grouped(g, ch, me, nth);
    else if (sw == SWEEP_COLUMNS) gemm_columns(g, ch, me, nth);
    else gemm_chunked(g, ch, me, nth);
    if (g->gelu) _mm_sfence(); /* the epilogue's streamed stores, visible before the caller reads them */
    if (g->kind == PFT_GEMM_BF16_AMX) amx_end();
}

/* threads for one GEMM: one below PAR_MIN multiply-adds or inside a parallel region, never more than blocks */
static int team_size(const pft_ctx *ctx, int64_t M, int64_t N, int64_t K, bool local) {
    const int64_t blocks = (M + 31) / 32 * ((N + 31) / 32);
    int nt = M * N * K < PAR_MIN || local ? 1 : ctx->threads;
    return nt > blocks ? (int)blocks : nt;
}

static void gemm1(const gemm_args *g, const chunking *ch, sweep sw, int nt) {
#ifdef _OPENMP
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        gemm_part(g, ch, sw, omp_get_thread_num(), omp_get_num_threads());
        return;
    }
#endif
    gemm_part(g, ch, sw, 0, 1);
}

/* Bytes of packed tiles: gemm_grouped's whole B and a group of A per thread, gemm_columns' whole B and a panel's
 * chunk of A per thread, or gemm_chunked's one chunk of each (two when K has several: double buffered); B
 * none where its packing is kept (kept_b_bytes: every chunk, in the context) */
static size_t kept_b_bytes(const chunking *ch) { return (size_t)(ch->kchunks * ch->b_tiles) * TILE * 2; }

static void packed_bytes(const chunking *ch, int64_t N, sweep sw, int nt, bool b_kept, size_t *bytes_a, size_t *bytes_b) {
    if (sw == SWEEP_GROUPED) {
        *bytes_a = (size_t)(nt * 2 * group_panels(N) * ch->nq_max) * TILE * 2;
        *bytes_b = (size_t)(ch->kchunks * ch->b_tiles) * TILE * 2;
    } else if (sw == SWEEP_COLUMNS) {
        *bytes_a = (size_t)(nt * 2 * ch->nq_max) * TILE * 2;
        *bytes_b = (size_t)(ch->kchunks * ch->b_tiles) * TILE * 2;
    } else {
        const int64_t nbuf = ch->kchunks > 1 ? 2 : 1;
        *bytes_a = (size_t)(nbuf * ch->a_tiles) * TILE * 2, *bytes_b = (size_t)(nbuf * ch->b_tiles) * TILE * 2;
    }
    if (b_kept) *bytes_b = 0;
}

/* The context's kept packing of B for this GEMM (ctx.h), made on first use; *ready: it holds B's current
 * contents (else the GEMM packs B into it, and marks it valid once done). NULL: none kept (no key, or over
 * the limit). */
static pft_packed_operand *kept_b(pft_ctx *ctx, const pft_operand_key *key, pft_gemm_kind kind, bool tb, int64_t N,
                                  int64_t K, int64_t ldb, const chunking *ch, bool *ready) {
    *ready = false;
    if (!key) return NULL;
    const pft_packed_operand want = {.storage = key->storage, .version = key->version, .offset = key->offset,
                                     .ld = ldb, .rows = N, .K = K, .kind = (int)kind, .trans = tb};
    pft_packed_operand *e = pft_ctx_packed_find(ctx, &want);
    if (!e) return pft_ctx_packed_add(ctx, &want, kept_b_bytes(ch));
    *ready = e->valid && e->version == key->version;
    if (!*ready) e->valid = false, e->version = key->version;
    return e;
}

static bool tiles_run(pft_ctx *ctx, pft_gemm_kind kind, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb, float beta,
                      float *C, int64_t ldc, int64_t sc, int64_t batch, const pft_gemm_epilogue *ep,
                      const pft_operand_key *b_key) {
    if (kind == PFT_GEMM_BLAS) return false;
    if (batch <= 0 || M <= 0 || N <= 0) return true;
    if (K <= 0) { /* an empty sum: C = beta C */
        for (int64_t b = 0; b < batch; b++)
            for (int64_t r = 0; r < M; r++)
                for (int64_t j = 0; j < N; j++) C[b * sc + r * ldc + j] = beta == 0.0f ? 0.0f : beta * C[b * sc + r * ldc + j];
        return true;
    }
    const chunking ch = chunking_of(kind, M, N, K);
    const bool local = in_parallel_region();
    const int nt = team_size(ctx, M, N, K, local);
    const sweep sw = sweep_of(&ch, kind, ta, M, N, K, nt);
    bool b_ready = false;
    pft_packed_operand *kept = !local && batch == 1 ? kept_b(ctx, b_key, kind, tb, N, K, ldb, &ch, &b_ready) : NULL;
    size_t bytes_a, bytes_b;
    packed_bytes(&ch, N, sw, nt, kept != NULL, &bytes_a, &bytes_b);
    /* a thread's small GEMMs (attention's per-head blocks, thousands a step) pack on its stack: no
     * allocation per call */
    uint16_t stack_buf[LOCAL_PACK / 2] __attribute__((aligned(64)));
    uint16_t *pa = !local ? ctx_scratch(ctx, bytes_a + bytes_b) : bytes_a + bytes_b <= LOCAL_PACK ? stack_buf
                                                                  : malloc(bytes_a + bytes_b);
    if (!pa) return false;
    uint16_t *pb = kept ? kept->tiles : pa + bytes_a / 2;
    uint64_t ranges[2 * STEAL_MAX], *steal_ranges = ctx->gemm_static ? NULL : ranges;
    for (int64_t b = 0; b < batch; b++) {
        const gemm_args g = {kind, ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, A + b * sa, B + b * sb, C + b * sc, pa, pb,
                             ep ? ep->bias : NULL, ep ? ep->gelu : NULL, ep ? ep->ld_gelu : 0, ep && ep->gelu && ep->slope,
                             a_in_place(kind, ta, K) ? M / 32 : 0, kept != NULL, kept && b_ready, steal_ranges,
                             &ctx->stats.stolen_blocks, ctx->gemm_hold_us};
        gemm1(&g, &ch, sw, nt);
    }
    if (kept) kept->valid = true;
    if (local && pa != stack_buf) free(pa);
    return true;
}

bool pft_gemm_tiles(pft_ctx *ctx, pft_gemm_kind kind, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb, float beta,
                    float *C, int64_t ldc, int64_t sc, int64_t batch) {
    return tiles_run(ctx, kind, ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch, NULL, NULL);
}

bool pft_gemm_tiles_epilogue(pft_ctx *ctx, pft_gemm_kind kind, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                             float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                             int64_t ldc, const pft_gemm_epilogue *ep, const pft_operand_key *b_key) {
    return tiles_run(ctx, kind, ta, tb, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1, ep, b_key);
}

#else /* no tile kernels in this build (not x86-64, or an old compiler) */

bool pft_gemm_kind_runs(pft_gemm_kind kind) { return kind == PFT_GEMM_BLAS; }

bool pft_gemm_tiles(pft_ctx *ctx, pft_gemm_kind kind, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb, float beta,
                   float *C, int64_t ldc, int64_t sc, int64_t batch) {
    return false;
}

bool pft_gemm_tiles_epilogue(pft_ctx *ctx, pft_gemm_kind kind, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                             float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                             int64_t ldc, const pft_gemm_epilogue *ep, const pft_operand_key *b_key) {
    return false;
}

#endif
