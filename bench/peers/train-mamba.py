"""PyTorch twin of `qkv bench train-mamba`: a Mamba language model of 2
blocks (C=256, E=512, N=16, K=4, dt rank 16, vocab 65) written in plain
PyTorch as transformers' CPU path computes it — the selective scan a loop
over time, as PyTorch has no fused scan on a CPU — trained with AdamW on one
fixed batch of 16 random sequences of 128 tokens. One warm-up step, then the
median of the timed steps: tokens/s."""
import torch
from torch import nn
from torch.nn import functional as F

from common import emit, parse, timed

args = parse(__doc__)
torch.manual_seed(0)
b, t, vocab, c, e, n, k, r, layers = 16, 128, 65, 256, 512, 16, 4, 16, 2


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)


class Mixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.in_proj = nn.Linear(c, 2 * e, bias=False)
        self.conv1d = nn.Conv1d(e, e, k, groups=e, padding=k - 1)
        self.x_proj = nn.Linear(e, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, e)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e, 1))
        self.D = nn.Parameter(torch.ones(e))
        self.out_proj = nn.Linear(e, c, bias=False)

    def forward(self, x):
        L = x.shape[1]
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(self.conv1d(xs.transpose(1, 2))[..., :L]).transpose(1, 2)
        dt, bm, cm = torch.split(self.x_proj(u), [r, n, n], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        a = -torch.exp(self.A_log)
        decay = torch.exp(delta[..., None] * a)
        inp = (delta * u)[..., None] * bm[:, :, None, :]
        h = torch.zeros(x.shape[0], e, n)
        ys = []
        for i in range(L):
            h = decay[:, i] * h + inp[:, i]
            ys.append((h * cm[:, i, None, :]).sum(-1))
        y = torch.stack(ys, dim=1) + u * self.D
        return self.out_proj(y * F.silu(z))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm, self.mixer = RMSNorm(c), Mixer()

    def forward(self, x):
        return x + self.mixer(self.norm(x))


embed = nn.Embedding(vocab, c)
blocks = nn.ModuleList([Block() for _ in range(layers)])
norm_f = RMSNorm(c)
params = [*embed.parameters(), *blocks.parameters(), *norm_f.parameters()]
opt = torch.optim.AdamW(params, lr=1e-3)
ids = torch.randint(0, vocab, (b, t + 1))
inputs, targets = ids[:, :-1], ids[:, 1:]


def step():
    opt.zero_grad(set_to_none=True)
    h = embed(inputs)
    for blk in blocks:
        h = blk(h)
    logits = norm_f(h) @ embed.weight.T
    F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1)).backward()
    opt.step()


secs = timed(args.reps or 5, step)
emit({"suite": "train-mamba", "case": f"{layers}x{c}-N{n}-T{t}-B{b}", "impl": "pytorch",
      "threads": torch.get_num_threads(), "tokens_per_s": b * t / secs, "ms_per_step": secs * 1e3})
