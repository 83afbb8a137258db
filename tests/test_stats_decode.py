"""Packed decode-step statistics (`kernels/triton_stats_decode.py`, the default; off with INTERP_DECODE_PACK=0):
one query per head, the G query heads of a KV head in one tile, the cache in parts. Against the PyTorch reference
and the general kernel (argmax and max_prob exactly, key mass to float32 rounding), ties across parts, NaN rows, and
the calls the path leaves to the general kernel."""

import pytest
import torch

triton = pytest.importorskip("triton")

from interp.kernels import attention_with_stats, launcher_decode, stats_from_lse  # noqa: E402
from test_kernel_triton import check_against_reference, make  # noqa: E402

STATS = ["lse", "max_prob", "argmax", "entropy", "sink_mass", "local_mass", "span_mass", "key_mass", "key_mean",
         "key_count"]


@pytest.fixture(params=["fused", "walk"])
def packed(monkeypatch, request):
    """The packed path on, as the fused walk (output and statistics in one pass, the default) or as the statistics
    walk after the forward (INTERP_DECODE_FUSED=0); every call of it recorded (batch x KV heads, parts)."""
    monkeypatch.setattr(launcher_decode, "ENABLED", True)
    monkeypatch.setattr(launcher_decode, "FUSED", request.param == "fused")
    calls = []
    real = launcher_decode.n_parts

    def spy(n_programs, key_blocks, device, *per_sm):
        calls.append(real(n_programs, key_blocks, device, *per_sm))
        return calls[-1]

    monkeypatch.setattr(launcher_decode, "n_parts", spy)
    return calls


@pytest.mark.parametrize("shape", [(2, 4, 1, 32), (1, 9, 3, 64), (1, 8, 8, 32), (1, 4, 1, 256)],
                         ids=["mqa", "gqa-9-3", "mha", "d256"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_decode_step_against_reference(packed, shape, dtype, device):
    b, h, hk, d = shape
    q, k, v = make(b, h, hk, 1, 333, d, dtype, device, seed=31)
    spans = torch.tensor([[5, 90], [200, 333]][:b], device=device)
    check_against_reference(q, k, v, causal=True, stats="all", sink_tokens=3, local_window=40, span=spans)
    assert packed and packed[0] > 1  # parted (6 key blocks of 64, or 11 of 32, in 3 parts)


@pytest.mark.parametrize("stats", [["argmax"], ["entropy", "key_count"], ["key_mean"], ["sink_mass", "lse"]],
                         ids=lambda s: "+".join(s))
def test_decode_step_subsets(packed, stats, device):
    q, k, v = make(1, 6, 2, 1, 150, 32, torch.float16, device, seed=32)
    check_against_reference(q, k, v, causal=False, stats=stats)
    assert packed


def test_decode_step_equals_the_general_kernel(packed, monkeypatch, device):
    """Both paths from the same lse (two forwards' lse may differ in their last bit on a GPU: the H100 run of round
    19 did), so that the statistics alone are compared."""
    q, k, v = make(2, 8, 2, 1, 500, 64, torch.float16, device, seed=33)
    kw = dict(causal=True, stats=STATS, span=(40, 300))
    _, first = attention_with_stats(q, k, v, backend="triton", **kw)
    fast = stats_from_lse(q, k, first.lse, **kw)
    monkeypatch.setattr(launcher_decode, "ENABLED", False)
    general = stats_from_lse(q, k, first.lse, **kw)
    assert len(packed) == 2
    for n in ("lse", "max_prob", "argmax", "key_count"):
        assert torch.equal(getattr(fast, n), getattr(general, n)), n
    for n in ("entropy", "sink_mass", "local_mass", "span_mass", "key_mass", "key_mean"):
        torch.testing.assert_close(getattr(fast, n), getattr(general, n), atol=2e-6, rtol=2e-6)


def _ties_case(device):
    """Small integer scores (exact in any order): keys 250-299 repeat keys 0-49, and key 10 (so also 260) is every
    row's largest."""
    g = torch.Generator().manual_seed(4)
    q = torch.randint(1, 3, (1, 4, 1, 16), generator=g).float()
    k = torch.randint(-2, 2, (1, 2, 300, 16), generator=g).float()
    k[:, :, 10] = 2.0
    k[:, :, 250:] = k[:, :, :50]
    v = torch.randn(1, 2, 300, 16, generator=g)
    return q.to(device), k.to(device), v.to(device)


def test_ties_across_parts_keep_the_first_key(packed, device):
    """Each row's max comes again in a later part (keys 10 and 260 lie in different parts: 5 key blocks of 64 in
    3 parts on the CPU, 5 on an H100); argmax is the first, as torch.argmax."""
    q, k, v = _ties_case(device)
    _, st = attention_with_stats(q, k, v, causal=True, stats=["argmax", "max_prob"], backend="triton")
    scores = q @ k.repeat_interleave(2, 1).transpose(-1, -2)  # [1, 4, 1, 300]
    chunk = -(-5 // packed[0]) * 64  # keys per part
    assert packed[0] > 1 and 10 // chunk != 260 // chunk
    assert torch.equal(st.argmax, scores.argmax(-1)) and (st.argmax == 10).all()
    assert ((scores == scores.max(-1, keepdim=True).values).sum(-1) == 2).all()  # keys 10 and 260


def test_combine_in_chunks_of_parts(packed, monkeypatch, device):
    """More parts than one combine tile takes (2 parts a tile, 5 parts: three tiles, the last half empty): the tie
    across tiles keeps the first key, and every statistic matches the reference."""
    monkeypatch.setattr(launcher_decode, "COMBINE_PARTS", 2)
    monkeypatch.setattr(launcher_decode, "FUSED_COMBINE_PARTS", 2)
    monkeypatch.setattr(launcher_decode, "CPU_PARTS", 5)
    q, k, v = _ties_case(device)
    if device.type == "cuda":
        # 20 programs: 5 parts per KV head for both calls (2 KV heads, 5 key blocks; then 2 x 2 KV heads, 6 blocks)
        monkeypatch.setattr(launcher_decode.walk_parts, "target_programs", lambda *a: 20)
    _, st = attention_with_stats(q, k, v, causal=True, stats=["argmax", "max_prob"], backend="triton")
    assert packed[-1] == 5 and (st.argmax == 10).all()
    q, k, v = make(2, 6, 2, 1, 333, 32, torch.float32, device, seed=39)
    check_against_reference(q, k, v, causal=True, stats="all", sink_tokens=3, local_window=40, span=(5, 200))
    assert packed[-1] == 5


def test_nan_key_makes_its_group_bad(packed, device):
    """A NaN in one cached key: the query heads of that KV head get NaN statistics, argmax -1 and no key mass; the
    other KV head's rows are untouched. Same as the general kernel."""
    q, k, v = make(1, 4, 2, 1, 200, 32, torch.float32, device, seed=34)
    k[0, 1, 77, 3] = float("nan")
    kw = dict(causal=True, stats=STATS, span=(0, 10), backend="triton")
    _, fast = attention_with_stats(q, k, v, **kw)
    assert fast.lse[0, 2:].isnan().all() and (fast.argmax[0, 2:] == -1).all() and fast.entropy[0, 2:].isnan().all()
    assert (fast.key_mass[0, 2:] == 0).all() and (fast.key_count[0] == 1).all()
    assert fast.lse[0, :2].isfinite().all() and (fast.argmax[0, :2] >= 0).all()
    launcher_decode.ENABLED = False  # (monkeypatch restores it)
    _, general = attention_with_stats(q, k, v, **kw)
    for n in STATS:
        torch.testing.assert_close(getattr(fast, n), getattr(general, n), atol=2e-6, rtol=2e-6, equal_nan=True)


def test_other_calls_take_the_general_kernel(packed, device):
    """A window, a padding mask, a key bias or two queries: not this path."""
    q, k, v = make(1, 4, 2, 1, 120, 32, torch.float32, device, seed=35)
    mask = torch.ones(1, 120, dtype=torch.bool, device=device)
    mask[0, :7] = False
    bias = torch.zeros(1, 4, 120, device=device)
    for kw in (dict(sliding_window=30), dict(attention_mask=mask), dict(key_bias=bias)):
        check_against_reference(q, k, v, causal=True, stats="all", **kw)
    q2, k2, v2 = make(1, 4, 2, 2, 120, 32, torch.float32, device, seed=36)
    check_against_reference(q2, k2, v2, causal=True, stats="all")
    assert packed == []


def test_views_batches_and_empty_parts(packed, monkeypatch, device):
    """q as the last query of a longer q (a view), k transposed from [b, Lk, kv_heads, d] (not contiguous), batch 3
    with G = 5, and more parts than key blocks (empty parts)."""
    g = torch.Generator().manual_seed(37)
    q = torch.randn(3, 10, 9, 48, generator=g).to(device, torch.float16)[:, :, -1:]
    k = torch.randn(3, 130, 2, 48, generator=g).to(device, torch.float16).transpose(1, 2)
    v = torch.randn(3, 2, 130, 48, generator=g).to(device, torch.float16)
    check_against_reference(q, k, v, causal=True, stats="all", sink_tokens=2, local_window=70, span=(3, 129))
    monkeypatch.setattr(launcher_decode, "CPU_PARTS", 7)  # 3 key blocks of 64: at most 3 parts
    check_against_reference(q, k, v, causal=False, stats="all")
    assert packed[-1] == 3


def test_large_groups_and_offset_queries_take_the_general_kernel(packed, device):
    """G > MAX_GROUP, and a single causal query that is not at the end of the keys (it must not see them all)."""
    from interp.kernels.checks import check_inputs

    q, k, v = make(1, 2 * (launcher_decode.MAX_GROUP + 1), 2, 1, 100, 16, torch.float32, device, seed=38)
    check_against_reference(q, k, v, causal=True, stats="all")
    assert packed == []
    spec = check_inputs(q, k, v, causal=True, scale=None, sliding_window=None, attention_mask=None, key_bias=None,
                        stats="all", sink_tokens=4, local_window=64, span=None)
    import dataclasses

    assert not launcher_decode.eligible(dataclasses.replace(spec, heads=4, q_offset=50))
    assert launcher_decode.eligible(dataclasses.replace(spec, heads=4))


def test_parts_off_is_one_part(monkeypatch):
    monkeypatch.setattr(launcher_decode.walk_parts, "target_programs", lambda *a: 0)
    assert launcher_decode.n_parts(8, 100, torch.device("cuda")) == 1  # (no GPU needed: nothing launched)


def test_env_values():
    assert launcher_decode.enabled_from_env("1") and launcher_decode.enabled_from_env(None)
    assert not launcher_decode.enabled_from_env("0") and launcher_decode.enabled_from_env(" ")
    for bad in ("yes", "2", "on"):
        with pytest.raises(ValueError, match="INTERP_DECODE_PACK"):
            launcher_decode.enabled_from_env(bad)
        with pytest.raises(ValueError, match="INTERP_DECODE_FUSED='"):
            launcher_decode.enabled_from_env(bad, launcher_decode.FUSED_ENV)


def test_parts_per_program():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert launcher_decode.n_parts(8, 100, cpu) == launcher_decode.CPU_PARTS
    assert launcher_decode.n_parts(8, 2, cpu) == 2  # at most one per key block
    if torch.cuda.is_available():
        target = 4 * torch.cuda.get_device_properties(0).multi_processor_count
        assert launcher_decode.n_parts(3, 10**6, cuda) == target // 3
