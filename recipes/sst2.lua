-- SST-2 sentiment with all-MiniLM-L6-v2, full fine-tuning: the default job
--
-- Why these numbers: SST-2 sentences are at most 66 tokens, so max_length 64 loses almost nothing and
-- halves the work of 128. All parameters train at 5e-5 with a linear schedule and 6% warm-up, the
-- usual BERT fine-tuning recipe. The training split is limited to 16,000 of its 67k rows so that the
-- job (2 epochs = 1,000 steps of 32 at ~0.3-0.6 s each on 2 cores, plus two dev evaluations) finishes
-- in about 10-15 minutes; `pft train sst2 ~data.train.limit` trains on everything.
-- Every variant (sst2-head, sst2-top2, ...) starts from this file with `base = "sst2"`.
return {
  model = { name = "all-MiniLM-L6-v2", max_length = 64 },
  task = { kind = "classification" },
  data = {
    train = { path = "${PFT_DATA}/sst2/train.tsv", text = "sentence", label = "label", limit = 16000 },
    dev = { path = "${PFT_DATA}/sst2/dev.tsv" },   -- model selection
    test = { path = "${PFT_DATA}/sst2/test.tsv" }, -- the final number
    batch_size = 32,
  },
  schedule = { preset = "full" },
  optim = { name = "adamw", lr = 5e-5, weight_decay = 0.01 },
  lr_schedule = { name = "linear", warmup = 0.06 },
  train = { epochs = 2, eval_every = "epoch", seed = 42 }, -- best_metric: the task's default (accuracy here)
}
