"""Attention with per-head statistics and no n x n maps: Triton kernels, a PyTorch reference, one API.

Installed as `interp.kernels` (never as a top-level `kernels`, which is another PyPI package's import name).
"""

from .api import BACKENDS, attention_with_stats, pick_backend
from .checks import AttnSpec, check_inputs
from .reference import reference_attention
from .from_pattern import stats_from_pattern
from .stats import ALL_STATS, KEY_STATS, QUERY_STATS, AttentionStats, normalize_stats

__all__ = [
    "ALL_STATS", "AttentionStats", "AttnSpec", "BACKENDS", "KEY_STATS", "QUERY_STATS", "attention_with_stats",
    "check_inputs", "normalize_stats", "pick_backend", "reference_attention", "stats_from_pattern",
]
