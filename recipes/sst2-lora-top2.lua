-- SST-2, LoRA everywhere, then the top 2 layers fully: the adapters and the head train from the start;
-- after the first epoch layer[4-5] and the pooler thaw as well (ramping up over 50 steps).
-- (An adapter export cannot carry thawed layers: export this run merged.)
return {
  base = "sst2",
  adapters = { lora = { r = 8, alpha = 16, dropout = 0.1, targets = { "query", "value" } } },
  schedule = { preset = "lora", rules = { { at = { epoch = 1 }, unfreeze = { "top(2)", "pooler" } } } },
  lr = { unfreeze_warmup = 50 },
  optim = { lr = 5e-4 },
}
