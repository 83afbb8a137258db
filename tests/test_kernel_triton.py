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


def test_padding_mask_syncs_once_per_forward(device, monkeypatch):
    """Whether a padding mask hides anything costs a device sync. A wrapped model's mask function asks once per
    forward and marks the mask, so its layers do not ask again; a caller's own mask is asked on every call (an
    in-place change, however made, is always seen). Also under torch.inference_mode."""
    from interp.attention import interp_mask
    from interp.kernels import checks

    q, k, v = make(2, 2, 2, 9, 9, 16, torch.float32, device, seed=7)
    asked = []
    real_all = torch.Tensor.all

    def counting_all(self, *args, **kwargs):
        asked.append(tuple(self.shape))
        return real_all(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "all", counting_all)

    def spec(mask):
        return checks.check_inputs(q, k, v, causal=True, scale=None, sliding_window=None, attention_mask=mask,
                                   key_bias=None, stats="all", sink_tokens=4, local_window=8, span=None)

    own = torch.ones(2, 9, dtype=torch.bool, device=device)
    assert all(spec(own).key_valid is None for _ in range(3)) and len(asked) == 3  # no padding: SDPA-eligible
    own.data[1, :3] = False  # an in-place change that does not bump the version counter
    assert spec(own).key_valid is not None and len(asked) == 4

    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            asked.clear()
            hf_mask = torch.ones(2, 9, dtype=torch.long, device=device)
            assert interp_mask(2, 9, 9, attention_mask=hf_mask) is None and len(asked) == 1
            hf_mask[0, :2] = 0
            mask = interp_mask(2, 9, 9, attention_mask=hf_mask)
            assert mask is not None and len(asked) == 2
            assert all(torch.equal(spec(mask).key_valid, mask) for _ in range(4)) and len(asked) == 2
    n = len(checks._known_padded)
    del mask
    assert len(checks._known_padded) == n - 1  # freed masks leave the registry


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


def _poisoned_empty(real_empty):
    """torch.empty whose buffers start as NaN (or a huge int): a statistic nobody writes cannot pass as a value."""
    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.dtype.is_floating_point:
            return t.fill_(float("nan"))
        return t.fill_(True if t.dtype == torch.bool else torch.iinfo(t.dtype).max)
    return empty


@pytest.mark.parametrize("case", ["causal", "padding+bias", "decode"])
def test_key_stats_finalized_in_kernel_or_after_it_are_identical(case, device, monkeypatch):
    """key_mass / key_mean come from the kernel's last program per head while q_len and k_len are at most
    `FINALIZE_MAX_LEN`, and from two torch ops beyond it (long inputs, or one query against a long cache). The
    kernel's conversion equals the torch ops applied to the same launch's fixed-point sums, bit for bit (NaN
    key_mean where no query sees a key included); both forms match the reference. Buffers start poisoned, the torch
    form runs first, and the kernel is seen launched with FINALIZE off, then on. (Two launches are compared bit for
    bit only on a GPU: the CPU interpreter's matmuls may round differently from one launch to the next.)"""
    from interp.kernels import launcher, launcher_decode

    monkeypatch.setattr(launcher_decode, "ENABLED", False)  # the general kernel's finalize (not the packed decode's)
    dtype = torch.float16 if case != "padding+bias" else torch.float32  # (the float64 output check takes no bias)
    lq, lk, limit = (1, 160, 100) if case == "decode" else (70, 70, 69)  # the decode step: 1 query, 160 keys
    b, h = 2, 4
    q, k, v = make(b, h, 2, lq, lk, 64, dtype, device, seed=8)
    kw = dict(causal=True, stats=["key_mass", "key_mean", "key_count", "entropy"])
    if case == "padding+bias":
        valid = torch.ones(2, 70, dtype=torch.bool, device=device)
        valid[1, :9] = False
        bias = torch.zeros(2, 4, 70, device=device)
        bias[:, 1, 30:40] = float("-inf")
        kw.update(attention_mask=valid, key_bias=bias)
    seen, real_launch = [], launcher._launch_stats

    def spy(args, consts, *rest):
        seen.append((consts["FINALIZE"], args[5], args[6]))  # the flag, the fixed-point sums, key_count
        return real_launch(args, consts, *rest)

    monkeypatch.setattr(launcher, "_launch_stats", spy)
    monkeypatch.setattr(torch, "empty", _poisoned_empty(torch.empty))
    results = []
    for finalize_max_len in (limit, launcher.FINALIZE_MAX_LEN):  # the torch form, then the kernel's
        monkeypatch.setattr(launcher, "FINALIZE_MAX_LEN", finalize_max_len)
        results.append(attention_with_stats(q, k, v, backend="triton", **kw)[1])
    monkeypatch.undo()
    assert [f for f, _, _ in seen] == [False, True]
    after, inside = results
    _, sums, count = seen[1]  # the in-kernel launch's own sums, converted as the torch form does
    mass = torch.empty(b, h, lk, device=device).copy_(sums[:b * h * lk].view(b, h, lk))
    mass.mul_(1.0 / launcher._fix_scale(lq))
    assert torch.equal(inside.key_mass, mass)
    assert torch.equal(inside.key_mean.nan_to_num(-7), (mass / count).nan_to_num(-7))
    _, ref = attention_with_stats(q, k, v, backend="reference", **kw)
    for name in ("key_mass", "key_mean", "key_count", "entropy"):
        for st in (after, inside):
            torch.testing.assert_close(getattr(st, name), getattr(ref, name), equal_nan=True, msg=name, **STAT_TOL)
        if device.type == "cuda":  # the GPU's launches are bit-reproducible
            x, y = getattr(inside, name), getattr(after, name)
            assert torch.equal(x.nan_to_num(-7), y.nan_to_num(-7)), name
    assert not after.key_mass.isnan().any()
    if case == "padding+bias":
        assert torch.isnan(after.key_mean[:, 1, 30:40]).all() and torch.isnan(after.key_mean[1, :, :9]).all()


def test_output_rows_are_all_written(device, monkeypatch):
    """Poison every buffer the launcher allocates (NaN, or a huge int): every element must come out written."""
    q, k, v = make(2, 3, 3, 77, 77, 64, torch.float16, device, seed=7)
    monkeypatch.setattr(torch, "empty", _poisoned_empty(torch.empty))
    out, st = attention_with_stats(q, k, v, backend="triton", stats="all", span=(3, 40))
    monkeypatch.undo()
    assert torch.isfinite(out).all()
    assert set(st.requested()) == {"lse", "max_prob", "argmax", "entropy", "sink_mass", "local_mass", "span_mass",
                                   "key_mass", "key_mean", "key_count"}
    for name, t in st.items():
        if name == "argmax":
            assert ((t >= 0) & (t < 77)).all()
        else:
            assert torch.isfinite(t).all(), name


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


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lq", [131, 37])
def test_noncontiguous_inputs(dtype, lq, device):
    """q/k/v as transformers hands them over: [batch, seq, heads, d] tensors viewed as [batch, heads, seq, d]."""
    g = torch.Generator().manual_seed(10 + lq)
    q = torch.randn(2, lq, 4, 64, generator=g).to(device, dtype).transpose(1, 2)
    k = (torch.randn(2, 131, 2, 64, generator=g) * 1.5).to(device, dtype).transpose(1, 2)
    v = torch.randn(2, 131, 2, 64, generator=g).to(device, dtype).transpose(1, 2)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    out, st = check_against_reference(q, k, v, stats="all", span=(5, 50))
    out_c, st_c = attention_with_stats(q.contiguous(), k.contiguous(), v.contiguous(), backend="triton", stats="all",
                                       span=(5, 50))
    torch.testing.assert_close(out, out_c)
    torch.testing.assert_close(st.key_mass, st_c.key_mass)


def _empty_row_cases(device):
    """Inputs where query row 0 of head 0 (batch 0) has nothing to attend to, each for another reason."""
    m = torch.ones(1, 8, dtype=torch.bool, device=device)
    m[0, :2] = False  # left padding: query 0 sees only key 0, which is padding
    bias = torch.zeros(1, 2, 8, device=device)
    bias[0, 0, :] = float("-inf")  # a KeyMask over every key, head 0
    bias_win = torch.zeros(1, 2, 8, device=device)
    bias_win[0, 0, :2] = float("-inf")  # the only keys query 1 sees in a 2-wide window
    return {"padding": dict(attention_mask=m), "bias": dict(key_bias=bias, causal=False),
            "bias+window": dict(key_bias=bias_win, sliding_window=2)}


@pytest.mark.parametrize("case", ["padding", "bias", "bias+window"])
def test_rows_with_nothing_to_attend_to(case, device):
    """The documented answer (kernels/stats.py), identical on both backends."""
    kw = _empty_row_cases(device)[case]
    row = 1 if case == "bias+window" else 0
    q, k, v = make(1, 2, 2, 8, 8, 16, torch.float32, device, seed=11)
    res = {be: attention_with_stats(q, k, v, backend=be, stats="all", span=(0, 3), **kw)
           for be in ("reference", "triton")}
    for be, (out, st) in res.items():
        assert torch.equal(out[0, 0, row], torch.zeros(16, device=device)), be
        expect = dict(lse=float("-inf"), max_prob=0.0, argmax=-1, entropy=0.0, sink_mass=0.0, local_mass=0.0,
                      span_mass=0.0)
        got = {n: getattr(st, n)[0, 0, row].item() for n in expect}
        assert got == expect, (be, got)
        assert not torch.signbit(st.entropy[0, 0, row]), be  # +0.0, not -0.0
    (out_r, st_r), (out_t, st_t) = res["reference"], res["triton"]
    for name, t in st_r.items():  # and the rest of the call agrees as usual
        torch.testing.assert_close(getattr(st_t, name), t, equal_nan=True, msg=name, **STAT_TOL)
    if case == "bias":  # head 0 sees nothing at all: no key receives mass or counts a query
        assert st_t.key_mass[0, 0].abs().max().item() == 0 and st_t.key_count[0, 0].max().item() == 0
        assert torch.isnan(st_t.key_mean[0, 0]).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_triton_forward_fallback_on_gpu(dtype, device, monkeypatch):
    """The Triton forward (used where SDPA cannot run) stays tested on a GPU for inputs SDPA would take."""
    from interp.kernels import sdpa_path

    monkeypatch.setattr(sdpa_path, "MODE", "off")
    q, k, v = make(1, 12, 4, 300, 300, 64, dtype, device, seed=12)
    check_against_reference(q, k, v, stats="all", span=(10, 20))


@pytest.mark.gpu
def test_sdpa_path_is_taken_on_gpu(device):
    from interp.kernels import sdpa_path

    q, k, v = make(1, 8, 2, 256, 256, 128, torch.float16, device, seed=13)
    check_against_reference(q, k, v, stats="all")
    key = (torch.float16, 128, True, True)
    assert sdpa_path._chosen.get(key) in sdpa_path.OPS, sdpa_path._chosen


@pytest.mark.gpu
@pytest.mark.slow
def test_million_tokens(device):
    """1,048,576 tokens, 32 heads x 128, GQA 32/8, fp16, every statistic: inputs of 2^32 elements (64-bit offsets).
    Sampled rows of the first and last heads against float64; every head's key mass sums to n."""
    n, h, hk, d = 2**20, 32, 8, 128
    if torch.cuda.mem_get_info()[0] < 40 * 2**30:
        pytest.skip("needs 40 GiB of free GPU memory")
    g = torch.Generator(device=device).manual_seed(14)
    q = torch.randn(1, h, n, d, device=device, dtype=torch.float16, generator=g)
    k = (torch.randn(1, hk, n, d, device=device, generator=g) * 1.5).half()
    v = torch.randn(1, hk, n, d, device=device, dtype=torch.float16, generator=g)
    out, st = attention_with_stats(q, k, v, stats="all", span=(1000, 1064))
    torch.cuda.synchronize()
    total = st.key_mass.double().sum(-1)  # [1, h]
    assert (total / n - 1).abs().max().item() < 1e-5, total
    assert torch.isfinite(out).all() and torch.equal(st.key_count[0, 0], torch.arange(n, 0, -1, device=device).float())
    scale = d ** -0.5
    rows = [0, 1, 2, 1000, 1063, 654321, n - 3, n - 2, n - 1]
    for head in (0, h - 1):
        kd, vd = k[0, head // (h // hk)].double(), v[0, head // (h // hk)].double()
        for i in rows:
            s = (kd[: i + 1] @ q[0, head, i].double()) * scale  # [i + 1]
            lse = torch.logsumexp(s, 0)
            p = torch.exp(s - lse)
            o = p @ vd[: i + 1]
            assert (out[0, head, i].double() - o).abs().max().item() < 2e-3, (head, i)
            exp = dict(lse=lse, max_prob=p.max(), entropy=-torch.special.xlogy(p, p).sum(), sink_mass=p[:4].sum(),
                       local_mass=p[max(0, i - 63):].sum(), span_mass=p[1000:1064].sum())
            for name, val in exp.items():
                got = getattr(st, name)[0, head, i].item()
                assert abs(got - val.item()) < 2e-5 + 2e-5 * abs(val.item()), (name, head, i, got, val.item())
            assert st.argmax[0, head, i].item() == p.argmax().item() or p.max() - p[st.argmax[0, head, i]] < 1e-6
        # key mass of the first keys (every query adds to it) and of the last (only the last queries see them)
        lse_all = st.lse[0, head].double()  # [n], checked above on sampled rows
        s_first = (q[0, head].double() @ kd[:4].T) * scale  # [n, 4]; query i sees key j only when j <= i
        s_first[:3] = s_first[:3].masked_fill(torch.ones(3, 4, dtype=torch.bool, device=device).triu(1), float("-inf"))
        first = torch.exp(s_first - lse_all[:, None]).sum(0)
        torch.testing.assert_close(st.key_mass[0, head, :4].double(), first, rtol=2e-5, atol=1e-4)
        tail = q[0, head, -4:].double() @ kd[-4:].T * scale  # queries n-4.. against keys n-4..
        tail = tail.masked_fill(torch.ones(4, 4, dtype=torch.bool, device=device).triu(1), float("-inf"))
        last = torch.exp(tail - lse_all[-4:, None]).sum(0)
        torch.testing.assert_close(st.key_mass[0, head, -4:].double(), last, rtol=2e-5, atol=1e-6)
