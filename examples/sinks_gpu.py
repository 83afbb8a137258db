"""Learned attention sinks (GPT-OSS's `s_aux`) on a GPU: what the sink logits cost, and exactness against float64.

GPT-OSS-20B / 120B attention: 64 query heads, 8 KV heads, head dim 64, causal, every other layer a 128-token
sliding window. For each shape, length and window this times (triton.testing.do_bench medians, one process):
SDPA without sinks (the speed of attention; SDPA has no sink logits), interp without sinks and with them, output
only and every statistic. Then it checks the call with sinks against float64 on sampled rows of the first and last
heads: output, lse' (the sink-inclusive normaliser), max_prob, entropy (sink term included) and each key's mass.

    python examples/sinks_gpu.py [--shapes 64x64/8] [--lengths 2048 8192 32768] [--windows 0 128] [--device cpu]

`--device cpu` (Triton interpreter; tiny shapes) is the smoke test CI runs: one timed call instead of do_bench.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from gpu_timing import bench, parse_shape

from interp.kernels import attention_with_stats


def float64_rows(q, k, v, sinks, rows: torch.Tensor, head: int, window: int):
    """Output, lse', probabilities over the keys and the sink's probability of the given query rows of one head, in
    float64, the way transformers' eager GPT-OSS attention computes them (sink logit joins the softmax unscaled)."""
    g = q.shape[1] // k.shape[1]
    qh = q[0, head, rows].double()
    kh, vh = k[0, head // g].double(), v[0, head // g].double()
    s = qh @ kh.T / math.sqrt(q.shape[-1])
    j = torch.arange(k.shape[2], device=q.device)[None, :]
    hidden = j > rows[:, None]
    if window:
        hidden |= rows[:, None] - j >= window
    s = s.masked_fill(hidden, float("-inf"))
    z = sinks[head].double().expand(len(rows), 1)
    full = torch.cat([s, z], dim=-1)
    lse = torch.logsumexp(full, dim=-1)
    p = torch.exp(full - lse[:, None])
    return p[:, :-1] @ vh, lse, p[:, :-1], p[:, -1]


def check(q, k, v, sinks, window: int) -> dict:
    """Largest errors of the call with sinks against float64: output, lse', max_prob and entropy on rows at both
    ends of the first and last heads, and |sum of key mass - (n - sum of p_sink)| / n over each of those heads."""
    n, h = q.shape[2], q.shape[1]
    out, st = attention_with_stats(q, k, v, sinks=sinks, sliding_window=window or None, stats="all")
    rows = torch.tensor([0, 1, n // 3, n - 2, n - 1], device=q.device)
    err = dict(out=0.0, lse=0.0, max_prob=0.0, entropy=0.0, mass_sum=0.0)
    for head in (0, h - 1):
        o64, lse64, p64, ps64 = float64_rows(q, k, v, sinks, rows, head, window)
        err["out"] = max(err["out"], (out[0, head, rows].double() - o64).abs().max().item())
        err["lse"] = max(err["lse"], (st.lse[0, head, rows].double() - lse64).abs().max().item())
        err["max_prob"] = max(err["max_prob"], (st.max_prob[0, head, rows].double() - p64.amax(-1)).abs().max().item())
        ent64 = -(torch.special.xlogy(p64, p64).sum(-1) + torch.special.xlogy(ps64, ps64))
        err["entropy"] = max(err["entropy"], (st.entropy[0, head, rows].double() - ent64).abs().max().item())
        # every row's key mass plus its sink probability is 1: sum over keys = n - sum over rows of p_sink
        lse_all = st.lse[0, head].double()
        ps_all = torch.exp(sinks[head].double() - lse_all)
        want = n - ps_all.sum().item()
        err["mass_sum"] = max(err["mass_sum"], abs(st.key_mass[0, head].double().sum().item() - want) / n)
    return err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["64x64/8"], help="HEADSxHEAD_DIM/KV_HEADS")
    ap.add_argument("--lengths", nargs="+", type=int, default=[2048, 8192, 32768])
    ap.add_argument("--windows", nargs="+", type=int, default=[0, 128], help="0 = full causal attention")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        ap.error("this script times a CUDA GPU and none is here; --device cpu runs the smoke test")
    name = torch.cuda.get_device_name() if dev == "cuda" else "CPU (Triton interpreter)"
    print(f"# {name}, torch {torch.__version__}, {args.dtype}, causal, GPT-OSS sink logits")
    print("shape, N, window | SDPA (no sinks) ms | ours out | ours out+sinks | ours all | ours all+sinks | "
          "out+sinks / out | all+sinks / all | all+sinks / SDPA | max err: out, lse, max_prob, entropy, sum(mass)/n")
    for shape in args.shapes:
        h, d, kvh = parse_shape(shape)
        for window in args.windows:
            for n in args.lengths:
                g = torch.Generator(device=dev).manual_seed(0)
                q = torch.randn(1, h, n, d, device=dev, dtype=dtype, generator=g) * 2
                k = torch.randn(1, kvh, n, d, device=dev, dtype=dtype, generator=g) * 2
                v = torch.randn(1, kvh, n, d, device=dev, dtype=dtype, generator=g)
                sinks = (torch.randn(h, device=dev, generator=g) * 2).to(dtype)
                w = window or None
                if w:
                    mask = torch.ones(n, n, device=dev, dtype=torch.bool).tril().triu(-(w - 1))
                    t_sdpa = bench(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=h != kvh), dev)
                else:
                    t_sdpa = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=h != kvh), dev)
                t = {}
                for name, s, stats in (("out", None, "none"), ("out_s", sinks, "none"), ("all", None, "all"),
                                       ("all_s", sinks, "all")):
                    t[name] = bench(lambda: attention_with_stats(q, k, v, sinks=s, sliding_window=w, stats=stats), dev)
                e = check(q, k, v, sinks, window)
                print(f"{shape}, {n}, {window} | {t_sdpa:.3f} | {t['out']:.3f} | {t['out_s']:.3f} | {t['all']:.3f} | "
                      f"{t['all_s']:.3f} | {t['out_s'] / t['out']:.2f}x | {t['all_s'] / t['all']:.2f}x | "
                      f"{t['all_s'] / t_sdpa:.2f}x | {e['out']:.1e}, {e['lse']:.1e}, {e['max_prob']:.1e}, "
                      f"{e['entropy']:.1e}, {e['mass_sum']:.1e}", flush=True)


if __name__ == "__main__":
    main()
