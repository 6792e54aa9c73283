"""The encoder-decoder of the seq2seq suites in PyTorch: nn.Transformer built from
its own encoder and decoder stacks without final norms (as Marian and qkv: post-norm,
no norm after the stacks), a shared embedding scaled by sqrt(C) and tied to the output,
sinusoidal positions (sines in the first half of the width, cosines in the second, as
Marian). Used by the train-seq2seq twin and by scripts/translation_twin.py."""
import math

import torch
from torch import nn


def sinusoidal(n_pos, dim):
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    i = torch.arange((dim + 1) // 2, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * i / dim)
    out = torch.zeros(n_pos, dim, dtype=torch.float64)
    half = (dim + 1) // 2
    out[:, :half] = torch.sin(angle)
    out[:, half:] = torch.cos(angle[:, : dim - half])
    return out.float()


class Seq2Seq(nn.Module):
    def __init__(self, vocab, d=256, heads=4, layers=3, ffn=1024, dropout=0.1, max_pos=256, pad=0,
                 activation="relu"):
        super().__init__()
        self.d, self.pad = d, pad
        self.shared = nn.Embedding(vocab, d)
        enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, heads, ffn, dropout, activation=activation, batch_first=True),
            layers, norm=None, enable_nested_tensor=False)
        dec = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, heads, ffn, dropout, activation=activation, batch_first=True), layers, norm=None)
        self.transformer = nn.Transformer(d, heads, custom_encoder=enc, custom_decoder=dec, batch_first=True)
        self.register_buffer("positions", sinusoidal(max_pos, d), persistent=False)
        self.drop = nn.Dropout(dropout)
        # qkv's initialisation: embeddings N(0, 1/C), projections N(0, 0.02), zero biases, unit norms
        for name, p in self.named_parameters():
            if name == "shared.weight":
                nn.init.normal_(p, std=d ** -0.5)
            elif p.dim() > 1:
                nn.init.normal_(p, std=0.02)
            elif "norm" in name and name.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def embed(self, ids, start=0):
        t = ids.shape[1]
        return self.drop(self.shared(ids) * math.sqrt(self.d) + self.positions[start:start + t])

    def encode(self, src):
        return self.transformer.encoder(self.embed(src), src_key_padding_mask=src == self.pad)

    def decode(self, tgt_in, memory, src, last_only=False):
        """Logits [B, T, V]; with last_only, of the last position alone [B, 1, V] (greedy decoding)."""
        t = tgt_in.shape[1]
        causal = torch.triu(torch.full((t, t), float("-inf"), device=tgt_in.device), diagonal=1)
        h = self.transformer.decoder(self.embed(tgt_in), memory, tgt_mask=causal,
                                     memory_key_padding_mask=src == self.pad)
        if last_only:
            h = h[:, -1:]
        return h @ self.shared.weight.t()

    def forward(self, src, tgt_in):
        return self.decode(tgt_in, self.encode(src), src)
