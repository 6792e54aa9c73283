"""PyTorch twin of `qkv bench translate`: transformers' `generate` on a
MarianMTModel of the same shapes (3+3 layers, C=256, 4 heads, F=1024, swish,
vocabulary 8000, random weights, KV cache), 32 sources of 32 tokens, exactly
48 new tokens each (min_new_tokens = max_new_tokens), greedy and beam 4:
sentences/s (median of 3 timed calls after a warm-up)."""
import statistics
import time

import torch
from transformers import GenerationConfig, MarianConfig, MarianMTModel

from common import emit, parse

args = parse(__doc__)
torch.manual_seed(0)
n, length, new, vocab = 32, 32, 48, 8000
config = MarianConfig(vocab_size=vocab, decoder_vocab_size=vocab, d_model=256, encoder_layers=3, decoder_layers=3,
                      encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=1024,
                      decoder_ffn_dim=1024, activation_function="swish", max_position_embeddings=128,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=None)
model = MarianMTModel(config).eval()
src = torch.randint(3, vocab, (n, length))
src[:, -1] = 1
figures = {}
for name, beams in [("greedy", 1), ("beam4", 4)]:
    cfg = GenerationConfig(max_new_tokens=new, min_new_tokens=new, num_beams=beams, do_sample=False,
                           bad_words_ids=[[0]], pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)

    def run():
        with torch.no_grad():
            out = model.generate(input_ids=src, generation_config=cfg)
        assert out.shape[1] == new + 1, out.shape

    run()
    times = []
    for _ in range(args.reps or 3):
        s = time.perf_counter()
        run()
        times.append(time.perf_counter() - s)
    figures[f"{name}_sentences_per_s"] = n / statistics.median(times)
emit({"suite": "translate", "case": f"{n}x{length}+{new}", "impl": "pytorch", "threads": torch.get_num_threads(),
      **figures})
