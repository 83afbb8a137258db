"""Figures and the HTML report of a head-importance run: a layer x head heatmap per method, pruning curves
against the random-order control, and the agreement between methods."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from .plots import score_grid, write_report
from .validate import _show, frame_arg, is_number_column

METHOD_DOC = """Scores are positive where a head helps the task (removing it makes the task worse).
  ablation_zero / _mean / _resample  loss increase when the head's output is replaced by zero / its mean /
                                     its output on another input (the task's corrupted prompt)
  mask_gradient                      E_x |dL/dxi_h| at xi = 1 (Michel et al. 2019), l2-normalised per layer
  dla                                direct logit attribution to the answer (minus the wrong answer), frozen norms
  attention_influence                mean relative loss change (L_masked - L) / L (Hua et al. 2025)"""

TABLE_COLUMNS = ("model", "layer", "head", "method", "score")
CURVE_COLUMNS = ("fraction", "loss", "n_removed")


def _check_table(table, where: str) -> pd.DataFrame:
    """An importance table: one row per (model, layer, head, method) with a numeric score (NaN allowed)."""
    frame_arg(table, TABLE_COLUMNS, where, "table", "head_importance")
    if table.empty:
        raise ValueError(f"{where}: table has no rows")
    if not is_number_column(table["score"]):
        raise TypeError(f"{where}: table column 'score' must be numeric (NaN for a missing score), got dtype "
                        f"{table['score'].dtype}")
    dup = table.duplicated(list(TABLE_COLUMNS[:4]), keep=False)
    if dup.any():
        first = table.loc[dup, list(TABLE_COLUMNS[:4])].drop_duplicates().head(3).to_dict("records")
        raise ValueError(f"{where}: table has {int(dup.sum())} rows that repeat a (model, layer, head, method), "
                         f"e.g. {first}; give one score per head and method (average them yourself if intended)")
    return table


def pruning_figure(curves: dict[str, pd.DataFrame], title: str = "pruning curve") -> go.Figure:
    """curves: {label: pruning_curve frame}; the random control dashed."""
    if not isinstance(curves, dict):
        raise TypeError(f"pruning_figure: curves must be a dict {{label: pruning_curve frame}}, got {_show(curves)}")
    for label, df in curves.items():
        frame_arg(df, CURVE_COLUMNS, "pruning_figure", f"curve {label!r}", "pruning_curve")
        for col in CURVE_COLUMNS:
            if not is_number_column(df[col]):
                raise TypeError(f"pruning_figure: curve {label!r} column {col!r} must hold numbers (as pruning_curve "
                                f"returns), got dtype {df[col].dtype}")
    fig = go.Figure()
    for label, df in curves.items():
        label = str(label)
        fig.add_trace(go.Scatter(x=df["fraction"] * 100, y=df["loss"], mode="lines+markers", name=label,
                                 line=dict(dash="dash" if "random" in label else "solid"),
                                 customdata=df["n_removed"],
                                 hovertemplate=label + "<br>%{x:.0f} % of heads removed (%{customdata})"
                                               "<br>loss %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="heads removed (%)", yaxis_title="task loss", height=420)
    return fig


def importance_sections(table: pd.DataFrame, curves: dict | None = None, agreement: dict | None = None) -> list:
    """Report sections for one or several models' importance tables. curves: {model: {task: {label: frame}}};
    agreement: {model: report content}."""
    where = "importance_sections"
    _check_table(table, where)
    for name, arg in (("curves", curves), ("agreement", agreement)):
        if arg is not None and not isinstance(arg, dict):
            raise TypeError(f"{where}: {name} must be a dict keyed by model or None, got {_show(arg)}")
    for model, by_task in (curves or {}).items():
        if not isinstance(by_task, dict) or not all(isinstance(v, dict) for v in by_task.values()):
            raise TypeError(f"{where}: curves[{model!r}] must be a dict {{task: {{label: pruning_curve frame}}}}, "
                            f"got {_show(by_task)}")
        for task, by_label in by_task.items():
            for label, df in by_label.items():
                frame_arg(df, CURVE_COLUMNS, f"{where}: curves[{model!r}][{task!r}]", f"curve {label!r}",
                          "pruning_curve")
    sections: list = [("methods", METHOD_DOC)]
    # a missing model name (an empty CSV cell) is the unnamed model "", as in the grids (groupby would drop it)
    models = table["model"].astype(object).where(table["model"].notna(), "")
    for model, sub in table.groupby(models, sort=False):
        if agreement and model in agreement:
            sections.append((f"{model}: agreement between methods", agreement[model]))
        if curves and model in curves:
            for task, by_label in curves[model].items():
                sections.append((f"{model}: pruning on {task}", pruning_figure(by_label, f"{model}: {task}")))
        # one row per (layer, head, method) (checked above): pivot keeps all-NaN methods, unlike pivot_table
        wide = sub.pivot(index=["layer", "head"], columns="method", values="score").reset_index()
        wide.columns.name = None
        for method in [m for m in sub["method"].unique()]:
            sections.append((f"{model}: {method}", score_grid(wide, method, title=f"{model}: {method}")))
    sections.append(("all scores", table))
    return sections


def write_importance_report(table: pd.DataFrame, path, curves: dict | None = None,
                            agreement: dict | None = None) -> Path:
    return write_report(path, "interp head importance", importance_sections(table, curves, agreement))
