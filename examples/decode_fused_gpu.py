"""A decode step with every statistic, side by side on the GPU (CUDA-graph replays, one process): SDPA's output
alone, the packed statistics walk after cuDNN's forward (INTERP_DECODE_FUSED=0), and the fused walk
(`kernels/triton_decode_fused.py`) under its default tile and the variants given; then where the fused step's time
goes (torch.profiler).

    python examples/decode_fused_gpu.py --lengths 8192 32768 131072 --tiles 64x4 32x4 64x8 --parts 4 8
    python examples/decode_fused_gpu.py --profile 131072   # the kernels of 20 fused steps per shape at 128k
    python examples/decode_fused_gpu.py --dtypes fp16 bf16  # both input dtypes (default fp16)

--tiles: fused walk BLOCK_NxWARPS for head dims <= 128 (256: half the BLOCK_N); --parts: programs per SM the
cache is split for (`launcher_decode.FUSED_PER_SM`: 2).
"""

from __future__ import annotations

import argparse
import re

import torch

from interp.kernels import attention_with_stats, launcher_decode
from interp.kernels.bench import SHAPES, graph_ms, inputs, sdpa


DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _inputs(shape: str, n: int, dtype=torch.float16):
    """The benchmark's inputs (`interp.kernels.bench`), the last query of each head kept: a decode step."""
    q, k, v = inputs(shape, n, dtype, "cuda")
    return q[:, :, -1:].contiguous(), k, v


def _tile(text: str):
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"tile must read BLOCK_NxWARPS (e.g. 64x4), got {text!r}")
    bn, w = int(m.group(1)), int(m.group(2))
    if bn < 32 or bn & (bn - 1) or w not in (1, 2, 4, 8):
        raise argparse.ArgumentTypeError(f"tile {text!r}: BLOCK_N must be a power of two >= 32 and WARPS 1, 2, 4 or 8")
    return {64: (bn, w), 128: (bn, w), 256: (max(16, bn // 2), w)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--lengths", nargs="*", type=int, default=[8192, 32768, 131072])
    p.add_argument("--tiles", nargs="*", type=_tile, default=[])
    p.add_argument("--parts", nargs="*", type=int, default=[], help="programs per SM (default 2)")
    p.add_argument("--profile", nargs="*", type=int, default=[], help="lengths to profile the fused step at")
    p.add_argument("--dtypes", nargs="+", default=["fp16"], choices=list(DTYPES))
    a = p.parse_args(argv)
    if min(a.lengths + a.parts + a.profile, default=1) < 1:
        p.error("--lengths, --parts and --profile must be >= 1")
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU (it times decode steps on the device)")
    default_tile, default_per_sm = dict(launcher_decode.FUSED_TILE), launcher_decode.FUSED_PER_SM
    print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}, one query per head, every statistic")
    print("| shape | dtype | N | SDPA us | packed walk after cuDNN | fused (default) | " + " | ".join(
        [f"fused {t[64][0]}x{t[64][1]}" for t in a.tiles] + [f"fused {k}/SM" for k in a.parts]) + " |")
    for shape, dt, n in ((s, t, n) for s in a.shapes for t in a.dtypes for n in a.lengths):
        q, k, v = _inputs(shape, n, DTYPES[dt])
        span = (n // 2, min(n, n // 2 + 64))

        def ours():
            return attention_with_stats(q, k, v, stats="all", span=span)

        base = graph_ms(lambda: sdpa(q, k, v)) * 1e3
        cells = []
        launcher_decode.FUSED = False
        cells.append(graph_ms(ours) * 1e3)
        launcher_decode.FUSED = True
        cells.append(graph_ms(ours) * 1e3)
        for t in a.tiles:
            launcher_decode.FUSED_TILE.update(t)
            cells.append(graph_ms(ours) * 1e3)
            launcher_decode.FUSED_TILE.update(default_tile)
        for per in a.parts:
            launcher_decode.FUSED_PER_SM = per
            cells.append(graph_ms(ours) * 1e3)
            launcher_decode.FUSED_PER_SM = default_per_sm
        print(f"| {shape} | {dt} | {n // 1024}k | {base:.1f} | "
              + " | ".join(f"{c:.1f} ({c / base:.2f}x)" for c in cells) + " |", flush=True)
    for n in a.profile:
        from torch.profiler import ProfilerActivity, profile

        for shape in a.shapes:
            q, k, v = _inputs(shape, n)
            attention_with_stats(q, k, v, stats="all")
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(20):
                    attention_with_stats(q, k, v, stats="all")
                torch.cuda.synchronize()
            print(f"# {shape} n={n}, 20 fused steps")
            print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=6, max_name_column_width=60))


if __name__ == "__main__":
    main()
