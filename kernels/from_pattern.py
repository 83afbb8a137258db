"""Statistics from an already materialised pattern (TransformerLens' `hook_pattern`, `output_attentions`):
the same definitions as the kernels, for models whose attention we do not run ourselves."""

from __future__ import annotations

import numpy as np
import torch

from .checks import _int_option, _names, outside_0_1, span_rows
from .stats import AttentionStats, finish_key_stats, stats_request


def _check_pattern(pattern: torch.Tensor) -> None:
    """A 4-D pattern with values: floating point, not on the meta device, no empty dimension, q_len <= k_len."""
    if pattern.device.type == "meta":
        raise ValueError("pattern is on the meta device (shape only, no values); pass a real pattern")
    if not pattern.dtype.is_floating_point:
        raise TypeError(f"pattern must be a floating-point tensor of attention probabilities, got {pattern.dtype}")
    b, h, lq, lk = pattern.shape
    if 0 in pattern.shape:
        raise ValueError(f"empty pattern: batch={b}, heads={h}, q_len={lq}, k_len={lk}; all must be >= 1")
    if lq > lk:
        raise ValueError(f"pattern has q_len ({lq}) > k_len ({lk}): queries are aligned to the end of the keys, so "
                         "q_len <= k_len")


def _valid_mask(name: str, mask, shape: tuple[int, int], device) -> torch.Tensor | None:
    """None, or a bool (or 0/1 integer) tensor of `shape` -> bool on `device`."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be None or a bool tensor {list(shape)}, got {type(mask).__name__}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must be a bool tensor [batch, {'q_len' if name == 'query_valid' else 'k_len'}] = "
                         f"{list(shape)}, got shape {tuple(mask.shape)}")
    if mask.dtype.is_floating_point or mask.dtype.is_complex or mask.device.type == "meta":
        raise TypeError(f"{name} must be a bool (or 0/1 integer) tensor with values, got {mask.dtype} on "
                        f"{mask.device}")
    if outside_0_1(mask).numel():
        raise ValueError(f"{name} must hold 0 / 1 (or be bool: True = valid), got values outside them")
    return mask.to(device=device, dtype=torch.bool)


def stats_from_pattern(
    pattern: torch.Tensor,  # [batch, head, q_len, k_len], rows sum to 1 (or 0 for rows that see nothing)
    stats="all",
    *,
    sink_tokens: int = 4,
    local_window: int = 64,
    span=None,
    query_valid: torch.Tensor | None = None,  # [batch, q_len] bool
    key_valid: torch.Tensor | None = None,  # [batch, k_len] bool: padding keys are seen by no query (key_count 0)
    causal: bool = True,
) -> AttentionStats:
    if not isinstance(pattern, torch.Tensor) or pattern.dim() != 4:
        raise ValueError(f"pattern must be a [batch, head, q_len, k_len] tensor, got {getattr(pattern, 'shape', pattern)}")
    _check_pattern(pattern)
    b, h, lq, lk = pattern.shape
    stats = stats_request(stats)  # a list, a set, a generator (read once, here): a tuple
    want = set(_names(stats, span is not None))  # (a group given no span drops span_mass; named, it is refused)
    if "lse" in want and (stats in ("all", "query") or (isinstance(stats, tuple) and "lse" not in stats)):
        want.discard("lse")  # a group asked for: every statistic a pattern gives (lse needs the raw scores)
    sink_tokens = min(_int_option("sink_tokens", sink_tokens, 0), lk)
    local_window = min(_int_option("local_window", local_window, 1), lk)  # (beyond k_len: every key, as in the kernels)
    if isinstance(causal, torch.Tensor) and causal.numel() == 1 and causal.dtype == torch.bool:
        causal = bool(causal)
    if isinstance(causal, int) and causal in (0, 1):  # (bools are ints)
        causal = bool(causal)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be True or False, got {causal!r}")
    if span is not None:
        span = span_rows(span, b, lk, pattern.device)
    query_valid = _valid_mask("query_valid", query_valid, (b, lq), pattern.device)
    key_valid = _valid_mask("key_valid", key_valid, (b, lk), pattern.device)
    p = pattern.float()
    off = lk - lq
    qpos = torch.arange(lq, device=p.device)[:, None] + off
    kpos = torch.arange(lk, device=p.device)[None, :]
    st = AttentionStats()
    seen = p.sum(-1) > 0
    if "lse" in want:
        raise ValueError("lse cannot be recovered from a pattern (it needs the raw scores)")
    if want & {"max_prob", "argmax"}:
        mp, am = p.max(-1)
        if "max_prob" in want:
            st.max_prob = mp
        if "argmax" in want:
            st.argmax = am.masked_fill(~seen, -1)
    if "entropy" in want:
        st.entropy = -torch.special.xlogy(p, p).sum(-1)
    if "sink_mass" in want:
        st.sink_mass = p[..., :sink_tokens].sum(-1)
    if "local_mass" in want:
        d = qpos - kpos
        st.local_mass = (p * ((d >= 0) & (d < local_window))).sum(-1)
    if "span_mass" in want:  # [start, end) per batch row
        start, end = (span[:, i, None, None, None] for i in (0, 1))  # [batch, 1, 1, 1] each
        st.span_mass = (p * ((kpos >= start) & (kpos < end))).sum(-1)
    if want & {"key_mass", "key_mean", "key_count"}:
        qv = torch.ones(b, lq, dtype=torch.bool, device=p.device) if query_valid is None else query_valid.bool()
        w = p * qv[:, None, :, None]
        mass = w.sum(-2)
        visible = (kpos <= qpos) if causal else torch.ones(lq, lk, dtype=torch.bool, device=p.device)
        seen_by = visible[None, None] & qv[:, None, :, None]  # [batch, 1, q, k]
        if key_valid is not None:
            seen_by = seen_by & key_valid.bool()[:, None, None, :]
        count = seen_by.sum(-2).float().expand(b, h, lk)
        finish_key_stats(st, want, mass, count)
    return st
