/* tensor.c - storage, tensors, aliasing. The ownership rule is in tensor.h.
 *
 * The data layer under the tape: nothing here records autograd nodes (the differentiable views are in
 * ops_view.c, over pft_tensor_alias); a tensor only drops its grad_fn through the release function the
 * tape stored beside it, so this file uses nothing of the tape's header or code. */
#include "tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "rng.h"

/* --- storage ------------------------------------------------------------------------------------ */

static pft_storage *storage_new(pft_ctx *ctx, int ndim, const int64_t *shape, size_t numel) {
    char sh[128];
    if (ctx->alloc_fail_after == 0) {
        pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "cannot allocate a tensor of shape %s: out of memory (simulated)",
                       pft_shape_str(sh, sizeof sh, ndim, shape));
        return NULL;
    }
    if (ctx->alloc_fail_after > 0) ctx->alloc_fail_after--;
    size_t bytes = numel * sizeof(float);
    bytes = (bytes + PFT_BUFFER_ALIGN - 1) / PFT_BUFFER_ALIGN * PFT_BUFFER_ALIGN;
    if (bytes == 0) bytes = PFT_BUFFER_ALIGN;
    pft_storage *s = calloc(1, sizeof *s);
    float *data = s ? pft_ctx_cache_take(ctx, bytes, &bytes) : NULL; /* bytes: the block's, maybe larger */
    if (s && !data) data = pft_buffer_alloc(bytes);
    if (!data) {
        free(s);
        pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "cannot allocate %zu bytes for a tensor of shape %s", bytes,
                       pft_shape_str(sh, sizeof sh, ndim, shape));
        return NULL;
    }
    s->data = data;
    s->numel = numel;
    s->bytes = bytes;
    s->refcount = 1;
    s->device = PFT_DEVICE_CPU;
    s->ctx = ctx;
    s->id = ++ctx->storage_ids;
    ctx->stats.live_storages++;
    return s;
}

static void storage_release(pft_storage *s) {
    if (!s || --s->refcount > 0) return;
    s->ctx->stats.live_storages--;
    if (s->ctx->packed_count) pft_ctx_packed_forget(s->ctx, s->id);
    if (s->release)
        s->release(s);
    else if (s->bytes && !pft_ctx_cache_put(s->ctx, s->data, s->bytes)) /* bytes 0: borrowed, not ours */
        pft_buffer_free(s->data);
    free(s);
}

/* --- tensors ------------------------------------------------------------------------------------ */

/* Checks the shape and returns its element count, or -1 with an error set (negative dims, overflow). */
static int64_t checked_numel(pft_ctx *ctx, int ndim, const int64_t *shape) {
    char sh[128];
    if (ndim < 0 || ndim > PFT_MAX_DIMS) {
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "a tensor has 0 to %d dims, not %d", PFT_MAX_DIMS, ndim);
        return -1;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "negative size in shape %s", pft_shape_str(sh, sizeof sh, ndim, shape));
            return -1;
        }
        if (shape[i] && n > (INT64_MAX / (int64_t)sizeof(float)) / shape[i]) {
            pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "cannot allocate a tensor of shape %s: size overflows",
                           pft_shape_str(sh, sizeof sh, ndim, shape));
            return -1;
        }
        n *= shape[i];
    }
    return n;
}

static void set_contiguous_strides(pft_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
}

static pft_tensor *tensor_struct(pft_ctx *ctx, pft_storage *s, int ndim, const int64_t *shape) {
    pft_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "cannot allocate a tensor header");
        return NULL;
    }
    t->ctx = ctx;
    t->storage = s;
    s->refcount++;
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    set_contiguous_strides(t);
    t->refcount = 1;
    ctx->stats.live_tensors++;
    return t;
}

pft_tensor *pft_tensor_empty(pft_ctx *ctx, int ndim, const int64_t *shape) {
    int64_t n = checked_numel(ctx, ndim, shape);
    if (n < 0) return NULL;
    pft_storage *s = storage_new(ctx, ndim, shape, (size_t)n);
    if (!s) return NULL;
    pft_tensor *t = tensor_struct(ctx, s, ndim, shape);
    storage_release(s); /* the tensor holds the only reference now */
    return t;
}

pft_tensor *pft_tensor_zeros(pft_ctx *ctx, int ndim, const int64_t *shape) {
    pft_tensor *t = pft_tensor_empty(ctx, ndim, shape);
    if (t) pft_backend_for(t)->fill(ctx, t->storage->data, 0.0f, t->storage->numel);
    return t;
}

pft_tensor *pft_tensor_full(pft_ctx *ctx, int ndim, const int64_t *shape, float value) {
    pft_tensor *t = pft_tensor_empty(ctx, ndim, shape);
    if (t) pft_tensor_fill_(t, value);
    return t;
}

pft_tensor *pft_tensor_from_data(pft_ctx *ctx, int ndim, const int64_t *shape, const float *data) {
    pft_tensor *t = pft_tensor_empty(ctx, ndim, shape);
    if (t) memcpy(t->storage->data, data, (size_t)pft_tensor_numel(t) * sizeof(float));
    return t;
}

pft_tensor *pft_tensor_wrap(pft_ctx *ctx, int ndim, const int64_t *shape, float *data, size_t numel,
                            void (*release)(pft_storage *), void *owner) {
    int64_t n = checked_numel(ctx, ndim, shape);
    if (n < 0) return NULL;
    if ((size_t)n > numel) {
        char sh[128];
        pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "cannot wrap %zu elements as shape %s", numel,
                       pft_shape_str(sh, sizeof sh, ndim, shape));
        return NULL;
    }
    pft_storage *s = calloc(1, sizeof *s);
    if (!s) {
        pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "cannot allocate a storage header");
        return NULL;
    }
    s->data = data;
    s->numel = numel;
    s->refcount = 1;
    s->ctx = ctx;
    s->release = release;
    s->owner = owner;
    s->id = ++ctx->storage_ids;
    ctx->stats.live_storages++;
    pft_tensor *t = tensor_struct(ctx, s, ndim, shape);
    storage_release(s);
    return t;
}

pft_tensor *pft_tensor_randn(pft_ctx *ctx, int ndim, const int64_t *shape, float mean, float std) {
    pft_tensor *t = pft_tensor_empty(ctx, ndim, shape);
    if (!t) return NULL;
    int64_t n = pft_tensor_numel(t);
    float *d = t->storage->data;
    uint64_t base = ctx->rng_counter;
    for (int64_t i = 0; i < n; i += 2) {
        /* Box-Muller: two uniforms in (0, 1] give two normals */
        double u1 = 1.0 - pft_rng_uniform(ctx->seed, base + (uint64_t)i);
        double u2 = pft_rng_uniform(ctx->seed, base + (uint64_t)i + 1);
        double r = sqrt(-2.0 * log(u1));
        d[i] = (float)(mean + std * r * cos(2.0 * M_PI * u2));
        if (i + 1 < n) d[i + 1] = (float)(mean + std * r * sin(2.0 * M_PI * u2));
    }
    ctx->rng_counter += pft_randn_counters(n);
    return t;
}

uint64_t pft_randn_counters(int64_t numel) { return (uint64_t)numel + (numel & 1); /* Box-Muller's pairs */ }

pft_tensor *pft_tensor_rand(pft_ctx *ctx, int ndim, const int64_t *shape, float lo, float hi) {
    pft_tensor *t = pft_tensor_empty(ctx, ndim, shape);
    if (!t) return NULL;
    int64_t n = pft_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        t->storage->data[i] = lo + (hi - lo) * (float)pft_rng_uniform(ctx->seed, ctx->rng_counter + (uint64_t)i);
    ctx->rng_counter += (uint64_t)n;
    return t;
}

pft_tensor *pft_tensor_retain(pft_tensor *t) {
    if (t) t->refcount++;
    return t;
}

void pft_tensor_release(pft_tensor *t) {
    if (!t || --t->refcount > 0) return;
    t->ctx->stats.live_tensors--;
    pft_tensor_release(t->grad);
    free(t->grad_rows);
    if (t->grad_fn) t->grad_fn_release(t->grad_fn);
    storage_release(t->storage);
    free(t->name);
    free(t);
}

/* --- queries ------------------------------------------------------------------------------------ */

int64_t pft_tensor_numel(const pft_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

bool pft_tensor_is_contiguous(const pft_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

bool pft_tensor_same_shape(const pft_tensor *a, const pft_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

float pft_tensor_get(const pft_tensor *t, const int64_t *index) {
    int64_t off = t->offset;
    for (int i = 0; i < t->ndim; i++) off += index[i] * t->stride[i];
    return t->storage->data[off];
}

void pft_tensor_to_buffer(const pft_tensor *t, float *dst) {
    int64_t n = pft_tensor_numel(t);
    if (pft_tensor_is_contiguous(t)) {
        memcpy(dst, pft_tensor_data(t), (size_t)n * sizeof(float));
        return;
    }
    int64_t idx[PFT_MAX_DIMS] = {0};
    const float *base = t->storage->data;
    for (int64_t k = 0; k < n; k++) {
        int64_t off = t->offset;
        for (int i = 0; i < t->ndim; i++) off += idx[i] * t->stride[i];
        dst[k] = base[off];
        for (int i = t->ndim - 1; i >= 0; i--) {
            if (++idx[i] < t->shape[i]) break;
            idx[i] = 0;
        }
    }
}

pft_status pft_tensor_set_name(pft_tensor *t, const char *name) {
    char *copy = strdup(name);
    if (!copy) return pft_ctx_seterr(t->ctx, PFT_ERR_ALLOC, "cannot allocate a tensor name");
    free(t->name);
    t->name = copy;
    return PFT_OK;
}

char *pft_tensor_shape_str(const pft_tensor *t, char *buf, size_t n) {
    return pft_shape_str(buf, n, t->ndim, t->shape);
}

/* --- in-place ----------------------------------------------------------------------------------- */

pft_status pft_tensor_copy_(pft_tensor *dst, const pft_tensor *src) {
    if (pft_tensor_numel(dst) != pft_tensor_numel(src)) {
        char a[128], b[128];
        return pft_ctx_seterr(dst->ctx, PFT_ERR_SHAPE, "copy: destination %s and source %s differ in size",
                              pft_tensor_shape_str(dst, a, sizeof a), pft_tensor_shape_str(src, b, sizeof b));
    }
    pft_tensor_mark_written(dst);
    if (pft_tensor_is_contiguous(dst)) {
        pft_tensor_to_buffer(src, pft_tensor_data(dst));
        return PFT_OK;
    }
    /* strided destination: walk it in row-major order alongside src's row-major elements */
    int64_t n = pft_tensor_numel(dst);
    float *tmp = malloc((size_t)n * sizeof(float));
    if (!tmp) return pft_ctx_seterr(dst->ctx, PFT_ERR_ALLOC, "copy: out of memory");
    pft_tensor_to_buffer(src, tmp);
    int64_t idx[PFT_MAX_DIMS] = {0};
    for (int64_t k = 0; k < n; k++) {
        int64_t off = dst->offset;
        for (int i = 0; i < dst->ndim; i++) off += idx[i] * dst->stride[i];
        dst->storage->data[off] = tmp[k];
        for (int i = dst->ndim - 1; i >= 0; i--) {
            if (++idx[i] < dst->shape[i]) break;
            idx[i] = 0;
        }
    }
    free(tmp);
    return PFT_OK;
}

void pft_tensor_mark_written(pft_tensor *t) {
    pft_storage *s = t->storage;
    s->version++;
    if (s->ctx->packed_count) pft_ctx_packed_forget(s->ctx, s->id);
}

void pft_tensor_fill_(pft_tensor *t, float value) {
    pft_tensor_mark_written(t);
    if (pft_tensor_is_contiguous(t)) {
        float *d = pft_tensor_data(t);
        int64_t n = pft_tensor_numel(t);
        pft_backend_for(t)->fill(t->ctx, d, value, n);
        return;
    }
    int64_t n = pft_tensor_numel(t), idx[PFT_MAX_DIMS] = {0};
    for (int64_t k = 0; k < n; k++) {
        int64_t off = t->offset;
        for (int i = 0; i < t->ndim; i++) off += idx[i] * t->stride[i];
        t->storage->data[off] = value;
        for (int i = t->ndim - 1; i >= 0; i--) {
            if (++idx[i] < t->shape[i]) break;
            idx[i] = 0;
        }
    }
}

/* --- aliases (the differentiable views over them are in ops_view.c) ---------------------------- */

pft_tensor *pft_tensor_alias(pft_tensor *t, int ndim, const int64_t *shape, const int64_t *stride, int64_t offset) {
    pft_tensor *v = tensor_struct(t->ctx, t->storage, ndim, shape);
    if (!v) return NULL;
    if (ndim) memcpy(v->stride, stride, sizeof(int64_t) * (size_t)ndim);
    v->offset = offset;
    return v;
}

pft_tensor *pft_tensor_detach(pft_tensor *t) {
    return pft_tensor_alias(t, t->ndim, t->shape, t->stride, t->offset);
}
