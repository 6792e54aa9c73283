"""Attention probabilities from `transformers`, for qkv's attention-map tests.

    python3 scripts/make_attention_fixtures.py   # after make_hf_fixtures.py; needs torch, transformers

For the GPT-2, BERT and ViT fixture directories under crates/qkv/tests/fixtures/hf/,
runs the saved model on the inputs of its `reference.safetensors` with
`output_attentions=True` (the eager attention, which materialises the probabilities)
and writes `attentions.safetensors` beside it: `layer.<i>` = `[B, H, Tq, Tk]`.
"""
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

HF = os.path.join(os.path.dirname(__file__), "..", "crates", "qkv", "tests", "fixtures", "hf")


def main():
    for name in ["gpt2-odd", "gpt2-3heads", "bert-mlm", "vit-classifier"]:
        d = os.path.join(HF, name)
        ref = load_file(os.path.join(d, "reference.safetensors"))
        model = AutoModel.from_pretrained(d, attn_implementation="eager").eval()
        with torch.no_grad():
            if name.startswith("vit"):
                out = model(pixel_values=ref["images"], output_attentions=True)
            elif name.startswith("bert"):
                out = model(input_ids=ref["ids"].long(), attention_mask=ref["attention_mask"].long(),
                            output_attentions=True)
            else:
                out = model(input_ids=ref["ids"].long(), output_attentions=True)
        tensors = {f"layer.{i}": a.contiguous().float() for i, a in enumerate(out.attentions)}
        save_file(tensors, os.path.join(d, "attentions.safetensors"))
        print(name, [tuple(a.shape) for a in out.attentions])


if __name__ == "__main__":
    main()
