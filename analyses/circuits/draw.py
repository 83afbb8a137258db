"""A standalone interactive drawing of a circuit (plotly; plotly.js embedded, no graphviz, no network).

Layers run bottom to top, heads across; KV heads (GQA) sit between their group's heads, the MLP to the right of
its layer; `input` at the bottom, `logits` at the top. Edge width grows with |score|; blue edges help the metric
(ablating them lowers it: negative score), red ones hurt; hover shows each edge's and node's scores.
"""

from __future__ import annotations

import html
import json
import math

import numpy as np
import torch

from interp.validate import _show, int_arg

from .evaluate import Circuit


def _circuit_arg(c, where: str) -> Circuit:
    if not isinstance(c, Circuit):
        raise TypeError(f"{where}: c must be a Circuit (from a circuit method, e.g. C.eap(...)), got {_show(c)}")
    return c


def _jsonable(value, key: str):
    """Tensors / numpy arrays and scalars -> lists / numbers; anything else JSON cannot write -> TypeError naming
    the key of `extra` it sits under."""
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return value.tolist() if not isinstance(value, torch.Tensor) else value.detach().cpu().tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"report_html: extra[{key}] is {_show(value)}, which cannot be written as JSON; give numbers, "
                    "strings, lists, dicts, tensors or numpy arrays")


def _positions(c: Circuit) -> dict:
    g = c.graph
    pos = {"input": ((g.n_heads - 1) / 2, -1.0), "logits": ((g.n_heads - 1) / 2, float(g.n_layers))}
    group = g.n_heads // g.n_kv_heads
    for l in range(g.n_layers):
        for h in range(g.n_heads):
            pos[f"L{l}H{h}"] = (float(h), float(l))
        for j in range(g.n_kv_heads):
            pos.setdefault(g.kv_name(l, j), (j * group + (group - 1) / 2, l - 0.3))
        if g.mlp:
            pos[f"MLP{l}"] = (float(g.n_heads) + 0.5, l + 0.35)
    return pos


def figure(c: Circuit, max_edges: int | None = 300, title: str | None = None):
    """The drawing: at most `max_edges` (an int >= 1, None: all) of the circuit's edges, strongest first. An edge
    with a NaN or infinite score is drawn at the thinnest width (its hover text shows the score)."""
    import plotly.graph_objects as go

    _circuit_arg(c, "figure")
    max_edges = int_arg("max_edges", max_edges, minimum=1, where="figure", optional=True)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"figure: title must be a str or None, got {_show(title)}")
    pos = _positions(c)
    rows = [r for r in c.edges() if r["in_circuit"]][:max_edges]
    if not rows:
        rows = c.edges()[:min(max_edges or 30, 30)]  # nothing selected: show the strongest edges
    top = max((abs(r["score"]) for r in rows if math.isfinite(r["score"])), default=1.0) or 1.0
    traces = []
    for r in rows:
        (x0, y0), (x1, y1) = pos[r["src"]], pos[r["dst"]]
        w = 0.5 + 5.5 * abs(r["score"]) / top if math.isfinite(r["score"]) else 0.5
        color = "rgba(40,90,200,0.55)" if r["score"] < 0 else "rgba(200,60,40,0.55)"
        text = f"{r['src']} → {r['dst']} <{r['dst_input']}><br>score {r['score']:.4g}"
        traces.append(go.Scatter(x=[x0, (x0 + x1) / 2, x1], y=[y0, (y0 + y1) / 2, y1], mode="lines",
                                 line=dict(width=w, color=color), hoverinfo="text", text=[text] * 3,
                                 showlegend=False))
    inside = set(c.nodes_in_circuit())
    s = torch.nan_to_num(c.scores, nan=0.0, posinf=0.0, neginf=0.0).sum(1)
    out_score = {n: float(s[i]) for i, n in enumerate(c.graph.up)}
    names = list(pos)
    traces.append(go.Scatter(
        x=[pos[n][0] for n in names], y=[pos[n][1] for n in names], mode="markers+text",
        text=[n if n in inside else "" for n in names], textposition="top center",
        hovertext=[f"{n}<br>sum of out-edge scores {out_score.get(n, 0.0):.4g}" for n in names], hoverinfo="text",
        marker=dict(size=[12 if n in inside else 5 for n in names],
                    color=["#333" if n in inside else "#ccc" for n in names],
                    symbol=["diamond" if "KV" in n else "square" if n.startswith("MLP") else "circle"
                            for n in names]),
        showlegend=False))
    fig = go.Figure(traces)
    fig.update_layout(title=title or f"{c.graph.model_name} circuit ({c.method}, {c.n_edges} edges)",
                      xaxis=dict(title="head", zeroline=False), yaxis=dict(title="layer", zeroline=False),
                      plot_bgcolor="white", height=max(500, 28 * c.graph.n_layers + 200), hovermode="closest")
    return fig


def report_html(c: Circuit, extra: dict | None = None, max_edges: int | None = 300) -> str:
    """A standalone HTML page: the drawing, the top edges and any extra results (e.g. faithfulness; a dict of
    JSON-able values, tensors and numpy arrays written as lists)."""
    _circuit_arg(c, "report_html")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"report_html: extra must be a dict of results or None, got {_show(extra)}")
    extra = None if extra is None else {str(k): _jsonable(v, repr(k)) for k, v in extra.items()}
    fig = figure(c, max_edges=max_edges)
    body = fig.to_html(full_html=False, include_plotlyjs=True)
    top = [r for r in c.edges()][:25]
    rows = "".join(f"<tr><td>{html.escape(r['src'])}</td><td>{html.escape(r['dst'])}</td><td>{r['dst_input']}</td>"
                   f"<td>{r['score']:.4g}</td><td>{'✔' if r['in_circuit'] else ''}</td></tr>" for r in top)
    ext = f"<h2>Results</h2><pre>{html.escape(json.dumps(extra, indent=1))}</pre>" if extra else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>circuit: {html.escape(c.graph.model_name)}"
            f"</title></head><body style='font-family:sans-serif'><h1>{html.escape(c.graph.model_name)}: "
            f"{html.escape(c.method)} circuit</h1>{body}{ext}<h2>Strongest edges</h2><table border=1 "
            f"cellpadding=3><tr><th>src</th><th>dst</th><th>input</th><th>score</th><th>in circuit</th></tr>"
            f"{rows}</table></body></html>")
