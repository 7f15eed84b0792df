-- SST-2, gradual unfreezing (ULMFiT): head + pooler first, one more layer from the top every 100 steps
--
-- 1,000 steps in all: layer[5] joins at step 100, layer[4] at 200, ... layer[0] at 600, embeddings at
-- 700. A newly unfrozen group ramps its rate up over 50 steps.
return {
  base = "sst2",
  schedule = { preset = "gradual", every = 100 },
  lr = { unfreeze_warmup = 50 },
  optim = { lr = 1e-4 },
}
