"""Retrieval heads: the harness, Wu et al.'s score on hand-made cases, and the toy needle model's known heads."""

import pytest
import torch

import interp
from interp.analyses import retrieval as R


def test_rouge1_recall():
    assert R.rouge1_recall([5, 6, 7], [5, 6, 7]) == 1.0
    assert R.rouge1_recall([7, 5], [5, 6, 7]) == pytest.approx(2 / 3)
    assert R.rouge1_recall([5, 5, 5], [5, 6]) == 0.5  # each reference token counts once
    assert R.rouge1_recall([], [1]) == 0.0


def test_copy_hits_by_hand():
    prompt = [0, 9, 1, 20, 21, 22, 9, 9, 1]  # needle values 20 21 22 at positions 3..5
    span = (3, 6)
    generated = [20, 21, 30]
    # 1 layer x 3 heads; head 0 copies each needle token, head 1 looks at the right place once but the token
    # generated at step 3 (30) is not there, head 2 attends outside the needle
    argmax = torch.tensor([[[3, 3, 1]], [[4, 0, 7]], [[5, 5, 8]]])
    hits = R.copy_hits(generated, argmax, prompt, span)
    assert hits.tolist() == [[2.0, 1.0, 0.0]]


def test_trials_respect_context_and_locate_the_needle():
    toy = interp.load("toy-needle")
    trials = R.make_trials(toy, contexts=(64, 200), depths=(0.0, 0.5, 1.0))
    for tr in trials:
        s, e = tr.needle_span
        assert tr.input_ids[0, s:e].tolist() == tr.answer
        assert tr.input_ids.shape[1] == tr.context - len(tr.answer)
    with pytest.raises(ValueError, match="maximum context 256"):
        R.make_trials(toy, contexts=(300,))
    with pytest.raises(ValueError, match="depth"):
        R.make_trials(toy, contexts=(64,), depths=(1.5,))


def test_text_trials_use_the_models_tokenizer(smollm2):
    trials = R.make_trials(smollm2, contexts=(300,), depths=(0.3,))
    tr = trials[0]
    s, e = tr.needle_span
    assert tr.input_ids[0, s:e].tolist() == tr.answer
    assert abs(tr.input_ids.shape[1] - 300) <= 2
    assert "secret code" in smollm2.to_string(tr.input_ids[0])


def test_toy_needle_retrieval_heads_are_its_copying_heads():
    m = interp.load("toy-needle")
    trials = R.make_trials(m, contexts=(64, 160), depths=(0.1, 0.5, 0.9))
    scores, per_trial = R.retrieval_scores(m, trials)
    assert per_trial["answered"].all()
    retrieval = scores >= 0.1
    assert retrieval[1].all() and not retrieval[0].any()  # the second layer copies; the first does not
    ablated = R.needle_accuracy(m, trials, [interp.HeadAblation(layer=1, heads=[0, 1, 2, 3])])
    assert ablated["recall"] < 0.3
    base = R.needle_accuracy(m, trials)
    assert base["recall"] == 1.0 and base["answer_loss"] < ablated["answer_loss"]
