"""Interactive plotly figures of per-head evidence, HTML tables, and a standalone HTML report (plotly.js embedded,
no CDN, no network).

Grids of heads put the layer on the y axis (layer 0 at the bottom) and the head on the x axis; with a `model`
column holding several models, each model gets its own panel side by side (one colour scale per score).
"""

from __future__ import annotations

import html
import math
import numbers
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .validate import int_arg, is_path, not_meta

CELL = 22  # pixels per head cell in the grids
PALETTE = ("#d62728", "#ff7f0e", "#9467bd", "#1f77b4", "#2ca02c", "#bcbd22", "#8c564b", "#e377c2", "#17becf")
FALLBACK_COLOR = "#d9d9d9"
MAX_GRID = 1024  # the most layers, or heads per layer, a grid draws (far above any model's)


def label_rules():
    """-> (score columns, [(label, score column, threshold)] in the order the rules apply, fallback label).

    The one place the plots and the report learn the score list and the labelling rules. Everything is read from
    the code that labels heads (`interp.classify.COLUMNS`, `interp.analyses.table.label_head` and
    `DEFAULT_THRESHOLDS`), nothing is restated: the label of each rule and the rules' order are found by asking
    `label_head` itself."""
    from .analyses.table import DEFAULT_THRESHOLDS, label_head
    from .classify import COLUMNS

    scores = tuple(c for c in COLUMNS if c not in ("model", "layer", "head", "label"))
    t = dict(DEFAULT_THRESHOLDS)
    remaining, rules = list(t), []
    while remaining:  # every remaining rule holds: label_head names the first one
        label = label_head({c: t[c] for c in remaining}, t)
        col = next(c for c in remaining if label_head({c: t[c]}, t) == label)
        rules.append((label, col, t[col]))
        remaining.remove(col)
    return scores, rules, label_head({}, t)


def label_colors(labels=()) -> dict:
    """Label -> colour: the rule labels in rule order take the palette, the fallback label is grey, any other label
    (e.g. k-means cluster ids) continues the palette."""
    _, rules, fallback = label_rules()
    colors = {lab: PALETTE[i % len(PALETTE)] for i, (lab, _, _) in enumerate(rules)}
    colors[fallback] = FALLBACK_COLOR
    for lab in labels:
        if lab not in colors:
            colors[lab] = PALETTE[(len(colors) - 1) % len(PALETTE)]
    return colors


def _show(v) -> str:
    return repr(v.item() if isinstance(v, np.generic) else v)


def check_head_table(table, *needed, numeric=(), what: str = "table", row: str = "row") -> pd.DataFrame:
    """A copy of the head table, checked for drawing as grids: a non-empty DataFrame with layer, head and the
    `needed` columns; layer and head whole numbers in [0, MAX_GRID) (made ints); one row per head (model, layer,
    head); no missing label when `label` is needed; the `numeric` columns numbers (made floats; NaN stays). Errors
    name `what` and the first bad `row` (its index label)."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame (e.g. from interp.analyses.head_table), "
                        f"got {type(table).__name__}")
    missing = [c for c in ("layer", "head", *needed, *numeric) if c not in table.columns]
    if missing:
        raise ValueError(f"{missing[0]!r} is not a column of the {what}; columns: {list(table.columns)}")
    if table.empty:
        raise ValueError(f"{what} has no rows")
    rows = table.index if table.index.is_unique else pd.RangeIndex(len(table))  # positions if labels repeat

    def fail(col, ok, want):
        bad = np.flatnonzero(~ok.to_numpy())
        if len(bad):
            more = f" (and {len(bad) - 1} more {row}s)" if len(bad) > 1 else ""
            raise ValueError(f"{what}: column {col!r} must hold {want}, got {_show(table[col].iloc[bad[0]])} in {row} "
                             f"{rows[bad[0]]}{more}")

    out = {}
    for col in ("layer", "head", *numeric):
        v = pd.to_numeric(table[col], errors="coerce").astype(float)
        if col in ("layer", "head"):
            ok = ~pd.Series(pd.api.types.is_bool_dtype(table[col]), index=v.index) & (v == np.floor(v)) & (v >= 0)
            fail(col, ok & (v < MAX_GRID), f"{col} indices, whole numbers in [0, {MAX_GRID})")
            v = v.astype(int)
        fail(col, v.notna() | table[col].isna(), "numbers")
        out[col] = v
    if "label" in needed:
        fail("label", table["label"].notna(), "a label for every head")
    if "model" in table.columns:  # a missing model name (an empty CSV cell) is the unnamed model ""
        out["model"] = table["model"].astype(object).where(table["model"].notna(), "").map(str)
    keys = pd.DataFrame({k: out[k] for k in ("model", "layer", "head") if k in out})
    dup = np.flatnonzero(keys.duplicated().to_numpy())
    if len(dup):
        first = keys.iloc[dup[0]]
        same = rows[(keys == first).all(axis=1).to_numpy()]
        raise ValueError(f"{what}: {len(dup)} {row}(s) repeat a head already in the table: "
                         f"{', '.join(f'{k} {_show(v)}' for k, v in first.items())} is in {row}s {list(same)[:5]}; "
                         "a head table has one row per head")
    return table.assign(**out)


def _by_model(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    if "model" not in table.columns:
        return [("", table)]
    return [(str(m), sub) for m, sub in table.groupby("model", sort=False, dropna=False)]


def _hover(r: dict, cols) -> str:
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "–" if math.isnan(v) else f"{v:.3f}"
        return html.escape(str(v))
    return "<br>".join(f"{c}: {fmt(r[c])}" for c in cols)


def _panels(table: pd.DataFrame, title: str):
    """One panel per model, side by side, widths proportional to the head count -> (fig, [(model, sub, L, H)])."""
    parts = []
    for model, sub in _by_model(table):
        parts.append((model, sub, int(sub["layer"].max()) + 1, int(sub["head"].max()) + 1))
    widths = [max(H, 3) * CELL for _, _, _, H in parts]
    gap = 70
    plot_w = sum(widths) + gap * (len(parts) - 1)
    fig = make_subplots(rows=1, cols=len(parts), column_widths=widths,
                        horizontal_spacing=gap / plot_w if len(parts) > 1 else 0.0,
                        subplot_titles=[m for m, *_ in parts] if len(parts) > 1 or parts[0][0] else None)
    max_L = max(L for _, _, L, _ in parts)
    fig.update_layout(title=title, height=max(260, CELL * max_L + 140), margin=dict(l=60, t=80, b=50),
                      plot_bgcolor="white")
    for i, (_, _, L, H) in enumerate(parts, start=1):
        fig.update_xaxes(title_text="head", range=[-0.5, H - 0.5], dtick=1 if H <= 40 else None,
                         showgrid=False, zeroline=False, row=1, col=i)
        fig.update_yaxes(title_text="layer" if i == 1 else None, range=[-0.5, L - 0.5],
                         dtick=1 if L <= 40 else None, showgrid=False, zeroline=False, row=1, col=i)
    return fig, parts, plot_w


def _cells(sub: pd.DataFrame, L: int, H: int, value, cols):
    z = np.full((L, H), np.nan)  # [layer, head]
    text = [["" for _ in range(H)] for _ in range(L)]
    for r in sub.to_dict("records"):
        l, h = int(r["layer"]), int(r["head"])
        z[l, h] = value(r)
        text[l][h] = _hover(r, cols)
    return z, text


def role_grid(table: pd.DataFrame, title: str = "every head's role (hover a cell for its scores)") -> go.Figure:
    """Layer x head grid coloured by each head's label (categorical colours, a legend with counts); hovering a cell
    shows the label and every score of that head. Several models (a `model` column) are drawn side by side."""
    table = check_head_table(table, "label")
    labels = list(dict.fromkeys(table["label"].astype(str)))
    colors = label_colors(labels)
    order = [lab for lab in colors if lab in labels]  # rule order, then the fallback, then the rest
    index = {lab: i for i, lab in enumerate(order)}
    n = len(order)
    scale = []  # a step colour scale: label i fills [i / n, (i + 1) / n]
    for i, lab in enumerate(order):
        scale += [[i / n, colors[lab]], [(i + 1) / n, colors[lab]]]
    fig, parts, plot_w = _panels(table, title)
    cols = [c for c in table.columns if c not in ("model", "layer", "head")]
    for i, (_, sub, L, H) in enumerate(parts, start=1):
        z, text = _cells(sub, L, H, lambda r: index[str(r["label"])], cols)
        fig.add_trace(go.Heatmap(z=z, x=list(range(H)), y=list(range(L)), text=text, zmin=-0.5, zmax=n - 0.5,
                                 colorscale=[[0, colors[order[0]]], [1, colors[order[0]]]] if n == 1 else scale,
                                 showscale=False, xgap=1, ygap=1,
                                 hovertemplate="layer %{y}, head %{x}<br>%{text}<extra></extra>"), row=1, col=i)
    counts = table["label"].astype(str).value_counts()
    for lab in order:  # legend entries (a heatmap has none)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{lab} ({counts[lab]})",
                                 marker=dict(symbol="square", size=14, color=colors[lab]), hoverinfo="skip"),
                      row=1, col=1)
    fig.update_layout(width=int(plot_w + 60 + 220), legend=dict(title="label (heads)", x=1.02, y=1),
                      margin=dict(r=220))
    return fig


def score_grid(table: pd.DataFrame, score: str, title: str | None = None) -> go.Figure:
    """Layer x head heatmap of one score (layer on y, 0 at the bottom; head on x); hovering a cell shows every score
    and the label of that head. Several models are drawn side by side on one colour scale. The title names the
    labelling rule that uses this score, if any."""
    if not isinstance(score, str):
        raise TypeError(f"score must be a column name (str), got {type(score).__name__}")
    table = check_head_table(table, numeric=(score,))
    vals = table[score]
    _, rules, _ = label_rules()
    rule = next((f" (label {lab} at ≥ {thr:g})" for lab, col, thr in rules if col == score), "")
    lo, hi = (float(vals.min()), float(vals.max())) if vals.notna().any() else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:  # scores in [0, 1] keep one fixed scale, comparable across reports
        lo, hi = 0.0, 1.0
    fig, parts, plot_w = _panels(table, title or f"{score}{rule}")
    cols = [c for c in table.columns if c not in ("model", "layer", "head")]
    for i, (_, sub, L, H) in enumerate(parts, start=1):
        z, text = _cells(sub, L, H, lambda r: r[score], cols)
        fig.add_trace(go.Heatmap(z=z, x=list(range(H)), y=list(range(L)), text=text, coloraxis="coloraxis",
                                 hovertemplate="layer %{y}, head %{x}<br>%{text}<extra></extra>"), row=1, col=i)
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=lo, cmax=hi, colorbar=dict(thickness=12)),
                      width=int(max(300, plot_w + 60 + 110)), margin=dict(r=110), title_font_size=13)
    return fig


def _array(x, name: str, ndim: int, doc: str, where: str) -> np.ndarray:
    """A float array of `ndim` dimensions (leading dimensions of size 1 are dropped; a tensor may sit on any device)."""
    if hasattr(x, "detach"):  # a torch tensor: off the graph, to the CPU, bf16 -> float
        if isinstance(x, torch.Tensor):
            not_meta(name, x, where)
            if x.dtype.is_complex:
                raise TypeError(f"{where}: {name} must be a real-valued array {doc}, got a {x.dtype} tensor")
        x = x.detach().float().cpu()
    if np.iscomplexobj(x):
        raise TypeError(f"{where}: {name} must be a real-valued array {doc}, got complex values")
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: {name} must be a numeric array {doc}, got {type(x).__name__} ({e})") from None
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim:
        raise ValueError(f"{where}: {name} must be {ndim}-D {doc}, got shape {a.shape}")
    return a


def _non_empty(a: np.ndarray, name: str, doc: str, where: str) -> np.ndarray:
    if a.size == 0:
        raise ValueError(f"{where}: {name} is empty (shape {a.shape}); give {doc} with at least one value")
    return a


def _tokens(tokens, n: int, what: str, where: str) -> list[str]:
    if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__len__") or not hasattr(tokens, "__iter__"):
        raise TypeError(f"{where}: tokens must be a list of token strings, one per {what}, got {type(tokens).__name__}")
    if len(tokens) != n:
        raise ValueError(f"{where}: tokens has {len(tokens)} entries but there are {n} {what}s; give one token per "
                         f"{what}")
    return [f"{i}:{t}" for i, t in enumerate(tokens)]


def attention_pattern(pattern, tokens: list[str], layer: int, head: int) -> go.Figure:
    """One head's pattern for a short prompt, with token labels. pattern: [q, k], one row and column per token."""
    where = "attention_pattern"
    doc = "[query, key] of one head (e.g. cache[...][0, head])"
    p = _non_empty(_array(pattern, "pattern", 2, doc, where), "pattern", doc, where)
    if p.shape[0] != p.shape[1]:
        raise ValueError(f"{where}: pattern must be square [query, key], one row and column per token, got shape "
                         f"{p.shape}")
    labels = _tokens(tokens, p.shape[0], "position", where)
    layer = int_arg("layer", layer, minimum=0, where=where)
    head = int_arg("head", head, minimum=0, where=where)
    fig = go.Figure(go.Heatmap(z=p, x=labels, y=labels, colorscale="Blues",
                               hovertemplate="query %{y}<br>key %{x}<br>p=%{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"layer {layer}, head {head}", yaxis_autorange="reversed", xaxis_title="key",
                      yaxis_title="query", height=600, width=650)
    return fig


def sink_bars(alpha, tokens: list[str], title: str = "attention received per token (alpha_k)") -> go.Figure:
    """Per-token received attention (alpha_k) for one head or averaged over heads. alpha: [key], one per token."""
    doc = "[key] (one head's, or the mean over heads)"
    a = _non_empty(_array(alpha, "alpha", 1, doc, "sink_bars"), "alpha", doc, "sink_bars")
    fig = go.Figure(go.Bar(x=_tokens(tokens, len(a), "key", "sink_bars"), y=a))
    fig.update_layout(title=title, xaxis_title="token", yaxis_title="alpha", height=350)
    return fig


def retrieval_heatmap(per_trial: pd.DataFrame, value: str = "recall", title: str | None = None) -> go.Figure:
    """Needle-in-a-haystack results over context length x depth (the per-trial table of
    `interp.analyses.retrieval.retrieval_scores`)."""
    if not isinstance(per_trial, pd.DataFrame):
        raise TypeError(f"per_trial must be a pandas DataFrame (the per-trial table of retrieval_scores), got "
                        f"{type(per_trial).__name__}")
    if not isinstance(value, str):
        raise TypeError(f"value must be a column name (str), got {type(value).__name__}")
    for col in ("context", "depth", value):
        if col not in per_trial.columns:
            raise ValueError(f"per-trial table lacks column {col!r}")
    if per_trial.empty:
        raise ValueError("per-trial table has no rows")
    for col in ("depth", value):
        if not pd.api.types.is_numeric_dtype(per_trial[col]):
            raise TypeError(f"per-trial column {col!r} must hold numbers, got dtype {per_trial[col].dtype}")
    grid = per_trial.pivot_table(index="depth", columns="context", values=value, aggfunc="mean")
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=[str(c) for c in grid.columns], y=[f"{d:.2f}" for d in grid.index],
                               colorscale="RdYlGn", zmin=0, zmax=1,
                               hovertemplate="context %{x}<br>depth %{y}<br>" + value + " %{z:.2f}<extra></extra>"))
    fig.update_layout(title=title or f"needle {value} by context length and depth", xaxis_title="context (tokens)",
                      xaxis_type="category", yaxis_title="needle depth", height=400)
    return fig


def scores_vs_context(scores_by_context: dict, score: str = "local_score", title: str | None = None,
                      top_k: int = 6) -> go.Figure:
    """A score against context length, read at a glance. scores_by_context: {context: {score: [layer, head]}}.

    Left: layer x context heatmap of the median over the layer's heads (hover: median, interquartile range, the
    layer's strongest head). Right: the `top_k` heads strongest at the longest context, one line each, over the
    median and interquartile band of all heads. The x axes are categorical: ticks at exactly the contexts used."""
    if not isinstance(scores_by_context, dict):
        raise TypeError(f"scores_vs_context: scores_by_context must be a non-empty dict {{context length: {{score: "
                        f"[layer, head]}}}}, got {type(scores_by_context).__name__} {scores_by_context!r:.60}")
    if not scores_by_context:
        raise ValueError("scores_vs_context: scores_by_context is empty; give a non-empty dict {context length: "
                         "{score: [layer, head]}}")
    top_k = int_arg("top_k", top_k, minimum=1, where="scores_vs_context")
    if not all(isinstance(c, numbers.Real) and not isinstance(c, bool) for c in scores_by_context):
        raise TypeError(f"scores_by_context's keys must be context lengths (numbers), got {list(scores_by_context)}")
    if not isinstance(score, str):
        raise TypeError(f"scores_vs_context: score must be a score name (str), got {type(score).__name__}")
    contexts = sorted(scores_by_context)
    grids = []
    for c in contexts:
        at = scores_by_context[c]
        if not isinstance(at, dict):
            raise TypeError(f"scores_vs_context: scores_by_context[{c}] must be a dict {{score: [layer, head]}}, got "
                            f"{type(at).__name__}")
        if score not in at:
            raise ValueError(f"score {score!r} missing at context {c}; has {sorted(at)}")
        grids.append(_array(at[score], f"scores_by_context[{c}][{score!r}]", 2, "[layer, head]",
                            "scores_vs_context"))
    shapes = {g.shape for g in grids}
    if len(shapes) != 1:
        raise ValueError(f"every context needs one [layer, head] grid of the same shape, got {shapes}")
    if grids[0].size == 0:
        raise ValueError(f"scores_vs_context: the [layer, head] grids are empty (shape {grids[0].shape})")
    s = np.stack(grids)  # [context, layer, head]
    C, L, H = s.shape
    xs = [str(c) for c in contexts]
    med = np.nanmedian(s, axis=2)  # [context, layer]
    q1, q3 = np.nanpercentile(s, 25, axis=2), np.nanpercentile(s, 75, axis=2)
    best = np.nanargmax(np.nan_to_num(s, nan=-np.inf), axis=2)  # [context, layer]
    text = [[f"median {med[c, l]:.3f}<br>IQR {q1[c, l]:.3f}–{q3[c, l]:.3f}<br>strongest L{l}H{best[c, l]} "
             f"{s[c, l, best[c, l]]:.3f}" for c in range(C)] for l in range(L)]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.14,
                        subplot_titles=["median over each layer's heads", f"top {min(top_k, L * H)} heads"])
    fig.add_trace(go.Heatmap(z=med.T, x=xs, y=list(range(L)), text=text, colorscale="Viridis",
                             colorbar=dict(title="median", x=0.40, thickness=10),
                             hovertemplate="context %{x}, layer %{y}<br>%{text}<extra></extra>"), row=1, col=1)
    flat = s.reshape(C, L * H)  # [context, layer * head]
    lo, mid, hi = (np.nanpercentile(flat, q, axis=1) for q in (25, 50, 75))
    fig.add_trace(go.Scatter(x=xs + xs[::-1], y=list(hi) + list(lo[::-1]), fill="toself", mode="lines",
                             fillcolor="rgba(0,0,0,0.1)", line=dict(width=0), name="all heads: IQR",
                             hoverinfo="skip"), row=1, col=2)
    fig.add_trace(go.Scatter(x=xs, y=mid, mode="lines", line=dict(color="black", dash="dash"),
                             name="all heads: median"), row=1, col=2)
    order = np.argsort(-np.nan_to_num(flat[-1], nan=-np.inf))[:top_k]
    for i, j in enumerate(order):
        l, h = divmod(int(j), H)
        fig.add_trace(go.Scatter(x=xs, y=flat[:, j], mode="lines+markers", name=f"L{l}H{h}",
                                 line=dict(color=PALETTE[i % len(PALETTE)]),
                                 hovertemplate=f"L{l}H{h}<br>context %{{x}}<br>{score} %{{y:.3f}}<extra></extra>"),
                      row=1, col=2)
    fig.update_xaxes(type="category", title_text="context (tokens)")
    fig.update_yaxes(title_text="layer", dtick=1 if L <= 40 else None, row=1, col=1)
    fig.update_yaxes(title_text=score, row=1, col=2)
    fig.update_layout(title=title or f"{score} against context length", height=max(420, 16 * L + 160), width=1100)
    return fig


class HTML(str):
    """A trusted HTML fragment: a str that Jupyter displays as HTML and `write_report` inserts as is."""

    def _repr_html_(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"<interp.plots.HTML: {len(self)} characters; displays in Jupyter, or write it to a .html file>"


_TABLE_JS = """
(function(){
var w=document.getElementById('%(id)s'); if(!w||w.dataset.ready)return; w.dataset.ready=1;
var t=w.querySelector('table'), f=w.querySelector('input'), n=w.querySelector('.n'), b=t.tBodies[0];
var rows=Array.prototype.slice.call(b.rows), heads=Array.prototype.slice.call(t.tHead.rows[0].cells);
var names=heads.map(function(h){return h.dataset.col.toLowerCase();});
function val(c){var v=c.getAttribute('data-v'); return v===null?c.textContent:(v===''?NaN:parseFloat(v));}
function test(r,term){
  var m=term.match(/^([a-z_0-9]+)(>=|<=|=|>|<|:)(.+)$/);
  if(m&&names.indexOf(m[1])>=0){var c=r.cells[names.indexOf(m[1])], v=val(c), x=parseFloat(m[3]);
    if(m[2]==='='||m[2]===':')return c.textContent.toLowerCase()===m[3];
    if(typeof v!=='number'||isNaN(v)||isNaN(x))return false;
    return m[2]==='>'?v>x:m[2]==='<'?v<x:m[2]==='>='?v>=x:v<=x;}
  return r.dataset.t.indexOf(term)>=0;}
rows.forEach(function(r){r.dataset.t=Array.prototype.map.call(r.cells,function(c){return c.textContent.toLowerCase();}).join('\\t');});
function filt(){var q=f.value.toLowerCase().split(/\\s+/).filter(Boolean), k=0;
  rows.forEach(function(r){var ok=q.every(function(x){return test(r,x);}); r.style.display=ok?'':'none'; if(ok)k++;});
  n.textContent=k+' of '+rows.length+' rows';}
heads.forEach(function(h,i){h.addEventListener('click',function(){
  var d=h.dataset.dir==='asc'?'desc':'asc'; heads.forEach(function(o){o.dataset.dir='';});
  h.dataset.dir=d; var s=d==='asc'?1:-1;
  rows.sort(function(a,b){var x=val(a.cells[i]), y=val(b.cells[i]);
    if(typeof x==='number'&&typeof y==='number'){if(isNaN(x))return isNaN(y)?0:1; if(isNaN(y))return -1; return s*(x-y);}
    return s*String(x).localeCompare(String(y));});
  rows.forEach(function(r){b.appendChild(r);});});});
f.addEventListener('input',filt); filt();
})();
"""

_TABLE_CSS = (".interp-table{font-family:sans-serif;font-size:12px} .interp-table input{width:28em;margin:4px 8px 6px 0}"
              " .interp-table .scroll{max-height:520px;overflow:auto;border:1px solid #ddd}"
              " .interp-table table{border-collapse:collapse} .interp-table td,.interp-table th{border:1px solid #e3e3e3;"
              "padding:2px 6px;white-space:nowrap} .interp-table th{position:sticky;top:0;background:#f4f4f4;"
              "cursor:pointer;user-select:none} .interp-table th[data-dir=asc]:after{content:' \\25B2'}"
              " .interp-table th[data-dir=desc]:after{content:' \\25BC'} .interp-table td.num{text-align:right;"
              "font-variant-numeric:tabular-nums} .interp-table .n{color:#666}")


def table_html(df: pd.DataFrame, digits: int = 3) -> HTML:
    """A DataFrame as a sortable, filterable HTML table (standalone: a few lines of inline JS, no network).

    Click a column header to sort (again to reverse); type in the box to filter rows: words match anywhere,
    `col=value` matches a column exactly, `col>x` / `col<x` / `col>=x` / `col<=x` compare numbers
    (e.g. `label=sink layer>=12`). A `label` column is coloured by label. In Jupyter the result displays itself."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    digits = int_arg("digits", digits, minimum=0, maximum=17, where="table_html")
    colors = label_colors(df["label"].astype(str).unique()) if "label" in df.columns else {}
    uid = f"interp-table-{uuid.uuid4().hex[:10]}"
    head = "".join(f"<th data-col='{html.escape(str(c), quote=True)}' title='click to sort'>{html.escape(str(c))}</th>"
                   for c in df.columns)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               and not pd.api.types.is_complex_dtype(df[c]) for c in df.columns]  # (complex: shown as text)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for c, v, num in zip(df.columns, row, numeric):
            if num:
                f = float("nan") if v is None or v is pd.NA else float(v)  # nullable ints (e.g. window) hold NA
                exact = not isinstance(v, (float, np.floating))
                shown = "–" if math.isnan(f) else (str(v) if exact else f"{f:.{digits}f}")
                cells.append(f"<td class='num' data-v='{'' if math.isnan(f) else repr(f)}'>{shown}</td>")
            elif c == "label":
                cells.append(f"<td style='background:{colors.get(str(v), FALLBACK_COLOR)}33'>"
                             f"{html.escape(str(v))}</td>")
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return HTML(
        f"<div class='interp-table' id='{uid}'><style>{_TABLE_CSS}</style>"
        f"<input type='search' placeholder='filter, e.g. label=sink layer>=12 induction_score>0.5'>"
        f"<span class='n'>{len(df)} rows</span><div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>"
        + "".join(body) + f"</tbody></table></div><script>{_TABLE_JS % {'id': uid}}</script></div>")


def _figure_html(fig: go.Figure, first: bool) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=bool(first), config={"displaylogo": False})


def report_path(path, where: str = "write_report: ", what: str = "") -> Path:
    """A report's file path checked before anything is drawn: not a folder; its nearest existing parent a folder
    files can be made in (tried). Errors start with `where` and call the file `what` (e.g. "the report ")."""
    from .batch.arguments import writable_folder

    if not is_path(path):
        noun = "the report's file path" if what else "a file path"
        raise TypeError(f"{where}path must be {noun} (a str or pathlib.Path), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{where}path {str(path)!r} is a folder; give the report's file path, e.g. "
                         f"{str(path / 'report.html')!r}")
    parent = next(p for p in path.absolute().parents if p.exists())  # the nearest existing one; missing ones are made
    if not parent.is_dir():
        raise ValueError(f"{where}cannot write {what}{str(path)!r}: {str(parent)!r} is a file, not a folder")
    if not writable_folder(parent):
        raise ValueError(f"{where}cannot write {what}{str(path)!r}: no permission to create files in {str(parent)!r}")
    return path


def write_report(path, title: str, sections: list[tuple[str, object]]) -> Path:
    """sections: (heading, content), content one of: a plotly Figure; a list/tuple of Figures (laid out side by
    side, wrapping); a pandas DataFrame (a sortable, filterable table); an `HTML` fragment; a str (preformatted).
    Writes one self-contained HTML file (plotly.js embedded once) atomically; missing parent folders are made."""
    path = report_path(path)
    if not isinstance(title, str):
        raise TypeError(f"write_report: title must be a str, got {type(title).__name__}")
    if not isinstance(sections, (list, tuple)):
        raise TypeError(f"write_report: sections must be a list of (heading, content) pairs, got "
                        f"{type(sections).__name__}")
    for i, sec in enumerate(sections):
        if not isinstance(sec, (list, tuple)) or len(sec) != 2 or not isinstance(sec[0], (str, type(None))):
            raise TypeError(f"write_report: sections[{i}] must be a (heading, content) pair with a str heading, got "
                            f"{type(sec).__name__} {repr(sec)[:60]}")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1.5em 2em;max-width:1500px;color:#222} h2{margin:1.2em 0 .3em;"
             "font-size:1.2em;border-bottom:1px solid #ddd} .row{display:flex;flex-wrap:wrap;gap:4px 12px;"
             "align-items:flex-start} table{border-collapse:collapse;font-size:12px} td,th{border:1px solid #ccc;"
             "padding:2px 6px} p.note{color:#555;max-width:60em}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    first = True
    for heading, obj in sections:
        if heading:
            parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(obj, go.Figure):
            parts.append(_figure_html(obj, first))
            first = False
        elif isinstance(obj, (list, tuple)) and obj and all(isinstance(f, go.Figure) for f in obj):
            parts.append("<div class='row'>")
            for f in obj:
                parts.append(f"<div>{_figure_html(f, first)}</div>")
                first = False
            parts.append("</div>")
        elif isinstance(obj, pd.DataFrame):
            parts.append(table_html(obj))
        elif isinstance(obj, HTML):
            parts.append(str(obj))
        elif isinstance(obj, str):
            parts.append(f"<pre>{html.escape(obj)}</pre>")
        else:
            raise TypeError(f"section {heading!r}: content must be a plotly Figure, a list of Figures, a DataFrame, "
                            f"an interp.plots.HTML fragment or a str, got {type(obj).__name__}")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text("\n".join(parts), encoding="utf-8")
        tmp.replace(path)
    except BaseException:  # a full disk, an interrupt: no half-written temp file is left behind
        tmp.unlink(missing_ok=True)
        raise
    return path
