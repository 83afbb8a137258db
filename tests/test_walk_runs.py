"""Statistics where a query tile's window, sink, local, span, padding and bias ranges cross key-block edges, against
the PyTorch reference.

Each tile walks its key blocks in runs: unmasked blocks every query sees in full, masked ones at the causal diagonal
and the ragged end, every block under a padding mask, and under a sliding window either every block (a narrow window,
HAS_WINDOW = 1) or a masked lower edge, an unmasked interior and the masked diagonal (a wide one, HAS_WINDOW = 2;
`triton_forward.window_kind`, `docs/gpu/kspeed_notes.md` rounds 13-14). Every windowed case runs both ways (the
`wide` parameter moves `WIDE_WINDOW` below or above the case's window), on both tile orientations.
"""

import pytest
import torch

triton = pytest.importorskip("triton")

from interp.kernels import launcher, triton_forward  # noqa: E402
from test_kernel_triton import check_against_reference, make  # noqa: E402
from test_stats_configs import CONFIGS  # noqa: E402

# (q_len, k_len, keyword arguments): sink and local ranges longer than a block, chunked prefill, windows whose
# tiles have unmasked blocks in the middle, padding, a key bias, no causal mask
CASES = {
    "long-sink-local": (200, 200, dict(sink_tokens=70, local_window=100)),
    "chunked-prefill-window": (45, 170, dict(sliding_window=100, sink_tokens=3, local_window=20, span=(100, 140))),
    # queries at 255-299 under a 200-key window: keys [128, 256) are inside every query's window (a wide window's
    # unmasked interior, after a q_offset of 255)
    "chunked-prefill-interior": (45, 300, dict(sliding_window=200, sink_tokens=4, local_window=30, span=(60, 280))),
    "window-interior": (260, 260, dict(sliding_window=150, sink_tokens=4, local_window=64, span=(30, 200))),
    "window-padding": (200, 200, dict(sliding_window=90, sink_tokens=2, local_window=40, pad=True)),
    "window-bias": (200, 200, dict(sliding_window=140, sink_tokens=4, local_window=30, bias=True)),
    "noncausal": (130, 150, dict(causal=False, sink_tokens=5, local_window=33, span=(20, 90))),
}


def _inputs(case, device):
    lq, lk, kw = CASES[case]
    kw = dict(kw)
    q, k, v = make(2, 4, 2, lq, lk, 32, torch.float32, device, seed=len(case))
    if kw.pop("pad", False):
        mask = torch.ones(2, lk, dtype=torch.bool)
        mask[0, :37] = False
        mask[1, lk - 20:] = False
        kw["attention_mask"] = mask.to(device)
    if kw.pop("bias", False):
        bias = torch.zeros(2, 4, lk)
        bias[:, 1, :5] = float("-inf")  # the sink keys hidden from one head
        bias[1, 2, 60:90] = -2.0
        kw["key_bias"] = bias.to(device)
    return q, k, v, kw


# every case on the key-by-query 64-key tiles; the two that cross the most block edges also on 32-key ones and on
# query-by-key tiles with the masses carried through the walk
RUNS = [(c, "64x64-transposed") for c in sorted(CASES)] + [
    (c, cfg) for c in ("long-sink-local", "window-padding") for cfg in ("32x32-transposed", "64x64-carried-tile")] + [
    # windows with an unmasked interior on the query-by-key walk, masses carried and split
    (c, cfg) for c in ("window-interior", "window-bias", "chunked-prefill-interior")
    for cfg in ("64x64-carried-tile", "64x64-split-groups")]
RUNS = [(c, cfg, wide) for c, cfg in RUNS for wide in ((False, True) if "sliding_window" in CASES[c][2] else (False,))]


def _window_kind(monkeypatch, wide: bool):
    """Every window wide (an unmasked interior run) or every window narrow (every block masked)."""
    monkeypatch.setattr(triton_forward, "WIDE_WINDOW", 1 if wide else 1 << 40)


@pytest.mark.parametrize("case,config,wide", RUNS)
def test_every_statistic_whichever_run_a_key_falls_in(case, config, wide, device, monkeypatch):
    monkeypatch.setattr(launcher, "_tuned", launcher.PinnedConfig(CONFIGS[config]))
    _window_kind(monkeypatch, wide)
    q, k, v, kw = _inputs(case, device)
    check_against_reference(q, k, v, stats="all", **kw)
    check_against_reference(q, k, v, stats=["local_mass", "entropy"], **kw)  # one row statistic beside a mass


@pytest.mark.parametrize("wide", [False, True], ids=["narrow", "wide"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("window", [150, 200, 63])
def test_sliding_window_tiles_with_unmasked_blocks(window, dtype, wide, device, monkeypatch):
    """Windows wider than two blocks leave blocks inside every query's window (an unmasked run when the window
    counts as wide; every windowed block masked when narrow): the forward kernel (the output: SDPA takes no window)
    and the statistics walks must give the reference's values either way."""
    _window_kind(monkeypatch, wide)
    # (with 64-key blocks, the last tile's queries [256, 320) all see the keys from ceil((320 - window) / 64) * 64 to
    # 256: two blocks at window 200, one at 150, none at 63)
    q, k, v = make(1, 4, 2, 320, 320, 64, dtype, device, seed=window)
    check_against_reference(q, k, v, sliding_window=window, stats="all", sink_tokens=4, local_window=48,
                            span=(100, 180))


def test_window_kind_picks_the_walk_from_the_window_width(monkeypatch):
    monkeypatch.setattr(triton_forward, "WIDE_WINDOW", 2048)
    assert [triton_forward.window_kind(w) for w in (None, 1, 2047, 2048, 10 ** 6)] == [0, 1, 1, 2, 2]
    q = torch.zeros(1, 2, 8, 16)
    for window, kind in ((None, 0), (512, 1), (4096, 2)):
        spec = launcher.AttnSpec(batch=1, heads=2, kv_heads=2, q_len=8, k_len=8, head_dim=16, q_offset=0,
                                 causal=True, scale=0.25, sliding_window=window, key_valid=None, key_bias=None,
                                 stats=("entropy",), sink_tokens=4, local_window=64, span=None)
        assert launcher._flags(spec, q)["HAS_WINDOW"] == kind


def test_wide_window_env_is_checked():
    assert triton_forward.wide_window_from_env(None) == 2048 and triton_forward.wide_window_from_env("4096") == 4096
    for bad in ("abc", "0", "-5", "2.5", ""):
        with pytest.raises(ValueError, match="INTERP_WIDE_WINDOW must be a positive number of keys"):
            triton_forward.wide_window_from_env(bad)
