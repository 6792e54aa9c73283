"""Encoder-decoder models made by `transformers`, with reference outputs, for
qkv's seq2seq interop tests.

    .venv/bin/python scripts/make_seq2seq_fixtures.py   # needs torch, transformers, safetensors

A MarianMTModel with awkward sizes (head widths of 6 and 9, an odd vocabulary,
decoder and encoder of different depth, swish MLPs, a non-zero final_logits_bias,
the padding id last as in OPUS-MT) is initialised at random, perturbed so mistakes
show, and saved with `save_pretrained` into crates/qkv/tests/fixtures/hf/marian-odd/
beside `reference.safetensors`: a padded batch of sources, decoder inputs and the
logits transformers computes for them; and `generate` outputs for the same sources
— greedy, beam 4 (length penalty 1, early_stopping False) and beam 3 (length
penalty 0.6, early_stopping True) — with the padding id forbidden and no forced EOS.
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import GenerationConfig, MarianConfig, MarianMTModel

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "qkv", "tests", "fixtures", "hf")
MAX_NEW = 10
NOISE = float(os.environ.get("NOISE", "0.15"))
EOS_BIAS = float(os.environ.get("EOS_BIAS", "3.0"))


def main():
    torch.manual_seed(17)
    vocab, pad, eos = 37, 36, 0
    config = MarianConfig(vocab_size=vocab, decoder_vocab_size=vocab, d_model=18, encoder_layers=2, decoder_layers=1,
                          encoder_attention_heads=3, decoder_attention_heads=2, encoder_ffn_dim=20,
                          decoder_ffn_dim=22, activation_function="swish", max_position_embeddings=40,
                          dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=pad,
                          eos_token_id=eos, decoder_start_token_id=pad, forced_eos_token_id=None,
                          scale_embedding=True, share_encoder_decoder_embeddings=True)
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * NOISE)
        model.final_logits_bias.copy_(torch.randn_like(model.final_logits_bias) * 0.5)
        model.final_logits_bias[0, eos] += EOS_BIAS  # so that some hypotheses end early
    # the references come from the model as saved and loaded back (ties and all)
    d = os.path.join(OUT, "marian-odd")
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    for extra in ["generation_config.json"]:
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)
    model = MarianMTModel.from_pretrained(d).eval()
    src = torch.randint(1, vocab - 1, (5, 7))
    src[:, -1] = eos
    mask = torch.ones_like(src)
    src[1, 4:] = pad  # a shorter sentence: 3 tokens and EOS, then padding
    src[1, 3] = eos
    mask[1, 4:] = 0
    dec_in = torch.randint(1, vocab - 1, (5, 5))
    dec_in[:, 0] = pad
    with torch.no_grad():
        logits = model(input_ids=src, attention_mask=mask, decoder_input_ids=dec_in).logits
        # cross-attention of the first pair (unpadded), as output_attentions gives it: [L, H, Tt, Ts]
        eager = MarianMTModel.from_pretrained(d, attn_implementation="eager").eval()
        cross = eager(input_ids=src[:1], decoder_input_ids=dec_in[:1], output_attentions=True).cross_attentions
        cross = torch.stack([a[0] for a in cross])

    def gen(**kw):
        cfg = GenerationConfig(max_new_tokens=MAX_NEW, do_sample=False, bad_words_ids=[[pad]], pad_token_id=pad,
                               eos_token_id=eos, decoder_start_token_id=pad, forced_eos_token_id=None, **kw)
        with torch.no_grad():
            out = model.generate(input_ids=src, attention_mask=mask, generation_config=cfg)
        # one row per source: drop the start token, pad to a fixed width with -1
        rows = torch.full((src.shape[0], MAX_NEW), -1, dtype=torch.long)
        for i, row in enumerate(out[:, 1:]):
            toks = row.tolist()
            if eos in toks:
                toks = toks[: toks.index(eos) + 1]
            else:
                toks = [t for t in toks if t != pad]
            rows[i, : len(toks)] = torch.tensor(toks)
        return rows

    refs = {
        "src": src, "src_mask": mask, "dec_in": dec_in, "logits": logits, "cross_attentions": cross,
        "greedy": gen(num_beams=1),
        "beam4": gen(num_beams=4, length_penalty=1.0, early_stopping=False),
        "beam3_lp06_early": gen(num_beams=3, length_penalty=0.6, early_stopping=True),
    }
    save_file({k: v.detach().clone().contiguous().float() for k, v in refs.items()},
              os.path.join(d, "reference.safetensors"), metadata={"max_new_tokens": json.dumps(MAX_NEW)})
    for k in ["greedy", "beam4", "beam3_lp06_early"]:
        print(k, refs[k].tolist())
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"marian-odd: {size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
