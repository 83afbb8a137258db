"""The PyTorch reference against a naive float64 attention that materialises the pattern."""

import dataclasses
import zlib

import pytest
import torch

from interp.kernels import attention_with_stats
from naive import naive_attention

CASES = [
    dict(b=1, h=2, hk=2, lq=1, lk=1, d=32),
    dict(b=2, h=13, hk=13, lq=17, lk=17, d=64),
    dict(b=1, h=12, hk=4, lq=131, lk=131, d=64),
    dict(b=2, h=4, hk=1, lq=5, lk=131, d=32),  # chunked prefill / decode against a cache
    dict(b=1, h=4, hk=2, lq=1, lk=300, d=64),  # one decode query
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"b{c['b']}h{c['h']}kv{c['hk']}q{c['lq']}k{c['lk']}d{c['d']}")
@pytest.mark.parametrize("mode", ["causal", "noncausal", "window", "padded"])
@pytest.mark.parametrize("chunk", [None, 3], ids=["one-chunk", "chunks-of-3"])
def test_reference_matches_naive(case, mode, chunk, monkeypatch):
    """chunks of 3 queries: each chunk computes only the keys it can see (causal / window), statistics mapped back."""
    if chunk is not None:
        from interp.kernels import reference

        monkeypatch.setattr(reference, "_chunk_size", lambda spec, c: chunk)
    # a stable seed: hash() of a str changes with every process (PYTHONHASHSEED), and so would the inputs
    g = torch.Generator().manual_seed(zlib.crc32(f"{mode}/{case['lq']}/{case['h']}".encode()))
    b, h, hk, lq, lk, d = case["b"], case["h"], case["hk"], case["lq"], case["lk"], case["d"]
    q = torch.randn(b, h, lq, d, generator=g)
    k = torch.randn(b, hk, lk, d, generator=g) * 2
    v = torch.randn(b, hk, lk, d, generator=g)
    kw = dict(causal=mode != "noncausal", sink_tokens=3, local_window=7, span=(min(2, lk - 1), min(9, lk)))
    if mode == "window":
        kw["sliding_window"] = 9
    if mode == "padded":
        m = torch.ones(b, lk, dtype=torch.bool)
        m[0, : lk // 3] = False  # left padding on row 0
        if b > 1:
            m[1, lk - lk // 4:] = False  # right padding on row 1
        kw["attention_mask"] = m
    out, st = attention_with_stats(q, k, v, backend="reference", **kw)
    ref_out, ref = naive_attention(q, k, v, **kw)
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=1e-4)
    for name, t in st.items():
        r = ref[name]
        if name == "argmax":
            assert torch.equal(t, r)
        else:
            torch.testing.assert_close(t.double(), r, atol=2e-5, rtol=1e-4, equal_nan=True, msg=name)


def test_reference_chunking_is_invisible():
    from interp.kernels import check_inputs, reference_attention

    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 3, 77, 32, generator=g) for _ in range(3))
    spec = check_inputs(q, k, v, causal=True, scale=None, sliding_window=None, attention_mask=None, key_bias=None,
                        stats="all", sink_tokens=4, local_window=8, span=None)
    o1, s1 = reference_attention(q, k, v, spec, chunk=5)
    o2, s2 = reference_attention(q, k, v, spec, chunk=77)
    torch.testing.assert_close(o1, o2)
    for (n, a), (_, b_) in zip(s1.items(), s2.items()):
        torch.testing.assert_close(a, b_, equal_nan=True, msg=n)


def test_key_bias_matches_naive():
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 4, 19, 32, generator=g) for _ in range(3))
    bias = torch.zeros(2, 4, 19)
    bias[:, 1, 0] = float("-inf")
    bias[:, 2, 3] = 1.5
    out, st = attention_with_stats(q, k, v, key_bias=bias, backend="reference")
    ref_out, ref = naive_attention(q, k, v, key_bias=bias[:, :, None, :])
    ref["key_count"] = ref["key_count"] - torch.isneginf(bias).double() * torch.arange(19, 0, -1).double()
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(st.key_mass.double(), ref["key_mass"], atol=2e-5, rtol=1e-4)
    assert st.key_mass[:, 1, 0].abs().max() == 0


def test_inputs_are_the_same_in_every_process():
    """The seeds above must not depend on the process: two interpreters with different hash seeds draw the same q."""
    import os
    import subprocess
    import sys

    code = ("import zlib, torch; g = torch.Generator().manual_seed(zlib.crc32('causal/17/13'.encode())); "
            "print(torch.randn(3, generator=g).tolist())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1, outs


@pytest.mark.parametrize("span, err", [
    ((1.5, 4), TypeError), ((0, 4.0), TypeError), ((True, 4), TypeError), (torch.tensor([1.5, 4.0]), TypeError),
    ((3, 2), ValueError), ((-1, 2), ValueError), ((0, 99), ValueError), ("ab", TypeError),
])
def test_bad_spans_are_rejected(span, err):
    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(err, match="span"):
        attention_with_stats(q, q, q, span=span, backend="reference")


def test_integer_spans_are_accepted():
    import numpy as np

    q = torch.randn(1, 2, 8, 16)
    ref = attention_with_stats(q, q, q, span=(1, 4), stats="span_mass", backend="reference")[1].span_mass
    for span in ((np.int64(1), 4), (torch.tensor(1), torch.tensor(4)), torch.tensor([1, 4])):
        got = attention_with_stats(q, q, q, span=span, stats="span_mass", backend="reference")[1].span_mass
        torch.testing.assert_close(got, ref)


def test_memory_estimate_refuses_before_launching():
    from interp.kernels import check_inputs
    from interp.kernels.checks import check_fits_in_memory, output_and_stats_bytes

    q = torch.randn(1, 32, 4, 128, dtype=torch.float16)
    k = torch.randn(1, 8, 4, 128, dtype=torch.float16)
    spec = check_inputs(q, k, k, causal=True, scale=None, sliding_window=None, attention_mask=None, key_bias=None,
                        stats="all", sink_tokens=4, local_window=8, span=None)
    big = dataclasses.replace(spec, q_len=2**20, k_len=2**20)
    need = output_and_stats_bytes(big, 2)
    # output 8 GiB + lse + 4 float row statistics (no span given) + int64 argmax; int64 sums, mass, mean, count;
    # an int64 ticket per head
    assert need == 32 * 2**20 * (128 * 2 + 4 + 4 * 4 + 8) + 32 * 2**20 * (8 + 4 + 4 + 4) + 32 * 8
    # key_mean alone still allocates the key_mass it divides (and key_count)
    mean_only = dataclasses.replace(big, stats=("key_mean",))
    assert output_and_stats_bytes(mean_only, 2) == 32 * 2**20 * (128 * 2 + 4) + 32 * 2**20 * (8 + 4 + 4 + 4) + 32 * 8
    with pytest.raises(ValueError, match=r"needs 9\.\d\d GiB .* only 4\.00 GiB"):
        check_fits_in_memory(q, big, free=4 * 2**30, total=80 * 2**30)
    check_fits_in_memory(q, big, free=need + 1, total=80 * 2**30)  # fits: no error
