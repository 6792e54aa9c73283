"""PyTorch twin of `qkv bench train-small` (see train_common.py)."""
from train_common import run

run("train-small", n_layer=4, n_head=4, n_embd=256, t=128, b=16)
