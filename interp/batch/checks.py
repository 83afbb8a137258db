"""Non-finite results: say where the NaN/Inf come from instead of writing a table of NaN."""

from __future__ import annotations

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
    """A seed for the jobs' random prompts: an int with 0 <= seed < 2**63, else a ValueError naming `name`."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{name} must be an int, got {seed!r}")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must be between 0 and 2**63 - 1 = {SEED_LIMIT - 1}, got {seed}")
    return seed
