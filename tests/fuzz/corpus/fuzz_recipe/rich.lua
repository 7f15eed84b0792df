-- every kind of key: functions, rules with each trigger, selectors with unions and differences
return {
  base = "sst2",
  name = "rich",
  model = { max_length = 32 },
  task = { kind = "classification", labels = { "neg", "pos" } },
  data = {
    train = { path = "train.csv", format = "csv", header = true, text = "text", text_pair = "pair", label = "label", limit = 100 },
    dev = false,
    preprocess = function(text) return text:lower():gsub("%s+", " ") end,
    batch_size = 8, shuffle = true, bucket = true, on_error = "skip",
  },
  schedule = {
    preset = "top_k", k = 2, initial = { "head", "pooler" },
    rules = {
      { at = { epoch = 1 }, unfreeze = "top(2)" },
      { at = { step = 10 }, freeze = "embeddings" },
      { at = { fraction = 0.5 }, unfreeze = { "layer[0-3]", "bias" } },
      { at = { plateau = { metric = "accuracy", patience = 2 } }, unfreeze = { "all", minus = "embeddings" } },
    },
  },
  lr = { discriminative = { decay = 0.9 }, head_multiplier = 10, unfreeze_warmup = 5 },
  optim = { name = "adamw", lr = 3e-5, weight_decay = 0.01, betas = { 0.9, 0.98 }, eps = 1e-8, no_decay = { "bias", "LayerNorm" } },
  lr_schedule = { name = "slanted_triangular", cut_frac = 0.1, ratio = 32 },
  train = { epochs = 3, max_steps = 50, grad_clip = 1.0, grad_accum = 2, seed = 7, eval_every = 10, early_stopping = { patience = 2 } },
  output = { dir = "runs/rich", checkpoints = true, keep = 2 },
}
