"""The HTML report of a classification run: several models side by side on the same scales."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .plots import SCORE_COLUMNS, score_grid, write_report

LABEL_DOC = """Labels (a head's primary role; every score stays in the table):
  induction        induction_score >= 0.3   (attends to the token after the earlier copy of the current token)
  previous_token   previous_token_score >= 0.4
  duplicate_token  duplicate_token_score >= 0.3
  sink             sink_score (alpha of the first token) >= 0.3
  local            local_score (first token + last window) >= 0.7
  diffuse          diffuseness (entropy / log #keys) >= 0.7
  mixed            none of the above
Rules are applied in this order; thresholds in interp.analyses.DEFAULT_THRESHOLDS."""


def write_classification_report(table: pd.DataFrame, path) -> Path:
    sections = [("how labels are decided", LABEL_DOC)]
    counts = table.groupby(["model", "label"]).size().unstack(fill_value=0)
    counts.columns.name = None
    counts = counts.reset_index()
    sections.append(("labels per model", counts))
    for score in SCORE_COLUMNS:
        if score not in table.columns or table[score].isna().all():
            continue
        lo, hi = float(table[score].min()), float(table[score].max())
        for model, sub in table.groupby("model", sort=False):
            fig = score_grid(sub.drop(columns=["model"]), score, title=f"{model}: {score}")
            fig.update_traces(zmin=lo, zmax=hi)  # one scale across models
            sections.append((f"{model}: {score}", fig))
    sections.append(("all heads", table))
    return write_report(path, "interp head classification", sections)


def report_from_dir(out) -> Path:
    out = Path(out)
    csv = out / "heads.csv"
    if not csv.exists():
        raise ValueError(f"{out} has no heads.csv; run `interp classify ... --out {out}` first")
    return write_classification_report(pd.read_csv(csv), out / "report.html")
