"""Timing and shape parsing shared by the GPU scripts that compare a call with and without a feature (sinks_gpu.py,
segments_gpu.py, softcap_gpu.py)."""

from __future__ import annotations

import time


def bench(fn, device: str) -> float:
    """Milliseconds of fn: triton.testing.do_bench on a GPU (its default: the mean over ~100 ms of runs after 25 ms
    of warm-up), one timed call on the CPU (the smoke test)."""
    if device == "cuda":
        from triton.testing import do_bench

        return do_bench(fn)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def parse_shape(shape: str) -> tuple[int, int, int]:
    """'HEADSxHEAD_DIM/KV_HEADS' (e.g. 32x128/8) -> (heads, head_dim, kv_heads)."""
    try:
        hd, kvh = shape.split("/")
        h, d = hd.split("x")
        return int(h), int(d), int(kvh)
    except ValueError:
        raise ValueError(f"a shape is HEADSxHEAD_DIM/KV_HEADS, e.g. 32x128/8; got {shape!r}") from None
