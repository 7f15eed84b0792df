-- SST-2, LoRA: rank-8 adapters on every layer's query and value projections train with the head; the
-- base model stays frozen (PEFT's default LoRA set-up: alpha 16, dropout 0.1, a higher rate than full
-- fine-tuning). `pft export RUN DIR --adapter` writes what peft.PeftModel.from_pretrained loads.
return {
  base = "sst2",
  adapters = { lora = { r = 8, alpha = 16, dropout = 0.1, targets = { "query", "value" } } },
  schedule = { preset = "lora" },
  optim = { lr = 5e-4 },
}
