-- CoNLL-2003 English NER with all-MiniLM-L6-v2, full fine-tuning: token classification end to end
--
-- Why these numbers: every training sentence (14,041), 3 epochs of batch 32 = 1,317 steps, about 10
-- minutes on 2 cores with an evaluation on valid per epoch; max_length 128 keeps all but a handful of
-- sentences whole (a word cut off counts as missed in the scores, never dropped). The first piece of each
-- word carries its tag, the other pieces are ignored in the loss (as transformers' token-classification
-- example). The scores are seqeval's entity-level F1 (micro), precision and recall, and token accuracy;
-- the best epoch on valid (by f1, the task's default) is scored on test.
return {
  model = { name = "all-MiniLM-L6-v2", max_length = 128 },
  task = { kind = "token_classification" },
  data = {
    train = { path = "${PFT_DATA}/conll2003/train.txt", format = "conll" }, -- `word TAG 0` lines
    dev = { path = "${PFT_DATA}/conll2003/valid.txt" },  -- model selection (format and columns: train's)
    test = { path = "${PFT_DATA}/conll2003/test.txt" },  -- the final number
    batch_size = 32,
  },
  schedule = { preset = "full" },
  optim = { name = "adamw", lr = 1e-4, weight_decay = 0.01 },
  lr_schedule = { name = "linear", warmup = 0.06 },
  train = { epochs = 3, eval_every = "epoch", seed = 42 },
}
