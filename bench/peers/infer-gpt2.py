"""PyTorch twin of `qkv bench infer-gpt2`: transformers' GPT2LMHeadModel at GPT-2 124M
shapes (random weights, eval mode, fp32), B=1, a 32-token prompt, 128 new tokens,
greedy, with its KV cache (`generate(use_cache=True)`)."""
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from common import emit, parse, timed

args = parse(__doc__)
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config()).eval()
prompt = torch.randint(0, 50257, (1, 32))
new = 128


def step():
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, use_cache=True,
                       pad_token_id=0)


secs = timed(args.reps or 3, step)
with torch.no_grad():
    t = time.perf_counter()
    model(prompt)
    prefill = time.perf_counter() - t
emit({"suite": "infer-gpt2", "case": "124M-32+128", "impl": "pytorch", "threads": torch.get_num_threads(),
      "tokens_per_s": new / secs, "decode_tokens_per_s": (new - 1) / (secs - prefill), "ms_prefill": prefill * 1e3})
