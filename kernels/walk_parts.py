"""Parts: a short call's statistics walks split over several programs each, so that few heads fill the GPU.

A statistics call runs one program per (query block, batch x head), and each walks every key its queries see. With
few heads and few tokens there are fewer programs than the GPU holds at once, and the call lasts as long as its
longest walk: 9 heads at 1k tokens make 144 programs of 64 queries for 132 SMs, and the last query block walks all
1,024 keys while most SMs idle (`docs/gpu/kspeed_notes.md`, rounds 15-16: 9x64 takes ~2.2x SDPA's device time at
1k-2k against ~1.9x for 32 heads). Parting each query block's walk into n consecutive key ranges, one program each,
multiplies the programs by n (up to 8; 64 for a decode step) and divides the longest walk by n; the last part of a
block to finish combines the partial row statistics in key order (`triton_stats_rows._combine_parts`: deterministic,
and the same argmax as one walk; the entropy's sum is added in another order, so it can differ from an unparted call
in its last bits). Key sums are atomics already; part 0 alone walks the sink / local / span masses, and the key
counts are spread over every part.

By default only short-query calls part: at most MAX_BLOCK_M queries (a decode step, a short chunk) against at least
SHORT_MIN_KEYS keys, aiming at 4 programs per SM. There the unparted call is a handful of programs walking the whole
cache: parted, a decode step with every statistic ran 2.4-11x faster on the H100 (round 18,
`docs/gpu/kspeed_notes.md`). Longer calls stay unparted: there, with the combine fixed, parting 1k-2k prefills (9x64,
4x256) won one cell of eight and was up to 13 % slower in others.
INTERP_STATS_PARTS=auto parts every call with fewer programs than 4 per SM; an integer >= 2 sets that target for
every call; off or 0: never; unset or "short": the default.
"""

from __future__ import annotations

import functools
import os

import torch

ENV = "INTERP_STATS_PARTS"
MAX_PARTS = 8
SHORT_MAX_PARTS = 64  # ... for a call of at most MAX_BLOCK_M queries (a decode step: one program per head unparted)
MIN_BLOCK_M = 16  # no tile config has fewer query rows: the combine tickets are sized for it
MAX_BLOCK_M = 128  # nor more: with it a call has the fewest programs
FULL_WALK = ("max_prob", "argmax", "entropy", "key_mass", "key_mean")  # the statistics that walk every visible key
MASSES = ("sink_mass", "local_mass", "span_mass")  # the statistics in walks of their own (part 0's)
PER_SM = 4  # programs per SM the default parting aims at
SHORT_MIN_KEYS = 1024  # the default parts only calls of at most MAX_BLOCK_M queries against at least this many keys


def mode_from_env(value: str | None) -> tuple[int | None, bool]:
    """INTERP_STATS_PARTS -> (target, short_only). target: 0 (never part), None (4 programs per SM) or a number of
    programs; short_only: only calls of at most MAX_BLOCK_M queries against at least SHORT_MIN_KEYS keys part."""
    v = "" if value is None else value.strip().lower()
    if v in ("", "short"):
        return None, True
    if v in ("0", "off"):
        return 0, False
    if v == "auto":
        return None, False
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 2:
        raise ValueError(f"{ENV}={value!r}: use 'short' (the default), 'auto', 'off' / 0, or a number of programs >= 2")
    return n, False


TARGET, SHORT_ONLY = mode_from_env(os.environ.get(ENV))


@functools.lru_cache(maxsize=16)
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def target_programs(device: torch.device, per_sm: int = PER_SM) -> int:
    """How many programs a statistics call should have before its walks are parted (0: never part): per_sm per SM
    unless INTERP_STATS_PARTS sets a number or turns parting off."""
    if TARGET is None:
        return per_sm * _sm_count(device) if device.type == "cuda" else 0
    return TARGET


def n_parts(meta: dict, lq: int, lk: int, n_bh: int, target: int, full: bool, masses: bool) -> int:
    """Parts per query block for a tile config's `meta`: 1 unless the call has fewer programs than `target` and
    walks every key (`full`); never for a config that carries the masses through its full walk."""
    if target <= 0 or not full or (masses and not (meta["SPLIT_MASSES"] or meta["TRANSPOSE"])):
        return 1
    programs = -(-lq // meta["BLOCK_M"]) * n_bh
    if programs >= target:
        return 1
    key_blocks = -(-lk // meta["BLOCK_N"])
    return max(1, min(max_parts(lq), target // programs, key_blocks // 2))


def max_parts(lq: int) -> int:
    """The most parts a query block's walk takes: 8, or 64 for a call of at most MAX_BLOCK_M queries (a decode step,
    whose few programs each walk the whole cache: 9 heads against 128k keys are 9 walks of 2,048 key blocks). PART
    holds that many partials per row."""
    return SHORT_MAX_PARTS if lq <= MAX_BLOCK_M else MAX_PARTS


def short_query(lq: int, lk: int) -> bool:
    """A call the default parts: at most MAX_BLOCK_M queries against at least SHORT_MIN_KEYS keys."""
    return lq <= MAX_BLOCK_M and lk >= SHORT_MIN_KEYS


def may_part(lq: int, lk: int, n_bh: int, target: int, full: bool, short_only: bool = False) -> bool:
    """Whether some tile config parts this call (then its kernels compile the parts' code: PARTED)."""
    if short_only and not short_query(lq, lk):
        return False
    return target > 0 and full and -(-lq // MAX_BLOCK_M) * n_bh < target


def call_may_part(stats, lq: int, lk: int, n_bh: int, device) -> bool:
    """`may_part` for a call asking for `stats` under INTERP_STATS_PARTS (False at once for a prefill by default:
    the hot path of short calls; the GPU's program target is looked up only past that)."""
    if TARGET == 0 or (SHORT_ONLY and not short_query(lq, lk)):
        return False
    return may_part(lq, lk, n_bh, target_programs(device), any(n in stats for n in FULL_WALK))


def parts_of_call(stats, lq: int, lk: int, n_bh: int, device):
    """parts(meta) -> `n_parts` of this call for a tile config, for a call that compiles the parts' code."""
    return functools.partial(n_parts, lq=lq, lk=lk, n_bh=n_bh, target=target_programs(device),
                             full=any(n in stats for n in FULL_WALK), masses=any(n in stats for n in MASSES))


def n_tickets(lq: int, n_bh: int) -> int:
    """Combine tickets a call that may be parted needs: one per (batch x head, query block) of the smallest tile. The
    launcher takes them from the zero fill of the key sums (int64), so they cost no fill of their own."""
    return n_bh * -(-lq // MIN_BLOCK_M)


def partials(lq: int, n_bh: int, device):
    """PART for a call that may be parted: the partial row statistics [max_parts(lq), 3, n_bh * lq] float32 (never
    read before a part writes them: not filled)."""
    return torch.empty(max_parts(lq) * 3 * n_bh * lq, device=device, dtype=torch.float32)
