/* ctx.h - the pft context: everything that would otherwise be global state.
 *
 *     pft_ctx *ctx = pft_ctx_new(2, 1234);          // 2 threads, RNG seed 1234
 *     pft_tensor *t = pft_tensor_zeros(ctx, 2, (int64_t[]){3, 4});
 *     if (!t) fprintf(stderr, "%s\n", pft_ctx_error(ctx));
 *     pft_tensor_release(t);
 *     pft_ctx_free(ctx);
 *
 * A context holds the thread count, the dropout RNG (a seed plus a counter, so that a mask depends only
 * on (seed, counter, element index) and never on the thread count), the grad-mode switch, the last error
 * message, and counters that tests read (live tensors, backward kernels run, FLOPs).
 *
 * Errors: every core function that can fail returns a pft_status (or NULL for constructors) and writes a
 * message into the context with pft_ctx_seterr. Nothing in core/ aborts or exits on user input; only the
 * Lua binding turns a status into a Lua error. */
#ifndef PFT_CTX_H
#define PFT_CTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum pft_status {
    PFT_OK = 0,
    PFT_ERR_SHAPE,     /* shapes do not agree */
    PFT_ERR_ARG,       /* a bad argument (range, type, option) */
    PFT_ERR_ALLOC,     /* memory could not be allocated */
    PFT_ERR_STATE,     /* an operation in the wrong state (backward twice, use after free) */
    PFT_ERR_IO,        /* a file could not be opened, read or written */
    PFT_ERR_FORMAT,    /* a file's contents are malformed */
    PFT_ERR_UNSUPPORTED/* no kernel for this device / dtype */
} pft_status;

/* Counters read by tests and benchmarks; reset with pft_ctx_reset_stats. */
typedef struct pft_stats {
    int64_t live_tensors;      /* tensor structs alive (not storages) */
    int64_t live_storages;
    int64_t backward_kernels;  /* backward kernel invocations (one per gradient produced) */
    int64_t backward_flops;    /* multiply-adds x2 spent in backward GEMMs */
    int64_t forward_flops;
    int64_t stolen_blocks;     /* blocks of a tiled GEMM computed by a thread that took them from another's share */
} pft_stats;

/* Freed tensor buffers kept for reuse: a training step allocates the same activation sizes every
 * step, and a fresh large malloc is an mmap whose pages fault in again on first touch (measured: a
 * [4096, 1536] GEMM result runs at 0.69x of BLAS into a fresh buffer, 1.0x into a reused one). Where the
 * pft binary fixed malloc's mmap threshold (hugepages.h), only blocks above it (ctx->cache_min): malloc
 * reuses smaller freed blocks for any size, the cache only for sizes near their own. */
#define PFT_CACHE_SLOTS 64
/* A block serves requests up to 1/PFT_CACHE_SLACK smaller than itself: batches of varying length (SST-2's
 * packed tokens, evaluation) ask for a new size every step, which an exact-size cache never had; their
 * buffers came from malloc and, freed, went back to the system (an evaluation's pages faulted in afresh
 * every batch: 7% of its time) */
#ifndef PFT_CACHE_SLACK
#define PFT_CACHE_SLACK 4
#endif
typedef struct pft_cached_block {
    void *ptr;
    size_t bytes;
} pft_cached_block;

/* What a GEMM operand holds: the contents of a storage (tensor.h's id and version) from an element offset */
typedef struct pft_operand_key {
    uint64_t storage, version;
    int64_t offset;
} pft_operand_key;

/* A frozen weight's GEMM operand, packed into tiles and kept between calls (gemm_tiles.c): packing W for
 * every linear's forward and input gradient was a tenth of a LoRA step, and W does not change. The key is
 * the weight's contents: its storage's id and version (tensor.h: every write to a storage changes its
 * version, so a packing of older contents is never read), where in it, and the layout of the packing. */
typedef struct pft_packed_operand {
    uint64_t storage, version;
    int64_t offset, ld, rows, K; /* rows: op(B)'s columns N */
    int kind;                    /* pft_gemm_kind */
    bool trans;
    bool valid; /* the tiles hold the storage's contents at `version` (false while none were packed) */
    void *tiles;
    size_t bytes;
} pft_packed_operand;
/* bytes of packed operands a context keeps at most, by default (PFT_PACKED_MB, pft_ctx_set_packed_mb):
 * MiniLM's six layers, both layouts of every weight, are 85 MB in fp32 (42 in bf16); BERT-base's 680 MB */
#ifndef PFT_PACKED_LIMIT
#define PFT_PACKED_LIMIT ((size_t)1 << 30)
#endif

struct pft_backend;

/* Who computes the CPU's GEMMs: OpenBLAS (fp32), or pft's own tiled GEMM (gemm_tiles.h) in fp32 on AVX-512,
 * or with bf16 operands and fp32 sums on AVX512-BF16 or AMX (train.precision = "bf16") */
typedef enum pft_gemm_kind { PFT_GEMM_BLAS = 0, PFT_GEMM_F32_AVX512, PFT_GEMM_BF16_AVX512, PFT_GEMM_BF16_AMX } pft_gemm_kind;

typedef struct pft_ctx {
    int threads;
    /* the CPU kernel table (backend.h): the widest instruction set this processor runs, or
     * PFT_CPU_KERNELS's (baseline, avx2, avx512) when it names one this processor runs */
    const struct pft_backend *cpu_kernels;
    pft_gemm_kind bf16_gemm; /* precision bf16: its GEMM; PFT_GEMM_BLAS: the precision is fp32 (the default) */
    pft_gemm_kind f32_gemm;  /* fp32's GEMM: PFT_GEMM_F32_AVX512 where the processor has AVX-512, else PFT_GEMM_BLAS */
    void *gemm_scratch;      /* the tiled GEMM's packed operands (gemm_tiles.c): mapped, grown, never shrunk, unmapped with the ctx */
    size_t gemm_scratch_bytes;
    uint64_t seed;        /* dropout RNG: masks come from (seed, rng_counter + element index) */
    uint64_t rng_counter; /* advanced by the number of elements each random op draws */
    int grad_enabled;     /* > 0: ops record on the tape; pft_ctx_no_grad_enter/leave nest */
    int alloc_fail_after; /* testing hook: < 0 off; otherwise fail the allocation after this many more */
    int gemm_hold_us;     /* testing hook: a tiled GEMM's last thread waits this long before its blocks (0: off),
                           * so that the others run out of their own and take from its share */
    bool gemm_static;     /* benchmark hook (bench/steal): a tiled GEMM's threads keep to their static shares */
    uint64_t visit_stamp; /* graph traversal marks: fresh per backward */
    pft_stats stats;
    pft_cached_block cache[PFT_CACHE_SLOTS];
    int cache_count;
    size_t cache_bytes, cache_limit; /* limit 0 disables the cache */
    size_t cache_min; /* smaller blocks go back to malloc: its mmap threshold where GLIBC_TUNABLES fixes one */
    pft_packed_operand *packed; /* kept packed operands (pft_packed_operand) */
    int packed_count, packed_cap;
    size_t packed_bytes, packed_limit; /* limit 0: none kept */
    uint64_t storage_ids;              /* the last storage id handed out (tensor.c) */
    pft_status last_status;
    char error[1024];
} pft_ctx;

pft_ctx *pft_ctx_new(int threads, uint64_t seed);
void pft_ctx_free(pft_ctx *ctx); /* also frees the buffers in the cache and the kept packed operands */

/* The kept packed operands (pft_packed_operand): the entry of this storage with this layout (its version may
 * be older: the caller packs it again and sets the version), or NULL; a new entry with `bytes` of tiles
 * (NULL: over packed_limit, or out of memory); every entry of a storage dropped (tensor.c, as the storage
 * goes: its id never comes back, so its entries could never be read again). */
pft_packed_operand *pft_ctx_packed_find(pft_ctx *ctx, const pft_packed_operand *key);
pft_packed_operand *pft_ctx_packed_add(pft_ctx *ctx, const pft_packed_operand *key, size_t bytes);
void pft_ctx_packed_forget(pft_ctx *ctx, uint64_t storage);
/* A tensor's buffer: `bytes` aligned to PFT_BUFFER_ALIGN, from malloc (NULL: out of memory); freed with
 * pft_buffer_free only. Not aligned_alloc: glibc's memalign asks for the size plus the alignment, so a freed
 * block never fitted a request of its own size again, and the heap grew at every step instead of reusing it
 * (fresh pages faulted in: a [4096, 384] linear at 0.25-0.8x of its GEMM, tests/c/test_ops.c). */
#define PFT_BUFFER_ALIGN 64
void *pft_buffer_alloc(size_t bytes);
void pft_buffer_free(void *data);

/* Buffer cache: take the smallest block of bytes .. bytes + bytes / PFT_CACHE_SLACK (NULL if none; its size
 * in *got), or offer one (false: the caller frees it, pft_buffer_free). */
void *pft_ctx_cache_take(pft_ctx *ctx, size_t bytes, size_t *got);
bool pft_ctx_cache_put(pft_ctx *ctx, void *ptr, size_t bytes);
void pft_ctx_cache_clear(pft_ctx *ctx);
pft_status pft_ctx_seterr(pft_ctx *ctx, pft_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
const char *pft_ctx_error(const pft_ctx *ctx);
void pft_ctx_clear_error(pft_ctx *ctx);
void pft_ctx_reset_stats(pft_ctx *ctx);
void pft_ctx_set_seed(pft_ctx *ctx, uint64_t seed); /* also resets the counter */
/* CPU kernels for an instruction set: "baseline", "avx2", "avx512" or "auto" (the widest this processor
 * runs). PFT_ERR_UNSUPPORTED, naming the ones it has, when this build or processor lacks it. */
pft_status pft_ctx_set_cpu_kernels(pft_ctx *ctx, const char *isa);
const char *pft_ctx_cpu_kernels(const pft_ctx *ctx); /* the isa in use */
/* Who computes the fp32 GEMMs: "avx512" (pft's tiled GEMM, gemm_tiles.h), "openblas", or "auto" (NULL too):
 * avx512 where the processor has it. A new context takes PFT_CPU_GEMM's. The two differ in the last bits;
 * each gives the same bits for every thread count and kernel table. */
pft_status pft_ctx_set_cpu_gemm(pft_ctx *ctx, const char *gemm);
/* How many MB of frozen weights' GEMM packings the context may keep (ctx.h's packed operands): a whole number
 * 0 .. 1,048,576, "0" keeping none; NULL or "" the default (PFT_PACKED_LIMIT). A new context takes
 * PFT_PACKED_MB's. Packings kept beyond a lowered limit stay until their storage goes. Results are the same
 * bits either way. */
pft_status pft_ctx_set_packed_mb(pft_ctx *ctx, const char *mb);
const char *pft_ctx_cpu_gemm(const pft_ctx *ctx); /* "avx512" or "openblas" */
/* Precision of the GEMMs (recipes' train.precision): "fp32" (default), or "bf16": operands rounded to
 * bfloat16, products summed in fp32, through AMX where the processor has it, else AVX512-BF16
 * ("bf16-amx" / "bf16-avx512" name one), the attention kernels' per-head products included. Everything
 * else stays fp32. PFT_ERR_UNSUPPORTED, saying what the processor lacks, when it runs neither. */
pft_status pft_ctx_set_precision(pft_ctx *ctx, const char *precision);
const char *pft_ctx_precision(const pft_ctx *ctx); /* "fp32", "bf16-amx" or "bf16-avx512" */

/* no-grad scope: ops inside record nothing */
void pft_ctx_no_grad_enter(pft_ctx *ctx);
void pft_ctx_no_grad_leave(pft_ctx *ctx);

/* Writes "[a, b, c]" into buf; returns buf. Used in error messages. */
char *pft_shape_str(char *buf, size_t n, int ndim, const int64_t *shape);

#endif
