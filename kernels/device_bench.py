"""The autotuners' timer: each config's device time per call with warm caches, the host's launch path kept out.

Triton's default timer (`triton.testing.do_bench`) flushes the L2 cache before every call and times each call on
its own. Short calls then get a cold cache that a model's attention call never sees (its q and k were just written),
and configs within ~10 % of each other swap places. On an H100, CUDA-graph replays of calls with every statistic at
2k tokens, 9 heads x 64 (`docs/gpu/narrow_blocks_round16.log`, `bench_round16a.log`): the config Triton's timer
picked made the call 2.36x SDPA, the fastest config 2.15x; with this timer 2.22x (`bench_round16.log`).

Calls shorter than LONG_MS: n calls are issued back to back behind a sleep kernel long enough for the host to queue
all of them, so the events around them time the GPU's work alone, with the caches as the previous call left them;
n is chosen so the batch lasts about a millisecond. Where the host could not queue the batch within the sleep, the
sleep doubles and the batch is timed again. Longer calls are device-bound and their inputs pass the L2 cache: they
keep Triton's timer, whose picks there are the measured ones.
"""

from __future__ import annotations

import functools
import inspect
import math
import time

import triton  # (torch is imported where it is used: the Triton kernels' modules load without it, for
# `examples/sm90_registers.py`'s compiles on a machine with Triton alone)

BATCH_MS = 1.0  # GPU time per timed batch
REPS = 7  # batches; the median is the config's time
# calls of at least this many ms keep Triton's timer. Timed with this one, the 8k proxy that picks the config of
# every longer call (`launcher.TUNE_LEN`) once took one 18 % slower at 128k for 32 x 128 (`bench_round16b.log`)
LONG_MS = 0.2


@functools.lru_cache(maxsize=1)
def _sleep_rate() -> float:
    """The sleep kernel's cycles per ms, measured once."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000_000)  # warm-up
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    end.synchronize()
    return 10_000_000 / max(start.elapsed_time(end), 1e-3)


def device_bench(fn, quantiles=None, **_ignored):
    """Device ms per call of fn: the median over REPS batches (with quantiles, the values at those quantiles, as
    `triton.testing.do_bench` returns them)."""
    import torch

    if not torch.cuda.is_available():  # (the autotuners time only on a GPU; this keeps the function whole)
        times = []
        for _ in range(REPS):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return _pick(times, quantiles)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    rate = _sleep_rate()
    sleep_ms = 1.0
    torch.cuda._sleep(int(sleep_ms * rate))  # one call, its launch hidden behind the sleep as well
    start.record()
    fn()
    end.record()
    end.synchronize()
    once = start.elapsed_time(end)
    if once >= LONG_MS:
        return triton.testing.do_bench(fn, quantiles=quantiles)
    n = max(1, min(200, math.ceil(BATCH_MS / max(once, 1e-3))))
    times: list[float] = []
    while len(times) < REPS:
        torch.cuda._sleep(int(sleep_ms * rate))
        t = time.perf_counter()
        start.record()
        for _ in range(n):
            fn()
        end.record()
        queued_ms = (time.perf_counter() - t) * 1e3
        end.synchronize()
        if queued_ms > 0.8 * sleep_ms and sleep_ms < 1000:  # the GPU may have waited for the host: longer sleep
            sleep_ms *= 2
            continue
        times.append(start.elapsed_time(end) / n)
    return _pick(times, quantiles)


def _pick(times, quantiles):
    times = sorted(times)
    if quantiles is None:
        return times[len(times) // 2]
    return [times[min(len(times) - 1, int(q * len(times)))] for q in quantiles]


def autotune_timer() -> dict:
    """Keyword arguments for `triton.autotune` that make it time with `device_bench` (none on a Triton whose
    autotuner takes no timer: it keeps its own)."""
    if "do_bench" not in inspect.signature(triton.autotune).parameters:
        return {}
    return {"do_bench": device_bench}
