return { base = "sst2-head", optim = { name = "sgd", lr = 0.1, momentum = 0.9 }, lr_schedule = { name = "constant" }, train = { eval_every = "epoch" } }
