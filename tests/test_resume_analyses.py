"""pruning_curve and retrieval_scores resume: `checkpoint=PATH` keeps their progress after every forward / trial, a
rerun after a kill computes only what is missing and returns exactly the uninterrupted result; a file from other
settings, a damaged file and a bad checkpoint argument are refused with the path named."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from interp.analyses import importance as I
from interp.analyses import pruning as P
from interp.analyses import retrieval as R
from interp.analyses import tasks as T
from interp.analyses.circuits import checkpoints

FRACTIONS = [0, 0.25, 0.5, 0.75]  # 0, 2, 4, 6 of toy-induction's 8 heads removed


@pytest.fixture(scope="module")
def toy():
    return interp.load("toy-induction")


@pytest.fixture(scope="module")
def needle():
    return interp.load("toy-needle")


@pytest.fixture(scope="module")
def curve_inputs(toy):
    task = T.get_task("induction", half=6)
    return task, task.make(toy, n=3, seed=0), torch.tensor([[0.5, 0.1, 0.3, 2.0], [1.0, 0.2, 0.9, 0.4]])


@pytest.fixture(scope="module")
def trials(needle):
    return R.make_trials(needle, contexts=(48, 64), depths=(0.2, 0.8))  # 4 trials


def count_calls(monkeypatch, owner, name: str, kill_at: int | None = None) -> list:
    """Wrap owner.name: each call is appended to the returned list; call number `kill_at` raises KeyboardInterrupt
    (a Ctrl-C in the middle of that unit of work)."""
    calls, real = [], getattr(owner, name)

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == kill_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return calls


def one_step_per_forward(monkeypatch):
    monkeypatch.setattr(I, "LOGIT_BUDGET", 1)  # pruning_curve: one step of the curve per forward, 4 forwards


def killed_curve(toy, curve_inputs, ck, monkeypatch):
    """A pruning_curve with `ck` killed in its third forward: two steps saved."""
    task, batch, scores = curve_inputs
    with monkeypatch.context() as m:
        count_calls(m, toy, "run_with_hooks", kill_at=3)
        with pytest.raises(KeyboardInterrupt):
            P.pruning_curve(toy, task, batch, scores, FRACTIONS, checkpoint=ck)


def killed_scores(needle, trials, ck, monkeypatch):
    """A retrieval_scores with `ck` killed in its third trial: two trials saved."""
    with monkeypatch.context() as m:
        count_calls(m, R, "_decode_with_argmax", kill_at=3)
        with pytest.raises(KeyboardInterrupt):
            R.retrieval_scores(needle, trials, checkpoint=ck)


def rewrite_state(path, change) -> None:
    saved = torch.load(path)
    change(saved["state"])
    torch.save(saved, path)


# ------------------------------------------------------------------------------------------------ pruning_curve
def test_pruning_curve_continues_after_a_kill(toy, curve_inputs, tmp_path, monkeypatch):
    one_step_per_forward(monkeypatch)
    task, batch, scores = curve_inputs
    heard = []
    plain = P.pruning_curve(toy, task, batch, scores, FRACTIONS, progress=lambda d, t: heard.append((d, t)))
    assert heard == [(1, 4), (2, 4), (3, 4), (4, 4)]
    ck = tmp_path / "curve.pt"
    killed_curve(toy, curve_inputs, ck, monkeypatch)
    heard.clear()
    forwards = count_calls(monkeypatch, toy, "run_with_hooks")
    again = P.pruning_curve(toy, task, batch, scores, FRACTIONS, checkpoint=ck,
                            progress=lambda d, t: heard.append(d))
    assert len(forwards) == 2 and heard == [2, 3, 4]  # the first two steps came from the file
    pd.testing.assert_frame_equal(again, plain)
    forwards.clear()  # the finished curve is kept: a rerun measures nothing
    pd.testing.assert_frame_equal(P.pruning_curve(toy, task, batch, scores, FRACTIONS, checkpoint=ck), plain)
    assert forwards == []


def test_pruning_curve_refuses_another_runs_file(toy, curve_inputs, tmp_path, monkeypatch):
    one_step_per_forward(monkeypatch)
    task, batch, scores = curve_inputs
    ck = tmp_path / "curve.pt"
    killed_curve(toy, curve_inputs, ck, monkeypatch)
    other = {"order": dict(scores=-scores),  # the reverse removal order
             "n_removed": dict(fractions=[0, 0.5]),
             "prompts": dict(batch=task.make(toy, n=3, seed=1))}
    for differs, change in other.items():
        kw = dict(dict(batch=batch, scores=scores, fractions=FRACTIONS), **change)
        with pytest.raises(ValueError, match=re.escape(f"checkpoint {ck} was written under other settings (differs "
                                                       f"in: {differs})")):
            P.pruning_curve(toy, task, checkpoint=ck, **kw)
    monkeypatch.setattr(I, "LOGIT_BUDGET", 2**29)  # all four steps in one forward: other forwards, other losses
    with pytest.raises(ValueError, match=r"differs in: steps_per_forward"):
        P.pruning_curve(toy, task, batch, scores, FRACTIONS, checkpoint=ck)
    # scores of another scale with the same order give the same curve: continued
    one_step_per_forward(monkeypatch)
    plain = P.pruning_curve(toy, task, batch, scores, FRACTIONS)
    pd.testing.assert_frame_equal(P.pruning_curve(toy, task, batch, scores * 3, FRACTIONS, checkpoint=ck), plain)


DAMAGED_CURVES = {  # a change to the saved state -> what the error says about it
    "done-beyond-losses": (lambda st: st.update(done=3), r"'losses' must be a list of the 3 finite losses"),
    "done-past-end": (lambda st: st.update(done=9),
                      r"'done' must be a whole number of forwards of 1 steps in 0\.\.4, got 9"),
    "nan-loss": (lambda st: st["losses"].__setitem__(1, float("nan")), r"'losses' must be a list of the 2 finite"),
    "no-losses": (lambda st: st.pop("losses"), r"its state must hold 'done' and 'losses', got \['done'\]"),
}


@pytest.mark.parametrize("case", list(DAMAGED_CURVES))
def test_pruning_curve_refuses_a_damaged_file(toy, curve_inputs, tmp_path, monkeypatch, case):
    change, why = DAMAGED_CURVES[case]
    one_step_per_forward(monkeypatch)
    task, batch, scores = curve_inputs
    ck = tmp_path / "curve.pt"
    killed_curve(toy, curve_inputs, ck, monkeypatch)
    rewrite_state(ck, change)
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {ck} is damaged or not a pruning-curve checkpoint: ")
                       + why):
        P.pruning_curve(toy, task, batch, scores, FRACTIONS, checkpoint=ck)


def test_pruning_curve_refuses_a_truncated_file(toy, curve_inputs, tmp_path, monkeypatch):
    one_step_per_forward(monkeypatch)
    task, batch, scores = curve_inputs
    ck = tmp_path / "curve.pt"
    killed_curve(toy, curve_inputs, ck, monkeypatch)
    ck.write_bytes(ck.read_bytes()[:40])
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {ck} is not a pruning-curve checkpoint (")):
        P.pruning_curve(toy, task, batch, scores, FRACTIONS, checkpoint=ck)


# ------------------------------------------------------------------------------------------------ retrieval_scores
def test_retrieval_scores_continue_after_a_kill(needle, trials, tmp_path, monkeypatch):
    plain_scores, plain_rows = R.retrieval_scores(needle, trials)
    ck, heard = tmp_path / "retrieval.pt", []
    killed_scores(needle, trials, ck, monkeypatch)
    decoded = count_calls(monkeypatch, R, "_decode_with_argmax")
    scores, rows = R.retrieval_scores(needle, trials, checkpoint=ck, progress=lambda d, t: heard.append((d, t)))
    assert len(decoded) == 2 and heard == [(2, 4), (3, 4), (4, 4)]  # the first two trials came from the file
    assert torch.equal(scores, plain_scores)
    pd.testing.assert_frame_equal(rows, plain_rows)
    decoded.clear()  # the finished run is kept: a rerun decodes nothing
    scores, rows = R.retrieval_scores(needle, trials, checkpoint=ck)
    assert decoded == [] and torch.equal(scores, plain_scores)
    pd.testing.assert_frame_equal(rows, plain_rows)


def test_retrieval_scores_refuse_another_runs_file(needle, trials, tmp_path, monkeypatch):
    ck = tmp_path / "retrieval.pt"
    killed_scores(needle, trials, ck, monkeypatch)
    other = {"n_trials, trials": dict(trials=trials[:3]),
             "trials": dict(trials=trials[::-1]),
             "recall_threshold": dict(trials=trials, recall_threshold=0.9)}
    for differs, kw in other.items():
        with pytest.raises(ValueError, match=re.escape(f"checkpoint {ck} was written under other settings (differs "
                                                       f"in: {differs})")):
            R.retrieval_scores(needle, checkpoint=ck, **kw)


DAMAGED_RUNS = {  # a change to the saved state -> what the error says about it
    "done-beyond-answers": (lambda st: st.update(done=3), r"'generated' must hold the 3 greedy answers"),
    "negative-done": (lambda st: st.update(done=-1), r"'done' must be a whole number of trials in 0\.\.4, got -1"),
    "answer-not-ids": (lambda st: st["generated"].__setitem__(0, "abc"), r"'generated' must hold the 2 greedy"),
    "total-wrong-shape": (lambda st: st.update(total=st["total"][0]),
                          r"'total' must be a finite float32 tensor \[2, 4\]"),
    "total-inf": (lambda st: st["total"].__setitem__((0, 0), float("inf")), r"'total' must be a finite float32"),
    "no-total": (lambda st: st.pop("total"),
                 r"its state must hold 'done', 'generated' and 'total', got \['done', 'generated'\]"),
}


@pytest.mark.parametrize("case", list(DAMAGED_RUNS))
def test_retrieval_scores_refuse_a_damaged_file(needle, trials, tmp_path, monkeypatch, case):
    change, why = DAMAGED_RUNS[case]
    ck = tmp_path / "retrieval.pt"
    killed_scores(needle, trials, ck, monkeypatch)
    rewrite_state(ck, change)
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {ck} is damaged or not a retrieval-scores "
                                                   "checkpoint: ") + why):
        R.retrieval_scores(needle, trials, checkpoint=ck)


# ------------------------------------------------------------------------------------------------ arguments
def run_curve(toy, curve_inputs, **kw):
    task, batch, scores = curve_inputs
    return P.pruning_curve(toy, task, batch, scores, FRACTIONS, **kw)


@pytest.mark.parametrize("which", ["pruning_curve", "retrieval_scores"])
def test_bad_checkpoint_arguments(toy, curve_inputs, needle, trials, tmp_path, which):
    def call(**kw):
        if which == "pruning_curve":
            return run_curve(toy, curve_inputs, **kw)
        return R.retrieval_scores(needle, trials, **kw)

    with pytest.raises(TypeError, match=rf"^{which}: checkpoint must be a file path \(str or pathlib.Path\) or None, "
                                        r"got int 3"):
        call(checkpoint=3)
    with pytest.raises(ValueError, match=rf"^{which}: checkpoint {re.escape(repr(str(tmp_path)))} is a folder"):
        call(checkpoint=tmp_path)
    with pytest.raises(TypeError, match=rf"^{which}: progress must be a callable"):
        call(progress="yes")
    assert list(tmp_path.iterdir()) == []  # refused before any work or file


def test_digest_reads_values_not_their_types():
    d = checkpoints.digest
    assert d([1, 0.5, torch.tensor([1, 2])]) == d([np.int64(1), np.float64(0.5), torch.tensor([1, 2])])
    assert d(torch.tensor([1, 2])) != d(torch.tensor([1.0, 2.0]))  # the dtype counts
    assert d([[1, 2], [3]]) != d([[1], [2, 3]])  # so does the nesting


# ------------------------------------------------------------------------------------------------ random_pruning_curve
def killed_random(toy, curve_inputs, ck, monkeypatch, kill_at=6):
    """A random_pruning_curve (3 orders of 4 steps, one step per forward) killed in forward `kill_at`."""
    task, batch, _ = curve_inputs
    with monkeypatch.context() as m:
        count_calls(m, toy, "run_with_hooks", kill_at=kill_at)
        with pytest.raises(KeyboardInterrupt):
            P.random_pruning_curve(toy, task, batch, FRACTIONS, n_orders=3, seed=5, checkpoint=ck)


@pytest.mark.parametrize("kill_at", [3, 5, 9])  # inside the first order, at the start of the second, inside the third
def test_random_pruning_curve_continues_after_a_kill(toy, curve_inputs, tmp_path, monkeypatch, kill_at):
    one_step_per_forward(monkeypatch)
    task, batch, _ = curve_inputs
    heard = []
    plain = P.random_pruning_curve(toy, task, batch, FRACTIONS, n_orders=3, seed=5,
                                   progress=lambda d, t: heard.append((d, t)))
    assert heard == [(d, 12) for d in range(1, 13)]
    ck = tmp_path / "random.pt"
    killed_random(toy, curve_inputs, ck, monkeypatch, kill_at)
    heard.clear()
    forwards = count_calls(monkeypatch, toy, "run_with_hooks")
    again = P.random_pruning_curve(toy, task, batch, FRACTIONS, n_orders=3, seed=5, checkpoint=ck,
                                   progress=lambda d, t: heard.append(d))
    saved = kill_at - 1
    assert len(forwards) == 12 - saved and heard == list(range(saved, 13))
    pd.testing.assert_frame_equal(again, plain)
    forwards.clear()  # the finished run is kept: a rerun measures nothing
    pd.testing.assert_frame_equal(
        P.random_pruning_curve(toy, task, batch, FRACTIONS, n_orders=3, seed=5, checkpoint=ck), plain)
    assert forwards == []


def test_random_pruning_curve_refuses_another_runs_file(toy, curve_inputs, tmp_path, monkeypatch):
    one_step_per_forward(monkeypatch)
    task, batch, scores = curve_inputs
    ck = tmp_path / "random.pt"
    killed_random(toy, curve_inputs, ck, monkeypatch)
    for differs, kw in {"seed": dict(seed=6), "n_orders": dict(n_orders=4),
                        "n_removed": dict(fractions=[0, 0.5])}.items():
        args = dict(dict(fractions=FRACTIONS, n_orders=3, seed=5), **kw)
        with pytest.raises(ValueError, match=re.escape(f"checkpoint {ck} was written under other settings (differs "
                                                       f"in: {differs})")):
            P.random_pruning_curve(toy, task, batch, checkpoint=ck, **args)
    with pytest.raises(ValueError, match=r"differs in: n_orders, order, seed"):  # a scored curve is not a random one
        P.pruning_curve(toy, task, batch, scores, FRACTIONS, checkpoint=ck)


DAMAGED_RANDOM = {
    "too-many-orders": (lambda st: st["losses"].extend([[1.0] * 4] * 3), r"'losses' must be a list of 1\.\.3 lists"),
    "first-order-short": (lambda st: st["losses"][0].pop(), r"the losses of order 0 must be all 4 finite floats"),
    "nan": (lambda st: st["losses"][1].__setitem__(0, float("nan")), r"the losses of order 1 must be a whole number"),
    "no-losses": (lambda st: st.clear(), r"its state must hold 'losses', got \[\]"),
}


@pytest.mark.parametrize("case", list(DAMAGED_RANDOM))
def test_random_pruning_curve_refuses_a_damaged_file(toy, curve_inputs, tmp_path, monkeypatch, case):
    change, why = DAMAGED_RANDOM[case]
    one_step_per_forward(monkeypatch)
    task, batch, _ = curve_inputs
    ck = tmp_path / "random.pt"
    killed_random(toy, curve_inputs, ck, monkeypatch)  # the first order and one step of the second saved
    rewrite_state(ck, change)
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {ck} is damaged or not a random-pruning-curve "
                                                   "checkpoint: ") + why):
        P.random_pruning_curve(toy, task, batch, FRACTIONS, n_orders=3, seed=5, checkpoint=ck)
