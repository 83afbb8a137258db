"""Figures and the HTML report of a head-importance run: a layer x head heatmap per method, pruning curves
against the random-order control, and the agreement between methods."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from .plots import score_grid, write_report

METHOD_DOC = """Scores are positive where a head helps the task (removing it makes the task worse).
  ablation_zero / _mean / _resample  loss increase when the head's output is replaced by zero / its mean /
                                     its output on another input (the task's corrupted prompt)
  mask_gradient                      E_x |dL/dxi_h| at xi = 1 (Michel et al. 2019), l2-normalised per layer
  dla                                direct logit attribution to the answer (minus the wrong answer), frozen norms
  attention_influence                mean relative loss change (L_masked - L) / L (Hua et al. 2025)"""


def pruning_figure(curves: dict[str, pd.DataFrame], title: str = "pruning curve") -> go.Figure:
    """curves: {label: pruning_curve frame}; the random control dashed."""
    fig = go.Figure()
    for label, df in curves.items():
        fig.add_trace(go.Scatter(x=df["fraction"] * 100, y=df["loss"], mode="lines+markers", name=label,
                                 line=dict(dash="dash" if "random" in label else "solid"),
                                 customdata=df["n_removed"],
                                 hovertemplate=label + "<br>%{x:.0f} % of heads removed (%{customdata})"
                                               "<br>loss %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="heads removed (%)", yaxis_title="task loss", height=420)
    return fig


def importance_sections(table: pd.DataFrame, curves: dict | None = None, agreement: dict | None = None) -> list:
    """Report sections for one or several models' importance tables."""
    sections: list = [("methods", METHOD_DOC)]
    for model, sub in table.groupby("model", sort=False):
        if agreement and model in agreement:
            sections.append((f"{model}: agreement between methods", agreement[model]))
        if curves and model in curves:
            for task, by_label in curves[model].items():
                sections.append((f"{model}: pruning on {task}", pruning_figure(by_label, f"{model}: {task}")))
        wide = sub.pivot_table(index=["layer", "head"], columns="method", values="score").reset_index()
        for method in [m for m in sub["method"].unique()]:
            sections.append((f"{model}: {method}", score_grid(wide, method, title=f"{model}: {method}")))
    sections.append(("all scores", table))
    return sections


def write_importance_report(table: pd.DataFrame, path, curves: dict | None = None,
                            agreement: dict | None = None) -> Path:
    return write_report(path, "interp head importance", importance_sections(table, curves, agreement))
