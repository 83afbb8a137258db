"""Where a call with learned sinks spends its GPU time beside the same call without them (torch.profiler, CUDA time
per kernel over five calls after three warm-ups): GPT-OSS's attention shape, bf16.

    python examples/sinks_profile_gpu.py [--n 8192] [--window 128] [--stats all]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from interp.kernels import attention_with_stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--stats", default="all")
    args = ap.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, 64, args.n, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, 8, args.n, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, 8, args.n, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    sinks = torch.randn(64, device="cuda", generator=g).to(torch.bfloat16)
    for label, s in (("without sinks", None), ("with sinks", sinks)):
        def call():
            return attention_with_stats(q, k, v, sinks=s, sliding_window=args.window or None, stats=args.stats)

        for _ in range(3):
            call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                call()
            torch.cuda.synchronize()
        print(f"## {label}: N={args.n}, window={args.window}, stats={args.stats}")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


if __name__ == "__main__":
    main()
