"""Parted walks (`kernels/walk_parts.py`): a query block's full walk split over several programs, the last combining
the partial row statistics. Forced on here (a huge program target) for the tile configs that part, against the
PyTorch reference; parted and unparted calls agree exactly on max_prob, argmax and the key sums; ties across parts
keep the first key; configs that carry the masses through their walk never part."""

import functools

import pytest
import torch

triton = pytest.importorskip("triton")

from interp.kernels import attention_with_stats, launcher, launcher_decode, triton_stats, walk_parts  # noqa: E402
from test_kernel_triton import check_against_reference, make  # noqa: E402
from test_stats_configs import CONFIGS, tuned_as_on_gpu  # noqa: E402, F401 (a fixture)
from test_walk_runs import CASES, _inputs, _window_kind  # noqa: E402

PARTED = ("32x16-split-tile", "32x32-transposed", "64x64-transposed")  # masses in walks of their own: these part


@pytest.fixture
def parted(monkeypatch):
    """Parts on for every call, a target no test call reaches; every statistics launch's grid recorded (the general
    kernel's: the packed decode path, `launcher_decode`, off)."""
    monkeypatch.setattr(launcher_decode, "ENABLED", False)
    monkeypatch.setattr(walk_parts, "TARGET", 10**6)
    monkeypatch.setattr(walk_parts, "SHORT_ONLY", False)
    grids = []
    real = launcher._direct_stats

    def spy(grid, args, kwargs, key):
        grids.append(grid[0])
        return real(grid, args, kwargs, key)

    monkeypatch.setattr(launcher, "_direct_stats", spy)
    return grids


def _pin(monkeypatch, name):
    monkeypatch.setattr(launcher, "_tuned", launcher.PinnedConfig(CONFIGS[name]))


def test_env_values():
    assert walk_parts.mode_from_env(None) == (None, True) == walk_parts.mode_from_env(" Short ")  # the default
    assert walk_parts.mode_from_env("off") == (0, False) == walk_parts.mode_from_env("0")
    assert walk_parts.mode_from_env(" Auto ") == (None, False) and walk_parts.mode_from_env("600") == (600, False)
    for bad in ("1", "-3", "yes", "1.5"):
        with pytest.raises(ValueError, match="INTERP_STATS_PARTS"):
            walk_parts.mode_from_env(bad)


def test_default_parts_short_queries_only(monkeypatch):
    """By default a decode step or short chunk against a long cache parts; a prefill, or a short cache, never."""
    monkeypatch.setattr(walk_parts, "TARGET", None)
    monkeypatch.setattr(walk_parts, "SHORT_ONLY", True)
    monkeypatch.setattr(walk_parts, "target_programs", lambda device: 528)
    may = functools.partial(walk_parts.call_may_part, ("entropy",), n_bh=32, device=None)
    assert may(lq=1, lk=131072) and may(lq=walk_parts.MAX_BLOCK_M, lk=walk_parts.SHORT_MIN_KEYS)
    assert not may(lq=walk_parts.MAX_BLOCK_M + 1, lk=131072) and not may(lq=1024, lk=1024)
    assert not may(lq=1, lk=walk_parts.SHORT_MIN_KEYS - 1)
    assert not walk_parts.call_may_part(("sink_mass",), 1, 131072, 32, None)  # no full walk: nothing to part
    monkeypatch.setattr(walk_parts, "SHORT_ONLY", False)  # INTERP_STATS_PARTS=auto: any call with few programs
    assert may(lq=1024, lk=1024) and not may(lq=8192, lk=8192)
    monkeypatch.setattr(walk_parts, "TARGET", 0)  # off
    assert not may(lq=1, lk=131072)


def test_how_many_parts():
    meta = dict(BLOCK_M=64, BLOCK_N=64, SPLIT_MASSES=1, TRANSPOSE=1)
    assert walk_parts.n_parts(meta, 1024, 1024, 9, 528, True, True) == 3  # 144 programs: 528 // 144
    assert walk_parts.n_parts(meta, 1024, 1024, 32, 528, True, True) == 1  # 512 programs: 528 // 512 = 1
    assert walk_parts.n_parts(meta, 1024, 1024, 9, 0, True, True) == 1  # off
    assert walk_parts.n_parts(meta, 1024, 1024, 9, 528, False, True) == 1  # no full walk
    assert walk_parts.n_parts({**meta, "SPLIT_MASSES": 0, "TRANSPOSE": 0}, 1024, 1024, 9, 528, True, True) == 1
    assert walk_parts.n_parts({**meta, "SPLIT_MASSES": 0, "TRANSPOSE": 0}, 1024, 1024, 9, 528, True, False) == 3
    assert walk_parts.n_parts(meta, 1, 100_000, 32, 528, True, True) == 16  # a decode step: 528 // 32 programs
    assert walk_parts.n_parts(meta, 1, 100_000, 4, 528, True, True) == walk_parts.SHORT_MAX_PARTS  # (132 wanted)
    assert walk_parts.n_parts(meta, 1024, 100_000, 1, 528, True, True) == walk_parts.MAX_PARTS  # 16 query blocks
    assert walk_parts.max_parts(walk_parts.MAX_BLOCK_M + 1) == walk_parts.MAX_PARTS
    assert walk_parts.n_parts(meta, 64, 150, 1, 10**6, True, True) == 1  # 3 key blocks: one part each is too few


@pytest.mark.parametrize("name", PARTED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_parted_causal_gqa(parted, monkeypatch, name, dtype, device):
    _pin(monkeypatch, name)
    q, k, v = make(1, 4, 2, 200, 200, 32, dtype, device, seed=5)
    n = walk_parts.n_parts(CONFIGS[name].all_kwargs(), 200, 200, 4, 10**6, True, True)
    check_against_reference(q, k, v, causal=True, stats="all", sink_tokens=5, local_window=20, span=(60, 97))
    assert n > 1 and parted[0] == -(-200 // CONFIGS[name].kwargs["BLOCK_M"]) * 4 * n  # the launch was parted


@pytest.mark.parametrize("wide", [False, True], ids=["narrow", "wide"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_parted_walk_runs(parted, monkeypatch, case, wide, device):
    """Windows (narrow: every block masked; wide: an unmasked interior run), chunked prefill, padding, a key bias,
    no causal mask, parted on 32-key tiles."""
    if wide and "sliding_window" not in CASES[case][2]:
        pytest.skip("no window")
    _pin(monkeypatch, "32x32-transposed")
    _window_kind(monkeypatch, wide)
    q, k, v, kw = _inputs(case, device)
    check_against_reference(q, k, v, stats="all", **({"causal": True} | kw))


@pytest.mark.parametrize("finalize", [True, False], ids=["in-kernel-finalize", "torch-finalize"])
def test_decode_step_parted(parted, monkeypatch, finalize, device):
    """A few queries against a long key axis (16 parts: half its 32 key blocks; a decode step may take up to 64), with
    the key sums finalized in the kernel's last program or by torch after it (as past FINALIZE_MAX_LEN keys)."""
    _pin(monkeypatch, "32x16-split-tile")
    if not finalize:
        monkeypatch.setattr(launcher, "FINALIZE_MAX_LEN", 100)
    q, k, v = make(2, 4, 1, 3, 500, 32, torch.float32, device, seed=9)
    check_against_reference(q, k, v, causal=True, stats="all", sink_tokens=4, local_window=50)
    assert parted[0] == 2 * 4 * 16 and 16 > walk_parts.MAX_PARTS


def test_decode_step_in_64_parts(parted, monkeypatch, device):
    """One query per head against 2,100 keys (132 blocks of 16): the decode cap, 64 parts of two or three key blocks,
    every partial slot of PART used."""
    _pin(monkeypatch, "32x16-split-tile")
    q, k, v = make(1, 2, 1, 1, 2100, 32, torch.float32, device, seed=4)
    check_against_reference(q, k, v, causal=True, stats="all", sink_tokens=4, local_window=50)
    assert parted[0] == 2 * walk_parts.SHORT_MAX_PARTS


@pytest.mark.parametrize("name", PARTED)
def test_parted_equals_unparted(monkeypatch, name, device):
    """max_prob, argmax and the key sums bit for bit; entropy to float32 rounding (its sum is added by part)."""
    _pin(monkeypatch, name)
    g = torch.Generator().manual_seed(3)
    # small integers: every score is exact whatever the order of its products, so equal keys tie exactly; keys
    # 200-256 repeat keys 10-66, so many rows' best key comes again in a later part
    q = torch.randint(-2, 3, (1, 4, 257, 16), generator=g).float().to(device)
    k = torch.randint(-2, 3, (1, 4, 257, 16), generator=g).float()
    k[:, :, 200:] = k[:, :, 10:67]
    k = k.to(device)
    v = torch.randn(1, 4, 257, 16, generator=g).to(device)
    kw = dict(causal=True, stats=["max_prob", "argmax", "entropy", "key_mass", "key_mean", "sink_mass"],
              backend="triton")
    monkeypatch.setattr(walk_parts, "TARGET", 0)
    monkeypatch.setattr(walk_parts, "SHORT_ONLY", False)
    _, one = attention_with_stats(q, k, v, **kw)
    monkeypatch.setattr(walk_parts, "TARGET", 10**6)
    _, parted = attention_with_stats(q, k, v, **kw)
    for n in ("max_prob", "argmax", "key_mass", "key_mean", "sink_mass"):
        assert torch.equal(getattr(parted, n), getattr(one, n)), n
    torch.testing.assert_close(parted.entropy, one.entropy, atol=1e-6, rtol=1e-6)
    # the first of equal keys, as torch.argmax takes it
    assert torch.equal(parted.argmax, (q @ k.transpose(-1, -2)).masked_fill(
        torch.ones(257, 257, dtype=torch.bool, device=device).triu(1), float("-inf")).argmax(-1))


def test_carried_masses_config(parted, monkeypatch, device):
    """A config that carries the masses through its walk is not parted when masses are asked for (it compiles none
    of the parts' code then), and is parted without them."""
    meta = CONFIGS["64x64-carried-tile"].all_kwargs()
    _pin(monkeypatch, "64x64-carried-tile")
    q, k, v = make(1, 2, 2, 300, 300, 32, torch.float32, device, seed=1)
    assert walk_parts.n_parts(meta, 300, 300, 2, 10**6, True, True) == 1
    check_against_reference(q, k, v, causal=True, stats="all", sink_tokens=4, local_window=30)
    assert walk_parts.n_parts(meta, 300, 300, 2, 10**6, True, False) > 1
    check_against_reference(q, k, v, causal=True, stats=["max_prob", "argmax", "entropy", "key_mass", "key_mean"])


def test_proxy_tunes_the_real_calls_variant(tuned_as_on_gpu, monkeypatch, device):
    """A long call tuned on a shorter proxy: the proxy compiles and tunes the kernel variant (parted or not) of the
    real call, whose config is then cached, though the proxy alone would have been parted."""
    monkeypatch.setattr(walk_parts, "TARGET", 6)
    monkeypatch.setattr(walk_parts, "SHORT_ONLY", False)
    assert not walk_parts.may_part(150, 150, 4, 6, True) and walk_parts.may_part(64, 64, 4, 6, True)
    q, k, v = make(1, 4, 2, 150, 150, 32, torch.float32, device, seed=15)
    check_against_reference(q, k, v, causal=True, stats="all")
    assert tuned_as_on_gpu[-1] == (150, True), tuned_as_on_gpu


def test_tile_configs_fit_the_tickets(monkeypatch):
    """The combine tickets are sized for MIN_BLOCK_M-row tiles and the parted-or-not decision for MAX_BLOCK_M: every
    GPU tile config (trial ones included) lies between."""
    monkeypatch.setattr(triton_stats, "INTERPRET", False)
    monkeypatch.setattr(triton_stats, "TRIAL_CONFIGS", True)
    sizes = {c.kwargs["BLOCK_M"] for c in triton_stats._configs()} | {c.kwargs["BLOCK_M"] for c in CONFIGS.values()}
    assert walk_parts.MIN_BLOCK_M <= min(sizes) and max(sizes) <= walk_parts.MAX_BLOCK_M


def test_combine_fences_once_per_thread():
    """The combine's GPU-scope fences cost the parted walks 1.3-1.5x at 1k on the H100 while they were issued once per
    element of the argmax partials (16 per thread in the key-by-query layout: 34 fences in the PTX against the
    unparted kernel's 2; `docs/gpu/kspeed_notes.md`, round 17). Compiled for sm_90 on this CPU (the installed Triton),
    a parted kernel may add two fences (before and after its ticket), no more."""
    from helpers import sm90_compile_json

    unparted, parted = sm90_compile_json(
        "import json, sm90_registers as R; mods = R.load_kernels(); "
        "config = mods['triton_stats']._configs()[0]; assert config.kwargs['TRANSPOSE'] == 1; "
        "print(json.dumps([R.compile_stats(mods, config, R.VARIANTS['all'], head_dim=64, parted=p).asm['ptx']"
        ".count('fence.acq_rel.gpu') for p in (False, True)]))")
    assert unparted >= 1 and parted <= unparted + 2, (unparted, parted)
