"""The tidy per-head table: one row per layer x head, score columns, and a primary label.

This module is the one place that lists the table's columns and the labelling rules; the estimator, the batch CLI,
the plots and the report import them from here.
"""

from __future__ import annotations

import difflib
import math
import numbers

import pandas as pd
import torch

from interp.validate import frame_arg, not_meta

# A head's primary label is the first rule it passes, in this order (thresholds calibrated on the toy models'
# known heads; see README). A head can score high on several roles: the columns keep every score.
#   (label, score column, threshold, what the score measures)
RULES = (
    ("induction", "induction_score", 0.3, "attends to the token after the earlier copy of the current token"),
    ("previous_token", "previous_token_score", 0.4, "attends to the token just before"),
    ("duplicate_token", "duplicate_token_score", 0.3, "attends to the earlier copy of the current token"),
    ("sink", "sink_score", 0.3, "alpha of the first token: the attention it receives per query"),
    ("local", "local_score", 0.7, "mass on the first token + the last local window"),
    ("diffuse", "diffuseness", 0.7, "entropy / log #keys"),
)
LABELS = ("sink", "induction", "previous_token", "duplicate_token", "local", "diffuse", "mixed")
DEFAULT_THRESHOLDS = {score: threshold for _, score, threshold, _ in RULES}
RULE_SCORES = {label: score for label, score, _, _ in RULES}

ID_COLUMNS = ("model", "layer", "head", "label")
# Every per-head score the batch classification writes, in table order. local_score_arch is the local score at
# the model's own sliding window (NaN for models without one); window is each head's architectural window
# (empty for full attention), an attribute rather than a score.
SCORE_COLUMNS = ("sink_score", "previous_token_score", "induction_score", "duplicate_token_score", "retrieval_score",
                 "local_score", "entropy", "diffuseness", "local_score_arch")
INFO_COLUMNS = ("window",)
COLUMNS = (*ID_COLUMNS, *SCORE_COLUMNS, *INFO_COLUMNS)
NEAR_MISS = 0.8  # difflib similarity above which an unknown score name is taken for a typo of a known one


def near_miss_columns(names, where: str | None = None, what: str = "scores") -> None:
    """Extra score columns are welcome, but a name that is not a known column and looks like a typo of a known
    column that is absent (its closest known column, difflib ratio >= NEAR_MISS, e.g. 'inductoin_score' for
    'induction_score') is refused with "did you mean": kept as an extra column, it would leave the known score
    missing and change the labels silently. Only typos count (at most two edits, a swap of neighbours one edit):
    variants such as 'sink_score_4k', 'local_score_w64' or 'prev_token_score' are kept, as is a variant beside the
    column it resembles ('local_score_2' next to 'local_score')."""
    names = [n for n in names if isinstance(n, str)]
    known = (*SCORE_COLUMNS, *INFO_COLUMNS)
    for name in names:
        if name in known or name in ID_COLUMNS:
            continue
        close = [c for c in difflib.get_close_matches(name, known, n=1, cutoff=NEAR_MISS) if _typo_of(name, c)]
        if close and close[0] not in names:
            raise ValueError(f"{where + ': ' if where else ''}{what} has a column {name!r} (did you mean "
                             f"{close[0]!r}?); the known score columns are {list(SCORE_COLUMNS)} (other names are kept "
                             "as extra columns, but not a near miss of an absent known column: rename it if it is "
                             "really another score)")


def _typo_of(a: str, b: str, most: int = 2) -> bool:
    """Whether a is at most `most` edits from b (insert, delete, replace, swap of neighbours)."""
    if abs(len(a) - len(b)) > most:
        return False
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1] <= most


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=NEAR_MISS)
    return f" (did you mean {close[0]!r}?)" if close else ""


def thresholds_arg(thresholds, where: str | None = None) -> dict:
    """The full thresholds dict: DEFAULT_THRESHOLDS with the given keys overridden. A TypeError/ValueError names a
    key that is not a rule score, or a value that is not a number in [0, 1], the range of every rule score (a NaN
    or a threshold above 1 would switch its rule off silently)."""
    pre = f"{where}: " if where else ""
    if thresholds is None:
        return dict(DEFAULT_THRESHOLDS)
    if not isinstance(thresholds, dict):
        raise TypeError(f"{pre}thresholds must be a dict {{score column: threshold}} or None, got "
                        f"{type(thresholds).__name__}")
    unknown = [k for k in thresholds if k not in DEFAULT_THRESHOLDS]
    if unknown:
        hint = _did_you_mean(unknown[0], DEFAULT_THRESHOLDS) if isinstance(unknown[0], str) else ""
        raise ValueError(f"{pre}thresholds has unknown keys {unknown}; the rule scores are "
                         f"{list(DEFAULT_THRESHOLDS)}{hint}")
    for k, v in thresholds.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{pre}thresholds[{k!r}] must be a number, got {type(v).__name__} {v!r:.60}")
        if not math.isfinite(v):
            raise ValueError(f"{pre}thresholds[{k!r}] must be a finite number, got {v}")
        if not 0 <= v <= 1:
            raise ValueError(f"{pre}thresholds[{k!r}] must be in [0, 1], the range of {k} (a threshold outside it "
                             f"would switch its rule off or on for every head), got {v}")
    return dict(DEFAULT_THRESHOLDS, **{k: float(v) for k, v in thresholds.items()})


def describe_rules(thresholds: dict | None = None) -> str:
    """The labelling rules as text (for reports), from the same table the code applies."""
    t = thresholds_arg(thresholds, "describe_rules")
    lines = ["Labels (a head's primary role; every score stays in the table):"]
    for label, score, _, what in RULES:
        lines.append(f"  {label:16s} {score} >= {t[score]:g}   ({what})")
    lines.append(f"  {'mixed':16s} none of the above")
    lines.append("Rules are applied in this order; thresholds in interp.analyses.DEFAULT_THRESHOLDS.")
    return "\n".join(lines)


def require_columns(table, columns=ID_COLUMNS, what: str = "the head table") -> None:
    """ValueError naming the missing columns unless `table` (a DataFrame) has all of `columns`."""
    frame_arg(table, columns, None, what, "head_table")


def label_head(row: dict, thresholds: dict = DEFAULT_THRESHOLDS) -> str:
    for label, score, _, _ in RULES:
        v = row.get(score)
        if v is not None and v == v and v >= thresholds[score]:  # NaN-safe
            return label
    return "mixed"


def _model_shape(model) -> tuple[object, tuple[int, int] | None]:
    """head_table's model_name -> (the name for the model column, (n_layers, n_heads) where known): a loaded model
    (anything with .name and .cfg.n_layers / .cfg.n_heads, e.g. a HookedModel) gives its own; a bundled or toy
    model's name its registered shape; any other name none."""
    cfg = getattr(model, "cfg", None)
    if hasattr(model, "name") and hasattr(cfg, "n_layers") and hasattr(cfg, "n_heads"):
        return model.name, (int(cfg.n_layers), int(cfg.n_heads))
    from interp.zoo import known_shape

    return model, known_shape(model)


def _check_model_shape(shape: tuple[int, int], name, expected: tuple[int, int] | None) -> None:
    """A ValueError when the scores' [layer, head] shape is not the model's n_layers x n_heads (e.g. transposed)."""
    if expected is None or shape == expected:
        return
    hint = " (transposed: pass each score as .T)" if shape[::-1] == expected else ""
    raise ValueError(f"head_table: scores are [layer, head] = {list(shape)}, but {name!r} has {expected[0]} layers x "
                     f"{expected[1]} heads, so they must be {list(expected)}{hint}")


def head_table(scores: dict[str, torch.Tensor], model_name="", thresholds: dict | None = None) -> pd.DataFrame:
    """{score name: [layer, head] tensor} -> DataFrame(model, layer, head, <scores>, label).

    Scores named in SCORE_COLUMNS feed the labelling RULES; any other name is kept as an extra column, except a
    near miss of a known column that is absent (e.g. 'inductoin_score'): a ValueError with "did you mean".
    `model_name`: the model column's value, a name or a loaded model (its `.name` is used). The scores' shape is
    checked against the model's n_layers x n_heads where that is known (a loaded model; a bundled or toy model's
    name): a ValueError otherwise (e.g. scores transposed to [head, layer])."""
    if not isinstance(scores, dict) or not scores:
        raise TypeError(f"scores must be a non-empty dict {{score name: [layer, head] tensor}}, got "
                        f"{type(scores).__name__ if not isinstance(scores, dict) else 'an empty dict'}")
    bad = [k for k, v in scores.items() if not isinstance(v, torch.Tensor) or v.dim() != 2]
    if bad:
        raise TypeError(f"scores[{bad[0]!r}] must be a [layer, head] tensor, got {type(scores[bad[0]]).__name__}"
                        f"{'' if not isinstance(scores[bad[0]], torch.Tensor) else f' of shape {tuple(scores[bad[0]].shape)}'}")
    taken = [k for k in scores if k in ID_COLUMNS]
    if taken:
        raise ValueError(f"head_table: scores has the key(s) {taken}, names of the table's own columns "
                         f"{list(ID_COLUMNS)}; a score under that name would overwrite them: rename it")
    for k, v in scores.items():
        not_meta(f"scores[{k!r}]", v, "head_table")
        if v.dtype.is_complex:
            raise TypeError(f"head_table: scores[{k!r}] must be a real-valued tensor, got {v.dtype}")
    shapes = {tuple(v.shape) for v in scores.values()}
    if len(shapes) != 1:
        raise ValueError(f"all scores must be [layer, head] of one shape, got {shapes}")
    (L, H), = shapes
    if L == 0 or H == 0:
        raise ValueError(f"scores are empty: [layer, head] shape {(L, H)}")
    model_name, expected = _model_shape(model_name)
    _check_model_shape((L, H), model_name, expected)
    near_miss_columns(list(scores), "head_table")
    thresholds = thresholds_arg(thresholds, "head_table")
    rows = []
    for l in range(L):
        for h in range(H):
            row = dict(model=model_name, layer=l, head=h)
            row.update({k: float(v[l, h]) for k, v in scores.items()})
            row["label"] = label_head(row, thresholds)
            rows.append(row)
    return pd.DataFrame(rows)
