-- Issue 7's P3b figure (bench/experiments/run.sh): the linear probe alone -- only the classifier trains,
-- encoder and pooler frozen (preset head, lr 1e-3 as in recipes/sweeps/sst2-freeze.lua) -- for 10 epochs
-- on the first 8,000 SST-2 training rows, max_length 64, batch 32, shuffled order with dynamic padding
-- (data.bucket = false, as the transformers peer pads). With the activation cache this is a frozen
-- encoder run once per split and 10 epochs of a 770-parameter classifier on the pooled vectors.
--   build/pft sweep bench/experiments/p3b.lua --dir DIR
return {
  name = "p3b",
  base = "sst2",
  variants = {
    head = { schedule = { preset = "head" }, optim = { lr = 1e-3 } },
  },
  set = { "data.train.limit=8000", "train.epochs=10", "model.max_length=64", "data.batch_size=32",
          "data.bucket=false", "train.seed=42" },
}
