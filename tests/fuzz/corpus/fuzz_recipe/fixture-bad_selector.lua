-- test fixture: layer[9] does not exist in a 4-layer model (line 5)
return {
  schedule = {
    preset = "head",
    rules = { { at = { epoch = 1 }, unfreeze = "layer[9]" } },
  },
}
