"""The peer for issue 7's experiment-loop figures (bench/experiments/run.sh): the cells of a freeze-ratio
sweep trained one after another with PyTorch + transformers, the same job pft's `pft sweep` runs.

Each cell: BertForSequenceClassification from the same checkpoint, re-seeded; the trainable set exactly as
pft's schedule presets (lua/pft/schedule.lua) choose it:
  head   classifier.* only (a linear probe: the pooler stays frozen too, as pft's `head` preset)
  topK   encoder layers L-K .. L-1 + bert.pooler.* + classifier.* (pft's `top_k`, k = K)
  full   everything
Frozen modules (embeddings, the frozen encoder layers, and for `head` the pooler) run in eval mode, as pft
runs them; their parameters have requires_grad False, so autograd records nothing below the lowest
trainable layer. AdamW with weight decay off for biases and LayerNorm weights (pft's optim.no_decay),
linear warm-up + linear decay (transformers' get_linear_schedule_with_warmup, the same formula as pft's
`linear`), gradient clipping at 1.0, dynamic padding per batch in a shuffled order, dev scored after each
epoch in eval mode under inference_mode (batches of 64), the best epoch's weights scored on test.
torch.set_num_threads(THREADS). No activation cache: transformers has none, so every step runs the frozen
prefix again (under no autograd tape) -- that is the work a transformers user's sweep really does.

Usage (run.sh passes the same values pft's resolved recipes hold):
  python3 bench/experiments/peer_sweep.py --model models/all-MiniLM-L6-v2 --data ../shared/data/sst2 \
      --limit 8000 --epochs 3 --batch-size 32 --max-length 64 --warmup 0.06 --seed 42 --threads 2 [--dev-limit N] \
      head=1e-3 top1=1e-4 top2=1e-4 top3=1e-4
A cell is NAME=LR or NAME=LR/WEIGHT_DECAY (default --weight-decay); NAME is head, top<K> or full.
--per-process runs each cell in its own python process (this script again, one cell), else all in this one.
Prints one line per cell, `peer CELL: dev D test T wall S s trainable P`, then `peer total: wall S s ...`.
"""
import argparse
import math
import os
import random
import re
import subprocess
import sys
import time

import torch
from transformers import AutoTokenizer, BertForSequenceClassification, get_linear_schedule_with_warmup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sst2"))
from peer_train import batches, read_tsv  # noqa: E402  (one reader and batcher for every peer)


def parse_cell(text, default_wd):
    m = re.match(r"^(head|full|top(\d+))=([0-9.eE+-]+)(?:/([0-9.eE+-]+))?$", text)
    if not m:
        raise SystemExit(f"peer_sweep: bad cell '{text}' (expected NAME=LR or NAME=LR/WD, NAME head, topK or full)")
    return {"name": m.group(1), "k": int(m.group(2)) if m.group(2) else None, "lr": float(m.group(3)),
            "wd": float(m.group(4)) if m.group(4) else default_wd}


def trainable_set(model, cell):
    """requires_grad as pft's preset sets it; returns the modules that run in eval mode."""
    L = model.config.num_hidden_layers
    name = cell["name"]
    if name == "full":
        lo = 0
    elif name == "head":
        lo = L
    else:
        if not 1 <= cell["k"] <= L:
            raise SystemExit(f"peer_sweep: {name}: the model has {L} layers")
        lo = L - cell["k"]
    for n, p in model.named_parameters():
        if name == "full":
            p.requires_grad = True
        elif name == "head":
            p.requires_grad = n.startswith("classifier.")
        else:
            p.requires_grad = (n.startswith("classifier.") or n.startswith("bert.pooler.")
                               or any(n.startswith(f"bert.encoder.layer.{i}.") for i in range(lo, L)))
    if name == "full":
        return []
    frozen = [model.bert.embeddings] + [model.bert.encoder.layer[i] for i in range(lo)]
    if name == "head":
        frozen.append(model.bert.pooler)
    return frozen


def run_cell(a, cell, tok, data):
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    t0 = time.perf_counter()
    model = BertForSequenceClassification.from_pretrained(a.model, num_labels=2)
    frozen = trainable_set(model, cell)
    (train_x, train_y), (dev_x, dev_y), (test_x, test_y) = data
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in named if n.endswith(".bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cell["wd"]}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cell["lr"])
    steps = a.epochs * ((len(train_x) + a.batch_size - 1) // a.batch_size)
    # a fraction rounds up, as pft (lua/pft/train.lua warmup_steps) and transformers' TrainingArguments do
    warm = math.ceil(a.warmup * steps) if a.warmup < 1 else int(a.warmup)
    sched = get_linear_schedule_with_warmup(opt, warm, steps)
    params = [p for _, p in named]
    trainable = sum(p.numel() for p in params)

    def accuracy(xs, ys):
        model.eval()
        right = 0
        with torch.inference_mode():
            for enc, y in batches(tok, xs, ys, 64, a.max_length, list(range(len(xs)))):
                right += int((model(**enc).logits.argmax(-1) == y).sum())
        return right / len(xs)

    best_dev, best_state, tokens = -1.0, None, 0
    for epoch in range(a.epochs):
        model.train()
        for m in frozen:
            m.eval()
        order = list(range(len(train_x)))
        random.Random(a.seed + epoch).shuffle(order)
        for enc, y in batches(tok, train_x, train_y, a.batch_size, a.max_length, order):
            out = model(**enc, labels=y)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tokens += int(enc["attention_mask"].sum())
        dev = accuracy(dev_x, dev_y)  # model selection on dev, as pft's runs do
        if a.verbose:
            print(f"peer {cell['name']}: epoch {epoch + 1} dev accuracy {dev:.4f}", flush=True)
        if dev > best_dev:
            best_dev, best_state = dev, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    test = accuracy(test_x, test_y)
    wall = time.perf_counter() - t0
    print(f"peer {cell['name']}: dev {best_dev:.4f} test {test:.4f} wall {wall:.1f} s trainable {trainable}"
          f"  (lr {cell['lr']:g}, wd {cell['wd']:g}, {steps} steps, {tokens} train tokens)", flush=True)


def main():
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--dev-limit", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--warmup", type=float, default=0.06)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-process", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("cells", nargs="+")
    a = ap.parse_args()
    cells = [parse_cell(c, a.weight_decay) for c in a.cells]
    if a.per_process and len(cells) > 1:
        base = [sys.executable, os.path.abspath(__file__)]
        skip = {"--per-process"}
        args = [x for x in sys.argv[1:] if x not in skip and x not in a.cells]
        for c in a.cells:
            r = subprocess.run(base + args + [c])
            if r.returncode != 0:
                raise SystemExit(r.returncode)
    else:
        torch.set_num_threads(a.threads)
        tok = AutoTokenizer.from_pretrained(a.model)  # the fast tokenizer
        data = (read_tsv(f"{a.data}/train.tsv", a.limit), read_tsv(f"{a.data}/dev.tsv", a.dev_limit), read_tsv(f"{a.data}/test.tsv"))
        for c in cells:
            run_cell(a, c, tok, data)
    print(f"peer total: wall {time.perf_counter() - t_start:.1f} s for {len(cells)} cell{'s' if len(cells) != 1 else ''}"
          f" (torch {torch.__version__}, threads {a.threads}{', one process per cell' if a.per_process else ''})",
          flush=True)


if __name__ == "__main__":
    main()
