-- test fixture: a base for child.lua
return {
  model = { max_length = 48 },
  optim = { lr = 1e-4, betas = { 0.8, 0.99 } },
  train = { epochs = 5, seed = 7 },
  data = { preprocess = function(text) return text:lower() end },
}
