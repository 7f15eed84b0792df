/* optim.c - SGD with momentum and AdamW over parameter groups; state allocated on first update. The
 * per-element updates and gradient clipping's sums run in the parameter's backend (adamw_step, sgd_step,
 * sum_squares, scale_inplace in backend.h); this file keeps the groups, the state and the step's scalars. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "backend.h"

typedef struct param_slot {
    pft_tensor *param; /* one reference */
    int group;
    int64_t step;      /* updates applied to this parameter (AdamW bias correction) */
    float *m, *v;      /* AdamW moments, or SGD's momentum buffer in m; NULL until the first update */
    uint8_t *zero_rows; /* AdamW, a gradient that comes with its rows: the rows whose m and v are still +0
                         * (zero_rows_of); NULL: not known */
    bool fresh;         /* m and v as state_alloc made them (all +0), no update or import since */
} param_slot;

struct pft_optim {
    pft_ctx *ctx;
    pft_optim_kind kind;
    int n_groups, cap_groups;
    pft_optim_group *groups;
    int n_params, cap_params;
    param_slot *params;
    size_t state_bytes;
};

pft_optim *pft_optim_new(pft_ctx *ctx, pft_optim_kind kind) {
    pft_optim *opt = calloc(1, sizeof *opt);
    if (!opt) {
        pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "optimizer: out of memory");
        return NULL;
    }
    opt->ctx = ctx;
    opt->kind = kind;
    return opt;
}

void pft_optim_free(pft_optim *opt) {
    if (!opt) return;
    for (int i = 0; i < opt->n_params; i++) {
        pft_tensor_release(opt->params[i].param);
        free(opt->params[i].m);
        free(opt->params[i].v);
        free(opt->params[i].zero_rows);
    }
    free(opt->params);
    free(opt->groups);
    free(opt);
}

pft_optim_group pft_optim_group_defaults(pft_optim_kind kind) {
    pft_optim_group g = {.lr = 1e-3, .weight_decay = 0.0, .momentum = 0.0, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    if (kind == PFT_OPTIM_ADAMW) g.weight_decay = 0.01; /* torch.optim.AdamW's default */
    return g;
}

static bool grow(void **p, int *cap, int need, size_t size) {
    if (need <= *cap) return true;
    int c = *cap ? *cap * 2 : 8;
    while (c < need) c *= 2;
    void *q = realloc(*p, size * (size_t)c);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

int pft_optim_add_group(pft_optim *opt, const pft_optim_group *settings, int n, pft_tensor *const *params) {
    pft_ctx *ctx = opt->ctx;
    const pft_optim_group *g = settings;
    if (!(g->lr >= 0) || !(g->weight_decay >= 0) || !(g->momentum >= 0 && g->momentum < 1) ||
        !(g->beta1 >= 0 && g->beta1 < 1) || !(g->beta2 >= 0 && g->beta2 < 1) || !(g->eps > 0 || opt->kind == PFT_OPTIM_SGD)) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "optimizer: invalid group settings (lr %g, weight_decay %g, momentum %g, "
                                          "betas %g/%g, eps %g)", g->lr, g->weight_decay, g->momentum, g->beta1, g->beta2, g->eps);
        return -1;
    }
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < opt->n_params; i++)
            if (opt->params[i].param == params[k]) {
                pft_ctx_seterr(ctx, PFT_ERR_ARG, "optimizer: parameter '%s' is already in group %d",
                               params[k]->name ? params[k]->name : "(unnamed)", opt->params[i].group + 1);
                return -1;
            }
        for (int j = 0; j < k; j++)
            if (params[j] == params[k]) {
                pft_ctx_seterr(ctx, PFT_ERR_ARG, "optimizer: parameter '%s' appears twice in one group",
                               params[k]->name ? params[k]->name : "(unnamed)");
                return -1;
            }
    }
    if (!grow((void **)&opt->groups, &opt->cap_groups, opt->n_groups + 1, sizeof *opt->groups) ||
        !grow((void **)&opt->params, &opt->cap_params, opt->n_params + n, sizeof *opt->params)) {
        pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "optimizer: out of memory");
        return -1;
    }
    int gi = opt->n_groups++;
    opt->groups[gi] = *g;
    for (int k = 0; k < n; k++)
        opt->params[opt->n_params++] = (param_slot){.param = pft_tensor_retain(params[k]), .group = gi};
    return gi;
}

int pft_optim_group_count(const pft_optim *opt) { return opt->n_groups; }

pft_optim_group *pft_optim_group_get(pft_optim *opt, int group) {
    return group >= 0 && group < opt->n_groups ? &opt->groups[group] : NULL;
}

static float *state_alloc(pft_optim *opt, int64_t n) {
    float *s = calloc((size_t)n, sizeof(float));
    if (s) opt->state_bytes += (size_t)n * sizeof(float);
    return s;
}

/* The parameter as one contiguous block: the optimizer updates storage in place, which needs the
 * parameter to be a dense tensor (parameters are created that way; views of them are not parameters). */
static pft_status check_dense(pft_optim *opt, const pft_tensor *p) {
    if (pft_tensor_is_contiguous(p)) return PFT_OK;
    return pft_ctx_seterr(opt->ctx, PFT_ERR_ARG, "optimizer: parameter '%s' is a non-contiguous view",
                          p->name ? p->name : "(unnamed)");
}

/* The rows of s's state whose m and v are still +0, for the rows kernel (backend.h's adamw_step_rows): all of
 * them at the state's first update (m and v fresh from calloc), then every row not yet given a gradient (the
 * caller clears the rows each step gives one). Only known that way: a step whose gradient does not say its
 * rows, or an import, ends it for the rest of the run (NULL). NULL also where there is no memory for it. */
static const uint8_t *zero_rows_of(param_slot *s, int64_t rows) {
    if (!s->zero_rows && s->fresh && (s->zero_rows = malloc((size_t)rows))) memset(s->zero_rows, 1, (size_t)rows);
    return s->zero_rows;
}

/* The step's scalars here, in double as torch does; the per-element update is the backend's. */
static void adamw_update(pft_ctx *ctx, const pft_backend *be, param_slot *s, float gs, const pft_optim_group *G) {
    pft_tensor *param = s->param;
    float *p = pft_tensor_data(param);
    const float *g = pft_tensor_data(param->grad);
    const int64_t n = pft_tensor_numel(param), t = s->step;
    const float b1 = (float)G->beta1, b2 = (float)G->beta2, eps = (float)G->eps;
    const float decay = (float)(1.0 - G->lr * G->weight_decay);
    const double bc1 = 1.0 - pow(G->beta1, (double)t), bc2 = 1.0 - pow(G->beta2, (double)t);
    const float step = (float)(G->lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const uint8_t *used = pft_tensor_grad_rows(param); /* where known, the rows whose gradient may be nonzero */
    if (used && be->adamw_step_rows) {
        const int64_t rows = param->shape[0], len = n / rows;
        const uint8_t *zero = zero_rows_of(s, rows);
        be->adamw_step_rows(ctx, p, s->m, s->v, g, gs, b1, b2, eps, decay, step, inv_sqrt_bc2, rows, len, used, zero);
        for (int64_t r = 0; zero && r < rows; r++)
            if (used[r]) s->zero_rows[r] = 0;
        return;
    }
    be->adamw_step(ctx, p, s->m, s->v, g, gs, b1, b2, eps, decay, step, inv_sqrt_bc2, n);
    free(s->zero_rows); /* any row may have had a gradient */
    s->zero_rows = NULL;
}

static void sgd_update(pft_ctx *ctx, const pft_backend *be, float *p, const float *g, float gs, float *buf, int64_t n,
                       const pft_optim_group *G, bool first) {
    be->sgd_step(ctx, p, buf, g, gs, (float)G->lr, (float)G->weight_decay, (float)G->momentum, first, n);
}

pft_status pft_optim_step(pft_optim *opt) { return pft_optim_step_scaled(opt, 1.0f); }

pft_status pft_optim_step_scaled(pft_optim *opt, float grad_scale) {
    for (int i = 0; i < opt->n_params; i++) {
        param_slot *s = &opt->params[i];
        pft_tensor *p = s->param;
        if (!p->requires_grad || !pft_tensor_grad(p)) continue; /* frozen: no update, no decay, no state */
        pft_status st = check_dense(opt, p);
        if (st) return st;
        int64_t n = pft_tensor_numel(p);
        const pft_optim_group *G = &opt->groups[s->group];
        bool first = s->step == 0;
        const pft_backend *be = pft_backend_for(p);
        if (opt->kind == PFT_OPTIM_ADAMW ? !be->adamw_step : !be->sgd_step)
            return pft_ctx_seterr(opt->ctx, PFT_ERR_UNSUPPORTED, "optimizer: the %s backend has no %s step", be->name,
                                  opt->kind == PFT_OPTIM_ADAMW ? "AdamW" : "SGD");
        if (opt->kind == PFT_OPTIM_ADAMW) {
            if (!s->m && !s->v) s->fresh = true;
            if (!s->m) s->m = state_alloc(opt, n);
            if (!s->v) s->v = state_alloc(opt, n);
            if (!s->m || !s->v)
                return pft_ctx_seterr(opt->ctx, PFT_ERR_ALLOC, "optimizer: no memory for the state of '%s'",
                                      p->name ? p->name : "(unnamed)");
            s->step++;
            pft_tensor_mark_written(p);
            adamw_update(opt->ctx, be, s, grad_scale, G);
            s->fresh = false;
        } else {
            if (G->momentum > 0 && !s->m && !(s->m = state_alloc(opt, n)))
                return pft_ctx_seterr(opt->ctx, PFT_ERR_ALLOC, "optimizer: no memory for the state of '%s'",
                                      p->name ? p->name : "(unnamed)");
            s->step++;
            pft_tensor_mark_written(p);
            sgd_update(opt->ctx, be, pft_tensor_data(p), pft_tensor_data(p->grad), grad_scale, G->momentum > 0 ? s->m : NULL,
                       n, G, first);
        }
    }
    return PFT_OK;
}

void pft_optim_zero_grad(pft_optim *opt) {
    for (int i = 0; i < opt->n_params; i++) pft_tensor_zero_grad(opt->params[i].param);
}

size_t pft_optim_state_bytes(const pft_optim *opt) { return opt->state_bytes; }

bool pft_optim_has_state(const pft_optim *opt, const pft_tensor *p) {
    for (int i = 0; i < opt->n_params; i++)
        if (opt->params[i].param == p) return opt->params[i].m != NULL || opt->params[i].v != NULL;
    return false;
}

int pft_optim_param_count(const pft_optim *opt) { return opt->n_params; }

bool pft_optim_state_export(const pft_optim *opt, int i, pft_optim_param_state *out) {
    if (i < 0 || i >= opt->n_params) return false;
    const param_slot *s = &opt->params[i];
    if (!s->m && !s->v) return false;
    *out = (pft_optim_param_state){.param = s->param, .step = s->step, .numel = pft_tensor_numel(s->param),
                                   .m = s->m, .v = s->v};
    return true;
}

pft_status pft_optim_state_import(pft_optim *opt, const char *name, int64_t step, int64_t numel, const float *m,
                                  const float *v) {
    param_slot *s = NULL;
    for (int i = 0; i < opt->n_params && !s; i++)
        if (opt->params[i].param->name && !strcmp(opt->params[i].param->name, name)) s = &opt->params[i];
    if (!s) return pft_ctx_seterr(opt->ctx, PFT_ERR_ARG, "optimizer state: no parameter named '%s'", name);
    int64_t n = pft_tensor_numel(s->param);
    if (numel != n)
        return pft_ctx_seterr(opt->ctx, PFT_ERR_SHAPE, "optimizer state for '%s': %lld values, the parameter has %lld",
                              name, (long long)numel, (long long)n);
    bool adam = opt->kind == PFT_OPTIM_ADAMW;
    if (!m || (adam && !v) || step < 0)
        return pft_ctx_seterr(opt->ctx, PFT_ERR_ARG, "optimizer state for '%s': %s", name,
                              step < 0 ? "negative step count" : adam ? "AdamW needs both m and v" : "no momentum buffer");
    if (!s->m && !(s->m = state_alloc(opt, n)))
        return pft_ctx_seterr(opt->ctx, PFT_ERR_ALLOC, "optimizer: no memory for the state of '%s'", name);
    if (adam && !s->v && !(s->v = state_alloc(opt, n)))
        return pft_ctx_seterr(opt->ctx, PFT_ERR_ALLOC, "optimizer: no memory for the state of '%s'", name);
    memcpy(s->m, m, (size_t)n * sizeof(float));
    if (adam) memcpy(s->v, v, (size_t)n * sizeof(float));
    s->step = step;
    free(s->zero_rows); /* which rows are still zero is not known from here on */
    s->zero_rows = NULL, s->fresh = false;
    return PFT_OK;
}

double pft_grad_norm(int n, pft_tensor *const *params) {
    double sq = 0;
    for (int k = 0; k < n; k++) {
        if (pft_tensor_grad_is_zero(params[k])) continue;
        const pft_tensor *g = params[k]->grad;
        const pft_backend *be = pft_backend_for(g);
        const uint8_t *rows = pft_tensor_grad_rows(params[k]); /* where known, the rows that may be nonzero */
        /* gradients are contiguous (autograd.h); each parameter's sum of squares in double, in index order */
        if (rows && be->sum_squares_rows)
            sq += be->sum_squares_rows(g->ctx, pft_tensor_data(g), g->shape[0], pft_tensor_numel(g) / g->shape[0], rows);
        else
            sq += be->sum_squares(g->ctx, pft_tensor_data(g), pft_tensor_numel(g));
    }
    return sqrt(sq);
}

float pft_clip_coef(double norm, double max_norm) {
    const double coef = max_norm / (norm + 1e-6);
    return isfinite(norm) && coef < 1.0 ? (float)coef : 1.0f;
}

double pft_clip_grad_norm(int n, pft_tensor *const *params, double max_norm) {
    const double norm = pft_grad_norm(n, params);
    const float coef = pft_clip_coef(norm, max_norm);
    if (coef < 1.0f)
        for (int k = 0; k < n; k++) {
            if (pft_tensor_grad_is_zero(params[k])) continue;
            const pft_tensor *g = params[k]->grad;
            pft_backend_for(g)->scale_inplace(g->ctx, pft_tensor_data(g), coef, pft_tensor_numel(g));
        }
    return norm;
}
