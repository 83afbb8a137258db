"""The fused decode walk (`kernels/triton_decode_fused.py`): a decode step's output, lse and statistics in one pass
over the cache. Beside `test_stats_decode.py` (which runs its cases through both packed paths): what is the fused
walk's own — the lse and output it forms, entropy at large scores (kept relative to each part's max), empty parts,
the combine's key chunks, a call without output, and gradients through a step."""

import pytest
import torch

triton = pytest.importorskip("triton")

from interp.kernels import attention_with_stats, launcher_decode  # noqa: E402
from test_kernel_triton import STAT_TOL, check_against_reference, make  # noqa: E402


@pytest.fixture
def fused(monkeypatch):
    """The fused walk on; its calls recorded (need_out of each)."""
    monkeypatch.setattr(launcher_decode, "ENABLED", True)
    monkeypatch.setattr(launcher_decode, "FUSED", True)
    calls = []
    real = launcher_decode.fused_decode

    def spy(*args, **kw):
        calls.append(args[-1])
        return real(*args, **kw)

    monkeypatch.setattr(launcher_decode, "fused_decode", spy)
    return calls


def test_lse_and_output_against_float64(fused, device):
    """lse and output are the kernel's own here (no cuDNN forward): against float64 attention."""
    q, k, v = make(2, 6, 2, 1, 700, 64, torch.float32, device, seed=51)
    out, st = attention_with_stats(q, k, v, stats=["lse", "entropy"], backend="triton")
    assert fused == [True]
    kk = k.double().repeat_interleave(3, 1)
    s = q.double() @ kk.transpose(-1, -2) / 8.0  # [2, 6, 1, 700]
    torch.testing.assert_close(st.lse, torch.logsumexp(s, -1).float(), atol=2e-6, rtol=2e-6)
    want = torch.softmax(s, -1) @ v.double().repeat_interleave(3, 1)
    torch.testing.assert_close(out.double(), want, atol=2e-6, rtol=2e-5)


def test_entropy_at_large_scores(fused, device):
    """Scores in the thousands (a shared offset of 2000 plus a spread of ~100; lse ~ 2.5e3 < LSE_LIMIT): entropy
    from sums relative to each part's max, close to float64 (the scores' own float32 rounding, ~1e-4 here, is
    the limit)."""
    q, k, v = make(1, 4, 1, 1, 300, 32, torch.float32, device, seed=52)
    q = q * 150.0
    k[..., 0] = 1.0
    q[..., 0] = 2000 * 32 ** 0.5
    out, st = attention_with_stats(q, k, v, stats=["entropy", "max_prob", "lse"], backend="triton")
    s = q.double() @ k.double().transpose(-1, -2) / 32 ** 0.5
    p = torch.softmax(s, -1)
    ent = -(p * torch.log_softmax(s, -1)).sum(-1)
    assert st.lse.min() > 2000 and ent.max() > 0.3  # (a row with real spread)
    torch.testing.assert_close(st.entropy, ent.float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(st.max_prob, p.max(-1).values.float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(st.lse, torch.logsumexp(s, -1).float(), atol=1e-3, rtol=1e-6)


def test_empty_parts_and_key_chunks(fused, monkeypatch, device):
    """More parts than the key blocks fill (5 blocks in 4 parts of 2 blocks: the last part empty) on the CPU, and
    key statistics finalized in chunks of 128 keys (3 chunks a row, the last partial)."""
    monkeypatch.setattr(launcher_decode, "CPU_PARTS", 4)
    monkeypatch.setattr(launcher_decode, "FUSED_KEY_CHUNK", 128)
    if device.type == "cuda":
        monkeypatch.setattr(launcher_decode.walk_parts, "target_programs", lambda *a: 8)  # 2 KV heads x 4 parts
    q, k, v = make(1, 6, 2, 1, 300, 32, torch.float16, device, seed=53)
    parts = []
    real = launcher_decode.n_parts
    monkeypatch.setattr(launcher_decode, "n_parts", lambda *a: parts.append(real(*a)) or parts[-1])
    check_against_reference(q, k, v, causal=True, stats="all", sink_tokens=5, local_window=100, span=(64, 257))
    assert fused == [True] and parts == [4]


def test_equals_the_general_kernel(fused, monkeypatch, device):
    """argmax and key_count exactly as the general kernel's, the rest to float32 rounding (each path forms its own
    lse); head dim 16, narrower than one combine slice of the output."""
    q, k, v = make(2, 8, 2, 1, 500, 16, torch.float32, device, seed=58)
    kw = dict(causal=True, stats="all", span=(40, 300), backend="triton")
    out, st = attention_with_stats(q, k, v, **kw)
    monkeypatch.setattr(launcher_decode, "ENABLED", False)
    out_g, general = attention_with_stats(q, k, v, **kw)
    assert fused == [True]
    torch.testing.assert_close(out, out_g, atol=2e-6, rtol=2e-5)
    for n in ("argmax", "key_count"):
        assert torch.equal(getattr(st, n), getattr(general, n)), n
    for n, t in general.items():
        torch.testing.assert_close(getattr(st, n), t, atol=2e-6, rtol=2e-5, msg=n)


def test_rows_whose_scores_all_overflow(fused, monkeypatch, device):
    """Finite inputs whose every score is -inf for one KV head's query heads (q.k = -1e40 in float32): those rows
    see nothing (lse -inf), so masses, max_prob and entropy are 0, argmax -1 and key mass 0, as the reference says;
    the statistics walk after a forward agrees."""
    q, k, v = make(1, 4, 2, 1, 150, 32, torch.float32, device, seed=59)
    q[..., 0] = 1e20
    k[0, 1, :, 0] = -1e20
    kw = dict(causal=True, stats="all", sink_tokens=3, local_window=20, span=(1, 100))
    _, ref = attention_with_stats(q, k, v, backend="reference", **kw)
    assert (ref.lse[0, 2:] == float("-inf")).all() and (ref.argmax[0, 2:] == -1).all()
    for on in (True, False):
        monkeypatch.setattr(launcher_decode, "FUSED", on)
        _, st = attention_with_stats(q, k, v, backend="triton", **kw)
        for n in ("lse", "argmax", "max_prob", "entropy", "sink_mass", "local_mass", "span_mass", "key_mass"):
            assert torch.equal(getattr(st, n)[0, 2:], getattr(ref, n)[0, 2:]), (on, n)
    assert fused == [True]


def test_without_output(fused, device):
    """need_out=False: no output, no V read, the same statistics."""
    q, k, v = make(1, 8, 2, 1, 250, 48, torch.bfloat16, device, seed=54)
    out, st = attention_with_stats(q, k, v, stats="all", need_out=False, backend="triton")
    _, full = attention_with_stats(q, k, v, stats="all", backend="triton")
    assert out is None and fused == [False, True]
    for name, t in full.items():
        torch.testing.assert_close(getattr(st, name), t, equal_nan=True, msg=name, atol=0, rtol=0)


def test_off_takes_the_forward_then_the_statistics_walk(fused, monkeypatch, device):
    monkeypatch.setattr(launcher_decode, "FUSED", False)
    q, k, v = make(1, 4, 2, 1, 150, 32, torch.float32, device, seed=55)
    out, st = attention_with_stats(q, k, v, stats="all", backend="triton")
    monkeypatch.setattr(launcher_decode, "FUSED", True)
    out2, st2 = attention_with_stats(q, k, v, stats="all", backend="triton")
    assert fused == [True]
    torch.testing.assert_close(out2, out, atol=2e-6, rtol=2e-5)
    for name, t in st.items():
        if name == "argmax":
            assert torch.equal(getattr(st2, name), t)
        else:
            torch.testing.assert_close(getattr(st2, name), t, equal_nan=True, msg=name, **STAT_TOL)


def test_gradients_through_a_fused_step(fused, device):
    """The differentiable path's forward takes the fused walk; its output and lse feed the backward kernels."""
    q, k, v = make(2, 4, 2, 1, 200, 32, torch.float32, device, seed=56)
    grads = []
    for backend in ("triton", "reference"):
        qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
        out, st = attention_with_stats(qq, kk, vv, stats=["entropy", "key_mass"], backend=backend)
        (out * torch.linspace(-1, 1, 32, device=device)).sum().backward()
        grads.append((qq.grad, kk.grad, vv.grad, st.entropy))
    assert fused == [True]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-4)


def test_every_head_dim_takes_the_fused_walk_by_default(monkeypatch, device):
    """Head dims 64-256 (256 since its combine was timed, round 21b) take the fused walk when statistics are asked
    for; an lse alone, or INTERP_DECODE_FUSED=0, does not."""
    from interp.kernels.checks import check_inputs

    monkeypatch.setattr(launcher_decode, "ENABLED", True)
    monkeypatch.setattr(launcher_decode, "FUSED", True)
    kw = dict(causal=True, scale=None, sliding_window=None, attention_mask=None, key_bias=None, stats="all",
              sink_tokens=4, local_window=64, span=None)
    for d in (64, 128, 256):
        q, k, v = make(1, 4, 1, 1, 100, d, torch.float16, device, seed=57)
        assert launcher_decode.fused_eligible(check_inputs(q, k, v, **kw)), d
        assert not launcher_decode.fused_eligible(check_inputs(q, k, v, **{**kw, "stats": ("lse",)})), d
    monkeypatch.setattr(launcher_decode, "FUSED", False)
    assert not launcher_decode.fused_eligible(check_inputs(q, k, v, **kw))


@pytest.mark.gpu
@pytest.mark.slow
def test_decode_step_over_a_million_keys(device):
    """One query per head against 2^20 cached keys, batch 3 (K and V of 3 x 2^30 elements each: batch offsets pass
    2^31), 32 heads x 128, GQA 32/8, fp16, every statistic, the default decode path (the fused walk): the first and
    last heads of the last batch row against float64, key mass of every key included (one query: its probabilities)."""
    n, b, h, hk, d = 2**20, 3, 32, 8, 128
    if torch.cuda.mem_get_info()[0] < 24 * 2**30:
        pytest.skip("needs 24 GiB of free GPU memory")
    g = torch.Generator(device=device).manual_seed(60)
    q = torch.randn(b, h, 1, d, device=device, dtype=torch.float16, generator=g)
    k = (torch.randn(b, hk, n, d, device=device, generator=g) * 1.5).half()
    v = torch.randn(b, hk, n, d, device=device, dtype=torch.float16, generator=g)
    span = (n // 2, n // 2 + 64)
    called = []
    real = launcher_decode.fused_decode
    launcher_decode.fused_decode = lambda *a, **kw: called.append(1) or real(*a, **kw)
    try:
        out, st = attention_with_stats(q, k, v, stats="all", span=span)
    finally:
        launcher_decode.fused_decode = real
    torch.cuda.synchronize()
    assert called, "the fused decode walk was not taken"
    # every row's key mass sums to 1 up to its float32 row sum. Round 22 (H100): 1.03e-4 while the walk formed the
    # old max's exponent again each block (an FMA left its rounding error in every rescale), lse off by as much
    dev = (st.key_mass.double().sum(-1) - 1).abs()  # [b, h]
    assert dev.max().item() < 1e-5, (dev.max().item(), dev.argmax().item())
    assert torch.equal(st.key_count[0, 0], torch.ones(n, device=device))
    for head in (0, h - 1):
        kd, vd = k[-1, head // (h // hk)].double(), v[-1, head // (h // hk)].double()  # [n, d]
        s = (kd @ q[-1, head, 0].double()) * d ** -0.5  # [n]
        lse = torch.logsumexp(s, 0)
        p = torch.exp(s - lse)
        assert (out[-1, head, 0].double() - p @ vd).abs().max().item() < 2e-3, head
        want = dict(lse=lse, max_prob=p.max(), entropy=-torch.special.xlogy(p, p).sum(), sink_mass=p[:4].sum(),
                    local_mass=p[-64:].sum(), span_mass=p[span[0]:span[1]].sum())
        assert abs(st.lse[-1, head, 0].item() - lse.item()) < 1e-5, head  # (4e-5 and 5e-5 in round 22's first run)
        for name, val in want.items():
            got = getattr(st, name)[-1, head, 0].item()
            assert abs(got - val.item()) < 2e-5 + 2e-5 * abs(val.item()), (name, head, got, val.item())
        arg = st.argmax[-1, head, 0].item()
        assert arg == p.argmax().item() or p.max() - p[arg] < 1e-6, head
        km = st.key_mass[-1, head].double()
        err = (km - p).abs() - 2e-4 * p  # [n]: > 1e-9 where outside rtol 2e-4, atol 1e-9
        worst = err.argmax().item()
        assert err[worst].item() <= 1e-9, (head, worst, km[worst].item(), p[worst].item(), (err > 1e-9).sum().item(),
                                           ((km - p).abs() / p.clamp_min(1e-30)).max().item())


def test_the_rescale_exponent_is_not_contracted():
    """The walk rescales its sums by 2^(M_old - M_new) each key block. Formed as m_i * qk_scale - big, the compiler
    contracted it into one FMA, which keeps the product's rounding error where the max has not moved (M_old = M_new):
    2^(~1e-7) on every block, lse off by 1e-4 over a decode step's 1,500 blocks on the H100 (round 22, the interpreter
    never contracts). The max is now carried in log2 units, so the exponent is a subtraction; the combine weighs each
    part by the M the walk stored (not m_raw * qk_scale again, contracted the same way). Compiled for sm_90 on this
    CPU (the installed Triton) at 1 and 3 stages: every ex2 on those source lines takes a sub (each took an fma.rn.f32
    before)."""
    from pathlib import Path

    from helpers import sm90_compile_json

    root = Path(__file__).resolve().parents[1]
    src = (root / "kernels" / "triton_decode_fused.py").read_text().splitlines()
    marks = ("alpha = tl.exp2(", "tl.exp2(m2 - lse2)", "l_p * tl.exp2(m_p - safe)")
    lines = [next(i + 1 for i, t in enumerate(src) if m in t) for m in marks]
    feeds = [f for kernel in sm90_compile_json(
        "import json, sm90_decode as S; from pathlib import Path; "
        "fused = S.load(Path('.'))['triton_decode_fused']; "
        "want = dict(WANT_ARG=True, WANT_ENT=True, WANT_SINK=True, WANT_LOCAL=True, WANT_SPAN=True, WANT_KEY=True); "
        "walk = dict(HEAD_DIM=64, BLOCK_D=64, BLOCK_G=16, BLOCK_N=64, UPCAST=False, DOT_PREC=None, stride_qd=1, "
        "stride_kd=1, stride_vd=1, WANT_OUT=True, **want); "
        "comb = dict(BLOCK_P=128, BLOCK_K=1024, BLOCK_D=64, D_SLICE=32, HEAD_DIM=64, WANT_OUT=True, WANT_MAXP=True, "
        "WANT_COUNT=True, WANT_KMEAN=True, **want, **S.SLOTS); "
        "print(json.dumps([S.ex2_feeds(S.compile_kernel_stages(fn, c, ptrs, ns).asm['ptx']) for ns in (1, 3) "
        "for fn, c, ptrs in ((fused.fused_decode_walk_kernel, walk, S.FUSED_WALK_PTRS), "
        "(fused.fused_decode_combine_kernel, comb, S.FUSED_COMBINE_PTRS))]))") for f in kernel]
    on_lines = [(line, op) for name, line, op in feeds if name == "triton_decode_fused.py" and line in lines]
    assert {line for line, _ in on_lines} == set(lines), (lines, feeds)  # each marked exponential was found
    assert all(op.startswith("sub") for _, op in on_lines), on_lines
