"""Config pruning of the Triton kernels: shared-memory fit, and no autotuning for short inputs (GPU-side logic that
runs as plain Python, so it is tested here on the CPU)."""

import pytest
import torch

triton = pytest.importorskip("triton")

from interp.kernels import triton_forward as F  # noqa: E402

CONFIGS = [triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=3),
           triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
           triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1)]


def _named(dtype=torch.float16):
    return {"Q": torch.empty(1, dtype=dtype)}


@pytest.mark.parametrize("bucket,expect", [(16, 1), (256, 1), (512, 3), (8192, 3), (None, 3)])
def test_short_inputs_are_not_autotuned(monkeypatch, bucket, expect):
    monkeypatch.setattr(F, "AUTOTUNE", True)
    kw = {"BLOCK_D": 64} if bucket is None else {"BLOCK_D": 64, "LEN_BUCKET": bucket}
    kept = F.fitting(CONFIGS, _named(), kw, F._smem)
    assert len(kept) == expect and kept[0] is CONFIGS[0]


def test_shared_memory_fit_before_the_short_rule(monkeypatch):
    monkeypatch.setattr(F, "AUTOTUNE", True)
    kept = F.fitting(CONFIGS, _named(torch.float32), {"BLOCK_D": 256, "LEN_BUCKET": 64}, F._smem)
    assert len(kept) == 1 and F._smem(kept[0], 256, 4) * 1.25 <= F.SMEM_BUDGET  # the big tile does not fit
    monkeypatch.setattr(F, "AUTOTUNE", False)
    assert len(F.fitting(CONFIGS, _named(), {"BLOCK_D": 64, "LEN_BUCKET": 8192}, F._smem)) == 1


def test_statistics_configs_without_key_stats_drop_key_group_duplicates(monkeypatch):
    """KEY_GROUPS only changes how key mass is summed: without key statistics, configs differing in it alone are one
    kernel, timed once; with them, every config is a candidate. The GPU's config list is checked here."""
    from interp.kernels import triton_stats as S

    monkeypatch.setattr(S, "INTERPRET", False)
    configs = S._configs()
    assert any(c.kwargs["KEY_GROUPS"] > 1 for c in configs) and configs[0].kwargs["KEY_GROUPS"] == 1
    for c in configs:  # a group is at least one warp's 16 rows of the tensor-core tile
        assert c.kwargs["BLOCK_M"] % c.kwargs["KEY_GROUPS"] == 0 and c.kwargs["BLOCK_M"] // c.kwargs["KEY_GROUPS"] >= 16
    assert S._without_key_duplicates(configs, True) == configs
    kept = S._without_key_duplicates(configs, False)
    pair = [c for c in configs if not c.kwargs["SPLIT_MASSES"] and (
        c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages, getattr(c, "maxnreg", None)) == (
        128, 64, 8, 3, None)]
    assert [c.kwargs["KEY_GROUPS"] for c in pair] == [1, 8]  # 128x64 w8 s3, over the tile and per warp
    assert len(kept) == len(configs) - 1 and kept[0] is configs[0] and pair[0] in kept and pair[1] not in kept
    monkeypatch.setattr(F, "AUTOTUNE", True)
    named = _named()
    assert len(S._prune(configs, named, BLOCK_D=128, LEN_BUCKET=8192, WANT_KEY=False)) == len(kept)
    assert len(S._prune(configs, named, BLOCK_D=128, LEN_BUCKET=8192, WANT_KEY=True)) == len(configs)
