#!/usr/bin/env python3
"""Writes the BERT parity fixtures (tests/fixtures/bert/) that the C/Lua tests check pft against.

Run by hand from the repository root (needs torch, transformers, safetensors; CPU only):

    python3 tests/gen_bert_fixtures.py                       # (re)writes tests/fixtures/bert/*
    python3 tests/gen_bert_fixtures.py roundtrip EXPORT_DIR OUT_JSON [FIXTURE_DIR]

The reference is Hugging Face transformers + PyTorch, float32, CPU, eval mode (dropout off),
attn_implementation="eager" (plain softmax(QK^T/sqrt(d) + mask) V math; the additive mask is
torch.finfo(float32).min on padded keys, 0 elsewhere).

Fixtures written (see tests/fixtures/bert/README.md, which this script also writes):
  tiny_seqcls/     tiny random BERT, BertForSequenceClassification, 3 labels, cross-entropy loss
  tiny_regression/ same bert.* weights, num_labels 1, MSE loss on float labels
  tiny_tokcls/     same bert.* weights (no pooler), BertForTokenClassification, 5 labels, -100 ignored
  minilm_sst2/     the real all-MiniLM-L6-v2 BertModel on the first 32 SST-2 test sentences

Each tiny_* directory is a loadable Hugging Face checkpoint (config.json, vocab.txt,
tokenizer_config.json, model.safetensors) plus expected.safetensors. Integer inputs (input_ids,
token_type_ids, attention_mask, classification labels) are stored as F32 holding exact small
integers; the C side reads F32 and converts. Scalar losses are stored with shape [] (ndim 0).

roundtrip: loads EXPORT_DIR (written by pft's exporter) with AutoModelFor{Sequence,Token}Classification
(chosen from config.json "architectures") and AutoTokenizer, runs the tiny_seqcls batch
(tests/fixtures/bert/tiny_seqcls/expected.safetensors) through it in eval mode and writes OUT_JSON.
If FIXTURE_DIR is given (e.g. tests/fixtures/bert/tiny_seqcls) the JSON also gets
"max_abs_diff_vs_fixture": max |logits - FIXTURE_DIR/expected.safetensors logits| (only meaningful
when EXPORT_DIR holds the unmodified weights of that fixture).
"""
import json
import os
import struct
import sys

import safetensors
import torch
import transformers
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from transformers import (BertConfig, BertForSequenceClassification, BertForTokenClassification,
                          BertModel, BertTokenizerFast)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "bert")
MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
SST2_TEST = "/work/shared/data/sst2/test.tsv"
GENERATOR = "python3 tests/gen_bert_fixtures.py"

SEED = 1234
NOISE_STD = 0.1
SEQ_LEN = 12

# The tiny vocabulary: exactly TINY_VOCAB_SIZE lines. [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.
TINY_VOCAB_SIZE = 99
_TINY_WORDS = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] . , ! ? ' - "
    "the a an is it this that movie film story good bad great awful not very and but of to in "
    "with was are be i you he she we they hello world fun funny boring love hate play act charm "
    "best worst too much no yes plot actor scene slow fast long short end time make made feel "
    "one two all so just like ##ing ##s ##ed ##ly ##er ##y ##able ##ful ##ness ##ish un re "
    "dark light sad happy story ##e ##a ##o ##t ##n ##r ##l ##m ##d ##k ##p"
).split()


def tiny_vocab():
    words = []
    for w in _TINY_WORDS:
        if w not in words:
            words.append(w)
    assert len(words) >= TINY_VOCAB_SIZE, len(words)
    return words[:TINY_VOCAB_SIZE]


# The tiny batch: 4 sequences, padded to SEQ_LEN, different lengths, rows 2 and 3 are text pairs.
TINY_TEXTS = [
    ("hello world", None),
    ("the movie is very good , i loved it", None),
    ("a funny film", "not boring"),
    ("actors acting", "but the plot is slow and too long"),
]

TINY_LABELS_SEQCLS = [0, 2, 1, 2]
TINY_LABELS_REGRESSION = [0.5, -1.25, 2.0, 0.3]


def versions():
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
    }


def metadata(**extra):
    md = {"format": "pt", "generator": GENERATOR}
    md.update(versions())
    md.update({k: str(v) for k, v in extra.items()})
    return md


def save_file(tensors, path, metadata):
    """safetensors.torch.save_file, then the header JSON re-dumped with sorted keys.

    The safetensors writer serializes __metadata__ from a hash map in random order, so plain
    save_file output differs from run to run in its header bytes; tensor data and offsets (relative
    to the data section) are unaffected by re-dumping the header, which is padded with spaces to a
    multiple of 8 bytes as the writer does."""
    raw = st_save(tensors, metadata=metadata)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    hb = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])


def setup_determinism():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)


def tiny_config(num_labels, arch, problem_type=None):
    if arch == "BertForTokenClassification":
        labels = ["O", "B-POS", "I-POS", "B-NEG", "I-NEG"][:num_labels]
    elif num_labels == 1:
        labels = ["score"]
    else:
        labels = ["negative", "neutral", "positive"][:num_labels]
    cfg = BertConfig(
        vocab_size=TINY_VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        initializer_range=0.02,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=0,
        num_labels=num_labels,
        id2label={i: l for i, l in enumerate(labels)},
        label2id={l: i for i, l in enumerate(labels)},
        architectures=[arch],
    )
    if problem_type is not None:
        cfg.problem_type = problem_type
    cfg._attn_implementation = "eager"
    return cfg


def write_tiny_tokenizer(d):
    with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
        for w in tiny_vocab():
            f.write(w + "\n")
    tok_cfg = {
        "do_lower_case": True,
        "do_basic_tokenize": True,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "never_split": None,
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "tokenizer_class": "BertTokenizer",
        "model_max_length": 64,
    }
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tok_cfg, f, indent=2)
        f.write("\n")


def tiny_inputs(d):
    tok = BertTokenizerFast.from_pretrained(d)
    rows = []
    for text, pair in TINY_TEXTS:
        enc = tok(text, pair, padding="max_length", truncation=True, max_length=SEQ_LEN)
        rows.append(enc)
    ids = torch.tensor([r["input_ids"] for r in rows], dtype=torch.long)
    tt = torch.tensor([r["token_type_ids"] for r in rows], dtype=torch.long)
    am = torch.tensor([r["attention_mask"] for r in rows], dtype=torch.long)
    return ids, tt, am


def perturb(model, gen):
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * NOISE_STD)


def param_state(model):
    # Parameters only, full HF names; buffers (position_ids, token_type_ids) are non-persistent anyway.
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters()}


def run_and_record(model, ids, tt, am, labels):
    model.eval()
    model.zero_grad(set_to_none=True)
    pooled = {}
    hook = None
    if model.bert.pooler is not None:
        hook = model.bert.pooler.register_forward_hook(lambda m, i, o: pooled.__setitem__("p", o))
    out = model(input_ids=ids, token_type_ids=tt, attention_mask=am, labels=labels,
                output_hidden_states=True, return_dict=True)
    if hook is not None:
        hook.remove()
    out.loss.backward()
    t = {
        "input_ids": ids.float(),
        "token_type_ids": tt.float(),
        "attention_mask": am.float(),
        "labels": labels.float(),
        "logits": out.logits.detach(),
        "loss": out.loss.detach().reshape(()),
    }
    for i, h in enumerate(out.hidden_states):
        t["hidden_states.%d" % i] = h.detach()
    if "p" in pooled:
        t["pooled"] = pooled["p"].detach()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        t["grad." + n] = p.grad.detach().clone()
    return {k: v.contiguous() for k, v in t.items()}, out


def save_tiny(name, model, tensors, notes):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    write_tiny_tokenizer(d)
    # config.json: written from the model config (problem_type set explicitly beforehand).
    model.config.to_json_file(os.path.join(d, "config.json"))
    save_file(param_state(model), os.path.join(d, "model.safetensors"),
              metadata=metadata(fixture=name, note="HF checkpoint of the tiny random model"))
    save_file(tensors, os.path.join(d, "expected.safetensors"),
              metadata=metadata(fixture=name, note=notes, seed=SEED, noise_std=NOISE_STD,
                                attn_implementation="eager", mode="eval (dropout off)",
                                int_inputs_as="F32 exact integers", loss_shape="[] scalar"))


def gen_tiny():
    setup_determinism()
    tmp = os.path.join(OUT, "tiny_seqcls")
    os.makedirs(tmp, exist_ok=True)
    write_tiny_tokenizer(tmp)
    ids, tt, am = tiny_inputs(tmp)

    # --- sequence classification (3 labels)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + 1)
    cfg = tiny_config(3, "BertForSequenceClassification", "single_label_classification")
    seqcls = BertForSequenceClassification(cfg)
    assert seqcls.config._attn_implementation == "eager", seqcls.config._attn_implementation
    perturb(seqcls, gen)
    seqcls.eval()
    labels = torch.tensor(TINY_LABELS_SEQCLS, dtype=torch.long)
    t, _ = run_and_record(seqcls, ids, tt, am, labels)
    save_tiny("tiny_seqcls", seqcls, t,
              "BertForSequenceClassification num_labels=3, CrossEntropyLoss(mean) on logits[4,3]")
    bert_state = {n: p.detach().clone() for n, p in seqcls.named_parameters() if n.startswith("bert.")}

    # --- regression (num_labels 1, MSE)
    torch.manual_seed(SEED + 2)
    gen = torch.Generator().manual_seed(SEED + 3)
    cfg = tiny_config(1, "BertForSequenceClassification", "regression")
    reg = BertForSequenceClassification(cfg)
    perturb(reg, gen)
    missing, unexpected = reg.load_state_dict(bert_state, strict=False)
    assert not unexpected and all(m.startswith("classifier.") for m in missing), (missing, unexpected)
    labels = torch.tensor(TINY_LABELS_REGRESSION, dtype=torch.float32)
    t, _ = run_and_record(reg, ids, tt, am, labels)
    save_tiny("tiny_regression", reg, t,
              "BertForSequenceClassification num_labels=1, MSELoss(mean) on logits.squeeze() [4] vs labels [4]")

    # --- token classification (5 labels, -100 ignored)
    torch.manual_seed(SEED + 4)
    gen = torch.Generator().manual_seed(SEED + 5)
    cfg = tiny_config(5, "BertForTokenClassification")
    tokcls = BertForTokenClassification(cfg)
    assert tokcls.bert.pooler is None
    perturb(tokcls, gen)
    tok_bert = {n: v for n, v in bert_state.items() if not n.startswith("bert.pooler.")}
    missing, unexpected = tokcls.load_state_dict(tok_bert, strict=False)
    assert not unexpected and all(m.startswith("classifier.") for m in missing), (missing, unexpected)
    lgen = torch.Generator().manual_seed(SEED + 6)
    labels = torch.randint(0, 5, (4, SEQ_LEN), generator=lgen, dtype=torch.long)
    labels[am == 0] = -100
    labels[0, 0] = -100   # a [CLS]
    labels[1, 5] = -100   # a word in the middle
    labels[3, SEQ_LEN - 1] = -100  # the final [SEP] of the unpadded row
    t, _ = run_and_record(tokcls, ids, tt, am, labels)
    # problem_type is not used by BertForTokenClassification; leave it unset.
    save_tiny("tiny_tokcls", tokcls, t,
              "BertForTokenClassification num_labels=5, CrossEntropyLoss(mean over labels != -100) on logits[4,12,5]")
    return ids, tt, am


def gen_minilm():
    setup_determinism()
    d = os.path.join(OUT, "minilm_sst2")
    os.makedirs(d, exist_ok=True)
    sentences = []
    with open(SST2_TEST, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        assert header[0] == "sentence", header
        for line in f:
            sentences.append(line.rstrip("\n").split("\t")[0])
            if len(sentences) == 32:
                break
    tok = BertTokenizerFast.from_pretrained(MINILM)
    enc = tok(sentences, padding="longest", truncation=True, max_length=128, return_tensors="pt")
    model, info = BertModel.from_pretrained(MINILM, attn_implementation="eager",
                                            output_loading_info=True)
    model.eval()
    assert model.config._attn_implementation == "eager"
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"],
                    attention_mask=enc["attention_mask"], return_dict=True)
    t = {
        "input_ids": enc["input_ids"].float(),
        "token_type_ids": enc["token_type_ids"].float(),
        "attention_mask": enc["attention_mask"].float(),
        "last_hidden_state": out.last_hidden_state.contiguous(),
        "pooler_output": out.pooler_output.contiguous(),
    }
    save_file(t, os.path.join(d, "expected.safetensors"),
              metadata=metadata(fixture="minilm_sst2", checkpoint="models/all-MiniLM-L6-v2",
                                data="first 32 sentences of sst2/test.tsv",
                                tokenizer="BertTokenizerFast padding=longest truncation max_length=128",
                                attn_implementation="eager", mode="eval",
                                int_inputs_as="F32 exact integers"))
    # sentences.txt: exactly the strings that were tokenized (trailing spaces of the TSV kept).
    with open(os.path.join(d, "sentences.txt"), "w", encoding="utf-8") as f:
        for s in sentences:
            f.write(s + "\n")
    return info, tuple(enc["input_ids"].shape)


README = """# BERT parity fixtures

Generated by `{generator}` (run from the repository root; CPU, float32, fixed seeds,
`torch.use_deterministic_algorithms(True)`, one thread). Do not edit by hand: regenerate.

Versions: torch {torch}, transformers {transformers}, safetensors {safetensors}. Every
`*.safetensors` here records the same in its `__metadata__` (keys `torch`, `transformers`,
`safetensors`, `generator`, plus `format: pt` and notes).

Reference semantics: Hugging Face transformers models in **eval mode** (dropout off, also during
`loss.backward()`), `attn_implementation="eager"`: scores = QK^T / sqrt(head_dim) + mask, where the
additive mask is `torch.finfo(float32).min` on padded keys and 0 elsewhere; softmax; times V.
GELU is the exact erf form (`hidden_act="gelu"`). LayerNorm eps 1e-12.

## Conventions

* `input_ids`, `token_type_ids`, `attention_mask` and the integer classification `labels` are
  stored as **F32 holding exact small integers** (the C side reads F32 and converts). Regression
  labels are real F32 values. Ignored token labels are `-100.0`.
* `loss` is a **scalar with shape `[]`** (ndim 0, numel 1).
* Pad id is 0 (`[PAD]`); pads have `attention_mask` 0 and `token_type_ids` 0.
* `grad.<name>` is d loss / d parameter for **every** parameter `<name>` of `model.safetensors`
  (same shape). Note `bert.embeddings.word_embeddings` is an `nn.Embedding(padding_idx=0)`, so its
  gradient row 0 (`[PAD]`) is exactly zero even though the pad token occurs in the batch; rows of
  tokens/positions that do not occur are zero too.
* `hidden_states.0` is the embedding output (after the embedding LayerNorm), `hidden_states.<i>`
  the output of encoder layer i (1-based), all `[4,12,32]`; values at padded positions are
  included (they are computed but do not influence the unpadded ones). `pooled` is
  `tanh(dense(h[:,0]))` `[4,32]` (sequence-classification fixtures only).

## tiny_seqcls/, tiny_regression/, tiny_tokcls/

Loadable HF checkpoints: `config.json` (`model.config.to_json_file`), `vocab.txt`
({vocab} lines: `[PAD]`=0 `[UNK]`=1 `[CLS]`=2 `[SEP]`=3 `[MASK]`=4, then lowercase words and
`##` wordpieces), `tokenizer_config.json` (`do_lower_case: true`), `model.safetensors` (parameters
only, full HF names, no `position_ids`/`token_type_ids` buffers), and `expected.safetensors`.

Tiny config: vocab_size {vocab}, hidden 32, 2 layers, 4 heads, intermediate 64,
max_position_embeddings 64, type_vocab_size 2, gelu, layer_norm_eps 1e-12, initializer_range 0.02;
after HF init **every parameter got N(0, {noise}^2) noise** (seed {seed}), so LayerNorm weights and
biases are not 1/0. tiny_regression and tiny_tokcls share all `bert.*` weights with tiny_seqcls
(tiny_tokcls has no pooler); their classifiers differ.

Batch (tokenized with BertTokenizerFast on the tiny vocab, `padding="max_length"`, max_length 12):

{batch}

| fixture | model | labels | logits | loss |
|---|---|---|---|---|
| tiny_seqcls | BertForSequenceClassification, num_labels 3, problem_type single_label_classification | `[4]` {l_seq} | `[4,3]` | CrossEntropyLoss, mean over the batch |
| tiny_regression | BertForSequenceClassification, num_labels 1, problem_type regression | `[4]` {l_reg} | `[4,1]` | MSELoss(logits.squeeze(), labels), mean |
| tiny_tokcls | BertForTokenClassification, num_labels 5 | `[4,12]`, -100 on pads and at (0,0), (1,5), (3,11) | `[4,12,5]` | CrossEntropyLoss, mean over labels != -100 |

expected.safetensors keys: `input_ids`, `token_type_ids`, `attention_mask`, `labels`, `logits`,
`loss`, `hidden_states.0`..`hidden_states.2`, `pooled` (not in tiny_tokcls), `grad.<param>`.

## minilm_sst2/

The real checkpoint `models/all-MiniLM-L6-v2` (`BertModel.from_pretrained`, eval, eager) on the
first 32 sentences of `sst2/test.tsv` (`sentences.txt`, one per line, exactly as tokenized,
including the TSV's trailing space), tokenized with BertTokenizerFast from the checkpoint directory,
padding to the longest, truncation at 128. `expected.safetensors`: `input_ids`, `token_type_ids`,
`attention_mask` `[32,{T}]` (F32), `last_hidden_state` `[32,{T},384]`, `pooler_output` `[32,384]`.

## Export round trip

`python3 tests/gen_bert_fixtures.py roundtrip EXPORT_DIR OUT_JSON [FIXTURE_DIR]` loads a directory
written by pft's exporter with `AutoModelForSequenceClassification` / `AutoModelForTokenClassification`
(from config.json `architectures`) and `AutoTokenizer`, runs the tiny_seqcls batch through it (eval,
eager) and writes OUT_JSON: `transformers`, `torch`, `architecture`, `num_labels`, `id2label`,
`logits`, `tokenizer_ids` (ids of "hello world"), optionally `max_abs_diff_vs_fixture`, and `ok`.
"""


def write_readme(ids, tt, am, minilm_shape):
    vocab = tiny_vocab()
    lines = []
    for r, (a, b) in enumerate(TINY_TEXTS):
        toks = [vocab[i] for i in ids[r].tolist()]
        lines.append("* row %d: %s%s (%d tokens)\n  `%s`\n  token_type_ids `%s`" % (
            r, json.dumps(a), (" + " + json.dumps(b)) if b else "", int(am[r].sum()),
            " ".join(toks), " ".join(str(x) for x in tt[r].tolist())))
    text = README.format(generator=GENERATOR, vocab=TINY_VOCAB_SIZE, noise=NOISE_STD, seed=SEED,
                         batch="\n".join(lines), l_seq=TINY_LABELS_SEQCLS,
                         l_reg=TINY_LABELS_REGRESSION, T=minilm_shape[1], **versions())
    with open(os.path.join(OUT, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)


def verify():
    total = 0
    for name in ("tiny_seqcls", "tiny_regression", "tiny_tokcls", "minilm_sst2"):
        d = os.path.join(OUT, name)
        e = load_file(os.path.join(d, "expected.safetensors"))
        for k, v in e.items():
            assert v.dtype == torch.float32, (name, k, v.dtype)
            assert torch.isfinite(v).all(), (name, k)
        if name.startswith("tiny_"):
            m = load_file(os.path.join(d, "model.safetensors"))
            for k, v in m.items():
                assert e["grad." + k].shape == v.shape, (name, k)
            assert len([k for k in e if k.startswith("grad.")]) == len(m)
            assert e["loss"].dim() == 0
            assert e["hidden_states.0"].shape == (4, SEQ_LEN, 32)
            # reload through HF and compare logits
            cls = (transformers.BertForTokenClassification if name == "tiny_tokcls"
                   else transformers.BertForSequenceClassification)
            mm = cls.from_pretrained(d, attn_implementation="eager").eval()
            with torch.no_grad():
                lg = mm(input_ids=e["input_ids"].long(), token_type_ids=e["token_type_ids"].long(),
                        attention_mask=e["attention_mask"].long()).logits
            diff = (lg - e["logits"]).abs().max().item()
            assert diff == 0.0, (name, diff)
        for fn in sorted(os.listdir(d)):
            total += os.path.getsize(os.path.join(d, fn))
    total += os.path.getsize(os.path.join(OUT, "README.md"))
    return total


def roundtrip(export_dir, out_json, fixture_dir=None):
    from transformers import (AutoConfig, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification, AutoTokenizer)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cfg = AutoConfig.from_pretrained(export_dir)
    archs = getattr(cfg, "architectures", None) or []
    arch = archs[0] if archs else "BertForSequenceClassification"
    auto = AutoModelForTokenClassification if "TokenClassification" in arch else AutoModelForSequenceClassification
    model = auto.from_pretrained(export_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(export_dir)
    e = load_file(os.path.join(OUT, "tiny_seqcls", "expected.safetensors"))
    with torch.no_grad():
        logits = model(input_ids=e["input_ids"].long(), token_type_ids=e["token_type_ids"].long(),
                       attention_mask=e["attention_mask"].long()).logits
    res = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "architecture": type(model).__name__,
        "config_architectures": archs,
        "num_labels": model.config.num_labels,
        "problem_type": model.config.problem_type,
        "id2label": {str(k): v for k, v in model.config.id2label.items()},
        "logits": logits.tolist(),
    }
    try:
        res["tokenizer_ids"] = tok("hello world")["input_ids"]
    except Exception as ex:  # the exported vocab may not allow it
        res["tokenizer_ids"] = None
        res["tokenizer_error"] = repr(ex)
    if fixture_dir is not None:
        ref = load_file(os.path.join(fixture_dir, "expected.safetensors"))["logits"]
        if ref.shape == logits.shape:
            res["max_abs_diff_vs_fixture"] = (logits - ref).abs().max().item()
        else:
            res["max_abs_diff_vs_fixture"] = None
            res["fixture_shape_mismatch"] = [list(ref.shape), list(logits.shape)]
    res["ok"] = True
    with open(out_json, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print(json.dumps({k: v for k, v in res.items() if k != "logits"}))


def main(argv):
    if len(argv) >= 2 and argv[1] == "roundtrip":
        if len(argv) not in (4, 5):
            sys.exit("usage: python3 tests/gen_bert_fixtures.py roundtrip EXPORT_DIR OUT_JSON [FIXTURE_DIR]")
        roundtrip(argv[2], argv[3], argv[4] if len(argv) == 5 else None)
        return
    if len(argv) != 1:
        sys.exit(__doc__)
    os.makedirs(OUT, exist_ok=True)
    ids, tt, am = gen_tiny()
    info, shape = gen_minilm()
    print("minilm loading info:", info, "input shape", shape)
    write_readme(ids, tt, am, shape)
    total = verify()
    print("ok: tests/fixtures/bert total %d bytes" % total)


if __name__ == "__main__":
    main(sys.argv)
