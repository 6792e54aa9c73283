"""PyTorch twins of qkv's modules, written to match qkv exactly (same parameter
names, same weight layout), so that fixtures and benchmarks compare like with like.

Conventions (as in qkv): tokens are rows; a projection is y = x @ W + b with W stored
[in, out] (GPT-2's Conv1D layout); attention heads are cut from a fused c_attn
projection [C, 3C]; the LM head is the token embedding, tied: logits = x @ wte.T.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    """y = x @ weight + bias, weight [in, out]."""

    def __init__(self, d_in, d_out, bias=True, std=0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_in, d_out) * std)
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None

    def forward(self, x):
        y = x @ self.weight
        return y + self.bias if self.bias is not None else y


class Norm(nn.Module):
    def __init__(self, dim, kind="layernorm", bias=True, eps=1e-5):
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if (bias and kind == "layernorm") else None

    def forward(self, x):
        if self.kind == "layernorm":
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SelfAttention(nn.Module):
    def __init__(self, c, n_head, bias=True, causal=True, std=0.02, proj_std=0.02):
        super().__init__()
        self.c_attn = Linear(c, 3 * c, bias, std)
        self.c_proj = Linear(c, c, bias, proj_std)
        self.n_head, self.causal = n_head, causal

    def forward(self, x, key_mask=None):
        b, t, c = x.shape
        h, d = self.n_head, c // self.n_head
        q, k, v = self.c_attn(x).split(c, dim=-1)
        q, k, v = (z.view(b, t, h, d).transpose(1, 2) for z in (q, k, v))
        # PyTorch's fastest eager attention (a flash kernel on CPU), so benchmarks
        # compare against its best; key_mask: [B, T] booleans, False = padding
        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal and mask is None)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


ACT = {"gelu": F.gelu, "gelu-tanh": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu}


class Mlp(nn.Module):
    def __init__(self, c, f, act="gelu", bias=True, std=0.02, proj_std=0.02):
        super().__init__()
        self.act = act
        self.c_fc = Linear(c, 2 * f if act == "swiglu" else f, bias, std)
        self.c_proj = Linear(f, c, bias, proj_std)

    def forward(self, x):
        h = self.c_fc(x)
        if self.act == "swiglu":
            g, u = h.chunk(2, dim=-1)
            h = F.silu(g) * u
        else:
            h = ACT[self.act](h)
        return self.c_proj(h)


class Block(nn.Module):
    def __init__(self, c, n_head, f, act="gelu", norm="layernorm", bias=True, causal=True, placement="pre",
                 eps=1e-5, std=0.02, proj_std=0.02):
        super().__init__()
        self.ln_1 = Norm(c, norm, bias, eps)
        self.attn = SelfAttention(c, n_head, bias, causal, std, proj_std)
        self.ln_2 = Norm(c, norm, bias, eps)
        self.mlp = Mlp(c, f, act, bias, std, proj_std)
        self.placement = placement

    def forward(self, x, key_mask=None):
        if self.placement == "pre":
            x = x + self.attn(self.ln_1(x), key_mask)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, key_mask))
        return self.ln_2(x + self.mlp(x))


class GPT(nn.Module):
    """qkv's GPT with learned positions and a tied head (the configurations the
    fixtures and benchmarks use)."""

    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, mlp_ratio=4.0, activation="gelu",
                 norm="layernorm", bias=False, eps=1e-5):
        super().__init__()
        std, proj_std = 0.02, 0.02 / math.sqrt(2 * n_layer)
        f = round(n_embd * mlp_ratio)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([Block(n_embd, n_head, f, activation, norm, bias, True, "pre", eps, std, proj_std)
                             for _ in range(n_layer)]),
            ln_f=Norm(n_embd, norm, bias, eps),
        ))
        nn.init.normal_(self.transformer.wte.weight, std=std)
        nn.init.normal_(self.transformer.wpe.weight, std=std)

    def forward(self, idx, targets=None):
        b, t = idx.shape
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(t))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = x @ self.transformer.wte.weight.T
        loss = None if targets is None else F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def param_groups(self, weight_decay):
        """Decay on projection weights only (not norms, biases, embeddings), as qkv."""
        decay = [p for n, p in self.named_parameters() if n.endswith(".weight") and ("c_attn" in n or "c_proj" in n or "c_fc" in n)]
        ids = {id(p) for p in decay}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
