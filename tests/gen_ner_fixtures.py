"""tests/fixtures/ner/alignment.json: how transformers' token-classification example aligns word tags to
word pieces, for pft's loader to be held to (tests/lua/test_data.lua token_labels_match_transformers).

For the first 300 sentences of CoNLL-2003 train (../shared/data/conll2003/train.txt, `word TAG 0`), the
all-MiniLM-L6-v2 tokenizer (BertTokenizerFast) with is_split_into_words=True and truncation at max_length
128 and 16: the input ids, and the labels (the first piece of each word gets the word's tag id, the other
pieces and the specials -100; label_all_tokens gives the other pieces the word's tag with B-X as I-X), tag
ids in sorted tag order.
Usage (from the repository root, after `make setup`): python3 tests/gen_ner_fixtures.py
"""
import json

from transformers import AutoTokenizer

N = 300


def read_conll(path, n):
    sents, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if words:
                    sents.append((words, tags))
                    words, tags = [], []
                    if len(sents) == n:
                        break
                continue
            words.append(parts[0])
            tags.append(parts[1])
    return sents


def main():
    tok = AutoTokenizer.from_pretrained("models/all-MiniLM-L6-v2")
    sents = read_conll("../shared/data/conll2003/train.txt", N)
    names = sorted({t for _, ts in sents for t in ts})
    tag_id = {t: i for i, t in enumerate(names)}
    cont = {i: tag_id.get("I-" + t[2:], i) if t.startswith("B-") else i for t, i in tag_id.items()}
    out = {"generator": "tests/gen_ner_fixtures.py", "tags": names, "cases": []}
    for max_length in (128, 16):
        rows = []
        for words, tags in sents:
            enc = tok(words, is_split_into_words=True, truncation=True, max_length=max_length)
            first, every, prev = [], [], None
            for w in enc.word_ids():
                if w is None:
                    first.append(-100)
                    every.append(-100)
                else:
                    first.append(tag_id[tags[w]] if w != prev else -100)
                    every.append(tag_id[tags[w]] if w != prev else cont[tag_id[tags[w]]])
                prev = w
            rows.append({"ids": enc["input_ids"], "labels": first, "labels_all": every})
        out["cases"].append({"max_length": max_length, "rows": rows})
    with open("tests/fixtures/ner/alignment.json", "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print("wrote tests/fixtures/ner/alignment.json: %d sentences x 2 max lengths" % len(sents))


if __name__ == "__main__":
    main()
