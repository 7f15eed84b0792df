-- Issue 7's P3 figure (bench/experiments/run.sh): the freeze-ratio study of recipes/sweeps/sst2-freeze.lua
-- cut to four cells and one seed -- the linear probe (head) and the top 1, 2, 3 layers of
-- all-MiniLM-L6-v2 (+ pooler + head) -- on the first 8,000 SST-2 training rows for 3 epochs, max_length 64,
-- batch 32 (recipes/sst2.lua). The learning rates are sst2-freeze's. data.bucket = false: batches in a
-- shuffled order with dynamic padding, the padding policy of the transformers peer (peer_sweep.py), so both
-- sides see the same padded batches' sizes. run.sh may append data.train.limit=N train.epochs=E overrides.
--   build/pft sweep bench/experiments/p3.lua --dir DIR
return {
  name = "p3",
  base = "sst2",
  variants = {
    head = { schedule = { preset = "head" }, optim = { lr = 1e-3 } },
    top1 = { schedule = { preset = "top_k", k = 1 }, optim = { lr = 1e-4 } },
    top2 = { schedule = { preset = "top_k", k = 2 }, optim = { lr = 1e-4 } },
    top3 = { schedule = { preset = "top_k", k = 3 }, optim = { lr = 1e-4 } },
  },
  set = { "data.train.limit=8000", "train.epochs=3", "model.max_length=64", "data.batch_size=32",
          "data.bucket=false", "train.seed=42" },
}
