"""One call of each kernel variant at N tokens, for Nsight Compute:

    ncu --clock-control none --metrics <list> python examples/profile_kernels.py --n 8192 [--config I]
(examples/gpu_profile.sh runs it with the metrics quoted in the README.)
"""

import argparse

import torch

from interp.kernels import attention_with_stats
from stats_configs_gpu import STATS  # beside this script: what "nomass" asks for


def pin(index: int):
    """Every statistics launch uses config `index` (no autotuning), as the launcher's config cache answers."""
    from interp.kernels import launcher, triton_stats

    configs = triton_stats._configs()
    if not 0 <= index < len(configs):
        raise ValueError(f"--config must be in 0..{len(configs) - 1}, got {index}")
    config = configs[index]
    print(f"statistics kernel pinned to config {index}: {config}", flush=True)

    launcher._tuned = launcher.PinnedConfig(config)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--config", type=int, default=None,
                   help="pin the statistics kernel to this entry of its config list (kernels/triton_stats.py)")
    p.add_argument("--stats", default="all", choices=["all", "nomass"],
                   help="the second variant profiled: every statistic, or every one but the masses")
    a = p.parse_args()
    if a.config is not None:
        pin(a.config)
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, a.heads, a.n, a.dim, device="cuda", dtype=torch.float16, generator=g)
    k = torch.randn(1, a.kv_heads, a.n, a.dim, device="cuda", dtype=torch.float16, generator=g)
    v = torch.randn(1, a.kv_heads, a.n, a.dim, device="cuda", dtype=torch.float16, generator=g)
    last = STATS[a.stats]
    for stats in ("none", "query", last):
        attention_with_stats(q, k, v, stats=stats)  # compile
    torch.cuda.synchronize()
    for stats in ("none", "query", last):
        attention_with_stats(q, k, v, stats=stats)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
