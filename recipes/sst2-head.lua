-- SST-2, linear probe: only the classifier trains (encoder and pooler frozen), at a high rate
return {
  base = "sst2",
  schedule = { preset = "head" },
  optim = { lr = 1e-3, weight_decay = 0 },
}
