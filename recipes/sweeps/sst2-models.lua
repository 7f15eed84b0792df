-- Two pretrained models on one schedule: all-MiniLM-L6-v2 (the default) against sre-embedding-model (the
-- same architecture, fine-tuned further by its authors on site-reliability texts), each with its top 2
-- layers, the pooler and the head training (top_k k = 2, lr 1e-4, as sst2-freeze's top2), 3 seeds, on
-- 8,000 SST-2 training sentences for 3 epochs: 6 cells. Needs `make models` first (it fetches the second
-- model into models/; without it the sweep stops before any cell runs, saying so). Then
-- `pft sweep recipes/sweeps/sst2-models.lua` and `pft compare` on the sweep directory it prints
-- (docs/experiments.md).
return {
  name = "sst2-models",
  base = "sst2",
  grid = { ["model.name"] = { "all-MiniLM-L6-v2", "sre-embedding-model" } },
  seeds = { 1, 2, 3 },
  set = { "schedule.preset=top_k", "schedule.k=2", "optim.lr=1e-4", "data.train.limit=8000", "train.epochs=3" },
}
