"""What `attention_with_stats` can return: the statistics, their shapes, and how a request is spelled.

Per query row (`[batch, heads, q_len]`), computed from the row's log-sum-exp (after the forward pass):
    lse        log-sum-exp of the scaled scores (natural log); -inf on a row that sees no key
    max_prob   the largest attention probability of the row
    argmax     key index of that probability (int64; -1 on a row that sees no key)
    entropy    -sum p log p in nats (= lse - sum p*s)
    sink_mass  mass on the first `sink_tokens` keys (with `segment_ids`: of the query's own segment)
    local_mass mass on the keys j with qpos - j < local_window (the query itself included)
    span_mass  mass on keys in [span_start, span_end)  (span given per batch row)

Per key column (`[batch, heads, k_len]`), summed over the queries in the same pass:
    key_mass   sum over queries of the normalised probability the key receives
    key_mean   key_mass divided by the number of (non-padding) queries that can see the key:
               alpha_k of "When Attention Sink Emerges"; NaN where no query sees the key
    key_count  that number of queries (float32, so it can be summed over prompts)

Rows at padding positions still get per-query statistics, but never count towards key statistics.

Rows with nothing to attend to (every key they could see is padding, outside the window, or hidden by a -inf
key_bias such as a KeyMask over all of them) get, on every backend:
    output 0, lse -inf, max_prob 0, argmax -1, entropy 0, sink/local/span mass 0,
and they add nothing to key_mass or key_count. Such rows are recognised by lse == -inf (or argmax == -1); entropy
is 0 rather than NaN so that averages over rows that include them (left-padding positions, say) stay finite.

Rows whose scores hold NaN (NaN or Inf in q or k, an overflow upstream) are not mistaken for either: on every
backend they get lse NaN, NaN for every float statistic and argmax -1, and they add nothing to key_mass (key_count,
which is geometry, still counts them; so key_mean = key_mass / key_count reads low there: check lse for NaN). The
Triton backend treats rows with |lse| >= 1e5 (`triton_stats.LSE_LIMIT`) the same way: scores that large leave
p = exp(s - lse) without float32 precision; the reference, which normalises by the row's max, stays exact there.
A score that overflows float32 to -inf from finite inputs (|q.k| past 3e38: entries near 1e20) hides its key on
every backend, except for the Triton backend's entropy, which reads NaN on such a row (the walk adds 0 * -inf and
cannot tell what was lost); the fused decode walk keeps it exact.
key_bias values <= -1e30 or at their dtype's minimum (torch.finfo(dtype).min masks, float16's -65504 included) hide
their key, as -inf does; NaN or +inf biases are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from collections.abc import Mapping
from typing import Iterable

import torch

QUERY_STATS = ("lse", "max_prob", "argmax", "entropy", "sink_mass", "local_mass", "span_mass")
KEY_STATS = ("key_mass", "key_mean", "key_count")
ALL_STATS = QUERY_STATS + KEY_STATS

_GROUPS = {
    "all": ALL_STATS,
    "query": QUERY_STATS,
    "key": KEY_STATS,
    "none": (),
}


@dataclass
class AttentionStats:
    """Statistics of one attention call; a field is None unless it was requested. Read one as an attribute
    (`st.entropy`) or by name (`st["entropy"]`, like `dict(st.items())`: a KeyError for one not computed)."""

    lse: torch.Tensor | None = None  # [batch, head, query_pos] float32
    max_prob: torch.Tensor | None = None  # [batch, head, query_pos] float32
    argmax: torch.Tensor | None = None  # [batch, head, query_pos] int64
    entropy: torch.Tensor | None = None  # [batch, head, query_pos] float32
    sink_mass: torch.Tensor | None = None  # [batch, head, query_pos] float32
    local_mass: torch.Tensor | None = None  # [batch, head, query_pos] float32
    span_mass: torch.Tensor | None = None  # [batch, head, query_pos] float32
    key_mass: torch.Tensor | None = None  # [batch, head, key_pos] float32
    key_mean: torch.Tensor | None = None  # [batch, head, key_pos] float32
    key_count: torch.Tensor | None = None  # [batch, head, key_pos] float32

    def items(self):
        """(name, tensor) for every statistic that was computed."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    def requested(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.items())

    def keys(self) -> tuple[str, ...]:
        """The names of the statistics that were computed (those `items()` gives)."""
        return self.requested()

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, name) -> bool:
        return name in self.keys()

    def __getitem__(self, name: str) -> torch.Tensor:
        value = getattr(self, name, None) if isinstance(name, str) and name in ALL_STATS else None
        if value is not None:
            return value
        computed = list(self.keys())
        if isinstance(name, str) and name in ALL_STATS:
            raise KeyError(f"statistic {name!r} was not computed in this call (computed: {computed}); ask for it "
                           f"with stats=[..., {name!r}]")
        import difflib

        close = difflib.get_close_matches(str(name), ALL_STATS, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"no statistic named {name!r}{hint}; the statistics are {list(ALL_STATS)}, of which this call "
                       f"computed {computed}")


def stats_request(stats):
    """A `stats` argument as the callers of normalize_stats read it: None, a string or a tuple as given; any other
    iterable read once into a tuple (a generator can be read only once, and callers look at the request twice).
    Bytes and mappings are refused here: iterated, they would give numbers or a dict's keys (its values ignored)."""
    if stats is None or isinstance(stats, (str, tuple)):
        return stats
    if isinstance(stats, (bytes, bytearray)):
        raise TypeError(f"stats must be a string or an iterable of strings, got {type(stats).__name__} "
                        f"{bytes(stats)!r:.40}; decode it first")
    if isinstance(stats, Mapping):
        raise TypeError(f"stats must be a string or an iterable of strings, got a {type(stats).__name__} "
                        f"{stats!r:.60}; pass the names wanted (e.g. [n for n, on in d.items() if on])")
    try:
        return tuple(stats)
    except TypeError:  # not iterable: normalize_stats says what is wrong
        return stats


def normalize_stats(stats: str | Iterable[str] | None) -> tuple[str, ...]:
    """Turn a request ("all", "query", "key", "none", a name, or names) into a tuple of statistic names.

    `key_mean` needs `key_count` and `key_mass`; they are added so the caller can always rely on them.
    """
    stats = stats_request(stats)
    if stats is None:
        return ()
    if isinstance(stats, str):
        if stats in _GROUPS:
            names = _GROUPS[stats]
        else:
            names = (stats,)
    else:
        try:
            names = tuple(stats)
        except TypeError:
            raise TypeError(f"stats must be a string or an iterable of strings, got {type(stats).__name__}") from None
        expanded: list[str] = []
        for n in names:
            if not isinstance(n, str):
                raise TypeError(f"stats must contain strings, got {type(n).__name__}")
            expanded.extend(_GROUPS.get(n, (n,)))
        names = tuple(expanded)
    unknown = [n for n in names if n not in ALL_STATS]
    if unknown:
        raise ValueError(
            f"unknown statistic(s) {unknown}; allowed: {list(ALL_STATS)} or one of {list(_GROUPS)}"
        )
    wanted = set(names)
    if "key_mean" in wanted:
        wanted |= {"key_mass", "key_count"}
    return tuple(n for n in ALL_STATS if n in wanted)


def finish_key_stats(st: AttentionStats, want, mass: torch.Tensor, count: torch.Tensor) -> AttentionStats:
    """Fill key_mass / key_count / key_mean (mass over count, NaN where no query sees the key) as requested."""
    if "key_mass" in want:
        st.key_mass = mass
    if "key_count" in want:
        st.key_count = count.contiguous()
    if "key_mean" in want:
        st.key_mean = torch.where(count > 0, mass / count.clamp_min(1), torch.full_like(mass, float("nan")))
    return st
