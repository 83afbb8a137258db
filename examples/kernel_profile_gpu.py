"""Which kernels one short call runs, and how long each takes on the device: SDPA against
`attention_with_stats(stats="all")` (32 heads x 128, GQA 32/8, fp16, causal), from torch.profiler over `--reps` calls.

    python examples/kernel_profile_gpu.py [--tokens 1024 2048] [--reps 20] [--shape 4x256/1] [--window 512]
                                          [--pad 100] [--config I] [--stats all none ...]

It splits a short call's device time between cuDNN's attention (output and lse), the fill that zeroes the key sums
and the statistics kernel. `--device cpu` is the script's own smoke run (the Triton interpreter, 64 tokens, 4 heads,
CPU ops instead of kernels). `--shape` takes a bundled model's attention shape (`examples/stats_configs_gpu.py`'s
names), `--window` a sliding window, `--pad N` a padding mask hiding the first N keys (with either, the output comes from the
Triton forward and every key block is masked), `--config` pins the statistics kernel's config
(`examples/profile_kernels.py`), `--stats` names the requests timed beside SDPA (`stats_configs_gpu.STATS`: "none" is
the output alone).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from interp.kernels import attention_with_stats
from profile_kernels import pin  # beside this script
from stats_configs_gpu import SHAPES, STATS


def kernel_times(fn, reps: int, device: str) -> list:
    """[(name, calls, mean device us per call of it)] of what fn runs, over reps calls after warm-up ones."""
    for _ in range(5):  # compilation, autotuning, cuDNN plans, the allocator
        fn()
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            fn()
        if cuda:
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us > 0 and (not cuda or e.device_type.name == "CUDA"):
            rows.append((e.key, e.count, us / e.count))
    return sorted(rows, key=lambda r: -r[2] * r[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", nargs="+", type=int, default=[1024, 2048])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--shape", default="32x128/8", choices=list(SHAPES), help="heads x head_dim / KV heads")
    p.add_argument("--window", type=int, default=None, help="a sliding window (SDPA stays plain causal)")
    p.add_argument("--pad", type=int, default=0, help="hide the first N keys with a padding mask (left padding)")
    p.add_argument("--config", type=int, default=None, help="pin the statistics kernel's config (an index)")
    p.add_argument("--stats", nargs="+", default=["all"], choices=list(STATS), help="requests timed beside SDPA")
    a = p.parse_args(argv)
    if a.reps < 1:
        p.error(f"--reps must be >= 1, got {a.reps}")
    if a.window is not None and a.window < 1:
        p.error(f"--window must be >= 1, got {a.window}")
    cpu = a.device == "cpu"
    tokens = [64] if cpu else a.tokens
    if a.pad < 0 or any(a.pad >= n for n in tokens):
        p.error(f"--pad must be >= 0 and below every length, got {a.pad}")
    if a.config is not None:
        try:
            pin(a.config)
        except ValueError as e:  # an index outside the config list
            p.error(str(e))
    heads, kv, dim = SHAPES[a.shape]
    heads, kv, dim, dtype = (4, min(kv, 2), min(dim, 64), torch.float32) if cpu else (heads, kv, dim, torch.float16)
    win = {} if a.window is None else {"sliding_window": a.window}
    print(f"{heads}x{dim} GQA {heads}/{kv}, {dtype}, causal"
          f"{'' if a.window is None else f', window {a.window}'}{f', {a.pad} padding keys' if a.pad else ''}, "
          f"statistics config {'autotuned' if a.config is None else a.config}", flush=True)
    for n in tokens:
        g = torch.Generator(device=a.device).manual_seed(0)
        q, k, v = (torch.randn(1, h, n, dim, device=a.device, dtype=dtype, generator=g) for h in (heads, kv, kv))
        if a.pad:
            mask = torch.ones(1, n, dtype=torch.bool, device=a.device)
            mask[:, :a.pad] = False
            win["attention_mask"] = mask
        calls = {"sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)}
        for name in a.stats:
            calls[name] = lambda st=STATS[name]: attention_with_stats(q, k, v, stats=st, **win)
        for name, fn in calls.items():
            rows = kernel_times(fn, a.reps, a.device)
            total = sum(c * us for _, c, us in rows) / a.reps
            print(f"N={n} {name}: {total:.1f} us of {'device' if not cpu else 'CPU'} time per call", flush=True)
            for key, count, us in rows[:8]:
                print(f"   {key[:88]:<88} {count / a.reps:4.1f} per call, {us:8.1f} us each", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
