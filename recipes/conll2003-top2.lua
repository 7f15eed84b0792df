-- CoNLL-2003 NER, top-2 layers: layer[4-5] and the token head train; embeddings and layer[0-3] frozen
-- (token classification has no pooler: top_k's pooler is simply absent)
return {
  base = "conll2003",
  schedule = { preset = "top_k", k = 2 },
  optim = { lr = 3e-4 },
}
