"""Bad input to sinks, retrieval, pruning, importance, the head table and its classifier, KV configs, the plots and
the importance report, and the residual-stream node helpers: a ValueError/TypeError naming the function, the
argument, what it got and what is allowed; never a deep torch/pandas/sklearn traceback, a silent wrong answer or a
run of hours. One row per case; good input next to it still runs as before."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from interp import head_inputs as HI
from interp import importance_report as IR
from interp import kvconfig, plots
from interp.analyses import HeadClassifier, head_table
from interp.analyses import importance as I
from interp.analyses import pruning as P
from interp.analyses import retrieval, sinks
from interp.analyses import tasks as T
from helpers import raises_clear_error

NAN = float("nan")


@pytest.fixture(scope="module")
def x():
    m = interp.load("toy-induction")
    batch = T.get_task("induction", half=6).make(m, n=4)
    table = pd.concat([I.scores_frame(m.name, "a", torch.arange(8.).reshape(2, 4)),
                       I.scores_frame(m.name, "b", torch.arange(8.).flip(0).reshape(2, 4))], ignore_index=True)
    curve = pd.DataFrame({"n_removed": [0, 4], "fraction": [0.0, 0.5], "loss": [1.0, 1.2],
                          "rel_increase": [0.0, 0.2]})
    return SimpleNamespace(m=m, task=T.get_task("induction", half=6), batch=batch, table=table, curve=curve,
                           toks=torch.randint(1, 60, (2, 40), generator=torch.Generator().manual_seed(0)),
                           X=pd.DataFrame({"induction_score": np.linspace(0, 1, 6), "sink_score": np.linspace(1, 0, 6)}))


MASK = torch.ones(2, 40, dtype=torch.bool)

CASES = [
    # --- dormant_by_query: a list of masks was a ValueError with no function name and no "got"
    ("dormant_by_query masks list", lambda x: sinks.dormant_by_query(x.m, x.toks, [MASK]), TypeError,
     r"^dormant_by_query: query_masks must be a non-empty dict of name -> bool \[batch, pos\] tensor, got list"),
    ("dormant_by_query masks empty", lambda x: sinks.dormant_by_query(x.m, x.toks, {}), ValueError,
     r"^dormant_by_query: query_masks is empty"),
    ("dormant_by_query int mask", lambda x: sinks.dormant_by_query(x.m, x.toks, {"a": MASK.long()}), ValueError,
     r"^dormant_by_query: query_masks\['a'\] must be a bool tensor of the tokens' shape \(2, 40\), got torch.int64"),
    ("dormant_by_query no query", lambda x: sinks.dormant_by_query(x.m, x.toks, {"a": MASK & False}), ValueError,
     r"^dormant_by_query: query_masks\['a'\] selects no query after position 0"),
    # --- make_trials: a NumPy array / NumPy int / 0-D tensor was refused as "not a list of numbers, got int 32"
    ("make_trials contexts bool tensor", lambda x: retrieval.make_trials(x.m, contexts=torch.tensor(True)), TypeError,
     r"^make_trials: contexts must be a list of numbers, got bool True"),
    ("make_trials contexts 2-D array", lambda x: retrieval.make_trials(x.m, contexts=np.array([[32]])), TypeError,
     r"^make_trials: contexts must be a list of numbers, got ndarray"),
    # --- pruning
    ("pruning_curve scores on meta", lambda x: P.pruning_curve(x.m, x.task, x.batch, torch.ones(2, 4, device="meta")),
     ValueError, r"^pruning_curve: scores is on the meta device"),
    ("pruning_curve scores list", lambda x: P.pruning_curve(x.m, x.task, x.batch, [[0.5] * 4] * 2), TypeError,
     r"^pruning_curve: scores must be a tensor \[2, 4\] \(layers x heads\), got list"),
    ("random_pruning_curve seed 2**64", lambda x: P.random_pruning_curve(x.m, x.task, x.batch, [0], n_orders=1,
                                                                          seed=2**64),
     ValueError, r"^random_pruning_curve: seed must be between -9223372036854775808 and 18446744073709551615, got "
                 r"18446744073709551616"),
    ("random_pruning_curve n_orders 10**9", lambda x: P.random_pruning_curve(x.m, x.task, x.batch, [0],
                                                                              n_orders=10**9),
     ValueError, r"^random_pruning_curve: n_orders must be between 1 and 10000, got 1000000000"),
    ("heads_removable rel_increase str", lambda x: P.heads_removable(x.curve.assign(rel_increase="a")), TypeError,
     r"^heads_removable: curve column 'rel_increase' must hold numbers .*got dtype"),
    ("heads_removable n_removed NaN", lambda x: P.heads_removable(x.curve.assign(n_removed=[0, NAN])), ValueError,
     r"^heads_removable: curve column 'n_removed' has missing values"),
    ("method_agreement score str", lambda x: P.method_agreement(x.table.assign(score="x")), TypeError,
     r"^method_agreement: table column 'score' must hold numbers .*got dtype"),
    ("method_agreement all-NaN method", lambda x: P.method_agreement(
        x.table.assign(score=x.table.score.where(x.table.method == "a"))), ValueError,
     r"^method_agreement: method\(s\) \['b'\] have no score \(all NaN\)"),
    # --- importance
    ("head_importance methods repeated", lambda x: I.head_importance(x.m, x.task, ["dla", "dla"], batch=x.batch),
     ValueError, r"^methods repeats \['dla'\]; name each method once"),
    ("head_importance methods empty", lambda x: I.head_importance(x.m, x.task, [], batch=x.batch), ValueError,
     r"^methods is empty; give one or more of \['ablation_zero'"),
    ("head_importance progress str", lambda x: I.head_importance(x.m, x.task, ["dla"], batch=x.batch, progress="x"),
     TypeError, r"^head_importance: progress must be a callable taking a message \(e.g. print\) or None, got str 'x'"),
    ("ablated_losses progress str", lambda x: I.ablated_losses(x.m, x.task, x.batch, progress="x"), TypeError,
     r"^ablated_losses: progress must be a callable taking a message"),
    ("scores_frame 1-D", lambda x: I.scores_frame("m", "a", torch.rand(4)), ValueError,
     r"^scores_frame: scores must be 2-D \[layer, head\], got shape \(4,\)"),
    ("scores_frame list", lambda x: I.scores_frame("m", "a", [[1.0]]), TypeError,
     r"^scores_frame: scores must be a tensor \[layer, head\], got list"),
    ("relative_change shapes", lambda x: I.relative_change(torch.rand(3, 5), torch.rand(4)), ValueError,
     r"^relative_change: masked \(3, 5\) must end in the batch of full \(4,\)"),
    ("mean_relative_change lists", lambda x: I.mean_relative_change([1.0], [1.0], "where"), TypeError,
     r"^where: full must be a tensor \[batch\] of clean losses, got list"),
    # --- head table and classifier
    ("head_table key layer", lambda x: head_table({"layer": torch.rand(2, 3), "sink_score": torch.rand(2, 3)}),
     ValueError, r"^head_table: scores has the key\(s\) \['layer'\], names of the table's own columns"),
    ("head_table key label", lambda x: head_table({"label": torch.rand(2, 3)}), ValueError,
     r"scores has the key\(s\) \['label'\]"),
    ("head_table complex", lambda x: head_table({"sink_score": torch.rand(2, 3, dtype=torch.complex64)}), TypeError,
     r"^head_table: scores\['sink_score'\] must be a real-valued tensor, got torch.complex64"),
    ("head_table meta", lambda x: head_table({"sink_score": torch.rand(2, 3, device="meta")}), ValueError,
     r"^head_table: scores\['sink_score'\] is on the meta device"),
    ("HeadClassifier.fit repeated column", lambda x: HeadClassifier().fit(pd.concat([x.X, x.X[["sink_score"]]],
                                                                                   axis=1)),
     ValueError, r"^X has the column\(s\) \['sink_score'\] more than once"),
    ("HeadClassifier.predict repeated column", lambda x: HeadClassifier().fit(x.X).predict(
        pd.concat([x.X, x.X[["sink_score"]]], axis=1)), ValueError, r"X has the column\(s\) \['sink_score'\] more"),
    # --- KV configs
    ("config_from_scores above 1", lambda x: kvconfig.config_from_scores(x.m, torch.full((2, 4), 5.0)), ValueError,
     r"^config_from_scores: retrieval_scores must be shares in \[0, 1\] .*8 of 8 are not \(first: layer 0 head 0: "
     r"5.0\)"),
    ("config_from_scores -inf", lambda x: kvconfig.config_from_scores(x.m, torch.tensor(
        [[0.5, -float("inf"), 0, 0], [0, 0, 0, 0]])), ValueError, r"shares in \[0, 1\].*layer 0 head 1: -inf"),
    ("kvconfig.save path None", lambda x: kvconfig.save(kvconfig.config_from_scores(x.m, torch.zeros(2, 4)), None),
     TypeError, r"^kvconfig.save: path must be a file path \(a str or pathlib.Path\), got NoneType"),
    ("kvconfig.load path int", lambda x: kvconfig.load(3), TypeError, r"^kvconfig.load: path must be a file path"),
    # --- plots and the importance report
    ("attention_pattern meta", lambda x: plots.attention_pattern(torch.eye(3, device="meta"), list("abc"), 0, 0),
     ValueError, r"^attention_pattern: pattern is on the meta device"),
    ("attention_pattern complex", lambda x: plots.attention_pattern(np.eye(3) * 1j, list("abc"), 0, 0), TypeError,
     r"^attention_pattern: pattern must be a real-valued array"),
    ("attention_pattern empty", lambda x: plots.attention_pattern(np.zeros((0, 0)), [], 0, 0), ValueError,
     r"^attention_pattern: pattern is empty \(shape \(0, 0\)\)"),
    ("sink_bars empty", lambda x: plots.sink_bars(torch.zeros(0), []), ValueError, r"^sink_bars: alpha is empty"),
    ("scores_vs_context list", lambda x: plots.scores_vs_context([1, 2]), TypeError,
     r"^scores_vs_context: scores_by_context must be a non-empty dict .*got list \[1, 2\]"),
    ("scores_vs_context empty", lambda x: plots.scores_vs_context({}), ValueError,
     r"^scores_vs_context: scores_by_context is empty; give a non-empty dict"),
    ("pruning_figure text columns", lambda x: IR.pruning_figure(
        {"x": pd.DataFrame({"fraction": ["a"], "loss": ["b"], "n_removed": ["c"]})}), TypeError,
     r"^pruning_figure: curve 'x' column 'fraction' must hold numbers \(as pruning_curve returns\), got dtype"),
    # --- residual-stream nodes
    ("InputPatch start str", lambda x: HI.InputPatch(x.m, start="1"), TypeError,
     r"^InputPatch: start must be a layer in 0..1 \(an int\), got str '1'"),
    ("InputPatch compact str", lambda x: HI.InputPatch(x.m, compact="no"), TypeError,
     r"^InputPatch: compact must be True or False, got str 'no'"),
    ("InputPatch record int", lambda x: HI.InputPatch(x.m, record=0), TypeError,
     r"^InputPatch: record must be True or False, got int 0"),
    ("node_outputs compact str", lambda x: HI.node_outputs(x.m, x.toks, compact="x"), TypeError,
     r"^node_outputs: compact must be True or False"),
    ("started_at start float", lambda x: HI.started_at(x.m, 1.0, None).__enter__(), TypeError,
     r"^started_at: start must be a layer in 0..1 \(an int\), got float 1.0"),
    ("head_weights d_head 3", lambda x: HI.head_weights(x.m, 0, 3), ValueError,
     r"^head_weights: d_head=3 does not fit layer 0's output projection, which reads 4 heads x 16"),
    ("head_contributions shapes", lambda x: HI.head_contributions(torch.rand(1, 2, 4, 16), None,
                                                                  torch.rand(3, 16, 64)), ValueError,
     r"^head_contributions: z must be \[batch, pos, head, d_head\] and w_o \[head, d_head, d_model\], agreeing on "
     r"\[head, d_head\]; got z \(1, 2, 4, 16\) and w_o \(3, 16, 64\)"),
]


@pytest.mark.parametrize("call, err, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(x, call, err, match):
    raises_clear_error(err, match, call, x)


# ------------------------------------------------------------------------------------------------ good input
def test_make_trials_takes_numpy_and_tensor_numbers(x):
    ref = retrieval.make_trials(x.m, contexts=(32, 48), depths=(0.5,))
    for contexts in (np.array([32, 48]), torch.tensor([32, 48]), [np.int64(32), np.int64(48)]):
        got = retrieval.make_trials(x.m, contexts=contexts, depths=np.array([0.5]))
        assert [t.input_ids.tolist() for t in got] == [t.input_ids.tolist() for t in ref]
    one = retrieval.make_trials(x.m, contexts=np.int64(32), depths=torch.tensor(0.5))
    assert one[0].input_ids.tolist() == ref[0].input_ids.tolist() and isinstance(one[0].context, int)


def test_good_input_still_runs(x):
    assert I.check_methods(["dla", "ablation_zero"]) == ("dla", "ablation_zero")
    assert P.heads_removable(x.curve, 0.5) == 4
    assert P.method_agreement(x.table)["spearman"].iloc[0] == pytest.approx(-1.0)
    partial = x.table.assign(score=x.table.score.where(x.table.index != 0))  # one NaN score: still compared
    assert len(P.method_agreement(partial)) == 1
    for seed in (2**64 - 1, -1, np.int64(3)):  # manual_seed's whole range, NumPy ints too (review of round 23)
        assert P.random_pruning_curve(x.m, x.task, x.batch, [0], n_orders=1, seed=seed).shape == (1, 4)
    assert I.scores_frame("m", "a", np.arange(8.).reshape(2, 4)).equals(I.scores_frame("m", "a",
                                                                                       torch.arange(8.).reshape(2, 4)))
    t = head_table({"sink_score": torch.rand(2, 3), "model_score": torch.rand(2, 3)})
    assert list(t.columns) == ["model", "layer", "head", "sink_score", "model_score", "label"]
    X2 = pd.concat([x.X, pd.DataFrame({"extra": [0] * 6, "extra2": [1] * 6}).rename(columns={"extra2": "extra"})],
                   axis=1)  # a repeated column that is not a score is left alone
    assert len(HeadClassifier().fit(X2).predict(X2)) == 6
    cfg = kvconfig.config_from_scores(x.m, torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0.2]]))
    assert cfg["layers"]["0"]["full"] == [0] and cfg["layers"]["1"]["full"] == [3]
    torch.testing.assert_close(I.relative_change(torch.tensor([[3.0, 1.0]]), torch.tensor([2.0, 2.0])),
                               torch.tensor([[0.5, -0.5]]))
    w = HI.head_weights(x.m, np.int64(0), 16)
    assert w.shape == (4, 16, 64)
    z = torch.rand(1, 2, 4, 16)
    assert HI.head_contributions(z, torch.ones(1, 2, 64), w).shape == (1, 2, 4, 64)
    assert HI.head_contributions(z[:, :0], None, w).shape == (1, 0, 4, 64)  # an empty slice of positions is fine
    resid = torch.rand(2, 40, x.m.cfg.d_model)
    assert HI.InputPatch(x.m, start=np.int64(1), start_resid=resid).start == 1
    with HI.started_at(x.m, np.int64(1), resid):
        pass


def test_importance_report_keeps_an_unnamed_model(x, tmp_path):
    """A table whose model cells are empty (read back from a CSV) still gets its heatmaps (they were dropped)."""
    named = IR.importance_sections(x.table)
    unnamed = IR.importance_sections(x.table.assign(model=NAN))
    assert [h for h, _ in unnamed] == [h.replace(x.m.name, "") for h, _ in named]
    assert len(unnamed) == 4
