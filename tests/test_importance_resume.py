"""head_importance(checkpoint=PATH) called from Python: its ablation sweeps keep their losses beside PATH after every
forward, and a rerun after a kill continues them and gives the same table as an uninterrupted run."""

from __future__ import annotations

import pandas as pd
import pytest

import interp
from interp.analyses import importance as I
from interp.analyses import tasks as T


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def setup():
    model = interp.load("toy-induction")
    task = T.get_task("induction", half=6)
    return model, task, task.make(model, n=3, seed=0)


METHODS = ["ablation_zero", "attention_influence", "ablation_mean", "dla"]


def test_head_importance_continues_its_sweeps_after_a_kill(setup, tmp_path, monkeypatch):
    model, task, batch = setup
    monkeypatch.setattr(I, "LOGIT_BUDGET", 1)  # one head per forward: 8 forwards a sweep on the toy
    full = I.head_importance(model, task, METHODS, batch=batch)
    ck, said = tmp_path / "run" / "imp.pt", []

    def kill_in_mean(msg):
        said.append(msg)
        if msg.endswith("ablation_mean, 5 of 8 heads"):
            raise Killed

    with pytest.raises(Killed):
        I.head_importance(model, task, METHODS, batch=batch, checkpoint=ck, progress=kill_in_mean)
    zero, mean = I.sweep_path(ck, "ablation_zero"), I.sweep_path(ck, "ablation_mean")
    assert zero.name == "imp.ablation_zero.pt" and zero.exists() and mean.exists()
    said.clear()
    got = I.head_importance(model, task, METHODS, batch=batch, checkpoint=ck, progress=said.append)
    pd.testing.assert_frame_equal(got, full)
    heads = [m.split(", ")[1] for m in said if ", " in m and " of 8 heads" in m]
    # the zero sweep continues from its last save (7 of 8: no save after the last forward), the mean one from 5
    assert heads == ["7 of 8 heads", "8 of 8 heads", "5 of 8 heads", "6 of 8 heads", "7 of 8 heads",
                     "8 of 8 heads"], said


def test_head_importance_refuses_another_runs_checkpoint_and_bad_paths(setup, tmp_path, monkeypatch):
    model, task, batch = setup
    monkeypatch.setattr(I, "LOGIT_BUDGET", 1)
    ck = tmp_path / "imp.pt"

    def kill_at_3(msg):
        if msg.endswith("3 of 8 heads"):
            raise Killed

    with pytest.raises(Killed):
        I.head_importance(model, task, ["ablation_zero"], batch=batch, checkpoint=ck, progress=kill_at_3)
    other = task.make(model, n=3, seed=1)
    with pytest.raises(ValueError, match=r"imp\.ablation_zero\.pt.*other settings \(differs in: prompts\)"):
        I.head_importance(model, task, ["ablation_zero"], batch=other, checkpoint=ck)
    with pytest.raises(TypeError, match="head_importance: checkpoint must be a file path"):
        I.head_importance(model, task, ["dla"], batch=batch, checkpoint=3)
    with pytest.raises(ValueError, match="head_importance: checkpoint .* is a folder"):
        I.head_importance(model, task, ["dla"], batch=batch, checkpoint=tmp_path)
