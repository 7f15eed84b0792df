"""The peer for docs/results.md's CoNLL-2003 rows: fine-tune the same checkpoint for named-entity
recognition with PyTorch + transformers, the same rows and hyperparameters as a pft recipe, and report
entity F1 (seqeval) and wall time.

Written as transformers' token-classification example does it: AutoModelForTokenClassification, the
words of a sentence tokenized with is_split_into_words=True, the first piece of each word labelled with
its tag and the other pieces -100 (ignored by the loss), AdamW with weight decay off for biases and
LayerNorm weights, linear warm-up + decay, gradient clipping at 1.0, dynamic padding per batch, eval mode
+ inference_mode for evaluation, torch.set_num_threads(THREADS). Evaluation predicts a word's tag from
its first piece; a word cut off by max_length is predicted "O" (so its entities count as missed), and
seqeval's default-mode entity F1 (micro) is the score. `--trainable top2` trains the top 2 encoder layers
and the classifier (frozen layers in eval mode), `full` everything.

Usage: python3 bench/conll2003/peer_train.py --model models/all-MiniLM-L6-v2 --data ../shared/data/conll2003 \
          --limit 6000 --epochs 3 --lr 5e-5 --batch-size 32 --max-length 128 --warmup 0.06 \
          --trainable full --seed 42 --threads 2
Each epoch is scored on valid and the best epoch's weights on test. Prints `peer: test f1 F  best dev D
wall S s  train tokens/s R  trainable P`.
"""
import argparse
import random
import time

import torch
from seqeval.metrics import f1_score
from transformers import AutoModelForTokenClassification, AutoTokenizer, get_linear_schedule_with_warmup


def read_conll(path, limit=None):
    sents, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if words:
                    sents.append((words, tags))
                    words, tags = [], []
                    if limit and len(sents) >= limit:
                        return sents
                continue
            words.append(parts[0])
            tags.append(parts[1])
    if words and not (limit and len(sents) >= limit):
        sents.append((words, tags))
    return sents


def encode(tok, batch, tag_id, max_length):
    enc = tok([w for w, _ in batch], is_split_into_words=True, padding=True, truncation=True, max_length=max_length,
              return_tensors="pt")
    labels = []
    for i, (_, tags) in enumerate(batch):
        prev, row = None, []
        for w in enc.word_ids(i):
            row.append(-100 if w is None or w == prev else tag_id[tags[w]])
            prev = w
        labels.append(row)
    return enc, torch.tensor(labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--warmup", type=float, default=0.06)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--trainable", choices=["full", "top2"], default="full")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train = read_conll(f"{a.data}/train.txt", a.limit)
    dev, test = read_conll(f"{a.data}/valid.txt"), read_conll(f"{a.data}/test.txt")
    names = sorted({t for _, tags in train for t in tags})
    tag_id = {t: i for i, t in enumerate(names)}
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForTokenClassification.from_pretrained(a.model, num_labels=len(names),
                                                            id2label=dict(enumerate(names)), label2id=tag_id)
    L = model.config.num_hidden_layers
    frozen_modules = []
    if a.trainable == "top2":
        for n, p in model.named_parameters():
            p.requires_grad = n.startswith("classifier.") or any(n.startswith(f"bert.encoder.layer.{i}.") for i in (L - 2, L - 1))
        frozen_modules = [model.bert.embeddings] + [model.bert.encoder.layer[i] for i in range(L - 2)]
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (n.endswith(".bias") or "LayerNorm" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=a.lr)
    steps = a.epochs * ((len(train) + a.batch_size - 1) // a.batch_size)
    sched = get_linear_schedule_with_warmup(opt, int(a.warmup * steps) if a.warmup < 1 else int(a.warmup), steps)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def entity_f1(sents):
        model.eval()
        gold, pred = [], []
        with torch.inference_mode():
            for i in range(0, len(sents), 64):
                batch = sents[i:i + 64]
                enc, _ = encode(tok, batch, {t: 0 for _, ts in batch for t in ts}, a.max_length)
                best = model(**enc).logits.argmax(-1)
                for r, (words, tags) in enumerate(batch):
                    p, prev = ["O"] * len(words), None
                    for k, w in enumerate(enc.word_ids(r)):
                        if w is not None and w != prev:
                            p[w] = names[int(best[r, k])]
                        prev = w
                    gold.append(tags)
                    pred.append(p)
        return f1_score(gold, pred)

    t0 = time.perf_counter()
    tokens, train_time, best_dev, best_state = 0, 0.0, -1.0, None
    for epoch in range(a.epochs):
        te = time.perf_counter()
        model.train()
        for m in frozen_modules:
            m.eval()
        order = list(range(len(train)))
        random.Random(a.seed + epoch).shuffle(order)
        for i in range(0, len(order), a.batch_size):
            enc, y = encode(tok, [train[j] for j in order[i:i + a.batch_size]], tag_id, a.max_length)
            out = model(**enc, labels=y)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tokens += int(enc["attention_mask"].sum())
        train_time += time.perf_counter() - te
        d = entity_f1(dev)
        print(f"peer: epoch {epoch + 1} dev f1 {d:.4f}", flush=True)
        if d > best_dev:
            best_dev, best_state = d, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    f1 = entity_f1(test)
    wall = time.perf_counter() - t0
    print(f"peer: test f1 {f1:.4f}  best dev {best_dev:.4f}  wall {wall:.1f} s  train tokens/s {tokens / train_time:.0f}  "
          f"trainable {trainable}  (torch {torch.__version__}, threads {torch.get_num_threads()}, seed {a.seed})")


if __name__ == "__main__":
    main()
