-- SST-2, chain-thaw: head alone, then each group alone bottom to top (100 steps each), then everything
--
-- Steps 0-99 head; 100-199 embeddings; 200-799 layer[0] .. layer[5]; 800-899 pooler; 900-999 all.
return {
  base = "sst2",
  schedule = { preset = "chain_thaw", every = 100 },
  optim = { lr = 1e-4 },
}
