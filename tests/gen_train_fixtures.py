"""Training fixtures derived here (tests/fixtures/train/README.md):
- tiny_regression.tsv / tiny_regression_dev.tsv from tiny.tsv / tiny_dev.tsv: score 4.0 for pos, 1.0 for
  neg, 0.5 further out when the sentence has "very";
- tiny_ner.conll (48 sentences) / tiny_ner_dev.conll (16): `word TAG 0` lines over the tiny vocab,
  random.Random(7): "actor" / "she" / "he" B-PER ("charming" after them I-PER), "world" / "scene" / "plot"
  B-LOC ("light" after them I-LOC), the rest O.
Usage (from the repository root): python3 tests/gen_train_fixtures.py
"""
import random

D = "tests/fixtures/train/"


def regression():
    for src, dst in (("tiny.tsv", "tiny_regression.tsv"), ("tiny_dev.tsv", "tiny_regression_dev.tsv")):
        rows = [line.rstrip("\n").split("\t") for line in open(D + src)][1:]
        with open(D + dst, "w") as f:
            f.write("sentence\tscore\n")
            for s, label in rows:
                base = 4.0 if label == "pos" else 1.0
                f.write("%s\t%.2f\n" % (s, base + (0.5 if "very" in s else 0.0) * (1 if label == "pos" else -1)))


def ner():
    rng = random.Random(7)
    per, loc = ["actor", "she", "he"], ["world", "scene", "plot"]
    filler = ["the", "movie", "is", "good", "bad", "a", "film", "was", "great", "in", "with", "to", "of", "funny",
              "boring"]

    def sentence():
        words, tags = [], []
        for _ in range(rng.randint(3, 9)):
            r = rng.random()
            if r < 0.2:
                words.append(rng.choice(per)), tags.append("B-PER")
                if rng.random() < 0.4:
                    words.append("charming"), tags.append("I-PER")
            elif r < 0.35:
                words.append(rng.choice(loc)), tags.append("B-LOC")
                if rng.random() < 0.3:
                    words.append("light"), tags.append("I-LOC")
            else:
                words.append(rng.choice(filler)), tags.append("O")
        return words, tags

    for name, n in (("tiny_ner.conll", 48), ("tiny_ner_dev.conll", 16)):
        with open(D + name, "w") as f:
            for _ in range(n):
                for w, t in zip(*sentence()):
                    f.write(f"{w} {t} 0\n")
                f.write("\n")


if __name__ == "__main__":
    regression()
    ner()
