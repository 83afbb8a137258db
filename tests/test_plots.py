"""Plot functions return plotly figures built from the data they are given."""

import pandas as pd
import pytest
import torch

import interp
from interp import analyses as A
from interp import plots


def test_score_grid_pattern_and_sink_bars():
    table = A.head_table({"sink_score": torch.tensor([[0.1, 0.9], [0.5, 0.2]]),
                          "induction_score": torch.zeros(2, 2)}, model_name="m")
    fig = plots.score_grid(table, "sink_score")
    assert fig.data[0].z.tolist() == [[0.1, 0.9], [0.5, 0.2]] or fig.data[0].z.shape == (2, 2)
    assert "label" in fig.data[0].text[1][0]
    with pytest.raises(ValueError, match="not a column"):
        plots.score_grid(table, "nope")
    f2 = plots.attention_pattern(torch.eye(3), ["a", "b", "c"], 0, 1)
    assert list(f2.data[0].x) == ["0:a", "1:b", "2:c"]
    f3 = plots.sink_bars([0.5, 0.1], ["x", "y"])
    assert list(f3.data[0].y) == [0.5, 0.1]


def test_retrieval_heatmap_and_scores_vs_context():
    df = pd.DataFrame(dict(context=[64, 64, 128, 128], depth=[0.1, 0.9, 0.1, 0.9], recall=[1.0, 0.5, 1.0, 0.0]))
    fig = plots.retrieval_heatmap(df)
    assert fig.data[0].z.tolist() == [[1.0, 1.0], [0.5, 0.0]]
    with pytest.raises(ValueError, match="lacks column"):
        plots.retrieval_heatmap(df.drop(columns="depth"))
    m = interp.load("toy-induction")
    by_ctx = {n: A.long_context_scores(m, A.random_tokens(m, n_tokens=n, n_prompts=1), local_window=8)
              for n in (32, 64, 128)}
    f = plots.scores_vs_context(by_ctx, "local_score")
    assert len(f.data) == 8 and list(f.data[0].x) == [32, 64, 128]
