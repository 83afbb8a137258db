"""train_gates(checkpoint=PATH): gate training saved after every step; a rerun after a kill, or with more steps,
continues and gives the gates and losses of an uninterrupted run; other options and damaged files are refused."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.analyses import duo

KW = dict(context=96, l1=0.1, lr=0.2, sink_tokens=1, window=8)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def model():
    return interp.load("toy-needle")


@pytest.fixture(scope="module")
def full(model):
    return duo.train_gates(model, steps=12, **KW)


def test_a_killed_training_continues_to_the_same_gates(model, full, tmp_path, monkeypatch):
    ck, steps = tmp_path / "gates.pt", []
    real = duo._final_hidden

    def final_hidden(m, ids, interventions=(), grad=False):  # the 7th step's forward is killed
        if grad:
            steps.append(1)
            if len(steps) == 7:
                raise Killed
        return real(m, ids, interventions, grad)

    monkeypatch.setattr(duo, "_final_hidden", final_hidden)
    with pytest.raises(Killed):
        duo.train_gates(model, steps=12, checkpoint=ck, **KW)
    assert torch.load(ck)["state"]["step"] == 6
    steps.clear()
    said = []
    got = duo.train_gates(model, steps=12, checkpoint=ck, log=said.append, **KW)
    assert len(steps) == 6 and said[0] == f"resume: {ck} after step 5"
    assert torch.equal(got.alpha, full.alpha) and got.losses == full.losses

    # a finished run trained further: 8 steps, then 12 from its file, equal 12 straight
    ck2 = tmp_path / "more.pt"
    monkeypatch.setattr(duo, "_final_hidden", real)
    duo.train_gates(model, steps=8, checkpoint=ck2, **KW)
    monkeypatch.setattr(duo, "_final_hidden", final_hidden)
    steps.clear()
    more = duo.train_gates(model, steps=12, checkpoint=ck2, **KW)
    assert len(steps) == 4 and torch.equal(more.alpha, full.alpha) and more.losses == full.losses
    with pytest.raises(ValueError, match=r"holds 12 training steps, more than steps=5; pass steps >= 12"):
        duo.train_gates(model, steps=5, checkpoint=ck2, **KW)


def test_other_options_and_damaged_files_are_refused(model, tmp_path):
    ck = tmp_path / "g.pt"
    duo.train_gates(model, steps=2, checkpoint=ck, **KW)
    with pytest.raises(ValueError, match=r"g\.pt was written under other settings \(differs in: l1\)"):
        duo.train_gates(model, steps=3, checkpoint=ck, **dict(KW, l1=0.2))
    saved = torch.load(ck)
    for change, match in [(lambda s: s.pop("rng"), "its state must hold"),
                          (lambda s: s.update(step=0), r"'step' must be an int >= 1"),
                          (lambda s: s.update(logits=torch.full((2, 4), float("nan"))), "'logits' must be a finite"),
                          (lambda s: s.update(losses=[(1.0, 0.5)]), r"'losses' must be a list of 2"),
                          (lambda s: s.update(adam={"state": 3}), "Adam or generator state does not load")]:
        state = {k: v for k, v in saved["state"].items()}
        change(state)
        bad = tmp_path / "bad.pt"
        torch.save({"settings": saved["settings"], "state": state}, bad)
        with pytest.raises(ValueError, match=rf"checkpoint {bad} is damaged or not a gate-training checkpoint: "
                                             rf".*{match}"):
            duo.train_gates(model, steps=3, checkpoint=bad, **KW)
    with pytest.raises(TypeError, match="train_gates: checkpoint must be a file path"):
        duo.train_gates(model, steps=1, checkpoint=1.5, **KW)
    with pytest.raises(ValueError, match="train_gates: checkpoint .* is a folder"):
        duo.train_gates(model, steps=1, checkpoint=tmp_path, **KW)
