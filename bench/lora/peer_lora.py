"""The peer for bench/lora/run.sh: LoRA fine-tuning of the same checkpoint on SST-2 with PyTorch +
transformers + PEFT, the same hyperparameters and data subset as recipes/sst2-lora.lua, reporting test
accuracy and wall time.

Written as a competent PEFT user would: BertForSequenceClassification wrapped by get_peft_model with
LoraConfig(r, lora_alpha, lora_dropout, target_modules, task_type="SEQ_CLS") (the base frozen; the adapters
train, and the classifier as PEFT's modules_to_save), model.train() for training; AdamW over the trainable
parameters (weight decay off for biases and LayerNorm weights, as pft's optim.no_decay), linear warm-up +
linear decay, gradient clipping, dynamic padding per batch, eval mode + inference_mode for evaluation,
torch.set_num_threads(THREADS). Data reading and batching are bench/sst2/peer_train.py's.

Usage: python3 bench/lora/peer_lora.py --model models/all-MiniLM-L6-v2 --data ../shared/data/sst2 \
          --limit 16000 --epochs 2 --lr 5e-4 --batch-size 32 --max-length 64 --warmup 0.06 \
          --weight-decay 0.01 --grad-clip 1.0 --r 8 --alpha 16 --dropout 0.1 --targets query,value \
          --seed 42 --threads 2
Each epoch is scored on dev and the best epoch's weights are scored on test (as the pft recipes select
their best model on dev). Prints `peer: test accuracy A  best dev D  wall S s  train tokens/s R  trainable P`
(wall: from the start of training to the end of the test evaluation, as pft's summary.json wall_s).
"""
import argparse
import os
import random
import sys
import time

import peft
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, BertForSequenceClassification, get_linear_schedule_with_warmup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sst2"))
from peer_train import batches, read_tsv  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--warmup", type=float, default=0.06, help="a fraction of the total steps if < 1, else steps")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--grad-clip", type=float, default=1.0, help="0: off")
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--targets", default="query,value", help="comma-separated target_modules")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    tok = AutoTokenizer.from_pretrained(a.model)
    base = BertForSequenceClassification.from_pretrained(a.model, num_labels=2)
    lc = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=a.targets.split(","),
                    task_type="SEQ_CLS")
    model = get_peft_model(base, lc)
    train_x, train_y = read_tsv(f"{a.data}/train.tsv", a.limit)
    test_x, test_y = read_tsv(f"{a.data}/test.tsv")
    dev_x, dev_y = read_tsv(f"{a.data}/dev.tsv")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    decay = [p for n, p in named if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in named if n.endswith(".bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=a.lr)
    steps = a.epochs * ((len(train_x) + a.batch_size - 1) // a.batch_size)
    warm = int(a.warmup * steps) if a.warmup < 1 else int(a.warmup)
    sched = get_linear_schedule_with_warmup(opt, warm, steps)
    trainable = sum(p.numel() for p in params)

    def accuracy(xs, ys):
        model.eval()
        right = 0
        with torch.inference_mode():
            for enc, y in batches(tok, xs, ys, 64, a.max_length, list(range(len(xs)))):
                right += int((model(**enc).logits.argmax(-1) == y).sum())
        return right / len(xs)

    t0 = time.perf_counter()
    tokens, train_time, best_dev, best_state = 0, 0.0, -1.0, None
    for epoch in range(a.epochs):
        te = time.perf_counter()
        model.train()
        order = list(range(len(train_x)))
        random.Random(a.seed + epoch).shuffle(order)
        for enc, y in batches(tok, train_x, train_y, a.batch_size, a.max_length, order):
            out = model(**enc, labels=y)
            out.loss.backward()
            if a.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tokens += int(enc["attention_mask"].sum())
        train_time += time.perf_counter() - te
        dev = accuracy(dev_x, dev_y)  # model selection on dev, as the pft recipes do
        print(f"peer: epoch {epoch + 1} dev accuracy {dev:.4f}", flush=True)
        if dev > best_dev:  # only the trainable tensors change: keep those
            best_dev, best_state = dev, [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, saved in zip(params, best_state):
            p.copy_(saved)
    test_acc = accuracy(test_x, test_y)
    wall = time.perf_counter() - t0
    print(f"peer: test accuracy {test_acc:.4f}  best dev {best_dev:.4f}  wall {wall:.1f} s  train tokens/s {tokens / train_time:.0f}  "
          f"trainable {trainable}  (torch {torch.__version__}, peft {peft.__version__}, threads {torch.get_num_threads()}, "
          f"seed {a.seed}, LoRA r {a.r} alpha {a.alpha:g} dropout {a.dropout:g} on {a.targets}; {steps} steps)")


if __name__ == "__main__":
    main()
