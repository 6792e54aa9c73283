"""PyTorch twin of `qkv bench encoder`: transformers' BertModel forward (eval mode,
no gradients, its default attention implementation), random weights and ids,
batch 8 x 128, at all-MiniLM-L6-v2 shapes and at BERT-base shapes; with --model DIR
also the real weights of that directory (case "real")."""
import torch
from transformers import BertConfig, BertModel

from common import emit, parse, timed

args = parse(__doc__, lambda p: p.add_argument("--model", help="a BERT directory to time with its real weights"))
cases = [("minilm", 6, 384, 12, 1536), ("base", 12, 768, 12, 3072)]
b, t = 8, 128


def run(name, model, reps):
    torch.manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (b, t))
    mask = torch.ones(b, t, dtype=torch.long)

    def step():
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)

    secs = timed(reps, step)
    emit({"suite": "encoder", "case": f"{name}-{b}x{t}", "impl": "pytorch", "threads": torch.get_num_threads(),
          "sequences_per_s": b / secs, "ms_per_batch": secs * 1e3})


wanted = args.case.removesuffix(f"-{b}x{t}") if args.case else None
for name, layers, c, heads, f in cases:
    if wanted and wanted != name:
        continue
    torch.manual_seed(0)
    cfg = BertConfig(num_hidden_layers=layers, hidden_size=c, num_attention_heads=heads, intermediate_size=f)
    run(name, BertModel(cfg).eval(), args.reps or (10 if name == "minilm" else 4))
if args.model and wanted in (None, "real"):
    run("real", BertModel.from_pretrained(args.model).eval(), args.reps or 10)
