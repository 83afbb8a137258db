"""Segmented attention on a GPU (Llama 4's chunked layers, packed sequences): cost against SDPA doing the same work,
and exactness against float64.

Llama-4-Scout / Maverick attention: 40 query heads, 8 KV heads, head dim 128; chunked layers see only their own
chunk of 8192 tokens. For each length this times (triton.testing.do_bench medians, one process):
- SDPA on the chunks (the segments as a batch when they are all of one length, else one causal call per segment):
  the speed of the attention these layers compute;
- SDPA causal over the whole row (what ignoring the chunks would cost);
- interp with `segment_ids`, output only and every statistic.
Then it checks interp's call against float64 on rows at both ends of every segment of the first and last heads:
output, lse, max_prob, entropy, and |sum of key mass - n| / n (each query's probabilities sum to 1).

    python examples/segments_gpu.py [--shapes 40x128/8] [--lengths 16384 65536 131072] [--chunk 8192]
                                    [--packed 3000 5000 ...] [--device cpu]

`--packed L1 L2 ...`: segments of these lengths (repeated to fill each length) instead of chunks.
`--device cpu` (Triton interpreter; tiny shapes) is the smoke test CI runs: one timed call instead of do_bench.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from gpu_timing import bench, parse_shape

from interp.kernels import attention_with_stats, segments


def segment_lengths(n: int, chunk: int, packed: list[int]) -> list[int]:
    """Lengths of the segments of an n-token row: chunks of `chunk`, or the packed lengths repeated."""
    cycle = packed or [chunk]
    out, i = [], 0
    while sum(out) < n:
        out.append(min(cycle[i % len(cycle)], n - sum(out)))
        i += 1
    return out


def sdpa_segments(q, k, v, lens: list[int]):
    """Causal SDPA on each segment: one batched call when all segments share a length, else one call each."""
    h, kvh = q.shape[1], k.shape[1]
    if len(set(lens)) == 1:
        m, c = len(lens), lens[0]

        def batched(t):
            return t[0].reshape(t.shape[1], m, c, t.shape[-1]).transpose(0, 1)

        return F.scaled_dot_product_attention(batched(q), batched(k), batched(v), is_causal=True,
                                              enable_gqa=h != kvh)
    s, outs = 0, []
    for n in lens:
        outs.append(F.scaled_dot_product_attention(q[:, :, s:s + n], k[:, :, s:s + n], v[:, :, s:s + n],
                                                   is_causal=True, enable_gqa=h != kvh))
        s += n
    return torch.cat(outs, dim=2)


def check(q, k, v, ids, lens: list[int]) -> dict:
    """Largest errors against float64 on rows at both ends of every segment, first and last heads."""
    n, h = q.shape[2], q.shape[1]
    g = h // k.shape[1]
    out, st = attention_with_stats(q, k, v, segment_ids=ids, stats="all")
    err = dict(out=0.0, lse=0.0, max_prob=0.0, entropy=0.0, mass_sum=0.0)
    s = 0
    for m in lens:
        rows = sorted({s, s + 1, s + m // 2, s + m - 1} & set(range(s, s + m)))
        for head in (0, h - 1):
            r = torch.tensor(rows, device=q.device)
            qh = q[0, head, r].double()
            kh, vh = k[0, head // g, s:s + m].double(), v[0, head // g, s:s + m].double()
            sc = (qh @ kh.T / math.sqrt(q.shape[-1])).masked_fill(
                torch.arange(s, s + m, device=q.device)[None, :] > r[:, None], float("-inf"))
            lse = torch.logsumexp(sc, -1)
            p = torch.exp(sc - lse[:, None])
            err["out"] = max(err["out"], (out[0, head, r].double() - p @ vh).abs().max().item())
            err["lse"] = max(err["lse"], (st.lse[0, head, r].double() - lse).abs().max().item())
            err["max_prob"] = max(err["max_prob"], (st.max_prob[0, head, r].double() - p.amax(-1)).abs().max().item())
            ent = -torch.special.xlogy(p, p).sum(-1)
            err["entropy"] = max(err["entropy"], (st.entropy[0, head, r].double() - ent).abs().max().item())
        s += m
    for head in (0, h - 1):
        err["mass_sum"] = max(err["mass_sum"], abs(st.key_mass[0, head].double().sum().item() - n) / n)
    return err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["40x128/8"], help="HEADSxHEAD_DIM/KV_HEADS")
    ap.add_argument("--lengths", nargs="+", type=int, default=[16384, 65536, 131072])
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--packed", nargs="*", type=int, default=[], help="packed segment lengths instead of chunks")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args()
    if args.chunk < 1 or any(n < 1 for n in args.lengths + args.packed):
        ap.error("--chunk, --lengths and --packed must be positive")
    dtype = getattr(torch, args.dtype)
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        ap.error("this script times a CUDA GPU and none is here; --device cpu runs the smoke test")
    name = torch.cuda.get_device_name() if dev == "cuda" else "CPU (Triton interpreter)"
    kind = f"packed {args.packed}" if args.packed else f"chunks of {args.chunk}"
    print(f"# {name}, torch {torch.__version__}, {args.dtype}, causal, {kind}")
    print("shape, N, segments | SDPA on the segments ms | SDPA whole row | ours out | ours all | out / SDPA segs | "
          "all / SDPA segs | max err: out, lse, max_prob, entropy, sum(mass)/n")
    for shape in args.shapes:
        h, d, kvh = parse_shape(shape)
        for n in args.lengths:
            lens = segment_lengths(n, args.chunk, args.packed)
            ids = torch.repeat_interleave(torch.arange(len(lens), device=dev),
                                          torch.tensor(lens, device=dev))[None]
            segments.mark_made(ids)  # as the model's mask function marks its ids: read once, not on every call
            g = torch.Generator(device=dev).manual_seed(0)
            q = torch.randn(1, h, n, d, device=dev, dtype=dtype, generator=g) * 2
            k = torch.randn(1, kvh, n, d, device=dev, dtype=dtype, generator=g) * 2
            v = torch.randn(1, kvh, n, d, device=dev, dtype=dtype, generator=g)
            t_seg = bench(lambda: sdpa_segments(q, k, v, lens), dev)
            t_row = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=h != kvh), dev)
            t_out = bench(lambda: attention_with_stats(q, k, v, segment_ids=ids, stats="none"), dev)
            t_all = bench(lambda: attention_with_stats(q, k, v, segment_ids=ids, stats="all"), dev)
            e = check(q, k, v, ids, lens)
            print(f"{shape}, {n}, {len(lens)} | {t_seg:.3f} | {t_row:.3f} | {t_out:.3f} | {t_all:.3f} | "
                  f"{t_out / t_seg:.2f}x | {t_all / t_seg:.2f}x | {e['out']:.1e}, {e['lse']:.1e}, "
                  f"{e['max_prob']:.1e}, {e['entropy']:.1e}, {e['mass_sum']:.1e}", flush=True)


if __name__ == "__main__":
    main()
