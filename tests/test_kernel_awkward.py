"""Awkward inputs to attention_with_stats, each once wrong somewhere (a CPU sweep of the kernel API): both backends
against each other and against hand-computed answers."""

import math
import os

import numpy as np
import pytest
import torch

from interp.kernels import attention_with_stats
from test_kernel_triton import check_against_reference, make


def _padded_mask(b, n, device):
    m = torch.ones(b, n, dtype=torch.bool)
    m[0, :5] = False
    m[1, n - 5:] = False
    return m.to(device)


def test_transposed_padding_mask_is_read_by_value_not_by_layout(device):
    """A mask with transposed strides (same values) once made the kernels read the wrong keys."""
    q, k, v = make(2, 4, 2, 20, 20, 32, torch.float32, device, seed=1)
    mask = _padded_mask(2, 20, device)
    strided = mask.T.contiguous().T  # strides (1, 2)
    assert not strided.is_contiguous() and torch.equal(strided, mask)
    out_c, st_c = attention_with_stats(q, k, v, attention_mask=mask, backend="triton")
    for m in (strided, strided.to(torch.int32)):
        out_t, st_t = check_against_reference(q, k, v, attention_mask=m, stats="all")
        torch.testing.assert_close(out_t, out_c)
        torch.testing.assert_close(st_t.key_count, st_c.key_count)
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    grads = {}
    for name, m in (("contiguous", mask), ("strided", strided)):
        out, _ = attention_with_stats(qg, kg, vg, attention_mask=m, backend="triton", stats="none")
        grads[name] = torch.autograd.grad(out.sum(), (qg, kg, vg))
    for a, b in zip(grads["contiguous"], grads["strided"]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("window", [2**31 - 1, 2**31 - 10, 20, 10**12])
def test_windows_at_least_k_len_mean_no_window(window, device):
    """A window that no query can reach the end of is no window (a 2^31 - 1 sentinel once overflowed int32 in the
    key-count and dK/dV loop bounds)."""
    q, k, v = make(1, 2, 2, 20, 20, 32, torch.float32, device, seed=2)
    out_t, st_t = check_against_reference(q, k, v, sliding_window=window, stats="all")
    _, st_none = attention_with_stats(q, k, v, stats="all", backend="triton")
    torch.testing.assert_close(st_t.key_count[0, 0], torch.arange(20, 0, -1, dtype=torch.float32, device=device))
    torch.testing.assert_close(st_t.key_mass, st_none.key_mass)
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    got = torch.autograd.grad(attention_with_stats(qg, kg, vg, sliding_window=window, backend="triton",
                                                   stats="none")[0].sum(), (qg, kg, vg))
    ref = torch.autograd.grad(attention_with_stats(qg, kg, vg, backend="reference", stats="none")[0].sum(),
                              (qg, kg, vg))
    for a, b in zip(got, ref):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_rows_hidden_by_a_minus_inf_bias_have_finite_gradients(backend, device):
    """KeyMask over every key of a head: its rows see nothing (output 0) and their gradients are 0, not NaN."""
    q, k, v = make(1, 2, 2, 6, 6, 16, torch.float32, device, seed=3)
    bias = torch.zeros(1, 2, 6, device=device)
    bias[0, 0] = float("-inf")
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    bias.requires_grad_(True)
    out, st = attention_with_stats(q, k, v, key_bias=bias, backend=backend, stats=["lse"])
    assert torch.isneginf(st.lse[0, 0]).all() and (out[0, 0] == 0).all()
    grads = torch.autograd.grad((out * torch.randn_like(out)).sum(), (q, k, v, bias))
    for g in grads:
        assert torch.isfinite(g).all()
    assert (grads[0][0, 0] == 0).all()  # head 0's queries do not matter


def test_huge_uniform_bias_is_exact_on_the_reference_and_flagged_on_triton(device):
    """A bias of -1e9 on every key changes nothing in exact arithmetic. The reference (max-shifted softmax) keeps
    normalised probabilities; the Triton statistics, formed as exp(s - lse) in float32, cannot and say so with NaN
    instead of returning unnormalised numbers (sum key_mass = 21 for 6 rows, once)."""
    q, k, v = make(1, 1, 1, 6, 6, 16, torch.float32, device, seed=4)
    bias = torch.full((1, 1, 6), -1e9, device=device)
    out_r, st_r = attention_with_stats(q, k, v, key_bias=bias, backend="reference")
    torch.testing.assert_close(st_r.key_mass.sum(), torch.tensor(6.0, device=device))
    assert (st_r.local_mass <= 1 + 1e-6).all()
    uniform = torch.cumsum(v[0, 0].float(), 0) / torch.arange(1, 7, device=device)[:, None]  # float32: scores absorbed
    torch.testing.assert_close(out_r[0, 0].float(), uniform, atol=1e-5, rtol=1e-5)
    out_t, st_t = attention_with_stats(q, k, v, key_bias=bias, backend="triton")
    torch.testing.assert_close(out_t[0, 0].float(), uniform, atol=1e-5, rtol=1e-5)
    for name in ("max_prob", "entropy", "sink_mass", "local_mass"):
        assert torch.isnan(getattr(st_t, name)).all(), name
    assert (st_t.argmax == -1).all() and torch.isfinite(st_t.lse).all()
    assert (st_t.key_mass == 0).all()  # rows with NaN statistics add no key mass


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_finfo_min_bias_hides_keys_like_minus_inf(backend, dtype, device):
    """Additive masks written as torch.finfo(dtype).min: hidden keys on every backend (the two once disagreed for
    float32's; float16's, -65504, once hid nothing: rows whose keys all carried it got lse -65504 and key mass on the
    "hidden" keys)."""
    q, k, v = make(1, 2, 2, 8, 8, 16, torch.float32, device, seed=5)
    big = torch.finfo(dtype).min
    bias = torch.zeros(1, 2, 8, device=device, dtype=dtype)
    bias[0, 0] = big  # head 0: every key hidden
    bias[0, 1, :3] = big  # head 1: the first three
    inf = torch.where(bias == big, float("-inf"), bias)
    out_a, st_a = attention_with_stats(q, k, v, key_bias=bias, backend=backend)
    out_b, st_b = attention_with_stats(q, k, v, key_bias=inf, backend=backend)
    torch.testing.assert_close(out_a, out_b)
    for name, t in st_b.items():
        torch.testing.assert_close(getattr(st_a, name), t, equal_nan=True, msg=name)
    assert torch.isneginf(st_a.lse[0, 0]).all() and (st_a.key_count[0, 1, :3] == 0).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_nan_or_plus_inf_key_bias_is_refused(backend, bad, device):
    """A NaN or +inf bias once went through: NaN rows, and key_count / key_mean differing between the backends."""
    q, k, v = make(1, 2, 1, 8, 8, 16, torch.float32, device, seed=5)
    bias = torch.zeros(1, 2, 8, device=device)
    bias[0, 0, 2] = bad
    with pytest.raises(ValueError, match="key_bias has NaN or \\+inf values"):
        attention_with_stats(q, k, v, key_bias=bias, backend=backend)
    bias16 = torch.zeros(1, 2, 8, device=device, dtype=torch.float16)
    bias16[..., :2] = torch.finfo(torch.float16).min  # a float16 mask is fine: it hides its keys
    _, st = attention_with_stats(q, k, v, key_bias=bias16, backend=backend)
    assert (st.key_count[..., :2] == 0).all() and (st.key_mass[..., :2] == 0).all()


@pytest.mark.parametrize("where", ["q", "k"])
def test_nan_scores_give_nan_statistics_not_empty_rows(where, device):
    """One NaN in q (or k) once made the Triton row look empty (lse -inf, entropy 0) and its key mass negative.
    Now, on both backends: NaN statistics for the affected rows, argmax -1, no key mass from them, everything else
    as without them."""
    q, k, v = make(1, 2, 2, 40, 40, 16, torch.float32, device, seed=6)
    row = 25
    if where == "q":
        q[0, 0, row, 3] = float("nan")
        bad_rows = torch.zeros(40, dtype=torch.bool)
        bad_rows[row] = True
    else:
        k[0, 0, row, 3] = float("nan")
        bad_rows = torch.arange(40) >= row  # every query that can see key `row`
    for backend in ("reference", "triton"):
        _, st = attention_with_stats(q, k, v, backend=backend, stats="all", span=(5, 30))
        for name in ("lse", "max_prob", "entropy", "sink_mass", "local_mass", "span_mass"):
            t = getattr(st, name)[0, 0].cpu()
            assert torch.isnan(t[bad_rows]).all() and not torch.isnan(t[~bad_rows]).any(), (backend, name)
        assert (st.argmax[0, 0].cpu()[bad_rows] == -1).all()
        # key mass: what the good rows give, computed without the bad ones (in float64, by hand)
        qq, kk = q[0, 0].double().cpu(), k[0, 0].double().cpu()
        good = ~bad_rows
        s = (qq[good] @ kk[:row].T if where == "k" else qq[good] @ kk.T) / 4.0  # scale 1/sqrt(16)
        qpos = torch.arange(40)[good]
        hidden = torch.arange(s.shape[1])[None, :] > qpos[:, None]
        expect = torch.zeros(40, dtype=torch.float64)
        expect[: s.shape[1]] = torch.softmax(s.masked_fill(hidden, float("-inf")), -1).sum(0)
        torch.testing.assert_close(st.key_mass[0, 0].cpu().double(), expect, atol=1e-5, rtol=1e-5, msg=backend)
        assert torch.isfinite(st.key_count).all() and not torch.isnan(st.lse[0, 1]).any()  # the other head


def test_nan_in_a_padding_query_does_not_poison_key_statistics(device):
    q, k, v = make(2, 2, 2, 20, 20, 16, torch.float32, device, seed=7)
    mask = _padded_mask(2, 20, device)
    q[1, 0, 17, 0] = float("nan")  # batch row 1 pads its last five positions
    _, st_r = attention_with_stats(q, k, v, attention_mask=mask, stats="all", backend="reference")
    _, st_t = attention_with_stats(q, k, v, attention_mask=mask, stats="all", backend="triton")
    for name, t in st_r.items():
        torch.testing.assert_close(getattr(st_t, name), t, equal_nan=True, atol=3e-5, rtol=3e-4, msg=name)
    assert torch.isfinite(st_t.key_mass[1]).all() and torch.isnan(st_t.entropy[1, 0, 17])


def test_stats_as_a_generator_is_read_once(device):
    q, k, v = make(1, 2, 2, 8, 8, 16, torch.float32, device, seed=8)
    with pytest.raises(ValueError, match="no span"):
        attention_with_stats(q, k, v, stats=(s for s in ["lse", "span_mass"]))
    _, st = attention_with_stats(q, k, v, stats=(s for s in ["lse", "entropy"]))
    assert st.requested() == ("lse", "entropy")


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.complex64])
def test_key_bias_must_be_floating_point(dtype, device):
    q, k, v = make(1, 2, 2, 8, 8, 16, torch.float32, device, seed=9)
    with pytest.raises(TypeError, match="key_bias must be a floating-point tensor"):
        attention_with_stats(q, k, v, key_bias=torch.zeros(1, 2, 8, dtype=dtype, device=device))


def test_zero_query_heads_are_refused(device):
    q, k, v = make(1, 2, 1, 8, 8, 16, torch.float32, device, seed=10)
    with pytest.raises(ValueError, match="0 heads"):
        attention_with_stats(q[:, :0], k, v)


def test_numpy_scalars_are_numbers(device):
    q, k, v = make(1, 2, 2, 12, 12, 16, torch.float32, device, seed=11)
    a = attention_with_stats(q, k, v, sink_tokens=np.int64(2), local_window=np.int32(3), sliding_window=np.int64(5),
                             scale=np.float32(0.25), causal=np.bool_(True), stats="all")
    b = attention_with_stats(q, k, v, sink_tokens=2, local_window=3, sliding_window=5, scale=0.25, stats="all")
    torch.testing.assert_close(a[0], b[0])
    for name, t in b[1].items():
        torch.testing.assert_close(getattr(a[1], name), t, equal_nan=True)
    with pytest.raises(TypeError, match="causal must be True or False"):
        attention_with_stats(q, k, v, causal=1)
    with pytest.raises(TypeError, match="scale must be"):
        attention_with_stats(q, k, v, scale="0.5")
    assert math.isfinite(0.25)


def test_span_must_be_a_pair_not_a_dict(device):
    q, k, v = make(1, 2, 2, 8, 8, 16, torch.float32, device, seed=12)
    with pytest.raises(TypeError, match="span must be"):
        attention_with_stats(q, k, v, span={0: 1, 2: 3}, stats=["span_mass"])


def test_output_only_asks_sdpa_for_no_lse(monkeypatch):
    """Output only: cuDNN is called without its lse and no statistics pass runs; with a statistic it is asked for.
    (The dispatch, with a fake op on the CPU; the GPU runs the real one in test_output_only_matches_on_gpu.)"""
    from interp.kernels import launcher, sdpa_path
    from interp.kernels.checks import check_inputs

    calls = []

    def fake_cudnn(q, k, v, causal, scale, lse=True):
        calls.append(lse)
        out = torch.zeros(q.shape, dtype=q.dtype)
        return out, (torch.zeros(q.shape[0], q.shape[1], q.shape[2], 1) if lse else torch.empty(0))

    def no_stats_pass(*a, **k):
        raise AssertionError("the statistics pass ran for an output-only call")

    monkeypatch.setitem(sdpa_path.OPS, "cudnn", fake_cudnn)
    monkeypatch.setattr(launcher, "eligible", lambda *a: True)
    monkeypatch.setattr(sdpa_path, "_chosen", {})
    q, k, v = make(1, 4, 2, 16, 16, 32, torch.float16, "cpu", seed=13)
    kw = dict(causal=True, scale=None, sliding_window=None, attention_mask=None, key_bias=None, sink_tokens=4,
              local_window=64, span=None)
    with monkeypatch.context() as m:
        m.setattr(launcher, "triton_stats", no_stats_pass)
        out, st = launcher.triton_attention(q, k, v, check_inputs(q, k, v, stats="none", **kw))
    assert calls == [False] and st.requested() == () and out.shape == q.shape
    _, st = launcher.triton_attention(q, k, v, check_inputs(q, k, v, stats="lse", **kw))
    assert calls == [False, True] and st.lse.shape == (1, 4, 16) and st.lse.is_contiguous()


@pytest.mark.gpu
def test_output_only_matches_on_gpu(device):
    q, k, v = make(1, 8, 2, 512, 512, 128, torch.float16, device, seed=14)
    out_none, _ = attention_with_stats(q, k, v, stats="none")
    out_all, _ = attention_with_stats(q, k, v, stats="all")
    assert torch.equal(out_none, out_all)


@pytest.mark.parametrize("n", [200, 8192 + 65])
def test_both_program_orders_cover_every_row(n, device):
    """Programs run heads-first, last query block first up to HEAVY_FIRST_MAX query tokens and head by head above it
    (`triton_forward._program`, one grid axis of query blocks x batch x heads): every (batch, head, row) is computed
    once, by the right program, either way. A sliding window keeps the long case's walks short on the CPU
    interpreter (and makes the Triton forward, with the same program order, give the output on a GPU); 2 heads over
    2 batches make a wrong batch / head split show."""
    from interp.kernels.triton_forward import HEAVY_FIRST_MAX

    assert (n <= HEAVY_FIRST_MAX) == (n == 200)
    q, k, v = make(2, 2, 1, n, n, 16, torch.float32, device, seed=7)
    check_against_reference(q, k, v, sliding_window=24, stats="all")


@pytest.mark.parametrize("layout", ["cudnn", "cudnn-padded", "padded", "plain"])
def test_sdpa_lse_layouts_become_b_h_q(layout):
    """`sdpa_path._run` turns each op's lse layout into [batch, heads, q_len] float32 (cuDNN: [b, h, lq, 1];
    some builds pad the query axis; FlashAttention: [b, h, lq]) without changing a value."""
    from types import SimpleNamespace

    from interp.kernels import sdpa_path

    b, h, lq = 2, 3, 5
    want = torch.arange(b * h * lq, dtype=torch.float32).reshape(b, h, lq)
    if layout == "cudnn":
        lse = want.unsqueeze(-1).clone()
    elif layout == "cudnn-padded":
        lse = torch.cat([want, torch.full((b, h, 3), -7.0)], dim=2).unsqueeze(-1).clone()
    elif layout == "padded":
        lse = torch.cat([want, torch.full((b, h, 3), -7.0)], dim=2)
    else:
        lse = want.clone()
    spec = SimpleNamespace(batch=b, heads=h, q_len=lq, scale=0.5)
    out, got = sdpa_path._run(lambda *a: (torch.zeros(1), lse), None, None, None, True, spec)
    assert got.shape == (b, h, lq) and got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got, want)


def test_a_bad_sdpa_mode_is_refused_at_import():
    """INTERP_SDPA names the op that gives the output and lse: anything but auto / off / an op is a clear error when
    the launcher loads (on the first call), not a KeyError from deep inside the first CUDA call."""
    import subprocess
    import sys

    env = dict(os.environ, INTERP_SDPA="cudnnn")
    r = subprocess.run([sys.executable, "-c", "import interp.kernels.sdpa_path"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode != 0, r.stderr
    assert "INTERP_SDPA must be one of ['auto', 'off', 'cudnn', 'flash'], got 'cudnnn'" in r.stderr, r.stderr


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_huge_sink_and_local_sizes_mean_every_key(backend, device):
    """sink_tokens / local_window past k_len mean every key; a huge int once overflowed inside Triton's launcher
    (or the reference's index arithmetic)."""
    q, k, v = make(1, 2, 1, 8, 8, 16, torch.float32, device, seed=7)
    _, huge = attention_with_stats(q, k, v, backend=backend, sink_tokens=2 ** 70, local_window=2 ** 64)
    _, exact = attention_with_stats(q, k, v, backend=backend, sink_tokens=8, local_window=8)
    torch.testing.assert_close(huge.sink_mass, exact.sink_mass)
    torch.testing.assert_close(huge.local_mass, exact.local_mass)
    torch.testing.assert_close(huge.sink_mass, torch.ones_like(huge.sink_mass))


def test_need_out_and_prob_hook_are_checked(device):
    q, k, v = make(1, 2, 1, 8, 8, 16, torch.float32, device, seed=7)
    with pytest.raises(TypeError, match="need_out must be True or False, got 'no'"):
        attention_with_stats(q, k, v, need_out="no")
    with pytest.raises(TypeError, match="prob_hook must be a callable"):
        attention_with_stats(q, k, v, prob_hook=5, backend="reference")


@pytest.mark.parametrize("hook, err, match", [
    (lambda p, qs: p[..., :2], ValueError, r"must return probabilities of shape \(1, 2, 8, 8\)"),
    (lambda p, qs: "x", TypeError, "got str"),
    (lambda p, qs: (p > 0.1).long(), TypeError, "of dtype torch.int64"),
    (lambda p, qs: -p, ValueError, "negative or \\+inf"),
    (lambda p, qs: p / 0.0, ValueError, "negative or \\+inf"),
])
def test_prob_hook_results_are_checked(hook, err, match, device):
    """What a prob_hook returns is checked before it is used: a clear error, not one from inside the matmul, nor
    negative key mass and NaN entropy from negative probabilities. float64 is taken (as float32); NaN passes (the
    inputs' NaN policy)."""
    q, k, v = make(1, 2, 1, 8, 8, 16, torch.float32, device, seed=7)
    with pytest.raises(err, match=match):
        attention_with_stats(q, k, v, prob_hook=hook)
    out, st = attention_with_stats(q, k, v, prob_hook=lambda p, qs: p.double())
    ref_out, ref = attention_with_stats(q, k, v, backend="reference")
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(st.key_mass, ref.key_mass)


def test_scores_that_overflow_to_minus_inf(device):
    """q.k = -1e40 (finite inputs near 1e20) overflows float32 to -inf on the first 64 keys: the reference hides those
    keys. The Triton walk does too for every statistic but entropy, which reads NaN on rows that met such a score in
    an unmasked block (it once read 0: `stats.py`); never a wrong number. The fused decode walk is exact."""
    q, k, v = make(1, 4, 2, 150, 150, 32, torch.float32, device, seed=59)
    q[..., 0] = 1e20
    k[..., 0] = 0.0
    k[0, :, :64, 0] = -1e20
    kw = dict(causal=True, stats="all", sink_tokens=3, local_window=20, span=(1, 100))
    _, ref = attention_with_stats(q, k, v, backend="reference", **kw)
    _, st = attention_with_stats(q, k, v, backend="triton", **kw)
    assert torch.isfinite(ref.entropy).all() and (ref.entropy[..., 100:] > 1).all()
    for name, t in ref.items():
        if name != "entropy":
            torch.testing.assert_close(getattr(st, name), t, atol=2e-5, rtol=2e-4, equal_nan=True, msg=name)
    ent = st.entropy
    assert torch.isnan(ent[..., -1]).all()  # the last query's first key block is never a masked one
    ok = ~torch.isnan(ent)
    torch.testing.assert_close(ent[ok], ref.entropy[ok], atol=2e-5, rtol=2e-4)
    _, dec = attention_with_stats(q[:, :, -1:], k, v, backend="triton", **kw)  # a decode step: the fused walk
    torch.testing.assert_close(dec.entropy, ref.entropy[..., -1:], atol=2e-5, rtol=2e-4)
