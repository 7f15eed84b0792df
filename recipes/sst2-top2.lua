-- SST-2, top-2 layers: layer[4-5], the pooler and the head train; embeddings and layer[0-3] frozen
return {
  base = "sst2",
  schedule = { preset = "top_k", k = 2 },
  optim = { lr = 1e-4 },
}
