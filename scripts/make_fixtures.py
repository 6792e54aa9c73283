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
    tensors = {k: v.detach().contiguous().float() for k, v in tensors.items()}
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


if __name__ == "__main__":
    main()
