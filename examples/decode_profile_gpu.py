"""Where a decode step's device time goes: one query per head against N cached keys, every statistic, the CUDA
kernels of 20 calls under torch.profiler (after a tuning call), with the statistics kernel's tile config and parts.

    python examples/decode_profile_gpu.py --shape 9x64/3 --n 131072
"""

import argparse
import re

import torch
from torch.profiler import ProfilerActivity, profile

from interp.kernels import attention_with_stats, launcher, walk_parts


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="9x64/3", help="HEADSxDIM/KV_HEADS")
    p.add_argument("--n", type=int, default=131072, help="cached keys")
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args()
    shape = re.fullmatch(r"(\d+)x(\d+)/(\d+)", a.shape)
    if shape is None or min(int(x) for x in shape.groups()) < 1 or a.n < 1 or a.reps < 1:
        p.error(f"--shape must read HEADSxDIM/KV_HEADS (e.g. 9x64/3) and --n, --reps be >= 1; got {a.shape!r}, "
                f"{a.n}, {a.reps}")
    h, d, hk = (int(x) for x in shape.groups())
    if h % hk:
        p.error(f"--shape: heads ({h}) must be a multiple of KV heads ({hk})")
    g = torch.Generator("cuda").manual_seed(0)
    kw = dict(device="cuda", dtype=torch.float16, generator=g)
    q = torch.randn(1, h, 1, d, **kw)
    k, v = (torch.randn(1, hk, a.n, d, **kw) for _ in range(2))
    attention_with_stats(q, k, v, causal=True, stats="all")  # tunes
    torch.cuda.synchronize()
    for key, config in launcher._tuned.items():
        parts = walk_parts.n_parts(config.all_kwargs(), 1, a.n, h, walk_parts.target_programs(q.device), True, True)
        print(f"{a.shape} n={a.n}: config {config}, parts {parts}")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(a.reps):
            attention_with_stats(q, k, v, causal=True, stats="all")
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=70))


if __name__ == "__main__":
    main()
