"""The peer for docs/results.md: fine-tune the same checkpoint on SST-2 with PyTorch + transformers,
the same hyperparameters and data subset as a pft recipe, and report test accuracy and wall time.

Written as a competent transformers user would: BertForSequenceClassification, AdamW with weight decay
off for biases and LayerNorm weights, linear warm-up + linear decay, gradient clipping at 1.0, dynamic
padding per batch, eval mode + inference_mode for evaluation, torch.set_num_threads(THREADS).
Frozen schedules: `--trainable top2` trains the top 2 encoder layers + pooler + classifier (frozen
layers in eval mode, as pft runs them); `--trainable full` trains everything; `--trainable head`
the classifier only.

Usage: python3 bench/sst2/peer_train.py --model models/all-MiniLM-L6-v2 --data ../shared/data/sst2 \
          --limit 8000 --epochs 1 --lr 5e-5 --batch-size 32 --max-length 64 --warmup 0.06 \
          --trainable full --seed 42 --threads 2
--group-by-length batches rows of similar length together in training, as transformers' Trainer does
with group_by_length=True (its LengthGroupedSampler: a shuffled order cut into mega-batches of 50 batches,
each sorted by length, longest first, then cut into batches; the batch holding the longest row goes
first), so a batch pads to less: the strongest padding setting a transformers user has.
Each epoch is scored on dev and the best epoch's weights are scored on test (as the pft recipes select
their best model on dev). Prints `peer: test accuracy A  best dev D  wall S s  train tokens/s R  trainable P`.
"""
import argparse
import contextlib
import random
import time

import torch
from transformers import AutoTokenizer, BertForSequenceClassification, get_linear_schedule_with_warmup


def read_tsv(path, limit=None):
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            text, label = line.rsplit("\t", 1)
            texts.append(text)
            labels.append(int(label))
            if limit and len(texts) >= limit:
                break
    return texts, labels


def batches(tok, texts, labels, bs, max_length, order):
    for i in range(0, len(order), bs):
        idx = order[i:i + bs]
        enc = tok([texts[j] for j in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        yield enc, torch.tensor([labels[j] for j in idx])


def length_grouped(order, lengths, bs):
    """transformers' LengthGroupedSampler on a shuffled order: mega-batches of 50 batches, each sorted by
    length (longest first); the mega-batch whose first row is the longest overall is moved to the front
    (as transformers does, so an out-of-memory shows at once)."""
    mega = 50 * bs
    groups = [sorted(order[i:i + mega], key=lambda j: -lengths[j]) for i in range(0, len(order), mega)]
    longest = max(range(len(groups)), key=lambda g: lengths[groups[g][0]])
    groups[0], groups[longest] = groups[longest], groups[0]
    return [j for g in groups for j in g]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--warmup", type=float, default=0.06)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--trainable", choices=["full", "top2", "head"], default="full")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--group-by-length", action="store_true", help="length-grouped training batches (see above)")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 mixed precision: forwards (training and evaluation) under torch.autocast('cpu', bfloat16)")
    a = ap.parse_args()
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = BertForSequenceClassification.from_pretrained(a.model, num_labels=2)
    train_x, train_y = read_tsv(f"{a.data}/train.tsv", a.limit)
    test_x, test_y = read_tsv(f"{a.data}/test.tsv")
    dev_x, dev_y = read_tsv(f"{a.data}/dev.tsv")
    L = model.config.num_hidden_layers
    frozen_modules = []
    for name, p in model.named_parameters():
        if a.trainable == "full":
            p.requires_grad = True
        elif a.trainable == "head":
            p.requires_grad = name.startswith("classifier.")
        else:
            p.requires_grad = (name.startswith("classifier.") or name.startswith("bert.pooler.")
                               or any(name.startswith(f"bert.encoder.layer.{i}.") for i in (L - 2, L - 1)))
    if a.trainable != "full":
        frozen_modules = [model.bert.embeddings] + [model.bert.encoder.layer[i] for i in range(L - (2 if a.trainable == "top2" else 0))]
        if a.trainable == "head":
            frozen_modules.append(model.bert.pooler)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (n.endswith(".bias") or "LayerNorm" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=a.lr)
    steps = a.epochs * ((len(train_x) + a.batch_size - 1) // a.batch_size)
    warm = int(a.warmup * steps) if a.warmup < 1 else int(a.warmup)
    sched = get_linear_schedule_with_warmup(opt, warm, steps)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lengths = ([len(ids) for ids in tok(train_x, truncation=True, max_length=a.max_length)["input_ids"]]
               if a.group_by_length else None)
    def accuracy(xs, ys):
        model.eval()
        right = 0
        with torch.inference_mode():
            for enc, y in batches(tok, xs, ys, 64, a.max_length, list(range(len(xs)))):
                with autocast():
                    right += int((model(**enc).logits.argmax(-1) == y).sum())
        return right / len(xs)

    t0 = time.perf_counter()
    tokens, train_time, best_dev, best_state = 0, 0.0, -1.0, None
    for epoch in range(a.epochs):
        te = time.perf_counter()
        model.train()
        for m in frozen_modules:
            m.eval()
        order = list(range(len(train_x)))
        random.Random(a.seed + epoch).shuffle(order)
        if lengths:
            order = length_grouped(order, lengths, a.batch_size)
        for enc, y in batches(tok, train_x, train_y, a.batch_size, a.max_length, order):
            with autocast():
                out = model(**enc, labels=y)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tokens += int(enc["attention_mask"].sum())
        train_time += time.perf_counter() - te
        dev = accuracy(dev_x, dev_y)  # model selection on dev, as the pft recipes do
        print(f"peer: epoch {epoch + 1} dev accuracy {dev:.4f}", flush=True)
        if dev > best_dev:
            best_dev, best_state = dev, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    test_acc = accuracy(test_x, test_y)
    wall = time.perf_counter() - t0
    print(f"peer: test accuracy {test_acc:.4f}  best dev {best_dev:.4f}  wall {wall:.1f} s  train tokens/s {tokens / train_time:.0f}  "
          f"trainable {trainable}  (torch {torch.__version__}, threads {torch.get_num_threads()}, seed {a.seed}"
          f"{', length-grouped batches' if lengths else ''}{', bf16 autocast' if a.bf16 else ''})")


if __name__ == "__main__":
    main()
