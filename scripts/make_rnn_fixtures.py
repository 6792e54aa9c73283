"""Golden fixtures for qkv's recurrent layers: a 2-layer nn.RNN (tanh), nn.LSTM and
nn.GRU, their inputs, outputs and gradients. Run from the repository root:

    .venv/bin/python scripts/make_rnn_fixtures.py   # needs torch and safetensors

Writes crates/qkv/tests/fixtures/rnn/{rnn,lstm,gru}.safetensors. Each holds, as
float32: every parameter under its PyTorch name (weight_ih_l0, weight_hh_l0,
bias_ih_l0, bias_hh_l0, ... _l1), re-drawn as randn * 0.4; the input x [B, T, I]
(batch first); h0 [L, B, H] (and c0 for the LSTM); the outputs y [B, T, H], h_n
(and c_n); a fixed output gradient dy; and, for the loss (y * dy).sum(), the
gradient of every parameter as grad.<name> and of the input as grad.x (h0 and c0
get none). No metadata (the shapes say the sizes), so reruns give identical bytes.
"""
import os

import torch
from torch import nn
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "qkv", "tests", "fixtures", "rnn")
B, T, I, H, L = 3, 6, 5, 7, 2


def case(name, cls, **kw):
    torch.manual_seed(0)
    model = cls(input_size=I, hidden_size=H, num_layers=L, batch_first=True, bias=True, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 0.4)
    x = torch.randn(B, T, I).requires_grad_()
    h0 = torch.randn(L, B, H) * 0.5
    t = {"x": x, "h0": h0}
    if cls is nn.LSTM:
        c0 = torch.randn(L, B, H) * 0.5
        y, (h_n, c_n) = model(x, (h0, c0))
        t.update(c0=c0, c_n=c_n)
    else:
        y, h_n = model(x, h0)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    t.update(y=y, h_n=h_n, dy=dy)
    t["grad.x"] = x.grad
    for n, p in model.named_parameters():
        t[n] = p
        t["grad." + n] = p.grad
    t = {k: v.detach().clone().float().contiguous() for k, v in t.items()}
    os.makedirs(OUT, exist_ok=True)
    save_file(t, os.path.join(OUT, f"{name}.safetensors"))
    print(f"rnn/{name}.safetensors: {len(t)} tensors, y {list(y.shape)}, h_n {list(h_n.shape)}")


case("rnn", nn.RNN, nonlinearity="tanh")
case("lstm", nn.LSTM)
case("gru", nn.GRU)
