"""Hypotheses, references and sacreBLEU's own scores, for qkv's BLEU and chrF tests.

    .venv/bin/python scripts/make_bleu_fixtures.py   # needs sacrebleu

Writes crates/qkv/tests/fixtures/bleu/: `refs.txt` (Spanish references, one per
line), one `<system>.txt` per system (the same number of lines), and `scores.json`
with sacreBLEU's corpus BLEU (score, precisions, brevity penalty, lengths) and chrF
for each system, computed with sacreBLEU's defaults (13a tokenization, exp
smoothing; chrF: character 6-grams, beta 2). The systems: the references damaged
in seeded ways (words dropped, swapped, cut short), the English sources copied,
awkward lines (numbers, punctuation, entities, unusual spaces, empty), and one
short system whose brevity penalty bites.
"""
import json
import os
import random

import sacrebleu

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "qkv", "tests", "fixtures", "bleu")
DATA = os.path.join(os.path.dirname(__file__), "..", "data", "bible-en-es.tsv.gz")


def main():
    import csv
    import gzip
    rng = random.Random(13)
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    picked = rng.sample(rows, 60)
    refs = [r["es"] for r in picked]
    src = [r["en"] for r in picked]
    awkward = [
        "It costs $3.50, or 1,000-2,000 pesos.", "«¿Qué?» dijo: (sí) &amp; no &lt;b&gt;", "",
        "a\u00a0b\u2003c\x1cd  e\t", "Dios-mismo 3-4 veces... ¡Ya!", "x.y,z 1.2.3 a,b",
    ]
    systems = {
        "copy_source": src,
        "damaged": [],
        "short": [" ".join(r.split()[: max(1, len(r.split()) // 2)]) for r in refs],
        "awkward": [awkward[i % len(awkward)] if i % 3 == 0 else r for i, r in enumerate(refs)],
    }
    for r in refs:
        w = r.split()
        kind = rng.randrange(4)
        if kind == 0 and len(w) > 3:
            del w[rng.randrange(len(w))]
        elif kind == 1 and len(w) > 3:
            i = rng.randrange(len(w) - 1)
            w[i], w[i + 1] = w[i + 1], w[i]
        elif kind == 2:
            w = w[: max(1, 2 * len(w) // 3)] + ["extra", "palabras"]
        systems["damaged"].append(" ".join(w))
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "refs.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(refs) + "\n")
    scores = {}
    for name, hyps in systems.items():
        with open(os.path.join(OUT, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(hyps) + "\n")
        b = sacrebleu.corpus_bleu(hyps, [refs])
        c = sacrebleu.corpus_chrf(hyps, [refs])
        scores[name] = {"bleu": b.score, "precisions": b.precisions, "bp": b.bp, "sys_len": b.sys_len,
                        "ref_len": b.ref_len, "chrf": c.score}
        print(name, f"BLEU {b.score:.4f} chrF {c.score:.4f}")
    # the tokenizer itself on the awkward lines
    tok = sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a()
    scores["tokenized"] = {line: tok(line.rstrip()) for line in awkward}
    with open(os.path.join(OUT, "scores.json"), "w", encoding="utf-8") as f:
        json.dump(scores, f, ensure_ascii=False, indent=1)
    print("sacrebleu", sacrebleu.__version__)


if __name__ == "__main__":
    main()
