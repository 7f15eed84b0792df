/* nn.c - BERT: config, parameters under Hugging Face names, forward, losses, weight load/save. */
#include "nn.h"

#include <cJSON.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "safetensors.h"

/* --- config.json ---------------------------------------------------------------------------------- */

static char *read_text_file(pft_ctx *ctx, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 && n < (1L << 26) ? malloc((size_t)n + 1) : NULL;
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: cannot read (%ld bytes)", path, n);
        free(buf);
        fclose(f);
        return NULL;
    }
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static pft_status json_int(pft_ctx *ctx, const char *path, const cJSON *root, const char *key, int *dst, int dflt, bool required) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        if (required) return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: missing required key \"%s\"", path, key);
        *dst = dflt;
        return PFT_OK;
    }
    /* the range first: casting a double beyond INT_MAX to int is undefined (fuzz_config found 1e10) */
    if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0 && it->valuedouble <= INT_MAX) ||
        it->valuedouble != (double)(int)it->valuedouble)
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: \"%s\" must be a non-negative integer", path, key);
    *dst = (int)it->valuedouble;
    return PFT_OK;
}

static pft_status json_float(pft_ctx *ctx, const char *path, const cJSON *root, const char *key, float *dst, float dflt) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        *dst = dflt;
        return PFT_OK;
    }
    if (!cJSON_IsNumber(it)) return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: \"%s\" must be a number", path, key);
    *dst = (float)it->valuedouble;
    return PFT_OK;
}

pft_status pft_bert_config_load(pft_ctx *ctx, const char *path, pft_bert_config *cfg) {
    char *text = read_text_file(ctx, path);
    if (!text) return ctx->last_status;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: not a JSON object", path);
    }
    memset(cfg, 0, sizeof *cfg);
    pft_status st = PFT_OK;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) {
        st = pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: missing \"model_type\"", path);
        goto done;
    }
    /* Architectures with BERT's exact parameter layout and numerics. */
    if (strcmp(mt->valuestring, "bert") != 0) {
        st = pft_ctx_seterr(ctx, PFT_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not supported (pft runs BERT-family "
                                                      "checkpoints with model_type \"bert\")", path, mt->valuestring);
        goto done;
    }
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt->valuestring);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "gelu") != 0)) {
        st = pft_ctx_seterr(ctx, PFT_ERR_UNSUPPORTED, "%s: hidden_act \"%s\" is not supported (only \"gelu\")", path,
                            cJSON_IsString(act) ? act->valuestring : "?");
        goto done;
    }
    const cJSON *pe = cJSON_GetObjectItemCaseSensitive(root, "position_embedding_type");
    if (pe && cJSON_IsString(pe) && strcmp(pe->valuestring, "absolute") != 0) {
        st = pft_ctx_seterr(ctx, PFT_ERR_UNSUPPORTED, "%s: position_embedding_type \"%s\" is not supported", path, pe->valuestring);
        goto done;
    }
    if ((st = json_int(ctx, path, root, "vocab_size", &cfg->vocab_size, 0, true)) ||
        (st = json_int(ctx, path, root, "hidden_size", &cfg->hidden_size, 0, true)) ||
        (st = json_int(ctx, path, root, "num_hidden_layers", &cfg->num_layers, 0, true)) ||
        (st = json_int(ctx, path, root, "num_attention_heads", &cfg->num_heads, 0, true)) ||
        (st = json_int(ctx, path, root, "intermediate_size", &cfg->intermediate_size, 0, true)) ||
        (st = json_int(ctx, path, root, "max_position_embeddings", &cfg->max_position_embeddings, 512, false)) ||
        (st = json_int(ctx, path, root, "type_vocab_size", &cfg->type_vocab_size, 2, false)) ||
        (st = json_int(ctx, path, root, "pad_token_id", &cfg->pad_token_id, 0, false)) ||
        (st = json_float(ctx, path, root, "layer_norm_eps", &cfg->layer_norm_eps, 1e-12f)) ||
        (st = json_float(ctx, path, root, "hidden_dropout_prob", &cfg->hidden_dropout, 0.1f)) ||
        (st = json_float(ctx, path, root, "attention_probs_dropout_prob", &cfg->attention_dropout, 0.1f)) ||
        (st = json_float(ctx, path, root, "classifier_dropout", &cfg->classifier_dropout, cfg->hidden_dropout)) ||
        (st = json_float(ctx, path, root, "initializer_range", &cfg->initializer_range, 0.02f)))
        goto done;
    if (cfg->hidden_size == 0 || cfg->num_heads == 0 || cfg->hidden_size % cfg->num_heads)
        st = pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: hidden_size %d does not split into %d attention heads", path,
                            cfg->hidden_size, cfg->num_heads);
    else if (cfg->intermediate_size == 0 || cfg->vocab_size == 0 || cfg->max_position_embeddings == 0)
        st = pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: intermediate_size, vocab_size and max_position_embeddings must be >= 1",
                            path); /* a zero-size weight found by fuzz_config: ops on empty matrices leaked a view */
    else if (!(cfg->layer_norm_eps > 0 && cfg->layer_norm_eps < INFINITY)) /* fuzz_config: eps 0 on 1 feature is 0/0 */
        st = pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: layer_norm_eps must be a positive number, got %g", path,
                            (double)cfg->layer_norm_eps);
    else if (!(cfg->hidden_dropout >= 0 && cfg->hidden_dropout < 1) || !(cfg->attention_dropout >= 0 && cfg->attention_dropout < 1) ||
             !(cfg->classifier_dropout >= 0 && cfg->classifier_dropout < 1))
        st = pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: dropout probabilities must be in [0, 1)", path);
done:
    cJSON_Delete(root);
    return st;
}

/* --- parameters ----------------------------------------------------------------------------------- */

/* The file's entry for a parameter: its exact name, or the same name with/without the "bert." prefix
 * (a bare BertModel checkpoint has no prefix; one saved with a head has it). */
static const pft_st_entry *find_entry(const pft_st_file *f, const char *name) {
    const pft_st_entry *e = pft_st_find(f, name);
    if (e) return e;
    if (strncmp(name, "bert.", 5) == 0) return pft_st_find(f, name + 5);
    char buf[300];
    snprintf(buf, sizeof buf, "bert.%s", name);
    return pft_st_find(f, buf);
}

/* A parameter, initialised as transformers' _init_weights does: init 'n' normal(0, initializer_range), '0'
 * zeros, '1' ones. A normal one that `weights` holds is left unwritten, its draws skipped (the load
 * overwrites it; drawing MiniLM's 22.7 M values was 2/3 of a short `pft eval`'s time). */
static pft_tensor *add_param(pft_bert *m, const pft_st_file *weights, const char *name, int ndim, int64_t d0, int64_t d1,
                             int init) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", m->prefix, name);
    int64_t shape[2] = {d0, d1};
    pft_tensor *t;
    if (init == 'n' && weights && find_entry(weights, full)) {
        t = pft_tensor_empty(m->ctx, ndim, shape);
        if (t) m->ctx->rng_counter += pft_randn_counters(pft_tensor_numel(t));
    } else if (init == 'n')
        t = pft_tensor_randn(m->ctx, ndim, shape, 0.0f, m->cfg.initializer_range);
    else
        t = pft_tensor_full(m->ctx, ndim, shape, init == '1' ? 1.0f : 0.0f);
    if (!t) return NULL;
    if (pft_tensor_set_name(t, full)) {
        pft_tensor_release(t);
        return NULL;
    }
    t->requires_grad = true;
    m->params[m->n_params++] = t;
    return t;
}

static bool head_fits(pft_ctx *ctx, pft_head_kind head, int num_labels) {
    if (head == PFT_HEAD_NONE || num_labels >= 1) return true;
    pft_ctx_seterr(ctx, PFT_ERR_ARG, "bert: a task head needs num_labels >= 1 (got %d)", num_labels);
    return false;
}

/* pft_bert_new; with `weights`, the parameters it holds are left for the load to write (add_param) */
static pft_bert *bert_build(pft_ctx *ctx, const pft_bert_config *cfg, pft_head_kind head, int num_labels,
                            const pft_st_file *weights) {
    if (!head_fits(ctx, head, num_labels)) return NULL;
    pft_bert *m = calloc(1, sizeof *m);
    int max_params = 5 + 16 * cfg->num_layers + 4;
    if (m) m->params = calloc((size_t)max_params, sizeof *m->params);
    if (m) m->layers = calloc((size_t)(cfg->num_layers ? cfg->num_layers : 1), sizeof *m->layers);
    if (!m || !m->params || !m->layers) {
        if (m) free(m->params), free(m->layers);
        free(m);
        pft_ctx_seterr(ctx, PFT_ERR_ALLOC, "bert: out of memory");
        return NULL;
    }
    m->ctx = ctx;
    m->cfg = *cfg;
    m->head = head;
    m->num_labels = head == PFT_HEAD_NONE ? 0 : num_labels;
    m->prefix = head == PFT_HEAD_NONE ? "" : "bert.";
    m->embeddings_training = m->head_training = true;
    m->pack_padding = true;
    m->hidden_states = true;
    const int64_t C = cfg->hidden_size, F = cfg->intermediate_size;
    char name[128];
#define P(field, nm, nd, a, b, init)                                                                         \
    do {                                                                                                     \
        if (!((field) = add_param(m, weights, nm, nd, a, b, init))) goto fail;                               \
    } while (0)
    P(m->word_emb, "embeddings.word_embeddings.weight", 2, cfg->vocab_size, C, 'n');
    P(m->pos_emb, "embeddings.position_embeddings.weight", 2, cfg->max_position_embeddings, C, 'n');
    P(m->type_emb, "embeddings.token_type_embeddings.weight", 2, cfg->type_vocab_size, C, 'n');
    P(m->emb_ln_w, "embeddings.LayerNorm.weight", 1, C, 0, '1');
    P(m->emb_ln_b, "embeddings.LayerNorm.bias", 1, C, 0, '0');
    const bool drawn = !weights || !find_entry(weights, m->word_emb->name);
    if (drawn && cfg->pad_token_id >= 0 && cfg->pad_token_id < cfg->vocab_size) /* nn.Embedding zeroes its padding row */
        memset(pft_tensor_data(m->word_emb) + (int64_t)cfg->pad_token_id * C, 0, sizeof(float) * (size_t)C); /* (fresh) */
    for (int l = 0; l < cfg->num_layers; l++) {
        pft_bert_layer *L = &m->layers[l];
        L->training = true;
#define LP(field, suffix, nd, a, b, init)                                                                    \
    do {                                                                                                     \
        snprintf(name, sizeof name, "encoder.layer.%d.%s", l, suffix);                                       \
        P(field, name, nd, a, b, init);                                                                      \
    } while (0)
        LP(L->q_w, "attention.self.query.weight", 2, C, C, 'n');
        LP(L->q_b, "attention.self.query.bias", 1, C, 0, '0');
        LP(L->k_w, "attention.self.key.weight", 2, C, C, 'n');
        LP(L->k_b, "attention.self.key.bias", 1, C, 0, '0');
        LP(L->v_w, "attention.self.value.weight", 2, C, C, 'n');
        LP(L->v_b, "attention.self.value.bias", 1, C, 0, '0');
        LP(L->ao_w, "attention.output.dense.weight", 2, C, C, 'n');
        LP(L->ao_b, "attention.output.dense.bias", 1, C, 0, '0');
        LP(L->aln_w, "attention.output.LayerNorm.weight", 1, C, 0, '1');
        LP(L->aln_b, "attention.output.LayerNorm.bias", 1, C, 0, '0');
        LP(L->i_w, "intermediate.dense.weight", 2, F, C, 'n');
        LP(L->i_b, "intermediate.dense.bias", 1, F, 0, '0');
        LP(L->o_w, "output.dense.weight", 2, C, F, 'n');
        LP(L->o_b, "output.dense.bias", 1, C, 0, '0');
        LP(L->oln_w, "output.LayerNorm.weight", 1, C, 0, '1');
        LP(L->oln_b, "output.LayerNorm.bias", 1, C, 0, '0');
#undef LP
    }
    if (head != PFT_HEAD_TOKCLS) { /* BertForTokenClassification is built without the pooler */
        P(m->pool_w, "pooler.dense.weight", 2, C, C, 'n');
        P(m->pool_b, "pooler.dense.bias", 1, C, 0, '0');
    }
    if (head != PFT_HEAD_NONE) {
        const char *saved = m->prefix;
        m->prefix = ""; /* the head sits beside "bert.", not inside it */
        P(m->cls_w, "classifier.weight", 2, num_labels, C, 'n');
        P(m->cls_b, "classifier.bias", 1, num_labels, 0, '0');
        m->prefix = saved;
    }
#undef P
    return m;
fail:
    pft_bert_free(m);
    return NULL;
}

pft_bert *pft_bert_new(pft_ctx *ctx, const pft_bert_config *cfg, pft_head_kind head, int num_labels) {
    return bert_build(ctx, cfg, head, num_labels, NULL);
}

void pft_bert_free(pft_bert *m) {
    if (!m) return;
    for (int i = 0; i < m->n_params; i++) pft_tensor_release(m->params[i]);
    free(m->params);
    free(m->layers);
    free(m);
}

/* --- LoRA ------------------------------------------------------------------------------------------ */

static const char *const lora_names[PFT_LORA_TARGETS] = {"query", "key", "value", "attention.output.dense",
                                                         "intermediate.dense", "output.dense"};
static const char *const lora_paths[PFT_LORA_TARGETS] = {"attention.self.query", "attention.self.key", "attention.self.value",
                                                         "attention.output.dense", "intermediate.dense", "output.dense"};

const char *pft_lora_target_name(pft_lora_target t) { return t >= 0 && t < PFT_LORA_TARGETS ? lora_names[t] : NULL; }
const char *pft_lora_target_path(pft_lora_target t) { return t >= 0 && t < PFT_LORA_TARGETS ? lora_paths[t] : NULL; }

static pft_tensor *merged_weight(const pft_bert *m, pft_tensor *w, pft_tensor *a, pft_tensor *b);

/* the weight a target adapts */
static pft_tensor *lora_base(pft_bert_layer *L, pft_lora_target t) {
    pft_tensor *const w[PFT_LORA_TARGETS] = {L->q_w, L->k_w, L->v_w, L->ao_w, L->i_w, L->o_w};
    return w[t];
}

static pft_tensor *lora_param(pft_bert *m, int l, pft_lora_target t, char which, int64_t d0, int64_t d1) {
    char name[256];
    snprintf(name, sizeof name, "%sencoder.layer.%d.%s.lora_%c.weight", m->prefix, l, lora_paths[t], which);
    pft_tensor *p = which == 'A' ? pft_tensor_rand(m->ctx, 2, (int64_t[]){d0, d1}, -1.0f / sqrtf((float)d1), 1.0f / sqrtf((float)d1))
                                 : pft_tensor_zeros(m->ctx, 2, (int64_t[]){d0, d1});
    if (p && pft_tensor_set_name(p, name)) pft_tensor_release(p), p = NULL;
    if (p) p->requires_grad = true, m->params[m->n_params++] = p;
    return p;
}

pft_status pft_bert_add_lora(pft_bert *m, const pft_lora_config *c) {
    if (m->lora_r) return pft_ctx_seterr(m->ctx, PFT_ERR_STATE, "lora: the model has adapters already");
    if (c->r < 1) return pft_ctx_seterr(m->ctx, PFT_ERR_ARG, "lora: r must be >= 1, got %d", c->r);
    if (!(c->alpha > 0)) return pft_ctx_seterr(m->ctx, PFT_ERR_ARG, "lora: alpha must be > 0, got %g", (double)c->alpha);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return pft_ctx_seterr(m->ctx, PFT_ERR_ARG, "lora: dropout must be in [0, 1), got %g", (double)c->dropout);
    int n = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int t = 0; t < PFT_LORA_TARGETS; t++) n += (c->targets[l] >> t) & 1;
    if (!n) return pft_ctx_seterr(m->ctx, PFT_ERR_ARG, "lora: no projection to adapt");
    pft_tensor **grown = realloc(m->params, sizeof *grown * (size_t)(m->n_params + 2 * n));
    if (!grown) return pft_ctx_seterr(m->ctx, PFT_ERR_ALLOC, "lora: out of memory");
    m->params = grown;
    for (int l = 0; l < m->cfg.num_layers; l++) {
        pft_bert_layer *L = &m->layers[l];
        for (int t = 0; t < PFT_LORA_TARGETS; t++) {
            if (!((c->targets[l] >> t) & 1)) continue;
            const pft_tensor *w = lora_base(L, (pft_lora_target)t); /* [out, in] */
            if (!(L->lora_a[t] = lora_param(m, l, (pft_lora_target)t, 'A', c->r, w->shape[1])) ||
                !(L->lora_b[t] = lora_param(m, l, (pft_lora_target)t, 'B', w->shape[0], c->r)))
                return m->ctx->last_status ? m->ctx->last_status : PFT_ERR_ALLOC; /* the ones made are the model's */
        }
    }
    m->lora_r = c->r, m->lora_dropout = c->dropout;
    m->lora_scale = c->scale > 0 ? c->scale : c->alpha / (float)c->r;
    return PFT_OK;
}

pft_status pft_bert_merge_lora(pft_bert *m) {
    pft_status st = PFT_OK;
    for (int l = 0; l < m->cfg.num_layers && !st; l++) {
        pft_bert_layer *L = &m->layers[l];
        for (int t = 0; t < PFT_LORA_TARGETS && !st; t++) {
            if (!L->lora_a[t]) continue;
            pft_tensor *w = lora_base(L, (pft_lora_target)t);
            pft_tensor *sum = merged_weight(m, w, L->lora_a[t], L->lora_b[t]);
            st = sum ? pft_tensor_copy_(w, sum) : (m->ctx->last_status ? m->ctx->last_status : PFT_ERR_ALLOC);
            pft_tensor_release(sum);
        }
    }
    if (st) return st;
    int k = 0; /* drop the adapters from the parameter list, then from the layers */
    for (int i = 0; i < m->n_params; i++) {
        if (strstr(m->params[i]->name, ".lora_")) pft_tensor_release(m->params[i]);
        else m->params[k++] = m->params[i];
    }
    m->n_params = k;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int t = 0; t < PFT_LORA_TARGETS; t++) m->layers[l].lora_a[t] = m->layers[l].lora_b[t] = NULL;
    m->lora_r = 0;
    return PFT_OK;
}

int pft_bert_param_count(const pft_bert *m) { return m->n_params; }
pft_tensor *pft_bert_param(const pft_bert *m, int i) { return i >= 0 && i < m->n_params ? m->params[i] : NULL; }

pft_tensor *pft_bert_param_find(const pft_bert *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i]->name, name) == 0) return m->params[i];
    return NULL;
}

int64_t pft_bert_numel(const pft_bert *m, bool trainable_only) {
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++)
        if (!trainable_only || m->params[i]->requires_grad) n += pft_tensor_numel(m->params[i]);
    return n;
}

void pft_bert_set_training(pft_bert *m, bool training) { m->training = training; }

/* --- weights -------------------------------------------------------------------------------------- */

static bool is_head_param(const char *name) {
    return strncmp(name, "classifier.", 11) == 0;
}

/* pft_bert_load_weights from the open file f (path: for messages) */
static pft_status load_from(pft_bert *m, const pft_st_file *f, const char *path, bool *loaded_head) {
    pft_ctx *ctx = m->ctx;
    pft_status st = PFT_OK;
    bool head = false;
    char a[128], b[128];
    for (int i = 0; i < m->n_params && !st; i++) {
        pft_tensor *p = m->params[i];
        const pft_st_entry *e = find_entry(f, p->name);
        bool optional = is_head_param(p->name) || (strstr(p->name, "pooler.") && m->head == PFT_HEAD_NONE);
        if (!e) {
            if (!optional) st = pft_ctx_seterr(ctx, PFT_ERR_FORMAT, "%s: missing tensor '%s'", path, p->name);
            continue;
        }
        bool same = e->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = e->shape[d] == p->shape[d];
        if (!same) {
            st = pft_ctx_seterr(ctx, PFT_ERR_SHAPE, "%s: tensor '%s' has shape %s but config.json implies %s", path, e->name,
                                pft_shape_str(a, sizeof a, e->ndim, e->shape), pft_tensor_shape_str(p, b, sizeof b));
            continue;
        }
        pft_tensor_mark_written(p);
        st = pft_st_read_f32(ctx, f, e, pft_tensor_data(p));
        if (is_head_param(p->name)) head = true;
    }
    if (loaded_head) *loaded_head = head;
    return st;
}

pft_status pft_bert_load_weights(pft_bert *m, const char *path, bool *loaded_head) {
    pft_st_file *f = pft_st_open(m->ctx, path);
    if (!f) return m->ctx->last_status;
    pft_status st = load_from(m, f, path, loaded_head);
    pft_st_close(f);
    return st;
}

pft_bert *pft_bert_load(pft_ctx *ctx, const char *dir, pft_head_kind head, int num_labels) {
    char path[4096];
    pft_bert_config cfg;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (pft_bert_config_load(ctx, path, &cfg)) return NULL;
    if (!head_fits(ctx, head, num_labels)) return NULL;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        char bin[4096];
        snprintf(bin, sizeof bin, "%s/pytorch_model.bin", dir);
        if (stat(bin, &sb) == 0)
            pft_ctx_seterr(ctx, PFT_ERR_UNSUPPORTED, "%s: no model.safetensors; this checkpoint has only pytorch_model.bin, "
                                                     "which pft does not read: convert it to safetensors", dir);
        else
            pft_ctx_seterr(ctx, PFT_ERR_IO, "%s: cannot open: %s (no weights in %s)", path, strerror(errno), dir);
        return NULL;
    }
    pft_st_file *f = pft_st_open(ctx, path);
    pft_bert *m = f ? bert_build(ctx, &cfg, head, num_labels, f) : NULL;
    if (m && load_from(m, f, path, NULL)) pft_bert_free(m), m = NULL;
    pft_st_close(f);
    return m;
}

/* W + scale B A for an adapted weight (a new tensor, no tape), or NULL (error set) */
static pft_tensor *merged_weight(const pft_bert *m, pft_tensor *w, pft_tensor *a, pft_tensor *b) {
    pft_ctx_no_grad_enter(m->ctx);
    pft_tensor *ba = pft_matmul(b, a);
    pft_tensor *s = ba ? pft_scale(ba, m->lora_scale) : NULL;
    pft_tensor *sum = s ? pft_add(w, s) : NULL;
    pft_tensor_release(ba), pft_tensor_release(s);
    pft_ctx_no_grad_leave(m->ctx);
    return sum;
}

/* The adapter of weight p, if p is an adapted projection weight */
static bool adapter_of(const pft_bert *m, const pft_tensor *p, pft_tensor **a, pft_tensor **b) {
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int t = 0; t < PFT_LORA_TARGETS; t++)
            if (m->layers[l].lora_a[t] && lora_base(&m->layers[l], (pft_lora_target)t) == p) {
                *a = m->layers[l].lora_a[t], *b = m->layers[l].lora_b[t];
                return true;
            }
    return false;
}

pft_status pft_bert_save_weights(const pft_bert *m, const char *path) {
    pft_st_entry_in *in = malloc(sizeof *in * (size_t)m->n_params);
    pft_tensor **tmp = calloc((size_t)m->n_params, sizeof *tmp);
    pft_status st = in && tmp ? PFT_OK : pft_ctx_seterr(m->ctx, PFT_ERR_ALLOC, "%s: out of memory", path);
    int n = 0;
    for (int i = 0; i < m->n_params && !st; i++) {
        pft_tensor *p = m->params[i], *a, *b;
        if (strstr(p->name, ".lora_")) continue; /* folded into its weight below: the file is a plain BERT */
        if (adapter_of(m, p, &a, &b) && !(p = tmp[i] = merged_weight(m, p, a, b))) st = m->ctx->last_status;
        if (!st) in[n++] = (pft_st_entry_in){m->params[i]->name, pft_tensor_data(p), p->ndim, p->shape};
    }
    pft_st_meta meta = {"format", "pt"};
    if (!st) st = pft_st_write(m->ctx, path, n, in, 1, &meta);
    for (int i = 0; tmp && i < m->n_params; i++) pft_tensor_release(tmp[i]);
    free(in), free(tmp);
    return st;
}

/* --- forward -------------------------------------------------------------------------------------- */

void pft_bert_output_release(pft_bert_output *out) {
    pft_tensor_release(out->hidden);
    pft_tensor_release(out->pooled);
    pft_tensor_release(out->logits);
    memset(out, 0, sizeof *out);
}

/* W x + b, plus the layer's LoRA adapter on this projection when it has one (pft_linear_lora: + scale B A
 * dropout(x), so a frozen W gets no gradient and costs no memory). */
static pft_tensor *project(const pft_bert *m, const pft_bert_layer *L, pft_lora_target t, pft_tensor *x, pft_tensor *w,
                           pft_tensor *b, bool train) {
    if (!L->lora_a[t]) return pft_linear(x, w, b);
    return pft_linear_lora(x, w, b, L->lora_a[t], L->lora_b[t], m->lora_scale, m->lora_dropout, train);
}

/* x -> layernorm(dropout(dense(x)) + residual), dense being projection t of layer L */
static pft_tensor *dense_residual_norm(const pft_bert *m, const pft_bert_layer *L, pft_lora_target t, pft_tensor *x,
                                       pft_tensor *w, pft_tensor *b, pft_tensor *residual, pft_tensor *ln_w,
                                       pft_tensor *ln_b, float eps, float p, bool train) {
    pft_tensor *h = project(m, L, t, x, w, b, train);
    if (!h) return NULL;
    pft_tensor *y = pft_dropout_add_layernorm(h, residual, ln_w, ln_b, p, train, eps); /* one pass, one node */
    pft_tensor_release(h);
    return y;
}

/* The token layout of a forward: dense [B, T] (with an additive key mask), or packed: only the n real
 * tokens, sequence b being lens[b] rows, so no layer spends work on padding. */
typedef struct layout {
    const float *mask;  /* dense: [B, T] additive, or NULL */
    int64_t B, N;       /* packed: sequences, real tokens */
    const int64_t *lens; /* packed: NULL when dense */
} layout;

/* Self-attention over the layer's input x: the context vectors, x's shape; or, given x's [CLS] rows x_first
 * ([B, C]), theirs only, [B, C]: queries for those rows alone, keys and values for every row */
static pft_tensor *layer_attention(pft_bert *m, const pft_bert_layer *L, pft_tensor *x, pft_tensor *x_first,
                                   const layout *lay, bool train) {
    const pft_bert_config *c = &m->cfg;
    const int64_t D = c->hidden_size / c->num_heads;
    const float scale = 1.0f / sqrtf((float)D), p = c->attention_dropout;
    pft_tensor *q = project(m, L, PFT_LORA_QUERY, x_first ? x_first : x, L->q_w, L->q_b, train);
    pft_tensor *k = q ? project(m, L, PFT_LORA_KEY, x, L->k_w, L->k_b, train) : NULL;
    pft_tensor *v = k ? project(m, L, PFT_LORA_VALUE, x, L->v_w, L->v_b, train) : NULL;
    const int64_t H = c->num_heads;
    pft_tensor *att = !v        ? NULL
                      : x_first ? pft_attention_first(q, k, v, lay->lens ? NULL : lay->mask, lay->lens, lay->B, H, scale, p, train)
                      : lay->lens ? pft_attention_packed(q, k, v, lay->B, lay->lens, H, scale, p, train)
                                  : pft_attention(q, k, v, lay->mask, H, scale, p, train);
    pft_tensor_release(q), pft_tensor_release(k), pft_tensor_release(v);
    return att;
}

/* The rest of the layer, row by row: output projection of the context vectors att, residual x, LayerNorm,
 * then the FFN with its residual and LayerNorm */
static pft_tensor *layer_rows(pft_bert *m, const pft_bert_layer *L, pft_tensor *att, pft_tensor *x, bool train) {
    const pft_bert_config *c = &m->cfg;
    pft_tensor *x1 = dense_residual_norm(m, L, PFT_LORA_ATTN_OUT, att, L->ao_w, L->ao_b, x, L->aln_w, L->aln_b, c->layer_norm_eps, c->hidden_dropout, train);
    if (!x1) return NULL;
    pft_tensor *g;
    if (!L->lora_a[PFT_LORA_INTERMEDIATE]) { /* bias + GELU in one pass over the [N, F] activations */
        g = pft_linear_gelu(x1, L->i_w, L->i_b);
    } else {
        pft_tensor *h = project(m, L, PFT_LORA_INTERMEDIATE, x1, L->i_w, L->i_b, train);
        g = h ? pft_gelu(h) : NULL;
        pft_tensor_release(h);
    }
    pft_tensor *y = g ? dense_residual_norm(m, L, PFT_LORA_OUTPUT, g, L->o_w, L->o_b, x1, L->oln_w, L->oln_b, c->layer_norm_eps, c->hidden_dropout, train) : NULL;
    pft_tensor_release(g);
    pft_tensor_release(x1);
    return y;
}

/* The first token of each sequence, [B, C], from x ([N, C] packed or [B, T, C] dense): a gather whose
 * backward adds into x's gradient. */
static pft_tensor *first_tokens(const layout *lay, pft_tensor *x, int64_t C) {
    const int64_t B = lay->B;
    if (lay->lens) { /* the first row of each sequence; every sequence starts with a real token */
        int32_t *first = malloc(sizeof *first * (size_t)B);
        if (!first) return pft_ctx_seterr(x->ctx, PFT_ERR_ALLOC, "bert: out of memory"), NULL;
        for (int64_t b = 0, r = 0; b < B; r += lay->lens[b], b++) first[b] = (int32_t)r;
        pft_tensor *rows = pft_embedding(x, first, 1, &B);
        free(first);
        return rows;
    }
    pft_tensor *col = pft_tensor_narrow(x, 1, 0, 1);
    pft_tensor *cls = col ? pft_tensor_reshape(col, 2, (int64_t[]){B, C}) : NULL;
    pft_tensor_release(col);
    return cls;
}

/* x -> the layer's output, x's shape; first_only: only its [CLS] rows, [B, C] (nn.h, hidden_states) */
static pft_tensor *encoder_layer(pft_bert *m, const pft_bert_layer *L, pft_tensor *x, const layout *lay, bool first_only) {
    const bool train = m->training && L->training;
    pft_tensor *x1 = first_only ? first_tokens(lay, x, m->cfg.hidden_size) : NULL;
    pft_tensor *att = !first_only || x1 ? layer_attention(m, L, x, x1, lay, train) : NULL;
    pft_tensor *y = att ? layer_rows(m, L, att, first_only ? x1 : x, train) : NULL;
    pft_tensor_release(att), pft_tensor_release(x1);
    return y;
}

/* word + token type + position embeddings of n tokens (ids, types, positions each [n], ndim/shape the
 * tokens' layout), LayerNorm, dropout. */
static pft_tensor *embed(pft_bert *m, int ndim, const int64_t *shape, const int32_t *ids, const int32_t *types,
                         const int32_t *positions) {
    const pft_bert_config *c = &m->cfg;
    pft_tensor *w = pft_embedding_padded(m->word_emb, ids, ndim, shape, c->pad_token_id);
    pft_tensor *typ = w ? pft_embedding(m->type_emb, types, ndim, shape) : NULL;
    pft_tensor *pos = typ ? pft_embedding(m->pos_emb, positions, ndim, shape) : NULL;
    pft_tensor *s1 = pos ? pft_add(w, typ) : NULL; /* transformers' order: (word + type) + position */
    pft_tensor *s2 = s1 ? pft_add(s1, pos) : NULL;
    pft_tensor *n = s2 ? pft_layernorm(s2, m->emb_ln_w, m->emb_ln_b, c->layer_norm_eps) : NULL;
    pft_tensor *y = n ? pft_dropout(n, c->hidden_dropout, m->training && m->embeddings_training) : NULL;
    pft_tensor_release(w), pft_tensor_release(pos), pft_tensor_release(typ);
    pft_tensor_release(s1), pft_tensor_release(s2), pft_tensor_release(n);
    return y;
}

/* Whether to drop the padding: some token is masked and every row starts with a real token (a row whose
 * first token is padding pools padding in transformers; the dense path keeps that exact). */
static bool use_packing(const pft_bert *m, const pft_bert_batch *in) {
    if (!m->pack_padding || !in->attention_mask) return false;
    bool any_pad = false;
    for (int64_t b = 0; b < in->B; b++) {
        if (!in->attention_mask[b * in->T]) return false;
        for (int64_t t = 1; t < in->T && !any_pad; t++) any_pad = !in->attention_mask[b * in->T + t];
    }
    return any_pad;
}

/* A forward's token layout and the per-token arrays it needs (one allocation). */
typedef struct tokens {
    void *mem;
    float *mask;                  /* [BT] additive */
    int32_t *ids, *types, *pos, *rows; /* [N]: packed order; rows = each token's index in [B, T] */
    int64_t *lens;                /* [B] real tokens per sequence */
    bool packed;
    layout lay;
} tokens;

static pft_status check_batch(pft_bert *m, const pft_bert_batch *in) {
    const pft_bert_config *c = &m->cfg;
    if (in->B < 1 || in->T < 1)
        return pft_ctx_seterr(m->ctx, PFT_ERR_SHAPE, "bert: empty batch [%lld, %lld]", (long long)in->B, (long long)in->T);
    if (in->T > c->max_position_embeddings)
        return pft_ctx_seterr(m->ctx, PFT_ERR_SHAPE, "bert: %lld tokens exceed max_position_embeddings %d", (long long)in->T,
                              c->max_position_embeddings);
    if (in->token_type_ids)
        for (int64_t i = 0; i < in->B * in->T; i++)
            if (in->token_type_ids[i] < 0 || in->token_type_ids[i] >= c->type_vocab_size)
                return pft_ctx_seterr(m->ctx, PFT_ERR_ARG, "bert: token_type_ids[%lld] = %d is outside [0, %d)", (long long)i,
                                      in->token_type_ids[i], c->type_vocab_size);
    return PFT_OK;
}

static pft_status tokens_make(pft_bert *m, const pft_bert_batch *in, tokens *tk) {
    const int64_t B = in->B, T = in->T, BT = B * T;
    memset(tk, 0, sizeof *tk);
    tk->packed = use_packing(m, in);
    tk->mem = malloc(sizeof(float) * (size_t)BT + 4 * sizeof(int32_t) * (size_t)BT + sizeof(int64_t) * (size_t)(B + 1));
    if (!tk->mem) return pft_ctx_seterr(m->ctx, PFT_ERR_ALLOC, "bert: out of memory");
    tk->lens = tk->mem; /* first: the int64s stay 8-byte aligned whatever B * T is */
    tk->mask = (float *)(void *)(tk->lens + B + 1);
    tk->ids = (int32_t *)(tk->mask + BT), tk->types = tk->ids + BT, tk->pos = tk->types + BT, tk->rows = tk->pos + BT;
    int64_t N = 0;
    for (int64_t b = 0; b < B; b++) {
        tk->lens[b] = 0;
        for (int64_t t = 0; t < T; t++) {
            const int64_t i = b * T + t;
            const bool real = !in->attention_mask || in->attention_mask[i];
            /* transformers' extended mask: (1 - mask) * finfo(float32).min */
            tk->mask[i] = real ? 0.0f : -FLT_MAX;
            if (real) tk->lens[b]++;
            if (tk->packed && !real) continue;
            tk->ids[N] = in->input_ids ? in->input_ids[i] : 0, tk->types[N] = in->token_type_ids ? in->token_type_ids[i] : 0;
            tk->pos[N] = (int32_t)t, tk->rows[N] = (int32_t)i, N++;
        }
    }
    tk->lay = (layout){.mask = in->attention_mask ? tk->mask : NULL, .B = B, .N = N, .lens = tk->packed ? tk->lens : NULL};
    return PFT_OK;
}

/* Whether layers from.. end with the last one's [CLS] rows only (nn.h, hidden_states) */
static bool first_rows_only(const pft_bert *m, int from, pft_tensor **taps) {
    return !m->hidden_states && m->head == PFT_HEAD_SEQCLS && m->pool_w && !taps && from < m->cfg.num_layers;
}

/* Layers from..L-1 over x (its reference is consumed); taps[b] (b > from) gets the input of layer b, and
 * taps[L] the output. first_only: the last layer's output is its [CLS] rows only, [B, C]. */
static pft_tensor *run_layers(pft_bert *m, pft_tensor *x, const layout *lay, int from, pft_tensor **taps, bool first_only) {
    const int L = m->cfg.num_layers;
    for (int l = from; l < L && x; l++) {
        pft_tensor *y = encoder_layer(m, &m->layers[l], x, lay, first_only && l == L - 1);
        pft_tensor_release(x);
        x = y;
        if (x && taps) taps[l + 1] = pft_tensor_retain(x);
    }
    return x;
}

static pft_tensor *pool(pft_bert *m, pft_tensor *cls) { /* dense + tanh on [CLS]; consumes cls */
    pft_tensor *d = cls ? pft_linear(cls, m->pool_w, m->pool_b) : NULL;
    pft_tensor *p = d ? pft_tanh(d) : NULL;
    pft_tensor_release(d), pft_tensor_release(cls);
    return p;
}

static pft_tensor *classify(pft_bert *m, const tokens *tk, pft_tensor *feat, int64_t B, int64_t T) {
    pft_tensor *d = pft_dropout(feat, m->cfg.classifier_dropout, m->training && m->head_training);
    pft_tensor *logits = d ? pft_linear(d, m->cls_w, m->cls_b) : NULL;
    pft_tensor_release(d);
    if (logits && tk->packed && m->head == PFT_HEAD_TOKCLS) { /* back to [B, T, K], zeros on padding */
        pft_tensor *flat = pft_scatter_rows(logits, tk->rows, B * T);
        pft_tensor_release(logits);
        logits = flat ? pft_tensor_reshape(flat, 3, (int64_t[]){B, T, m->num_labels}) : NULL;
        pft_tensor_release(flat);
    }
    return logits;
}

/* x, the last layer's output -> out's hidden, pooled and logits; first_only: x is the [CLS] rows only and
 * there are no hidden states */
static pft_status finish_tokens(pft_bert *m, const tokens *tk, pft_tensor *x, int64_t B, int64_t T, bool first_only,
                                pft_bert_output *out) {
    const int64_t C = m->cfg.hidden_size;
    if (first_only) {
        if (!(out->pooled = pool(m, pft_tensor_retain(x)))) return PFT_ERR_STATE;
        out->logits = classify(m, tk, out->pooled, B, T);
        return out->logits ? PFT_OK : PFT_ERR_STATE;
    }
    if (tk->packed) {
        pft_tensor *flat = pft_scatter_rows(x, tk->rows, B * T); /* padding rows come back as zeros */
        out->hidden = flat ? pft_tensor_reshape(flat, 3, (int64_t[]){B, T, C}) : NULL;
        pft_tensor_release(flat);
    } else {
        out->hidden = pft_tensor_retain(x);
    }
    if (!out->hidden) return PFT_ERR_STATE;
    if (m->pool_w && !(out->pooled = pool(m, first_tokens(&tk->lay, x, C)))) return PFT_ERR_STATE;
    if (m->head == PFT_HEAD_NONE) return PFT_OK;
    out->logits = classify(m, tk, m->head == PFT_HEAD_SEQCLS ? out->pooled : x, B, T);
    return out->logits ? PFT_OK : PFT_ERR_STATE;
}

static pft_status check_start(pft_bert *m, const pft_bert_start *s, const tokens *tk, int64_t B) {
    const int L = m->cfg.num_layers;
    const int64_t C = m->cfg.hidden_size;
    const pft_tensor *x = s->x;
    const int64_t rows = s->kind == PFT_START_TOKENS ? tk->lay.N : B; /* N = B * T when nothing is padded */
    if (s->kind == PFT_START_TOKENS && (s->boundary < 0 || s->boundary > L))
        return pft_ctx_seterr(m->ctx, PFT_ERR_ARG, "bert: boundary %d outside [0, %d]", s->boundary, L);
    if (s->kind != PFT_START_TOKENS && m->head != PFT_HEAD_SEQCLS)
        return pft_ctx_seterr(m->ctx, PFT_ERR_ARG, "bert: starting at [CLS] or the pooled output needs a sequence head");
    if (s->kind != PFT_START_TOKENS && !m->pool_w)
        return pft_ctx_seterr(m->ctx, PFT_ERR_ARG, "bert: this model has no pooler");
    if (!x || x->ndim != 2 || x->shape[0] != rows || x->shape[1] != C || !pft_tensor_is_contiguous(x))
        return pft_ctx_seterr(m->ctx, PFT_ERR_SHAPE, "bert: the start states must be contiguous [%lld, %lld]",
                              (long long)rows, (long long)C);
    return PFT_OK;
}

/* The forward from the start (kind, boundary, states) instead of the embeddings. */
static pft_status forward_from(pft_bert *m, const pft_bert_batch *in, const pft_bert_start *s, tokens *tk,
                               pft_bert_output *out) {
    const int64_t B = in->B, T = in->T, C = m->cfg.hidden_size;
    pft_status st = check_start(m, s, tk, B);
    if (st) return st;
    if (s->kind == PFT_START_POOLED) {
        out->pooled = pft_tensor_retain(s->x);
    } else if (s->kind == PFT_START_FIRST) {
        if (!(out->pooled = pool(m, pft_tensor_retain(s->x)))) return PFT_ERR_STATE;
    } else {
        pft_tensor *x = tk->packed ? pft_tensor_retain(s->x) : pft_tensor_reshape(s->x, 3, (int64_t[]){B, T, C});
        const bool first_only = first_rows_only(m, s->boundary, NULL);
        x = x ? run_layers(m, x, &tk->lay, s->boundary, NULL, first_only) : NULL;
        st = x ? finish_tokens(m, tk, x, B, T, first_only, out) : PFT_ERR_STATE;
        pft_tensor_release(x);
        return st;
    }
    out->logits = classify(m, tk, out->pooled, B, T);
    return out->logits ? PFT_OK : PFT_ERR_STATE;
}

static pft_status forward_embed(pft_bert *m, const pft_bert_batch *in, tokens *tk, pft_tensor **taps, pft_bert_output *out) {
    const int64_t N = tk->lay.N;
    const int64_t dense_shape[2] = {in->B, in->T};
    pft_tensor *x = tk->packed ? embed(m, 1, &N, tk->ids, tk->types, tk->pos) : embed(m, 2, dense_shape, tk->ids, tk->types, tk->pos);
    if (x && taps) taps[0] = pft_tensor_retain(x);
    const bool first_only = first_rows_only(m, 0, taps);
    x = x ? run_layers(m, x, &tk->lay, 0, taps, first_only) : NULL;
    pft_status st = x ? finish_tokens(m, tk, x, in->B, in->T, first_only, out) : PFT_ERR_STATE;
    pft_tensor_release(x);
    return st;
}

pft_status pft_bert_forward_ex(pft_bert *m, const pft_bert_batch *in, const pft_bert_start *start, pft_tensor **taps,
                               pft_bert_output *out) {
    pft_ctx *ctx = m->ctx;
    memset(out, 0, sizeof *out);
    if (taps) memset(taps, 0, sizeof *taps * (size_t)(m->cfg.num_layers + 1));
    pft_status st = check_batch(m, in);
    tokens tk = {0};
    if (!st) st = tokens_make(m, in, &tk);
    if (!st) st = start ? forward_from(m, in, start, &tk, out) : forward_embed(m, in, &tk, taps, out);
    free(tk.mem);
    if (!st) return PFT_OK;
    pft_bert_output_release(out);
    for (int b = 0; taps && b <= m->cfg.num_layers; b++) pft_tensor_release(taps[b]), taps[b] = NULL;
    return ctx->last_status ? ctx->last_status : PFT_ERR_STATE;
}

pft_status pft_bert_prefix_taps(pft_bert *m, const pft_bert_batch *in, int upto, pft_tensor **taps) {
    if (upto < 0 || upto > m->cfg.num_layers)
        return pft_ctx_seterr(m->ctx, PFT_ERR_ARG, "bert: prefix up to layer %d outside [0, %d]", upto, m->cfg.num_layers);
    memset(taps, 0, sizeof *taps * (size_t)(upto + 1));
    pft_status st = check_batch(m, in);
    tokens tk = {0};
    if (!st) st = tokens_make(m, in, &tk);
    const int64_t N = tk.lay.N, dense_shape[2] = {in->B, in->T};
    pft_tensor *x = st ? NULL
                  : tk.packed ? embed(m, 1, &N, tk.ids, tk.types, tk.pos)
                              : embed(m, 2, dense_shape, tk.ids, tk.types, tk.pos);
    if (x) taps[0] = pft_tensor_retain(x);
    for (int l = 0; l < upto && x; l++) {
        pft_tensor *y = encoder_layer(m, &m->layers[l], x, &tk.lay, false);
        pft_tensor_release(x);
        if ((x = y)) taps[l + 1] = pft_tensor_retain(x);
    }
    if (!st && !x) st = m->ctx->last_status ? m->ctx->last_status : PFT_ERR_STATE;
    pft_tensor_release(x);
    free(tk.mem);
    for (int b = 0; st && b <= upto; b++) pft_tensor_release(taps[b]), taps[b] = NULL;
    return st;
}

pft_status pft_bert_forward(pft_bert *m, const pft_bert_batch *in, pft_bert_output *out) {
    return pft_bert_forward_ex(m, in, NULL, NULL, out);
}

pft_tensor *pft_bert_loss(pft_bert *m, pft_tensor *logits, const int32_t *int_labels, const float *float_labels) {
    pft_ctx *ctx = m->ctx;
    if (!logits || m->head == PFT_HEAD_NONE || (!int_labels == !float_labels)) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "bert loss: needs logits from a task head and exactly one kind of labels");
        return NULL;
    }
    const int64_t K = m->num_labels, N = pft_tensor_numel(logits) / K;
    if (m->head == PFT_HEAD_SEQCLS && K == 1) { /* regression: MSE between logits [B, 1] and labels [B] */
        if (!float_labels) {
            pft_ctx_seterr(ctx, PFT_ERR_ARG, "bert loss: a regression head (num_labels = 1) needs float labels");
            return NULL;
        }
        pft_tensor *target = pft_tensor_from_data(ctx, 2, (int64_t[]){N, 1}, float_labels);
        pft_tensor *l = target ? pft_mse(logits, target) : NULL;
        pft_tensor_release(target);
        return l;
    }
    if (!int_labels) {
        pft_ctx_seterr(ctx, PFT_ERR_ARG, "bert loss: a classification head needs integer labels");
        return NULL;
    }
    pft_tensor *flat = pft_tensor_reshape(logits, 2, (int64_t[]){N, K});
    pft_tensor *l = flat ? pft_cross_entropy(flat, int_labels, N, -100) : NULL;
    pft_tensor_release(flat);
    return l;
}
