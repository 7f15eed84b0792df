return { base = "rich-missing", optim = { lr = 0/0 } }
