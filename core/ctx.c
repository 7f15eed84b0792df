/* ctx.c - context lifecycle, error messages, counters. */
#include "ctx.h"

#include "backend.h"
#include "gemm_tiles.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* threads <= 0 asks for the default: PFT_THREADS when it is a positive integer, else the online CPUs */
static int default_threads(void) {
    const char *env = getenv("PFT_THREADS");
    if (env && *env) {
        char *end;
        long n = strtol(env, &end, 10);
        if (*end == '\0' && n > 0 && n <= 4096) return (int)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n > 4096 ? 4096 : n) : 1;
}

/* glibc's mmap threshold where GLIBC_TUNABLES fixes it (the pft binary's second run does, hugepages.c), else 0.
 * Blocks below it come from the heap, whose freed memory malloc reuses for any size; kept in the buffer cache
 * as well, they were memory that malloc could not reuse (a dense step's peak RSS 1.29 -> 1.41 GB). Where the
 * threshold moves (glibc's default), the cache keeps every size: freed blocks there went back to the system. */
static size_t malloc_threshold(void) {
    const char *t = getenv("GLIBC_TUNABLES"), *key = "glibc.malloc.mmap_threshold=";
    const char *at = t ? strstr(t, key) : NULL;
    return at ? (size_t)strtoull(at + strlen(key), NULL, 10) : 0;
}

pft_ctx *pft_ctx_new(int threads, uint64_t seed) {
    pft_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->threads = threads > 0 ? threads : default_threads();
    const pft_backend *asked = pft_backend_cpu_kernels(getenv("PFT_CPU_KERNELS")); /* hosts report a bad value */
    ctx->cpu_kernels = asked ? asked : pft_backend_cpu_kernels(NULL);
    pft_ctx_set_cpu_gemm(ctx, getenv("PFT_CPU_GEMM")); /* a bad value is reported by hosts (lua_common.c) */
    ctx->seed = seed;
    ctx->grad_enabled = 1;
    ctx->alloc_fail_after = -1;
#if defined(__SANITIZE_ADDRESS__)
    ctx->cache_limit = 0; /* let AddressSanitizer see every free: a reused block would hide a use after free */
#else
    ctx->cache_limit = (size_t)1 << 30;
#endif
    ctx->cache_min = malloc_threshold();
    /* (kept under AddressSanitizer too: their memory is never handed out again) */
    if (pft_ctx_set_packed_mb(ctx, getenv("PFT_PACKED_MB"))) /* a bad value is reported by hosts (lua_common.c) */
        pft_ctx_set_packed_mb(ctx, NULL);
    return ctx;
}

void pft_ctx_free(pft_ctx *ctx) {
    if (!ctx) return;
    pft_ctx_cache_clear(ctx);
    for (int i = 0; i < ctx->packed_count; i++) pft_buffer_free(ctx->packed[i].tiles);
    free(ctx->packed);
    pft_gemm_scratch_release(ctx);
    free(ctx);
}

/* malloc's blocks are 16-byte aligned: the buffer starts 16 to 64 bytes into its block, and the byte before
 * it says how far */
void *pft_buffer_alloc(size_t bytes) {
    unsigned char *block = bytes <= SIZE_MAX - PFT_BUFFER_ALIGN ? malloc(bytes + PFT_BUFFER_ALIGN) : NULL;
    if (!block) return NULL;
    unsigned char *data = block + PFT_BUFFER_ALIGN - (uintptr_t)block % PFT_BUFFER_ALIGN;
    data[-1] = (unsigned char)(data - block);
    return data;
}

void pft_buffer_free(void *data) {
    if (data) free((unsigned char *)data - ((unsigned char *)data)[-1]);
}

void *pft_ctx_cache_take(pft_ctx *ctx, size_t bytes, size_t *got) {
    int best = -1;
    for (int i = ctx->cache_count - 1; i >= 0; i--) { /* newest first: among equal sizes its pages are the warmest */
        const size_t b = ctx->cache[i].bytes;
        if (b >= bytes && b - bytes <= bytes / PFT_CACHE_SLACK && (best < 0 || b < ctx->cache[best].bytes)) best = i;
    }
    if (best < 0) return NULL;
    void *p = ctx->cache[best].ptr;
    *got = ctx->cache[best].bytes;
    ctx->cache_bytes -= *got;
    ctx->cache[best] = ctx->cache[--ctx->cache_count];
    return p;
}

bool pft_ctx_cache_put(pft_ctx *ctx, void *ptr, size_t bytes) {
    if (bytes < ctx->cache_min || ctx->cache_count == PFT_CACHE_SLOTS || ctx->cache_bytes + bytes > ctx->cache_limit)
        return false;
    ctx->cache[ctx->cache_count++] = (pft_cached_block){ptr, bytes};
    ctx->cache_bytes += bytes;
    return true;
}

void pft_ctx_cache_clear(pft_ctx *ctx) {
    for (int i = 0; i < ctx->cache_count; i++) pft_buffer_free(ctx->cache[i].ptr);
    ctx->cache_count = 0;
    ctx->cache_bytes = 0;
}

static bool same_layout(const pft_packed_operand *a, const pft_packed_operand *b) {
    return a->storage == b->storage && a->offset == b->offset && a->ld == b->ld && a->rows == b->rows && a->K == b->K &&
           a->kind == b->kind && a->trans == b->trans;
}

pft_packed_operand *pft_ctx_packed_find(pft_ctx *ctx, const pft_packed_operand *key) {
    for (int i = 0; i < ctx->packed_count; i++)
        if (same_layout(&ctx->packed[i], key)) return &ctx->packed[i];
    return NULL;
}

pft_packed_operand *pft_ctx_packed_add(pft_ctx *ctx, const pft_packed_operand *key, size_t bytes) {
    if (ctx->packed_bytes + bytes > ctx->packed_limit) return NULL;
    if (ctx->packed_count == ctx->packed_cap) {
        const int cap = ctx->packed_cap ? 2 * ctx->packed_cap : 32;
        pft_packed_operand *grown = realloc(ctx->packed, sizeof *grown * (size_t)cap);
        if (!grown) return NULL;
        ctx->packed = grown, ctx->packed_cap = cap;
    }
    void *tiles = pft_buffer_alloc(bytes);
    if (!tiles) return NULL;
    pft_packed_operand *e = &ctx->packed[ctx->packed_count++];
    *e = *key;
    e->valid = false;
    e->tiles = tiles, e->bytes = bytes;
    ctx->packed_bytes += bytes;
    return e;
}

void pft_ctx_packed_forget(pft_ctx *ctx, uint64_t storage) {
    for (int i = ctx->packed_count - 1; i >= 0; i--) {
        if (ctx->packed[i].storage != storage) continue;
        pft_buffer_free(ctx->packed[i].tiles);
        ctx->packed_bytes -= ctx->packed[i].bytes;
        ctx->packed[i] = ctx->packed[--ctx->packed_count];
    }
}

pft_status pft_ctx_seterr(pft_ctx *ctx, pft_status code, const char *fmt, ...) {
    if (!ctx) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
    va_end(ap);
    ctx->last_status = code;
    return code;
}

const char *pft_ctx_error(const pft_ctx *ctx) { return ctx ? ctx->error : "no context"; }

void pft_ctx_clear_error(pft_ctx *ctx) {
    ctx->error[0] = '\0';
    ctx->last_status = PFT_OK;
}

void pft_ctx_reset_stats(pft_ctx *ctx) {
    int64_t live = ctx->stats.live_tensors, st = ctx->stats.live_storages;
    memset(&ctx->stats, 0, sizeof ctx->stats);
    ctx->stats.live_tensors = live; /* liveness is not a rate: keep it */
    ctx->stats.live_storages = st;
}

void pft_ctx_set_seed(pft_ctx *ctx, uint64_t seed) {
    ctx->seed = seed;
    ctx->rng_counter = 0;
}

void pft_ctx_no_grad_enter(pft_ctx *ctx) { ctx->grad_enabled--; }
void pft_ctx_no_grad_leave(pft_ctx *ctx) { ctx->grad_enabled++; }

char *pft_shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t used = 0;
    used += (size_t)snprintf(buf + used, n - used, "[");
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}

pft_status pft_ctx_set_cpu_kernels(pft_ctx *ctx, const char *isa) {
    const pft_backend *table = pft_backend_cpu_kernels(isa);
    if (table) {
        ctx->cpu_kernels = table;
        return PFT_OK;
    }
    const char *have[8];
    char list[128] = "";
    for (int i = 0, n = pft_backend_cpu_list(have, 8); i < n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", have[i]);
    return pft_ctx_seterr(ctx, PFT_ERR_UNSUPPORTED, "cpu kernels '%s': not built for or not run by this processor (it runs: %s)",
                          isa ? isa : "?", list);
}

const char *pft_ctx_cpu_kernels(const pft_ctx *ctx) { return pft_backend_cpu_isa(ctx->cpu_kernels); }

pft_status pft_ctx_set_packed_mb(pft_ctx *ctx, const char *mb) {
    if (!mb || !*mb) {
        ctx->packed_limit = PFT_PACKED_LIMIT;
        return PFT_OK;
    }
    char *end;
    errno = 0;
    const unsigned long long n = strtoull(mb, &end, 10);
    if (*end || errno || mb[0] == '-' || mb[0] == '+' || n > (1u << 20))
        return pft_ctx_seterr(ctx, PFT_ERR_ARG, "packed MB '%s': expected a whole number of MB, 0 to 1048576", mb);
    ctx->packed_limit = (size_t)n << 20;
    return PFT_OK;
}

/* pft's tiled GEMM where the processor has AVX-512: it shares packed operands between the threads (OpenBLAS,
 * split into blocks by backend_cpu.c, packs the shared operand again for each block) */
pft_status pft_ctx_set_cpu_gemm(pft_ctx *ctx, const char *gemm) {
    const char *g = gemm && *gemm ? gemm : "auto";
    const bool tiles = pft_gemm_kind_runs(PFT_GEMM_F32_AVX512);
    if (!strcmp(g, "openblas") || (!strcmp(g, "auto") && !tiles)) {
        ctx->f32_gemm = PFT_GEMM_BLAS;
        return PFT_OK;
    }
    if ((!strcmp(g, "auto") || !strcmp(g, "avx512")) && tiles) {
        ctx->f32_gemm = PFT_GEMM_F32_AVX512;
        return PFT_OK;
    }
    return pft_ctx_seterr(ctx, strcmp(g, "avx512") ? PFT_ERR_ARG : PFT_ERR_UNSUPPORTED,
                          strcmp(g, "avx512") ? "cpu gemm '%s': expected auto, avx512 or openblas"
                                              : "cpu gemm '%s': this processor has no AVX-512",
                          g);
}

const char *pft_ctx_cpu_gemm(const pft_ctx *ctx) { return pft_gemm_kind_name(ctx->f32_gemm); }

pft_status pft_ctx_set_precision(pft_ctx *ctx, const char *precision) {
    const char *p = precision ? precision : "?";
    if (!strcmp(p, "fp32")) {
        ctx->bf16_gemm = PFT_GEMM_BLAS;
        return PFT_OK;
    }
    const bool amx = !strcmp(p, "bf16-amx"), avx512 = !strcmp(p, "bf16-avx512");
    if (strcmp(p, "bf16") && !amx && !avx512)
        return pft_ctx_seterr(ctx, PFT_ERR_ARG, "precision '%s': expected fp32, bf16, bf16-amx or bf16-avx512", p);
    if (!avx512 && pft_gemm_kind_runs(PFT_GEMM_BF16_AMX)) {
        ctx->bf16_gemm = PFT_GEMM_BF16_AMX;
        return PFT_OK;
    }
    if (!amx && pft_gemm_kind_runs(PFT_GEMM_BF16_AVX512)) {
        ctx->bf16_gemm = PFT_GEMM_BF16_AVX512;
        return PFT_OK;
    }
    return pft_ctx_seterr(ctx, PFT_ERR_UNSUPPORTED,
                          "precision '%s': this processor has %s (bf16 GEMMs need Intel AMX-BF16 or AVX512-BF16: "
                          "Intel Sapphire Rapids or later, AMD Zen 4 or later); use fp32",
                          p, pft_gemm_kind_runs(PFT_GEMM_BF16_AVX512) ? "AVX512-BF16 but no AMX" : "neither AMX-BF16 nor AVX512-BF16");
}

const char *pft_ctx_precision(const pft_ctx *ctx) {
    return ctx->bf16_gemm == PFT_GEMM_BF16_AMX ? "bf16-amx" : ctx->bf16_gemm == PFT_GEMM_BF16_AVX512 ? "bf16-avx512" : "fp32";
}
