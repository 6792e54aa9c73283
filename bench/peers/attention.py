"""PyTorch twin of `qkv bench attention`: one causal scaled_dot_product_attention call,
B=1 H=8 D=64, forward and forward+backward, each T and mode in its own process
(peak extra memory = peak RSS minus RSS once Q, K, V and dO exist)."""
import json
import subprocess
import sys

import torch

from common import emit, parse, reset_peak, rss, timed

SIZES = [512, 1024, 2048, 4096, 8192, 16384]
args = parse(__doc__)

if args.case is None or args.mode is None:
    for t in [int(args.case)] if args.case else SIZES:
        line = {"suite": "attention", "case": str(t), "impl": "pytorch"}
        for mode in ["fwd", "fwd-bwd"]:
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--case", str(t), "--mode", mode]
            if args.reps:
                cmd += ["--reps", str(args.reps)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            line.update(json.loads(out))
        emit(line)
    sys.exit(0)

t, b, h, d = int(args.case), 1, 8, 64
g = torch.Generator().manual_seed(0)
q, k, v, do = (torch.randn(b, h, t, d, generator=g) for _ in range(4))
sdpa = torch.nn.functional.scaled_dot_product_attention
reps = args.reps or (10 if t <= 2048 else 5 if t <= 4096 else 2)
with torch.no_grad():
    sdpa(q, k, v, is_causal=True)
# leaf copies that take gradients, made before the baseline like Q, K, V themselves
qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))
reset_peak()
base, _ = rss()
if args.mode == "fwd":
    def step():
        with torch.no_grad():
            sdpa(q, k, v, is_causal=True)
else:
    def step():
        for x in (qq, kk, vv):
            x.grad = None
        sdpa(qq, kk, vv, is_causal=True).backward(do)
secs = timed(reps, step)
_, peak = rss()
flops_fwd = 2 * 2 * b * h * t * t * d / 2
key = "fwd" if args.mode == "fwd" else "fwd_bwd"
emit({"suite": "attention", "case": str(t), "impl": "pytorch", "threads": torch.get_num_threads(),
      f"ms_{key}": secs * 1e3, f"peak_mib_{key}": (peak - base) / 2**20,
      f"gflops_{key}": (flops_fwd if args.mode == "fwd" else 3.5 * flops_fwd) / secs / 1e9})
