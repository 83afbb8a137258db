"""Attention logit soft-capping (Gemma 2: s -> C tanh(s / C) before masks): the Triton forward, statistics and
backward against the reference, the reference against a float64 formula, and a wrapped Gemma 2 against
transformers' eager attention (logits, patterns, statistics, gradients)."""

from __future__ import annotations

import math

import pytest
import torch

import interp
from conftest import eager_run
from helpers import raises_clear_error, random_qkv, tiny_gemma2
from interp.kernels import attention_with_stats

STATS = ("lse", "max_prob", "argmax", "entropy", "sink_mass", "local_mass", "key_mass", "key_count", "key_mean")
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _qkv(b, h, hk, lq, lk, d, dtype, seed=0, spread=2.0):
    return random_qkv(b, h, hk, lq, lk, d, dtype, torch.Generator().manual_seed(seed), spread)


def _float64(q, k, v, scale, cap, causal=True):
    """softmax(C tanh(q k^T scale / C)) v in float64, every key visible to a causal query; -> (out, p)."""
    h, hk = q.shape[1], k.shape[1]
    kk = k.double().repeat_interleave(h // hk, 1)
    s = q.double() @ kk.transpose(-1, -2) * scale
    s = cap * torch.tanh(s / cap)
    lq, lk = s.shape[-2:]
    if causal:
        s = s.masked_fill(torch.ones(lq, lk, dtype=torch.bool).triu(lk - lq + 1), float("-inf"))
    p = s.softmax(-1)
    return p @ v.double().repeat_interleave(h // hk, 1), p


def test_reference_is_the_float64_formula():
    q, k, v = _qkv(1, 4, 2, 9, 13, 16, torch.float32)
    out, st = attention_with_stats(q, k, v, softcap=3.0, backend="reference", stats=["max_prob", "key_mass"])
    want, p = _float64(q, k, v, 0.25, 3.0)
    torch.testing.assert_close(out.double(), want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(st.max_prob.double(), p.amax(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(st.key_mass.double(), p.sum(-2), atol=1e-5, rtol=1e-5)
    plain, _ = attention_with_stats(q, k, v, backend="reference", stats=[])
    assert (plain - out).abs().max() > 0.1  # the cap changes the answer at these scores


CASES = [  # (b, h, hk, lq, lk, d, options)
    (2, 4, 2, 77, 77, 32, {}),
    (1, 3, 1, 40, 70, 24, dict(sliding_window=9)),
    (2, 2, 2, 33, 33, 64, dict(attention_mask=torch.tensor([[1] * 33, [0] * 7 + [1] * 26]))),
    (1, 2, 1, 1, 50, 16, {}),  # a decode step
    (1, 2, 2, 17, 17, 16, dict(causal=False)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_triton_matches_the_reference(case, dtype, device):
    b, h, hk, lq, lk, d, opts = CASES[case]
    q, k, v = (t.to(device) for t in _qkv(b, h, hk, lq, lk, d, dtype, seed=case))
    opts = {n: (o.to(device) if isinstance(o, torch.Tensor) else o) for n, o in opts.items()}
    kw = dict(opts, softcap=4.0, stats=STATS, sink_tokens=2, local_window=5)
    o1, s1 = attention_with_stats(q, k, v, backend="triton", **kw)
    o2, s2 = attention_with_stats(q, k, v, backend="reference", **kw)
    tol = TOL[dtype]
    torch.testing.assert_close(o1.float(), o2.float(), atol=tol, rtol=tol)
    rows = s2.lse.isfinite()
    for n in STATS:
        a, r = getattr(s1, n), getattr(s2, n)
        if n == "argmax":  # equal except where two keys' capped scores tie to rounding
            assert (a == r).float().mean() > 0.97, n
            continue
        if n == "lse":
            a, r = a[rows], r[rows]
        torch.testing.assert_close(a.float(), r.float(), atol=1e-5 * max(lq, 1) ** 0.5, rtol=1e-4, equal_nan=True,
                                   msg=n)  # (key_mean is NaN on keys no query sees)


def test_key_bias_is_added_after_the_cap(device):
    q, k, v = _qkv(1, 2, 1, 21, 21, 16, torch.float32, seed=3)
    bias = torch.randn(1, 2, 21, generator=torch.Generator().manual_seed(4))
    bias[..., 5] = float("-inf")
    kw = dict(softcap=2.0, key_bias=bias.to(device), stats=STATS)
    o1, s1 = attention_with_stats(q.to(device), k.to(device), v.to(device), backend="triton", **kw)
    o2, s2 = attention_with_stats(q.to(device), k.to(device), v.to(device), backend="reference", **kw)
    torch.testing.assert_close(o1, o2, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(s1.key_mass, s2.key_mass, atol=2e-5, rtol=1e-4)
    assert (s1.key_mass[..., 5] == 0).all() and (s1.key_count[..., 5] == 0).all()
    _, p = _float64(q, k, v, 0.25, 2.0)
    s = torch.log(p) + bias.double()[:, :, None, :]  # p ~ exp(capped); with the bias after the cap
    torch.testing.assert_close(o2.double().cpu(), s.softmax(-1) @ v.double().repeat_interleave(2, 1), atol=1e-5,
                               rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_through_the_cap(dtype, device):
    q, k, v = _qkv(1, 4, 2, 37, 37, 32, dtype, seed=5)
    bias = torch.randn(1, 4, 37, generator=torch.Generator().manual_seed(6))
    go = torch.randn(1, 4, 37, 32, generator=torch.Generator().manual_seed(7)).to(dtype)
    grads = []
    for backend in ("triton", "reference"):
        ins = [t.to(device).clone().requires_grad_(True) for t in (q, k, v, bias)]
        out, _ = attention_with_stats(*ins[:3], key_bias=ins[3], softcap=3.0, sliding_window=11, backend=backend,
                                      stats=[])
        out.backward(go.to(device))
        grads.append([t.grad.float().cpu() for t in ins])
    tol = 2e-4 if dtype == torch.float32 else 3e-2
    for name, a, r in zip("qkvb", *grads):
        torch.testing.assert_close(a, r, atol=tol, rtol=tol, msg=name)
    if dtype == torch.float32:  # and the reference's are the float64 formula's
        ins = [t.double().requires_grad_(True) for t in (q, k, v)]
        want, _ = _float64(*ins, 32 ** -0.5, 3.0)
        # (no bias or window here: a second reference call without them)
        ref = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out, _ = attention_with_stats(*ref, softcap=3.0, backend="reference", stats=[])
        out.backward(go)
        want.backward(go.double())
        for a, r in zip(ref, ins):
            torch.testing.assert_close(a.grad.double(), r.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bad, err, match", [
    (0.0, ValueError, r"^softcap must lie in \[1.18e-38, 1e\+30\]"), (-50.0, ValueError, "softcap must lie in"),
    (1e-39, ValueError, "softcap must lie in"),  # positive, but 1 / (softcap log2 e) overflows float32: NaN rows
    (float("inf"), ValueError, "softcap must lie in"), (float("nan"), ValueError, "softcap must lie in"),
    (1e31, ValueError, "softcap must lie in"),
    (True, TypeError, r"^softcap must be a positive number .* got bool True"),
    ("50", TypeError, "softcap must be a positive number"),
])
def test_bad_softcap_is_refused(bad, err, match):
    q, k, v = _qkv(1, 1, 1, 4, 4, 16, torch.float32)
    raises_clear_error(err, match, lambda: attention_with_stats(q, k, v, softcap=bad))


@pytest.fixture(scope="module")
def gemma2():
    return interp.HookedModel(tiny_gemma2().to("cuda" if torch.cuda.is_available() else "cpu"), name="tiny-gemma2")


def test_gemma2_matches_transformers_eager(gemma2):
    ids = torch.randint(0, 50, (2, 23), generator=torch.Generator().manual_seed(0)).to(gemma2.device)
    logits, cache = gemma2.run_with_cache(ids, stats="all", sink_tokens=1, local_window=4,
                                          names=["blocks.1.attn.hook_pattern"])
    ref = eager_run(gemma2, ids)
    torch.testing.assert_close(logits, ref.logits, atol=2e-4, rtol=1e-4)
    for l in (0, 1):
        p = ref.attentions[l].float()  # [batch, head, q, k]
        torch.testing.assert_close(cache[f"blocks.{l}.attn.hook_key_mass"], p.sum(2), atol=1e-4, rtol=1e-4)
        ent = -(torch.special.xlogy(p, p)).sum(-1)
        torch.testing.assert_close(cache[f"blocks.{l}.attn.hook_query_entropy"], ent, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cache[f"blocks.{l}.attn.hook_query_max_prob"], p.amax(-1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"], ref.attentions[1].float(), atol=1e-5,
                               rtol=1e-4)
    # the cap matters here: the same weights without it give other logits
    uncapped = interp.HookedModel(tiny_gemma2(softcap=None).to(gemma2.device), name="uncapped")
    assert (uncapped(ids) - logits).abs().max() > 0.05


def test_gemma2_gradients_match_transformers_eager(gemma2):
    ids = torch.randint(0, 50, (1, 19), generator=torch.Generator().manual_seed(1)).to(gemma2.device)
    hf = gemma2.model
    emb = hf.get_input_embeddings()
    grads = []
    for impl in ("interp", "eager"):
        hf.set_attn_implementation(impl)
        try:
            x = emb(ids).detach().requires_grad_(True)
            out = hf(inputs_embeds=x).logits
            out[0, -1, 7].backward()
            grads.append(x.grad)
        finally:
            hf.set_attn_implementation("interp")
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    assert grads[0].abs().max() > 0


def test_gemma2_through_the_triton_kernels(device):
    """The same model on the Triton backend (the CPU interpreter here, the GPU elsewhere): forward, every statistic and
    the input gradient through the Triton backward, against the reference backend."""
    ids = torch.randint(0, 50, (1, 21), generator=torch.Generator().manual_seed(2)).to(device)
    runs = []
    for backend in ("triton", "reference"):
        m = interp.HookedModel(tiny_gemma2().to(device), name="g2", backend=backend)
        logits, cache = m.run_with_cache(ids, stats="all", sink_tokens=1, local_window=4)
        emb = m.model.get_input_embeddings()
        x = emb(ids).detach().requires_grad_(True)
        m.model(inputs_embeds=x).logits[0, -1, 3].backward()
        runs.append((logits, cache, x.grad))
    (l1, c1, g1), (l2, c2, g2) = runs
    torch.testing.assert_close(l1, l2, atol=1e-4, rtol=1e-4)
    for name in ("blocks.1.attn.hook_key_mass", "blocks.0.attn.hook_query_entropy", "blocks.1.attn.hook_query_lse"):
        torch.testing.assert_close(c1[name], c2[name], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


def test_smallest_softcap_stays_finite(device):
    """At the smallest accepted cap a score of exactly 0 (a zeroed query) is no 0 * inf = NaN in the kernels."""
    from interp.kernels.checks import MIN_SOFTCAP

    q, k, v = (t.to(device) for t in _qkv(1, 2, 1, 9, 9, 16, torch.float32, seed=8))
    q[:, :, 4] = 0
    for backend in ("triton", "reference"):
        out, st = attention_with_stats(q, k, v, softcap=MIN_SOFTCAP, backend=backend, stats=["lse", "entropy"])
        assert out.isfinite().all() and st.lse.isfinite().all() and st.entropy.isfinite().all(), backend
        # a vanishing cap flattens every score: uniform attention over the keys each query sees
        n = torch.arange(1, 10, device=device, dtype=torch.float32)
        torch.testing.assert_close(st.entropy[0, 0], n.log(), atol=1e-5, rtol=1e-5)


def test_every_stats_walk_with_the_cap(device, monkeypatch):
    """The interpreter's autotuner has one statistics config (key-by-query tiles); the GPU's picks query-by-key walks
    too (`tests/test_stats_configs.py`): each forced, with a padded, windowed chunk and every statistic."""
    from interp.kernels import launcher
    from test_stats_configs import CONFIGS

    q, k, v = (t.to(device) for t in _qkv(1, 4, 2, 70, 90, 32, torch.float32, seed=9))
    mask = torch.ones(1, 90, dtype=torch.bool)
    mask[0, :5] = False
    kw = dict(softcap=3.0, stats="all", sink_tokens=2, local_window=5, span=(10, 40), sliding_window=30,
              attention_mask=mask.to(device))
    o2, s2 = attention_with_stats(q, k, v, backend="reference", **kw)
    for name, config in CONFIGS.items():
        monkeypatch.setattr(launcher, "_tuned", launcher.PinnedConfig(config))
        o1, s1 = attention_with_stats(q, k, v, backend="triton", **kw)
        torch.testing.assert_close(o1, o2, atol=2e-5, rtol=2e-5, msg=name)
        for n, r in s2.items():
            a = getattr(s1, n)
            if n == "argmax":
                assert (a == r).float().mean() > 0.97, (name, n)
                continue
            torch.testing.assert_close(a.float(), r.float(), atol=1e-4, rtol=1e-4, equal_nan=True, msg=f"{name} {n}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gradients_of_a_padded_chunk(dtype, device):
    """q_len < k_len (a chunk after a cache), GQA, left padding that leaves the first queries of a row no key to
    see, scores large enough to saturate the cap: Triton's gradients against the float64 formula."""
    b, h, hk, lq, lk, d = 2, 4, 2, 20, 45, 16
    q, k, v = _qkv(b, h, hk, lq, lk, d, dtype, seed=10, spread=6.0)
    mask = torch.ones(b, lk, dtype=torch.bool)
    mask[1, :lk - lq + 3] = False  # row 1's first three queries see no real key
    go = torch.randn(b, h, lq, d, generator=torch.Generator().manual_seed(11))
    ins = [t.to(device).clone().requires_grad_(True) for t in (q, k, v)]
    out, _ = attention_with_stats(*ins, softcap=5.0, attention_mask=mask.to(device), backend="triton", stats=[])
    out.backward(go.to(device, dtype))
    ref = [t.double().requires_grad_(True) for t in (q, k, v)]
    kk, vv = (t.repeat_interleave(h // hk, 1) for t in ref[1:])
    s = ref[0] @ kk.transpose(-1, -2) * d ** -0.5
    s = 5.0 * torch.tanh(s / 5.0)
    qpos = torch.arange(lq)[:, None] + lk - lq
    ok = (torch.arange(lk)[None] <= qpos)[None, None] & mask[:, None, None, :]
    p = s.masked_fill(~ok, float("-inf")).softmax(-1).nan_to_num(0.0)
    (p @ vv).backward(go.double())
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert out.detach()[1, :, :3].eq(0).all()
    for name, a, r in zip("qkv", ins, ref):
        assert a.grad.isfinite().all(), name
        torch.testing.assert_close(a.grad.double().cpu(), r.grad, atol=tol, rtol=tol, msg=name)


def _generate(model, ids, mask, impl):
    hf = model.model
    hf.set_attn_implementation(impl)
    try:
        with torch.no_grad():
            return hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0,
                               output_scores=True, return_dict_in_generate=True)
    finally:
        hf.set_attn_implementation("interp")


def test_gemma2_generate_with_a_cache_matches_transformers_eager(gemma2):
    """Decode steps against a dynamic cache (one query, the sliding layer's window), a left-padded batch, with and
    without a hook context (the wrapper's attention_call): the same scores as eager attention step by step."""
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(3)).to(gemma2.device)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    want = _generate(gemma2, ids, mask, "eager")
    plain = _generate(gemma2, ids, mask, "interp")
    with gemma2.hooks(stats="all"):
        hooked = _generate(gemma2, ids, mask, "interp")
    for got in (plain, hooked):
        assert torch.equal(got.sequences, want.sequences)
        for a, r in zip(got.scores, want.scores):
            torch.testing.assert_close(a, r, atol=2e-4, rtol=1e-4)


def test_gemma2_pattern_of_a_chunk_after_a_cache(gemma2):
    """A second prefill chunk (7 queries, 17 keys) with hook_pattern: the pattern and logits of eager attention."""
    from transformers import DynamicCache

    ids = torch.randint(0, 50, (1, 17), generator=torch.Generator().manual_seed(4)).to(gemma2.device)
    hf = gemma2.model
    runs = []
    for impl in ("eager", "interp"):
        hf.set_attn_implementation(impl)
        got = {}
        try:
            with torch.no_grad():
                cache = DynamicCache(config=hf.config)
                hf(input_ids=ids[:, :10], past_key_values=cache, use_cache=True)
                if impl == "eager":
                    out = hf(input_ids=ids[:, 10:], past_key_values=cache, use_cache=True, output_attentions=True)
                    got["p"] = out.attentions[1].float()
                else:
                    keep = [("blocks.1.attn.hook_pattern", lambda t, hook: got.__setitem__("p", t.clone()))]
                    with gemma2.hooks(fwd_hooks=keep):
                        out = hf(input_ids=ids[:, 10:], past_key_values=cache, use_cache=True)
        finally:
            hf.set_attn_implementation("interp")
        runs.append((out.logits, got["p"]))
    (l_e, p_e), (l_i, p_i) = runs
    assert p_i.shape == (1, 4, 7, 17)
    torch.testing.assert_close(l_i, l_e, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(p_i, p_e, atol=1e-5, rtol=1e-4)


def test_stats_from_lse_takes_the_cap(device):
    """The statistics of a soft-capped call from its lse: the cap is an option of stats_from_lse too (without it
    the capped lse is read against uncapped scores: max_prob far above 1)."""
    from interp.kernels import stats_from_lse

    q, k, v = (t.to(device) for t in _qkv(1, 4, 2, 30, 30, 16, torch.float32, seed=12, spread=3.0))
    mask = torch.ones(1, 30, dtype=torch.bool, device=device)
    mask[0, :4] = False
    kw = dict(softcap=2.0, attention_mask=mask, sliding_window=12, sink_tokens=2, local_window=5)
    _, st = attention_with_stats(q, k, v, backend="triton", stats="all", **kw)
    again = stats_from_lse(q, k, st.lse, stats="all", **kw)
    for name, t in st.items():
        torch.testing.assert_close(getattr(again, name), t, equal_nan=True, msg=name)


def test_logit_attribution_reads_the_logit_before_the_final_cap():
    """Gemma 2 caps its logits too (C tanh(z / C)): the attribution terms add up to z, the logit before that cap."""
    from interp.readout import logit_attribution

    m = interp.HookedModel(tiny_gemma2(final_softcap=0.5), name="g2-final-cap")
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(0))
    logits = m(ids)
    tok = logits.argmax(-1)
    la = logit_attribution(m, ids, tok)
    real = logits.gather(-1, tok[..., None])[..., 0]
    torch.testing.assert_close(la.total(), la.target, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(0.5 * torch.tanh(la.target / 0.5), real, atol=1e-5, rtol=1e-4)
    assert (la.target - real).abs().max() > 0.1  # the cap bends these logits: target is not the capped logit


def test_the_largest_cap_bends_nothing(device):
    q, k, v = (t.to(device) for t in _qkv(1, 2, 1, 19, 19, 16, torch.float32, seed=8))
    plain_out, plain = attention_with_stats(q, k, v, backend="reference", stats=["entropy", "key_mass"])
    for backend in ("triton", "reference"):
        out, st = attention_with_stats(q, k, v, softcap=1e30, backend=backend, stats=["entropy", "key_mass"])
        torch.testing.assert_close(out, plain_out, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(st.entropy, plain.entropy, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(st.key_mass, plain.key_mass, atol=2e-5, rtol=2e-5)
