"""Triton kernels (the CPU interpreter in CI, the real thing on a GPU) against the PyTorch reference.

Tolerances: statistics are float32 in both paths and the score products are exact, so they agree to ~1e-5 whatever
the input dtype; the output's error is measured against the error of plain attention computed in the input dtype
(the reference's own low-precision error), as FlashAttention's tests do.
"""

import pytest
import torch

from interp.kernels import attention_with_stats

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
STAT_TOL = dict(atol=3e-5, rtol=3e-4)


def make(b, h, hk, lq, lk, d, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=g).to(device, dtype)
    k = (torch.randn(b, hk, lk, d, generator=g) * 1.5).to(device, dtype)
    v = torch.randn(b, hk, lk, d, generator=g).to(device, dtype)
    return q, k, v


def check_against_reference(q, k, v, **kw):
    out_t, st_t = attention_with_stats(q, k, v, backend="triton", **kw)
    out_r, st_r = attention_with_stats(q, k, v, backend="reference", **kw)
    # output: no worse than 2x the low-precision error of plain attention (+ a floor)
    exact = out_r.float()
    if q.dtype == torch.float32:
        torch.testing.assert_close(out_t, out_r, atol=2e-5, rtol=2e-4)
    else:
        from naive import lowp_attention, naive_attention

        args = {n: kw[n] for n in kw if n not in ("stats",)}
        if isinstance(args.get("span"), torch.Tensor):
            args.pop("span")
        ref64, _ = naive_attention(q.cpu(), k.cpu(), v.cpu(), **_cpu(args))
        lowp = lowp_attention(q.cpu(), k.cpu(), v.cpu(), **_cpu(args))
        ref64 = ref64.to(q.device)
        lowp_err = (lowp.double().to(q.device) - ref64).abs().max().item()
        err = (out_t.double() - ref64).abs().max().item()
        assert err <= 2 * lowp_err + 1e-3, f"kernel error {err:.2e} vs low-precision error {lowp_err:.2e}"
        assert (out_t.float() - exact).abs().max().item() <= 4 * lowp_err + 1e-3
    assert st_t.requested() == st_r.requested()
    for name, t in st_r.items():
        a = getattr(st_t, name)
        assert a.shape == t.shape and a.dtype == t.dtype, name
        if name == "argmax":
            # ties and near-ties may break differently: the kernel's pick must carry the maximal probability
            assert torch.equal(a < 0, t < 0)
            agree = (a == t).float().mean().item()
            assert agree > 0.97, f"argmax agrees on only {agree:.3f} of rows"
            continue
        torch.testing.assert_close(a, t, equal_nan=True, msg=name, **STAT_TOL)
    return out_t, st_t


def _cpu(kw):
    return {n: (t.cpu() if isinstance(t, torch.Tensor) else t) for n, t in kw.items()}


SHAPES = [
    # b, h, hk, lq, lk, d
    (1, 2, 2, 1, 1, 32),
    (2, 13, 13, 17, 17, 64),
    (1, 12, 4, 131, 131, 64),
    (1, 4, 1, 131, 131, 256),
    (1, 3, 3, 70, 70, 80),  # head dim that is not a power of two
    (2, 4, 2, 1, 200, 128),  # a single decode query against a cache
    (1, 4, 2, 37, 200, 64),  # chunked prefill
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_causal_all_stats(shape, dtype, device):
    q, k, v = make(*shape, dtype, device, seed=sum(shape))
    check_against_reference(q, k, v, causal=True, stats="all", sink_tokens=3, local_window=16,
                            span=(0, min(5, shape[4])))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_noncausal(dtype, device):
    q, k, v = make(2, 4, 2, 131, 131, 64, dtype, device, seed=1)
    check_against_reference(q, k, v, causal=False, stats="all", span=(40, 60))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sliding_window(dtype, device):
    q, k, v = make(1, 4, 1, 200, 200, 64, dtype, device, seed=2)
    check_against_reference(q, k, v, sliding_window=64, stats="all", local_window=32, span=(10, 20))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_padded_batch(dtype, device):
    q, k, v = make(3, 4, 2, 131, 131, 64, dtype, device, seed=3)
    mask = torch.ones(3, 131, dtype=torch.bool)
    mask[0, :40] = False  # left padding
    mask[1, 100:] = False  # right padding
    check_against_reference(q, k, v, attention_mask=mask.to(device), stats="all")


def test_span_per_batch_row_and_key_bias(device):
    q, k, v = make(2, 4, 2, 64, 64, 32, torch.float32, device, seed=4)
    bias = torch.zeros(2, 4, 64, device=device)
    bias[:, 1, 0] = float("-inf")
    bias[0, 2, 5] = 2.0
    spans = torch.tensor([[3, 9], [20, 30]], device=device)
    _, st = check_against_reference(q, k, v, key_bias=bias, span=spans, stats="all")
    assert st.key_mass[:, 1, 0].abs().max().item() == 0


def test_only_requested_stats_are_computed(device):
    q, k, v = make(1, 2, 2, 33, 33, 32, torch.float32, device, seed=5)
    out, st = attention_with_stats(q, k, v, backend="triton", stats=["entropy"])
    assert st.requested() == ("entropy",)
    out2, st2 = attention_with_stats(q, k, v, backend="triton", stats="none")
    assert st2.requested() == ()
    torch.testing.assert_close(out, out2)


def test_bit_identical_reruns(device):
    q, k, v = make(1, 4, 2, 131, 131, 64, torch.float16, device, seed=6)
    a_out, a = attention_with_stats(q, k, v, backend="triton", stats="all")
    b_out, b = attention_with_stats(q, k, v, backend="triton", stats="all")
    assert torch.equal(a_out, b_out)
    for (n, x), (_, y) in zip(a.items(), b.items()):
        assert torch.equal(x.nan_to_num(-7), y.nan_to_num(-7)), n


def test_output_rows_are_all_written(device):
    """Poison the output buffer allocator: every element must come out finite."""
    q, k, v = make(2, 3, 3, 77, 77, 64, torch.float16, device, seed=7)
    out, st = attention_with_stats(q, k, v, backend="triton", stats="all")
    assert torch.isfinite(out).all()
    assert torch.isfinite(st.entropy).all() and torch.isfinite(st.key_mass).all()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_long_awkward_length(dtype, device):
    q, k, v = make(1, 13, 13, 1027, 1027, 64, dtype, device, seed=8)
    check_against_reference(q, k, v, stats="all", span=(500, 520))


@pytest.mark.slow
def test_long_gqa_window_padded(device):
    q, k, v = make(2, 12, 4, 1027, 1027, 128, torch.float16, device, seed=9)
    mask = torch.ones(2, 1027, dtype=torch.bool)
    mask[0, :300] = False
    check_against_reference(q, k, v, stats="all", sliding_window=64, attention_mask=mask.to(device))
