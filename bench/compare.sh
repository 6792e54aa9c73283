#!/usr/bin/env bash
# Run qkv's benchmarks and their PyTorch twins side by side: A B A B …, one
# warm-up pair, then $PAIRS timed pairs (default 5), and print each figure's
# median and the median of the pair-by-pair ratios.
#
#   bench/compare.sh                    # every suite that has a twin
#   bench/compare.sh gemm attention     # some suites
#   bench/compare.sh attention -- --case 4096   # pass options to both sides
#
# Needs a Python with torch (see README, "Benchmarks"): set $PYTHON, or make
# .venv/ at the project root. Installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-5}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
  echo "compare.sh: '$PYTHON' cannot import torch; see README 'Benchmarks' for the venv" >&2
  exit 2
fi

suites=()
extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  suites+=("$1"); shift
done
if [ ${#suites[@]} -eq 0 ]; then
  for f in bench/peers/*.py; do
    name=$(basename "$f" .py)
    case "$name" in common|*_common) ;; *) suites+=("$name") ;; esac
  done
fi

cargo build --release -q -p qkv-cli
QKV=target/release/qkv
THREADS=${THREADS:-$(nproc)}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for suite in "${suites[@]}"; do
  if [ ! -f "bench/peers/$suite.py" ]; then
    echo "compare.sh: no PyTorch twin bench/peers/$suite.py" >&2; exit 2
  fi
  for pair in $(seq 0 "$PAIRS"); do
    if [ "$pair" = 0 ]; then echo "[$suite] warm-up pair" >&2; else echo "[$suite] pair $pair/$PAIRS" >&2; fi
    "$QKV" --threads "$THREADS" bench "$suite" "${extra[@]}" | sed "s/^{/{\"pair\": $pair, /" >> "$log"
    "$PYTHON" "bench/peers/$suite.py" --threads "$THREADS" "${extra[@]}" | sed "s/^{/{\"pair\": $pair, /" >> "$log"
  done
done
"$PYTHON" bench/compare.py < "$log"
