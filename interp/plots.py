"""Interactive plotly figures of per-head evidence, and a standalone HTML report (plotly.js embedded, no CDN)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

SCORE_COLUMNS = ("sink_score", "previous_token_score", "induction_score", "duplicate_token_score", "local_score",
                 "entropy", "diffuseness")


def score_grid(table: pd.DataFrame, score: str, title: str | None = None) -> go.Figure:
    """Layer x head heatmap of one score; hovering a cell shows every score and the label of that head."""
    if score not in table.columns:
        raise ValueError(f"score {score!r} is not a column of the table; columns: {list(table.columns)}")
    L = int(table["layer"].max()) + 1
    H = int(table["head"].max()) + 1
    z = np.full((L, H), np.nan)
    text = [["" for _ in range(H)] for _ in range(L)]
    cols = [c for c in table.columns if c not in ("model", "layer", "head")]
    for _, r in table.iterrows():
        l, h = int(r["layer"]), int(r["head"])
        z[l, h] = r[score]
        text[l][h] = "<br>".join(
            f"{c}: {r[c]:.3f}" if isinstance(r[c], float) else f"{c}: {r[c]}" for c in cols)
    fig = go.Figure(go.Heatmap(z=z, x=list(range(H)), y=list(range(L)), text=text, colorscale="Viridis",
                               hovertemplate="layer %{y}, head %{x}<br>%{text}<extra></extra>",
                               colorbar=dict(title=score)))
    fig.update_layout(title=title or score, xaxis_title="head", yaxis_title="layer", height=max(300, 18 * L + 120),
                      width=max(380, 45 * H + 200))
    return fig


def attention_pattern(pattern, tokens: list[str], layer: int, head: int) -> go.Figure:
    """One head's pattern for a short prompt, with token labels. pattern: [q, k]."""
    p = np.asarray(pattern, dtype=float)
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Heatmap(z=p, x=labels, y=labels, colorscale="Blues",
                               hovertemplate="query %{y}<br>key %{x}<br>p=%{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"layer {layer}, head {head}", yaxis_autorange="reversed", xaxis_title="key",
                      yaxis_title="query", height=600, width=650)
    return fig


def sink_bars(alpha, tokens: list[str], title: str = "attention received per token (alpha_k)") -> go.Figure:
    """Per-token received attention (alpha_k) for one head or averaged over heads."""
    a = np.asarray(alpha, dtype=float)
    fig = go.Figure(go.Bar(x=[f"{i}:{t}" for i, t in enumerate(tokens)], y=a))
    fig.update_layout(title=title, xaxis_title="token", yaxis_title="alpha", height=350)
    return fig


def write_report(path, title: str, sections: list[tuple[str, object]]) -> Path:
    """sections: (heading, plotly Figure | pandas DataFrame | str). Writes one self-contained HTML file."""
    path = Path(path)
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px} table{border-collapse:collapse;"
             "font-size:12px} td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    first = True
    for heading, obj in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(obj, go.Figure):
            parts.append(obj.to_html(full_html=False, include_plotlyjs=True if first else False))
            first = False
        elif isinstance(obj, pd.DataFrame):
            parts.append(obj.to_html(index=False, float_format=lambda x: f"{x:.3f}"))
        else:
            parts.append(f"<pre>{html.escape(str(obj))}</pre>")
    parts.append("</body></html>")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path


def retrieval_heatmap(per_trial: pd.DataFrame, value: str = "recall", title: str | None = None) -> go.Figure:
    """Needle-in-a-haystack results over context length x depth (the per-trial table of
    `interp.analyses.retrieval.retrieval_scores`)."""
    for col in ("context", "depth", value):
        if col not in per_trial.columns:
            raise ValueError(f"per-trial table lacks column {col!r}")
    grid = per_trial.pivot_table(index="depth", columns="context", values=value, aggfunc="mean")
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=[str(c) for c in grid.columns], y=[f"{d:.2f}" for d in grid.index],
                               colorscale="RdYlGn", zmin=0, zmax=1,
                               hovertemplate="context %{x}<br>depth %{y}<br>" + value + " %{z:.2f}<extra></extra>"))
    fig.update_layout(title=title or f"needle {value} by context length and depth", xaxis_title="context (tokens)",
                      yaxis_title="needle depth", height=400)
    return fig


def scores_vs_context(scores_by_context: dict, score: str = "local_score", title: str | None = None) -> go.Figure:
    """One line per head: a score against context length. scores_by_context: {context: {score: [layer, head]}}."""
    contexts = sorted(scores_by_context)
    if not contexts:
        raise ValueError("scores_by_context is empty")
    first = np.asarray(scores_by_context[contexts[0]][score])
    L, H = first.shape
    fig = go.Figure()
    for l in range(L):
        for h in range(H):
            ys = [float(np.asarray(scores_by_context[c][score])[l, h]) for c in contexts]
            fig.add_trace(go.Scatter(x=contexts, y=ys, mode="lines+markers", name=f"L{l}H{h}",
                                     hovertemplate=f"L{l}H{h}<br>context %{{x}}<br>{score} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=title or f"{score} of every head against context length", xaxis_title="context (tokens)",
                      yaxis_title=score, xaxis_type="log", height=450)
    return fig
