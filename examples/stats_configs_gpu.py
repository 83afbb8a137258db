"""The statistics kernel's tile configs timed one by one (each pinned, no autotuning) beside SDPA, and each checked
against the float32 reference (PyTorch): how a config candidate (e.g. the key-by-query TRANSPOSE tiles of
`kernels/triton_stats_t.py`) compares with the ones the autotuner already has.

    INTERP_STATS_TRIAL_CONFIGS=1 python examples/stats_configs_gpu.py --lengths 8192 32768 [--configs 2 10 11 12]

Time: median of triton.testing.do_bench over the whole `attention_with_stats` call (SDPA output + lse, then the
statistics pass), fp16 or bf16, causal, 32 heads x 128, GQA 32/8 (or `--shape`), batch 1. Configs index
`triton_stats._configs()`.
At 1k-2k tokens a single call is host-bound: `--graph` captures each call (and SDPA) in a CUDA graph once and times
its replay, i.e. the GPU's time, which is what the configs change:
    INTERP_STATS_TRIAL_CONFIGS=1 python examples/stats_configs_gpu.py --lengths 1024 2048 --graph --configs 0 10 13
`--window W` adds a sliding window (`--stats none` then times the Triton forward alone). `--decode` times one decode
step per length (the last query of each head against N cached keys).
`--shape` times the bundled models' attention shapes instead (heads x head_dim / KV heads, as `kernels/bench.py`
names them): 9x64/3 (SmolLM2-135M) or 4x256/1 (Gemma 3 270M).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton

from interp.kernels import attention_with_stats, launcher, triton_stats

SHAPES = {"32x128/8": (32, 8, 128), "9x64/3": (9, 3, 64), "4x256/1": (4, 1, 256)}  # heads, KV heads, head_dim
# --stats choices: "nomass" is every statistic but the sink / local / span masses (what their walks cost)
STATS = {"none": "none", "query": "query", "all": "all",
         "nomass": ("max_prob", "argmax", "entropy", "key_mass", "key_mean", "key_count")}


def check(q, k, v, stats: str, ref, win: dict) -> float:
    """Largest error of the pinned config against the PyTorch reference's (output, statistics) `ref`: absolute on
    the per-query statistics, relative to the largest on key_mass, argmax as the fraction of rows that differ; with
    no statistic asked for (`--stats none`), the output's largest absolute error."""
    out, st = attention_with_stats(q, k, v, stats=STATS[stats], backend="triton", **win)
    ref_out, ref = ref
    if not ref.requested():
        return float((out.double() - ref_out.double()).abs().max())
    worst = 0.0
    for name, want in ref.items():
        got = getattr(st, name)
        if name == "argmax":
            worst = max(worst, float((got != want).double().mean()))
        elif name in ("key_mass", "key_mean", "key_count"):
            worst = max(worst, float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)))
        else:
            worst = max(worst, float((got.double() - want).abs().nan_to_num(0.0).max()))
    return worst


def timed(fn, graph: bool) -> float:
    """Median ms of fn (triton.testing.do_bench); graph: of replaying fn captured once in a CUDA graph (after a
    warm-up call outside the capture: compilation, cuDNN plans, the allocator)."""
    if not graph:
        return triton.testing.do_bench(fn)
    from cuda_graphs_gpu import graphed  # beside this script

    g, _ = graphed(fn, warmup=1)
    return triton.testing.do_bench(g.replay)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", nargs="+", type=int, default=[8192, 32768])
    p.add_argument("--configs", nargs="*", type=int, default=None, help="indices (default: every config)")
    p.add_argument("--stats", nargs="+", default=["all"], choices=list(STATS))
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    p.add_argument("--shape", default="32x128/8", choices=list(SHAPES), help="heads x head_dim / KV heads")
    p.add_argument("--graph", action="store_true", help="time CUDA-graph replays (device time; for 1k-2k)")
    p.add_argument("--window", type=int, default=None, help="a sliding window (the Triton forward gives the output; "
                   "the SDPA column stays plain causal attention)")
    p.add_argument("--decode", action="store_true", help="one decode step per length: the last query of each head "
                   "against N cached keys (its reference is cheap: checked at every length)")
    p.add_argument("--smoke", action="store_true", help="CPU (Triton interpreter), 128 tokens, 4 heads: the script's "
                   "own check, not a timing")
    a = p.parse_args(argv)
    if a.graph and a.smoke:
        p.error("--graph needs a CUDA GPU; --smoke runs on the CPU")
    if a.window is not None and a.window < 1:
        p.error(f"--window must be >= 1, got {a.window}")
    heads, kv, dim = SHAPES[a.shape]
    dev = "cpu" if a.smoke else "cuda"
    if a.smoke:
        heads, kv = (4, 2) if kv > 1 else (4, 1)
        a.lengths, a.dtype = [128], "float32"
        triton.testing.do_bench = lambda fn: (fn(), 1.0)[1]
    dtype = getattr(torch, a.dtype)
    win = {} if a.window is None else {"sliding_window": a.window}
    configs = triton_stats._configs()
    chosen = a.configs if a.configs is not None else list(range(len(configs)))
    bad = [i for i in chosen if not 0 <= i < len(configs)]
    if bad:
        p.error(f"--configs {bad}: the list has {len(configs)} configs here (0..{len(configs) - 1}; the CPU "
                "interpreter has one)")
    print(f"{torch.cuda.get_device_name() if not a.smoke else 'CPU smoke'}, {a.dtype}, causal"
          f"{'' if a.window is None else f', window {a.window}'}, {heads}x{dim} GQA "
          f"{heads}/{kv}; time relative to SDPA in the same run; err (N <= 8192): worst error vs the reference "
          "(key statistics relative; argmax: fraction of rows differing)", flush=True)
    for n in a.lengths:
        g = torch.Generator(device=dev).manual_seed(0)
        q = torch.randn(1, heads, n, dim, device=dev, dtype=dtype, generator=g)
        k = torch.randn(1, kv, n, dim, device=dev, dtype=dtype, generator=g)
        v = torch.randn(1, kv, n, dim, device=dev, dtype=dtype, generator=g)
        if a.decode:  # (SDPA's is_causal would show a single query the first key only: it sees every key)
            q = q[:, :, -1:].contiguous()
        base = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=not a.decode, enable_gqa=True),
                     a.graph)
        print(f"N={n}{' (decode)' if a.decode else ''}: SDPA {base:.3f} ms", flush=True)
        refs = {}
        if n <= 8192 or a.decode:  # the float32 reference (PyTorch) takes minutes beyond
            for stats in a.stats:
                refs[stats] = attention_with_stats(q, k, v, stats=STATS[stats], backend="reference", **win)
        for i in chosen:
            name = triton_stats.config_tag(configs[i])
            launcher._tuned = launcher.PinnedConfig(configs[i])
            for stats in a.stats:
                try:
                    err = check(q, k, v, stats, refs[stats], win) if stats in refs else float("nan")
                    t = timed(lambda: attention_with_stats(q, k, v, stats=STATS[stats], backend="triton", **win),
                              a.graph)
                    print(f"  [{i:2d}] {name:<28} {stats:<6} {t:8.3f} ms {t / base:6.2f}x  err {err:.1e}",
                          flush=True)
                except Exception as e:  # a config that does not fit this GPU (shared memory) or fails to compile
                    print(f"  [{i:2d}] {name:<28} {stats:<6} failed: {type(e).__name__}: "
                          f"{str(e).splitlines()[0][:120]}", flush=True)
        launcher._tuned = {}
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
