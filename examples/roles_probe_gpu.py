"""Probe (issue 18, short prefills): would splitting the statistics walk by statistic, not by keys, shorten a short
call? At 1k-2k tokens the statistics kernel's grid fills a fraction of the GPU (9x64 at 1k: 144 programs for 132
SMs that hold three each) and each program's walk is a chain of dependent instructions, so a program that does half
the per-score work could finish in about half the time while its twin runs beside it.

Emulated without a kernel change: after SDPA's output and lse (`attention_with_stats(stats=["lse"])`), two
`stats_from_lse` calls on two CUDA streams inside one CUDA graph,
    A: max_prob, argmax (no exp in the full walk), sink_mass, local_mass (their short walks);
    B: entropy, key_mass, key_mean, key_count (exp, p log p, the per-key sums),
against the one-pass call (`stats="all"`), each graph replay timed beside SDPA's. A and B alone, and A then B on one
stream, show each half's cost. The statistics of A + B are checked equal to the one-pass call's.

    python examples/roles_probe_gpu.py [--shapes 9x64/3 32x128/8 4x256/1] [--lengths 1024 2048 4096 8192]
    TRITON_INTERPRET=1 python examples/roles_probe_gpu.py --smoke     # CPU: the sets and the equality check only
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from interp.kernels import attention_with_stats, stats_from_lse
from gpu_timing import parse_shape  # beside this script

A = ("max_prob", "argmax", "sink_mass", "local_mass")
B = ("entropy", "key_mass", "key_mean", "key_count")


def mismatch(one, a, b) -> float:
    """Largest difference between the one-pass statistics and those of the two halves."""
    worst = 0.0
    for names, st in ((A, a), (B, b)):
        for n in names:
            x, y = getattr(one, n), getattr(st, n)
            worst = max(worst, float((x.double() - y.double()).abs().nan_to_num(0.0).max()))
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["9x64/3", "32x128/8", "4x256/1"])
    ap.add_argument("--lengths", nargs="+", type=int, default=[1024, 2048, 4096, 8192])
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    dev = "cpu" if a.smoke else "cuda"
    dtype = getattr(torch, a.dtype)
    shapes, lengths = (["4x32/2"], [96]) if a.smoke else (a.shapes, a.lengths)
    if not a.smoke:
        from triton.testing import do_bench

        from interp.kernels.cuda_graph import capture
        print(torch.cuda.get_device_name(), torch.__version__, a.dtype)
    print(f"{'shape':>9} {'N':>6} {'sdpa ms':>8} | x SDPA: {'all':>6} {'A||B':>6} {'A;B':>6} {'A':>6} {'B':>6} "
          f"{'lse':>6} | max diff")
    for shape in shapes:
        h, d, kv = parse_shape(shape)
        for n in lengths:
            g = torch.Generator(device=dev).manual_seed(0)
            q = torch.randn(1, h, n, d, device=dev, dtype=dtype, generator=g)
            k = torch.randn(1, kv, n, d, device=dev, dtype=dtype, generator=g)
            v = torch.randn(1, kv, n, d, device=dev, dtype=dtype, generator=g)
            lse = attention_with_stats(q, k, v, stats=["lse"])[1].lse

            def one():
                return attention_with_stats(q, k, v, stats="all")[1]

            def half(names):
                return stats_from_lse(q, k, lse, stats=names)

            diff = mismatch(one(), half(A), half(B))
            if a.smoke:
                print(f"{shape:>9} {n:>6} (smoke) max diff {diff:.2e}")
                continue
            side = torch.cuda.Stream()

            def both():  # SDPA's output and lse, then A on a side stream beside B
                _, st = attention_with_stats(q, k, v, stats=["lse"])
                main_stream = torch.cuda.current_stream()
                side.wait_stream(main_stream)
                with torch.cuda.stream(side):
                    ra = stats_from_lse(q, k, st.lse, stats=A)
                rb = stats_from_lse(q, k, st.lse, stats=B)
                main_stream.wait_stream(side)
                return ra, rb

            def seq():
                _, st = attention_with_stats(q, k, v, stats=["lse"])
                return stats_from_lse(q, k, st.lse, stats=A), stats_from_lse(q, k, st.lse, stats=B)

            def only(names):
                def f():
                    _, st = attention_with_stats(q, k, v, stats=["lse"])
                    return stats_from_lse(q, k, st.lse, stats=names)
                return f

            calls = {"sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                     "all": one, "A||B": both, "A;B": seq, "A": only(A), "B": only(B),
                     "lse": lambda: attention_with_stats(q, k, v, stats=["lse"])}
            graphs = {name: capture(fn, 2) for name, fn in calls.items()}
            graphs["A||B"][0].replay()
            torch.cuda.synchronize()
            ra, rb = graphs["A||B"][1]
            diff = max(diff, mismatch(graphs["all"][1], ra, rb))
            ms = {name: do_bench(gr.replay) for name, (gr, _) in graphs.items()}
            ms["sdpa"] = (ms["sdpa"] + do_bench(graphs["sdpa"][0].replay)) / 2  # before and after the others
            r = {name: t / ms["sdpa"] for name, t in ms.items()}
            print(f"{shape:>9} {n:>6} {ms['sdpa']:8.4f} |        {r['all']:6.2f} {r['A||B']:6.2f} {r['A;B']:6.2f} "
                  f"{r['A']:6.2f} {r['B']:6.2f} {r['lse']:6.2f} | {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
