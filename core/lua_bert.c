/* lua_bert.c - core.bert_load / bert_new (pft.Bert), core.tokenizer_load (pft.Tokenizer), encoded batches
 * (pft.Batch), core.read_safetensors and two small file helpers for lua/pft/model.lua.
 *
 *     local m = core.bert_load("tests/fixtures/bert/tiny_seqcls", "seqcls", 3)
 *     local tok = core.tokenizer_load("tests/fixtures/bert/tiny_seqcls")
 *     local b = tok:encode_batch({"a funny film", "hello"}, {"not boring", "world"}, {max_length = 128})
 *     local hidden, pooled, logits = m:forward(b)         -- [B, T, C], [B, C], [B, K]
 *     local loss = m:loss(logits, {1, 0})                 -- 0-based class ids; floats for regression
 *     loss:backward()
 *
 * OWNERSHIP as in lua_pft.h: every box is pushed before the core call that fills it, and counts as a
 * handle on the per-state context when it holds a core object that uses the context (model, tokenizer).
 * A pft.Batch owns plain int32 arrays (B*T ids, type ids, mask; B lengths) and no context. Tensors that
 * m:params() returns are new references to the model's parameters: they stay valid after the model goes. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lua_pft.h"
#include "nn.h"
#include "safetensors.h"
#include "text.h"

#define BERT_MT "pft.Bert"
#define TOKENIZER_MT PFTL_TOKENIZER_MT
#define BATCH_MT PFTL_BATCH_MT
#define STFILE_MT "pft.SafetensorsFile"

typedef struct bert_box {
    pft_bert *m;
    pftl_state *S;
} bert_box;

typedef pftl_tok_box tok_box;
typedef pftl_batch_box batch_box;

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

static batch_box *check_batch(lua_State *L, int idx) {
    batch_box *b = luaL_checkudata(L, idx, BATCH_MT);
    if (!b->filled) luaL_argerror(L, idx, "batch is empty (freed or never filled)");
    return b;
}

/* m:forward(batch) -> hidden [B, T, C], pooled [B, C] or nil, logits [B, K] / [B, T, K] or nil */
static int bert_forward(lua_State *L) {
    bert_box *mb = check_bert(L, 1);
    batch_box *bb = check_batch(L, 2);
    lua_settop(L, 2);
    pftl_tensor_box *h = pftl_push_box(L, mb->S), *p = pftl_push_box(L, mb->S), *lg = pftl_push_box(L, mb->S);
    pft_bert_batch in = {.B = bb->b.n, .T = bb->b.t, .input_ids = bb->b.ids, .token_type_ids = bb->b.type_ids,
                         .attention_mask = bb->b.mask};
    pft_bert_output out;
    if (pft_bert_forward(mb->m, &in, &out)) return pftl_core_error(L, mb->S->ctx);
    pftl_own(L, h, out.hidden);
    if (out.pooled) pftl_own(L, p, out.pooled); else lua_pushnil(L), lua_replace(L, 4);
    if (out.logits) pftl_own(L, lg, out.logits); else lua_pushnil(L), lua_replace(L, 5);
    return 3;
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
    {"loss", bert_loss},
    {"params", bert_params},
    {"param", bert_param},
    {"train", bert_train},
    {"eval", bert_eval},
    {"is_training", bert_is_training},
    {"set_layer_training", bert_set_layer_training},
    {"set_embeddings_training", bert_set_embeddings_training},
    {"set_head_training", bert_set_head_training},
    {"config", bert_config},
    {"num_layers", bert_num_layers},
    {"save_weights", bert_save_weights},
    {"load_weights", bert_load_weights},
    {"numel", bert_numel},
    {"free", bert_free},
    {NULL, NULL}};

/* --- pft.Batch ------------------------------------------------------------------------------------ */

static batch_box *push_batch_box(lua_State *L) {
    batch_box *b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, BATCH_MT);
    lua_setmetatable(L, -2);
    return b;
}

static int batch_gc(lua_State *L) {
    batch_box *b = lua_touserdata(L, 1);
    if (b) pft_batch_free(&b->b), b->filled = 0;
    return 0;
}

static int batch_free(lua_State *L) {
    batch_box *b = luaL_checkudata(L, 1, BATCH_MT);
    pft_batch_free(&b->b);
    b->filled = 0;
    return 0;
}

/* b:size() -> B, T */
static int batch_size(lua_State *L) {
    batch_box *b = check_batch(L, 1);
    lua_pushinteger(L, b->b.n);
    lua_pushinteger(L, b->b.t);
    return 2;
}

static int push_rows(lua_State *L, const pft_batch *b, const int32_t *a) {
    lua_createtable(L, b->n, 0);
    for (int i = 0; i < b->n; i++) {
        lua_createtable(L, b->t, 0);
        for (int j = 0; j < b->t; j++) {
            lua_pushinteger(L, a[(size_t)i * (size_t)b->t + (size_t)j]);
            lua_rawseti(L, -2, j + 1);
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* b:ids(), b:type_ids(), b:mask() -> nested {B}{T} tables (tests, debugging) */
static int batch_ids(lua_State *L) { batch_box *b = check_batch(L, 1); return push_rows(L, &b->b, b->b.ids); }
static int batch_type_ids(lua_State *L) { batch_box *b = check_batch(L, 1); return push_rows(L, &b->b, b->b.type_ids); }
static int batch_mask(lua_State *L) { batch_box *b = check_batch(L, 1); return push_rows(L, &b->b, b->b.mask); }

static int batch_lengths(lua_State *L) {
    batch_box *b = check_batch(L, 1);
    lua_createtable(L, b->b.n, 0);
    for (int i = 0; i < b->b.n; i++) {
        lua_pushinteger(L, b->b.lengths[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* b:tokens() -> non-pad tokens in the batch, specials included */
static int batch_tokens(lua_State *L) {
    batch_box *b = check_batch(L, 1);
    lua_Number n = 0;
    for (int i = 0; i < b->b.n; i++) n += b->b.lengths[i];
    lua_pushnumber(L, n);
    return 1;
}

static int batch_tostring(lua_State *L) {
    batch_box *b = luaL_checkudata(L, 1, BATCH_MT);
    if (!b->filled) lua_pushliteral(L, "pft.Batch (empty)");
    else lua_pushfstring(L, "pft.Batch(%d x %d)", b->b.n, b->b.t);
    return 1;
}

static const luaL_Reg batch_methods[] = {
    {"size", batch_size},     {"ids", batch_ids},       {"type_ids", batch_type_ids}, {"mask", batch_mask},
    {"lengths", batch_lengths}, {"tokens", batch_tokens}, {"free", batch_free},        {NULL, NULL}};

/* --- pft.Tokenizer -------------------------------------------------------------------------------- */

static tok_box *check_tok(lua_State *L, int idx) {
    tok_box *b = luaL_checkudata(L, idx, TOKENIZER_MT);
    if (!b->tok) luaL_argerror(L, idx, "tokenizer used after free");
    return b;
}

static void tok_release(tok_box *b) {
    if (!b->tok) return;
    pft_tokenizer_free(b->tok);
    b->tok = NULL;
    pftl_state_unref(b->S);
}

static int tok_gc(lua_State *L) {
    tok_box *b = lua_touserdata(L, 1);
    if (b) tok_release(b);
    return 0;
}

static int tok_free(lua_State *L) {
    tok_release(luaL_checkudata(L, 1, TOKENIZER_MT));
    return 0;
}

/* core.tokenizer_load(dir): dir/vocab.txt plus tokenizer_config.json / special_tokens_map.json if present */
static int l_tokenizer_load(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    pftl_state *S = pftl_state_get(L);
    tok_box *b = lua_newuserdata(L, sizeof *b);
    b->tok = NULL;
    b->S = S;
    luaL_getmetatable(L, TOKENIZER_MT);
    lua_setmetatable(L, -2);
    pft_tokenizer *tok = pft_tokenizer_load(S->ctx, dir);
    if (!tok) return pftl_core_error(L, S->ctx);
    b->tok = tok;
    S->handles++;
    return 1;
}

static int check_max_length(lua_State *L, int arg, int pair) {
    int64_t v = pftl_check_int64(L, arg);
    if (v != 0 && (v < (pair ? 3 : 2) || v > 1000000000))
        pftl_errorf(L, "bad argument #%d (max_length must be 0 (no truncation) or >= %d, got %lld)", arg, pair ? 3 : 2,
                    (long long)v);
    return (int)v;
}

static void push_int_array(lua_State *L, const int32_t *a, int n) {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, a[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* tok:encode(text[, pair][, max_length = 0]) -> {ids = {...}, type_ids = {...}} (0-based ids) */
static int tok_encode(lua_State *L) {
    tok_box *tb = check_tok(L, 1);
    size_t alen, blen = 0;
    const char *a = luaL_checklstring(L, 2, &alen), *b = NULL;
    int ml_arg = 3;
    if (lua_type(L, 3) == LUA_TSTRING) {
        b = lua_tolstring(L, 3, &blen);
        ml_arg = 4;
    } else if (!lua_isnoneornil(L, 3) && lua_type(L, 3) != LUA_TNUMBER) {
        return luaL_typerror(L, 3, "string or number");
    } else if (lua_isnil(L, 3)) {
        ml_arg = 4;
    }
    int ml = lua_isnoneornil(L, ml_arg) ? 0 : check_max_length(L, ml_arg, b != NULL);
    pft_encoding e;
    if (pft_tokenizer_encode(tb->tok, a, alen, b, blen, ml, &e)) return pftl_core_error(L, tb->S->ctx);
    /* e points into the tokenizer's scratch: copy it out before anything else touches the tokenizer */
    lua_createtable(L, 0, 2);
    push_int_array(L, e.ids, e.n);
    lua_setfield(L, -2, "ids");
    push_int_array(L, e.type_ids, e.n);
    lua_setfield(L, -2, "type_ids");
    return 1;
}

/* Reads a Lua array of strings at idx into Lua-owned pointer and length arrays; the strings stay
 * referenced by the table, which stays on the stack. With allow_false, a `false` entry gives a NULL
 * pointer (a row of pairs without a second text). */
static int read_texts(lua_State *L, int idx, const char *what, const char ***ptrs, size_t **lens, int allow_false) {
    int n = (int)lua_objlen(L, idx);
    *ptrs = lua_newuserdata(L, sizeof **ptrs * (size_t)(n ? n : 1));
    *lens = lua_newuserdata(L, sizeof **lens * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        if (allow_false && lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
            (*ptrs)[i] = NULL, (*lens)[i] = 0;
            lua_pop(L, 1);
            continue;
        }
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "encode_batch: %s[%d] is a %s, expected a string%s", what, i + 1, luaL_typename(L, -1),
                       allow_false ? " or false" : "");
        (*ptrs)[i] = lua_tolstring(L, -1, &(*lens)[i]);
        lua_pop(L, 1);
    }
    return n;
}

/* tok:encode_batch(texts[, pairs][, opts]) -> pft.Batch. pairs[i] = false: row i is a single text
 * ("" keeps a pair: [CLS] a [SEP] [SEP], as transformers). opts: max_length (128; 0 = no truncation),
 * pad_to (0 = the longest row; else every row is padded to exactly pad_to, which needs max_length <=
 * pad_to), into (a pft.Batch whose memory is reused and which is returned). */
static int tok_encode_batch(lua_State *L) {
    tok_box *tb = check_tok(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int pairs = 3, opts = 4;
    if (lua_istable(L, 3) && lua_isnoneornil(L, 4)) {
        lua_rawgeti(L, 3, 1);
        int is_list = !lua_isnil(L, -1) || lua_objlen(L, 2) == 0;
        lua_pop(L, 1);
        if (!is_list) pairs = 0, opts = 3;
    }
    if (pairs && !lua_isnoneornil(L, pairs)) luaL_checktype(L, pairs, LUA_TTABLE);
    if (!lua_isnoneornil(L, opts)) luaL_checktype(L, opts, LUA_TTABLE);
    int use_pairs = pairs && lua_istable(L, pairs);
    int ml = 128, pad_to = 0, into = 0;
    if (!lua_isnoneornil(L, opts)) {
        lua_pushnil(L);
        while (lua_next(L, opts)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            int top = lua_gettop(L);
            if (!strcmp(k, "max_length")) ml = check_max_length(L, top, use_pairs);
            else if (!strcmp(k, "pad_to")) {
                int64_t v = pftl_check_int64(L, top);
                if (v < 0 || v > 1000000000) luaL_error(L, "encode_batch: pad_to must be >= 0");
                pad_to = (int)v;
            } else if (!strcmp(k, "into")) {
                luaL_checkudata(L, top, BATCH_MT);
            } else luaL_error(L, "encode_batch: unknown option '%s' (max_length, pad_to, into)", k);
            lua_pop(L, 1);
        }
        lua_getfield(L, opts, "into");
        if (!lua_isnil(L, -1)) into = lua_gettop(L); else lua_pop(L, 1);
    }
    if (pad_to > 0 && (ml == 0 || ml > pad_to))
        return luaL_error(L, "encode_batch: pad_to %d needs 0 < max_length <= pad_to (max_length is %d)", pad_to, ml);
    const char **a, **b = NULL;
    size_t *alen, *blen = NULL;
    int n = read_texts(L, 2, "texts", &a, &alen, 0);
    if (n == 0) return luaL_error(L, "encode_batch: texts is empty");
    if (use_pairs) {
        int nb = read_texts(L, pairs, "pairs", &b, &blen, 1);
        if (nb != n) return luaL_error(L, "encode_batch: %d texts but %d pairs", n, nb);
    }
    batch_box *bb;
    if (into) {
        bb = lua_touserdata(L, into);
        lua_pushvalue(L, into);
    } else {
        bb = push_batch_box(L);
    }
    bb->filled = 0;
    if (pft_tokenizer_encode_batch(tb->tok, n, a, alen, b, blen, ml, pad_to, &bb->b)) return pftl_core_error(L, tb->S->ctx);
    bb->filled = 1;
    return 1;
}

static int tok_id(lua_State *L) {
    tok_box *tb = check_tok(L, 1);
    int32_t id = pft_tokenizer_id(tb->tok, luaL_checkstring(L, 2));
    if (id < 0) lua_pushnil(L); else lua_pushinteger(L, id);
    return 1;
}

static int tok_token(lua_State *L) {
    tok_box *tb = check_tok(L, 1);
    int64_t id = pftl_check_int64(L, 2);
    const char *s = id >= 0 && id <= INT32_MAX ? pft_tokenizer_token(tb->tok, (int32_t)id) : NULL;
    if (s) lua_pushstring(L, s); else lua_pushnil(L);
    return 1;
}

static int tok_vocab_size(lua_State *L) {
    lua_pushinteger(L, pft_tokenizer_vocab_size(check_tok(L, 1)->tok));
    return 1;
}

/* tok:config() -> {lowercase, strip_accents (nil: follows lowercase), chinese_chars, model_max_length,
 * unk_id, cls_id, sep_id, pad_id, mask_id (nil when absent)} */
static int tok_config(lua_State *L) {
    pft_tokenizer *t = check_tok(L, 1)->tok;
    pft_tokenizer_config c = pft_tokenizer_get_config(t);
    lua_createtable(L, 0, 9);
    lua_pushboolean(L, c.lowercase), lua_setfield(L, -2, "lowercase");
    if (c.strip_accents >= 0) lua_pushboolean(L, c.strip_accents), lua_setfield(L, -2, "strip_accents");
    lua_pushboolean(L, c.chinese_chars), lua_setfield(L, -2, "chinese_chars");
    lua_pushinteger(L, c.model_max_length), lua_setfield(L, -2, "model_max_length");
    static const char *const names[PFT_SPECIAL_COUNT] = {"unk_id", "cls_id", "sep_id", "pad_id", "mask_id"};
    for (int i = 0; i < PFT_SPECIAL_COUNT; i++) {
        int32_t id = pft_tokenizer_special_id(t, (pft_special)i);
        if (id >= 0) lua_pushinteger(L, id), lua_setfield(L, -2, names[i]);
    }
    return 1;
}

static int tok_tostring(lua_State *L) {
    tok_box *b = luaL_checkudata(L, 1, TOKENIZER_MT);
    if (!b->tok) lua_pushliteral(L, "pft.Tokenizer (freed)");
    else lua_pushfstring(L, "pft.Tokenizer(%d tokens)", pft_tokenizer_vocab_size(b->tok));
    return 1;
}

static const luaL_Reg tok_methods[] = {
    {"encode", tok_encode},         {"encode_batch", tok_encode_batch}, {"id", tok_id},
    {"token", tok_token},           {"vocab_size", tok_vocab_size},     {"config", tok_config},
    {"free", tok_free},             {NULL, NULL}};

/* --- safetensors and files ------------------------------------------------------------------------ */

static int stfile_gc(lua_State *L) {
    pft_st_file **f = lua_touserdata(L, 1);
    if (f && *f) pft_st_close(*f), *f = NULL;
    return 0;
}

/* core.read_safetensors(path) -> {name = tensor} (every tensor converted to F32) */
static int l_read_safetensors(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    pftl_state *S = pftl_state_get(L);
    pft_st_file **fp = lua_newuserdata(L, sizeof *fp); /* closes the file if a Lua error comes first */
    *fp = NULL;
    luaL_getmetatable(L, STFILE_MT);
    lua_setmetatable(L, -2);
    int guard = lua_gettop(L);
    if (!(*fp = pft_st_open(S->ctx, path))) return pftl_core_error(L, S->ctx);
    int n = pft_st_count(*fp);
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        const pft_st_entry *e = pft_st_entry_at(*fp, i);
        pftl_tensor_box *b = pftl_push_box(L, S);
        pftl_own(L, b, pft_tensor_empty(S->ctx, e->ndim, e->shape));
        if (pft_st_read_f32(S->ctx, *fp, e, pft_tensor_data(b->t))) return pftl_core_error(L, S->ctx);
        lua_setfield(L, -2, e->name);
    }
    pft_st_close(*fp);
    *fp = NULL;
    lua_remove(L, guard);
    return 1;
}

/* --- registration --------------------------------------------------------------------------------- */

static void new_class(lua_State *L, const char *mt, const luaL_Reg *methods, lua_CFunction gc, lua_CFunction tostring) {
    luaL_newmetatable(L, mt);
    lua_newtable(L);
    for (const luaL_Reg *r = methods; r && r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc), lua_setfield(L, -2, "__gc");
    if (tostring) lua_pushcfunction(L, tostring), lua_setfield(L, -2, "__tostring");
    lua_pushstring(L, mt), lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

void pftl_register_bert(lua_State *L, int module_idx) {
    new_class(L, BERT_MT, bert_methods, bert_gc, bert_tostring);
    new_class(L, TOKENIZER_MT, tok_methods, tok_gc, tok_tostring);
    new_class(L, BATCH_MT, batch_methods, batch_gc, batch_tostring);
    new_class(L, STFILE_MT, NULL, stfile_gc, NULL);
    static const luaL_Reg fns[] = {
        {"bert_load", l_bert_load},           {"bert_new", l_bert_new},   {"tokenizer_load", l_tokenizer_load},
        {"read_safetensors", l_read_safetensors},
        {NULL, NULL}};
    for (const luaL_Reg *r = fns; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, module_idx, r->name);
    }
}
