/* nn.h - BERT (encoder, pooler) and its task heads, parameters under their Hugging Face names.
 *
 *     pft_bert *m = pft_bert_load(ctx, "models/all-MiniLM-L6-v2", PFT_HEAD_SEQCLS, 2);   // head fresh from the seed
 *     pft_bert_batch in = {.B = 2, .T = 8, .input_ids = ids, .token_type_ids = types, .attention_mask = mask};
 *     pft_bert_output out;
 *     pft_bert_forward(m, &in, &out);                        // out.logits [2, 2], out.hidden [2, 8, 384], ...
 *     pft_tensor *loss = pft_bert_loss(m, out.logits, labels_int, NULL);
 *     pft_backward(loss, NULL);
 *     pft_bert_output_release(&out); pft_tensor_release(loss);
 *     pft_bert_free(m);
 *
 * Ownership: the model owns its parameters (pft_bert_param(m, i) borrows one). pft_bert_forward fills
 * `out` with new references that pft_bert_output_release gives back.
 *
 * Numerics follow transformers' BertModel with eager attention: scores = q k^T / sqrt(D) + (1 - mask) *
 * finfo(float32).min, softmax, dropout on the probabilities, exact-erf GELU, LayerNorm with the config's eps.
 * Dropout runs only where the model is in training mode and the layer's flag says so (pft_bert_set_training
 * and the per-layer flags): frozen layers can run in eval mode while the top trains. */
#ifndef PFT_NN_H
#define PFT_NN_H

#include "ops.h"

typedef enum pft_head_kind {
    PFT_HEAD_NONE = 0, /* BertModel: hidden states and pooled output only */
    PFT_HEAD_SEQCLS,   /* BertForSequenceClassification: pooler -> dropout -> classifier; MSE when num_labels = 1 */
    PFT_HEAD_TOKCLS    /* BertForTokenClassification: hidden -> dropout -> classifier per token */
} pft_head_kind;

typedef struct pft_bert_config {
    char model_type[32];
    int vocab_size, hidden_size, num_layers, num_heads, intermediate_size;
    int max_position_embeddings, type_vocab_size, pad_token_id;
    float layer_norm_eps, hidden_dropout, attention_dropout, classifier_dropout, initializer_range;
} pft_bert_config;

/* LoRA (Hu et al. 2021, as PEFT implements it): a projection W x + b gets + scale * B A dropout(x), with
 * A [r, in] (Kaiming-uniform, as PEFT's default) and B [out, r] (zeros), scale = alpha / r. Named as PEFT
 * names them inside the model: "<projection>.lora_A.weight", "<projection>.lora_B.weight". */
typedef enum pft_lora_target {
    PFT_LORA_QUERY = 0, PFT_LORA_KEY, PFT_LORA_VALUE, /* attention.self.{query,key,value} */
    PFT_LORA_ATTN_OUT,                                /* attention.output.dense */
    PFT_LORA_INTERMEDIATE,                            /* intermediate.dense */
    PFT_LORA_OUTPUT,                                  /* output.dense */
    PFT_LORA_TARGETS
} pft_lora_target;

typedef struct pft_lora_config {
    int r;
    float alpha, dropout;
    float scale;             /* 0: alpha / r (PEFT's default); else this (rsLoRA: alpha / sqrt(r)) */
    const unsigned *targets; /* [num_layers]: per layer, a bit (1 << pft_lora_target) per adapted projection */
} pft_lora_config;

typedef struct pft_bert_layer {
    pft_tensor *q_w, *q_b, *k_w, *k_b, *v_w, *v_b;   /* attention.self.{query,key,value} [C, C], [C] */
    pft_tensor *ao_w, *ao_b, *aln_w, *aln_b;         /* attention.output.dense, attention.output.LayerNorm */
    pft_tensor *i_w, *i_b;                           /* intermediate.dense [F, C], [F] */
    pft_tensor *o_w, *o_b, *oln_w, *oln_b;           /* output.dense [C, F], output.LayerNorm */
    bool training;                                   /* dropout in this layer (when the model trains) */
    pft_tensor *lora_a[PFT_LORA_TARGETS], *lora_b[PFT_LORA_TARGETS]; /* NULL where not adapted */
} pft_bert_layer;

typedef struct pft_bert {
    pft_ctx *ctx;
    pft_bert_config cfg;
    pft_head_kind head;
    int num_labels;
    bool training;
    bool embeddings_training, head_training;
    /* Skip padding (default): with an attention mask, only real tokens go through the layers (attention
     * per sequence over its own tokens); hidden states and token logits at padded positions are 0.
     * Real positions match transformers, which computes values at padded positions that nothing uses. */
    bool pack_padding;
    /* The forward returns the last hidden state (default). false, with a sequence head: out->hidden is
     * NULL, and the last layer runs only what the pooler's [CLS] rows need: their queries and attention
     * (pft_attention_first, keys and values of every token), then the output projection, residuals,
     * LayerNorms and FFN for B rows instead of N (the layer's work but its keys' and values'). The logits
     * are the same; in training the last layer's hidden dropout (and a LoRA adapter's on its query) draws
     * masks for B rows, not N. Ignored by other heads and by forwards with taps. */
    bool hidden_states;
    pft_tensor *word_emb, *pos_emb, *type_emb, *emb_ln_w, *emb_ln_b;
    pft_bert_layer *layers;
    pft_tensor *pool_w, *pool_b; /* may be NULL for a checkpoint without a pooler and no seq head */
    pft_tensor *cls_w, *cls_b;   /* the head; NULL for PFT_HEAD_NONE */
    int n_params;
    pft_tensor **params;         /* every parameter, in Hugging Face order (LoRA adapters last), each named */
    int lora_r;                  /* 0: no adapters */
    float lora_scale, lora_dropout;
    const char *prefix;          /* "bert." for models with a head, "" for a bare BertModel */
} pft_bert;

/* A batch of token ids: int32 [B, T] arrays. token_type_ids and attention_mask may be NULL (all 0 /
 * all 1). attention_mask: 1 = attend, 0 = padding. */
typedef struct pft_bert_batch {
    int64_t B, T;
    const int32_t *input_ids, *token_type_ids, *attention_mask;
} pft_bert_batch;

typedef struct pft_bert_output {
    pft_tensor *hidden; /* last hidden state [B, T, C] */
    pft_tensor *pooled; /* pooler output [B, C] (NULL without a pooler) */
    pft_tensor *logits; /* [B, K] or [B, T, K]; NULL for PFT_HEAD_NONE */
} pft_bert_output;

/* config.json -> cfg. Errors name the file; a model_type other than bert-family is refused. */
pft_status pft_bert_config_load(pft_ctx *ctx, const char *path, pft_bert_config *cfg);
/* A model with freshly initialised weights (normal(0, initializer_range), zero biases, LayerNorm 1/0),
 * drawn from the context's seed, as transformers' _init_weights does. */
pft_bert *pft_bert_new(pft_ctx *ctx, const pft_bert_config *cfg, pft_head_kind head, int num_labels);
/* Loads weights from a safetensors file. Names may carry the "bert." prefix or not; buffers such as
 * position_ids are ignored. A missing encoder tensor, or a shape that disagrees with the config, is an
 * error naming the tensor and both shapes. Head tensors that the file lacks keep their fresh values
 * (the usual fine-tuning start); *loaded_head tells whether the file had them. */
pft_status pft_bert_load_weights(pft_bert *m, const char *path, bool *loaded_head);
/* Reads dir/config.json and dir/model.safetensors. */
pft_bert *pft_bert_load(pft_ctx *ctx, const char *dir, pft_head_kind head, int num_labels);
void pft_bert_free(pft_bert *m);

int pft_bert_param_count(const pft_bert *m);
pft_tensor *pft_bert_param(const pft_bert *m, int i);
pft_tensor *pft_bert_param_find(const pft_bert *m, const char *name);
int64_t pft_bert_numel(const pft_bert *m, bool trainable_only);

void pft_bert_set_training(pft_bert *m, bool training);

pft_status pft_bert_forward(pft_bert *m, const pft_bert_batch *batch, pft_bert_output *out);

/* Where a forward may start instead of the token ids (the frozen-prefix cache, states.h):
 * PFT_START_TOKENS: x is the input of encoder layer `boundary` (0 = the embeddings' output, num_layers =
 * the last layer's output), [N, C] for the batch's N real tokens in row order; layers boundary.. run.
 * PFT_START_FIRST: x is the last layer's [CLS] vector per row, [B, C]: the pooler and head run.
 * PFT_START_POOLED: x is the pooler's output, [B, C]: only the head runs.
 * The last two need a sequence head and give no hidden states (out->hidden NULL). The batch still gives
 * the layout (its mask: which tokens are real); its ids are not read. Nothing below the start runs. */
typedef enum pft_start_kind { PFT_START_TOKENS = 0, PFT_START_FIRST, PFT_START_POOLED } pft_start_kind;
typedef struct pft_bert_start {
    pft_start_kind kind;
    int boundary;  /* PFT_START_TOKENS only */
    pft_tensor *x; /* contiguous; borrowed */
} pft_bert_start;

/* pft_bert_forward with an optional start and optional taps: taps (num_layers + 1 slots, or NULL) gets
 * the input of every layer b at taps[b] and the last layer's output at taps[num_layers], each [N, C]
 * (packed, or [B, T, C] when nothing is padded: the same floats), new references. With a start, taps
 * must be NULL. */
pft_status pft_bert_forward_ex(pft_bert *m, const pft_bert_batch *batch, const pft_bert_start *start, pft_tensor **taps,
                               pft_bert_output *out);
/* Only the prefix: the embeddings and layers 0..upto-1, taps[0..upto] as pft_bert_forward_ex gives them
 * (what the activation cache stores when no boundary it needs lies higher). */
pft_status pft_bert_prefix_taps(pft_bert *m, const pft_bert_batch *batch, int upto, pft_tensor **taps);
void pft_bert_output_release(pft_bert_output *out);
/* Sequence classification: int labels [B] (cross-entropy) or float labels [B] (MSE, num_labels = 1).
 * Token classification: int labels [B, T], -100 ignored. Pass exactly one of int_labels / float_labels. */
pft_tensor *pft_bert_loss(pft_bert *m, pft_tensor *logits, const int32_t *int_labels, const float *float_labels);

/* The projection a target names ("query", ..., "attention.output.dense", "intermediate.dense",
 * "output.dense"), its suffix inside a layer, or NULL. */
const char *pft_lora_target_name(pft_lora_target t);
const char *pft_lora_target_path(pft_lora_target t); /* "attention.self.query", ..., "output.dense" */
/* Adds LoRA adapters (once per model; r >= 1, alpha > 0, 0 <= dropout < 1, at least one target), drawing A
 * from the context's RNG, appended to the parameters in layer then target order. */
pft_status pft_bert_add_lora(pft_bert *m, const pft_lora_config *c);
/* Folds every adapter into its weight (W += scale B A, no tape) and removes the adapters: a plain model
 * that computes what the adapted one did. */
pft_status pft_bert_merge_lora(pft_bert *m);

/* Writes dir/model.safetensors (atomically) with every parameter under its Hugging Face name. A model with
 * LoRA adapters is written merged (W + scale B A, no lora_* tensors): the file is always a plain BERT. */
pft_status pft_bert_save_weights(const pft_bert *m, const char *path);

#endif
