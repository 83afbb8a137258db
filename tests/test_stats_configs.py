"""The statistics kernel under each code path its tile configs choose, against the PyTorch reference.

The autotuner picks a config per key on a GPU; the CPU interpreter has one (the GPU's first: a key-by-query walk).
Here the launcher's config cache is forced to a given config, so both tile orientations (query-by-key, and
key-by-query: TRANSPOSE), both ways of computing the masses (carried through the full walk, SPLIT_MASSES=0, or in
walks of their own, SPLIT_MASSES=1), both ways of summing key mass (KEY_GROUPS 1: over the tile; more: per group of
rows) and small and ragged tiles run in CI.
"""

import pytest
import torch

triton = pytest.importorskip("triton")

from interp.kernels import attention_with_stats, launcher  # noqa: E402
from test_kernel_triton import check_against_reference, make  # noqa: E402


def _config(bm, bn, split, groups, transpose=0):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "SPLIT_MASSES": split, "KEY_GROUPS": groups,
                          "TRANSPOSE": transpose}, num_warps=4, num_stages=1)


CONFIGS = {  # masses carried or split; key-mass column sums over the tile (KEY_GROUPS 1) or per group of rows
    "64x64-carried-tile": _config(64, 64, 0, 1),
    "64x64-split-groups": _config(64, 64, 1, 4),
    "32x16-split-tile": _config(32, 16, 1, 1),
    "32x16-carried-groups": _config(32, 16, 0, 2),
    "64x64-transposed": _config(64, 64, 1, 1, transpose=1),  # key-by-query tiles (`triton_stats_t.py`)
    "32x32-transposed": _config(32, 32, 0, 1, transpose=1),  # (masses split whatever SPLIT_MASSES says)
}


@pytest.fixture(params=sorted(CONFIGS))
def forced(request, monkeypatch):
    monkeypatch.setattr(launcher, "_tuned", launcher.PinnedConfig(CONFIGS[request.param]))
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_causal_gqa_every_statistic(forced, dtype, device):
    q, k, v = make(1, 6, 2, 131, 131, 64, dtype, device, seed=11)
    check_against_reference(q, k, v, causal=True, stats="all", sink_tokens=5, local_window=20, span=(60, 97))


@pytest.mark.parametrize("index", range(len(launcher.attention_stats_kernel.configs)))
def test_every_autotune_candidate(index, device, monkeypatch):
    """Each config the autotuner may pick (on a GPU all of them, maxnreg caps included; in the interpreter its
    single one), forced, against the reference: fp16 GQA with every statistic, and a padded, windowed call."""
    monkeypatch.setattr(launcher, "_tuned", launcher.PinnedConfig(launcher.attention_stats_kernel.configs[index]))
    q, k, v = make(1, 8, 2, 200, 200, 128, torch.float16, device, seed=20)
    check_against_reference(q, k, v, causal=True, stats="all", sink_tokens=4, local_window=64, span=(90, 150))
    q, k, v = make(2, 4, 1, 150, 150, 64, torch.float16, device, seed=21)
    mask = torch.ones(2, 150, dtype=torch.bool)
    mask[0, :17] = False
    check_against_reference(q, k, v, causal=True, sliding_window=70, attention_mask=mask.to(device), stats="all",
                            span=(0, 30))


def test_chunked_prefill_window_padding(forced, device):
    q, k, v = make(2, 4, 2, 45, 170, 32, torch.float32, device, seed=12)
    mask = torch.ones(2, 170, dtype=torch.bool)
    mask[0, :30] = False
    mask[1, 150:] = False
    check_against_reference(q, k, v, causal=True, sliding_window=50, attention_mask=mask.to(device), stats="all",
                            sink_tokens=2, local_window=7, span=(100, 140))


def test_noncausal_bias_masses_only(forced, device):
    q, k, v = make(2, 4, 4, 70, 90, 32, torch.float32, device, seed=13)
    bias = torch.zeros(2, 4, 90, device=device)
    bias[:, 0, :3] = float("-inf")
    bias[1, 2, 40] = 3.0
    spans = torch.tensor([[0, 10], [35, 80]], device=device)
    for stats in (["sink_mass", "local_mass", "span_mass"], ["entropy", "local_mass"], "all"):
        check_against_reference(q, k, v, causal=False, key_bias=bias, span=spans, stats=stats, local_window=9)


def test_argmax_is_the_first_maximum(forced, device):
    """Exact ties (repeated keys) inside and across key blocks: the first position carrying the row's max wins."""
    q, k, v = make(1, 2, 2, 100, 100, 32, torch.float32, device, seed=14)
    k[:, :, 70] = k[:, :, 10]  # key 70 ties key 10 (another block at BLOCK_N 16 and 64)
    k[:, :, 12] = k[:, :, 11]  # and two neighbours tie inside one block
    k[:, :, 40] = k[:, :, 32]  # 8 apart: one thread's two rows of a 16-key group in a transposed tile
    q[:, :, 20:32] = 2 * k[:, :, 11:12]  # these rows' max: keys 11 and 12
    q[:, :, 44:60] = 2 * k[:, :, 32:33]  # these rows' max: keys 32 and 40
    q[:, :, 80:] = 2 * k[:, :, 10:11]  # these rows' max: keys 10 and 70
    _, st = check_against_reference(q, k, v, causal=True, stats=["argmax", "max_prob"])
    hidden = torch.ones(100, 100, dtype=torch.bool, device=device).triu(1)
    scores = (q @ k.transpose(-1, -2)).masked_fill(hidden, float("-inf"))
    first = scores.argmax(-1)  # torch returns the first maximal index
    ties = (scores == scores.max(-1, keepdim=True).values).sum(-1) > 1
    assert ties[0, 0, 20:32].all() and ties[0, 0, 44:60].all() and ties[0, 0, 80:].all()
    assert torch.equal(st.argmax[ties], first[ties])
    assert set(first[0, 0, 80:].tolist()) == {10} and set(first[0, 0, 20:32].tolist()) == {11}
    assert set(first[0, 0, 44:60].tolist()) == {32}


@pytest.fixture
def tuned_as_on_gpu(monkeypatch):
    """The launcher's GPU-side tuning logic (autotune on, not the interpreter's single-config path) with a
    proxy length of 64 tokens (128 for short-query calls), recording every statistics launch: (q_len, whether its
    config was cached)."""
    from interp.kernels import launcher_decode

    monkeypatch.setattr(launcher_decode, "ENABLED", False)  # (the packed decode kernel is not autotuned)
    monkeypatch.setattr(launcher, "INTERPRET", False)
    monkeypatch.setattr(launcher, "AUTOTUNE", True)
    monkeypatch.setattr(launcher, "TUNE_LEN", 64)
    monkeypatch.setattr(launcher, "SHORT_TUNE_LEN", 128)
    monkeypatch.setattr(launcher, "_tuned", {})
    monkeypatch.setattr(launcher, "_proxied", set())
    calls = []
    real = launcher._launch_stats

    def spy(args, consts, tune_key, lq, n_bh, kmass, *rest):
        calls.append((lq, tune_key in launcher._tuned))
        return real(args, consts, tune_key, lq, n_bh, kmass, *rest)

    monkeypatch.setattr(launcher, "_launch_stats", spy)
    real_fwd = launcher.triton_forward

    def spy_fwd(q, k, v, spec, flags, len_bucket):
        calls.append(("forward", spec.q_len))
        return real_fwd(q, k, v, spec, flags, len_bucket)

    monkeypatch.setattr(launcher, "triton_forward", spy_fwd)
    return calls


@pytest.mark.parametrize("case", ["causal", "chunked-window-padded", "short-chunk-window-padded", "decode"])
def test_long_inputs_are_tuned_on_a_proxy(tuned_as_on_gpu, case, device):
    """Past `tune_cap` tokens (TUNE_LEN; SHORT_TUNE_LEN keys for a call of at most 128 queries) the first call of a
    kind tunes on a proxy of that length; the long call then launches the cached config (and is still exact). A
    second long call of the same kind makes no proxy."""
    calls = tuned_as_on_gpu
    kw = dict(stats="all", span=(3, 40))
    if case == "causal":
        q, k, v = make(1, 4, 2, 150, 150, 32, torch.float16, device, seed=15)
    elif case == "decode":  # (past SHORT_TUNE_LEN keys)
        q, k, v = make(2, 4, 1, 1, 150, 32, torch.float16, device, seed=16)
    else:  # a chunk of more than 128 queries (tuned past TUNE_LEN) or of fewer (past SHORT_TUNE_LEN)
        lq = 140 if case == "chunked-window-padded" else 90
        q, k, v = make(2, 4, 2, lq, 150, 32, torch.float32, device, seed=17)
        mask = torch.ones(2, 150, dtype=torch.bool)
        mask[1, :20] = False
        kw.update(sliding_window=70, attention_mask=mask.to(device))
    torch.manual_seed(0)
    expected_draw = torch.rand(3)
    torch.manual_seed(0)
    check_against_reference(q, k, v, causal=True, **kw)
    assert torch.equal(torch.rand(3), expected_draw)  # the proxy leaves the global random stream alone
    # q_len != k_len kept (140 queries and 150 keys: 64 of each past the cap, so the proxy takes half)
    proxy_lq = {"causal": 64, "decode": 1, "chunked-window-padded": 32, "short-chunk-window-padded": 90}[case]
    lq = q.shape[2]
    # the proxy's forward and statistics first, then the real call's, from the caches; the forward runs in
    # Triton on the CPU, and on a GPU wherever SDPA cannot (window and padding), else in SDPA (not recorded)
    sdpa = q.is_cuda and "window" not in case
    fwd = (lambda n: []) if sdpa else (lambda n: [("forward", n)])
    assert calls == [*fwd(proxy_lq), (proxy_lq, False), *fwd(lq), (lq, True)], calls
    del calls[:]
    check_against_reference(q, k, v, causal=True, **kw)
    assert calls == [*fwd(lq), (lq, True)]


def test_short_inputs_make_no_proxy(tuned_as_on_gpu, device):
    q, k, v = make(1, 2, 2, 64, 64, 32, torch.float32, device, seed=18)
    check_against_reference(q, k, v, causal=True, stats="query")
    assert tuned_as_on_gpu == [("forward", 64), (64, False)] and not launcher._proxied


@pytest.mark.parametrize("short_first", [True, False], ids=["short-first", "long-first"])
def test_short_and_long_chunks_tune_apart(tuned_as_on_gpu, short_first, device):
    """A chunk of at most 128 queries and a longer one of the same kind and key length tune different length buckets
    (SHORT_TUNE_LEN and TUNE_LEN): each makes its own proxy, whichever comes first."""
    calls = tuned_as_on_gpu
    chunks = [make(1, 4, 2, lq, 300, 32, torch.float32, device, seed=22) for lq in (100, 150)]
    for q, k, v in (chunks if short_first else chunks[::-1]):
        del calls[:]
        check_against_reference(q, k, v, causal=True, stats="all")
        assert calls[-1] == (q.shape[2], True) and len([c for c in calls if c[0] != "forward"]) == 2, calls


def test_decode_steps_tune_at_their_own_length(tuned_as_on_gpu, device):
    """A short-query call past TUNE_LEN keys (64 here) but within SHORT_TUNE_LEN (128) is tuned on itself, under its
    own length bucket: its work grows with the keys alone, and a shorter proxy misjudged its tiles."""
    q, k, v = make(1, 2, 1, 2, 100, 32, torch.float16, device, seed=20)
    check_against_reference(q, k, v, causal=True, stats="all")
    # (two queries: the Triton forward, also on a GPU), no proxy call before them
    assert tuned_as_on_gpu == [("forward", 2), (2, False)] and not launcher._proxied


def test_short_tune_len_env():
    assert launcher.short_tune_len(None) == 1 << 20 and launcher.short_tune_len("8192") == launcher.TUNE_LEN
    for bad in ("5000", "4096", "abc", ""):
        with pytest.raises(ValueError, match="INTERP_SHORT_TUNE_LEN"):
            launcher.short_tune_len(bad)


def test_proxy_keeps_the_autotune_key_and_the_sdpa_choice():
    from interp.kernels.checks import check_inputs

    for lq, lk, causal in [(20000, 20000, True), (1, 30000, True), (9000, 20000, True), (12000, 20000, False),
                           (100, 20000, True), (20000, 20000, False)]:
        q = torch.empty(2, 8, lq, 64, dtype=torch.float16)
        k = torch.empty(2, 2, lk, 64, dtype=torch.float16)
        spec = check_inputs(q, k, k, causal=causal, scale=None, sliding_window=None, attention_mask=None,
                            key_bias=None, stats="all", sink_tokens=4, local_window=64, span=None)
        ps = launcher._proxy_spec(spec, "cpu")
        cap = launcher.SHORT_TUNE_LEN if lq <= 128 else launcher.TUNE_LEN  # short-query calls tune at their length
        assert launcher._len_bucket(ps) == launcher._len_bucket(spec) == min(cap, 1 << (lk - 1).bit_length())
        assert max(ps.q_len, ps.k_len) == min(cap, lk) and ps.batch == 1
        assert (ps.q_len == ps.k_len) == (lq == lk) and (ps.q_len == 1) == (lq == 1)
        assert ps.q_offset == ps.k_len - ps.q_len and ps.causal == causal


def test_long_backward_is_tuned_on_a_proxy(monkeypatch, device):
    """The backward kernels too: past TUNE_LEN the first backward of a kind runs on a proxy first, and the
    gradients are exactly those of the unproxied path (same config in the interpreter)."""
    from interp.kernels import attention_with_stats, launcher_backward as LB
    from interp.kernels.checks import check_inputs

    q, k, v = make(1, 4, 2, 150, 150, 32, torch.float32, device, seed=19)
    bias = torch.randn(1, 4, 150, device=device)
    spec = check_inputs(q, k, v, causal=True, scale=None, sliding_window=60, attention_mask=None, key_bias=bias,
                        stats="lse", sink_tokens=4, local_window=64, span=None)
    out, st = attention_with_stats(q, k, v, key_bias=bias, sliding_window=60, backend="triton", stats="lse")
    do = torch.randn_like(out)
    plain = LB.triton_attention_backward(do, q, k, v, out, st.lse, spec, need_dbias=True)

    for mod in (launcher, LB):
        monkeypatch.setattr(mod, "INTERPRET", False)
        monkeypatch.setattr(mod, "AUTOTUNE", True)
    monkeypatch.setattr(launcher, "TUNE_LEN", 64)
    monkeypatch.setattr(launcher, "_proxied", set())
    monkeypatch.setattr(LB, "_proxied", set())
    lengths = []

    class Spy:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kw):
                lengths.append(args[31])  # the dq kernel's Lq (after 9 pointers, 20 strides, h, group)
                return self.kernel[grid](*args, **kw)
            return launch

    monkeypatch.setattr(LB, "bwd_dq_kernel", Spy(LB.bwd_dq_kernel))
    torch.manual_seed(0)
    expected_draw = torch.rand(3)
    torch.manual_seed(0)
    proxied = LB.triton_attention_backward(do, q, k, v, out, st.lse, spec, need_dbias=True)
    assert torch.equal(torch.rand(3), expected_draw)  # the proxy leaves the global random stream alone
    assert lengths == [64, 150] and len(LB._proxied) == 1
    for a, b in zip(plain, proxied):
        assert torch.equal(a, b)
    LB.triton_attention_backward(do, q, k, v, out, st.lse, spec, need_dbias=True)
    assert lengths == [64, 150, 150]  # tuned once per kind
    with pytest.raises(ValueError, match="split must divide"):  # checked before any proxy runs
        LB.triton_attention_backward(do, q, k, v, out, st.lse, spec, split=3)


def test_sm90_register_report_compiles_without_a_gpu():
    """examples/sm90_registers.py compiles the kernel for sm_90 on this CPU with the installed Triton and reads
    registers from the cubin (the counts equal the GPU's only under the GPU machines' Triton version)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    # "all" compiles the key statistics' in-kernel finalize too (inline PTX fence, acq_rel ticket, div.rn)
    res = subprocess.run([sys.executable, str(root / "examples" / "sm90_registers.py"), "--configs", "first",
                          "--variants", "query", "all"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for variant in ("query", "all"):
        row = re.search(rf"^(\d+)x(\d+) w(\d+) .*?\s+{variant}\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+(\d+)$",
                        res.stdout, re.M)
        assert row, res.stdout
        bm, bn, w, regs, spill, smem_kib, ctas, warps = (float(x) for x in row.groups())
        assert 32 <= regs <= 255 and 16 <= smem_kib <= 227 and ctas >= 1 and warps == w * ctas
    # the sliding-window variants (narrow, the default of a bare --window, and wide), the kernels read from a tree
    # named by --root (round 13's and 14's options)
    for args, kind in ((["--window"], "narrow"), (["--window", "wide"], "wide")):
        res = subprocess.run([sys.executable, str(root / "examples" / "sm90_registers.py"), "--configs", "first",
                              "--variants", "all", *args, "--root", str(root)], capture_output=True, text=True,
                             env=env, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        assert f"causal, {kind} sliding window, kernels of {root}" in res.stdout, res.stdout
        assert re.search(r"^\d+x\d+ w\d+ .*?\s+all\s+\d+\s+\d+", res.stdout, re.M), res.stdout
    bad = subprocess.run([sys.executable, str(root / "examples" / "sm90_registers.py"), "--root", str(root / "tests")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "no kernels/triton_stats.py there" in bad.stderr, bad.stderr[-500:]


EDGE_CASES = {  # the awkward-row tests of test_kernel_triton / test_kernel_awkward, re-run under each forced walk
    "empty-padding": ("test_kernel_triton", "test_rows_with_nothing_to_attend_to", {"case": "padding"}),
    "empty-bias": ("test_kernel_triton", "test_rows_with_nothing_to_attend_to", {"case": "bias"}),
    "empty-bias+window": ("test_kernel_triton", "test_rows_with_nothing_to_attend_to", {"case": "bias+window"}),
    "nan-q": ("test_kernel_awkward", "test_nan_scores_give_nan_statistics_not_empty_rows", {"where": "q"}),
    "nan-k": ("test_kernel_awkward", "test_nan_scores_give_nan_statistics_not_empty_rows", {"where": "k"}),
    "nan-padding-query": ("test_kernel_awkward", "test_nan_in_a_padding_query_does_not_poison_key_statistics", {}),
    "finfo-min-bias": ("test_kernel_awkward", "test_finfo_min_bias_hides_keys_like_minus_inf",
                       {"backend": "triton", "dtype": torch.float32}),
    "finfo-min-bias-f16": ("test_kernel_awkward", "test_finfo_min_bias_hides_keys_like_minus_inf",
                           {"backend": "triton", "dtype": torch.float16}),
}


@pytest.mark.parametrize("edge", sorted(EDGE_CASES))
def test_awkward_rows_under_each_walk(forced, edge, device):
    """Rows that see nothing, NaN scores, NaN in a padding query, finfo.min masks: the same answers whichever walk
    (query-by-key, key-by-query, masses carried or split) the pinned config takes."""
    import importlib

    module, name, kwargs = EDGE_CASES[edge]
    getattr(importlib.import_module(module), name)(device=device, **kwargs)


TIE_CASES = {  # (q_len, k_len, causal, extra arguments)
    "causal": (150, 150, True, {}),
    "chunked": (45, 170, True, {}),
    "noncausal": (45, 170, False, {}),
    "window": (150, 150, True, {"sliding_window": 37}),
    "padding": (150, 150, True, {"pad": True}),
    "bias": (150, 150, False, {"bias": True}),
    "decode": (1, 170, True, {}),
}


@pytest.mark.parametrize("case", sorted(TIE_CASES))
def test_argmax_first_maximum_with_many_exact_ties(forced, case, device):
    """Scores from integer q and k (exact in float32), half the keys copies of others: ties inside a block, across
    blocks, between the two rows a thread folds and between keys BLOCK_N apart (one partial of a key-by-query walk).
    The argmax must equal the first maximal key exactly (float64 reference), with a non-power-of-two head_dim."""
    lq, lk, causal, extra = TIE_CASES[case]
    g = torch.Generator().manual_seed(sorted(TIE_CASES).index(case))
    q = torch.randint(-1, 2, (2, 4, lq, 40), generator=g).float()
    k = torch.randint(-1, 2, (2, 2, lk, 40), generator=g).float()
    k[:, :, torch.randint(0, lk, (lk // 2,), generator=g)] = k[:, :, torch.randint(0, lk, (lk // 2,), generator=g)]
    k[:, :, 64:128] = k[:, :, 0:64]  # keys 64 apart: same partial, next block, at BLOCK_N 64 (and 32, 16)
    v = torch.randn(2, 2, lk, 40, generator=g)
    kw = dict(causal=causal, scale=0.25)
    qpos = torch.arange(lq)[:, None] + (lk - lq)
    ok = torch.ones(2, 4, lq, lk, dtype=torch.bool)
    if causal:
        ok &= torch.arange(lk)[None, :] <= qpos
    if "sliding_window" in extra:
        kw["sliding_window"] = extra["sliding_window"]
        ok &= (qpos - torch.arange(lk)[None, :]) < extra["sliding_window"]
    if extra.get("pad"):
        valid = torch.ones(2, lk, dtype=torch.bool)
        valid[0, :30] = False
        valid[1, 100:] = False
        kw["attention_mask"] = valid.to(device)
        ok &= valid[:, None, None, :]
    if extra.get("bias"):
        bias = torch.zeros(2, 4, lk)
        bias[:, 1] = float("-inf")  # head 1 sees nothing
        bias[0, 2, ::3] = float("-inf")
        kw["key_bias"] = bias.to(device)
        ok &= ~torch.isneginf(bias)[:, :, None, :]
    _, st = attention_with_stats(q.to(device), k.to(device), v.to(device), backend="triton",
                                 stats=["argmax", "max_prob"], **kw)
    s = (q.double() @ k.double().repeat_interleave(2, 1).transpose(-1, -2)).masked_fill(~ok, float("-inf"))
    want = s.argmax(-1).masked_fill(~ok.any(-1), -1)
    assert ((s == s.max(-1, keepdim=True).values) & ok).sum(-1).gt(1).any()  # there are ties to break
    assert torch.equal(st.argmax.cpu(), want), (st.argmax.cpu() != want).sum().item()


def test_sm90_decode_report_compiles_without_a_gpu():
    """examples/sm90_decode.py compiles the packed decode kernels for sm_90 here: the walk at three head dims, and a
    combine that reads COMBINE_PARTS parts per iteration of one loop (f465149; before it, one part at a time)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(root / "examples" / "sm90_decode.py"), "--parts", "128", "528"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    walks = re.findall(r"^walk\s+head_dim (\d+)\s+BLOCK_N \d+\s+registers\s+(\d+)\s+spill B (\d+)$", res.stdout, re.M)
    assert [int(d) for d, _, _ in walks] == [64, 128, 256], res.stdout
    assert all(32 <= int(r) <= 255 for _, r, _ in walks), res.stdout
    m = re.search(r"^combine\s+BLOCK 16 BLOCK_P 128\s+registers\s+(\d+)\s+spill B 0\s+global loads per loop "
                  r"iteration \[(\d+)\]$", res.stdout, re.M)
    assert m and int(m.group(2)) >= 5 * 16, res.stdout  # five [16, 128] tiles of partials over 128 threads
    assert "128 parts: 1, 528 parts: 5" in res.stdout, res.stdout
