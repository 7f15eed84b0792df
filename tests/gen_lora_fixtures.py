#!/usr/bin/env python3
"""Writes the LoRA parity fixture (tests/fixtures/lora/) that tests/lua/test_lora.lua checks pft against.

Run by hand from the repository root (needs torch, transformers, peft, safetensors; CPU only):

    python3 tests/gen_lora_fixtures.py                  # (re)writes tests/fixtures/lora/*
    python3 tests/gen_lora_fixtures.py check ADAPTER_DIR OUT_JSON
        # loads ADAPTER_DIR (a pft --adapter export) with peft.PeftModel.from_pretrained on the tiny base
        # model and writes its logits on the fixture batch to OUT_JSON. tests/fixtures/lora/roundtrip.json
        # is this for tests/fixtures/lora/export_adapter/ (what pft.lora.save_adapter writes for tiny_qv);
        # test_lora.lua checks that pft still writes that export and that PEFT's logits there are pft's.

The reference is PEFT's LoRA on transformers' BertForSequenceClassification, float32, eval mode
(dropout off), eager attention. Base model: tests/fixtures/bert/tiny_seqcls (2 layers, hidden 32,
3 labels). Adapter: r = 4, lora_alpha = 8 (scale 2), target_modules query and value, the classifier
in modules_to_save. PEFT starts B at zero, which makes the adapter a no-op and A's gradient zero; the
fixture instead draws A and B at random (seeded) so that both matter.

Written:
  tiny_qv/adapter_config.json, tiny_qv/adapter_model.safetensors   the PEFT adapter, as save_pretrained writes it
  tiny_qv/expected.safetensors   input_ids, attention_mask (of TEXTS below), labels (F32 holding small integers), logits,
                                 loss (shape []), merged_logits (after merge_and_unload), and the gradient
                                 of the loss for every LoRA parameter and the classifier, under pft's name
                                 of the parameter prefixed "grad."
"""
import json
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertForSequenceClassification

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "tests/fixtures/bert/tiny_seqcls")
OUT = os.path.join(ROOT, "tests/fixtures/lora/tiny_qv")


def base_model():
    m = BertForSequenceClassification.from_pretrained(BASE, attn_implementation="eager")
    m.eval()
    return m


TEXTS = ["hello world", "the movie is very good , i loved it", "a funny film"]


def batch():
    """TEXTS tokenized by the base model's tokenizer (pft's tokenizer gives the same ids), padded"""
    enc = AutoTokenizer.from_pretrained(BASE)(TEXTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], torch.tensor([0, 2, 1])


def pft_name(peft_name):
    """base_model.model.bert.encoder...lora_A.default.weight -> bert.encoder...lora_A.weight"""
    n = peft_name.replace("base_model.model.", "", 1).replace(".default", "")
    return n.replace("classifier.modules_to_save.", "classifier.")


def write():
    torch.manual_seed(20261203)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0, task_type="SEQ_CLS")
    pm = get_peft_model(base_model(), cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p) * 0.3)
    pm.eval()
    ids, mask, labels = batch()
    out = pm(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    expected = {"input_ids": ids.float(), "attention_mask": mask.float(), "labels": labels.float(),
                "logits": out.logits.detach().clone(), "loss": out.loss.detach().clone().reshape(())}
    for n, p in pm.named_parameters():
        if p.requires_grad and p.grad is not None:
            expected["grad." + pft_name(n)] = p.grad.detach().clone()
    os.makedirs(OUT, exist_ok=True)
    pm.save_pretrained(OUT)
    merged = pm.merge_and_unload()
    with torch.no_grad():
        expected["merged_logits"] = merged(input_ids=ids, attention_mask=mask).logits.clone()
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(OUT, "expected.safetensors"))
    readme = os.path.join(OUT, "README.md")
    if os.path.exists(readme):
        os.remove(readme)  # PEFT's model card template: nothing a test reads
    print("wrote", OUT)


def check(adapter_dir, out_json):
    pm = PeftModel.from_pretrained(base_model(), adapter_dir)
    pm.eval()
    ids, mask, _ = batch()
    with torch.no_grad():
        logits = pm(input_ids=ids, attention_mask=mask).logits
    with open(out_json, "w") as f:
        json.dump({"logits": logits.tolist()}, f)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        write()
