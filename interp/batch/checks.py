"""Checks of the batch jobs' inputs and results: non-finite results (say where the NaN/Inf come from instead of
writing a table of NaN), seeds and timeouts, and the validators a job's `check` uses on a shard read back from disk
(--resume)."""

from __future__ import annotations

import math
import numbers

import torch

SEED_LIMIT = 2**63  # seeds are 0 <= seed < 2**63 (torch.Generator.manual_seed and numpy take them)


def first_nonfinite(model, tokens) -> str | None:
    """The first hook point (embedding, then each block's residual stream, then the logits) whose activations on
    `tokens` hold NaN/Inf, or None when every one is finite. Uses `run_with_cache(names=...)`."""
    names = ["hook_embed"] + [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
    logits, cache = model.run_with_cache(tokens, names=names)
    for name in names:
        if name in cache and not torch.isfinite(cache[name]).all():
            return name
    if not torch.isfinite(logits).all():
        return "the logits"
    return None


def check_activations(model, probe) -> None:
    """ValueError naming the first layer whose activations on `probe` (a short [batch, pos] token tensor) are
    NaN/Inf: a model that computes NaN is refused before any statistic is written."""
    where = first_nonfinite(model, probe)
    if where is not None:
        raise ValueError(f"{model.name}: activations become non-finite (NaN/Inf) at {where} on a short probe, "
                         "although the weights are finite; check the model's dtype and weight scale (overflow?)")


def check_scores(model, scores: dict, allowed_nan=()) -> None:
    """ValueError naming the first score, layer and head that is NaN/Inf (scores outside `allowed_nan`).
    scores: {name: [layer, head] tensor}."""
    for name, v in scores.items():
        if name in allowed_nan or torch.isfinite(v).all():
            continue
        l, h = (~torch.isfinite(v)).nonzero()[0].tolist()
        raise ValueError(f"{model.name}: {name} is non-finite (NaN/Inf) for layer {l} head {h}, although the "
                         "model's activations on a short probe are finite")


def check_seed(seed, name: str = "seed") -> int:
    """A seed for the jobs' random prompts: an int (NumPy ints too, returned as int) with 0 <= seed < 2**63, else a
    ValueError naming `name`."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {seed!r}")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must be between 0 and 2**63 - 1 = {SEED_LIMIT - 1}, got {seed}")
    return int(seed)


def check_timeout(timeout, name: str = "ray_timeout") -> float:
    """A timeout in seconds: a real number with 0 < timeout < inf, else a TypeError/ValueError naming `name`. (Huge
    values are fine: waits are capped at threading.TIMEOUT_MAX where they happen.)"""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{name} must be a positive number of seconds, got {type(timeout).__name__} {timeout!r:.60}")
    if not 0 < timeout < math.inf:  # (NaN fails this too)
        raise ValueError(f"{name} must be a positive number of seconds, got {float(timeout):g}")
    return float(timeout)


# ---------------------------------------------------------------------------------------------- shard results
# What a job's `check` uses to validate a finished shard's result read back from disk (--resume): a ValueError
# saying what is wrong, which the runner turns into "recomputing it" (as for an unreadable file).
RANGE_SLACK = 0.01  # scores computed in half precision may step a little outside their exact range


def describe(value) -> str:
    """A short description of a JSON value's type and size, for messages."""
    if isinstance(value, list):
        if value and all(isinstance(r, list) for r in value):
            lengths = sorted({len(r) for r in value})
            return f"a [{len(value)}][{'/'.join(map(str, lengths[:3]))}{'/...' if len(lengths) > 3 else ''}] list"
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:6]}"
    return f"{type(value).__name__} {value!r:.40}"


def check_numbers(values, what: str, *, low=None, high=None, nan_ok: bool = False, finite: bool = True,
                  whole: bool = False, where=lambda i: f"[{i}]") -> None:
    """ValueError naming the first entry of `values` (a list from JSON) that is not a number, is NaN (unless
    `nan_ok`), infinite (when `finite`), not whole (when `whole`) or outside [low, high]. `where(i)` names entry i."""
    if not isinstance(values, list):
        raise ValueError(f"{what} must be a list of numbers, got {describe(values)}")
    for i, x in enumerate(values):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise ValueError(f"{what}{where(i)} is {type(x).__name__} {x!r:.40}, not a number")
        if math.isnan(x):
            if nan_ok:
                continue
            raise ValueError(f"{what}{where(i)} is NaN")
        if finite and math.isinf(x):
            raise ValueError(f"{what}{where(i)} is {x}, not a finite number")
        if whole and x != math.floor(x):
            raise ValueError(f"{what}{where(i)} is {x:g}, not a whole number")
        if (low is not None and x < low) or (high is not None and x > high):
            span = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
            raise ValueError(f"{what}{where(i)} is {x:g}, outside its range {span}")


def check_grid(value, what: str, shape=None, *, unit: tuple[float, float] | None = None, **kw) -> tuple[int, int]:
    """`value` must be a [layer][head] list of numbers (of `shape` when given; else any rectangular shape) ->
    (layers, heads). `unit`: the documented range (low, high), allowed RANGE_SLACK either side; `kw` as for
    check_numbers."""
    if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
        raise ValueError(f"{what} must be a [layer][head] list, got {describe(value)}")
    L, H = shape if shape is not None else (len(value), len(value[0]))
    if len(value) != L or any(len(r) != H for r in value) or H < 1:
        raise ValueError(f"{what} must be a [{L}][{H}] list (layers x heads), got {describe(value)}")
    if unit is not None:
        kw = dict(kw, low=unit[0] - RANGE_SLACK, high=None if unit[1] is None else unit[1] + RANGE_SLACK)
    check_numbers([x for r in value for x in r], what, where=lambda i: f" at layer {i // H} head {i % H}", **kw)
    return L, H


def check_keys(obj, what: str, required=(), optional=(), extra_ok: bool = False) -> dict:
    """`obj` must be a JSON object holding every key of `required` and (unless `extra_ok`) no key outside
    required + optional."""
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be an object, got {describe(obj)}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ValueError(f"{what} has no {missing[0]!r}")
    extra = [] if extra_ok else [k for k in obj if k not in required and k not in optional]
    if extra:
        raise ValueError(f"{what} has an unexpected key {extra[0]!r}")
    return obj


def check_count(value, what: str, low: int = 0, high: int | None = None) -> int:
    """`value` must be an int in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{what} must be an integer {span}, got {describe(value)}")
    return value
