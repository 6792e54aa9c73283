"""The PyTorch twin of `qkv train`: the same GPT (scripts/reference.py), the same
data pipeline and the same optimisation, so the two learning curves can be compared.

    python3 scripts/train_twin.py --max-steps 500          # then, for qkv:
    qkv train --max-steps 500 --eval-interval 500 --out-dir runs/twin-check

Matches qkv's defaults: the bundled corpus (data/shakespeare.txt), characters as
tokens (sorted distinct characters), the last 10 % for validation; 4 layers, 4 heads,
width 256, context 128, exact GELU, pre-LayerNorm, learned positions, tied head, no
biases; batches of 16 random windows; AdamW (betas 0.9/0.95, eps 1e-8, weight decay
0.1 on projection weights only), linear warm-up for 100 steps then cosine decay from
1e-3 to 1e-4, gradient clipping at 1.0. Validation: the mean loss over the first 20
batches of consecutive, non-overlapping windows of the validation split (as qkv).
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from reference import GPT  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "data", "shakespeare.txt"))
p.add_argument("--max-steps", type=int, default=500)
p.add_argument("--warmup-steps", type=int, default=100)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--min-lr", type=float, default=1e-4)
p.add_argument("--batch-size", type=int, default=16)
p.add_argument("--block-size", type=int, default=128)
p.add_argument("--n-layer", type=int, default=4)
p.add_argument("--n-head", type=int, default=4)
p.add_argument("--n-embd", type=int, default=256)
p.add_argument("--eval-batches", type=int, default=20)
p.add_argument("--seed", type=int, default=1337)
p.add_argument("--threads", type=int, default=os.cpu_count())
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)

text = open(args.data, encoding="utf-8").read()
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
n_val = round(len(ids) * 0.1)
train, val = ids[: len(ids) - n_val], ids[len(ids) - n_val:]
T, B = args.block_size, args.batch_size

model = GPT(len(chars), T, args.n_layer, args.n_head, args.n_embd, activation="gelu", bias=False)
opt = torch.optim.AdamW(model.param_groups(0.1), lr=args.lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(it):
    if it < args.warmup_steps:
        return args.lr * (it + 1) / (args.warmup_steps + 1)
    if it >= args.max_steps:
        return args.min_lr
    progress = (it - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps)
    return args.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (args.lr - args.min_lr)


@torch.no_grad()
def evaluate():
    windows = (len(val) - 1) // T
    total, count, w = 0.0, 0, 0
    for _ in range(args.eval_batches):
        if w >= windows:
            break
        n = min(B, windows - w)
        x = torch.stack([val[(w + i) * T:(w + i) * T + T] for i in range(n)])
        y = torch.stack([val[(w + i) * T + 1:(w + i) * T + T + 1] for i in range(n)])
        logits, _ = model(x)
        total += F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), reduction="sum").item()
        count += n * T
        w += n
    return total / count


start = time.time()
for it in range(args.max_steps):
    for g in opt.param_groups:
        g["lr"] = lr_at(it)
    starts = torch.randint(0, len(train) - T, (B,))
    x = torch.stack([train[s:s + T] for s in starts])
    y = torch.stack([train[s + 1:s + T + 1] for s in starts])
    _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if (it + 1) % 100 == 0:
        print(f"step {it + 1}: train {loss.item():.4f}", file=sys.stderr)
val_loss = evaluate()
print(json.dumps({"impl": "pytorch", "steps": args.max_steps, "val_loss": val_loss,
                  "seconds": time.time() - start, "tokens_per_s": args.max_steps * B * T / (time.time() - start)}))
