-- The freeze-ratio study: which layers should train? The linear probe (head only), then the top 1, 2, 3
-- and all 6 layers of all-MiniLM-L6-v2 (with the pooler and the head), 3 seeds each, on 8,000 SST-2
-- training sentences for 3 epochs. `pft sweep recipes/sweeps/sst2-freeze.lua`, then `pft compare` on the
-- sweep directory it prints: test accuracy against trainable parameters is the trade-off (docs/experiments.md).
return {
  name = "sst2-freeze",
  base = "sst2",
  variants = {
    head = { schedule = { preset = "head" }, optim = { lr = 1e-3 } },
    top1 = { schedule = { preset = "top_k", k = 1 }, optim = { lr = 1e-4 } },
    top2 = { schedule = { preset = "top_k", k = 2 }, optim = { lr = 1e-4 } },
    top3 = { schedule = { preset = "top_k", k = 3 }, optim = { lr = 1e-4 } },
    top6 = { schedule = { preset = "top_k", k = 6 }, optim = { lr = 5e-5 } },
  },
  seeds = { 1, 2, 3 },
  set = { "data.train.limit=8000", "train.epochs=3" },
}
