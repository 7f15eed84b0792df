"""tests/fixtures/ner/seqeval.json: entity-level metrics by seqeval (default IOB2 mode, micro average) on
fixed tag sequences, for tests/lua/test_metrics.lua to hold pft.metrics.token_classification to.

Cases: hand-written edge cases (I- after O, type changes inside an entity, single-token entities, all O,
an empty sentence) and seeded random corpora, half of them with ill-formed sequences.
Usage (from the repository root; needs `pip install seqeval`): python3 tests/gen_seqeval_fixtures.py
"""
import json
import random

from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

TYPES = ["PER", "LOC", "ORG", "MISC"]
TAGS = ["O"] + [p + "-" + t for t in TYPES for p in ("B", "I")]


def random_well_formed(rng, n):
    out, i = [], 0
    while i < n:
        if rng.random() < 0.6:
            out.append("O")
            i += 1
            continue
        t, k = rng.choice(TYPES), rng.randint(1, 3)
        for j in range(min(k, n - i)):
            out.append(("B-" if j == 0 else "I-") + t)
        i += k
    return out[:n]


def corrupt(rng, seq, p):
    return [rng.choice(TAGS) if rng.random() < p else t for t in seq]


def case(name, gold, pred):
    rep = classification_report(gold, pred, output_dict=True, zero_division=0)
    per_type = {t: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                    "support": int(v["support"])}
                for t, v in rep.items() if t not in ("micro avg", "macro avg", "weighted avg")}
    return {
        "name": name, "gold": gold, "pred": pred,
        "precision": float(precision_score(gold, pred, zero_division=0)),
        "recall": float(recall_score(gold, pred, zero_division=0)),
        "f1": float(f1_score(gold, pred, zero_division=0)), "accuracy": float(accuracy_score(gold, pred)), "per_type": per_type,
        "entities": [[list(e) for e in get_entities(s)] for s in gold + pred],
    }


def main():
    cases = [
        case("hand", [["B-PER", "I-PER", "O", "B-LOC"], ["O", "I-ORG", "I-ORG", "O"], ["B-MISC"], []],
             [["B-PER", "I-PER", "O", "I-LOC"], ["O", "B-ORG", "I-ORG", "O"], ["O"], []]),
        case("type change inside", [["B-PER", "I-LOC", "I-LOC", "O", "B-ORG", "B-ORG"]],
             [["B-PER", "I-PER", "I-LOC", "O", "B-ORG", "I-ORG"]]),
        case("all O", [["O", "O"], ["O"]], [["O", "O"], ["B-PER"]]),
    ]
    rng = random.Random(2026)
    for k in range(6):
        gold = [random_well_formed(rng, rng.randint(0, 25)) for _ in range(40)]
        p = 0.1 if k % 2 == 0 else 0.35
        pred = [corrupt(rng, s, p) for s in gold]
        if k % 2 == 1:  # ill-formed gold too
            gold = [corrupt(rng, s, 0.1) for s in gold]
        cases.append(case("random %d (corruption %.2f)" % (k, p), gold, pred))
    out = {"generator": "tests/gen_seqeval_fixtures.py", "seqeval": "1.2.2", "cases": cases}
    with open("tests/fixtures/ner/seqeval.json", "w") as f:
        json.dump(out, f)
        f.write("\n")
    print("wrote tests/fixtures/ner/seqeval.json: %d cases" % len(cases))


if __name__ == "__main__":
    main()
