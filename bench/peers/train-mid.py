"""PyTorch twin of `qkv bench train-mid` (see train_common.py)."""
from train_common import run

run("train-mid", n_layer=6, n_head=6, n_embd=384, t=256, b=8)
