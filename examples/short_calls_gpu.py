"""Where a short attention call's time goes: host (Python, launches) or device (kernels), per method, on one GPU.

    python examples/short_calls_gpu.py --shape 32x128/8 --tokens 1024 2048 --reps 300
    python examples/short_calls_gpu.py --device cpu --tokens 64 --reps 3      # smoke test (Triton interpreter)

At 1k-2k tokens an attention call takes tens of microseconds on the device, about what Python and the kernel
launches take on the host, so a ratio to SDPA can measure either. For each method this prints, per call:
    host    time to issue `reps` calls back to back, without waiting for the device (Python + launch cost)
    device  CUDA-event time of the same calls run back to back (what do_bench reports when the device is the
            bottleneck), and the sum of the kernels' own times from the profiler
    kernels launches per call, and the host functions that cost the most (torch profiler, self CPU time)
A method whose host time exceeds its device time is bound by the host: its ratio to SDPA at short lengths is a
launch-path number, not a kernel number (issue 18's short-input target).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

SHAPES = {"32x128/8": (32, 8, 128), "9x64/3": (9, 3, 64), "4x256/1": (4, 1, 256)}
METHODS = ("sdpa", "ours-none", "ours-query", "ours-all")


def runner(method, q, k, v):
    from interp.kernels import attention_with_stats

    if method == "sdpa":
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])
    stats = method.split("-", 1)[1]
    return lambda: attention_with_stats(q, k, v, stats=stats)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def host_and_device_us(fn, reps, device):
    """(host us per call: issuing reps calls, device us per call: the same calls to completion)."""
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    host = time.perf_counter() - t
    _sync(device)
    total = time.perf_counter() - t
    return host / reps * 1e6, total / reps * 1e6


def profile(fn, reps, device, top):
    """(kernel launches per call, kernel us per call, the `top` host functions by self CPU time)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch_profile(activities=acts) as prof:
        for _ in range(reps):
            fn()
        _sync(device)
    events = prof.key_averages()
    launches, kernel_us = 0, 0.0
    for e in events:
        if device == "cuda" and getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type):
            launches += e.count
            kernel_us += getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    table = [(e.key[:60], e.count / reps, e.self_cpu_time_total / reps) for e in rows]
    return launches / reps, kernel_us / reps, table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="32x128/8")
    p.add_argument("--tokens", nargs="+", type=int, default=[1024, 2048])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--reps", type=int, default=300)
    p.add_argument("--top", type=int, default=8, help="host functions listed per method")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    a = p.parse_args(argv)
    if a.reps < 1 or a.top < 0 or any(n < 1 for n in a.tokens):
        p.error("--reps and --tokens must be >= 1, --top >= 0")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda needs a CUDA GPU (--device cpu runs a smoke test under the Triton interpreter)")
    heads, kv_heads, dim = SHAPES[a.shape]
    dtype = torch.float16 if a.device == "cuda" else torch.float32
    name = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {a.shape}, {dtype}, causal, {a.reps} calls per method")
    for n in a.tokens:
        g = torch.Generator(device=a.device).manual_seed(0)
        q = torch.randn(1, heads, n, dim, device=a.device, dtype=dtype, generator=g)
        k = torch.randn(1, kv_heads, n, dim, device=a.device, dtype=dtype, generator=g)
        v = torch.randn(1, kv_heads, n, dim, device=a.device, dtype=dtype, generator=g)
        base = None
        for m in a.methods:
            fn = runner(m, q, k, v)
            for _ in range(3):  # compile, autotune, warm caches
                fn()
            _sync(a.device)
            host, device = host_and_device_us(fn, a.reps, a.device)
            launches, kernel_us, table = profile(fn, min(a.reps, 50), a.device, a.top)
            base = device if m == a.methods[0] else base
            bound = "host" if host > 0.9 * device else "device"
            print(f"N={n:<6} {m:<11} host {host:8.1f} us  wall {device:8.1f} us ({device / base:5.2f}x "
                  f"{a.methods[0]})  kernels {kernel_us:8.1f} us in {launches:4.1f} launches  -> {bound}-bound")
            for key, count, us in table:
                print(f"    {us:8.1f} us  x{count:4.1f}  {key}")


if __name__ == "__main__":
    main()
