-- SST-2, full fine-tuning spelled out: every parameter trains from step 0 (the same job as sst2)
return {
  base = "sst2",
  schedule = { preset = "full" },
}
