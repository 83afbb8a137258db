"""Non-finite results: say where the NaN/Inf come from instead of writing a table of NaN."""

from __future__ import annotations

import torch


def first_nonfinite(model, tokens) -> str | None:
    """The first hook point (embedding, then each block's residual stream, then the logits) whose activations on
    `tokens` hold NaN/Inf, or None when every one is finite. Uses `run_with_cache(names=...)`."""
    L = model.cfg.n_layers
    names = ["hook_embed"] + [f"blocks.{l}.hook_resid_post" for l in range(L)]
    logits, cache = model.run_with_cache(tokens, names=names)
    for name in names:
        if name in cache and not torch.isfinite(cache[name]).all():
            return name
    if not torch.isfinite(logits).all():
        return "the logits"
    return None


def require_finite(model, scores: dict, probe, allowed_nan=()) -> None:
    """ValueError naming where activations first go non-finite, when any score outside `allowed_nan` is NaN/Inf.
    scores: {name: [layer, head] tensor}; probe: token ids for the diagnostic pass (kept short)."""
    bad = {k: v for k, v in scores.items() if k not in allowed_nan and not torch.isfinite(v).all()}
    if not bad:
        return
    name, v = next(iter(bad.items()))
    l, h = (~torch.isfinite(v)).nonzero()[0].tolist()
    where = first_nonfinite(model, probe)
    if where is not None:
        raise ValueError(f"{model.name}: activations become non-finite (NaN/Inf) at {where}, so {name} and "
                         f"{len(bad) - 1} other score(s) are NaN; the weights are finite, so check the model's dtype "
                         "and scale (float16 overflow?)")
    raise ValueError(f"{model.name}: {name} is non-finite for layer {l} head {h} although every activation on a "
                     "short probe is finite")
