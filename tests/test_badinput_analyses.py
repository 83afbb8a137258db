"""Bad input to head importance / pruning (task metrics), TaskBatch, task files, KV configs, the head table and
its classifier, logit attribution and ROUGE: a ValueError/TypeError naming what was wrong and what is allowed,
never a deep torch error or a silent wrong answer. Toy models only, small batches: the file runs in seconds."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pandas as pd
import pytest
import torch

import interp
from interp import kvconfig
from interp.analyses import HeadClassifier, head_table
from interp.analyses import importance as I
from interp.analyses import pruning as P
from interp.analyses import tasks as T
from interp.analyses.retrieval import rouge1_recall
from interp.analyses.tasks.sequence import InductionTask
from interp.readout import logit_attribution
from interp.tokens import Tokens
from helpers import raises_clear_error

NAN = float("nan")


@dataclasses.dataclass(frozen=True)
class ScalarMetric(InductionTask):
    """A custom task whose metric ignores per_example (always the batch mean)."""
    name = "scalar"

    def metric(self, logits, batch, per_example=False):
        return super().metric(logits, batch, per_example=False)


@dataclasses.dataclass(frozen=True)
class ColumnMetric(InductionTask):
    name = "column"

    def metric(self, logits, batch, per_example=False):
        m = super().metric(logits, batch, per_example=True)
        return m[:, None] if per_example else m.mean()


@dataclasses.dataclass(frozen=True)
class FloatMetric(InductionTask):
    name = "float"

    def metric(self, logits, batch, per_example=False):
        return 0.5


@dataclasses.dataclass(frozen=True)
class NanMetric(InductionTask):
    name = "nan"

    def metric(self, logits, batch, per_example=False):
        m = super().metric(logits, batch, per_example=True) * NAN
        return m if per_example else m.mean()


@dataclasses.dataclass(frozen=True)
class NanWhenAblated(InductionTask):
    """Finite on the full model, NaN once some head is removed (the loss rises above the clean one)."""
    name = "nan-ablated"
    limit: float = 0.0

    def metric(self, logits, batch, per_example=False):
        m = super().metric(logits, batch, per_example=True)
        m = torch.where(m > self.limit, m * NAN, m)
        return m if per_example else m.mean()


@pytest.fixture(scope="module")
def m():
    return interp.load("toy-induction")


@pytest.fixture(scope="module")
def batch(m):
    return T.get_task("induction", half=6).make(m, n=4)


# ---------------------------------------------------------------------------------------------- item 7: metrics
@pytest.mark.parametrize("task, err, match", [
    (ScalarMetric(half=6), ValueError, r"per_example=True\) must return one value per example.*got shape \(\)"),
    (ColumnMetric(half=6), ValueError, r"must return one value per example.*got shape \(4, 1\)"),
    (FloatMetric(half=6), TypeError, r"must return a tensor of shape \[batch\].*got float"),
    (NanMetric(half=6), ValueError, r"loss of task 'nan' is NaN/Inf on the unmodified model"),
])
def test_importance_checks_what_the_metric_returns(m, batch, task, err, match):
    for method in ("ablation_zero", "attention_influence", "mask_gradient"):
        raises_clear_error(err, match, lambda: I.head_importance(m, task, methods=[method], batch=batch))
    raises_clear_error(err, "attention_influence: .*" + match,
                       lambda: I.attention_influence(m, batch, heads=[(0, 1)], task=task))
    raises_clear_error(err, "pruning_curve: ", lambda: P.pruning_curve(m, task, batch, torch.rand(2, 4)))
    raises_clear_error(err, "random_pruning_curve: ", lambda: P.random_pruning_curve(m, task, batch, n_orders=1))
    raises_clear_error(err, "mask_gradient_scores: ", lambda: I.mask_gradient_scores(m, task, batch))


def test_nan_metric_under_ablation_names_the_head(m, batch):
    full = I.clean_losses(m, "induction", batch)
    task = NanWhenAblated(half=6, limit=float(full.max()) + 1e-4)
    raises_clear_error(ValueError, r"ablated_losses: the loss of task 'nan-ablated' is NaN/Inf with head L\dH\d "
                       r"ablated \(ablation_zero\)", lambda: I.head_importance(m, task, ["ablation_zero"], batch=batch))
    raises_clear_error(ValueError, r"attention_influence: .* NaN/Inf with the heads masked",
                       lambda: I.attention_influence(m, batch, heads=[(0, 0), (0, 1), (1, 0), (1, 1)], task=task))
    raises_clear_error(ValueError, r"pruning_curve: .* NaN/Inf with \d+ heads removed",
                       lambda: P.pruning_curve(m, task, batch, torch.rand(2, 4), fractions=[0, 0.75]))


def test_good_metrics_still_score(m, batch):
    scores = I.attention_influence(m, batch, heads=[(0, 1)], task="induction")
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    assert P.pruning_curve(m, "induction", batch, torch.rand(2, 4), fractions=[0, 0.5]).shape == (2, 4)


# ---------------------------------------------------------------------------------------------- item 9: TaskBatch
@pytest.mark.parametrize("field, value, err, match", [
    ("answer", torch.full((4,), 10**6), ValueError, r"answer must hold token ids inside the vocabulary \[0, 64\); "
                                                    "row 0 has 1000000"),
    ("answer", torch.full((4,), -1), ValueError, r"answer must hold token ids inside the vocabulary.*has -1"),
    ("answer", torch.full((4,), 3.0), TypeError, "answer must be an integer tensor"),
    ("answer", [1, 2, 3, 4], TypeError, "answer must be an integer tensor"),
    ("wrong", torch.full((4,), 64), ValueError, r"wrong must hold token ids inside the vocabulary \[0, 64\)"),
    ("position", torch.full((4,), 1000), ValueError, r"position must index the batch's \d+ positions.*has 1000"),
    ("position", torch.full((4,), -1000), ValueError, r"position must index the batch's \d+ positions.*has -1000"),
    ("position", torch.full((4,), 2.0), TypeError, "position must be an integer tensor"),
])
def test_task_batch_checks_ids_and_positions(batch, field, value, err, match):
    raises_clear_error(err, "TaskBatch: " + match, lambda: dataclasses.replace(batch, **{field: value}))


def test_task_batch_position_on_padding(m):
    """The read position must be a real token: right padding, left padding, negative indices (as in tensors)."""
    ids = [[0, 5, 6, 7, 8], [0, 9, 10]]
    clean = m.to_tokens(ids)  # right-padded
    ok = T.TaskBatch(clean, None, torch.tensor([1, 2]), None, torch.tensor([4, 2]))
    assert ok.d_vocab is None
    for bad in ([4, 3], [-1, -1]):  # row 1's positions 3 and 4 are padding
        raises_clear_error(ValueError, f"row 1 has {bad[1]}, which is padding in that row",
                           lambda: T.TaskBatch(clean, None, torch.tensor([1, 2]), None, torch.tensor(bad)))
    unpadded = m.to_tokens([[0, 5, 6, 7, 8], [0, 9, 10, 11, 12]])
    T.TaskBatch(unpadded, None, torch.tensor([1, 2]), None, torch.tensor([-1, -1]))  # the last token of each row
    left = Tokens(torch.tensor([[0, 5, 6, 7, 8], [0, 0, 0, 9, 10]]),
                  torch.tensor([[True] * 5, [False, False, True, True, True]]), [5, 3])
    T.TaskBatch(left, None, torch.tensor([1, 2]), None, torch.tensor([4, 4]))  # left padding: the last column is real
    raises_clear_error(ValueError, "row 1 has 1, which is padding in that row",
                       lambda: T.TaskBatch(left, None, torch.tensor([1, 2]), None, torch.tensor([4, 1])))


def test_metric_checks_the_vocabulary_of_the_logits(m, batch):
    """Logits must cover every id the batch reads; a wider vocabulary (another model padding the same tokenizer's
    vocabulary to another size) is fine."""
    task = T.get_task("induction", half=6)
    assert batch.d_vocab == m.cfg.d_vocab
    logits = m(batch.clean)
    raises_clear_error(ValueError, r"logits have 10 vocabulary entries but the batch reads token id \d+",
                       task.metric, logits[..., :10], batch)
    raises_clear_error(ValueError, "logits have 10 vocabulary entries", task.accuracy, logits[..., :10], batch)
    wider = torch.cat([logits, torch.full_like(logits[..., :16], -1e4)], -1)  # 16 padded entries, never chosen
    torch.testing.assert_close(task.metric(wider, batch), task.metric(logits, batch))


# ---------------------------------------------------------------------------------------------- item 13: flags
def test_flags_must_be_bools(m, batch):
    task = T.get_task("induction", half=6)
    raises_clear_error(TypeError, "mask_gradient_scores: normalize must be True or False, got str 'no'",
                       lambda: I.mask_gradient_scores(m, task, batch, normalize="no"))
    raw = I.mask_gradient_scores(m, task, batch, normalize=False)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2))
    raises_clear_error(TypeError, "task 'induction': option prepend_bos must be True or False or None",
                       lambda: T.get_task("induction", prepend_bos="yes"))
    raises_clear_error(TypeError, "option prepend_bos", lambda: task.make(m, n=2, prepend_bos=1))
    assert T.get_task("induction", prepend_bos=None).prepend_bos is None
    raises_clear_error(TypeError, "induction metric: per_example must be True or False, got str 'yes'",
                       lambda: task.metric(m(batch.clean), batch, per_example="yes"))


# ---------------------------------------------------------------------------------------------- item 11
def test_kv_config_refuses_all_nan_scores_and_bad_thresholds(m):
    raises_clear_error(ValueError, "config_from_scores: retrieval_scores are all NaN: no trial was answered",
                       kvconfig.config_from_scores, m, torch.full((2, 4), NAN))
    for t in (2, -0.1):
        raises_clear_error(ValueError, r"config_from_scores: threshold must be a finite number in \[0, 1\]",
                           lambda: kvconfig.config_from_scores(m, torch.zeros(2, 4), threshold=t))
    partial = torch.tensor([[NAN, 0.5, 0, 0], [0, 0, 0, 0.2]])
    with pytest.warns(UserWarning, match="1 of 8 retrieval scores are NaN .*layer 0 head 0.*count as 0"):
        cfg = kvconfig.config_from_scores(m, partial)
    assert cfg["layers"]["0"]["full"] == [1] and cfg["layers"]["1"]["full"] == [3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kvconfig.config_from_scores(m, torch.zeros(2, 4))
    kvconfig.validate(dict(cfg, threshold=5.0))  # a saved config's threshold is only recorded (older ones took any)
    raises_clear_error(ValueError, "threshold must be a finite number", kvconfig.validate, dict(cfg, threshold=NAN))


def test_head_table_thresholds_and_typos():
    s = torch.rand(2, 3)
    for t in (5, -1, 1.5):
        raises_clear_error(ValueError, r"head_table: thresholds\['sink_score'\] must be in \[0, 1\], the range of "
                           "sink_score",
                           lambda: head_table({"sink_score": s}, thresholds={"sink_score": t}))
    raises_clear_error(ValueError, r"unknown keys \['sink_scor'\]; the rule scores are .* \(did you mean "
                       r"'sink_score'\?\)",
                       lambda: head_table({"sink_score": s}, thresholds={"sink_scor": 0.5}))
    raises_clear_error(ValueError, r"head_table: scores has a column 'inductoin_score' \(did you mean "
                       r"'induction_score'\?\)", lambda: head_table({"inductoin_score": s, "sink_score": s}))
    # genuinely extra columns are kept, and so is a variant next to the known score it resembles
    t = head_table({"induction_score": s, "local_score": s, "local_score_2": s, "my_metric": s, "a_shape_score": s})
    assert {"local_score_2", "my_metric", "a_shape_score"} <= set(t.columns) and len(t) == 6
    # variants whose base column is absent are not typos (more than two edits away)
    v = head_table({"induction_score": s, "sink_score_4k": s, "local_score_w64": s, "prev_token_score": s,
                    "retrieval_rate": s})
    assert {"sink_score_4k", "local_score_w64", "prev_token_score", "retrieval_rate"} <= set(v.columns)
    assert head_table({"sink_score": s}, thresholds={"sink_score": 1.0})["label"].isin(["mixed", "sink"]).all()


def test_head_classifier_thresholds_and_typos():
    g = torch.Generator().manual_seed(0)
    X = pd.DataFrame({"induction_score": torch.rand(6, generator=g), "sink_score": torch.rand(6, generator=g)})
    raises_clear_error(ValueError, r"HeadClassifier: thresholds\['sink_score'\] must be in \[0, 1\]",
                       HeadClassifier(thresholds={"sink_score": 5}).fit, X)
    typo = X.rename(columns={"induction_score": "inductoin_score"})
    raises_clear_error(ValueError, r"HeadClassifier: X has a column 'inductoin_score' \(did you mean "
                       r"'induction_score'\?\)", HeadClassifier().fit, typo)
    raises_clear_error(ValueError, r"X lacks score columns \['induction_score'\] \(did you mean 'inductoin_score'\?\)",
                       HeadClassifier(score_columns=["induction_score"]).fit, typo)
    assert len(HeadClassifier().fit(X.assign(extra=1.0)).labels_) == 6


# ---------------------------------------------------------------------------------------------- item 17
def test_logit_attribution_refuses_a_direction_on_padding(m):
    ids = [[0, 5, 6, 7, 8], [0, 9, 10]]
    dirs = torch.full((2, 5), -1, dtype=torch.long)
    dirs[0, 4], dirs[1, 2] = 3, 4
    att = logit_attribution(m, ids, dirs)
    assert att.heads.shape == (2, 5, 2, 4)
    dirs[1, 4] = 7
    raises_clear_error(ValueError, r"logit_attribution: directions give token id 7 at row 1 position 4, which is "
                       r"padding \(row 1 has 3 real tokens\); put -1", logit_attribution, m, ids, dirs)


def test_task_files_json_array_and_encoding(m, tmp_path):
    rows = [{"clean": [0, 5, 6, 7], "answer": 8}, {"clean": [0, 9, 10, 11], "answer": 12}]
    arr = tmp_path / "rows.json"
    arr.write_text(json.dumps(rows, indent=2))
    task, b = T.from_file(arr, m)
    assert b.answer.tolist() == [8, 12] and b.clean.input_ids.shape == (2, 4)
    lines = tmp_path / "rows.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in rows))
    assert T.read_rows(lines) == T.read_rows(arr)
    (tmp_path / "arr.jsonl").write_text(json.dumps(rows))
    raises_clear_error(ValueError, r"arr.jsonl line 1: JSON Lines \(one object per line\) expected, got a JSON list; "
                       "a JSON array of rows goes in a .json file", T.read_rows, tmp_path / "arr.jsonl")
    (tmp_path / "bad.json").write_text(json.dumps([rows[0], 3]))
    raises_clear_error(ValueError, "bad.json row 1: each element of the JSON array must be an object",
                       T.read_rows, tmp_path / "bad.json")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"clean": "caf\u00e9", "answer": "x"}\n'.encode("latin-1"))
    raises_clear_error(ValueError, r"task file '.*latin.jsonl' is not UTF-8 text \(byte 14 is b'\\xe9'\); save it as "
                       "UTF-8", T.read_rows, latin)
    bom = tmp_path / "bom.csv"
    bom.write_bytes("clean,answer\nab,c\n".encode("utf-8-sig"))
    assert T.read_rows(bom) == [{"clean": "ab", "answer": "c"}]


@pytest.mark.parametrize("generated, reference, match", [
    (None, [1], "generated must be token ids, a list of ints or a 1-D integer tensor, got NoneType"),
    ([1], None, "reference must be token ids"),
    ("ab", "abc", "generated must be token ids.*got str"),
    (torch.tensor([[1, 2]]), [1], r"generated must be token ids.*shape \(1, 2\)"),
    ([1.5], [1], "generated must be token ids"),
])
def test_rouge1_recall_checks_its_arguments(generated, reference, match):
    raises_clear_error(TypeError, "rouge1_recall: " + match, rouge1_recall, generated, reference)


def test_rouge1_recall_takes_tensors():
    assert rouge1_recall(torch.tensor([1, 2]), torch.tensor([1, 2, 3, 3])) == 0.5
    assert rouge1_recall([], [1]) == 0.0 and rouge1_recall([1], []) == 0.0


def test_relative_change_is_undefined_at_zero_clean_loss():
    full = torch.tensor([2.0, 0.0, -0.5])
    masked = torch.tensor([[3.0, 1.0, -1.0]])
    got = I.relative_change(masked, full)
    assert got[0, 0] == 0.5 and torch.isnan(got[0, 1]) and got[0, 2] == -1.0  # (L_m - L) / |L|
    with pytest.warns(UserWarning, match=r"where: 1 of 3 examples have clean loss 0"):
        mean = I.mean_relative_change(masked, full, "where")
    torch.testing.assert_close(mean, torch.tensor([-0.25]))
    with pytest.raises(ValueError, match=r"where: every clean loss is 0 .* use ablation_zero"):
        I.mean_relative_change(masked, torch.zeros(3), "where")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(I.mean_relative_change(masked, torch.ones(3), "where"), torch.tensor([0.0]))
