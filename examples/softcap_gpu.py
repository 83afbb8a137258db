"""Soft-capped attention (Gemma 2) on a GPU: interp's kernels with softcap=C against FlexAttention with the same
tanh score_mod (what a user of SDPA would otherwise reach for: SDPA itself has no soft-capping) and against SDPA
without the cap (the speed of attention without it). Exactness: interp's output and statistics against float64 on
sampled rows.

    python examples/softcap_gpu.py [--shapes 8x256/4 16x256/8] [--lengths 2048 8192 32768] [--cap 50]

Prints one line per shape and length: times in ms (triton.testing.do_bench medians, one process) and ratios to
FlexAttention with the cap, and the largest errors against float64.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from gpu_timing import parse_shape
from triton.testing import do_bench

from interp.kernels import attention_with_stats
from interp.kernels.bench import make_flex


def flex_softcap(cap: float):
    """The benchmark's compiled causal FlexAttention (`interp.kernels.bench.make_flex`) with the tanh cap as its
    score_mod."""

    def capped(score, b, h, q_idx, kv_idx):
        return cap * torch.tanh(score / cap)

    run = make_flex(score_mod=capped)
    if run is None:
        raise SystemExit("this torch has no FlexAttention (torch.nn.attention.flex_attention): nothing to compare with")
    return run


def float64_rows(q, k, v, cap: float, rows: torch.Tensor, head: int):
    """Output and softmax of the given query rows of one head, in float64."""
    g = q.shape[1] // k.shape[1]
    qh = q[0, head, rows].double()
    kh, vh = k[0, head // g].double(), v[0, head // g].double()
    s = qh @ kh.T / math.sqrt(q.shape[-1])
    s = cap * torch.tanh(s / cap)
    s = s.masked_fill(torch.arange(k.shape[2], device=q.device)[None, :] > rows[:, None], float("-inf"))
    p = s.softmax(-1)
    return p @ vh, p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["8x256/4", "16x256/8"], help="HEADSxHEAD_DIM/KV_HEADS")
    ap.add_argument("--lengths", nargs="+", type=int, default=[2048, 8192, 32768])
    ap.add_argument("--cap", type=float, default=50.0)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    flex = flex_softcap(args.cap)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.dtype}, causal, softcap {args.cap}")
    print("shape, N | SDPA (no cap) | Flex+cap | ours+cap out | ours+cap all | out / Flex | all / Flex | "
          "max |out - f64| | max |p_max - f64|")
    for shape in args.shapes:
        h, d, kvh = parse_shape(shape)
        for n in args.lengths:
            g = torch.Generator(device="cuda").manual_seed(0)
            q = torch.randn(1, h, n, d, device="cuda", dtype=dtype, generator=g) * 2
            k = torch.randn(1, kvh, n, d, device="cuda", dtype=dtype, generator=g) * 2
            v = torch.randn(1, kvh, n, d, device="cuda", dtype=dtype, generator=g)
            t_sdpa = do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=h != kvh))
            t_flex = do_bench(lambda: flex(q, k, v))
            t_out = do_bench(lambda: attention_with_stats(q, k, v, softcap=args.cap, stats="none"))
            t_all = do_bench(lambda: attention_with_stats(q, k, v, softcap=args.cap, stats="all"))
            out, st = attention_with_stats(q, k, v, softcap=args.cap, stats="all")
            rows = torch.tensor([0, 1, n // 3, n - 2, n - 1], device="cuda")
            e_out = e_p = 0.0
            for head in (0, h - 1):
                o64, p64 = float64_rows(q, k, v, args.cap, rows, head)
                e_out = max(e_out, (out[0, head, rows].double() - o64).abs().max().item())
                e_p = max(e_p, (st.max_prob[0, head, rows].double() - p64.amax(-1)).abs().max().item())
            ref_flex = flex(q, k, v)
            e_flex = (ref_flex.float() - out.float()).abs().max().item()
            print(f"{shape}, {n} | {t_sdpa:.3f} | {t_flex:.3f} | {t_out:.3f} | {t_all:.3f} | "
                  f"{t_out / t_flex:.2f}x | {t_all / t_flex:.2f}x | {e_out:.1e} | {e_p:.1e} (vs Flex {e_flex:.1e})",
                  flush=True)


if __name__ == "__main__":
    main()
