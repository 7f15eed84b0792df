-- The tiny recipe that tests/lua/test_train.lua and train_driver.lua train: tests/fixtures/bert/tiny_seqcls
-- on tests/fixtures/train/tiny.tsv (40 rows, 2 labels). over: {"train.max_steps" = 6, ...} (dotted keys).
local F = {}

function F.recipe(root, run_dir, over)
  local r = {
    name = "tiny",
    model = { name = root .. "/tests/fixtures/bert/tiny_seqcls", max_length = 16 },
    -- the fixture's head has 3 classes (a checkpoint head of another size does not load yet): a fixed label
    -- list of 3, of which the data uses neg and pos
    task = { kind = "classification", labels = { "neg", "neu", "pos" } },
    data = {
      train = { path = root .. "/tests/fixtures/train/tiny.tsv", format = "tsv", header = true, text = "sentence", label = "label" },
      dev = { path = root .. "/tests/fixtures/train/tiny_dev.tsv", format = "tsv", header = true, text = "sentence", label = "label" },
      batch_size = 8, eval_batch_size = 16, shuffle = true, bucket = false, on_error = "fail", cache = false,
    },
    schedule = { preset = "full" },
    lr = { head_multiplier = 1.0, unfreeze_warmup = 0 },
    optim = { name = "adamw", lr = 1e-3, weight_decay = 0.01, betas = { 0.9, 0.999 }, eps = 1e-8, momentum = 0.9,
      no_decay = { "bias", "LayerNorm" } },
    lr_schedule = { name = "linear", warmup = 0.1, cut_frac = 0.1, ratio = 32 },
    train = { epochs = 2, grad_clip = 1.0, grad_accum = 1, seed = 42, eval_every = 5, log_every = 50,
      best_metric = "accuracy" },
    eval = {},
    output = { dir = run_dir, checkpoints = true, keep = 2 },
  }
  for k, v in pairs(over or {}) do
    local t, key = r, nil
    local parts = {}
    for p in k:gmatch("[^.]+") do parts[#parts + 1] = p end
    for i = 1, #parts - 1 do t = t[parts[i]] end
    key = parts[#parts]
    t[key] = v
  end
  return r
end

return F
