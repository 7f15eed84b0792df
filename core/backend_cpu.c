/* backend_cpu.c - the CPU backend: OpenBLAS for GEMM, kernels_cpu.c for everything else (the fused
 * attention kernels there call pft_cpu_gemm below). */
#include <cblas.h>
#include <string.h>

#include "backend.h"
#include "gemm_tiles.h"
#include "kernels_cpu.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Threads: OpenBLAS always runs single-threaded; pft splits a big GEMM into row (or column) blocks of
 * C itself, one per OpenMP thread of ctx->threads. One thread pool (libgomp) instead of two: OpenBLAS's
 * pthreads pool and libgomp's each spin-wait for work after their region and take cores from each other
 * (measured: 12% of a MiniLM forward in sched_yield). OpenBLAS's result for an element of C depends on
 * the shape of the call that computes it (measured: a [512, 64] x [64, 64] product split in two row
 * halves differs from the whole in half its elements), so the blocks are a function of the shape alone,
 * never of the thread count: threads only decide who computes which block, and results are bit-identical
 * for every thread count (tests/c/test_threads.c). Inside a parallel region (the attention kernels run one
 * (sequence, head) per thread) a GEMM stays whole on its caller. */
#define GEMM_PAR_MIN (1 << 21) /* multiply-adds: below this a GEMM is one call */
#define GEMM_ALIGN 16          /* block edges on multiples of this many rows / columns */
#define GEMM_BLOCKS 8          /* at most this many blocks ... */
#define GEMM_MIN_BLOCK 64      /* ... of at least this many rows / columns */

static void blas_one_thread(void) {
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

static void sgemm1(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N,
                (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

void pft_cpu_gemm(pft_ctx *ctx, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb, float beta, float *C, int64_t ldc,
                  int64_t sc, int64_t batch) {
    bool in_region = false;
#ifdef _OPENMP
    in_region = omp_in_parallel();
#endif
    /* pft's tiled GEMM (bf16 precision, or fp32 where the processor has AVX-512): every GEMM, the attention
     * kernels' per-block ones too (on their thread); OpenBLAS in fp32 when its scratch cannot be had */
    const pft_gemm_kind tiles = ctx->bf16_gemm ? ctx->bf16_gemm : ctx->f32_gemm;
    if (tiles && batch > 0 && pft_gemm_tiles(ctx, tiles, ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch))
        return;
    const bool whole = M * N * K < GEMM_PAR_MIN || in_region;
    if (whole) {
        blas_one_thread(); /* outside a region this also readies BLAS for one (attention calls with batch 0) */
        for (int64_t b = 0; b < batch; b++)
            sgemm1(ta, tb, M, N, K, alpha, A + b * sa, lda, B + b * sb, ldb, beta, C + b * sc, ldc);
        return;
    }
    blas_one_thread();
    /* blocks of C, from the shape only: over rows when M >= N, else over columns */
    const bool rows = M >= N;
    const int64_t len = rows ? M : N;
    int64_t per = ((len + GEMM_BLOCKS - 1) / GEMM_BLOCKS + GEMM_ALIGN - 1) / GEMM_ALIGN * GEMM_ALIGN;
    if (per < GEMM_MIN_BLOCK) per = GEMM_MIN_BLOCK;
    const int64_t nblk = (len + per - 1) / per, tasks = batch * nblk;
    const int nt = ctx->threads < tasks ? ctx->threads : (int)tasks;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t b = t / nblk, lo = (t % nblk) * per, n = lo + per < len ? per : len - lo;
        const float *Ab = A + b * sa, *Bb = B + b * sb;
        float *Cb = C + b * sc;
        if (rows) /* rows lo.. of op(A) and C */
            sgemm1(ta, tb, n, N, K, alpha, ta ? Ab + lo : Ab + lo * lda, lda, Bb, ldb, beta, Cb + lo * ldc, ldc);
        else /* columns lo.. of op(B) and C */
            sgemm1(ta, tb, M, n, K, alpha, Ab, lda, tb ? Bb + lo * ldb : Bb + lo, ldb, beta, Cb + lo, ldc);
    }
}

/* pft's tiled GEMM writes bias and GELU as it writes C (gemm_tiles.h's epilogue), and keeps a weight's
 * packing; OpenBLAS can do neither */
bool pft_cpu_gemm_linear(pft_ctx *ctx, bool trans_b, int64_t M, int64_t N, int64_t K, const float *A, const float *B,
                         int64_t ldb, float beta, float *C, const float *bias, float *G, bool slope,
                         const pft_operand_key *b_key) {
    const pft_gemm_kind tiles = ctx->bf16_gemm ? ctx->bf16_gemm : ctx->f32_gemm;
    const pft_gemm_epilogue ep = {bias, G, N, slope};
    /* (K 0: an empty sum, which the tiled GEMM writes without its epilogue; the op's long way adds the bias) */
    return tiles && K > 0 &&
           pft_gemm_tiles_epilogue(ctx, tiles, false, trans_b, M, N, K, 1.0f, A, K, B, ldb, beta, C, N,
                                   bias || G ? &ep : NULL, b_key);
}

/* --- the kernel tables: one per instruction set kernels_cpu.c was compiled for ------------------------ */

#ifdef PFT_CPU_VARIANTS /* x86-64: kernels_cpu.c also built with -march=x86-64-v3 and -march=x86-64-v4 */
extern const pft_backend pft_backend_cpu_avx2, pft_backend_cpu_avx512;
#endif

/* The tables this build has, widest last, and whether this processor (and its OS) runs each. The vector
 * versions compute exactly what the baseline computes (no FMA contraction, no reassociation: the Makefile's
 * -ffp-contract=off), only more elements per instruction; tests/c/test_backend.c checks that bit for bit. */
static const struct cpu_table {
    const char *isa;
    const pft_backend *table;
} cpu_tables[] = {
    {"baseline", &pft_backend_cpu},
#ifdef PFT_CPU_VARIANTS
    {"avx2", &pft_backend_cpu_avx2},
    {"avx512", &pft_backend_cpu_avx512},
#endif
};
#define CPU_TABLES ((int)(sizeof cpu_tables / sizeof cpu_tables[0]))

static bool cpu_runs(int i) {
#ifdef PFT_CPU_VARIANTS
    __builtin_cpu_init();
    const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
    if (cpu_tables[i].table == &pft_backend_cpu_avx2) return v3;
    if (cpu_tables[i].table == &pft_backend_cpu_avx512)
        return v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512cd");
#endif
    (void)i;
    return true;
}

const pft_backend *pft_backend_cpu_kernels(const char *isa) {
    for (int i = CPU_TABLES - 1; i >= 0; i--)
        if ((!isa || !strcmp(isa, "auto") || !strcmp(isa, cpu_tables[i].isa)) && cpu_runs(i)) return cpu_tables[i].table;
    return NULL;
}

const char *pft_backend_cpu_isa(const pft_backend *table) {
    for (int i = 0; i < CPU_TABLES; i++)
        if (cpu_tables[i].table == table) return cpu_tables[i].isa;
    return NULL;
}

int pft_backend_cpu_list(const char **isas, int max) {
    int n = 0;
    for (int i = 0; i < CPU_TABLES; i++)
        if (cpu_runs(i) && n < max) isas[n++] = cpu_tables[i].isa;
    return n;
}

const pft_backend *pft_backend_for(const pft_tensor *t) {
    return t->ctx->cpu_kernels; /* one device so far; a CUDA table is chosen here by t->storage->device */
}
