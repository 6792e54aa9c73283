"""Round trip: a qkv-trained GPT exported with `qkv export --format hf-gpt2`,
loaded by `transformers`, computes what qkv computes.

    python scripts/check_export.py runs/gpt [target/release/qkv]

It exports RUN_DIR, then checks, on text from the bundled corpus:
  * the loss over whole context windows: `qkv eval` on the run vs
    GPT2LMHeadModel on the exported directory (|difference| <= 1e-4 nats);
  * greedy continuations: `qkv generate --greedy` from the run, from the
    exported directory, and transformers' `generate(do_sample=False)` agree.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent


def qkv(binary, *args):
    return subprocess.run([binary, *args], check=True, capture_output=True, text=True).stdout


def main():
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/gpt")
    binary = sys.argv[2] if len(sys.argv) > 2 else str(ROOT / "target/release/qkv")
    torch.set_num_threads(2)
    out = Path(tempfile.mkdtemp(prefix="qkv-export-"))
    subprocess.run([binary, "export", "--model", str(run), "-o", str(out), "--force"], check=True)
    model = GPT2LMHeadModel.from_pretrained(out).eval()
    tok = PreTrainedTokenizerFast.from_pretrained(out)
    t = model.config.n_positions

    # loss over whole windows, as `qkv eval` scores them: windows of t tokens, targets shifted by one
    corpus = (ROOT / "data/shakespeare.txt").read_text()
    ids = tok(corpus[-20000:])["input_ids"]
    n = min(8, (len(ids) - 1) // t)
    ids = ids[: n * t + 1]
    text = tok.decode(ids)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
    ours = json.loads(qkv(binary, "eval", "--model", str(run), "--data", f.name, "--json"))
    x = torch.tensor(ids[:-1]).view(n, t)
    y = torch.tensor(ids[1:]).view(n, t)
    with torch.no_grad():
        logits = model(x).logits
    theirs = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
    print(f"loss over {n} windows of {t} tokens: qkv {ours['loss']:.6f}, transformers {theirs:.6f}")
    assert abs(ours["loss"] - theirs) <= 1e-4, "losses differ"

    # greedy continuations
    prompt = "ROMEO:"
    new = 120
    a = qkv(binary, "generate", "--model", str(run), "--prompt", prompt, "--greedy", "--max-new-tokens", str(new))
    b = qkv(binary, "generate", "--model", str(out), "--prompt", prompt, "--greedy", "--max-new-tokens", str(new))
    p = torch.tensor([tok(prompt)["input_ids"]])
    with torch.no_grad():
        g = model.generate(p, max_new_tokens=new, do_sample=False, pad_token_id=0)
    c = tok.decode(g[0].tolist())
    assert a == b, "qkv on the run and on the exported directory disagree"
    assert a.rstrip("\n") == c, f"greedy text differs:\nqkv:          {a!r}\ntransformers: {c!r}"
    print(f"greedy {new} tokens identical in qkv (run), qkv (exported) and transformers:")
    print(c)
    print(f"export OK: {out}")


if __name__ == "__main__":
    main()
