"""Shared helpers of the PyTorch twins: argument parsing, timing, memory, JSON lines."""
import argparse
import json
import os
import statistics
import time


def parse(description, extra=None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--case", help="run one case only: a size (gemm, attention) or a name (encoder: minilm, base, real)")
    p.add_argument("--mode", choices=["fwd", "fwd-bwd"], help="attention: one mode in this process")
    p.add_argument("--reps", type=int, help="timed repetitions (median reported)")
    if extra:
        extra(p)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    return args


def timed(reps, fn):
    """Median seconds of `reps` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rss():
    """(resident, peak resident) bytes of this process, from /proc (Linux)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def reset_peak():
    """Start a new peak: the kernel resets VmHWM to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def emit(obj):
    print(json.dumps(obj), flush=True)
