"""The PyTorch twin of `qkv bench train-small` / `train-mid`: the same GPT
(scripts/reference.py: exact GELU, pre-LayerNorm, learned positions, tied head,
no biases, no dropout), random tokens, forward + backward + clip 1.0 + AdamW
(lr 1e-3, betas 0.9/0.95, weight decay 0.1 on projection weights), eager fp32.
3 warm-up steps, then the median of 20 timed steps."""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from reference import GPT  # noqa: E402

from common import emit, parse  # noqa: E402


def gemm_roofline():
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.matmul(a, b, out=c)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        torch.matmul(a, b, out=c)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def run(suite, n_layer, n_head, n_embd, t, b):
    args = parse(__doc__)
    torch.manual_seed(0)
    vocab = 65
    model = GPT(vocab, t, n_layer, n_head, n_embd, activation="gelu", bias=False)
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(1)

    def step():
        x = torch.randint(0, vocab, (b, t), generator=g)
        y = torch.randint(0, vocab, (b, t), generator=g)
        opt.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(args.reps or 20):
        s = time.perf_counter()
        step()
        times.append(time.perf_counter() - s)
    secs = statistics.median(times)
    tokens_per_s = b * t / secs
    n = sum(p.numel() for p in model.parameters()) - t * n_embd
    flops_per_token = 6 * n + 12 * n_layer * n_embd * t
    model_gflops = tokens_per_s * flops_per_token / 1e9
    roof = gemm_roofline()
    emit({"suite": suite, "case": f"{b}x{t}", "impl": "pytorch", "threads": torch.get_num_threads(),
          "tokens_per_s": tokens_per_s, "ms_per_step": secs * 1e3, "model_gflops": model_gflops,
          "gemm_gflops": roof, "mfu_vs_gemm": model_gflops / roof})
