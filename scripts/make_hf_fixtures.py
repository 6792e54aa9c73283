"""Hugging Face model directories with reference outputs, for qkv's interop tests.

    python3 scripts/make_hf_fixtures.py     # needs torch, transformers, safetensors

Builds small randomly initialised `transformers` models — GPT-2, BERT (masked LM,
sequence classification, bare encoder) and ViT — from configurations chosen to be
awkward (a head count that is not a power of two, widths that are not multiples of 64,
vocabularies that are not multiples of 8, an untied LM head), saves each with
`save_pretrained` into crates/qkv/tests/fixtures/hf/<name>/, and beside it
`reference.safetensors`: fixed inputs, the logits (or hidden states) `transformers`
computes for them, and for GPT-2 a greedy continuation.
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import (BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, GPT2Config,
                          GPT2LMHeadModel, ViTConfig, ViTForImageClassification)

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "qkv", "tests", "fixtures", "hf")


def save(name, model, tensors, meta=None):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    for extra in ["generation_config.json"]:
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)
    tensors = {k: v.detach().clone().contiguous().float() for k, v in tensors.items()}
    save_file(tensors, os.path.join(d, "reference.safetensors"),
              metadata={k: json.dumps(v) for k, v in (meta or {}).items()})
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name}: {size / 1024:.0f} KB")


def gpt2(name, **cfg):
    torch.manual_seed(len(name))
    config = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **cfg)
    model = GPT2LMHeadModel(config).eval()
    # larger weights than the default init, so mistakes show in the logits
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ids = torch.randint(0, config.vocab_size, (2, 9))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        prompt = ids[:1, :4]
        greedy = model.generate(prompt, do_sample=False, max_new_tokens=12, min_new_tokens=12,
                                pad_token_id=0, eos_token_id=None)[0, 4:]
    save(name, model, {"ids": ids, "logits": logits, "prompt": prompt[0], "greedy": greedy})


def main():
    # heads not a power of two, vocabulary not a multiple of 8
    gpt2("gpt2-3heads", vocab_size=101, n_positions=32, n_embd=48, n_layer=2, n_head=3)
    # width not a multiple of 64, exact GELU, an MLP of 2.5 × width
    gpt2("gpt2-odd", vocab_size=67, n_positions=24, n_embd=40, n_layer=3, n_head=5, n_inner=100,
         activation_function="gelu")
    # untied LM head
    gpt2("gpt2-untied", vocab_size=53, n_positions=16, n_embd=36, n_layer=1, n_head=6, tie_word_embeddings=False)

    torch.manual_seed(7)
    bcfg = dict(vocab_size=97, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=72,
                max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ids = torch.randint(5, 97, (2, 11))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    for name, cls, extra in [("bert-mlm", BertForMaskedLM, {}),
                             ("bert-classifier", BertForSequenceClassification,
                              {"num_labels": 3, "id2label": {0: "neg", 1: "neu", 2: "pos"},
                               "label2id": {"neg": 0, "neu": 1, "pos": 2}}),
                             ("bert-bare", BertModel, {})]:
        model = cls(BertConfig(**bcfg, **extra)).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
            out = model(input_ids=ids, attention_mask=mask)
        value = out.last_hidden_state if cls is BertModel else out.logits
        save(name, model, {"ids": ids, "attention_mask": mask, "output": value})

    torch.manual_seed(9)
    vcfg = ViTConfig(image_size=12, patch_size=4, num_channels=3, hidden_size=30, num_hidden_layers=2,
                     num_attention_heads=5, intermediate_size=50, num_labels=4,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    vit = ViTForImageClassification(vcfg).eval()
    images = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        logits = vit(pixel_values=images).logits
    save("vit-classifier", vit, {"images": images, "output": logits})


if __name__ == "__main__":
    main()
