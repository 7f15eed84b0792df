"""bench/forward peer: MiniLM forward with PyTorch + transformers, as a competent user runs it.

Eval mode, torch.inference_mode, the fast tokenizer, the library's default attention implementation,
torch.set_num_threads(THREADS). Input: the first B sentences of SST-2 train padded to T tokens (the same
ids pft uses). Prints one line `torch sentences/s: X` (median over reps) for run.sh to read.
Usage: python3 bench/forward/peer.py MODEL_DIR DATA_TSV B T THREADS REPS
"""
import statistics
import sys
import time

import torch
from transformers import AutoTokenizer, BertModel


def main():
    model_dir, data, B, T, threads, reps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
    torch.set_num_threads(threads)
    with open(data, encoding="utf-8") as f:
        next(f)
        sentences = [line.rstrip("\n").split("\t")[0] for _, line in zip(range(B), f)]
    tok = AutoTokenizer.from_pretrained(model_dir)
    # T > 0: pad every row to T (the benchmark's fixed shape); T = 0: pad to the longest row (dynamic padding)
    if T > 0:
        enc = tok(sentences, padding="max_length", truncation=True, max_length=T, return_tensors="pt")
    else:
        enc = tok(sentences, padding=True, truncation=True, max_length=512, return_tensors="pt")
    model = BertModel.from_pretrained(model_dir).eval()
    times = []
    with torch.inference_mode():
        model(**enc)  # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            model(**enc)
            times.append(time.perf_counter() - t0)
    print(f"torch sentences/s: {B / statistics.median(times):.1f}  (T {enc['input_ids'].shape[1]}, torch {torch.__version__}, "
          f"attention {model.config._attn_implementation}, threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
