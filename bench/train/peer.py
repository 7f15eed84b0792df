"""bench/train peer: one training step of MiniLM + sequence-classification head with PyTorch + transformers.

BertForSequenceClassification (2 labels, head fresh), train mode with the config's dropout, AdamW (lr 2e-5,
over the parameters that require grad), torch.set_num_threads(THREADS), the fast tokenizer, the first B
sentences of SST-2 train padded to T tokens (the same ids and labels pft uses); T = 0 pads to the longest row
instead (dynamic padding, what a transformers user does by default; the ids are the same, truncated at 128). CONFIG full: everything
trains. CONFIG top2: the top 2 encoder layers, the pooler and the classifier train; embeddings and the
lower layers get requires_grad False and eval mode. CONFIG lora: PEFT's LoRA (LoraConfig(r=8, lora_alpha=16,
lora_dropout=0.1, target_modules=["query", "value"], task_type="SEQ_CLS"), get_peft_model: the base frozen,
the adapters and the classifier (modules_to_save) train), model.train(). Step: zero_grad(set_to_none), forward with labels,
backward, optimizer step. PFT_BENCH_PRECISION=bf16: the forward (and the loss) under
torch.autocast("cpu", dtype=torch.bfloat16), backward and step outside it (PyTorch's recipe for bf16 mixed
precision on the CPU: fp32 weights and optimizer state, matmuls in bf16).
Prints `torch steps/s: X` (median over REPS after one warm-up step).
Usage: python3 bench/train/peer.py MODEL_DIR DATA_TSV B T THREADS REPS full|top2|lora
"""
import contextlib
import os
import statistics
import sys
import time

import torch
from transformers import AutoTokenizer, BertForSequenceClassification


def main():
    model_dir, data = sys.argv[1], sys.argv[2]
    B, T, threads, reps = map(int, sys.argv[3:7])
    config = sys.argv[7]
    if config not in ("full", "top2", "lora"):
        sys.exit(f"peer.py: CONFIG must be full, top2 or lora, got {config!r}")
    torch.set_num_threads(threads)
    torch.manual_seed(1234)
    with open(data, encoding="utf-8") as f:
        next(f)
        rows = [line.rstrip("\n").split("\t") for _, line in zip(range(B), f)]
    sentences, labels = [r[0] for r in rows], torch.tensor([int(r[1]) for r in rows])
    tok = AutoTokenizer.from_pretrained(model_dir)
    if T > 0:
        enc = tok(sentences, padding="max_length", truncation=True, max_length=T, return_tensors="pt")
    else:
        enc = tok(sentences, padding="longest", truncation=True, max_length=128, return_tensors="pt")
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    model.train()
    if config == "top2":
        frozen = [model.bert.embeddings] + list(model.bert.encoder.layer[:-2])
        for mod in frozen:
            mod.requires_grad_(False)
            mod.eval()
    elif config == "lora":
        from peft import LoraConfig, get_peft_model
        lc = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"], task_type="SEQ_CLS")
        model = get_peft_model(model, lc)
        model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-5)
    bf16 = os.environ.get("PFT_BENCH_PRECISION", "fp32").startswith("bf16")
    times = []
    for r in range(reps + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            out = model(**enc, labels=labels)
        out.loss.backward()
        opt.step()
        if r:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    positions = enc["input_ids"].numel()
    print(f"torch steps/s: {1 / med:.3f}  tokens/s {positions / med:.0f}  ({config}, {positions // B} positions per row: {sum(p.numel() for p in params)} of "
          f"{sum(p.numel() for p in model.parameters())} parameters train; torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, {'bf16 autocast' if bf16 else 'fp32'}, last loss {out.loss.item():.4f})")


if __name__ == "__main__":
    main()
