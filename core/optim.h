/* optim.h - SGD with momentum and AdamW over parameter groups.
 *
 *     pft_optim *opt = pft_optim_new(ctx, PFT_OPTIM_ADAMW);
 *     pft_optim_group g = pft_optim_group_defaults(PFT_OPTIM_ADAMW);   // lr 1e-3, betas .9/.999, eps 1e-8, wd 0.01
 *     g.lr = 3e-5;
 *     int body = pft_optim_add_group(opt, &g, n, params);              // returns the group index
 *     ... forward, pft_backward(loss, NULL) ...
 *     pft_optim_step(opt);          // updates every parameter that requires a gradient and has one
 *     pft_optim_zero_grad(opt);
 *     pft_optim_free(opt);
 *
 * The optimizer holds a reference to each parameter. State (momentum; AdamW's m and v) is allocated on
 * a parameter's first update, so a parameter that never trains (requires_grad false, or no .grad) costs
 * no optimizer memory and is never touched: no update, no weight decay. Each parameter has its own step
 * count for bias correction, so a layer unfrozen late starts its correction afresh, as a fresh AdamW
 * would. Group settings (lr above all) may be changed between steps with pft_optim_group_get.
 *
 * AdamW follows torch.optim.AdamW: p -= lr * wd * p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps). SGD follows torch.optim.SGD with momentum and
 * dampening 0: buf = mu buf + g (buf = g on the first step); p -= lr * (g + wd p folded into g).
 *
 * Checkpoints: pft_optim_state_export walks the parameters that have state (borrowing the optimizer's
 * buffers); pft_optim_state_import copies a saved state into the parameter of the same name, so that a
 * resumed run continues exactly where it stopped (same m, v, momentum and bias-correction step). */
#ifndef PFT_OPTIM_H
#define PFT_OPTIM_H

#include "tensor.h"

typedef enum pft_optim_kind { PFT_OPTIM_SGD = 0, PFT_OPTIM_ADAMW = 1 } pft_optim_kind;

typedef struct pft_optim_group {
    double lr;
    double weight_decay;
    double momentum;      /* SGD */
    double beta1, beta2;  /* AdamW */
    double eps;           /* AdamW */
} pft_optim_group;

typedef struct pft_optim pft_optim;

pft_optim *pft_optim_new(pft_ctx *ctx, pft_optim_kind kind);
void pft_optim_free(pft_optim *opt);
pft_optim_group pft_optim_group_defaults(pft_optim_kind kind);
/* Adds a group; returns its index, or -1 with the error set (a parameter already in another group). */
int pft_optim_add_group(pft_optim *opt, const pft_optim_group *settings, int n, pft_tensor *const *params);
int pft_optim_group_count(const pft_optim *opt);
pft_optim_group *pft_optim_group_get(pft_optim *opt, int group);
pft_status pft_optim_step(pft_optim *opt);
/* The step with every gradient read as grad_scale g (the gradients are left as they are): with
 * pft_clip_coef, gradient clipping without a pass that scales them, bit-identical to clipping first. */
pft_status pft_optim_step_scaled(pft_optim *opt, float grad_scale);
void pft_optim_zero_grad(pft_optim *opt);
/* Bytes of optimizer state allocated so far (tests: frozen parameters hold none). */
size_t pft_optim_state_bytes(const pft_optim *opt);
/* Whether parameter p has optimizer state yet. */
bool pft_optim_has_state(const pft_optim *opt, const pft_tensor *p);

/* One parameter's state as the optimizer holds it. m and v are borrowed (valid until the next step,
 * import or free); AdamW has both, SGD with momentum has its buffer in m and v NULL. */
typedef struct pft_optim_param_state {
    const pft_tensor *param; /* its name is the key a checkpoint uses */
    int64_t step;            /* updates applied so far */
    int64_t numel;
    const float *m, *v;
} pft_optim_param_state;

int pft_optim_param_count(const pft_optim *opt);
/* The state of parameter i (0-based, group order); false when it has none yet (never updated). */
bool pft_optim_state_export(const pft_optim *opt, int i, pft_optim_param_state *out);
/* Sets the state of the parameter named `name`: step count and a copy of m (and v for AdamW; v may be
 * NULL for SGD). Errors: no parameter of that name, numel mismatch, a missing m or v. */
pft_status pft_optim_state_import(pft_optim *opt, const char *name, int64_t step, int64_t numel, const float *m,
                                  const float *v);

/* Scales the gradients of params (those that have one) so that their global L2 norm is at most
 * max_norm, as torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when < 1.
 * Returns the norm before clipping (summed in double, parameter by parameter in order); a non-finite
 * norm is returned as is and nothing is scaled. */
double pft_clip_grad_norm(int n, pft_tensor *const *params, double max_norm);
/* Its two halves: the global L2 norm of the gradients of params (those that have one), and the factor
 * clipping to max_norm multiplies them by (float; 1 when it does not clip or the norm is not finite). */
double pft_grad_norm(int n, pft_tensor *const *params);
float pft_clip_coef(double norm, double max_norm);

#endif
