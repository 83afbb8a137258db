"""Plot functions return plotly figures built from the data they are given, in the documented orientation:
layer on the y axis, head on the x axis (z[layer][head]). Shapes are non-square and every cell holds a distinct
value, so a transposed or shuffled grid fails."""

import random

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

import interp
from interp import analyses as A
from interp import plots
from interp.analyses.table import DEFAULT_THRESHOLDS, label_head
from interp.report import write_classification_report

L, H = 3, 5  # non-square on purpose


def grid_table(model="m", layers=L, heads=H):
    """score = layer * 0.1 + head * 0.01 (distinct per cell, < 1); labels from the real rules."""
    sink = torch.tensor([[l * 0.1 + h * 0.01 for h in range(heads)] for l in range(layers)])
    ind = torch.zeros(layers, heads)
    ind[layers - 1, 1] = 0.9  # one induction head: top layer, head 1
    return A.head_table({"sink_score": sink, "induction_score": ind, "diffuseness": torch.full((layers, heads), 0.8)},
                        model_name=model)


def heatmaps(fig):
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def test_score_grid_is_layer_by_head():
    table = grid_table()
    fig = plots.score_grid(table, "sink_score")
    (hm,) = heatmaps(fig)
    z = np.asarray(hm.z)
    assert z.shape == (L, H)  # rows are layers, columns heads
    for r in table.itertuples():
        assert z[r.layer, r.head] == pytest.approx(r.sink_score)
        assert f"sink_score: {r.sink_score:.3f}" in hm.text[r.layer][r.head]
    assert list(hm.x) == list(range(H)) and list(hm.y) == list(range(L))
    assert fig.layout.xaxis.title.text == "head" and fig.layout.yaxis.title.text == "layer"
    assert "label sink at ≥ 0.3" in fig.layout.title.text  # the rule, from the code's thresholds
    with pytest.raises(ValueError, match="not a column"):
        plots.score_grid(table, "nope")
    with pytest.raises(TypeError, match="DataFrame"):
        plots.score_grid({"layer": [0]}, "sink_score")


def test_grids_put_models_side_by_side_on_one_scale():
    table = pd.concat([grid_table("a", 3, 5), grid_table("b", 4, 2)], ignore_index=True)
    table["entropy"] = np.linspace(0.5, 4.0, len(table))
    fig = plots.score_grid(table, "sink_score")
    a, b = heatmaps(fig)
    assert np.asarray(a.z).shape == (3, 5) and np.asarray(b.z).shape == (4, 2)
    assert a.coloraxis == b.coloraxis == "coloraxis" and fig.layout.coloraxis.cmax == 1.0
    assert np.asarray(b.z)[3, 1] == pytest.approx(0.31)
    ent = plots.score_grid(table, "entropy")  # not a [0, 1] score: the scale spans the data of both models
    assert (ent.layout.coloraxis.cmin, ent.layout.coloraxis.cmax) == pytest.approx((0.5, 4.0))
    roles = plots.role_grid(table)
    assert [np.asarray(t.z).shape for t in heatmaps(roles)] == [(3, 5), (4, 2)]
    assert [a.text for a in roles.layout.annotations] == ["a", "b"]


def test_role_grid_colours_each_head_by_its_label():
    table = grid_table()
    fig = plots.role_grid(table)
    (hm,) = heatmaps(fig)
    z = np.asarray(hm.z)
    assert z.shape == (L, H)
    legend = [t.name for t in fig.data if isinstance(t, go.Scatter)]
    counts = table["label"].value_counts()
    assert sorted(legend) == sorted(f"{lab} ({n})" for lab, n in counts.items())
    order = [name.rsplit(" (", 1)[0] for name in legend]  # legend order = colour index
    colors = plots.label_colors(order)
    n = len(order)
    for r in table.itertuples():
        idx = int(z[r.layer, r.head])
        assert order[idx] == r.label, (r.layer, r.head)
        # the colour the step scale gives that index is the label's colour
        assert hm.colorscale[2 * idx][1] == colors[r.label] and hm.colorscale[2 * idx][0] == pytest.approx(idx / n)
        assert f"label: {r.label}" in hm.text[r.layer][r.head]
    assert order[int(z[L - 1, 1])] == "induction" and order[int(z[0, 0])] == "diffuse"
    assert fig.layout.xaxis.title.text == "head" and fig.layout.yaxis.title.text == "layer"


def test_label_rules_are_the_labelling_code():
    scores, rules, fallback = plots.label_rules()
    assert {col: thr for _, col, thr in rules} == DEFAULT_THRESHOLDS
    assert {"sink_score", "induction_score", "retrieval_score", "entropy"} <= set(scores)
    rng = random.Random(0)
    for _ in range(300):  # applying the rules in the order given reproduces label_head
        row = {col: rng.choice([0.0, thr, 1.0]) for _, col, thr in rules}
        expect = next((lab for lab, col, thr in rules if row[col] >= thr), fallback)
        assert label_head(row) == expect


def test_report_shows_rules_from_code(tmp_path, monkeypatch):
    monkeypatch.setitem(DEFAULT_THRESHOLDS, "sink_score", 0.42)
    table = pd.concat([grid_table("a"), grid_table("b", 2, 3)], ignore_index=True)
    html = write_classification_report(table, tmp_path / "r.html").read_text()
    assert "sink_score ≥ 0.42" in html and "sink_score ≥ 0.3" not in html
    assert html.index("every head&#x27;s role") < html.index("scores per head") < html.index("all heads")
    assert html.count("plotly-graph-div") >= 2 and 'src="http' not in html
    with pytest.raises(ValueError, match="lacks column"):
        write_classification_report(table.drop(columns="label"), tmp_path / "x.html")


def test_table_html_is_sortable_filterable_and_offline():
    table = grid_table()
    table.loc[0, "sink_score"] = float("nan")
    out = plots.table_html(table)
    assert out._repr_html_() == str(out)
    assert out.count("<tr>") == len(table) + 1 and out.count("<th ") == len(table.columns)
    assert "data-v=''>–</td>" in out  # NaN shown as a dash, sorted last
    assert "<script>" in out and "http" not in out and "addEventListener('click'" in out
    with pytest.raises(TypeError, match="DataFrame"):
        plots.table_html([1, 2])
    with pytest.raises(TypeError, match="content must be"):
        plots.write_report("/tmp/never.html", "t", [("x", 3)])


def test_pattern_sink_bars_and_retrieval_heatmap():
    f2 = plots.attention_pattern(torch.eye(3), ["a", "b", "c"], 0, 1)
    assert list(f2.data[0].x) == ["0:a", "1:b", "2:c"]
    f3 = plots.sink_bars([0.5, 0.1], ["x", "y"])
    assert list(f3.data[0].y) == [0.5, 0.1]
    df = pd.DataFrame(dict(context=[64, 64, 128, 128], depth=[0.1, 0.9, 0.1, 0.9], recall=[1.0, 0.5, 1.0, 0.0]))
    fig = plots.retrieval_heatmap(df)
    assert fig.data[0].z.tolist() == [[1.0, 1.0], [0.5, 0.0]]
    with pytest.raises(ValueError, match="lacks column"):
        plots.retrieval_heatmap(df.drop(columns="depth"))


def test_scores_vs_context_per_layer_and_top_heads():
    contexts = (100, 250, 1000)  # uneven: the ticks must be exactly these
    by_ctx = {}
    for i, n in enumerate(contexts):
        s = torch.tensor([[l * 0.1 + h * 0.01 for h in range(H)] for l in range(L)]) + 0.001 * i
        s[1, 3] = 0.9 + 0.01 * i  # the strongest head everywhere: L1H3
        by_ctx[n] = {"sink_score": s}
    fig = plots.scores_vs_context(by_ctx, "sink_score", top_k=2)
    hm = heatmaps(fig)[0]
    assert list(hm.x) == ["100", "250", "1000"] and fig.layout.xaxis.type == "category"
    z = np.asarray(hm.z)
    assert z.shape == (L, len(contexts))  # [layer, context]
    assert z[2, 0] == pytest.approx(0.22) and z[0, 2] == pytest.approx(0.022)  # medians over each layer's heads
    lines = [t for t in fig.data if isinstance(t, go.Scatter) and t.name.startswith("L")]
    assert [t.name for t in lines] == ["L1H3", "L2H4"]
    assert list(lines[0].y) == pytest.approx([0.9, 0.91, 0.92]) and list(lines[0].x) == ["100", "250", "1000"]
    with pytest.raises(ValueError, match="missing"):
        plots.scores_vs_context(by_ctx, "local_score")
    with pytest.raises(ValueError, match="non-empty"):
        plots.scores_vs_context({}, "sink_score")


def test_cache_repr_html_lists_names_shapes_sizes():
    m = interp.load("toy-induction")
    toks = torch.tensor([[1, 5, 7, 9, 11]])
    _, cache = m.run_with_cache(toks, stats=["key_mean"], names=["blocks.1.hook_resid_post"])
    out = cache._repr_html_()
    for name, v in cache.items():
        assert f"<td>{name}</td><td>[{', '.join(map(str, v.shape))}]</td><td>float32</td>" in out
    assert f"{len(cache)} hook points" in out


def test_table_html_shows_missing_values_of_nullable_columns():
    import pandas as pd

    from interp.plots import table_html

    df = pd.DataFrame({"layer": [0, 1], "window": pd.array([512, None], dtype="Int64")})
    html = table_html(df)
    assert "512" in html and "–" in html
