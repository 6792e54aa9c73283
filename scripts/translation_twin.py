"""The PyTorch twin of a `qkv train --model seq2seq` run: the same pairs, split,
tokenizer, batches (in the same order), model shape, initialisation scheme, loss,
optimizer, schedule and number of steps — in nn.Transformer (eager, fp32) — then
greedy translations of the held-out pairs scored by sacreBLEU, to compare with
`qkv eval --model RUN --data DATA --beam 1`.

    .venv/bin/python scripts/translation_twin.py runs/seq2seq [--threads 2] [--device cuda] [--inits 3]

On a GPU the twin runs in fp32 with TF32 off; --inits N trains N twins from
different initialisations (torch seeds seed, seed+1, ...) to show the spread
that comes from initialisation and dropout alone.

What cannot be the same: the random numbers of initialisation and dropout, and
where nn.Transformer applies dropout (also on attention weights and inside the MLP;
qkv on embeddings and each sublayer's output). The held-out split, the batches and
their order are reproduced exactly with qkv's own generator (xoshiro256++ seeded by
SplitMix64, as crates/qkv-tensor/src/rng.rs) and the rules of
crates/qkv/src/data/parallel.rs and data/shuffle.rs.
"""
import argparse
import csv
import gzip
import io
import json
import math
import os
import sys
import time

import sacrebleu
import torch
from tokenizers import Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench", "peers"))
from seq2seq_common import Seq2Seq  # noqa: E402

M64 = (1 << 64) - 1


def splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class Rng:
    """qkv's generator: xoshiro256++ seeded through SplitMix64."""

    def __init__(self, seed):
        z, self.s = seed & M64, []
        for _ in range(4):
            z = (z + 0x9E3779B97F4A7C15) & M64
            self.s.append(splitmix64(z))

    def next_u64(self):
        s = self.s
        result = (rotl((s[0] + s[3]) & M64, 23) + s[0]) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def below(self, n):
        zone = M64 - (M64 % n)
        while True:
            x = self.next_u64()
            if x < zone:
                return x % n


def shuffle(v, rng):
    for i in range(len(v) - 1, 0, -1):
        j = rng.below(i + 1)
        v[i], v[j] = v[j], v[i]


def read_pairs(path, cols):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8")
    tsv = path.endswith(".tsv") or path.endswith(".tsv.gz")
    reader = csv.reader(io.StringIO(text), delimiter="\t" if tsv else ",",
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    header = [h.strip() for h in next(reader)]
    si, ti = header.index(cols["source"]), header.index(cols["target"])
    gi = header.index(cols["group"]) if cols.get("group") else None
    src, tgt, grp = [], [], []
    for row in reader:
        s, t = row[si].strip(), row[ti].strip()
        if not s or not t:
            continue
        src.append(s)
        tgt.append(t)
        grp.append(row[gi].strip() if gi is not None else "")
    return src, tgt, grp


def held_out(grp, seed, fraction):
    """crates/qkv/src/data/parallel.rs, PairSplit::held_out"""
    n = len(grp)
    want = max(1, round(n * fraction))
    rng = Rng(seed ^ 0x7A215E71)
    if any(grp):
        groups = []
        for g in grp:
            if g not in groups:
                groups.append(g)
        shuffle(groups, rng)
        chosen, count = [], 0
        for g in groups[:-1]:
            if count >= want:
                break
            chosen.append(g)
            count += grp.count(g)
        return [g in chosen for g in grp]
    order = list(range(n))
    shuffle(order, rng)
    held = [False] * n
    for i in order[: min(want, n - 1)]:
        held[i] = True
    return held


def token_batches(lengths, max_tokens):
    """crates/qkv/src/data/parallel.rs, token_batches"""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i][1], lengths[i][0], i))
    batches, current, longest = [], [], 0
    for i in order:
        ln = max(lengths[i])
        if current and (len(current) + 1) * max(longest, ln) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        longest = max(longest, ln)
        current.append(i)
    if current:
        batches.append(current)
    return batches


def epoch_order(n, seed, epoch):
    """crates/qkv/src/data/shuffle.rs, epoch_order"""
    rng = Rng(seed ^ splitmix64((epoch + 0x0C1A55E5) & M64))
    order = list(range(n))
    shuffle(order, rng)
    return order


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu")
    p.add_argument("--inits", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    spec = json.load(open(os.path.join(args.run, "run.json")))
    train, cfg = spec["train"], spec["model"]
    seed = train["seed"]
    data = spec.get("data") or os.path.join(os.path.dirname(__file__), "..", "data", "bible-en-es.tsv.gz")
    group = spec.get("group_column") or (None if spec.get("data") else "book")
    src, tgt, grp = read_pairs(data, {"source": spec["source_column"], "target": spec["target_column"], "group": group})
    held = held_out(grp, seed, spec["test_fraction"])
    tok = Tokenizer.from_file(os.path.join(args.run, "tokenizer.json"))
    pad, eos, max_len = cfg["pad_token_id"], cfg["eos_token_id"], spec["max_len"]

    def enc(text):
        ids = tok.encode(text, add_special_tokens=False).ids[: max_len - 1]
        return ids + [eos]

    train_pairs = [(enc(s), enc(t)) for s, t, h in zip(src, tgt, held) if not h]
    test = [(s, t) for s, t, h in zip(src, tgt, held) if h]
    batches = token_batches([(len(a), len(b)) for a, b in train_pairs], spec["max_tokens"])
    steps = train["max_steps"]
    print(f"{len(train_pairs)} training pairs, {len(test)} held out, {len(batches)} batches, {steps} steps",
          file=sys.stderr)
    for init in range(args.inits):
        twin(args, spec, train_pairs, test, batches, enc, tok, seed, init)


def twin(args, spec, train_pairs, test, batches, enc, tok, seed, init):
    train, cfg = spec["train"], spec["model"]
    pad, eos = cfg["pad_token_id"], cfg["eos_token_id"]
    steps = train["max_steps"]
    dev = torch.device(args.device)
    torch.manual_seed(seed + init)
    model = Seq2Seq(cfg["vocab_size"], cfg["d_model"], cfg["encoder_attention_heads"], cfg["encoder_layers"],
                    cfg["encoder_ffn_dim"], cfg["dropout"], cfg["max_position_embeddings"], pad,
                    activation={"swish": torch.nn.functional.silu, "relu": "relu",
                                "gelu": "gelu"}[cfg["activation_function"]]).to(dev)
    wd = train.get("weight_decay", 0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=train["lr"], betas=(train["beta1"], train["beta2"]),
                            eps=train["eps"], weight_decay=wd)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=pad, label_smoothing=spec["label_smoothing"])
    warm, peak, floor = train["warmup_steps"], train["lr"], train["min_lr"]

    def lr_at(it):
        if train.get("decay") == "inverse-sqrt" and it >= warm:
            return max(floor, peak * math.sqrt((warm + 1) / (it + 1)))
        if it < warm:
            return peak * (it + 1) / (warm + 1)
        if it >= steps:
            return floor
        progress = (it - warm) / max(1, steps - warm)
        return floor + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - floor)

    def padded(seqs):
        t = max(len(s) for s in seqs)
        return torch.tensor([s + [pad] * (t - len(s)) for s in seqs], device=dev)

    epoch, nxt, order = 0, 0, None
    model.train()
    started = time.time()
    for it in range(steps):
        if nxt >= len(batches):
            epoch, nxt = epoch + 1, 0
        if order is None or nxt == 0:
            order = epoch_order(len(batches), seed, epoch)
        b = [train_pairs[i] for i in batches[order[nxt]]]
        nxt += 1
        s = padded([x[0] for x in b])
        labels = padded([x[1] for x in b])
        tgt_in = padded([[pad] + x[1][:-1] for x in b])
        for group_ in opt.param_groups:
            group_["lr"] = lr_at(it)
        opt.zero_grad(set_to_none=True)
        logits = model(s, tgt_in)
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train["grad_clip"])
        opt.step()
        if (it + 1) % 100 == 0:
            print(f"step {it + 1}/{steps} loss {loss.item():.4f} ({time.time() - started:.0f} s)", file=sys.stderr,
                  flush=True)
    train_seconds = time.time() - started
    # greedy translations of the held-out pairs (max 1.5 x source + 10 new tokens, padding never generated)
    model.eval()
    hyps = []
    with torch.no_grad():
        for k in range(0, len(test), 64):
            chunk = test[k: k + 64]
            srcs = [enc(s) for s, _ in chunk]
            s = padded(srcs)
            memory = model.encode(s)
            limit = [min(math.ceil(1.5 * len(x)) + 10, cfg["max_position_embeddings"] - 1) for x in srcs]
            out = [[] for _ in chunk]
            done = [False] * len(chunk)
            ys = torch.full((len(chunk), 1), pad, device=dev)
            for step in range(max(limit)):
                logits = model.decode(ys, memory, s, last_only=True)[:, -1]
                logits[:, pad] = float("-inf")
                nxt_tok = logits.argmax(-1)
                for i, t in enumerate(nxt_tok.tolist()):
                    if not done[i]:
                        out[i].append(t)
                        done[i] = t == eos or len(out[i]) >= limit[i]
                if all(done):
                    break
                ys = torch.cat([ys, nxt_tok[:, None]], dim=1)
            hyps += [tok.decode([t for t in o if t != eos][: (o.index(eos) if eos in o else len(o))]).strip()
                     for o in out]
    refs = [t for _, t in test]
    print(json.dumps({"impl": "pytorch", "device": args.device, "torch_seed": seed + init, "steps": steps, "train_seconds": train_seconds, "pairs": len(test),
                      "bleu_greedy": sacrebleu.corpus_bleu(hyps, [refs]).score,
                      "chrf_greedy": sacrebleu.corpus_chrf(hyps, [refs]).score,
                      "train_loss_last": loss.item(), "samples": [{"source": s, "reference": r, "translation": h}
                                  for (s, r), h in list(zip(test, hyps))[:10]]}, ensure_ascii=False))


if __name__ == "__main__":
    main()
