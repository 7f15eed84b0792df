/* lua_nn.c - pft.Bert (nn.h): core.bert_load / core.bert_new, forward over a pft.Batch, the task heads'
 * loss, parameters, dropout switches, config and weights files.
 *
 *     local m = core.bert_load("tests/fixtures/bert/tiny_seqcls", "seqcls", 3)
 *     local b = tok:encode_batch({"a funny film", "hello"}, {"not boring", "world"}, {max_length = 128})
 *     local hidden, pooled, logits = m:forward(b)         -- [B, T, C], [B, C], [B, K]
 *     m:set_hidden_states(false)                          -- hidden nil; the last layer's [CLS] rows only
 *     local loss = m:loss(logits, {1, 0})                 -- 0-based class ids; floats for regression
 *     loss:backward()
 *
 * OWNERSHIP as in lua_pft.h: a model box counts as a handle on the per-state context. Tensors that
 * m:params() returns are new references to the model's parameters: they stay valid after the model goes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_pft.h"
#include "nn.h"

#define BERT_MT "pft.Bert"

typedef struct bert_box {
    pft_bert *m;
    pftl_state *S;
} bert_box;

static const char *const head_names[] = {"none", "seqcls", "tokcls", NULL};

/* --- pft.Bert ------------------------------------------------------------------------------------- */

static bert_box *check_bert(lua_State *L, int idx) {
    bert_box *b = luaL_checkudata(L, idx, BERT_MT);
    if (!b->m) luaL_argerror(L, idx, "model used after free");
    return b;
}

static bert_box *push_bert_box(lua_State *L, pftl_state *S) {
    bert_box *b = lua_newuserdata(L, sizeof *b);
    b->m = NULL;
    b->S = S;
    luaL_getmetatable(L, BERT_MT);
    lua_setmetatable(L, -2);
    return b;
}

static int own_bert(lua_State *L, bert_box *b, pft_bert *m) {
    if (!m) return pftl_core_error(L, b->S->ctx);
    b->m = m;
    b->S->handles++;
    return 1;
}

static void bert_release(bert_box *b) {
    if (!b->m) return;
    pft_bert_free(b->m);
    b->m = NULL;
    pftl_state_unref(b->S);
}

static int bert_gc(lua_State *L) {
    bert_box *b = lua_touserdata(L, 1);
    if (b) bert_release(b);
    return 0;
}

static int bert_free(lua_State *L) {
    bert_release(luaL_checkudata(L, 1, BERT_MT));
    return 0;
}

static int check_num_labels(lua_State *L, int arg, pft_head_kind head) {
    if (head == PFT_HEAD_NONE && lua_isnoneornil(L, arg)) return 0;
    int64_t k = pftl_check_int64(L, arg);
    if (head != PFT_HEAD_NONE && (k < 1 || k > 1000000))
        pftl_errorf(L, "bad argument #%d (num_labels must be >= 1 for head '%s', got %lld)", arg, head_names[head], (long long)k);
    return (int)k;
}

/* core.bert_load(dir, head, num_labels): dir/config.json + dir/model.safetensors. head "none" (default),
 * "seqcls" or "tokcls". */
static int l_bert_load(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    pft_head_kind head = (pft_head_kind)luaL_checkoption(L, 2, "none", head_names);
    int k = check_num_labels(L, 3, head);
    pftl_state *S = pftl_state_get(L);
    bert_box *b = push_bert_box(L, S);
    return own_bert(L, b, pft_bert_load(S->ctx, dir, head, k));
}

/* Reads a config table (the keys m:config() returns) over the defaults in cfg; unknown keys raise. */
static void read_config_table(lua_State *L, int idx, pft_bert_config *cfg) {
    static const char *const int_keys[] = {"vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                                           "max_position_embeddings", "type_vocab_size", "pad_token_id", NULL};
    int *int_slots[] = {&cfg->vocab_size, &cfg->hidden_size, &cfg->num_layers, &cfg->num_heads, &cfg->intermediate_size,
                        &cfg->max_position_embeddings, &cfg->type_vocab_size, &cfg->pad_token_id};
    static const char *const float_keys[] = {"layer_norm_eps", "hidden_dropout", "attention_dropout", "classifier_dropout",
                                             "initializer_range", NULL};
    float *float_slots[] = {&cfg->layer_norm_eps, &cfg->hidden_dropout, &cfg->attention_dropout, &cfg->classifier_dropout,
                            &cfg->initializer_range};
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (!k) luaL_error(L, "bert_new: config keys must be strings");
        int done = 0;
        if (!strcmp(k, "head") || !strcmp(k, "num_labels")) done = 1; /* m:config() output passes through */
        if (!done && !strcmp(k, "model_type")) {
            if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "bert"))
                luaL_error(L, "bert_new: model_type must be \"bert\"");
            done = 1;
        }
        for (int i = 0; !done && int_keys[i]; i++) {
            if (strcmp(k, int_keys[i])) continue;
            lua_Number v = lua_tonumber(L, -1);
            if (lua_type(L, -1) != LUA_TNUMBER || v != floor(v) || v < 0 || v > 1e9)
                luaL_error(L, "bert_new: config '%s' must be a non-negative integer", k);
            *int_slots[i] = (int)v;
            done = 1;
        }
        for (int i = 0; !done && float_keys[i]; i++) {
            if (strcmp(k, float_keys[i])) continue;
            if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "bert_new: config '%s' must be a number", k);
            *float_slots[i] = (float)lua_tonumber(L, -1);
            done = 1;
        }
        if (!done) luaL_error(L, "bert_new: unknown config key '%s'", k);
        lua_pop(L, 1);
    }
    if (cfg->vocab_size < 1 || cfg->hidden_size < 1 || cfg->num_heads < 1 || cfg->hidden_size % cfg->num_heads ||
        cfg->intermediate_size < 1 || cfg->max_position_embeddings < 1 || cfg->type_vocab_size < 1)
        luaL_error(L, "bert_new: config needs vocab_size, hidden_size (a multiple of num_heads), num_heads, "
                      "intermediate_size >= 1");
}

/* core.bert_new(config, head, num_labels): fresh weights from the context's seed. config is a table
 * (keys as m:config()) or a directory holding config.json. */
static int l_bert_new(lua_State *L) {
    pft_head_kind head = (pft_head_kind)luaL_checkoption(L, 2, "none", head_names);
    int k = check_num_labels(L, 3, head);
    pftl_state *S = pftl_state_get(L);
    pft_bert_config cfg = {.model_type = "bert", .num_layers = 0, .max_position_embeddings = 512, .type_vocab_size = 2,
                           .layer_norm_eps = 1e-12f, .hidden_dropout = 0.1f, .attention_dropout = 0.1f,
                           .classifier_dropout = 0.1f, .initializer_range = 0.02f};
    if (lua_type(L, 1) == LUA_TSTRING) {
        char path[4096];
        snprintf(path, sizeof path, "%s/config.json", lua_tostring(L, 1));
        if (pft_bert_config_load(S->ctx, path, &cfg)) return pftl_core_error(L, S->ctx);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        read_config_table(L, 1, &cfg);
    }
    bert_box *b = push_bert_box(L, S);
    return own_bert(L, b, pft_bert_new(S->ctx, &cfg, head, k));
}

/* The forward of m:forward, m:forward_from and m:forward_taps: results at stack slots base.. (three
 * boxes pushed first), taps (num_layers + 1 boxes from slot base + 3) when asked. */
static int forward_common(lua_State *L, bert_box *mb, pftl_batch_box *bb, const pft_bert_start *start, bool taps) {
    int base = lua_gettop(L) + 1, L1 = mb->m->cfg.num_layers + 1;
    pftl_tensor_box *h = pftl_push_box(L, mb->S), *p = pftl_push_box(L, mb->S), *lg = pftl_push_box(L, mb->S);
    pft_tensor **tap = NULL;
    pftl_tensor_box **tbox = NULL;
    if (taps) { /* the table of boxes at base + 3, the scratch arrays above it until the end */
        lua_createtable(L, L1, 0);
        tap = lua_newuserdata(L, sizeof *tap * (size_t)L1);
        tbox = lua_newuserdata(L, sizeof *tbox * (size_t)L1);
        for (int b = 0; b < L1; b++) tbox[b] = pftl_push_box(L, mb->S), lua_rawseti(L, base + 3, b + 1);
    }
    pft_bert_batch in = {.B = bb->b.n, .T = bb->b.t, .input_ids = bb->b.ids, .token_type_ids = bb->b.type_ids,
                         .attention_mask = bb->b.mask};
    pft_bert_output out;
    if (pft_bert_forward_ex(mb->m, &in, start, tap, &out)) return pftl_core_error(L, mb->S->ctx);
    /* owned by their boxes before anything can raise (pftl_own raises only on NULL) */
    for (int b = 0; taps && b < L1; b++) pftl_own(L, tbox[b], tap[b]);
    if (out.hidden) pftl_own(L, h, out.hidden); else lua_pushnil(L), lua_replace(L, base);
    if (out.pooled) pftl_own(L, p, out.pooled); else lua_pushnil(L), lua_replace(L, base + 1);
    if (out.logits) pftl_own(L, lg, out.logits); else lua_pushnil(L), lua_replace(L, base + 2);
    lua_settop(L, base + (taps ? 3 : 2));
    return taps ? 4 : 3;
}

/* m:add_lora({r =, alpha =, dropout = 0, scale = nil, targets = {{"query", "value"}, {}, ...}}): targets[i]
 * lists the projections adapted in layer i - 1 (nn.h, pft_lora_target_name) */
static int bert_add_lora(lua_State *L) {
    pft_bert *m = check_bert(L, 1)->m;
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "r");
    lua_getfield(L, 2, "alpha");
    lua_getfield(L, 2, "dropout");
    lua_getfield(L, 2, "scale");
    pft_lora_config c = {.r = (int)luaL_checkinteger(L, -4), .alpha = (float)luaL_checknumber(L, -3),
                         .dropout = (float)luaL_optnumber(L, -2, 0), .scale = (float)luaL_optnumber(L, -1, 0)};
    lua_settop(L, 2);
    unsigned *targets = lua_newuserdata(L, sizeof *targets * (size_t)(m->cfg.num_layers ? m->cfg.num_layers : 1));
    lua_getfield(L, 2, "targets");
    luaL_checktype(L, -1, LUA_TTABLE);
    for (int l = 0; l < m->cfg.num_layers; l++) {
        targets[l] = 0;
        lua_rawgeti(L, -1, l + 1);
        for (int i = 1; lua_istable(L, -1) && i <= (int)lua_objlen(L, -1); i++) {
            lua_rawgeti(L, -1, i);
            const char *name = lua_tostring(L, -1);
            int t = 0;
            while (t < PFT_LORA_TARGETS && !(name && !strcmp(name, pft_lora_target_name((pft_lora_target)t)))) t++;
            if (t == PFT_LORA_TARGETS) return pftl_errorf(L, "add_lora: unknown target '%s' in layer %d", name ? name : "?", l);
            targets[l] |= 1u << t;
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    c.targets = targets;
    if (pft_bert_add_lora(m, &c)) return pftl_core_error(L, m->ctx);
    return 0;
}

/* m:merge_lora(): W += scale B A for every adapter; the adapters are gone afterwards */
static int bert_merge_lora(lua_State *L) {
    pft_bert *m = check_bert(L, 1)->m;
    if (pft_bert_merge_lora(m)) return pftl_core_error(L, m->ctx);
    return 0;
}

/* m:forward(batch) -> hidden [B, T, C], pooled [B, C] or nil, logits [B, K] / [B, T, K] or nil */
static int bert_forward(lua_State *L) {
    bert_box *mb = check_bert(L, 1);
    pftl_batch_box *bb = pftl_check_batch(L, 2);
    lua_settop(L, 2);
    return forward_common(L, mb, bb, NULL, false);
}

/* m:forward_taps(batch) -> hidden, pooled, logits, {input of layer 0 (the embeddings' output), ...,
 * the last layer's output}: num_layers + 1 tensors of the batch's real tokens (nn.h) */
static int bert_forward_taps(lua_State *L) {
    bert_box *mb = check_bert(L, 1);
    pftl_batch_box *bb = pftl_check_batch(L, 2);
    lua_settop(L, 2);
    return forward_common(L, mb, bb, NULL, true);
}

/* m:prefix_taps(batch, upto) -> {input of layer 0, ..., input of layer upto}: only the layers below upto
 * run (nn.h, pft_bert_prefix_taps) */
static int bert_prefix_taps(lua_State *L) {
    bert_box *mb = check_bert(L, 1);
    pftl_batch_box *bb = pftl_check_batch(L, 2);
    int upto = (int)luaL_checkinteger(L, 3);
    if (upto < 0 || upto > mb->m->cfg.num_layers) return pftl_errorf(L, "prefix_taps: upto %d outside [0, %d]", upto, mb->m->cfg.num_layers);
    lua_settop(L, 3);
    lua_createtable(L, upto + 1, 0); /* 4: the boxes */
    pft_tensor **tap = lua_newuserdata(L, sizeof *tap * (size_t)(upto + 1));
    pftl_tensor_box **tbox = lua_newuserdata(L, sizeof *tbox * (size_t)(upto + 1));
    for (int b = 0; b <= upto; b++) tbox[b] = pftl_push_box(L, mb->S), lua_rawseti(L, 4, b + 1);
    pft_bert_batch in = {.B = bb->b.n, .T = bb->b.t, .input_ids = bb->b.ids, .token_type_ids = bb->b.type_ids,
                         .attention_mask = bb->b.mask};
    if (pft_bert_prefix_taps(mb->m, &in, upto, tap)) return pftl_core_error(L, mb->S->ctx);
    for (int b = 0; b <= upto; b++) pftl_own(L, tbox[b], tap[b]);
    lua_settop(L, 4);
    return 1;
}

/* m:forward_from(batch, "tokens" | "first" | "pooled", boundary, x) -> hidden or nil, pooled, logits:
 * the forward from states at a boundary (x [N, C] of the batch's real tokens), from the last layer's
 * [CLS] vectors or from the pooled output (x [B, C]); nothing below runs (nn.h, pft_bert_start) */
static int bert_forward_from(lua_State *L) {
    static const char *const kinds[] = {"tokens", "first", "pooled", NULL};
    bert_box *mb = check_bert(L, 1);
    pftl_batch_box *bb = pftl_check_batch(L, 2);
    pft_bert_start start = {.kind = (pft_start_kind)luaL_checkoption(L, 3, NULL, kinds),
                            .boundary = (int)luaL_optinteger(L, 4, 0), .x = pftl_check_tensor(L, 5)};
    lua_settop(L, 5);
    return forward_common(L, mb, bb, &start, false);
}

/* m:loss(logits, labels): labels a Lua array of B ints (sequence classification), B*T ints with -100
 * ignored (token classification, flat row-major) or B numbers (regression, num_labels 1). */
static int bert_loss(lua_State *L) {
    bert_box *mb = check_bert(L, 1);
    pft_tensor *logits = pftl_check_tensor(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    pft_bert *m = mb->m;
    if (m->head == PFT_HEAD_NONE) return luaL_error(L, "loss: the model has no task head (loaded with head 'none')");
    int64_t K = m->num_labels, numel = pft_tensor_numel(logits);
    if (logits->ndim < 2 || logits->shape[logits->ndim - 1] != K) {
        char sh[128];
        return luaL_error(L, "loss: logits of shape %s, expected [..., %d]", pft_tensor_shape_str(logits, sh, sizeof sh), (int)K);
    }
    int64_t N = numel / K, n = (int64_t)lua_objlen(L, 3);
    if (n != N)
        return pftl_errorf(L, "loss: %lld labels for %lld rows of logits (%s)", (long long)n, (long long)N,
                           m->head == PFT_HEAD_TOKCLS ? "token classification takes B*T labels, -100 ignored" : "one per example");
    int regression = m->head == PFT_HEAD_SEQCLS && K == 1;
    int32_t *ints = NULL;
    float *floats = NULL;
    if (regression) floats = lua_newuserdata(L, sizeof(float) * (size_t)(N ? N : 1));
    else ints = lua_newuserdata(L, sizeof(int32_t) * (size_t)(N ? N : 1));
    for (int64_t i = 0; i < N; i++) {
        lua_rawgeti(L, 3, (int)(i + 1));
        if (lua_type(L, -1) != LUA_TNUMBER)
            return pftl_errorf(L, "loss: label %lld is a %s, expected a number", (long long)i + 1, luaL_typename(L, -1));
        lua_Number v = lua_tonumber(L, -1);
        if (regression) {
            floats[i] = (float)v;
        } else {
            if (v != floor(v) || (v != -100 && (v < 0 || v >= K)))
                return pftl_errorf(L, "loss: label %lld is %g, expected a class id in [0, %d) or -100", (long long)i + 1, v, (int)K);
            ints[i] = (int32_t)v;
        }
        lua_pop(L, 1);
    }
    pftl_tensor_box *r = pftl_push_box(L, mb->S);
    return pftl_own(L, r, pft_bert_loss(m, logits, ints, floats));
}

/* m:params() -> every parameter, Hugging Face order */
static int bert_params(lua_State *L) {
    bert_box *mb = check_bert(L, 1);
    int n = pft_bert_param_count(mb->m);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        pftl_push_tensor(L, mb->S, pft_bert_param(mb->m, i));
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int bert_param(lua_State *L) {
    bert_box *mb = check_bert(L, 1);
    pft_tensor *p = pft_bert_param_find(mb->m, luaL_checkstring(L, 2));
    if (!p) {
        lua_pushnil(L);
        return 1;
    }
    return pftl_push_tensor(L, mb->S, p);
}

static int opt_flag(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return 1;
    luaL_checktype(L, idx, LUA_TBOOLEAN);
    return lua_toboolean(L, idx);
}

/* m:train([flag = true]) / m:eval(): dropout on or off overall; returns m */
static int bert_train(lua_State *L) {
    pft_bert_set_training(check_bert(L, 1)->m, opt_flag(L, 2));
    lua_settop(L, 1);
    return 1;
}

static int bert_eval(lua_State *L) {
    pft_bert_set_training(check_bert(L, 1)->m, false);
    lua_settop(L, 1);
    return 1;
}

static int bert_is_training(lua_State *L) {
    lua_pushboolean(L, check_bert(L, 1)->m->training);
    return 1;
}

/* m:set_layer_training(i, flag): dropout in encoder layer i (0-based) while the model trains */
static int bert_set_layer_training(lua_State *L) {
    pft_bert *m = check_bert(L, 1)->m;
    int64_t i = pftl_check_int64(L, 2);
    luaL_checktype(L, 3, LUA_TBOOLEAN);
    if (i < 0 || i >= m->cfg.num_layers)
        return pftl_errorf(L, "set_layer_training: layer %lld out of range [0, %d) (layers are 0-based)", (long long)i,
                           m->cfg.num_layers);
    m->layers[i].training = lua_toboolean(L, 3);
    return 0;
}

static int bert_set_embeddings_training(lua_State *L) {
    pft_bert *m = check_bert(L, 1)->m;
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    m->embeddings_training = lua_toboolean(L, 2);
    return 0;
}

static int bert_set_head_training(lua_State *L) {
    pft_bert *m = check_bert(L, 1)->m;
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    m->head_training = lua_toboolean(L, 2);
    return 0;
}

/* m:set_hidden_states(flag): false, with a sequence head: forwards return hidden nil and the last layer
 * runs past its attention only the [CLS] rows (nn.h, hidden_states) */
static int bert_set_hidden_states(lua_State *L) {
    pft_bert *m = check_bert(L, 1)->m;
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    m->hidden_states = lua_toboolean(L, 2);
    return 0;
}

/* The shortest decimal that reads back as the same float (0.1f -> 0.1, not 0.10000000149011612). */
static double float_decimal(float v) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return strtod(buf, NULL);
}

static int bert_config(lua_State *L) {
    const pft_bert *m = check_bert(L, 1)->m;
    const pft_bert_config *c = &m->cfg;
    lua_createtable(L, 0, 16);
#define SETI(k, v) (lua_pushinteger(L, (v)), lua_setfield(L, -2, k))
#define SETF(k, v) (lua_pushnumber(L, float_decimal(v)), lua_setfield(L, -2, k))
    SETI("vocab_size", c->vocab_size);
    SETI("hidden_size", c->hidden_size);
    SETI("num_layers", c->num_layers);
    SETI("num_heads", c->num_heads);
    SETI("intermediate_size", c->intermediate_size);
    SETI("max_position_embeddings", c->max_position_embeddings);
    SETI("type_vocab_size", c->type_vocab_size);
    SETI("pad_token_id", c->pad_token_id);
    SETF("layer_norm_eps", c->layer_norm_eps);
    SETF("hidden_dropout", c->hidden_dropout);
    SETF("attention_dropout", c->attention_dropout);
    SETF("classifier_dropout", c->classifier_dropout);
    SETF("initializer_range", c->initializer_range);
    SETI("num_labels", m->num_labels);
#undef SETI
#undef SETF
    lua_pushstring(L, c->model_type), lua_setfield(L, -2, "model_type");
    lua_pushstring(L, head_names[m->head]), lua_setfield(L, -2, "head");
    if (m->lora_r) {
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, m->lora_r), lua_setfield(L, -2, "r");
        lua_pushnumber(L, float_decimal(m->lora_scale)), lua_setfield(L, -2, "scale");
        lua_pushnumber(L, float_decimal(m->lora_dropout)), lua_setfield(L, -2, "dropout");
        lua_setfield(L, -2, "lora");
    }
    return 1;
}

static int bert_num_layers(lua_State *L) {
    lua_pushinteger(L, check_bert(L, 1)->m->cfg.num_layers);
    return 1;
}

static int bert_save_weights(lua_State *L) {
    bert_box *mb = check_bert(L, 1);
    if (pft_bert_save_weights(mb->m, luaL_checkstring(L, 2))) return pftl_core_error(L, mb->S->ctx);
    return 0;
}

/* m:load_weights(path) -> whether the file held the head (classifier) tensors */
static int bert_load_weights(lua_State *L) {
    bert_box *mb = check_bert(L, 1);
    bool head = false;
    if (pft_bert_load_weights(mb->m, luaL_checkstring(L, 2), &head)) return pftl_core_error(L, mb->S->ctx);
    lua_pushboolean(L, head);
    return 1;
}

static int bert_numel(lua_State *L) {
    bert_box *mb = check_bert(L, 1);
    int trainable = !lua_isnoneornil(L, 2) && (luaL_checktype(L, 2, LUA_TBOOLEAN), lua_toboolean(L, 2));
    lua_pushnumber(L, (lua_Number)pft_bert_numel(mb->m, trainable));
    return 1;
}

static int bert_tostring(lua_State *L) {
    bert_box *b = luaL_checkudata(L, 1, BERT_MT);
    if (!b->m) lua_pushliteral(L, "pft.Bert (freed)");
    else lua_pushfstring(L, "pft.Bert(%d layers, hidden %d, head %s, %d labels)", b->m->cfg.num_layers, b->m->cfg.hidden_size,
                         head_names[b->m->head], b->m->num_labels);
    return 1;
}

static const luaL_Reg bert_methods[] = {
    {"forward", bert_forward},
    {"forward_taps", bert_forward_taps},
    {"prefix_taps", bert_prefix_taps},
    {"forward_from", bert_forward_from},
    {"add_lora", bert_add_lora},
    {"merge_lora", bert_merge_lora},
    {"loss", bert_loss},
    {"params", bert_params},
    {"param", bert_param},
    {"train", bert_train},
    {"eval", bert_eval},
    {"is_training", bert_is_training},
    {"set_layer_training", bert_set_layer_training},
    {"set_embeddings_training", bert_set_embeddings_training},
    {"set_head_training", bert_set_head_training},
    {"set_hidden_states", bert_set_hidden_states},
    {"config", bert_config},
    {"num_layers", bert_num_layers},
    {"save_weights", bert_save_weights},
    {"load_weights", bert_load_weights},
    {"numel", bert_numel},
    {"free", bert_free},
    {NULL, NULL}};

void pftl_register_nn(lua_State *L, int module_idx) {
    pftl_new_class(L, BERT_MT, bert_methods, bert_gc, bert_tostring);
    static const luaL_Reg fns[] = {{"bert_load", l_bert_load}, {"bert_new", l_bert_new}, {NULL, NULL}};
    pftl_set_funcs(L, module_idx, fns);
}
