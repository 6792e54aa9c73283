"""The PyTorch twin of `qkv train --model lstm` (also `--model gru` / `rnn`): the same
recurrent character language model, the same truncated back-propagation through time
and the same optimisation, so the two learning curves can be compared.

    qkv train --model lstm --out-dir runs/lstm-check --max-steps 700 --eval-interval 100
    python3 scripts/lstm_twin.py runs/lstm-check            # reads runs/lstm-check/run.json

Everything comes from the run's run.json: the corpus ("data"; null means the bundled
data/shakespeare.txt), characters as tokens (sorted distinct characters), the last 10 %
for validation (n_val = round(n * 0.1)); the model (crates/qkv/src/models/recurrent.rs):
an embedding (N(0, 1)), `n_layer` LSTM / GRU / tanh-RNN layers (PyTorch's default init,
uniform +-1/sqrt(hidden)), a linear head (weight N(0, 1/sqrt(hidden)), zero bias), dropout
on the embedding and on the last layer's output; the task (crates/qkv/src/train/
recurrent_lm.rs): B = batch_size streams of L = len(train) // B tokens, each step reads
the next window of block_size tokens of every stream from the (detached) state the last
window ended in, and after (L - 1) // T windows the streams restart from a zero state;
AdamW (betas, eps, weight decay on weight_ih_l*, weight_hh_l* and head.weight only),
linear warm-up then cosine decay (LrSchedule::at), global-norm clipping, grad_accum
micro-batches. Validation: the GPT's windows (the first eval_batches batches of
consecutive, non-overlapping windows of the validation split), each from a zero state,
at every eval_interval steps and at the end.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("run_dir", help="a qkv run directory (its run.json gives every setting)")
p.add_argument("--steps", type=int, default=None, help="train this many steps instead of the run's max_steps "
               "(the learning-rate schedule ends there too)")
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()
torch.set_num_threads(args.threads)

spec = json.load(open(os.path.join(args.run_dir, "run.json"), encoding="utf-8"))
if spec.get("task") != "recurrent-lm":
    sys.exit(f"{args.run_dir}: task {spec.get('task')!r}, not a recurrent-lm run (qkv train --model lstm)")
if spec.get("tokenizer") is not None:
    sys.exit(f"{args.run_dir}: tokenizer {spec['tokenizer']!r}: only the character tokenizer is reproduced")
cfg, tc = spec["model"], spec["train"]
if args.steps is not None:
    tc["max_steps"] = args.steps
if tc.get("epochs") is not None:
    sys.exit("epochs are not supported: give max_steps")
torch.manual_seed(tc["seed"])

# -- data: qkv's character tokenizer and split --------------------------------------------
data = spec.get("data")
if data is None:
    data = os.path.join(ROOT, "data", "shakespeare.txt")
elif not os.path.isabs(data) and not os.path.exists(data):
    data = os.path.join(ROOT, data)
text = open(data, encoding="utf-8").read()
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
n_val = round(len(ids) * 0.1)
train, val = ids[: len(ids) - n_val], ids[len(ids) - n_val:]
V, T, B = len(chars), cfg["block_size"], tc["batch_size"]
if V != cfg["vocab_size"]:
    sys.exit(f"the corpus has {V} characters, run.json's model {cfg['vocab_size']}: not the run's corpus")


# -- the model ------------------------------------------------------------------------------
class RecurrentLm(nn.Module):
    CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

    def __init__(self, kind, vocab, n_embd, hidden, n_layer, dropout):
        super().__init__()
        self.kind, self.hidden, self.n_layer = kind, hidden, n_layer
        self.embedding = nn.Embedding(vocab, n_embd)  # N(0, 1), as qkv
        extra = {"nonlinearity": "tanh"} if kind == "rnn" else {}
        self.rnn = self.CELLS[kind](n_embd, hidden, n_layer, batch_first=True, **extra)  # uniform +-1/sqrt(H)
        self.head = nn.Linear(hidden, vocab)
        nn.init.normal_(self.head.weight, 0.0, 1.0 / math.sqrt(hidden))
        nn.init.zeros_(self.head.bias)
        self.drop = nn.Dropout(dropout)

    def zero_state(self, b):
        z = lambda: torch.zeros(self.n_layer, b, self.hidden)  # noqa: E731
        return (z(), z()) if self.kind == "lstm" else z()

    def forward(self, x, state):
        h, state = self.rnn(self.drop(self.embedding(x)), state)
        return self.head(self.drop(h)), state

    def param_groups(self, weight_decay):
        decay = [p for n, p in self.named_parameters() if n.startswith(("rnn.weight_ih_l", "rnn.weight_hh_l"))
                 or n == "head.weight"]
        ids_ = {id(p) for p in decay}
        rest = [p for p in self.parameters() if id(p) not in ids_]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


model = RecurrentLm(cfg["kind"], V, cfg["n_embd"], cfg["hidden"], cfg["n_layer"], cfg["dropout"])
opt = torch.optim.AdamW(model.param_groups(tc["weight_decay"]), lr=tc["lr"],
                        betas=(tc["beta1"], tc["beta2"]), eps=tc["eps"])


def detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def lr_at(it):
    """LrSchedule::at (crates/qkv/src/train/optimizer.rs), `it` 0-based."""
    lr, min_lr, warmup, max_steps = tc["lr"], tc["min_lr"], tc["warmup_steps"], tc["max_steps"]
    if tc.get("decay", "cosine") == "inverse-sqrt" and it >= warmup:
        return max(min_lr, lr * math.sqrt((warmup + 1) / (it + 1)))
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it >= max_steps:
        return min_lr
    progress = (it - warmup) / max(1, max_steps - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)


@torch.no_grad()
def evaluate():
    """`evaluate` in recurrent_lm.rs: the windows of eval_batches(val, B, T, eval_batches),
    each from a zero state; mean loss per token, and bits per character."""
    model.eval()
    windows = (len(val) - 1) // T
    total, count, w = 0.0, 0, 0
    for _ in range(tc["eval_batches"]):
        if w >= windows:
            break
        n = min(B, windows - w)
        at = (w + torch.arange(n)[:, None]) * T + torch.arange(T)
        logits, _ = model(val[at], model.zero_state(n))
        loss = F.cross_entropy(logits.reshape(-1, V), val[at + 1].reshape(-1))
        total += loss.item() * n * T
        count += n * T
        w += n
    model.train()
    loss, chars = total / count, count  # one token per character: the scored text is `count` chars
    return loss, loss * count / chars / math.log(2)  # bits_per_char in data/text.rs


# -- truncated BPTT over B streams (training_loss in recurrent_lm.rs) ----------------------
L = len(train) // B
windows = (L - 1) // T
if windows < 1:
    sys.exit(f"{len(train)} training tokens cannot make {B} streams of at least {T + 1}")
window, state = 0, model.zero_state(B)
offsets = (torch.arange(B) * L)[:, None] + torch.arange(T)

max_steps, micro = tc["max_steps"], tc.get("grad_accum", 1)
interval = tc.get("eval_interval") or 200
start = time.time()
val_loss = bpc = None
for it in range(max_steps):
    for g in opt.param_groups:
        g["lr"] = lr_at(it)
    opt.zero_grad(set_to_none=True)
    train_loss = 0.0
    for _ in range(micro):
        if window >= windows:  # the streams are done: start again, from a zero state
            window, state = 0, model.zero_state(B)
        at = offsets + window * T
        logits, next_state = model(train[at], state)
        loss = F.cross_entropy(logits.reshape(-1, V), train[at + 1].reshape(-1))
        (loss / micro if micro > 1 else loss).backward()
        train_loss += loss.item() / micro
        state, window = detach(next_state), window + 1
    if tc["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc["grad_clip"])
    opt.step()
    step = it + 1
    if step % interval == 0 or step == max_steps:
        val_loss, bpc = evaluate()
        print(f"step {step} val_loss {val_loss:.4f} bits_per_char {bpc:.4f}", flush=True)
        print(f"step {step}: train {train_loss:.4f}", file=sys.stderr)
print(json.dumps({"val_loss": val_loss, "bits_per_char": bpc, "steps": max_steps,
                  "seconds": round(time.time() - start, 2)}))
