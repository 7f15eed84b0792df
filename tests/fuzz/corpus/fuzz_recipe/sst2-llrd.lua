-- SST-2, full fine-tuning with layer-wise LR decay 0.8 (layer[5] at 1e-4, layer[0] at 3.3e-5, embeddings 2.6e-5)
return {
  base = "sst2",
  schedule = { preset = "full" },
  lr = { discriminative = { decay = 0.8 } },
  optim = { lr = 1e-4 },
}
