"""One CUDA-graph capture for the package, its benchmark and the GPU scripts: warm-up calls on a side stream (Triton's
autotuning and compiles, cuDNN's plans and the allocator's first blocks happen there, outside the capture), then one
captured call."""

from __future__ import annotations

import torch


def capture(fn, warmup: int = 3, device=None):
    """(graph, fn's result at capture, whose tensors every replay overwrites): fn called `warmup` times on a side
    stream of `device` (the current CUDA device by default), then captured once."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out
