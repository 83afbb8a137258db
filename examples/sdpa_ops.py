"""Which of torch's fused attention ops run here, with GQA, and how fast: the choice behind kernels/sdpa_path.py.

    python examples/sdpa_ops.py [--lengths 8192 32768]
Times (median of triton.testing.do_bench) F.scaled_dot_product_attention as a user calls it, each SDPA backend
forced, and the ops that return the log-sum-exp (cuDNN, flash) with native GQA and with K/V expanded.
"""

import argparse

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from interp.kernels import sdpa_path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", nargs="+", type=int, default=[2048, 8192, 32768])
    a = p.parse_args()
    print("torch", torch.__version__, torch.cuda.get_device_name(), "cudnn", torch.backends.cudnn.version())
    for n in a.lengths:
        for h, hk, d in ((32, 8, 128), (9, 3, 64), (4, 1, 256)):
            g = torch.Generator(device="cuda").manual_seed(0)
            q = torch.randn(1, h, n, d, device="cuda", dtype=torch.float16, generator=g)
            k = torch.randn(1, hk, n, d, device="cuda", dtype=torch.float16, generator=g)
            v = torch.randn(1, hk, n, d, device="cuda", dtype=torch.float16, generator=g)
            ke, ve = k.repeat_interleave(h // hk, 1), v.repeat_interleave(h // hk, 1)
            ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            cands = {"F.sdpa default": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                               enable_gqa=True)}
            for be in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
                def f(be=be):
                    with sdpa_kernel(be):
                        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                cands[f"F.sdpa {be.name}"] = f
            for name, op in sdpa_path.OPS.items():
                cands[f"{name} op, GQA"] = lambda op=op: op(q, k, v, True, None)[0]
                cands[f"{name} op, K/V expanded"] = lambda op=op: op(q, ke, ve, True, None)[0]
            for name, fn in cands.items():
                try:
                    out = fn()
                    err = (out.float() - ref.float()).abs().max().item()
                    ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
                    print(f"{h}x{d}/{hk} n={n:6d} {name:28s} {ms:8.3f} ms  max|diff| vs default {err:.1e}", flush=True)
                except Exception as e:  # noqa: BLE001 - a probe: report and go on
                    print(f"{h}x{d}/{hk} n={n:6d} {name:28s} fails: {type(e).__name__}: {str(e)[:100]}", flush=True)
            del q, k, v, ke, ve
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
