"""Interactive plotly figures of per-head evidence, HTML tables, and a standalone HTML report (plotly.js embedded,
no CDN, no network).

Grids of heads put the layer on the y axis (layer 0 at the bottom) and the head on the x axis; with a `model`
column holding several models, each model gets its own panel side by side (one colour scale per score).
"""

from __future__ import annotations

import html
import math
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

CELL = 22  # pixels per head cell in the grids
PALETTE = ("#d62728", "#ff7f0e", "#9467bd", "#1f77b4", "#2ca02c", "#bcbd22", "#8c564b", "#e377c2", "#17becf")
FALLBACK_COLOR = "#d9d9d9"


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


def _check_table(table, *needed):
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame (e.g. from interp.analyses.head_table), "
                        f"got {type(table).__name__}")
    missing = [c for c in ("layer", "head", *needed) if c not in table.columns]
    if missing:
        raise ValueError(f"{missing[0]!r} is not a column of the table; columns: {list(table.columns)}")
    if table.empty:
        raise ValueError("table has no rows")


def _by_model(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    if "model" not in table.columns:
        return [("", table)]
    return [(str(m), sub) for m, sub in table.groupby("model", sort=False)]


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
    _check_table(table, "label")
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
    _check_table(table, score)
    _, rules, _ = label_rules()
    rule = next((f" (label {lab} at ≥ {thr:g})" for lab, col, thr in rules if col == score), "")
    vals = pd.to_numeric(table[score], errors="coerce")
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
                      xaxis_type="category", yaxis_title="needle depth", height=400)
    return fig


def scores_vs_context(scores_by_context: dict, score: str = "local_score", title: str | None = None,
                      top_k: int = 6) -> go.Figure:
    """A score against context length, read at a glance. scores_by_context: {context: {score: [layer, head]}}.

    Left: layer x context heatmap of the median over the layer's heads (hover: median, interquartile range, the
    layer's strongest head). Right: the `top_k` heads strongest at the longest context, one line each, over the
    median and interquartile band of all heads. The x axes are categorical: ticks at exactly the contexts used."""
    if not isinstance(scores_by_context, dict) or not scores_by_context:
        raise ValueError("scores_by_context must be a non-empty dict {context length: {score: [layer, head]}}")
    contexts = sorted(scores_by_context)
    grids = []
    for c in contexts:
        if score not in scores_by_context[c]:
            raise ValueError(f"score {score!r} missing at context {c}; has {sorted(scores_by_context[c])}")
        grids.append(np.asarray(scores_by_context[c][score], dtype=float))
    shapes = {g.shape for g in grids}
    if len(shapes) != 1 or len(grids[0].shape) != 2:
        raise ValueError(f"every context needs one [layer, head] grid of the same shape, got {shapes}")
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
    colors = label_colors(df["label"].astype(str).unique()) if "label" in df.columns else {}
    uid = f"interp-table-{uuid.uuid4().hex[:10]}"
    head = "".join(f"<th data-col='{html.escape(str(c), quote=True)}' title='click to sort'>{html.escape(str(c))}</th>"
                   for c in df.columns)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
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


def write_report(path, title: str, sections: list[tuple[str, object]]) -> Path:
    """sections: (heading, content), content one of: a plotly Figure; a list/tuple of Figures (laid out side by
    side, wrapping); a pandas DataFrame (a sortable, filterable table); an `HTML` fragment; a str (preformatted).
    Writes one self-contained HTML file (plotly.js embedded once) atomically."""
    path = Path(path)
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
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path
