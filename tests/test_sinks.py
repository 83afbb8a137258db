"""Learned attention sinks (GPT-OSS's `s_aux`: one unscaled logit per query head in every row's softmax, its
probability dropped): the reference against a float64 formula, the Triton path (forward + lse' + statistics pass)
against the reference, stats_from_lse, gradients, bad input, and a tiny GPT-OSS against transformers' eager
attention on both backends."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch

import interp
from helpers import raises_clear_error, random_qkv
from interp import layer_batch
from interp.kernels import attention_with_stats, stats_from_lse
from interp.kernels.sinks import rescale, rescale_reference, sink_prob

STATS = ("lse", "max_prob", "argmax", "entropy", "sink_mass", "local_mass", "span_mass", "key_mass", "key_count",
         "key_mean")
# the GPT-OSS model tests run on the CPU: there the Triton kernels need the interpreter (CI sets it; a GPU machine
# does not)
CPU_TRITON = pytest.mark.skipif(not os.environ.get("TRITON_INTERPRET") and torch.cuda.is_available(),
                                reason="CPU models: the Triton kernels run there in the interpreter (TRITON_INTERPRET=1)")
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _qkv(b, h, hk, lq, lk, d, dtype, seed=0, spread=1.5):
    g = torch.Generator().manual_seed(seed)
    q, k, v = random_qkv(b, h, hk, lq, lk, d, dtype, g, spread)
    sinks = torch.randn(h, generator=g) * 2 + 1.0  # some heads mostly on the sink, some hardly
    return q, k, v, sinks


def _float64(q, k, v, sinks, scale, causal=True, window=None, mask=None):
    """The eager GPT-OSS softmax in float64: cat(scaled masked scores, sink) -> softmax -> drop the sink.
    -> (out, p [b, h, q, k], p_sink [b, h, q], lse', entropy of the whole softmax)."""
    b, h, lq, _ = q.shape
    hk, lk = k.shape[1], k.shape[2]
    kk = k.double().repeat_interleave(h // hk, 1)
    vv = v.double().repeat_interleave(h // hk, 1)
    s = q.double() @ kk.transpose(-1, -2) * scale
    qpos = torch.arange(lq)[:, None] + lk - lq
    kpos = torch.arange(lk)[None, :]
    allowed = torch.ones(lq, lk, dtype=torch.bool)[None, None]
    if causal:
        allowed = allowed & (kpos <= qpos)
    if window is not None:
        allowed = allowed & (qpos - kpos < window)
    if mask is not None:
        allowed = allowed & mask.bool()[:, None, None, :]
    s = s.masked_fill(~allowed, float("-inf"))
    z = sinks.double()[None, :, None, None].expand(b, h, lq, 1)
    full = torch.cat([s, z], -1)
    pf = full.softmax(-1)
    p, ps = pf[..., :-1], pf[..., -1]
    return p @ vv, p, ps, full.logsumexp(-1), -torch.special.xlogy(pf, pf).sum(-1), allowed


CASES = [  # (b, h, hk, lq, lk, d, options)
    (2, 4, 2, 37, 37, 32, {}),
    (1, 3, 1, 21, 45, 24, dict(sliding_window=7)),  # GQA 3:1, q_len < k_len, a window
    # left padding: the first rows of batch row 1 see no key at all (output 0, p_sink 1)
    (2, 2, 2, 19, 19, 16, dict(attention_mask=torch.tensor([[1] * 19, [0] * 6 + [1] * 13]))),
    (2, 4, 1, 1, 50, 16, {}),  # a decode step (MQA)
    (1, 2, 2, 13, 13, 16, dict(causal=False)),
]


def _expected(q, k, v, sinks, opts, sink_tokens=2, local_window=5, span=(3, 9)):
    """Every statistic of STATS from the float64 formula (float64 tensors)."""
    mask = opts.get("attention_mask")
    out, p, ps, lse, ent, allowed = _float64(q, k, v, sinks, q.shape[-1] ** -0.5, opts.get("causal", True),
                                             opts.get("sliding_window"), mask)
    lq, lk = p.shape[-2:]
    qpos = torch.arange(lq)[:, None] + lk - lq
    kpos = torch.arange(lk)[None, :]
    dist = qpos - kpos
    seen = allowed.expand_as(p).any(-1)
    mp, am = p.max(-1)
    qv = torch.ones(p.shape[0], lq, dtype=torch.bool) if mask is None else mask.bool()[:, lk - lq:]
    key_mass = (p * qv[:, None, :, None]).sum(2)
    key_count = (allowed & qv[:, None, :, None]).sum(2).double().expand_as(key_mass)
    want = dict(lse=lse, max_prob=mp, argmax=am.masked_fill(~seen, -1), entropy=ent,
                sink_mass=p[..., :sink_tokens].sum(-1), local_mass=(p * ((dist >= 0) & (dist < local_window))).sum(-1),
                span_mass=p[..., span[0]:span[1]].sum(-1), key_mass=key_mass, key_count=key_count,
                key_mean=torch.where(key_count > 0, key_mass / key_count.clamp_min(1), float("nan")))
    return out, ps, want


def test_reference_is_the_float64_formula():
    for case, (b, h, hk, lq, lk, d, opts) in enumerate(CASES):
        q, k, v, sinks = _qkv(b, h, hk, lq, lk, d, torch.float32, seed=case)
        out, st = attention_with_stats(q, k, v, sinks=sinks, backend="reference", stats=STATS, sink_tokens=2,
                                       local_window=5, span=(3, 9), **opts)
        want_out, ps, want = _expected(q, k, v, sinks, opts)
        torch.testing.assert_close(out.double(), want_out, atol=1e-6, rtol=1e-5)
        for n in STATS:
            torch.testing.assert_close(getattr(st, n).double() if n != "argmax" else getattr(st, n), want[n],
                                       atol=2e-6 * lq, rtol=1e-5, equal_nan=True, msg=f"case {case} {n}")
        torch.testing.assert_close(sink_prob(st.lse, sinks).double(), ps, atol=1e-6, rtol=1e-5)
    plain, _ = attention_with_stats(q, k, v, backend="reference", stats=[])
    assert (plain - out).abs().max() > 0.05  # the sinks change the answer here


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_triton_matches_the_reference(case, dtype, device):
    b, h, hk, lq, lk, d, opts = CASES[case]
    q, k, v, sinks = (t.to(device) for t in _qkv(b, h, hk, lq, lk, d, dtype, seed=case))
    opts = {n: (o.to(device) if isinstance(o, torch.Tensor) else o) for n, o in opts.items()}
    kw = dict(opts, sinks=sinks, stats=STATS, sink_tokens=2, local_window=5, span=(3, 9))
    o1, s1 = attention_with_stats(q, k, v, backend="triton", **kw)
    o2, s2 = attention_with_stats(q, k, v, backend="reference", **kw)
    tol = TOL[dtype]
    torch.testing.assert_close(o1.float(), o2.float(), atol=tol, rtol=tol)
    for n in STATS:
        a, r = getattr(s1, n), getattr(s2, n)
        if n == "argmax":  # equal except where two keys' scores tie to rounding
            assert (a == r).float().mean() > 0.97, n
            continue
        torch.testing.assert_close(a.float(), r.float(), atol=2e-5 * max(lq, 1) ** 0.5, rtol=1e-4, equal_nan=True,
                                   msg=n)  # (key_mean is NaN on keys no query sees)
    # the sinks took mass: every row's key probabilities sum to 1 - p_sink < 1
    _, plain = attention_with_stats(q, k, v, backend="triton", stats=["lse"], **opts)
    seen = plain.lse.isfinite()
    assert (s1.lse[seen] > plain.lse[seen]).all()


def test_stats_from_lse_with_sinks(device):
    """A kept lse' and the sinks give the call's statistics: [heads] sinks, and [batch, heads] (stacked layers)."""
    b, h, hk, lq, lk, d, opts = CASES[2]
    q, k, v, sinks = (t.to(device) for t in _qkv(b, h, hk, lq, lk, d, torch.float32, seed=2))
    mask = opts["attention_mask"].to(device)
    kw = dict(attention_mask=mask, stats=STATS, sink_tokens=2, local_window=5, span=(3, 9))
    _, st = attention_with_stats(q, k, v, backend="triton", sinks=sinks, **kw)
    again = stats_from_lse(q, k, st.lse, sinks=sinks, **kw)
    per_row = stats_from_lse(q, k, st.lse, sinks=sinks[None].expand(b, h), **kw)
    for n in STATS:
        torch.testing.assert_close(getattr(again, n), getattr(st, n), equal_nan=True, msg=n)
        torch.testing.assert_close(getattr(per_row, n), getattr(st, n), equal_nan=True, msg=n)
    # two "layers" stacked along the batch axis, each with its own sinks
    q2, k2, v2, sinks2 = (t.to(device) for t in _qkv(b, h, hk, lq, lk, d, torch.float32, seed=7))
    _, st2 = attention_with_stats(q2, k2, v2, backend="triton", sinks=sinks2, **kw)
    both = stats_from_lse(torch.cat([q, q2]), torch.cat([k, k2]), torch.cat([st.lse, st2.lse]),
                          sinks=torch.cat([sinks[None].expand(b, h), sinks2[None].expand(b, h)]),
                          **dict(kw, attention_mask=mask.repeat(2, 1)))
    for n in ("entropy", "key_mass", "max_prob"):
        torch.testing.assert_close(getattr(both, n), torch.cat([getattr(st, n), getattr(st2, n)]), msg=n)
    ent = _expected(q.cpu(), k.cpu(), v.cpu(), sinks.cpu(), opts)[2]["entropy"]
    torch.testing.assert_close(again.entropy.double().cpu(), ent, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dv, per_batch", [(12, False), (80, True), (64, False)])
def test_rescale_kernel_matches_its_reference(device, dtype, dv, per_batch):
    """The one-pass rescale (lse' and O exp(lse - lse'), in place) equals the float32 torch formula: strided O (SDPA's
    [b, q, h, d] memory order) and lse, [heads] and [batch, heads] sinks, rows that see nothing (lse -inf) and a NaN
    row, awkward head dims and row counts; with no output only lse' is formed. The sink's entropy term, when asked
    for, is torch.special.xlogy's -p_sink ln p_sink (0 on rows that see no key, where p_sink is 1; NaN on a NaN row)."""
    b, h, m = 2, 3, 70
    g = torch.Generator().manual_seed(dv)
    out = torch.randn(b, m, h, dv, generator=g).to(dtype).to(device).transpose(1, 2)  # strided like SDPA's
    lse = (torch.randn(b, h, 2 * m, generator=g) * 3)[..., ::2].to(device)  # non-contiguous
    lse[0, 1, :5] = float("-inf")
    lse[1, 2, 7] = float("nan")
    sinks = torch.randn(b if per_batch else 1, h, generator=g).to(device) * 2
    want_out, want_lse = rescale_reference(out, lse, sinks)
    got = out.clone()
    got_lse, ent = rescale(got, lse, sinks, entropy=True)
    torch.testing.assert_close(got_lse, want_lse, atol=1e-6, rtol=1e-6, equal_nan=True)
    p_sink = torch.exp(sinks[:, :, None] - want_lse)
    torch.testing.assert_close(ent, -torch.special.xlogy(p_sink, p_sink), atol=1e-6, rtol=1e-5, equal_nan=True)
    assert ent[1, 2, 7].isnan() and (ent[0, 1, :5] == 0).all()
    torch.testing.assert_close(got.float(), want_out.float(), equal_nan=True,
                               **({} if dtype == torch.float32 else dict(atol=TOL[dtype], rtol=TOL[dtype])))
    assert (got[0, 1, :5] == 0).all() and got[1, 2, 7].isnan().all()
    lse_only, no_ent = rescale(None, lse, sinks)
    torch.testing.assert_close(lse_only, want_lse, atol=1e-6, rtol=1e-6, equal_nan=True)
    assert no_ent is None


def test_finite_check_is_kept_until_the_sinks_change(monkeypatch):
    """The sinks' finiteness is asked once per parameter (a device sync), and again after an in-place change: a sink
    set to inf afterwards is still refused."""
    from interp.kernels import checks

    q, k, v, sinks = _qkv(1, 2, 1, 5, 5, 16, torch.float32)
    sinks = torch.nn.Parameter(sinks)
    asked = []
    real = torch.isfinite
    monkeypatch.setattr(checks.torch, "isfinite", lambda t: asked.append(1) or real(t))
    for _ in range(3):
        attention_with_stats(q, k, v, sinks=sinks, stats=["lse"], backend="reference")
    assert len(asked) == 1
    with torch.no_grad():
        sinks[1] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        attention_with_stats(q, k, v, sinks=sinks, stats=["lse"], backend="reference")
    with torch.inference_mode():
        fresh = torch.zeros(2)
    attention_with_stats(q, k, v, sinks=fresh, stats=["lse"], backend="reference")


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_gradients(device, backend):
    """Both backends differentiate through the sinks exactly (q, k, v and the sinks themselves, a sliding window,
    GQA, a padded row that sees no key), against float64 autograd of the eager formula; the Triton backward reads
    lse' and adds the sinks' own gradient."""
    q, k, v, sinks = (t.to(device) for t in _qkv(2, 4, 2, 11, 15, 16, torch.float32, seed=3))
    mask = torch.ones(2, 15, dtype=torch.bool, device=device)
    mask[1, :9] = False  # row 1's first queries see no key (under the window)
    go = torch.randn(2, 4, 11, 16, generator=torch.Generator().manual_seed(4)).to(device)
    ins = [t.clone().requires_grad_(True) for t in (q, k, v, sinks)]
    out, _ = attention_with_stats(*ins[:3], sinks=ins[3], sliding_window=6, attention_mask=mask, backend=backend,
                                  stats=["entropy"])
    out.backward(go)
    ref = [t.detach().cpu().double().requires_grad_(True) for t in (q, k, v, sinks)]
    want = _float64(*ref, 0.25, window=6, mask=mask.cpu())[0]
    want.backward(go.cpu().double())
    for name, a, r in zip("qkvs", ins, ref):
        assert r.grad.abs().max() > 0
        torch.testing.assert_close(a.grad.cpu().double(), r.grad, atol=2e-5, rtol=1e-4, msg=name)
    with pytest.raises(RuntimeError, match="no second derivative") if backend == "triton" else _nothing():
        out, _ = attention_with_stats(*ins[:3], sinks=ins[3], backend=backend, stats=[])
        torch.autograd.grad(out.sum(), ins[3], create_graph=True)[0].sum().backward()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("bad, err, match", [
    ([0.0] * 4, TypeError, r"^sinks must be a float tensor \[heads\] = \[4\]"),
    (torch.zeros(4, dtype=torch.int64), TypeError, "sinks must be a real floating-point tensor"),
    (torch.zeros(3), ValueError, r"sinks must have shape \[heads\] = \[4\] .*got \(3,\)"),
    (torch.zeros(1, 4), ValueError, r"sinks must have shape \[heads\]"),
    (torch.tensor([0.0, float("nan"), 0.0, 0.0]), ValueError, "sinks must hold finite values"),
    (torch.tensor([0.0, float("-inf"), 0.0, 0.0]), ValueError, "sinks must hold finite values"),
    (torch.zeros(4, device="meta"), ValueError, "sinks is on the meta device"),
])
def test_bad_sinks_are_refused(bad, err, match):
    q, k, v, _ = _qkv(1, 4, 2, 4, 4, 16, torch.float32)
    raises_clear_error(err, match, lambda: attention_with_stats(q, k, v, sinks=bad))


# ------------------------------------------------------------------------------------------- a tiny GPT-OSS
def _gpt_oss(seed=0):
    from transformers import GptOssConfig, GptOssForCausalLM

    torch.manual_seed(seed)
    cfg = GptOssConfig(vocab_size=50, hidden_size=64, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                       max_position_embeddings=64, sliding_window=4, layer_types=["sliding_attention", "full_attention"] * 2)
    hf = GptOssForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in hf.model.layers:  # sinks that matter (the default init is ~N(0, 0.02))
            layer.self_attn.sinks.copy_(torch.randn(4) * 2 + 1.0)
    return hf


@pytest.fixture(scope="module")
def gpt_oss():
    eager = _gpt_oss()
    eager.set_attn_implementation("eager")
    return eager, {b: interp.load(copy.deepcopy(eager), backend=b) for b in ("triton", "reference")}


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=CPU_TRITON), "reference"])
def test_gpt_oss_matches_transformers_eager(gpt_oss, backend):
    eager, models = gpt_oss
    m = models[backend]
    ids = torch.randint(0, 50, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = eager(input_ids=ids, output_attentions=True)
        got = m.model(input_ids=ids).logits
    torch.testing.assert_close(got, ref.logits, atol=1e-4, rtol=1e-4)
    # greedy generation with a DynamicCache: every decode step through interp's attention
    gen = dict(max_new_tokens=6, do_sample=False, return_dict_in_generate=True, output_scores=True, pad_token_id=0)
    a = m.model.generate(ids[:1], **gen)
    r = eager.generate(ids[:1], **gen)
    assert torch.equal(a.sequences, r.sequences)
    torch.testing.assert_close(torch.stack(a.scores), torch.stack(r.scores), atol=1e-4, rtol=1e-4)
    # statistics (batched across layers on the Triton backend: `layer_batch`)
    logits, cache = m.run_with_cache(ids, stats="all", sink_tokens=1, local_window=3)
    torch.testing.assert_close(logits, ref.logits, atol=1e-4, rtol=1e-4)
    lq = ids.shape[1]
    for l in range(4):
        pre = f"blocks.{l}.attn."
        p = ref.attentions[l].double()  # eager's key probabilities (the sink's dropped)
        ps = 1 - p.sum(-1)
        sinks = eager.model.layers[l].self_attn.sinks.detach()
        torch.testing.assert_close(sink_prob(cache[pre + "hook_query_lse"], sinks).double(), ps, atol=1e-5, rtol=1e-4)
        key_mass = cache[pre + "hook_key_mass"].double()
        torch.testing.assert_close(key_mass, p.sum(2), atol=1e-5, rtol=1e-4)
        total = key_mass.sum(-1) + sink_prob(cache[pre + "hook_query_lse"], sinks).double().sum(-1)
        torch.testing.assert_close(total, torch.full_like(total, float(lq)), atol=1e-4, rtol=0)
        ent = -torch.special.xlogy(p, p).sum(-1) - torch.special.xlogy(ps, ps)
        torch.testing.assert_close(cache[pre + "hook_query_entropy"].double(), ent, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cache[pre + "hook_query_max_prob"].double(), p.amax(-1), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cache[pre + "hook_query_local_mass"].double(), _local(p, 3), atol=1e-5,
                                   rtol=1e-4)


def _local(p, w):
    lq = p.shape[-1]
    dist = torch.arange(lq)[:, None] - torch.arange(lq)[None, :]
    return (p * ((dist >= 0) & (dist < w))).sum(-1)


@CPU_TRITON
def test_gpt_oss_layer_batch_equals_per_layer_calls(gpt_oss, monkeypatch):
    """run_with_cache's stacked statistics pass (each layer its own sinks) gives each layer's own call's values."""
    m = gpt_oss[1]["triton"]
    ids = torch.randint(0, 50, (1, 9), generator=torch.Generator().manual_seed(1))
    _, batched = m.run_with_cache(ids, stats="all")
    monkeypatch.setattr(layer_batch, "ENABLED", False)
    _, single = m.run_with_cache(ids, stats="all")
    assert set(batched.keys()) == set(single.keys())
    for name in single.keys():
        torch.testing.assert_close(batched[name], single[name], equal_nan=True, msg=name)


def test_sink_prob_refuses_what_does_not_fit():
    lse = torch.zeros(2, 3, 5)
    torch.testing.assert_close(sink_prob(lse, torch.zeros(3)), torch.ones(2, 3, 5))
    torch.testing.assert_close(sink_prob(lse, torch.full((2, 3), -1.0)), torch.full((2, 3, 5), math.exp(-1.0)))
    torch.testing.assert_close(sink_prob(lse, torch.zeros(1, 3)), torch.ones(2, 3, 5))
    raises_clear_error(ValueError, r"sink_prob: lse must be \[batch, heads, q_len\] and sinks \[heads\]",
                       sink_prob, lse, torch.zeros(4))
    raises_clear_error(ValueError, r"got lse \(3, 5\)", sink_prob, lse[0], torch.zeros(3))
    raises_clear_error(TypeError, "sink_prob: sinks must be a float tensor, got list", sink_prob, lse, [0.0] * 3)
    raises_clear_error(TypeError, "sink_prob: lse must be a float tensor, got torch.int64", sink_prob,
                       lse.long(), torch.zeros(3))
