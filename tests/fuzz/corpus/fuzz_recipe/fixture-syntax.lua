-- test fixture: a syntax error on line 3
return {
  optim = { lr = = 1 },
}
