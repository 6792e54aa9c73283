"""PyTorch twin of `qkv bench train-seq2seq`: the encoder-decoder of
seq2seq_common.py (nn.Transformer, 3+3 layers, C=256, 4 heads, F=1024, ReLU,
post-norm, dropout 0.1, vocabulary 8000), random source and target batches of
32 x 64 tokens, label-smoothed cross-entropy (0.1), clip 1.0, AdamW
(lr 1e-3, betas 0.9/0.95, weight decay 0.1), eager fp32. 2 warm-up steps, then
the median of 20 timed steps: target tokens/s."""
import statistics
import time

import torch

from common import emit, parse
from seq2seq_common import Seq2Seq

args = parse(__doc__)
torch.manual_seed(0)
b, t, vocab = 32, 64, 8000
model = Seq2Seq(vocab).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
loss_fn = torch.nn.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)
g = torch.Generator().manual_seed(1)


def step():
    src, tgt_in, labels = (torch.randint(3, vocab, (b, t), generator=g) for _ in range(3))
    opt.zero_grad(set_to_none=True)
    logits = model(src, tgt_in)
    loss = loss_fn(logits.reshape(-1, vocab), labels.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


for _ in range(2):
    step()
times = []
for _ in range(args.reps or 20):
    s = time.perf_counter()
    step()
    times.append(time.perf_counter() - s)
secs = statistics.median(times)
emit({"suite": "train-seq2seq", "case": f"{b}x{t}", "impl": "pytorch", "threads": torch.get_num_threads(),
      "tokens_per_s": b * t / secs, "ms_per_step": secs * 1e3})
