"""attention_with_stats(attn_mask=...): dense masks (bool, additive float) and mask functions, on the reference backend,
against a naive float64 attention that materialises the pattern; bad masks get clear errors."""

import os

import pytest
import torch
from helpers import on_device, raises_clear_error

from interp.kernels import attention_with_stats
from naive import naive_attention

run = on_device(attention_with_stats)  # on the GPU where there is one (the reference backend runs there too)
TOL = dict(atol=2e-5, rtol=1e-4)


def _qkv(b=2, h=4, hk=2, lq=13, lk=17, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, lq, d, generator=g), torch.randn(b, hk, lk, d, generator=g) * 2,
            torch.randn(b, hk, lk, d, generator=g))


def _same(out, st, ref_out, ref):
    torch.testing.assert_close(out.double(), ref_out, **TOL)
    for name, t in st.items():
        if name == "argmax":
            assert torch.equal(t, ref[name]), name
        else:
            torch.testing.assert_close(t.double(), ref[name], equal_nan=True, msg=name, **TOL)


@pytest.mark.parametrize("chunk", [None, 4], ids=["one-chunk", "chunks-of-4"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "noncausal"])
def test_dense_bool_mask_per_batch_and_head(chunk, causal, monkeypatch):
    """A random mask differing by batch row and head, with padding and (or not) the causal mask: "and" of all."""
    if chunk is not None:
        from interp.kernels import reference

        monkeypatch.setattr(reference, "_chunk_size", lambda spec, c: chunk)
    q, k, v = _qkv()
    mask = torch.rand(2, 4, 13, 17, generator=torch.Generator().manual_seed(1)) < 0.6
    mask[0, 1, 5] = False  # a row that sees nothing
    pad = torch.ones(2, 17, dtype=torch.bool)
    pad[1, :3] = False
    kw = dict(causal=causal, attention_mask=pad, sink_tokens=3, local_window=5, span=(2, 9))
    out, st = run(q, k, v, attn_mask=mask, backend="reference", **kw)
    ref_out, ref = naive_attention(q, k, v, attn_mask=mask, **kw)
    _same(out, st, ref_out, ref)
    assert st.argmax[0, 1, 5] == -1 and torch.isneginf(st.lse[0, 1, 5]) and out[0, 1, 5].abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_additive_float_mask(dtype):
    """Added to the scaled scores; -inf and the dtype's most negative value (transformers' eager masks) hide."""
    q, k, v = _qkv(b=1, lq=9, lk=9)
    add = torch.randn(1, 1, 9, 9, generator=torch.Generator().manual_seed(2)).to(dtype)
    add[..., 0, 3] = float("-inf")
    add[..., 2, :4] = torch.finfo(dtype).min
    out, st = run(q, k, v, causal=False, attn_mask=add, backend="reference")
    want = add.double().masked_fill(add <= max(-1e30, torch.finfo(dtype).min), float("-inf"))
    ref_out, ref = naive_attention(q, k, v, causal=False, attn_mask=want)
    _same(out, st, ref_out, ref)
    assert st.key_count[0, 0, 3] == 7 and st.key_count[0, 0, 0] == 8  # rows 0 and 2 hide key 3, row 2 key 0


def test_mask_function_matches_its_dense_mask():
    """transformers' convention: fn(batch_idx, head_idx, q_idx, kv_idx), q_idx on the key axis (end-aligned), here a
    prefix-LM (every query sees the first 6 keys, then causal) on heads 0-1 and a window of 3 on heads 2-3."""
    q, k, v = _qkv(lq=11, lk=15)

    def fn(b, h, qi, ki):
        return torch.where(h < 2, (ki < 6) | (ki <= qi), (qi - ki < 3) & (ki <= qi))

    qpos = torch.arange(11)[:, None] + 4
    kpos = torch.arange(15)[None, :]
    dense = torch.stack([(kpos < 6) | (kpos <= qpos)] * 2 + [(qpos - kpos < 3) & (kpos <= qpos)] * 2)[None]
    out, st = run(q, k, v, causal=False, attn_mask=fn, backend="reference")
    ref_out, ref = naive_attention(q, k, v, causal=False, attn_mask=dense)
    _same(out, st, ref_out, ref)
    out2, st2 = attention_with_stats(q, k, v, causal=False, attn_mask=dense, backend="reference")
    torch.testing.assert_close(out2, out)
    torch.testing.assert_close(st2.key_mass, st.key_mass)


def test_mask_function_with_segments_and_window():
    """Combined by "and" with the window and the segments the call also gives."""
    q, k, v = _qkv(b=1, lq=16, lk=16)
    seg = torch.tensor([[0] * 7 + [1] * 9])
    out, st = attention_with_stats(q, k, v, sliding_window=5, segment_ids=seg, backend="reference",
                                   attn_mask=lambda b, h, qi, ki: ki % 3 != 1)
    kpos = torch.arange(16)[None, :]
    dense = (kpos % 3 != 1) & (seg[0][:, None] == seg[0][None, :])
    ref_out, ref = naive_attention(q, k, v, sliding_window=5, attn_mask=dense[None, None])
    torch.testing.assert_close(out.double(), ref_out, **TOL)
    torch.testing.assert_close(st.key_mass.double(), ref["key_mass"], **TOL)
    # the window reaches back 4 keys, the segment starts at 7, key 7 % 3 == 1 is hidden: query 9 sees keys 8 and 9
    assert torch.equal(st.key_count[0, 0, 6:10] > 0, torch.tensor([True, False, True, True]))


def test_gradients_through_a_masked_call():
    q, k, v = (t.double().requires_grad_() for t in _qkv(b=1, h=2, hk=1, lq=6, lk=8, d=8))
    mask = torch.rand(1, 2, 6, 8, generator=torch.Generator().manual_seed(5)) < 0.7
    mask[..., 0] = True
    w = torch.randn(1, 2, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    out, _ = attention_with_stats(q.float(), k.float(), v.float(), causal=False, attn_mask=mask, stats=(),
                                  backend="reference")
    got = torch.autograd.grad((out.double() * w).sum(), (q, k, v))
    ref_out, _ = naive_attention(q, k, v, causal=False, attn_mask=mask)
    want = torch.autograd.grad((ref_out * w).sum(), (q, k, v))
    for a, b_ in zip(got, want):
        torch.testing.assert_close(a, b_, atol=1e-4, rtol=1e-4)


def test_auto_backend_takes_the_reference_for_a_mask():
    q, k, v = _qkv(b=1, lq=7, lk=7)
    mask = torch.ones(1, 1, 7, 7, dtype=torch.bool).tril()
    out, st = attention_with_stats(q, k, v, causal=False, attn_mask=mask)  # auto: Triton where it runs, else reference
    ref_out, ref = attention_with_stats(q, k, v, causal=True, backend="reference")
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(st.entropy, ref.entropy)


def test_auto_says_once_that_a_mask_leaves_the_kernels(monkeypatch):
    """backend='auto' where the Triton kernels would run (a GPU): a warning, once per kind of mask."""
    from interp.kernels import api

    monkeypatch.setattr(api, "pick_backend", lambda backend, device: "triton")
    monkeypatch.setattr(api, "_WARNED", set())
    q, k, v = _qkv(b=1, lq=7, lk=7)
    with pytest.warns(UserWarning, match="runs on the reference backend"):
        attention_with_stats(q, k, v, attn_mask=lambda b, h, qi, ki: ki <= qi, stats=())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attention_with_stats(q, k, v, attn_mask=lambda b, h, qi, ki: ki <= qi, stats=())


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="backend='triton' on CPU needs the interpreter")
def test_triton_backend_refuses_a_mask():
    q, k, v = _qkv(b=1, lq=7, lk=7)
    raises_clear_error(ValueError, "Triton kernels cannot apply",
                       lambda: attention_with_stats(q, k, v, attn_mask=torch.ones(1, 1, 7, 7, dtype=torch.bool),
                                                    backend="triton"))


@pytest.mark.parametrize("mask,err,words", [
    (torch.ones(2, 4, 13, 16, dtype=torch.bool), ValueError, "q_len, k_len"),
    (torch.ones(3, 1, 13, 17, dtype=torch.bool), ValueError, "batch or 1"),
    (torch.ones(13, 17, dtype=torch.bool), ValueError, "batch or 1, heads or 1"),
    (torch.ones(1, 1, 13, 17, dtype=torch.int64), TypeError, "bool"),
    (torch.full((1, 1, 13, 17), float("nan")), ValueError, "NaN"),
    (torch.full((1, 1, 13, 17), float("inf")), ValueError, r"\+inf"),
    (torch.full((1, 1, 13, 17), 1e300, dtype=torch.float64), ValueError, "float32's range"),
    (torch.zeros(1, 1, 13, 17, requires_grad=True), ValueError, "requires grad"),
    ([[True]], TypeError, "mask function"),
    (lambda b, h, qi, ki: (ki <= qi).int(), TypeError, "bool tensor"),
    (lambda b, h, qi, ki: "yes", TypeError, "bool tensor"),
    (lambda b, h, qi, ki: torch.ones(5, dtype=torch.bool), ValueError, "broadcasts to"),
    (lambda b, h, qi, ki: torch.ones(1, 1, 1, 1, 1, dtype=torch.bool), ValueError, "broadcasts to"),
])
def test_bad_masks_get_clear_errors(mask, err, words):
    q, k, v = _qkv()
    raises_clear_error(err, words, lambda: attention_with_stats(q, k, v, attn_mask=mask, backend="reference"))


def test_a_mask_function_that_raises_fails_before_attention_runs():
    q, k, v = _qkv()

    def broken(b, h, qi, ki):
        raise KeyError("no such token")

    with pytest.raises(KeyError):
        attention_with_stats(q, k, v, attn_mask=broken, backend="reference", stats=())
