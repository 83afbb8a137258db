"""The autotuners' timer (`kernels/device_bench.py`): wired into every autotuned kernel, and on a GPU it times the
GPU's work (a sleep kernel twice as long times twice as long, however short, with the host's launch cost out)."""

import inspect

import pytest
import torch
import triton

from interp.kernels import device_bench
from interp.kernels.triton_backward import bwd_dkdv_kernel, bwd_dq_kernel
from interp.kernels.triton_forward import attention_fwd_kernel
from interp.kernels.triton_stats import attention_stats_kernel

HAS_TIMER = "do_bench" in inspect.signature(triton.autotune).parameters


@pytest.mark.skipif(not HAS_TIMER, reason="this Triton's autotuner takes no timer")
@pytest.mark.parametrize("kernel", [attention_stats_kernel, attention_fwd_kernel, bwd_dkdv_kernel, bwd_dq_kernel],
                         ids=["stats", "forward", "dkdv", "dq"])
def test_every_autotuner_times_with_it(kernel):
    assert kernel.do_bench is device_bench.device_bench


def test_quantiles_and_median():
    calls = []
    med = device_bench.device_bench(lambda: calls.append(1))
    assert isinstance(med, float) and med >= 0 and len(calls) >= device_bench.REPS
    assert device_bench._pick([5.0, 1.0, 3.0, 2.0, 4.0], None) == 3.0
    assert device_bench._pick([5.0, 1.0, 3.0, 2.0, 4.0], (0.5, 0.2, 0.8)) == [3.0, 2.0, 5.0]


@pytest.mark.gpu
def test_times_the_gpu_not_the_host():
    rate = device_bench._sleep_rate()
    short = device_bench.device_bench(lambda: torch.cuda._sleep(int(0.005 * rate)))  # 5 us: launch-bound if timed
    double = device_bench.device_bench(lambda: torch.cuda._sleep(int(0.010 * rate)))  # one call at a time
    assert 0.004 < short < 0.009, short
    assert 1.5 < double / short < 2.4, (short, double)


@pytest.mark.gpu
def test_long_calls_keep_tritons_timer(monkeypatch):
    rate = device_bench._sleep_rate()
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, quantiles=None: -1.0)
    assert device_bench.device_bench(lambda: torch.cuda._sleep(int(2 * device_bench.LONG_MS * rate))) == -1.0
    assert device_bench.device_bench(lambda: torch.cuda._sleep(int(0.2 * device_bench.LONG_MS * rate))) > 0
