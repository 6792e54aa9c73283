"""Golden fixtures for qkv's T5 (crates/qkv/src/models/t5.rs): two tiny
T5ForConditionalGeneration models with odd sizes — T5 1.0's layout (ReLU MLP,
output tied to the embedding and scaled by d_model^-0.5) and T5 1.1's (gated-GELU
MLP, separate lm_head, no scaling) — random weights (noised so that nothing is
symmetric), saved with `save_pretrained` under crates/qkv/tests/fixtures/hf/,
each with reference.safetensors: a padded source batch, decoder inputs, the
logits, the cross-attention of the first pair, and `generate`'s greedy and beam
outputs (the start token dropped; -1 pads).

    .venv/bin/python scripts/make_t5_fixtures.py
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "qkv", "tests", "fixtures", "hf")
MAX_NEW = 12


def make(name, seed, **kw):
    torch.manual_seed(seed)
    vocab, pad, eos = 41, 0, 1
    config = T5Config(vocab_size=vocab, d_model=18, d_kv=5, d_ff=22, num_layers=2, num_decoder_layers=2,  # transformers 5 sizes its cache by num_layers
                      num_heads=3, relative_attention_num_buckets=10, relative_attention_max_distance=20,
                      dropout_rate=0.0, layer_norm_epsilon=1e-6, pad_token_id=pad, eos_token_id=eos,
                      decoder_start_token_id=pad, **kw)
    model = T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        # so that some hypotheses end early
        model.lm_head.weight[eos] += 0.5 * model.lm_head.weight.mean(0)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    p = os.path.join(d, "generation_config.json")
    if os.path.exists(p):
        os.remove(p)
    model = T5ForConditionalGeneration.from_pretrained(d, attn_implementation="eager").eval()
    # sources long enough for the logarithmic buckets (distance >= 10 // 2 // 2 ... up to 20)
    src = torch.randint(2, vocab, (4, 26))
    src[:, -1] = eos
    mask = torch.ones_like(src)
    src[1, 9:] = pad
    src[1, 8] = eos
    mask[1, 9:] = 0
    dec_in = torch.randint(2, vocab, (4, 15))
    dec_in[:, 0] = pad
    with torch.no_grad():
        logits = model(input_ids=src, attention_mask=mask, decoder_input_ids=dec_in).logits
        cross = model(input_ids=src[:1], decoder_input_ids=dec_in[:1], output_attentions=True).cross_attentions
        cross = torch.stack([a[0] for a in cross])

    def gen(**kw):
        cfg = GenerationConfig(max_new_tokens=MAX_NEW, do_sample=False, bad_words_ids=[[pad]], pad_token_id=pad,
                               eos_token_id=eos, decoder_start_token_id=pad, **kw)
        with torch.no_grad():
            out = model.generate(input_ids=src, attention_mask=mask, generation_config=cfg)
        rows = torch.full((src.shape[0], MAX_NEW), -1, dtype=torch.long)
        for i, row in enumerate(out[:, 1:]):
            toks = row.tolist()
            toks = toks[: toks.index(eos) + 1] if eos in toks else [t for t in toks if t != pad]
            rows[i, : len(toks)] = torch.tensor(toks)
        return rows

    refs = {"src": src, "src_mask": mask, "dec_in": dec_in, "logits": logits, "cross_attentions": cross,
            "greedy": gen(num_beams=1), "beam4": gen(num_beams=4, length_penalty=1.0, early_stopping=False)}
    save_file({k: v.detach().clone().contiguous().float() for k, v in refs.items()},
              os.path.join(d, "reference.safetensors"), metadata={"max_new_tokens": json.dumps(MAX_NEW)})
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(name, f"{size / 1024:.0f} KB", "greedy", refs["greedy"].tolist(), "beam4", refs["beam4"].tolist())


def main():
    make("t5-odd", 5, feed_forward_proj="relu")
    make("t5-v1_1-odd", 11, feed_forward_proj="gated-gelu", tie_word_embeddings=False)


if __name__ == "__main__":
    main()
