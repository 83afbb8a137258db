"""Statistics from an already materialised pattern (TransformerLens' `hook_pattern`, `output_attentions`):
the same definitions as the kernels, for models whose attention we do not run ourselves."""

from __future__ import annotations

import torch

from .stats import AttentionStats, finish_key_stats, normalize_stats


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
    want = set(normalize_stats(stats))
    if span is None:
        want.discard("span_mass")
    p = pattern.float()
    b, h, lq, lk = p.shape
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
    if "span_mass" in want:
        start, end = span
        st.span_mass = p[..., start:end].sum(-1)
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
