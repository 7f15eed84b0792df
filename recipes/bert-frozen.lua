-- The classic frozen-encoder baseline: BERT (all-MiniLM-L6-v2) frozen, a linear layer on the pooled
-- output trained with Adam (AdamW without weight decay) at lr 2e-5 for 5 epochs, scored by accuracy.
-- It is the set-up many tutorials start from; at lr 2e-5 a linear probe learns slowly (sst2-head uses
-- 1e-3), which is the point of comparing it with the schedules that let the top layers train
-- (`pft compare` on both runs). Every step still runs the frozen encoder forward (no tape, no gradient).
return {
  base = "sst2",
  schedule = { preset = "head" },
  optim = { name = "adamw", lr = 2e-5, weight_decay = 0 },
  lr_schedule = { name = "constant", warmup = 0 },
  train = { epochs = 5, best_metric = "accuracy" },
}
