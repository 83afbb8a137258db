"""A value head dim dv other than the q/k head dim d (multi-head latent attention, DeepSeek-V2/V3: q/k 192, v 128) at
the kernel level, on both backends: the output against float64 softmax(QK^T)V, every statistic against the same q, k
with a v of dim d, gradients of q, k, v (and the key bias and learned sinks) against float64 autograd, and the input
checks. The model-level tests are in test_mla.py."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import DEV, on_device
from naive import lowp_attention, naive_attention, naive_output

from interp.kernels import api, attention_with_stats, check_inputs

BACKENDS = ("reference", "triton")
DTYPES = (torch.float32, torch.float16)
attend = on_device(attention_with_stats)
STATS = ("lse", "max_prob", "argmax", "entropy", "sink_mass", "local_mass", "span_mass", "key_mass", "key_count",
         "key_mean")
SHAPES = [
    # b, h, hk, lq, lk, d, dv
    pytest.param((1, 4, 2, 5, 9, 24, 12), id="dv<d-gqa-chunk"),  # DeepSeek-like: v narrower, q_len < k_len
    pytest.param((2, 2, 2, 7, 7, 16, 40), id="dv>d"),  # v wider than q/k
    pytest.param((1, 4, 1, 1, 11, 32, 16), id="dv<d-mqa-decode"),  # one decode query (the fused decode walk)
    pytest.param((2, 4, 4, 1, 10, 16, 48), id="dv>d-decode"),
    pytest.param((1, 3, 3, 6, 6, 40, 7), id="dv-odd"),  # a v head dim below 16 and not a power of two
    # q/k head dims below the Triton kernels' smallest (16): tiny toy models, zero-padded to 16 there
    pytest.param((1, 2, 2, 6, 6, 8, 8), id="d8"),
    pytest.param((1, 4, 2, 5, 7, 4, 12), id="d4-dv12-gqa-chunk"),
    pytest.param((2, 2, 1, 1, 9, 12, 5), id="d12-dv5-decode"),
]


def _inputs(shape, dtype, seed=0):
    b, h, hk, lq, lk, d, dv = shape
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(b, h, lq, d, generator=g) * 1.5).to(dtype)
    k = (torch.randn(b, hk, lk, d, generator=g) * 1.5).to(dtype)
    v = torch.randn(b, hk, lk, dv, generator=g).to(dtype)
    v_same = torch.randn(b, hk, lk, d, generator=g).to(dtype)  # the same call with v of q/k's head dim
    return q, k, v, v_same


def _max_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return (got.double() - want.double()).abs().max().item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_output_is_softmax_qk_times_v(shape, dtype, backend):
    """[b, h, q_len, dv] = softmax(q k^T / sqrt(d)) v, in float64, within the dtype's own rounding of plain
    attention (float16: 3x the error of attention computed in float16)."""
    q, k, v, _ = _inputs(shape, dtype)
    out, _ = attend(q, k, v, backend=backend, stats="none")
    exact, _ = naive_attention(q, k, v)
    assert out.shape == (*q.shape[:3], v.shape[-1]) and out.dtype == dtype
    err = _max_err(out, exact)
    if dtype == torch.float32:
        assert err <= 2e-5, err
    else:
        lowp = _max_err(lowp_attention(q, k, v), exact)
        assert err <= 3 * lowp + 1e-3, (err, lowp)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_statistics_are_those_of_the_same_q_k(shape, dtype, backend):
    """No statistic reads v: each equals the statistic of the same q, k with a v of dim d (bit for bit where the
    kernels see q and k unpadded; to float32 rounding where dv > d pads q and k with zero columns), and the float64
    definition."""
    q, k, v, v_same = _inputs(shape, dtype)
    kw = dict(backend=backend, stats="all", span=(1, 3), sink_tokens=2, local_window=3)
    _, got = attend(q, k, v, **kw)
    _, want = attend(q, k, v_same, **kw)
    _, exact = naive_attention(q, k, v, span=(1, 3), sink_tokens=2, local_window=3)
    padded = backend == "triton" and v.shape[-1] > q.shape[-1]
    for name in STATS:
        g, w = getattr(got, name), getattr(want, name)
        assert g is not None and g.shape == w.shape, name
        if name in ("argmax", "key_count") or not padded:
            assert torch.equal(g.nan_to_num(-7.0), w.nan_to_num(-7.0)), name
        else:
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)
        tol = 1e-4 if dtype == torch.float32 else 3e-2  # float16 q, k: the scores themselves are rounded
        assert _max_err(g.nan_to_num(0), exact[name].nan_to_num(0)) <= tol * max(1.0, exact[name].abs().max()), name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1], SHAPES[3]])
def test_statistics_alone_never_read_v(shape, backend):
    """need_out=False: no output, the statistics of the call with an output."""
    q, k, v, _ = _inputs(shape, torch.float32)
    _, want = attend(q, k, v, backend=backend, stats="all")
    out, got = attend(q, k, v, backend=backend, stats="all", need_out=False)
    assert out is None
    for name, w in want.items():
        torch.testing.assert_close(getattr(got, name), w, rtol=1e-6, atol=1e-7, equal_nan=True, msg=name)


def _float64_output(q, k, v, key_bias=None, sinks=None, scale=None):
    """softmax over [scaled causal scores (+ key bias), sink logit] @ v in float64, the sink's column dropped;
    differentiable in every input."""
    b, h, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    kk, vv = (t.double().repeat_interleave(h // hk, 1) for t in (k, v))
    s = q.double() @ kk.transpose(-1, -2) * scale  # [b, h, lq, lk]
    if key_bias is not None:
        s = s + key_bias.double()[:, :, None, :]
    qpos = torch.arange(lq)[:, None] + lk - lq
    s = s.masked_fill(torch.arange(lk)[None, :] > qpos, float("-inf"))
    if sinks is not None:
        s = torch.cat([s, sinks.double()[None, :, None, None].expand(b, h, lq, 1)], -1)
    p = s.softmax(-1)
    return p[..., :lk] @ vv  # [b, h, lq, dv]


def _grads(fn, inputs, do):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    return out.detach(), torch.autograd.grad(out, leaves, do.to(out.dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1], SHAPES[2]])
def test_gradients_of_q_k_v(shape, dtype, backend):
    """dq [.., d], dk [.., d], dv [.., dv] against float64 autograd (float16: within 3x the gradient error of plain
    attention computed in float16, as in test_kernel_backward)."""
    q, k, v, _ = _inputs(shape, dtype)
    do = torch.randn(*q.shape[:3], v.shape[-1], generator=torch.Generator().manual_seed(5)).to(dtype)

    def ours(q_, k_, v_):
        return attend(q_, k_, v_, backend=backend, stats="none")[0]

    _, got = _grads(ours, (q, k, v), do)
    _, exact = _grads(lambda *a: naive_output(*a), (q, k, v), do.double())
    if dtype != torch.float32:
        _, lowp = _grads(lambda *a: naive_output(*a, lowp=True), (q, k, v), do)
    for i, (name, g, e) in enumerate(zip("qkv", got, exact)):
        assert g.shape == (q, k, v)[i].shape and g.dtype == dtype, name
        err, scale = _max_err(g, e), max(e.abs().max().item(), 1.0)
        if dtype == torch.float32:
            assert err <= 2e-5 * scale, (name, err)
        else:
            assert err <= 3 * _max_err(lowp[i], e) + 2e-3 * scale, (name, err)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dims", [(24, 12), (16, 40)], ids=["dv<d", "dv>d"])
def test_gradients_with_key_bias_and_sinks(dims, backend):
    """The key-bias and learned-sink gradients (and the output) are unchanged by the padding: float64 autograd of
    softmax([scores + bias, sink]) v."""
    d, dv = dims
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 6, d, generator=g)
    k = torch.randn(1, 2, 9, d, generator=g) * 1.5
    v = torch.randn(1, 2, 9, dv, generator=g)
    bias = torch.randn(1, 4, 9, generator=g)
    sinks = torch.randn(4, generator=g)
    do = torch.randn(1, 4, 6, dv, generator=g)

    def ours(q_, k_, v_, b_, s_):
        return attend(q_, k_, v_, key_bias=b_, sinks=s_, backend=backend, stats="none")[0]

    out, got = _grads(ours, (q, k, v, bias, sinks), do)
    want, exact = _grads(_float64_output, (q, k, v, bias, sinks), do.double())
    assert _max_err(out, want) <= 2e-5
    for name, a, e in zip(("q", "k", "v", "key_bias", "sinks"), got, exact):
        assert _max_err(a, e) <= 3e-5 * max(e.abs().max().item(), 1.0), name


def test_explicit_scale_is_kept_and_default_is_q_k_dim():
    """The default scale is 1/sqrt(q/k head dim) whatever v's (and the padding's) head dim; a given scale is kept."""
    q, k, v, _ = _inputs((1, 2, 2, 4, 4, 16, 40), torch.float32)
    assert check_inputs(q, k, v, causal=True, scale=None, sliding_window=None, attention_mask=None, key_bias=None,
                        stats="none", sink_tokens=4, local_window=64, span=None).scale == 1 / math.sqrt(16)
    for backend in BACKENDS:
        out, _ = attend(q, k, v, backend=backend, scale=0.3, stats="none")
        assert _max_err(out, _float64_output(q, k, v, scale=0.3)) <= 2e-5, backend


def test_same_dims_take_the_unpadded_path(monkeypatch):
    """dv == d: no v_head_dim in the spec and the padding function is never called (no extra copies)."""
    q, k, v, v_same = _inputs((1, 2, 2, 4, 4, 16, 16), torch.float32)
    spec = check_inputs(q, k, v_same, causal=True, scale=None, sliding_window=None, attention_mask=None,
                        key_bias=None, stats="none", sink_tokens=4, local_window=64, span=None)
    assert spec.v_head_dim is None and spec.value_dim == 16

    def refuse(*a, **kw):
        raise AssertionError("padded for equal head dims")

    monkeypatch.setattr(api, "_pad_head_dim", refuse)
    monkeypatch.setattr(api, "_triton_padded", refuse)
    attend(q, k, v_same, backend="triton", stats="all")


@pytest.mark.parametrize("make, match", [
    (lambda q, k, v: (q, k, v[:, :, :-1]), r"k and v must agree on \[batch, kv_heads, k_len\].*\(1, 2, 9, 24\).*"
                                           r"\(1, 2, 8, 12\)"),
    (lambda q, k, v: (q, k, v[:, :1]), r"k and v must agree on \[batch, kv_heads, k_len\]"),
    (lambda q, k, v: (q, k, torch.cat([v, v])), r"k and v must agree on \[batch, kv_heads, k_len\]"),
    (lambda q, k, v: (q, k[..., :16], v), r"q has head_dim 24 but k has head_dim 16"),
    (lambda q, k, v: (q.new_zeros(*q.shape[:3], 300), k.new_zeros(*k.shape[:3], 300), v),
     r"the q/k head_dim must be between 1 and 256, got 300"),
    (lambda q, k, v: (q[..., :0], k[..., :0], v), r"the q/k head_dim must be between 1 and 256, got 0"),
    (lambda q, k, v: (q, k, v.new_zeros(*v.shape[:3], 300)), r"the v head_dim must be between 1 and 256 .*got 300"),
    (lambda q, k, v: (q, k, v[..., :0]), r"the v head_dim must be between 1 and 256 .*got 0"),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_mismatched_shapes_are_refused(make, match, backend):
    q, k, v, _ = _inputs((1, 4, 2, 5, 9, 24, 12), torch.float32)
    with pytest.raises(ValueError, match=match):
        attention_with_stats(*make(q, k, v), backend=backend)


def test_head_dims_below_16_in_stats_from_lse_and_a_model():
    """q/k head dims below 16 (tiny toy models): `stats_from_lse` pads q and k as `attention_with_stats` does, and a
    Llama with head dim 8 wrapped on the Triton backend gives eager attention's logits and statistics."""
    import interp
    from transformers import LlamaConfig, LlamaForCausalLM

    from interp.kernels import stats_from_lse

    lse_stats = on_device(stats_from_lse)
    q, k, v, _ = _inputs((2, 4, 2, 6, 6, 8, 8), torch.float32, seed=3)
    _, st = attend(q, k, v, backend="triton", stats="all")
    again = lse_stats(q, k, st.lse, stats="all")
    assert len(list(again.items())) >= 8
    for name, got in again.items():
        assert torch.equal(got.nan_to_num(-7.0), getattr(st, name).nan_to_num(-7.0)), name

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    hf = LlamaForCausalLM(cfg).eval().to(DEV)
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(1)).to(DEV)
    hf.set_attn_implementation("eager")
    with torch.no_grad():
        want = hf(input_ids=ids, output_attentions=True)
    model = interp.HookedModel(hf, backend="triton")
    assert model.cfg.d_head == 8
    logits, cache = model.run_with_cache(ids, stats=["entropy", "key_mass"])
    torch.testing.assert_close(logits, want.logits, atol=2e-5, rtol=2e-5)
    for layer, p in enumerate(want.attentions):  # [batch, head, q, k]
        ent = -(torch.special.xlogy(p, p)).sum(-1)
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_query_entropy"], ent, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_key_mass"], p.sum(-2), atol=2e-5, rtol=2e-5)
