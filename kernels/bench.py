"""Benchmark: attention with statistics vs SDPA, eager-with-probabilities, FlexAttention and the
key-mass-through-SDPA-backward trick, side by side in one run on one GPU.

    python -m interp.kernels.bench                      # the README table (needs a CUDA GPU)
    python -m interp.kernels.bench --shapes 32x128/8 --lengths 8192 32768
    python -m interp.kernels.bench --smoke              # tiny sizes, any device (CPU: Triton interpreter)

Time: median of triton.testing.do_bench (CUDA events). TFLOP/s counts the attention forward only
(4 * b * h * n^2 * d, halved when causal) for every method, so the column compares like with like.
Peak memory: torch.cuda.max_memory_allocated above the inputs, for one call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from .api import attention_with_stats

SHAPES = {"32x128/8": (32, 8, 128), "9x64/3": (9, 3, 64), "4x256/1": (4, 1, 256)}
DEFAULT_LENGTHS = [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]


def flops(b, h, n, d, causal=True):
    f = 4.0 * b * h * n * n * d
    return f / 2 if causal else f


def eager_bytes(b, h, n):
    """scores fp16 (2) + masked copy (2) + float32 upcast (4) + softmax (4) + fp16 probs (2) per element"""
    return b * h * n * n * 14


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])


def eager_with_probs(q, k, v):
    g = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(g, 1)
    v = v.repeat_interleave(g, 1)
    n = q.shape[2]
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    p = torch.softmax(s.float(), -1).to(q.dtype)
    return p @ v, p


def key_mass_by_sdpa_backward(q, k, v):
    """Exact per-key mass from SDPA's backward: with dO = ones, dV = P^T dO, so each column of dV is the key mass
    (summed over the query heads that share a KV head)."""
    vv = torch.ones_like(v).requires_grad_(True)
    out = F.scaled_dot_product_attention(q, k, vv, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])
    (gv,) = torch.autograd.grad(out, vv, torch.ones_like(out))
    return gv[..., 0]  # [b, kv_heads, n]: summed over each KV group's query heads


def make_flex():
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None
    compiled = torch.compile(flex_attention, dynamic=False)

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    masks = {}

    def run(q, k, v):
        n = q.shape[2]
        if n not in masks:
            masks[n] = create_block_mask(causal, None, None, n, n, device=q.device)
        return compiled(q, k, v, block_mask=masks[n], enable_gqa=q.shape[1] != k.shape[1])

    return run


def time_ms(fn, smoke=False):
    if smoke or not torch.cuda.is_available():
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    import triton

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def peak_gib(fn, base):
    if not torch.cuda.is_available():
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def bench_one(shape, n, dtype, device, methods, smoke, eager_limit_gib, flex):
    h, hk, d = SHAPES[shape]
    b = 1
    g = torch.Generator(device=device).manual_seed(n)
    q = torch.randn(b, h, n, d, device=device, dtype=dtype, generator=g)
    k = torch.randn(b, hk, n, d, device=device, dtype=dtype, generator=g)
    v = torch.randn(b, hk, n, d, device=device, dtype=dtype, generator=g)
    base = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    fl = flops(b, h, n, d)
    rows = []
    runners = {
        "sdpa": lambda: sdpa(q, k, v),
        "eager+probs": lambda: eager_with_probs(q, k, v),
        "flex": (lambda: flex(q, k, v)) if flex else None,
        "keymass-sdpa-bwd": lambda: key_mass_by_sdpa_backward(q, k, v),
        "ours-none": lambda: attention_with_stats(q, k, v, stats="none"),
        "ours-query": lambda: attention_with_stats(q, k, v, stats="query"),
        "ours-keymass": lambda: attention_with_stats(q, k, v, stats=["key_mass"]),
        "ours-entropy": lambda: attention_with_stats(q, k, v, stats=["entropy"]),
        "ours-argmax": lambda: attention_with_stats(q, k, v, stats=["argmax"]),
        "ours-masses": lambda: attention_with_stats(q, k, v, stats=["sink_mass", "local_mass", "span_mass"],
                                                    span=(n // 2, n // 2 + 64)),
        "ours-all": lambda: attention_with_stats(q, k, v, stats="all"),
    }
    for m in methods:
        fn = runners.get(m)
        row = dict(shape=shape, n=n, method=m)
        if fn is None:
            row.update(ms=None, note="unavailable")
        elif m == "eager+probs" and eager_bytes(b, h, n) / 2**30 > eager_limit_gib:
            row.update(ms=None, note="OOM (needs ~%.0f GiB)" % (eager_bytes(b, h, n) / 2**30))
        else:
            try:
                ms = time_ms(fn, smoke)
                row.update(ms=ms, tflops=fl / (ms * 1e-3) / 1e12, peak_gib=peak_gib(fn, base))
            except torch.OutOfMemoryError:
                row.update(ms=None, note="OOM")
                torch.cuda.empty_cache()
        rows.append(row)
    runners.clear()  # drop the closures that hold q, k, v before the next size
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--lengths", nargs="+", type=int, default=DEFAULT_LENGTHS)
    p.add_argument("--methods", nargs="+",
                   default=["sdpa", "eager+probs", "flex", "keymass-sdpa-bwd", "ours-none", "ours-query", "ours-keymass",
                            "ours-all"])
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    p.add_argument("--eager-limit-gib", type=float, default=70.0)
    p.add_argument("--flex-lengths", nargs="*", type=int, default=[8192, 32768],
                   help="lengths at which FlexAttention runs (each one compiles)")
    p.add_argument("--json", help="also write every row here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one timed call each (CPU: Triton interpreter)")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    lengths = [64, 130] if args.smoke else args.lengths
    methods = [m for m in args.methods if not (args.smoke and m in ("flex", "keymass-sdpa-bwd"))]
    flex = make_flex() if "flex" in methods and device == "cuda" else None
    if device == "cuda":
        print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, dtype {args.dtype}, causal", flush=True)
    rows = []
    for shape in args.shapes:
        for n in lengths:
            ms_list = methods if n in args.flex_lengths else [m for m in methods if m != "flex"]
            rs = bench_one(shape, n, dtype, device, ms_list, args.smoke, args.eager_limit_gib, flex)
            rows.extend(rs)
            for r in rs:
                ms = f"{r['ms']:9.3f}" if r.get("ms") is not None else "        -"
                extra = (f"{r['tflops']:7.1f} TFLOP/s  {r['peak_gib']:7.2f} GiB" if r.get("ms") is not None
                         else r.get("note", ""))
                print(f"{shape:9s} {n:7d} {r['method']:17s} {ms} ms  {extra}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print_ratios(rows)
    return rows


def print_ratios(rows):
    by = {}
    for r in rows:
        by.setdefault((r["shape"], r["n"]), {})[r["method"]] = r.get("ms")
    print("\n# ratios (time / SDPA time; eager / ours-all)")
    for (shape, n), d in by.items():
        s = d.get("sdpa")
        if not s:
            continue
        parts = [f"{m}={d[m] / s:.2f}x" for m in ("ours-none", "ours-query", "ours-keymass", "ours-all",
                                                   "keymass-sdpa-bwd", "flex")
                 if d.get(m)]
        if d.get("eager+probs") and d.get("ours-all"):
            parts.append(f"eager/ours-all={d['eager+probs'] / d['ours-all']:.1f}x")
        print(f"{shape:9s} {n:7d} " + "  ".join(parts))


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
