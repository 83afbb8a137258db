"""The HTML report of a classification run: every head's role first, then the scores, then the table.

Several models sit side by side in every figure, on one colour scale per score. The label vocabulary, the rules'
order and their thresholds are read from the labelling code (`interp.plots.label_rules`), never restated.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

import pandas as pd

from .analyses.table import require_columns
from .plots import HTML, check_head_table, label_colors, label_rules, role_grid, score_grid, table_html, write_report


def rules_html(table: pd.DataFrame) -> HTML:
    """The labelling rules (from the code) with their colour and how many heads of each model got each label."""
    _, rules, fallback = label_rules()
    labels = list(table["label"].astype(str).unique())
    colors = label_colors(labels)
    models = list(dict.fromkeys(table["model"].astype(str))) if "model" in table.columns else [""]
    counts = (table.assign(model=table["model"].astype(str) if "model" in table.columns else "")
              .groupby(["label", "model"]).size())
    rows = [(lab, f"{col} ≥ {thr:g}") for lab, col, thr in rules] + [(fallback, "none of the above")]
    rows += [(lab, "(not a rule label)") for lab in labels if lab not in {r[0] for r in rows}]
    head = "".join(f"<th>{html.escape(m or 'heads')}</th>" for m in models)
    body = []
    for i, (lab, rule) in enumerate(rows, start=1):
        n = "".join(f"<td style='text-align:right'>{int(counts.get((lab, m), 0))}</td>" for m in models)
        swatch = f"<span style='display:inline-block;width:12px;height:12px;background:{colors[lab]}'></span>"
        body.append(f"<tr><td>{i}</td><td>{swatch} {html.escape(lab)}</td><td>{html.escape(rule)}</td>{n}</tr>")
    return HTML("<p class='note'>A head gets the label of the first rule it passes, in this order; every score stays "
                "in the table.</p><table><thead><tr><th>#</th><th>label</th><th>rule</th>" + head
                + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>")


def _checked_table(table, what: str, row: str) -> tuple[pd.DataFrame, list[str]]:
    """The head table checked for the report (errors name `what` and its `row`s) and its scores that have values."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame of heads, got {type(table).__name__}")
    scores, _, _ = label_rules()
    require_columns(table, ("model", "layer", "head", "label"), what=what)
    present = [s for s in scores if s in table.columns and not table[s].isna().all()]
    # whole, non-negative layer/head; one row per head; numeric scores (errors name the file and its row)
    return check_head_table(table, "label", numeric=present, what=what, row=row), present


def _writable_report(path) -> Path:
    """The report's path, checked before any figure is drawn (`plots.report_path`)."""
    from .plots import report_path

    return report_path(path, where="", what="the report ")


def write_classification_report(table: pd.DataFrame, path, what: str = "the head table",
                                row: str = "row") -> Path:
    """The report of a head table (one row per head: model, layer, head, label, scores). `what` and `row` name the
    table and its rows in errors (e.g. a CSV file and its data rows). A path that cannot be written is refused
    before anything is drawn."""
    table, present = _checked_table(table, what, row)
    path = _writable_report(path)
    return _write(table, present, path)


def _write(table: pd.DataFrame, present: list[str], path: Path) -> Path:
    models = list(dict.fromkeys(table["model"].astype(str)))
    intro = HTML(f"<p class='note'>{len(table)} heads of {len(models)} model(s): "
                 f"{html.escape(', '.join(models))}. Layer on the vertical axis (0 at the bottom), head on the "
                 "horizontal; hover a cell for every score of that head. In the table, click a column header to sort "
                 "and type in the box to filter (e.g. <code>label=sink layer&gt;=12</code>).</p>")
    sections = [("every head's role", intro), ("", role_grid(table)),
                ("how labels are decided, and how many heads got each", rules_html(table)),
                ("scores per head", [score_grid(table, s) for s in present]),
                ("all heads", table_html(table))]
    return write_report(path, "interp head classification", sections)


def _check_rows_whole(path: Path, rerun: str) -> None:
    """ValueError naming the first data row of the CSV file with fewer fields than its header (pandas would read
    the missing cells as empty): what a file cut mid-row (an interrupted copy or write) looks like."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            i = 0
            for fields in rows:
                if not fields:  # a blank line (pandas skips it too)
                    continue
                i += 1
                if header is not None and len(fields) < len(header):
                    raise ValueError(f"{path}: data row {i} has {len(fields)} of the header's {len(header)} fields; "
                                     f"the file looks cut short (an interrupted copy?): {rerun}")
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path} is not a readable CSV file ({str(e).strip().splitlines()[0]})") from None


def _check_every_head(table: pd.DataFrame, path: Path, rerun: str) -> None:
    """ValueError naming a model whose heads are not all in the table (layers 0..L-1 x heads 0..H-1, as
    `interp classify` writes them): a file cut at a row boundary would otherwise draw a report with holes."""
    for model, sub in table.groupby("model", sort=False):
        L, H = int(sub["layer"].max()) + 1, int(sub["head"].max()) + 1
        if len(sub) == L * H:  # (one row per head is checked already)
            continue
        have = set(zip(sub["layer"], sub["head"]))
        missing = [(l, h) for l in range(L) for h in range(H) if (l, h) not in have]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"{path}: model {model!r} has {len(sub)} of its {L} x {H} heads; layer {missing[0][0]} head "
                         f"{missing[0][1]} is missing{more}, so the file looks cut short or edited: {rerun}")


def _check_scores_and_labels(table: pd.DataFrame, present: list[str], path: Path, rerun: str) -> None:
    """ValueError naming the data row of a score outside its documented range (as `interp classify` checks its
    shards: attention masses and ratios in [0, 1], entropy >= 0, a sliding window a whole number of tokens >= 1)
    or of a label the rules never give: an edited heads.csv would otherwise draw a report of impossible heads."""
    from .batch.checks import RANGE_SLACK
    from .batch.classify import SCORE_RANGE

    for col in present:
        if col not in SCORE_RANGE:
            continue
        x = table[col].astype(float)
        if col == "window":
            bad = x.notna() & ((x < 1) | (x != x.round()))  # NaN: full attention (a global layer)
            allowed = "a whole number of tokens >= 1, or empty for full attention"
        else:
            lo, hi = SCORE_RANGE[col]
            bad = (x < lo - RANGE_SLACK) | ((x > hi + RANGE_SLACK) if hi is not None else False)
            allowed = f"in [{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
        if bad.any():
            i = bad[bad].index[0]
            raise ValueError(f"{path}: data row {i}: {col} is {float(table.at[i, col]):g}, outside its range ({allowed}); "
                             f"{rerun}")
    _, rules, fallback = label_rules()
    labels = {lab for lab, _, _ in rules} | {fallback}
    odd = ~table["label"].isin(labels)
    if odd.any():
        i = odd[odd].index[0]
        raise ValueError(f"{path}: data row {i}: label {table.at[i, 'label']!r} is not one `interp classify` gives "
                         f"({', '.join(sorted(labels))}); {rerun} (a table with labels of your own draws with "
                         f"interp.report.write_classification_report)")


def report_from_dir(out) -> Path:
    out = Path(out)
    path = out / "heads.csv"
    if not path.is_file():
        raise ValueError(f"{out} has no heads.csv; run `interp classify ... --out {out}` first")
    rerun = f"run `interp classify MODEL ... --out {out}` again to rewrite it"
    _check_rows_whole(path, rerun)
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable CSV file ({str(e).strip().splitlines()[0]})") from None
    table.index += 1  # errors name data rows from 1, the first row after the header
    table, present = _checked_table(table, str(path), "data row")
    _check_every_head(table, path, rerun)
    _check_scores_and_labels(table, present, path, rerun)
    return _write(table, present, _writable_report(out / "report.html"))
