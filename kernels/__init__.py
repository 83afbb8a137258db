"""Attention with per-head statistics and no n x n maps: Triton kernels, a PyTorch reference, one API.

Installed as `interp.kernels` (never as a top-level `kernels`, which is another PyPI package's import name).
"""


def _pypi_kernels():  # pragma: no cover - exercised in a subprocess by tests/test_packaging.py
    """PyPI's `kernels` module, imported with this checkout's root taken off sys.path, or None if not installed.

    This folder is found as a top-level `kernels` only when a checkout's root is on sys.path (`python -m ...` or
    `python -c` run from the repository root). PyPI's `kernels` is a dependency of transformers (>= 5.25), which
    imports it by that name: it must win. The import machinery hands the importer whatever sys.modules holds once
    this file has run, so putting PyPI's module there completes `import kernels` with it."""
    import importlib
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    this = sys.modules.pop("kernels")
    try:
        real = importlib.import_module("kernels")
    except ImportError:
        real = None
    finally:
        sys.path[:] = saved
    sys.modules["kernels"] = this if real is None else real
    return real


if __name__ != "kernels" or _pypi_kernels() is None:
    from .api import BACKENDS, attention_with_stats, pick_backend, stats_from_lse
    from .checks import AttnSpec, check_inputs
    from .reference import reference_attention
    from .from_pattern import stats_from_pattern
    from .stats import ALL_STATS, KEY_STATS, QUERY_STATS, AttentionStats, normalize_stats

__all__ = [
    "ALL_STATS", "AttentionStats", "AttnSpec", "BACKENDS", "KEY_STATS", "QUERY_STATS", "attention_with_stats",
    "check_inputs", "normalize_stats", "pick_backend", "reference_attention", "stats_from_lse", "stats_from_pattern",
]
