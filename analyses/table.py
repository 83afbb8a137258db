"""The tidy per-head table: one row per layer x head, score columns, and a primary label."""

from __future__ import annotations

import pandas as pd
import torch

LABELS = ("sink", "induction", "previous_token", "duplicate_token", "local", "diffuse", "mixed")

# A head's primary label is the first rule it passes, in this order (thresholds calibrated on the toy models'
# known heads; see README). A head can score high on several roles: the columns keep every score.
DEFAULT_THRESHOLDS = dict(induction_score=0.3, previous_token_score=0.4, duplicate_token_score=0.3,
                          sink_score=0.3, local_score=0.7, diffuseness=0.7)


def label_head(row: dict, thresholds: dict = DEFAULT_THRESHOLDS) -> str:
    t = thresholds

    def hi(name):
        v = row.get(name)
        return v is not None and v == v and v >= t[name]  # NaN-safe

    if hi("induction_score"):
        return "induction"
    if hi("previous_token_score"):
        return "previous_token"
    if hi("duplicate_token_score"):
        return "duplicate_token"
    if hi("sink_score"):
        return "sink"
    if hi("local_score"):
        return "local"
    if hi("diffuseness"):
        return "diffuse"
    return "mixed"


def head_table(scores: dict[str, torch.Tensor], model_name: str = "", thresholds: dict | None = None) -> pd.DataFrame:
    """{score name: [layer, head] tensor} -> DataFrame(model, layer, head, <scores>, label)."""
    shapes = {tuple(v.shape) for v in scores.values()}
    if len(shapes) != 1:
        raise ValueError(f"all scores must be [layer, head] of one shape, got {shapes}")
    (L, H), = shapes
    rows = []
    for l in range(L):
        for h in range(H):
            row = dict(model=model_name, layer=l, head=h)
            row.update({k: float(v[l, h]) for k, v in scores.items()})
            row["label"] = label_head(row, thresholds or DEFAULT_THRESHOLDS)
            rows.append(row)
    return pd.DataFrame(rows)
