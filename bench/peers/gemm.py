"""PyTorch twin of `qkv bench gemm`: f32 C = A·B at M = N = K ∈ {1024, 2048}."""
import torch

from common import emit, parse, timed

args = parse(__doc__)
for n in [int(args.case)] if args.case else [1024, 2048]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    c = torch.empty(n, n)
    reps = args.reps or (20 if n <= 1024 else 6)
    secs = timed(reps, lambda: torch.matmul(a, b, out=c))
    emit({"suite": "gemm", "case": str(n), "impl": "pytorch", "threads": torch.get_num_threads(),
          "gflops": 2 * n**3 / secs / 1e9, "ms": secs * 1e3})
