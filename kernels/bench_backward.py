"""Benchmark: forward + backward through our fused attention vs SDPA and FlexAttention, one run on one GPU.

    python -m interp.kernels.bench_backward                       # the README table (needs a CUDA GPU)
    python -m interp.kernels.bench_backward --shapes 32x128/8 --lengths 8192
    python -m interp.kernels.bench_backward --smoke               # tiny sizes, any device (CPU: Triton interpreter)

Methods (fp16 by default, causal, batch 1, dO random):
    sdpa-fwd / ours-fwd        forward only (ours: output and lse, the statistics the backward needs)
    sdpa-bwd / ours-bwd        backward only, replayed on one saved graph (retain_graph)
    sdpa / ours / flex         forward + backward: torch.autograd.grad of the output for q, k, v
    det / det-bwd              ours under torch.use_deterministic_algorithms(True): the Triton backward kernels
                               (ours otherwise takes torch's own fused backward where its forward came from SDPA)
Time: median of triton.testing.do_bench. TFLOP/s counts forward + backward as 3.5x the causal forward's
2 * b * h * n^2 * d (the backward's five products vs the forward's two). Peak memory: torch.cuda.max_memory_allocated
above the inputs, for one forward + backward. Also per point: host time per forward + backward (launch-bound when
it reaches the GPU time), our kernels' GPU times (torch profiler), the autotuned configs, and the largest gradient
difference to SDPA relative to SDPA's largest gradient.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from .api import attention_with_stats
from .bench import make_flex, peak_gib

SHAPES = {"32x128/8": (32, 8, 128), "9x64/3": (9, 3, 64), "4x256/1": (4, 1, 256)}  # heads, kv heads, head dim
DEFAULT_LENGTHS = [1024, 4096, 8192, 16384, 32768]


def fwd_bwd_flops(b, h, n, d):
    return 3.5 * 2.0 * b * h * n * n * d  # causal: half of 4 * b * h * n^2 * d, times 3.5


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])


def ours(q, k, v):
    return attention_with_stats(q, k, v, causal=True, stats="none", backend="triton")[0]


def det(q, k, v):
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return ours(q, k, v)
    finally:
        torch.use_deterministic_algorithms(before)


def time_ms(fn, smoke):
    if smoke or not torch.cuda.is_available():
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    import triton

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def host_ms(fn, iters=20):
    """Host (Python + launch) time per call, the GPU left to run behind: if it reaches the GPU time, the call is
    launch-bound."""
    if not torch.cuda.is_available():
        return float("nan")
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    host = (time.perf_counter() - t) / iters * 1e3
    torch.cuda.synchronize()
    return host


def kernel_breakdown(fn, iters=3):
    """GPU time per kernel name (ms per call) from the torch profiler."""
    if not torch.cuda.is_available():
        return {}
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    out = {}
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if t:
            out[e.key[:40]] = t / iters / 1e3
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:6])


def grad_error(q, k, v, do, f=None):
    """max |ours - SDPA| / max |SDPA| over dq, dk, dv (both fp16/bf16 with fp32 accumulation): a check that the
    autotuned configurations compute the right thing."""
    ref = torch.autograd.grad(sdpa(q, k, v), (q, k, v), do)
    got = torch.autograd.grad((f or ours)(q, k, v), (q, k, v), do)
    return max(((a.float() - b.float()).abs().max() / b.float().abs().max()).item() for a, b in zip(got, ref))


def chosen_configs():
    from .triton_backward import bwd_dkdv_kernel, bwd_dq_kernel

    return {name: str(getattr(kern, "best_config", None)) for name, kern in
            (("dkdv", bwd_dkdv_kernel), ("dq", bwd_dq_kernel))}


def bench_one(shape, n, dtype, device, methods, smoke, flex):
    h, hk, d = SHAPES[shape]
    g = torch.Generator(device=device).manual_seed(n)
    q, k, v = (torch.randn(1, hh, n, d, device=device, dtype=dtype, generator=g).requires_grad_(True)
               for hh in (h, hk, hk))
    do = torch.randn(1, h, n, d, device=device, dtype=dtype, generator=g)
    base = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    fl = fwd_bwd_flops(1, h, n, d)
    fns = {"sdpa": sdpa, "ours": ours, "flex": flex, "det": det}

    def fwd_bwd(f):
        return lambda: torch.autograd.grad(f(q, k, v), (q, k, v), do)

    def bwd_only(f):
        out = f(q, k, v)
        return lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True)

    def fwd_only(f):
        def run():
            with torch.no_grad():
                return f(q, k, v)
        return run

    rows = []
    for m in methods:
        name, _, part = m.partition("-")
        f = fns.get(name)
        row = dict(shape=shape, n=n, method=m)
        if f is None:
            row.update(ms=None, note="unavailable")
            rows.append(row)
            continue
        try:
            fn = {"": fwd_bwd, "fwd": fwd_only, "bwd": bwd_only}[part](f)
            ms = time_ms(fn, smoke)
            row.update(ms=ms, peak_gib=peak_gib(fn, base))
            if part == "":
                row["tflops"] = fl / (ms * 1e-3) / 1e12
                row["host_ms"] = host_ms(fn)
            if m in ("ours", "det") and not smoke:
                row["kernels_ms"] = kernel_breakdown(fn)
                row["configs"] = chosen_configs()
                row["rel_err_vs_sdpa"] = grad_error(q, k, v, do, f)
            del fn
        except torch.OutOfMemoryError:
            row.update(ms=None, note="OOM")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--lengths", nargs="+", type=int, default=DEFAULT_LENGTHS)
    p.add_argument("--methods", nargs="+",
                   default=["sdpa-fwd", "ours-fwd", "sdpa-bwd", "ours-bwd", "det-bwd", "sdpa", "ours", "det", "flex"])
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    p.add_argument("--flex-lengths", nargs="*", type=int, default=[8192, 32768],
                   help="lengths at which FlexAttention runs (each one compiles)")
    p.add_argument("--json", help="also write every row here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one timed call each (CPU: Triton interpreter)")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    lengths = [64, 130] if args.smoke else args.lengths
    methods = [m for m in args.methods if not (args.smoke and m.startswith(("flex", "sdpa")))]
    flex = make_flex() if any(m.startswith("flex") for m in methods) and device == "cuda" else None
    if device == "cuda":
        print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, dtype {args.dtype}, causal, "
              "forward + backward", flush=True)
    rows = []
    for shape in args.shapes:
        for n in lengths:
            ms_list = [m for m in methods if not m.startswith("flex") or args.flex_lengths is None
                       or n in args.flex_lengths]
            rs = bench_one(shape, n, dtype, device, ms_list, args.smoke, flex)
            rows.extend(rs)
            for r in rs:
                ms = f"{r['ms']:9.3f}" if r.get("ms") is not None else "        -"
                extra = f"{r['peak_gib']:7.2f} GiB" if r.get("ms") is not None else r.get("note", "")
                if r.get("tflops"):
                    extra += f"  {r['tflops']:6.1f} TFLOP/s  host {r['host_ms']:.3f} ms"
                print(f"{shape:9s} {n:7d} {r['method']:9s} {ms} ms  {extra}", flush=True)
                for key in ("rel_err_vs_sdpa", "kernels_ms", "configs"):
                    if key in r:
                        print(f"    {key}: {r[key]}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print_table(rows)
    return rows


def print_table(rows):
    by = {}
    for r in rows:
        by.setdefault((r["shape"], r["n"]), {})[r["method"]] = r
    cols = ["sdpa", "ours", "det", "flex", "sdpa-bwd", "ours-bwd", "det-bwd", "sdpa-fwd", "ours-fwd"]
    print("\n| shape | N | " + " | ".join(f"{c} ms" for c in cols)
          + " | ours / sdpa | det / sdpa | ours-bwd / sdpa-bwd | det-bwd / sdpa-bwd | flex / sdpa | peak GiB ours"
          + " | peak GiB det | peak GiB sdpa | host ms ours |")
    print("|" + "---|" * (len(cols) + 11))
    for (shape, n), d in by.items():
        ms = {c: (d[c]["ms"] if c in d and d[c].get("ms") is not None else None) for c in cols}

        def ratio(a, b):
            return f"{ms[a] / ms[b]:.2f}x" if ms.get(a) and ms.get(b) else ""

        def gib(c):
            return f"{d[c]['peak_gib']:.2f}" if c in d and d[c].get("ms") is not None else ""

        cells = [f"{ms[c]:.3f}" if ms[c] is not None else "" for c in cols]
        print(f"| {shape} | {n} | " + " | ".join(cells)
              + f" | {ratio('ours', 'sdpa')} | {ratio('det', 'sdpa')} | {ratio('ours-bwd', 'sdpa-bwd')}"
              + f" | {ratio('det-bwd', 'sdpa-bwd')} | {ratio('flex', 'sdpa')}"
              + f" | {gib('ours')} | {gib('det')} | {gib('sdpa')} | {d.get('ours', {}).get('host_ms', float('nan')):.3f} |")


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
