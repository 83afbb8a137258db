"""Benchmark: attention with statistics vs SDPA, FlexAttention, the key-mass-through-SDPA-backward trick and
eager-with-probabilities, side by side in one run on one GPU; then every statistic at 256k-1M tokens.

    python -m interp.kernels.bench                      # the README tables (needs a CUDA GPU)
    python -m interp.kernels.bench --shapes 32x128/8 --lengths 8192 32768 --long-lengths
    python -m interp.kernels.bench --smoke              # tiny sizes, one timed call each (CPU: Triton interpreter)
    python -m interp.kernels.bench --lengths --long-lengths --graph-lengths --decode-lengths 8192 131072
                                                        # one decode step against 8k / 128k cached keys

Time: median of triton.testing.do_bench (CUDA events around each call, so Python launch overhead counts where it
dominates; at --graph-lengths, 1k-2k by default, also the replay of each call captured in a CUDA graph: the
GPU's time); from 256k tokens one timed call after a warm-up call (two at 1M would take minutes). A decode step
(--decode-lengths: the last query of each head against every cached key, as a model's generation step issues it) is
timed as CUDA-graph replays too. Eager rows time SDPA again after the other methods: their ratios are to the mean of
both SDPA timings, shown as "mean (before / after)" (a call of 40-260 ms drifts 5-10 % through a run). TFLOP/s counts the attention forward only (4 * b * h * n^2 * d, halved when causal;
4 * b * h * n * d for a decode step) for every method, so the column compares like with like. Peak memory:
torch.cuda.max_memory_allocated above the inputs, for one call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from .api import attention_with_stats
from .cuda_graph import capture

SHAPES = {"32x128/8": (32, 8, 128), "9x64/3": (9, 3, 64), "4x256/1": (4, 1, 256)}
DEFAULT_LENGTHS = [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
LONG_LENGTHS = [262144, 524288, 1048576]
TABLE = ["sdpa", "ours-none", "ours-query", "ours-all", "keymass-sdpa-bwd", "flex"]
PER_STAT = ["ours-lse", "ours-entropy", "ours-argmax", "ours-maxprob", "ours-masses", "ours-keymass"]


def flops(b, h, n, d, causal=True):
    f = 4.0 * b * h * n * n * d
    return f / 2 if causal else f


def eager_bytes(b, h, n):
    """scores fp16 (2) + masked copy (2) + float32 upcast (4) + softmax (4) + fp16 probs (2) per element"""
    return b * h * n * n * 14


def sdpa(q, k, v):
    """Causal attention; a decode step's single query (bottom-right, as `attention_with_stats` aligns it) sees every
    key, where SDPA's is_causal would align it top-left and show it the first key only."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] == k.shape[2],
                                          enable_gqa=q.shape[1] != k.shape[1])


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


def make_flex(score_mod=None):
    """FlexAttention, compiled, causal (its block mask built once per length), with `score_mod` if given; None
    where this torch has no FlexAttention."""
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
        return compiled(q, k, v, score_mod=score_mod, block_mask=masks[n], enable_gqa=q.shape[1] != k.shape[1])

    return run


def runners(q, k, v, n, flex):
    span = (n // 2, min(n, n // 2 + 64))
    return {
        "sdpa": lambda: sdpa(q, k, v),
        "eager+probs": lambda: eager_with_probs(q, k, v),
        "flex": (lambda: flex(q, k, v)) if flex else None,
        "keymass-sdpa-bwd": lambda: key_mass_by_sdpa_backward(q, k, v),
        "ours-none": lambda: attention_with_stats(q, k, v, stats="none"),
        "ours-lse": lambda: attention_with_stats(q, k, v, stats="lse"),
        "ours-query": lambda: attention_with_stats(q, k, v, stats="query", span=span),
        "ours-all": lambda: attention_with_stats(q, k, v, stats="all", span=span),
        "ours-entropy": lambda: attention_with_stats(q, k, v, stats=["entropy"]),
        "ours-argmax": lambda: attention_with_stats(q, k, v, stats=["argmax"]),
        "ours-maxprob": lambda: attention_with_stats(q, k, v, stats=["max_prob"]),
        "ours-masses": lambda: attention_with_stats(q, k, v, stats=["sink_mass", "local_mass", "span_mass"],
                                                    span=span),
        "ours-keymass": lambda: attention_with_stats(q, k, v, stats=["key_mass", "key_mean"]),
    }


def time_ms(fn, smoke=False):
    if smoke or not torch.cuda.is_available():
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    import triton

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def graph_ms(fn):
    """Median ms of replaying fn captured once in a CUDA graph: the GPU's time without the host's launch path, which
    a single call at 1k-2k tokens is bound by. Warm-up calls on a side stream first (the autotuner picks its
    configs there, on the real input, and cuDNN makes its plans)."""
    import triton

    g, _ = capture(fn, warmup=3)
    return triton.testing.do_bench(g.replay, warmup=25, rep=100, return_mode="median")


def time_once_with_peak(fn, base, warm=True):
    """One call timed with CUDA events (after one warm-up call), and its peak memory above `base`."""
    if warm:
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end), (torch.cuda.max_memory_allocated() - base) / 2**30


def peak_gib(fn, base):
    if not torch.cuda.is_available():
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def inputs(shape, n, dtype, device):
    h, hk, d = SHAPES[shape]
    g = torch.Generator(device=device).manual_seed(n)
    q = torch.randn(1, h, n, d, device=device, dtype=dtype, generator=g)
    k = torch.randn(1, hk, n, d, device=device, dtype=dtype, generator=g)
    v = torch.randn(1, hk, n, d, device=device, dtype=dtype, generator=g)
    return q, k, v


def bench_one(shape, n, dtype, device, methods, smoke, eager_limit_gib, flex, long=False, graph=False,
              decode=False):
    """Rows of each method at n tokens (decode: one decode step, the last query per head against n cached keys)."""
    h, hk, d = SHAPES[shape]
    q, k, v = inputs(shape, n, dtype, device)
    if decode:
        q = q[:, :, -1:].contiguous()
    base = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    fl = 4.0 * h * n * d if decode else flops(1, h, n, d)
    rows = []
    run = runners(q, k, v, n, flex)
    for m in methods:
        fn = run.get(m)
        row = dict(shape=shape, n=n, method=m, **({"decode": True} if decode else {}))
        if fn is None:
            row.update(ms=None, note="unavailable")
        elif m == "eager+probs" and eager_bytes(1, h, n) / 2**30 > eager_limit_gib:
            row.update(ms=None, note="OOM (needs ~%.0f GiB)" % (eager_bytes(1, h, n) / 2**30))
        else:
            try:
                if long:
                    ms, peak = time_once_with_peak(fn, base, warm=n < 1048576)
                elif graph:
                    ms, peak = graph_ms(fn), float("nan")
                else:
                    ms = time_ms(fn, smoke)
                    peak = peak_gib(fn, base)
                row.update(ms=ms, tflops=fl / (ms * 1e-3) / 1e12, peak_gib=peak)
            except (torch.OutOfMemoryError, ValueError) as e:  # ValueError: our memory check refused
                row.update(ms=None, note="OOM" if isinstance(e, torch.OutOfMemoryError) else str(e)[:80])
                torch.cuda.empty_cache()
        rows.append(row)
        ms = f"{row['ms']:10.3f}" if row.get("ms") is not None else "         -"
        extra = (f"{row['tflops']:7.1f} TFLOP/s  {row['peak_gib']:7.2f} GiB" if row.get("ms") is not None
                 else row.get("note", ""))
        tag = m + (" (decode)" if decode else "") + (" (graph)" if graph else "")
        print(f"{shape:9s} {n:8d} {tag:17s} {ms} ms  {extra}", flush=True)
    if (not (long or graph or smoke) and torch.cuda.is_available() and len(methods) > 1
            and any(r["method"] == "sdpa" and r.get("ms") for r in rows)):
        # SDPA once more after the others: at 40-260 ms a call, eager timings drift through a run (clocks, heat), so
        # a method timed long after SDPA can read 5-10 % off; the table's ratios take the mean of both SDPA timings
        ms = time_ms(run["sdpa"])
        rows.append(dict(shape=shape, n=n, method="sdpa-again", ms=ms, tflops=fl / (ms * 1e-3) / 1e12,
                         peak_gib=float("nan")))
        print(f"{shape:9s} {n:8d} {'sdpa (again)':17s} {ms:10.3f} ms", flush=True)
    run.clear()  # drop the closures that hold q, k, v before the next size
    del q, k, v
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def _length(text: str) -> int:
    """argparse type of the length options: a whole number of tokens, at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a length must be a whole number of tokens, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"a length must be at least 1 token, got {n}")
    return n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--lengths", nargs="*", type=_length, default=DEFAULT_LENGTHS)
    names = list(runners(None, None, None, 2, None))
    p.add_argument("--methods", nargs="+", default=TABLE + ["eager+probs"], choices=names)
    p.add_argument("--long-lengths", nargs="*", type=_length, default=LONG_LENGTHS,
                   help="32x128/8 only: every statistic separately, one timed call each")
    p.add_argument("--long-methods", nargs="+", default=["sdpa", "ours-none", "ours-query", "ours-all", "ours-keymass"],
                   choices=names)
    p.add_argument("--per-stat-lengths", nargs="*", type=_length, default=[8192, 32768],
                   help="lengths at which each statistic is also timed on its own")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    p.add_argument("--eager-limit-gib", type=float, default=70.0)
    p.add_argument("--flex-lengths", nargs="*", type=_length, default=[2048, 8192, 32768],
                   help="lengths at which FlexAttention runs (each one compiles)")
    p.add_argument("--graph-lengths", nargs="*", type=_length, default=[1024, 2048],
                   help="lengths at which SDPA, output only and everything are also timed as CUDA-graph replays (the "
                   "GPU's time: short single calls are bound by the host's launch path)")
    p.add_argument("--decode-lengths", nargs="*", type=_length, default=[],
                   help="cache lengths at which one decode step (one query per head against that many cached keys) "
                   "is timed as CUDA-graph replays: SDPA, output only, everything (default: none)")
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
            if n in args.per_stat_lengths:
                ms_list = ms_list + [m for m in PER_STAT if m not in ms_list]
            rows.extend(bench_one(shape, n, dtype, device, ms_list, args.smoke, args.eager_limit_gib, flex))
    long_rows = []
    if device == "cuda" and not args.smoke and "32x128/8" in args.shapes:
        for n in args.long_lengths:
            long_rows.extend(bench_one("32x128/8", n, dtype, device, args.long_methods, False, 0, None, long=True))
    graph_rows = []
    if device == "cuda" and not args.smoke:
        for shape in args.shapes:
            for n in args.graph_lengths:
                graph_rows.extend(bench_one(shape, n, dtype, device, ["sdpa", "ours-none", "ours-all"], False, 0,
                                            None, graph=True))
    decode_rows = []
    decode_lengths = [130] if args.smoke and args.decode_lengths else args.decode_lengths
    replayed = device == "cuda" and not args.smoke  # (smoke: one plain timed call each, the interpreter's path)
    if device == "cuda" or args.smoke:
        for shape in args.shapes:
            for n in decode_lengths:
                decode_rows.extend(bench_one(shape, n, dtype, device, ["sdpa", "ours-none", "ours-all"], args.smoke, 0,
                                             None, graph=replayed, decode=True))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows + long_rows + [{**r, "graph": True} for r in graph_rows]
                      + [{**r, "graph": replayed} for r in decode_rows], f, indent=1)
    print_table(rows)
    if graph_rows:
        print("\n# device time: each call captured once in a CUDA graph and its replay timed")
        print_table(graph_rows)
    per_stat = [r for r in rows if r["n"] in args.per_stat_lengths and (r["method"] in PER_STAT
                                                                         or r["method"] in ("sdpa", "ours-none"))]
    if per_stat:
        print("\n# each statistic on its own (output included)")
        print_long(per_stat)
    if long_rows:
        print("\n# 32x128/8 at 256k-1M tokens: one timed call each")
        print_long(long_rows)
    if decode_rows:
        print("\n# one decode step: the last query of each head against N cached keys"
              + ("" if args.smoke else ", CUDA-graph replays"))
        print_table(decode_rows)
    return rows + long_rows + graph_rows + decode_rows


def _by(rows):
    by = {}
    for r in rows:
        by.setdefault((r["shape"], r["n"]), {})[r["method"]] = r
    return by


def _ms(d, m):
    r = d.get(m)
    return r.get("ms") if r else None


def print_table(rows):
    """The README table: times in ms, ratios to SDPA measured in the same run."""
    cols = ["ours-none", "ours-query", "ours-all", "keymass-sdpa-bwd", "flex"]
    print("\n| shape | N | SDPA ms | output only | + per-query | everything | SDPA-bwd key mass | FlexAttention "
          "| eager+probs | peak GiB (everything) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (shape, n), d in _by(rows).items():
        s = _ms(d, "sdpa")
        if not s:
            continue
        again = _ms(d, "sdpa-again")
        s_text = f"{s:.3f}" if not again else f"{(s + again) / 2:.3f} ({s:.3f} / {again:.3f})"
        s = (s + again) / 2 if again else s  # (ratios against SDPA timed before and after the others)
        cells = []
        for m in cols + ["eager+probs"]:
            t = _ms(d, m)
            cells.append(f"{t:.3f} ({t / s:.2f}x)" if t else (d[m].get("note", "")[:12] if m in d else ""))
        peak = d.get("ours-all", {}).get("peak_gib")
        peak = "-" if peak is None or peak != peak else round(peak, 2)  # None: not run; NaN: not measured (graphs)
        length = n if n < 1024 else f"{n // 1024}k"
        print(f"| {shape} | {length} | {s_text} | " + " | ".join(cells) + f" | {peak} |")


def print_long(rows):
    print("\n| shape | N | method | ms | x SDPA | peak GiB above inputs |")
    print("|---|---|---|---|---|---|")
    for (shape, n), d in _by(rows).items():
        s = _ms(d, "sdpa")
        for m, r in d.items():
            t = r.get("ms")
            ratio = f"{t / s:.2f}x" if t and s else "-"
            print(f"| {shape} | {n // 1024}k | {m} | {t:.3f} | {ratio} | {r['peak_gib']:.2f} |" if t else
                  f"| {shape} | {n // 1024}k | {m} | - | - | {r.get('note', '')} |")


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
