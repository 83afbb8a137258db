"""Gradients through the fused attention (Triton backward; the CPU interpreter in CI, the real thing on a GPU)
against float64 autograd of a naive attention.

Tolerances: float32 kernels use exact ("ieee") products, so their gradients agree with float64 to ~1e-5 of the
gradient's scale. For float16/bfloat16 the yardstick is the gradient error of plain attention computed in the
input dtype (scores and P @ V in that dtype, softmax in float32) against float64, as FlashAttention's tests do.
"""

import pytest
import torch
from naive import naive_output

from interp.kernels import attention_with_stats
from interp.kernels.checks import check_inputs
from interp.kernels.launcher_backward import triton_attention_backward

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
NAMES = ("q", "k", "v", "key_bias")


def make(b, h, hk, lq, lk, d, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=g).to(device, dtype)
    k = (torch.randn(b, hk, lk, d, generator=g) * 1.5).to(device, dtype)
    v = torch.randn(b, hk, lk, d, generator=g).to(device, dtype)
    do = torch.randn(b, h, lq, d, generator=g).to(device, dtype)
    return q, k, v, do


def grads(fn, inputs, do):
    """Gradients of <fn(*inputs), do> with respect to every input that is a tensor (None stays None)."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    out = fn(*leaves)
    live = [t for t in leaves if t is not None]
    got = torch.autograd.grad(out, live, do.to(out.dtype))
    it = iter(got)
    return out.detach(), [next(it) if t is not None else None for t in leaves]


def check_grads(q, k, v, do, key_bias=None, **kw):
    """Triton gradients of q, k, v (and key_bias) against float64 autograd of the naive attention."""
    naive_kw = {n: (t.cpu() if isinstance(t, torch.Tensor) else t) for n, t in kw.items()}

    def ours(q_, k_, v_, b_):
        out, _ = attention_with_stats(q_, k_, v_, key_bias=b_, backend="triton", stats="none", **kw)
        return out

    out, got = grads(ours, (q, k, v, key_bias), do)
    cpu = [t.cpu() if t is not None else None for t in (q, k, v, key_bias)]
    _, exact = grads(lambda *a: naive_output(*a[:3], key_bias=a[3], **naive_kw), cpu, do.cpu().double())
    if q.dtype != torch.float32:
        _, lowp = grads(lambda *a: naive_output(*a[:3], key_bias=a[3], lowp=True, **naive_kw), cpu, do.cpu())
    for name, g, e, i in zip(NAMES, got, exact, range(4)):
        if e is None:
            continue
        assert g.shape == e.shape and g.dtype == (q, k, v, key_bias)[i].dtype, name
        assert torch.isfinite(g).all(), f"{name}: non-finite gradient"
        err = (g.cpu().double() - e).abs().max().item()
        scale = max(e.abs().max().item(), 1.0)  # gradients here are O(1); exact zeros (one key) need a floor
        if q.dtype == torch.float32:
            assert err <= 2e-5 * scale, f"{name}: error {err:.2e} (scale {scale:.2e})"
        else:
            lowp_err = (lowp[i].double() - e).abs().max().item()
            assert err <= 3 * lowp_err + 2e-3 * scale, f"{name}: error {err:.2e} vs low-precision {lowp_err:.2e}"
    return out, got


SHAPES = [
    # b, h, hk, lq, lk, d
    (1, 2, 2, 1, 1, 32),  # one token
    (2, 13, 13, 17, 17, 64),  # 13 heads
    (1, 12, 4, 131, 131, 64),  # GQA 12/4
    (1, 4, 1, 131, 131, 32),  # MQA
    (1, 3, 3, 70, 70, 80),  # head dim that is not a power of two
    (2, 4, 2, 1, 200, 16),  # a single decode query against a cache
    (1, 4, 2, 37, 200, 64),  # chunked prefill: q_len != k_len
]
# the interpreter is slow: every shape in float32, the cheaper ones in float16/bfloat16 too, the rest on the GPU
LOWP_IN_CI = {(1, 2, 2, 1, 1, 32), (2, 13, 13, 17, 17, 64), (1, 3, 3, 70, 70, 80), (1, 4, 2, 37, 200, 64)}
CASES = [pytest.param(s, dt, marks=() if dt == torch.float32 or s in LOWP_IN_CI else pytest.mark.slow,
                      id=f"{'x'.join(map(str, s))}-{dt}") for s in SHAPES for dt in DTYPES]


@pytest.mark.parametrize("shape,dtype", CASES)
def test_causal_grads(shape, dtype, device):
    q, k, v, do = make(*shape, dtype, device, seed=sum(shape))
    check_grads(q, k, v, do, causal=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_noncausal_grads(dtype, device):
    q, k, v, do = make(2, 2, 1, 67, 131, 32, dtype, device, seed=1)
    check_grads(q, k, v, do, causal=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sliding_window_grads(dtype, device):
    q, k, v, do = make(1, 2, 1, 150, 200, 32, dtype, device, seed=2)
    check_grads(q, k, v, do, sliding_window=37)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_padding_grads(dtype, device):
    """Left padding (the first query rows see no key at all: output 0, zero gradients), right padding; padding
    queries that do see keys get the gradient their dO gives them, as in the reference."""
    q, k, v, do = make(3, 2, 1, 131, 131, 16, dtype, device, seed=3)
    mask = torch.ones(3, 131, dtype=torch.bool)
    mask[0, :40] = False
    mask[1, 100:] = False
    mask[2, ::3] = False
    out, (dq, dk, dv, _) = check_grads(q, k, v, do, attention_mask=mask.to(device))
    assert out[0, :, :40].abs().max().item() == 0
    assert dq[0, :, :40].abs().max().item() == 0
    assert dk[0, :, :40].abs().max().item() == 0 and dv[0, :, :40].abs().max().item() == 0
    assert dq[1, :, 100:].abs().max().item() > 0  # padding queries that see real keys


BIAS_CASES = [((2, 4), torch.float32), ((1, 4), torch.float32), ((2, 1), torch.float32), ((1, 1), torch.float32),
              ((2, 4), torch.float16), ((1, 4), torch.bfloat16)]


@pytest.mark.parametrize("bias_shape,dtype", BIAS_CASES, ids=lambda x: str(x))
def test_key_bias_grads(bias_shape, dtype, device):
    """The key-bias gradient (sum over queries of dS) in every broadcast shape, with -inf entries: a hidden key, and
    a whole query row hidden by the bias (zero gradients there)."""
    q, k, v, do = make(2, 4, 2, 45, 60, 32, dtype, device, seed=4)
    g = torch.Generator().manual_seed(5)
    bias = torch.randn(*bias_shape, 60, generator=g)
    bias[..., 3] = float("-inf")
    bias[0, 0, :16] = float("-inf")  # with causal and q_len 45 < k_len 60, query 0 (key position 15) sees nothing
    bias = bias.to(device, dtype if dtype != torch.bfloat16 else torch.float32)
    out, (dq, dk, dv, db) = check_grads(q, k, v, do, key_bias=bias)
    assert db.shape == bias.shape
    assert db[..., 3].abs().max().item() == 0
    assert out[0, 0, 0].abs().max().item() == 0 and dq[0, 0, 0].abs().max().item() == 0


def test_window_padding_bias_mqa_together(device):
    q, k, v, do = make(2, 6, 1, 90, 90, 48, torch.float32, device, seed=6)
    mask = torch.ones(2, 90, dtype=torch.bool)
    mask[1, :25] = False
    bias = torch.randn(2, 6, 90).to(device)
    check_grads(q, k, v, do, key_bias=bias, sliding_window=20, attention_mask=mask.to(device))


def test_noncontiguous_inputs_and_grad(device):
    """Transformers hands q/k/v as transposed views; out.sum() hands back an expanded (stride-0) dO."""
    g = torch.Generator().manual_seed(7)
    qs = torch.randn(2, 33, 4, 32, generator=g).to(device)  # [batch, pos, head, d_head]
    ks = torch.randn(2, 33, 2, 32, generator=g).to(device)
    vs = torch.randn(2, 33, 2, 32, generator=g).to(device)
    leaves = [t.requires_grad_(True) for t in (qs, ks, vs)]
    out, _ = attention_with_stats(*(t.transpose(1, 2) for t in leaves), backend="triton", stats="none")
    out.sum().backward()
    got = [t.grad.clone() for t in leaves]
    cpu = [t.detach().cpu().requires_grad_(True) for t in leaves]
    naive_output(*(t.transpose(1, 2) for t in cpu)).sum().backward()
    for a, e in zip(got, (t.grad for t in cpu)):
        torch.testing.assert_close(a.cpu(), e.to(a.dtype), atol=2e-5, rtol=2e-4)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_output_requires_grad(backend, device):
    q, k, v, _ = make(1, 2, 1, 9, 9, 16, torch.float32, device, seed=8)
    for i in range(3):
        ins = [q, k, v]
        ins[i] = ins[i].clone().requires_grad_(True)
        out, st = attention_with_stats(*ins, backend=backend, stats="all")
        assert out.requires_grad and out.grad_fn is not None, (backend, i)
        if backend == "triton":
            assert all(not t.requires_grad for _, t in st.items()), "statistics carry no gradient"
    bias = torch.zeros(1, 1, 9, device=device, requires_grad=True)
    out, _ = attention_with_stats(q, k, v, key_bias=bias, backend=backend, stats="none")
    assert out.requires_grad
    with torch.no_grad():
        out, _ = attention_with_stats(q.requires_grad_(True), k, v, backend=backend, stats="none")
    assert not out.requires_grad


def test_statistics_unchanged_by_grad_path(device):
    """With gradients the forward returns the same output and exactly the statistics that were asked for."""
    q, k, v, _ = make(1, 4, 2, 50, 50, 32, torch.float16, device, seed=9)
    out0, st0 = attention_with_stats(q, k, v, backend="triton", stats=["entropy", "key_mean"], sink_tokens=2)
    out1, st1 = attention_with_stats(q.requires_grad_(True), k, v, backend="triton", stats=["entropy", "key_mean"],
                                     sink_tokens=2)
    assert st1.requested() == st0.requested() == ("entropy", "key_mass", "key_mean", "key_count")
    assert torch.equal(out0, out1.detach())
    for (n, a), (_, b) in zip(st0.items(), st1.items()):
        assert torch.equal(a.nan_to_num(-7), b.nan_to_num(-7)), n
    _, st2 = attention_with_stats(q, k, v, backend="triton", stats="none", need_out=False)
    assert st2.requested() == ()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backends_agree(dtype, device):
    """Gradient consistency between the Triton and reference backends on the same inputs and dO."""
    q, k, v, do = make(2, 6, 2, 40, 77, 32, dtype, device, seed=10)
    bias = torch.randn(1, 6, 77).to(device)
    mask = torch.ones(2, 77, dtype=torch.bool)
    mask[1, :30] = False
    kw = dict(key_bias=None, attention_mask=mask.to(device), sliding_window=50, stats="none")
    results = {}
    for backend in ("triton", "reference"):
        def fn(q_, k_, v_, b_):
            return attention_with_stats(q_, k_, v_, backend=backend, **{**kw, "key_bias": b_})[0]

        results[backend] = grads(fn, (q, k, v, bias), do)
    (out_t, g_t), (out_r, g_r) = results["triton"], results["reference"]
    # the reference works in float32 throughout: allow the kernel's low-precision products (~1x-2x the error of
    # plain attention in that dtype, measured: 2e-3 (fp16) / 2e-2 (bf16) of the gradient's largest entry)
    rel = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    for name, a, b in zip(("out", *NAMES), (out_t, *g_t), (out_r, *g_r)):
        err = (a.float() - b.float()).abs().max().item()
        assert err <= rel * max(b.abs().max().item(), 1.0), f"{name}: backends differ by {err:.2e}"


@pytest.mark.parametrize("split", [2, 6])
def test_group_split_matches_one_program_per_group(split, device):
    """The key-major kernel may split a GQA group over several programs (float32 partials added in a fixed order)."""
    q, k, v, do = make(1, 6, 1, 33, 33, 32, torch.float32, device, seed=11)
    bias = torch.randn(1, 6, 33, device=device)
    spec = check_inputs(q, k, v, causal=True, scale=None, sliding_window=None, attention_mask=None, key_bias=bias,
                        stats="lse", sink_tokens=4, local_window=64, span=None)
    out, st = attention_with_stats(q, k, v, key_bias=bias, backend="triton", stats="lse")
    whole = triton_attention_backward(do, q, k, v, out, st.lse, spec, need_dbias=True, split=1)
    parts = triton_attention_backward(do, q, k, v, out, st.lse, spec, need_dbias=True, split=split)
    for name, a, b in zip(NAMES, whole, parts):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    with pytest.raises(ValueError, match="split"):
        triton_attention_backward(do, q, k, v, out, st.lse, spec, split=4)


@pytest.fixture
def deterministic():
    """torch.use_deterministic_algorithms(True) for one test (the Triton backward is chosen then)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(before)


def test_only_needed_gradients_and_determinism(device, deterministic):
    q, k, v, do = make(1, 4, 2, 64, 64, 32, torch.float16, device, seed=12)
    qq = q.clone().requires_grad_(True)
    out, _ = attention_with_stats(qq, k, v, backend="triton", stats="none")
    (dq1,) = torch.autograd.grad(out, [qq], do)
    out, _ = attention_with_stats(qq, k, v, backend="triton", stats="none")
    (dq2,) = torch.autograd.grad(out, [qq], do)
    assert torch.equal(dq1, dq2)
    _, g1 = grads(lambda *a: attention_with_stats(*a, backend="triton", stats="none")[0], (q, k, v), do)
    _, g2 = grads(lambda *a: attention_with_stats(*a, backend="triton", stats="none")[0], (q, k, v), do)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch's fused attention backward needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_sdpa_backward_dispatch(dtype):
    """On CUDA in fp16/bf16 without window/padding/key bias, gradients come from torch's own fused backward
    (checked against float64), statistics still from the Triton pass; a key bias, a window or deterministic mode
    keeps the Triton backward."""
    q, k, v, do = make(1, 8, 2, 300, 300, 64, dtype, "cuda", seed=21)
    check_grads(q, k, v, do, causal=True)
    qq = q.clone().requires_grad_(True)
    out, st = attention_with_stats(qq, k, v, backend="triton", stats=["entropy", "key_mass"])
    assert "Fused" not in type(out.grad_fn).__name__, type(out.grad_fn).__name__
    with torch.no_grad():
        out0, st0 = attention_with_stats(q, k, v, backend="triton", stats=["entropy", "key_mass"])
    assert torch.equal(out.detach(), out0) and torch.equal(st.entropy, st0.entropy)
    out, _ = attention_with_stats(qq, k, v, backend="triton", stats="none", sliding_window=64)
    assert "Fused" in type(out.grad_fn).__name__
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        out, _ = attention_with_stats(qq, k, v, backend="triton", stats="none")
        assert "Fused" in type(out.grad_fn).__name__
    finally:
        torch.use_deterministic_algorithms(False)


def test_double_backward_is_refused(device):
    """The backward kernels are not differentiable again: asking for a second derivative is an error, not zeros."""
    q, k, v, do = make(1, 2, 1, 8, 8, 16, torch.float32, device, seed=16)
    q.requires_grad_(True)
    out, _ = attention_with_stats(q, k, v, backend="triton", stats="none")
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(out, [q], do, create_graph=True)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_long_awkward_length_grads(dtype, device):
    q, k, v, do = make(1, 13, 13, 1027, 1027, 64, dtype, device, seed=13)
    check_grads(q, k, v, do)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d", [128, 256])
def test_big_head_dim_grads(d, dtype, device):
    q, k, v, do = make(1, 4, 1, 300, 300, d, dtype, device, seed=14)
    bias = torch.randn(1, 4, 300).to(device)
    check_grads(q, k, v, do, key_bias=bias)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_long_gqa_window_padded_grads(dtype, device):
    q, k, v, do = make(2, 12, 4, 1027, 1027, 128, dtype, device, seed=15)
    mask = torch.ones(2, 1027, dtype=torch.bool)
    mask[0, :300] = False
    check_grads(q, k, v, do, sliding_window=64, attention_mask=mask.to(device))


@pytest.mark.parametrize("lq,lk,window,padded", [(17, 17, None, False), (131, 131, 40, True), (5, 29, None, True)])
def test_reference_backward_recomputes_chunks(lq, lk, window, padded):
    """The PyTorch reference's backward (each query chunk checkpointed and recomputed) equals float64 autograd of the
    naive attention, with several chunks, GQA 6/2, a window, padding and a key bias; and it keeps no n x n tensor."""
    from interp.kernels.reference import reference_attention

    q, k, v, do = make(2, 6, 2, lq, lk, 16, torch.float32, "cpu", seed=11)
    bias = torch.randn(2, 6, lk, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, lk, dtype=torch.bool)
    if padded:
        mask[1, :3] = False
    kw = dict(causal=True, sliding_window=window, attention_mask=mask if padded else None)

    def ours(q_, k_, v_, b_):
        spec = check_inputs(q_, k_, v_, key_bias=b_, stats=["lse", "key_mass"], scale=None, sink_tokens=4,
                            local_window=8, span=None, **kw)
        out, st = reference_attention(q_, k_, v_, spec, chunk=7)
        assert not st.lse.requires_grad and not st.key_mass.requires_grad  # statistics carry no gradient
        return out

    _, got = grads(ours, (q, k, v, bias), do)
    _, exact = grads(lambda *a: naive_output(*a[:3], key_bias=a[3], **kw), (q, k, v, bias), do.double())
    for name, g, e in zip(NAMES, got, exact):
        torch.testing.assert_close(g.double(), e.double(), atol=2e-5, rtol=1e-4, msg=name)


def test_reference_backward_memory_is_linear():
    """What autograd keeps for the backward of one reference attention call grows with n, not n^2."""
    from interp.kernels.reference import reference_attention

    def saved_bytes(n):
        q, k, v, _ = make(1, 4, 2, n, n, 32, torch.float32, "cpu", seed=0)
        q.requires_grad_(True)
        seen = {}

        def pack(t):  # distinct storages (every chunk saves a reference to the same k and v)
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            spec = check_inputs(q, k, v, stats="none", causal=True, scale=None, sliding_window=None,
                                attention_mask=None, key_bias=None, sink_tokens=4, local_window=8, span=None)
            out, _ = reference_attention(q, k, v, spec, chunk=64)
        out.sum().backward()
        assert q.grad is not None and torch.isfinite(q.grad).all()
        return sum(seen.values())

    small, big = saved_bytes(256), saved_bytes(1024)
    assert big < 6 * small, (small, big)  # 4x the tokens: about 4x the bytes (n^2 would be 16x)
    assert big < 4 * 1024 * 1024 * 4 / 2, big  # well below one [heads, n, n] float32 map
