-- SST-2, BitFit: only the bias terms (every *.bias) and the classifier train
return {
  base = "sst2",
  schedule = { preset = "bitfit" },
  optim = { lr = 1e-3, weight_decay = 0 },
}
