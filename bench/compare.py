"""Summarise the JSON lines of bench/compare.sh: per suite, case and figure, the
median of qkv and of PyTorch over the timed pairs (pair 0 is the warm-up), and
the median of the pair-by-pair ratios, oriented so that > 1 means qkv is better
(faster, more throughput, or less memory)."""
import json
import statistics
import sys
from collections import defaultdict

LOWER_IS_BETTER = ("ms", "peak_mib")
SKIP = {"suite", "case", "impl", "pair", "threads"}

values = defaultdict(dict)  # (suite, case, figure) -> {(impl, pair): value}
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r.get("pair", 0) == 0:
        continue
    for k, v in r.items():
        if k in SKIP or not isinstance(v, (int, float)) or v is None:
            continue
        values[(r["suite"], r["case"], k)][(r["impl"], r["pair"])] = v

print(f"{'suite':<12}{'case':>7}  {'figure':<18}{'qkv':>12}{'pytorch':>12}{'qkv advantage':>15}  pairs")
for (suite, case, fig), vals in sorted(values.items(), key=lambda kv: (kv[0][0], int(kv[0][1]) if kv[0][1].isdigit() else kv[0][1], kv[0][2])):
    pairs = sorted({p for (_, p) in vals})
    q = [vals[("qkv", p)] for p in pairs if ("qkv", p) in vals]
    t = [vals[("pytorch", p)] for p in pairs if ("pytorch", p) in vals]
    lower = fig.startswith(LOWER_IS_BETTER)
    ratios = []
    for p in pairs:
        if ("qkv", p) in vals and ("pytorch", p) in vals:
            a, b = vals[("qkv", p)], vals[("pytorch", p)]
            if a > 0 and b > 0:
                ratios.append(b / a if lower else a / b)
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    print(f"{suite:<12}{case:>7}  {fig:<18}{med(q):>12.2f}{med(t):>12.2f}{med(ratios):>14.2f}x  {len(ratios)}")
