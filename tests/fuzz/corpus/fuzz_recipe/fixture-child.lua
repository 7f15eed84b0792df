-- test fixture: inherits parent.lua, changes one key and removes the dev split
return {
  base = "parent.lua",
  train = { epochs = 1 },
  data = { dev = false },
}
