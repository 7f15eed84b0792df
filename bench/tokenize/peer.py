#!/usr/bin/env python3
"""Peer benchmark: BertTokenizerFast (the `tokenizers` library) batch API, single thread, on SST-2 train.

    TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 python3 peer.py MODEL_DIR TSV [REPS]

Encodes every sentence in batches of 1024, truncated at 128 and padded to the longest row (what
bench_tokenize.c does); prints "tokenizers sentences/s: X (median of REPS)"."""
import os
import statistics
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
from transformers import BertTokenizerFast  # noqa: E402


def main():
    model, tsv = sys.argv[1], sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    with open(tsv, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")[1:]
    sents = [l.rsplit("\t", 1)[0] for l in lines if l]
    tok = BertTokenizerFast.from_pretrained(model)
    times = []
    tokens = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        tokens = 0
        for s in range(0, len(sents), 1024):
            enc = tok(sents[s:s + 1024], truncation=True, max_length=128, padding="longest", return_tensors="np")
            tokens += int(enc["attention_mask"].sum())
        times.append(time.perf_counter() - t0)
    print("tokenizers sentences/s: %.0f (median of %d, %d sentences, %d tokens)"
          % (len(sents) / statistics.median(times), reps, len(sents), tokens))


if __name__ == "__main__":
    main()
