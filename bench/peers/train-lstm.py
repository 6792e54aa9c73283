"""PyTorch twin of `qkv bench train-lstm`: a character LSTM language model
(nn.Embedding(65, 512), a 2-layer nn.LSTM(512, 512), nn.Linear(512, 65)),
cross-entropy over every position, AdamW (lr 1e-3), eager fp32. One fixed batch
of 32 random sequences of 128 steps; truncated back-propagation through time:
the (h, c) each step returns is detached and starts the next. One warm-up step,
then the median of 10 timed steps: tokens/s."""
import torch
from torch import nn

from common import emit, parse, timed

args = parse(__doc__)
torch.manual_seed(0)
b, t, vocab, width, layers = 32, 128, 65, 512, 2
embed = nn.Embedding(vocab, width)
lstm = nn.LSTM(width, width, num_layers=layers, batch_first=True)
head = nn.Linear(width, vocab)
params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
opt = torch.optim.AdamW(params, lr=1e-3)
ids = torch.randint(0, vocab, (b, t + 1))
inputs, targets = ids[:, :-1], ids[:, 1:]
state = None


def step():
    global state
    opt.zero_grad(set_to_none=True)
    y, (h, c) = lstm(embed(inputs), state)
    loss = nn.functional.cross_entropy(head(y).reshape(-1, vocab), targets.reshape(-1))
    loss.backward()
    opt.step()
    state = (h.detach(), c.detach())


secs = timed(args.reps or 10, step)
emit({"suite": "train-lstm", "case": f"{layers}x{width}-T{t}-B{b}", "impl": "pytorch",
      "threads": torch.get_num_threads(), "tokens_per_s": b * t / secs, "ms_per_step": secs * 1e3})
