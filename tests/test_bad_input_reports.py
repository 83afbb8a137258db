"""Bad input to the head table, the HeadClassifier, the plots and the HTML reports: a ValueError/TypeError that names
the argument (or the file and column), what it got and what is allowed; never a deep pandas/numpy/plotly traceback,
a MemoryError, or a figure silently drawn from garbage."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from interp import analyses as A
from interp import plots
from interp.analyses import HeadClassifier
from interp.analyses.table import DEFAULT_THRESHOLDS, LABELS
from interp.report import report_from_dir, write_classification_report

RULE_COLS = ["sink_score", "previous_token_score", "induction_score", "duplicate_token_score", "local_score",
             "diffuseness"]


@pytest.fixture
def scores():
    """12 heads (3 layers x 4 heads) with random rule scores."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.random((12, 6)), columns=RULE_COLS)
    df.insert(0, "layer", np.repeat(range(3), 4))
    df.insert(1, "head", list(range(4)) * 3)
    return df


@pytest.fixture
def tab():
    """A head table (model m, 3 layers x 4 heads) with labels from the real rules."""
    g = torch.Generator().manual_seed(0)
    return A.head_table({c: torch.rand(3, 4, generator=g) for c in RULE_COLS}, model_name="m")


# ------------------------------------------------------------------------------------------------ HeadClassifier
@pytest.mark.parametrize("thresholds, err, match", [
    ({"sink_scor": 0.0}, ValueError, r"unknown keys \['sink_scor'\]; the rule scores are \[.*'sink_score'"),
    ({"sink_score": float("nan")}, ValueError, r"thresholds\['sink_score'\] must be a finite number, got nan"),
    ({"sink_score": "0.5"}, TypeError, r"thresholds\['sink_score'\] must be a number, got str"),
    ([0.1], TypeError, "thresholds must be a dict"),
])
def test_classifier_refuses_bad_thresholds(scores, thresholds, err, match):
    with pytest.raises(err, match=match):
        HeadClassifier(thresholds=thresholds).fit(scores)


def test_classifier_partial_thresholds_override_only_their_keys(scores):
    clf = HeadClassifier(thresholds={"sink_score": 0.0}).fit(scores)
    assert clf.thresholds_ == dict(DEFAULT_THRESHOLDS, sink_score=0.0)


@pytest.mark.parametrize("y, match", [
    (["snk"] * 12, r"y has labels 'snk' that are not head labels; allowed: \['sink'"),
    ([0] * 12, r"y has labels 0 that are not head labels"),
    (np.zeros((12, 2)), r"y must be 1-D, one known label per head, got shape \(12, 2\)"),
    (["sink"] * 3, "y has 3 labels for 12 heads"),
])
def test_classifier_checks_known_labels(scores, y, match):
    with pytest.raises(ValueError, match=match):
        HeadClassifier().fit(scores, y)


def test_classifier_calibrates_on_every_allowed_label(scores):
    y = [LABELS[i % len(LABELS)] for i in range(12)]
    assert HeadClassifier().fit(scores, y).labels_.shape == (12,)


def test_classifier_predict_names_missing_columns_and_width(scores):
    clf = HeadClassifier().fit(scores)
    with pytest.raises(ValueError, match=r"X lacks the score columns \[.*'induction_score'.*\] that the classifier"):
        clf.predict(scores[["sink_score"]])
    with pytest.raises(ValueError, match="X has 2 columns, expected 6"):
        clf.predict(np.zeros((3, 2)))
    assert list(clf.predict(scores[list(clf.feature_names_in_)].to_numpy())) == list(clf.labels_)
    with pytest.raises(TypeError, match=r"score columns must hold numbers; \['sink_score'\]"):
        clf.predict(scores.assign(sink_score="x"))


def test_classifier_score_columns_one_string_is_one_column(scores):
    clf = HeadClassifier(score_columns="sink_score").fit(scores)
    assert list(clf.feature_names_in_) == ["sink_score"]
    assert list(clf.labels_) == ["sink" if s >= 0.3 else "mixed" for s in scores["sink_score"]]
    assert list(clf.predict(scores[["sink_score"]].to_numpy())) == list(clf.labels_)
    with pytest.raises(TypeError, match="score_columns must be None, a column name or a list of column names"):
        HeadClassifier(score_columns=[1, 2]).fit(scores)
    with pytest.raises(ValueError, match="score_columns must name distinct columns"):
        HeadClassifier(score_columns=["sink_score", "sink_score"]).fit(scores)
    with pytest.raises(ValueError, match=r"method='rules' labels heads by the rule scores"):
        HeadClassifier(score_columns=["layer"]).fit(scores)


def test_kmeans_says_inf_and_checks_n_clusters(scores):
    for v in (np.inf, -np.inf):
        with pytest.raises(ValueError, match=r"infinite values \(inf or -inf\) in \['sink_score'\]"):
            HeadClassifier(method="kmeans", n_clusters=2).fit(scores.assign(sink_score=v))
    km = HeadClassifier(method="kmeans", n_clusters=2).fit(scores)
    with pytest.raises(ValueError, match="infinite values"):
        km.predict(scores.assign(local_score=np.inf))
    with pytest.raises(ValueError, match="n_clusters must be between 1 and 12, got 50"):
        HeadClassifier(method="kmeans", n_clusters=50).fit(scores)
    with pytest.raises(TypeError, match="n_clusters must be an int"):
        HeadClassifier(method="kmeans", n_clusters=2.5).fit(scores)
    with pytest.raises(ValueError, match="no heads"):
        HeadClassifier().fit(scores.iloc[:0])


# ------------------------------------------------------------------------------------------------ head_table
def test_head_table_partial_thresholds_keep_the_other_defaults():
    sink = torch.tensor([[0.4, 0.6]])
    ind = torch.tensor([[0.35, 0.0]])  # passes the default induction rule (0.3)
    t = A.head_table({"sink_score": sink, "induction_score": ind}, thresholds={"sink_score": 0.5})
    assert list(t["label"]) == ["induction", "sink"]
    with pytest.raises(ValueError, match=r"head_table: thresholds has unknown keys \['sink_scor'\]"):
        A.head_table({"sink_score": sink}, thresholds={"sink_scor": 0.5})
    with pytest.raises(ValueError, match=r"scores are empty"):
        A.head_table({"sink_score": torch.zeros(0, 2)})


# ------------------------------------------------------------------------------------------------ grids
BAD_TABLES = [
    ("negative layer", lambda t: t.assign(layer=t.layer - 1), r"column 'layer' must hold layer indices, whole numbers "
     r"in \[0, 1024\), got -1 in row 0"),
    ("float layer", lambda t: t.assign(layer=t.layer + 0.5), "column 'layer' .* got 0.5 in row 0"),
    ("NaN head", lambda t: t.assign(head=np.nan), "column 'head' .* got nan"),
    ("str layer", lambda t: t.assign(layer="a"), "column 'layer' .* got 'a'"),
    ("bool head", lambda t: t.assign(head=True), "column 'head' .* got True"),
    ("huge layer", lambda t: t.assign(layer=t.layer * 10**9), "column 'layer' .* got 1000000000 in row 4"),
    ("duplicate heads", lambda t: pd.concat([t, t.iloc[[5]]], ignore_index=True),
     r"1 row\(s\) repeat a head already in the table: model 'm', layer 1, head 1 is in rows \[5, 12\]"),
    ("NaN label", lambda t: t.assign(label=np.nan), "column 'label' must hold a label for every head"),
]


@pytest.mark.parametrize("edit, match", [c[1:] for c in BAD_TABLES], ids=[c[0] for c in BAD_TABLES])
def test_role_grid_refuses_bad_layer_head_and_label(tab, edit, match):
    with pytest.raises(ValueError, match=match):
        plots.role_grid(edit(tab))


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.assign(induction_score=7.5), r"data row 1: induction_score is 7.5, outside its range \(in \[0, 1\]\)"),
    (lambda t: t.assign(entropy=-0.5), r"entropy is -0.5, outside its range \(>= 0\)"),
    (lambda t: t.assign(window=2.5), r"window is 2.5, outside its range \(a whole number of tokens >= 1"),
    (lambda t: t.assign(label=["bogus_label"] + list(t.label[1:])), r"data row 1: label 'bogus_label' is not one "),
])
def test_report_refuses_impossible_scores_and_labels(tab, tmp_path, edit, match):
    """Round 22's sweep: `interp report` drew an edited heads.csv with an induction score of 7.5 or a label no rule
    gives. Scores in their shard ranges (window NaN = full attention) pass."""
    tab.assign(entropy=1.5, window=np.nan).to_csv(tmp_path / "heads.csv", index=False)
    assert "plotly-graph-div" in report_from_dir(tmp_path).read_text()
    # Gemma's layers: sliding (a window) and global (NaN) in one column, as `interp classify` writes them
    tab.assign(entropy=1.5, window=[512.0] * 8 + [np.nan] * 4).to_csv(tmp_path / "heads.csv", index=False)
    assert "plotly-graph-div" in report_from_dir(tmp_path).read_text()
    edit(tab.assign(entropy=1.5, window=512.0)).to_csv(tmp_path / "heads.csv", index=False)
    with pytest.raises(ValueError, match=match):
        report_from_dir(tmp_path)


def test_grids_accept_whole_floats_and_unnamed_models(tab, tmp_path):
    fig = plots.role_grid(tab.assign(layer=tab.layer.astype(float)))  # e.g. read back from a CSV
    assert np.asarray(fig.data[0].z).shape == (3, 4)
    tab.assign(model="").to_csv(tmp_path / "heads.csv", index=False)  # head_table's default model "" reads as NaN
    assert "plotly-graph-div" in report_from_dir(tmp_path).read_text()


def test_score_grid_refuses_text_scores(tab):
    with pytest.raises(ValueError, match="column 'sink_score' must hold numbers, got 'x' in row 0"):
        plots.score_grid(tab.assign(sink_score="x"), "sink_score")
    with pytest.raises(ValueError, match="column 'layer' must hold layer indices"):
        plots.score_grid(tab.assign(layer=-tab.layer), "sink_score")


# ------------------------------------------------------------------------------------------------ other figures
def test_attention_pattern_and_sink_bars_check_rank_and_tokens():
    with pytest.raises(ValueError, match="tokens has 2 entries but there are 5 positions"):
        plots.attention_pattern(np.random.rand(5, 5), ["a", "b"], 0, 0)
    with pytest.raises(ValueError, match=r"pattern must be 2-D \[query, key\].*got shape \(2, 5, 5\)"):
        plots.attention_pattern(np.random.rand(1, 2, 5, 5), list("abcde"), 0, 0)
    with pytest.raises(ValueError, match=r"pattern must be 2-D .*got shape \(5,\)"):
        plots.attention_pattern(np.random.rand(5), list("abcde"), 0, 0)
    with pytest.raises(ValueError, match=r"pattern must be square .*got shape \(3, 5\)"):
        plots.attention_pattern(np.random.rand(3, 5), list("abcde"), 0, 0)
    with pytest.raises(TypeError, match="tokens must be a list of token strings"):
        plots.attention_pattern(np.random.rand(5, 5), "abcde", 0, 0)
    with pytest.raises(ValueError, match="head must be >= 0"):
        plots.attention_pattern(np.random.rand(2, 2), ["a", "b"], 0, -1)
    one_head = torch.rand(1, 3, 3, requires_grad=True)  # [1, q, k]: one head, unambiguous
    assert np.asarray(plots.attention_pattern(one_head, list("abc"), 0, 0).data[0].z).shape == (3, 3)
    with pytest.raises(ValueError, match="tokens has 1 entries but there are 5 keys"):
        plots.sink_bars(np.random.rand(5), ["a"])
    with pytest.raises(ValueError, match=r"alpha must be 1-D \[key\].*got shape \(2, 5\)"):
        plots.sink_bars(np.random.rand(2, 5), list("abcde"))
    assert list(plots.sink_bars(torch.tensor([[0.5, 0.25]]), ["x", "y"]).data[0].y) == [0.5, 0.25]


def test_retrieval_heatmap_and_scores_vs_context_check_input():
    with pytest.raises(TypeError, match="per_trial must be a pandas DataFrame"):
        plots.retrieval_heatmap([1])
    with pytest.raises(ValueError, match="per-trial table has no rows"):
        plots.retrieval_heatmap(pd.DataFrame(columns=["context", "depth", "recall"]))
    grid = {64: {"local_score": np.random.rand(2, 3)}}
    with pytest.raises(ValueError, match="top_k must be >= 1, got 0"):
        plots.scores_vs_context(grid, top_k=0)
    with pytest.raises(TypeError, match="keys must be context lengths"):
        plots.scores_vs_context({**grid, "128": grid[64]})
    # round 22's sweep: these raised from inside numpy / torch, or drew an empty figure
    for bad, err, match in [({64: torch.rand(2, 3)}, TypeError, r"scores_by_context\[64\] must be a dict"),
                            ({64: None}, TypeError, r"scores_by_context\[64\] must be a dict"),
                            ({64: {"local_score": torch.rand(2, 0)}}, ValueError, "grids are empty"),
                            ({64: {"local_score": torch.rand(0, 3)}}, ValueError, "grids are empty"),
                            ({64: {"local_score": [["a"]]}}, TypeError, "must be a numeric array")]:
        with pytest.raises(err, match=match):
            plots.scores_vs_context(bad)
    with pytest.raises(TypeError, match="score must be a score name"):
        plots.scores_vs_context(grid, score=["local_score"])
    for t in (torch.rand(2, 3, dtype=torch.bfloat16), torch.rand(2, 3, requires_grad=True)):  # tensors as they come
        assert len(plots.scores_vs_context({64: {"local_score": t}, 128: {"local_score": t}}).data) > 0
    assert "(1+2j)" in plots.table_html(pd.DataFrame({"x": [1 + 2j]}))  # complex: shown as text


# ------------------------------------------------------------------------------------------------ write_report
def test_write_report_paths(tmp_path):
    out = plots.write_report(tmp_path / "new" / "deeper" / "r.html", "t", [("a", "text")])
    assert out.read_text(encoding="utf-8").count("<pre>text</pre>") == 1
    d = tmp_path / "folder"
    d.mkdir()
    with pytest.raises(ValueError, match="is a folder; give the report's file path"):
        plots.write_report(d, "t", [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "new"]  # no folder.tmp left behind
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="afile' is a file, not a folder"):
        plots.write_report(tmp_path / "afile" / "r.html", "t", [])
    with pytest.raises(TypeError, match="path must be a file path"):
        plots.write_report(None, "t", [])


def test_write_report_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    def full_disk(self, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(tmp_path), "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        plots.write_report(tmp_path / "r.html", "t", [("a", "b")])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sections, match", [
    (["a"], r"sections\[0\] must be a \(heading, content\) pair with a str heading, got str 'a'"),
    ({"a": "b"}, "sections must be a list of"),
    ([("a", "b", "c")], r"sections\[0\] must be a \(heading, content\) pair"),
    ([(3, "b")], r"sections\[0\] must be a \(heading, content\) pair with a str heading"),
])
def test_write_report_sections_are_pairs(tmp_path, sections, match):
    with pytest.raises(TypeError, match=match):
        plots.write_report(tmp_path / "r.html", "t", sections)
    assert list(tmp_path.iterdir()) == []


def test_table_html_digits(tab):
    with pytest.raises(ValueError, match="table_html: digits must be between 0 and 17, got -1"):
        plots.table_html(tab, digits=-1)
    with pytest.raises(TypeError, match="digits must be an int"):
        plots.table_html(tab, digits=2.5)
    assert f">{tab.sink_score[0]:.0f}</td>" in plots.table_html(tab, digits=0)


# ------------------------------------------------------------------------------------------------ interp report
@pytest.mark.parametrize("rows, match", [
    ("m,-1,0,sink,0.5\nm,0,1,mixed,0.1\n", r"heads.csv: column 'layer' must hold layer indices, whole numbers in "
     r"\[0, 1024\), got -1 in data row 1"),
    ("m,0,0,sink,0.5\nm,x,1,mixed,0.1\n", r"heads.csv: column 'layer' .* got 'x' in data row 2"),
    ("m,0,0,sink,0.5\nm,0,1.5,mixed,0.1\n", r"heads.csv: column 'head' .* got 1.5 in data row 2"),
    ("m,0,0,sink,0.5\nm,0,0,mixed,0.1\n", r"heads.csv: 1 data row\(s\) repeat a head .* data rows \[1, 2\]"),
    ("m,0,0,sink,0.5\nm,0,1,,0.1\n", r"heads.csv: column 'label' must hold a label for every head, got nan in "
     r"data row 2"),
    ("m,0,0,sink,0.5\nm,0,1,mixed,high\n", r"heads.csv: column 'sink_score' must hold numbers, got 'high'"),
])
def test_cli_report_names_the_file_and_column(tmp_path, capsys, rows, match):
    from interp.batch.cli import main

    (tmp_path / "heads.csv").write_text("model,layer,head,label,sink_score\n" + rows)
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert str(tmp_path / "heads.csv") in err
    assert re.search(match, err), err
    assert not (tmp_path / "report.html").exists()


def test_classification_report_names_the_table(tab, tmp_path):
    with pytest.raises(ValueError, match="the head table: column 'head' must hold head indices"):
        write_classification_report(tab.assign(head=tab["head"] - 1), tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("text, match", [("layer,head\n0,0\n", r"heads.csv.*model"), ("", r"not a readable CSV")])
def test_cli_report_without_the_columns_or_rows(tmp_path, capsys, text, match):
    from interp.batch.cli import main

    (tmp_path / "heads.csv").write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and re.search(match, err), err


def test_cli_report_os_errors_are_one_line(tmp_path, capsys, monkeypatch):
    """A folder the user may not read or write (simulated: tests may run as root) gives the OS's sentence."""
    import interp.report
    from interp.batch.cli import main

    def denied(out):
        raise PermissionError(13, "Permission denied", str(tmp_path / "report.html"))

    monkeypatch.setattr(interp.report, "report_from_dir", denied)
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.endswith(f"Permission denied: {tmp_path / 'report.html'}"), err
