"""Golden fixtures for qkv's Mamba (selective state space) support.

    .venv/bin/python scripts/make_mamba_fixtures.py   # needs torch, transformers, safetensors

1. crates/qkv/tests/fixtures/hf/mamba-odd/: a tiny MambaForCausalLM with odd sizes
   (vocab 37, hidden 12, inner 24, state 5, dt_rank 3, conv kernel 4, 2 layers,
   tied lm_head), random weights, saved with `save_pretrained`, run on CPU in
   float32 (transformers' torch path: no mamba_ssm / causal_conv1d), beside
   reference.safetensors: `input_ids` [2, 9], `logits` [2, 9, 37] and `greedy`
   [1, 13] = generate(input_ids[:1, :5], max_new_tokens=8, do_sample=False), the
   prompt included. Every tensor is float32, the ids too (as in the other HF
   fixtures). Metadata: `greedy_cache_agrees` ("true"/"false": greedy with and
   without the cache), `max_new_tokens`, `prompt_len`.
   The logits are also checked against `reference_forward` below (a plain
   re-implementation from the state dict), so the layout documented there is
   the one the checkpoint has.
2. crates/qkv/tests/fixtures/mamba_scan.safetensors: the selective scan alone
   (`selective_scan` below), inputs u, delta, A, Bm, Cm, Dv, z, the output `out`,
   a random cotangent `dout` and `grad.<name>` = d(out * dout).sum() / d<name>,
   computed in float64 and stored as float32.
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, MambaConfig, MambaForCausalLM
from transformers.models.mamba.modeling_mamba import mamba_selective_scan

FIX = os.path.join(os.path.dirname(__file__), "..", "crates", "qkv", "tests", "fixtures")
MAX_NEW = 8
PROMPT = 5


def selective_scan(u, delta, A, Bm, Cm, Dv, z):
    """Sequential selective scan. u, delta, z: [B, L, D]; A: [D, N]; Bm, Cm: [B, L, N]; Dv: [D].
    h_t = exp(delta_t A) * h_{t-1} + (delta_t u_t) B_t;  y_t = h_t . C_t + Dv u_t;  out = y * silu(z)."""
    b, length, d = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + Dv * u[:, t])
    return torch.stack(ys, 1) * F.silu(z)


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def reference_forward(sd, config, ids):
    """The whole model from the checkpoint's tensors (float64), without caches."""
    sd = {k: v.double() for k, v in sd.items()}
    eps, k, r, n = config.layer_norm_epsilon, config.conv_kernel, config.time_step_rank, config.state_size
    x = sd["backbone.embeddings.weight"][ids]  # [B, L, H]
    for i in range(config.num_hidden_layers):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        h = rms_norm(x, sd[p + "norm.weight"], eps)
        xz = h @ sd[m + "in_proj.weight"].T  # [B, L, 2I]; no bias (use_bias=False)
        xs, z = xz.chunk(2, dim=-1)  # first half: conv/SSM input, second half: gate
        # causal depthwise conv: out[t] = bias + sum_j w[:, 0, j] * x[t - (k-1) + j]
        padded = F.pad(xs.transpose(1, 2), (k - 1, 0))
        conv = F.conv1d(padded, sd[m + "conv1d.weight"], sd[m + "conv1d.bias"], groups=xs.shape[-1])
        u = F.silu(conv).transpose(1, 2)  # [B, L, I]
        dbc = u @ sd[m + "x_proj.weight"].T  # [B, L, r + 2N]
        dt, Bm, Cm = dbc.split([r, n, n], dim=-1)
        delta = F.softplus(dt @ sd[m + "dt_proj.weight"].T + sd[m + "dt_proj.bias"])
        A = -torch.exp(sd[m + "A_log"])
        y = selective_scan(u, delta, A, Bm, Cm, sd[m + "D"], z)
        x = x + y @ sd[m + "out_proj.weight"].T
    x = rms_norm(x, sd["backbone.norm_f.weight"], eps)
    return x @ sd.get("lm_head.weight", sd["backbone.embeddings.weight"]).T


def make_model():
    torch.manual_seed(0)
    vocab, pad, bos, eos = 37, 0, 1, 2
    config = MambaConfig(vocab_size=vocab, hidden_size=12, state_size=5, num_hidden_layers=2, conv_kernel=4, expand=2,
                         time_step_rank=3, use_bias=False, use_conv_bias=True, residual_in_fp32=True,
                         tie_word_embeddings=True, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos,
                         layer_norm_epsilon=1e-5)
    model = MambaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                p.add_(torch.randn_like(p) * 0.1)
            elif name.endswith(".D"):
                p.copy_(1 + torch.randn_like(p) * 0.1)
            elif name.endswith("dt_proj.bias"):
                # as Mamba: dt log-uniform in [1e-3, 1e-1], bias = softplus^-1(dt) = log(expm1(dt))
                dt = torch.exp(torch.rand_like(p) * (math.log(1e-1) - math.log(1e-3)) + math.log(1e-3))
                p.copy_(torch.log(torch.expm1(dt)))
            elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.copy_(1 + torch.randn_like(p) * 0.3)  # RMSNorm gains around 1, not around 0
            else:
                p.copy_(torch.randn_like(p) * 0.3)
    d = os.path.join(FIX, "hf", "mamba-odd")
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    p = os.path.join(d, "generation_config.json")
    if os.path.exists(p):
        os.remove(p)
    # the references come from the model as saved and loaded back
    model = MambaForCausalLM.from_pretrained(d).eval()
    sd = load_file(os.path.join(d, "model.safetensors"))

    ids = torch.randint(3, vocab, (2, 9))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    ref = reference_forward(sd, config, ids)
    err = (ref - logits.double()).abs().max().item()
    assert err < 1e-4, f"reference_forward disagrees with transformers: {err}"

    def gen(use_cache):
        cfg = GenerationConfig(max_new_tokens=MAX_NEW, do_sample=False, num_beams=1, pad_token_id=pad,
                               bos_token_id=bos, eos_token_id=eos, use_cache=use_cache,
                               output_scores=True, return_dict_in_generate=True)
        with torch.no_grad():
            out = model.generate(input_ids=ids[:1, :PROMPT], attention_mask=torch.ones_like(ids[:1, :PROMPT]),
                                 generation_config=cfg)
        return out.sequences, torch.stack(out.scores, 1)

    greedy, scores = gen(True)
    greedy_nc, scores_nc = gen(False)
    agree = torch.equal(greedy, greedy_nc)
    # the cached steps against a full forward over the generated row
    with torch.no_grad():
        full = model(input_ids=greedy).logits[:, PROMPT - 1 : -1]
    top2 = full[0].topk(2, dim=-1).values
    print("mamba-odd: logits err vs reference_forward", f"{err:.2e}",
          "| cached scores vs full forward", f"{(scores - full).abs().max().item():.2e}",
          "| cached vs uncached scores", f"{(scores - scores_nc).abs().max().item():.2e}",
          "| min greedy margin", f"{(top2[:, 0] - top2[:, 1]).min().item():.3f}")
    print("greedy (cache)   ", greedy.tolist())
    print("greedy (no cache)", greedy_nc.tolist(), "agree:", agree)
    refs = {"input_ids": ids, "logits": logits, "greedy": greedy}
    save_file({k: v.detach().clone().contiguous().float() for k, v in refs.items()},
              os.path.join(d, "reference.safetensors"),
              metadata={"max_new_tokens": json.dumps(MAX_NEW), "prompt_len": json.dumps(PROMPT),
                        "greedy_cache_agrees": json.dumps(agree)})
    print("keys:", {k: list(v.shape) for k, v in sd.items()})
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"mamba-odd: {size / 1024:.0f} KB", sorted(os.listdir(d)))


def make_scan():
    torch.manual_seed(0)
    b, length, d, n = 2, 7, 6, 4
    inputs = {
        "u": torch.randn(b, length, d),
        "delta": F.softplus(torch.randn(b, length, d)),
        "A": -torch.exp(torch.randn(d, n)),
        "Bm": torch.randn(b, length, n),
        "Cm": torch.randn(b, length, n),
        "Dv": torch.randn(d),
        "z": torch.randn(b, length, d),
    }
    x = {k: v.double().requires_grad_() for k, v in inputs.items()}
    out = selective_scan(**x)
    dout = torch.randn(out.shape)
    (out * dout.double()).sum().backward()
    # the same computation through transformers' torch path ([B, D, L] layout)
    t = {k: v.double() for k, v in inputs.items()}
    hf = mamba_selective_scan(t["u"].transpose(1, 2), t["delta"].transpose(1, 2), t["A"], t["Bm"].transpose(1, 2),
                              t["Cm"].transpose(1, 2), D=t["Dv"], z=t["z"].transpose(1, 2)).transpose(1, 2)
    err = (hf - out.detach()).abs().max().item()
    assert err < 1e-10, f"selective_scan disagrees with transformers: {err}"
    tensors = dict(inputs, out=out.detach(), dout=dout)
    tensors.update({f"grad.{k}": v.grad for k, v in x.items()})
    path = os.path.join(FIX, "mamba_scan.safetensors")
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, path)
    print("mamba_scan:", {k: list(v.shape) for k, v in tensors.items()}, f"(vs transformers {err:.1e})")


def main():
    make_model()
    make_scan()


if __name__ == "__main__":
    main()
