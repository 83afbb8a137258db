"""Pruning curves (Michel et al. 2019, Fig. 3-style) and agreement between importance methods.

`pruning_curve` removes heads (zero output) from least to most important and measures the task loss after each
step, in one batched forward per chunk of steps; `random_pruning_curve` is the control with random orders.
`heads_removable` reads off how many heads can go for a given relative loss increase. `method_agreement` compares
the per-head scores of every pair of methods: Spearman rank correlation and top-k overlap.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from interp.head_mask import HeadMask
from interp.validate import hooked_model_arg

from .importance import _loss_fn, _rows_per_forward, _tile_batch

DEFAULT_FRACTIONS = tuple(i / 20 for i in range(20))  # 0 %, 5 %, ..., 95 % of the heads removed


def _order(scores: torch.Tensor) -> list[tuple[int, int]]:
    """Heads from least to most important (ties broken by position)."""
    L, H = scores.shape
    flat = scores.reshape(-1).float()
    idx = sorted(range(L * H), key=lambda i: (float(flat[i]), i))
    return [(i // H, i % H) for i in idx]


def _losses_after_removing(model, task, batch, order, counts: Sequence[int]) -> list[float]:
    L, H, b = model.cfg.n_layers, model.cfg.n_heads, len(batch)
    loss = _loss_fn(task)
    k = max(1, _rows_per_forward(model, batch) // b)
    out = []
    for start in range(0, len(counts), k):
        chunk = counts[start:start + k]
        xi = torch.ones(len(chunk), L, H)
        for j, c in enumerate(chunk):
            for (l, h) in order[:c]:
                xi[j, l, h] = 0
        tiled = _tile_batch(batch, len(chunk))
        mask = HeadMask(xi.repeat_interleave(b, 0).to(model.device))
        with torch.no_grad():
            per = loss(model.run_with_hooks(tiled.clean, interventions=[mask]), tiled).reshape(len(chunk), b)
        out.extend(float(v) for v in per.float().mean(1))
    return out


def _counts(n_heads: int, fractions) -> list[int]:
    fr = [float(f) for f in fractions]
    if any(not 0 <= f < 1 for f in fr):
        raise ValueError(f"fractions must lie in [0, 1), got {list(fractions)}")
    return sorted({int(round(f * n_heads)) for f in fr})


def pruning_curve(model, task, batch, scores: torch.Tensor, fractions=DEFAULT_FRACTIONS) -> pd.DataFrame:
    """Loss after removing the n least important heads by `scores` [layer, head] -> columns n_removed, fraction,
    loss, rel_increase."""
    hooked_model_arg(model, "pruning_curve")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (L, H):
        raise ValueError(f"scores must be a tensor [{L}, {H}] (layers x heads), got "
                         f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__}")
    counts = _counts(L * H, fractions)
    losses = _losses_after_removing(model, task, batch, _order(scores), counts)
    return _frame(counts, losses, L * H)


def random_pruning_curve(model, task, batch, fractions=DEFAULT_FRACTIONS, n_orders: int = 3,
                         seed: int = 0) -> pd.DataFrame:
    """The control: the same curve for random removal orders, averaged over `n_orders` orders."""
    hooked_model_arg(model, "random_pruning_curve")
    if n_orders < 1:
        raise ValueError(f"n_orders must be >= 1, got {n_orders}")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    counts = _counts(L * H, fractions)
    g = torch.Generator().manual_seed(seed)
    runs = []
    for _ in range(n_orders):
        perm = torch.randperm(L * H, generator=g).tolist()
        runs.append(_losses_after_removing(model, task, batch, [(i // H, i % H) for i in perm], counts))
    return _frame(counts, np.mean(runs, axis=0).tolist(), L * H)


def _frame(counts, losses, n_heads) -> pd.DataFrame:
    base = losses[0] if counts[0] == 0 else float("nan")
    df = pd.DataFrame({"n_removed": counts, "fraction": [c / n_heads for c in counts], "loss": losses})
    df["rel_increase"] = (df["loss"] - base) / abs(base)  # losses of higher-is-better metrics are negative
    return df


def heads_removable(curve: pd.DataFrame, tolerance: float = 0.05) -> int:
    """The most heads removed (at a measured step) with loss within (1 + tolerance) of the full model's."""
    if curve.empty or curve["n_removed"].iloc[0] != 0:
        raise ValueError("the curve must start at n_removed = 0 (the full model)")
    ok = curve[curve["rel_increase"] <= tolerance]
    # the first step that breaks the tolerance ends the run of acceptable steps
    bad = curve[curve["rel_increase"] > tolerance]
    limit = bad["n_removed"].min() if not bad.empty else float("inf")
    return int(ok[ok["n_removed"] < limit]["n_removed"].max())


def method_agreement(table: pd.DataFrame, top_frac: float = 0.1) -> pd.DataFrame:
    """Pairwise Spearman correlation and top-k overlap (k = top_frac of the heads) between the methods of a
    `head_importance` table (one model)."""
    if not {"method", "layer", "head", "score"} <= set(table.columns):
        raise ValueError("table must have columns method, layer, head, score (as head_importance returns)")
    if table["model"].nunique() > 1:
        raise ValueError("method_agreement compares methods on one model; filter the table by model first")
    wide = table.pivot_table(index=["layer", "head"], columns="method", values="score")
    k = max(1, int(round(top_frac * len(wide))))
    rows = []
    for a, b in combinations(wide.columns, 2):
        ra, rb = wide[a].rank(), wide[b].rank()
        rho = float(np.corrcoef(ra, rb)[0, 1])
        top_a = set(wide[a].nlargest(k).index)
        top_b = set(wide[b].nlargest(k).index)
        rows.append({"method_a": a, "method_b": b, "spearman": rho, f"top{k}_overlap": len(top_a & top_b) / k})
    return pd.DataFrame(rows)
