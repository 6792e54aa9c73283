"""Golden fixtures: small PyTorch computations whose inputs, parameters, outputs and
gradients qkv's tests must reproduce. Run from the repository root:

    python3 scripts/make_fixtures.py      # needs torch and safetensors

Writes crates/qkv/tests/fixtures/*.safetensors (a few hundred KB in all). Every file
holds float32 tensors; integer ids are stored as float32 (exact below 2^24). The
scalar settings of each case are in the file's metadata.
"""
import json
import os

import torch
from safetensors.torch import save_file

from reference import GPT, Block, SelfAttention

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "qkv", "tests", "fixtures")


def save(name, tensors, meta):
    os.makedirs(OUT, exist_ok=True)
    tensors = {k: v.detach().clone().contiguous().float() for k, v in tensors.items()}
    save_file(tensors, os.path.join(OUT, name), metadata={k: json.dumps(v) for k, v in meta.items()})
    print(f"{name}: {len(tensors)} tensors")


def module_case(name, module, x, key_mask, meta, prefix):
    """Forward `module(x)`, backprop a fixed random output gradient `dy`; save
    inputs, params (under `prefix`), y, and every gradient as grad.<name>."""
    x = x.clone().requires_grad_()
    y = module(x, key_mask)
    dy = torch.randn_like(y)
    y.backward(dy)
    t = {"x": x, "dy": dy, "y": y, "grad.x": x.grad}
    for n, p in module.named_parameters():
        t[prefix + n] = p
        t["grad." + prefix + n] = p.grad
    if key_mask is not None:
        t["key_mask"] = key_mask.float()
    save(name, t, meta)


def main():
    torch.manual_seed(0)
    b, t, c, h = 2, 5, 12, 3

    # one multi-head attention layer, causal (decoder) …
    attn = SelfAttention(c, h, bias=True, causal=True, std=0.3, proj_std=0.3)
    module_case("attention_causal.safetensors", attn, torch.randn(b, t, c), None,
                {"n_head": h, "causal": True}, "attn.")
    # … and bidirectional with padding (encoder): sequence 1 has 2 padded keys
    attn = SelfAttention(c, h, bias=True, causal=False, std=0.3, proj_std=0.3)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 3:] = False
    module_case("attention_padded.safetensors", attn, torch.randn(b, t, c), mask,
                {"n_head": h, "causal": False}, "attn.")

    # one transformer block, GPT-2 style: pre-LayerNorm, biases, tanh GELU
    block = Block(c, h, 4 * c, act="gelu-tanh", bias=True, causal=True, std=0.3, proj_std=0.3)
    for p in block.parameters():  # non-trivial norm parameters too
        if p.dim() == 1:
            p.data += 0.1 * torch.randn_like(p)
    module_case("block.safetensors", block, torch.randn(b, t, c), None,
                {"n_head": h, "activation": "gelu-tanh", "placement": "pre", "bias": True}, "")

    # a tiny GPT: logits, loss, every gradient, then 3 AdamW steps with clipping
    cfg = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=12)
    gpt = GPT(**cfg, activation="gelu", bias=False)
    idx = torch.randint(0, cfg["vocab_size"], (3, 8))
    targets = torch.randint(0, cfg["vocab_size"], (3, 8))
    tensors = {"ids": idx, "targets": targets}
    for n, p in gpt.named_parameters():
        tensors["param." + n] = p.detach().clone()
    logits, loss = gpt(idx, targets)
    loss.backward()
    tensors["logits"] = logits
    tensors["loss"] = loss.reshape(1)
    for n, p in gpt.named_parameters():
        tensors["grad." + n] = p.grad.clone()
    opt_cfg = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, clip=0.5, steps=3)
    opt = torch.optim.AdamW(gpt.param_groups(opt_cfg["weight_decay"]), lr=opt_cfg["lr"], betas=opt_cfg["betas"],
                            eps=opt_cfg["eps"], foreach=False)
    losses = []
    for _ in range(opt_cfg["steps"]):
        opt.zero_grad()
        _, loss = gpt(idx, targets)
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), opt_cfg["clip"])
        opt.step()
    for n, p in gpt.named_parameters():
        tensors["after." + n] = p.detach().clone()
    tensors["step_losses"] = torch.tensor(losses)
    save("gpt_tiny.safetensors", tensors, {"config": cfg, "optimizer": opt_cfg})




def encoder_fixtures():
    """Encoders, against the real `transformers` modules: one BERT layer with a
    padding mask (output and every gradient), ViT's patch embedding, tiny BERT
    (masked LM) and ViT models end to end, and the statistics of the masked-LM
    data collator."""
    from transformers import BertConfig, BertForMaskedLM, ViTConfig, ViTForImageClassification
    from transformers.models.bert.modeling_bert import BertLayer
    from transformers.models.vit.modeling_vit import ViTPatchEmbeddings

    torch.manual_seed(1)
    b, t, c, h = 2, 5, 12, 3
    cfg = BertConfig(hidden_size=c, num_attention_heads=h, intermediate_size=24, hidden_act="gelu",
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12,
                     attn_implementation="eager")
    layer = BertLayer(cfg).eval()
    for p in layer.parameters():
        p.data = torch.randn_like(p) * 0.3
    x = torch.randn(b, t, c, requires_grad=True)
    keep = torch.ones(b, t, dtype=torch.bool)
    keep[1, 3:] = False
    ext = torch.zeros(b, 1, 1, t)
    ext[~keep[:, None, None, :]] = torch.finfo(torch.float32).min
    y = layer(x, attention_mask=ext)
    y = y[0] if isinstance(y, tuple) else y
    dy = torch.randn_like(y)
    y.backward(dy)
    tensors = {"x": x, "dy": dy, "y": y, "grad.x": x.grad, "key_mask": keep.float()}
    for n, p in layer.named_parameters():
        tensors[n] = p
        tensors["grad." + n] = p.grad
    save("bert_layer.safetensors", tensors, {"n_head": h, "intermediate_size": 24})

    # ViT patch embedding: a stride-P convolution
    pcfg = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=6)
    patch = ViTPatchEmbeddings(pcfg)
    images = torch.randn(2, 3, 8, 8)
    out = patch(images)
    dy = torch.randn_like(out)
    out.backward(dy)
    save("vit_patches.safetensors", {"images": images, "y": out, "dy": dy,
                                     "projection.weight": patch.projection.weight, "projection.bias": patch.projection.bias,
                                     "grad.projection.weight": patch.projection.weight.grad,
                                     "grad.projection.bias": patch.projection.bias.grad},
         {"patch_size": 4, "hidden_size": 6})

    # tiny whole models: logits for fixed inputs
    bcfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      max_position_embeddings=12, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    mlm = BertForMaskedLM(bcfg).eval()
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, 5:] = 0
    with torch.no_grad():
        logits = mlm(input_ids=ids, attention_mask=mask).logits
    t = {"ids": ids, "attention_mask": mask, "logits": logits}
    # the decoder is tied to the word embeddings (and its bias to predictions.bias): saved once
    t.update({"param." + n: p.clone() for n, p in mlm.state_dict().items()
              if "position_ids" not in n and not n.startswith("cls.predictions.decoder")})
    save("bert_mlm_tiny.safetensors", t, {"config": bcfg.to_dict()})

    vcfg = ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=24, num_labels=3,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    vit = ViTForImageClassification(vcfg).eval()
    images = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        logits = vit(pixel_values=images).logits
    t = {"images": images, "logits": logits}
    t.update({"param." + n: p for n, p in vit.state_dict().items()})
    save("vit_tiny.safetensors", t, {"config": vcfg.to_dict()})

    # masking statistics of transformers' MLM collator on a large sample
    from transformers import DataCollatorForLanguageModeling

    class Tok:  # the few tokenizer methods the collator uses
        mask_token = "[MASK]"
        mask_token_id = 3
        pad_token_id = 0
        _pad_token = "[PAD]"

        def __len__(self):
            return 1010

        def get_special_tokens_mask(self, ids, already_has_special_tokens=True):
            return [1 if i < 5 else 0 for i in ids]

        def convert_tokens_to_ids(self, t):
            return 3

    n = 200_000
    ids = torch.randint(10, 1010, (1, n))
    collator = DataCollatorForLanguageModeling(tokenizer=Tok(), mlm_probability=0.15, return_tensors="pt")
    inputs, labels = collator.torch_mask_tokens(ids.clone())
    chosen = labels != -100
    stats = torch.tensor([
        chosen.float().mean(),
        (inputs[chosen] == 3).float().mean(),
        (inputs[chosen] == ids[chosen]).float().mean(),
    ])
    save("mlm_masking_stats.safetensors", {"stats": stats}, {"rows": ["chosen", "masked", "kept"]})


if __name__ == "__main__":
    main()
    encoder_fixtures()
