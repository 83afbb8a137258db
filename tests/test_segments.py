"""`segment_ids` at the kernel level (packed sequences, chunked attention): on both backends, the output, every
statistic and the gradients against a float64 attention that materialises the whole block-diagonal mask; the Triton
path's pieces against running each segment alone; and the input checks. The model-level tests (Llama 4's chunked
layers, packed position_ids) are in test_hf_features.py."""

from __future__ import annotations

import pytest
import torch
from helpers import DEV, on_device, to_device

from interp.kernels import attention_with_stats, segments, stats_from_lse

attend, lse_stats = on_device(attention_with_stats), on_device(stats_from_lse)

BACKENDS = ("reference", "triton")
STATS = ("lse", "max_prob", "argmax", "entropy", "sink_mass", "local_mass", "span_mass", "key_mass", "key_count",
         "key_mean")


def _dense(q, k, v, ids, *, causal=True, window=None, mask=None, bias=None, sink_tokens=2, local_window=3,
           span=None):
    """float64 attention over the full [b, h, q, k] mask: causal, window, padding and "same segment"; sink_mass on
    the first sink_tokens keys of the query's segment."""
    b, h, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    g = h // hk
    kd, vd = k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1)
    s = q.double() @ kd.transpose(-1, -2) / d ** 0.5
    if bias is not None:
        s = s + bias.double()[:, :, None, :]
    off = lk - lq
    qpos, kpos = torch.arange(lq)[:, None] + off, torch.arange(lk)[None, :]
    allowed = torch.ones(b, 1, lq, lk, dtype=torch.bool)
    if causal:
        allowed &= kpos <= qpos
    if window is not None:
        allowed &= qpos - kpos < window
    qvalid = torch.ones(b, lq, dtype=torch.bool)
    if mask is not None:
        allowed &= mask[:, None, None, :]
        qvalid = mask[:, off:]
    qid = ids[:, off:]
    allowed &= (qid[:, :, None] == ids[:, None, :])[:, None]
    if bias is not None:
        allowed = allowed & ~torch.isneginf(bias)[:, :, None, :]
    p = torch.softmax(s.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    seen = allowed.any(-1).expand(b, h, lq)
    mp, am = p.max(-1)
    first = torch.stack([torch.tensor([min(j for j in range(lk) if ids[r, j] == ids[r, i]) for i in range(lk)])
                         for r in range(b)])[:, off:]  # [b, lq]: where each query's segment starts
    dist = qpos - kpos
    st = dict(lse=torch.logsumexp(s.masked_fill(~allowed, float("-inf")), -1), max_prob=mp,
              argmax=am.masked_fill(~seen, -1), entropy=-(torch.special.xlogy(p, p)).sum(-1),
              sink_mass=(p * (kpos[None] < first[:, :, None] + sink_tokens)[:, None]).sum(-1),
              local_mass=(p * ((dist >= 0) & (dist < local_window))).sum(-1))
    if span is not None:
        in_span = (kpos >= span[:, :1]) & (kpos < span[:, 1:])  # [b, lk]
        st["span_mass"] = (p * in_span[:, None, None, :]).sum(-1)
    pv = p * qvalid[:, None, :, None]
    st["key_mass"] = pv.sum(-2)
    cnt = (allowed & qvalid[:, None, :, None]).sum(-2).double().expand(b, h, lk)
    st["key_count"] = cnt
    st["key_mean"] = torch.where(cnt > 0, st["key_mass"] / cnt.clamp_min(1), torch.nan)
    return p @ vd, st


def _ids(rows: list[list[int]]) -> torch.Tensor:
    """Segment lengths per row -> ids [b, sum] (0, 0, 1, 1, 1, ...)."""
    return torch.stack([torch.repeat_interleave(torch.arange(len(r)), torch.tensor(r)) for r in rows])


CASES = [
    # b, h, hk, lq, segment lengths per row (k_len = their sum), options
    pytest.param((1, 4, 2, 11, [[4, 5, 2]], {}), id="packed-gqa"),
    pytest.param((2, 2, 2, 9, [[3, 6], [6, 3]], {}), id="rows-unlike"),  # two row groups, put back in order
    pytest.param((3, 2, 1, 8, [[2, 6], [5, 3], [2, 6]], {}), id="rows-grouped-mqa"),
    pytest.param((2, 4, 2, 5, [[6, 5], [4, 7]], {}), id="chunk-prefill"),  # q_len < k_len: queries in the last
    pytest.param((2, 2, 2, 1, [[8, 5], [13]], {}), id="decode"),  # one query; row 1 a single segment
    pytest.param((1, 2, 2, 10, [[4, 4, 2]], dict(window=3)), id="window"),
    pytest.param((2, 2, 2, 9, [[5, 4], [3, 6]], dict(mask=True)), id="padding"),
    pytest.param((1, 2, 2, 9, [[3, 6]], dict(bias=True)), id="key-bias"),
    pytest.param((2, 2, 2, 9, [[4, 5], [2, 7]], dict(causal=False)), id="bidirectional"),
    pytest.param((1, 2, 2, 12, [[4, 4, 4]], dict(span=True)), id="span"),
]


def _case(case, seed=0):
    b, h, hk, lq, rows, opts = case
    ids = _ids(rows)
    lk = ids.shape[1]
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, 16, generator=g) * 1.5
    k = torch.randn(b, hk, lk, 16, generator=g) * 1.5
    v = torch.randn(b, hk, lk, 16, generator=g)
    kw = dict(causal=opts.get("causal", True), sliding_window=opts.get("window"), sink_tokens=2, local_window=3)
    dense = dict(causal=kw["causal"], window=opts.get("window"), sink_tokens=2, local_window=3)
    if opts.get("mask"):
        mask = torch.ones(b, lk, dtype=torch.bool)
        mask[0, :2] = False  # left padding in row 0, a hole in row 1's second segment
        mask[1, lk - 2] = False
        kw["attention_mask"] = dense["mask"] = mask
    if opts.get("bias"):
        bias = torch.randn(b, h, lk, generator=g)
        bias[..., 4] = float("-inf")
        kw["key_bias"] = dense["bias"] = bias
    if opts.get("span"):
        span = torch.tensor([[2, 7]])  # across a segment boundary
        kw["span"] = dense["span"] = span
    return q, k, v, ids, kw, dense


def _close(got, want, name, tol=2e-5):
    if name == "argmax":
        assert torch.equal(got, want), name
    else:
        torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol, equal_nan=True, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_matches_float64_with_the_whole_mask(case, backend):
    q, k, v, ids, kw, dense = _case(case)
    stats = [n for n in STATS if n != "span_mass" or "span" in kw]
    out, st = attend(q, k, v, segment_ids=ids, stats=stats, backend=backend, **kw)
    want_out, want = _dense(q, k, v, ids, **dense)
    _close(out, want_out, "output")
    for name in stats:
        _close(st[name], want[name], name)
    if backend == "triton" and "key_bias" not in kw:  # stats_from_lse: the same statistics from the lse
        again = lse_stats(q, k, st.lse, segment_ids=ids, stats=stats,
                               **{n: x for n, x in kw.items() if n != "key_bias"})
        for name in stats:
            _close(again[name], want[name], name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_match_float64(backend):
    """dq, dk, dv and the key bias's gradient through the segment mask (the Triton path: through each piece's
    FusedAttention, put together by torch.cat)."""
    q, k, v, ids, kw, dense = _case((2, 4, 2, 9, [[3, 6], [5, 4]], dict(bias=True)), seed=3)
    q, k, v, bias = (t.double().requires_grad_() for t in (q, k, v, kw.pop("key_bias")))
    w = torch.randn(2, 4, 9, 16, dtype=torch.float64)
    want_out, _ = _dense(q, k, v, ids, bias=bias)
    want = torch.autograd.grad((want_out * w).sum(), (q, k, v, bias))
    leaves = [t.detach().float().requires_grad_() for t in (q, k, v, bias)]
    out, _ = attend(*leaves[:3], key_bias=leaves[3], segment_ids=ids, stats="none", backend=backend)
    got = torch.autograd.grad((out.double() * w).sum(), leaves)
    for name, a, e in zip(("dq", "dk", "dv", "dbias"), got, want):
        torch.testing.assert_close(a.double(), e, atol=5e-5, rtol=5e-5, msg=name)


def test_triton_pieces_are_each_segment_alone():
    """Packed documents give each document's own attention: output and statistics (sink_mass on the document's
    first tokens, argmax in row positions) as calls on the documents one by one."""
    lens = [5, 9, 3]
    q, k, v, ids, _, _ = _case((1, 2, 2, 17, [lens], {}), seed=5)
    out, st = attend(q, k, v, segment_ids=ids, backend="triton")
    s = 0
    for n in lens:
        o1, st1 = attend(q[:, :, s:s + n], k[:, :, s:s + n], v[:, :, s:s + n], backend="triton")
        torch.testing.assert_close(out[:, :, s:s + n], o1, atol=1e-6, rtol=1e-6)
        for name in ("lse", "entropy", "sink_mass", "key_mass", "key_count"):
            got = st[name][:, :, s:s + n]
            torch.testing.assert_close(got, st1[name], atol=1e-6, rtol=1e-6, msg=name)
        assert torch.equal(st.argmax[:, :, s:s + n], st1.argmax + s)
        s += n


def test_chunked_attention_ids_and_half_precision():
    """Llama 4's chunked attention (ids = position // chunk) in float16 on both backends, against float64."""
    lk, chunk = 40, 16
    ids = (torch.arange(lk) // chunk)[None].expand(2, lk)
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 4, lk, 32, generator=g).half() for _ in range(3))
    k, v = k[:, :2], v[:, :2]
    want_out, want = _dense(q, k, v, ids)
    for backend in BACKENDS:
        out, st = attend(q, k, v, segment_ids=ids, sink_tokens=2, local_window=3, backend=backend)
        torch.testing.assert_close(out.double(), want_out, atol=3e-3, rtol=3e-3)
        for name in ("lse", "max_prob", "entropy", "sink_mass", "key_mass"):
            _close(st[name], want[name], name, tol=2e-3)


def test_one_segment_per_row_is_the_plain_call():
    """ids constant along every row add nothing: the same result, and no pieces."""
    q, k, v, _, _, _ = _case((2, 2, 2, 7, [[7], [7]], {}))
    ids = torch.full((2, 7), 3)
    for backend in BACKENDS:
        a, sa = attend(q, k, v, segment_ids=ids, backend=backend)
        b, sb = attend(q, k, v, backend=backend)
        assert torch.equal(a, b) and all(torch.equal(x, y) for (_, x), (_, y) in zip(sa.items(), sb.items()))


def test_pieces_are_found_once_for_ids_the_mask_function_made_and_on_every_call_for_a_callers(monkeypatch):
    """ids made by interp's mask function (`mark_made`: one tensor per forward, every layer reuses it) are checked
    and split once; a caller's own ids on every call, so an in-place edit, however made, is seen."""
    calls = []
    real = segments.segment_starts
    monkeypatch.setattr(segments, "segment_starts", lambda x: calls.append(1) or real(x))
    q, k, v, _, _, _ = (to_device(t, DEV) for t in _case((1, 2, 2, 7, [[3, 4]], {})))
    made = _ids([[3, 4]]).to(DEV)
    segments.mark_made(made)
    for _ in range(3):
        attention_with_stats(q, k, v, segment_ids=made, backend="triton", stats="query")
    assert len(calls) == 1
    own = _ids([[3, 4]]).to(DEV)
    for _ in range(2):
        attention_with_stats(q, k, v, segment_ids=own, backend="triton", stats="query")
    assert len(calls) == 3
    own[0, 3:] = 0  # edited in place: one segment now
    out, _ = attention_with_stats(q, k, v, segment_ids=own, backend="triton", stats="none")
    torch.testing.assert_close(out, attention_with_stats(q, k, v, backend="triton", stats="none")[0])


@pytest.mark.parametrize("ids,err,match", [
    ([[0, 0, 1, 1, 0, 0]], ValueError, r"must not decrease along a row .* row 0 goes from 1 at key 3 to 0 at key 4"),
    ([[0.0] * 6], TypeError, "must hold integers"),
    ([[True] * 6], TypeError, "must hold integers"),
    ([[0, 0, 1, 1, 2]], ValueError, r"\[batch, k_len\] = \[1, 6\]"),
    ("abc", TypeError, "must be an integer tensor"),
])
def test_bad_segment_ids_are_refused(ids, err, match):
    q, k, v, _, _, _ = _case((1, 2, 2, 6, [[6]], {}))
    bad = torch.tensor(ids) if isinstance(ids, list) else ids
    with pytest.raises(err, match=match):
        attention_with_stats(q, k, v, segment_ids=bad)
