"""Toy tasks (ground truth by construction) and the trainer's options."""

import dataclasses
import json

import pytest
import torch

from interp.toy.registry import CKPT_DIR, toy_task
from interp.toy.tasks import BOS, TASKS, BigramBackcopyTask, make_task


def test_prose_bigram_chain_and_backcopy():
    task = TASKS["bigram_backcopy"]
    assert task.source == "prose" and task.vocab_size == len(task._chars()) + 1
    assert task.decode(torch.arange(1, task.n_triggers + 1)) == "eta"  # the three most frequent letters
    probs = task.transitions()
    torch.testing.assert_close(probs.sum(-1), torch.ones(task.vocab_size))
    assert (probs[:, BOS] == 0).all()  # BOS never recurs
    assert (probs[1:, 1:] >= task.smoothing / (task.vocab_size - 1) - 1e-7).all()  # smoothing: no absorbing loops
    toks, mask = task.sample(8, torch.Generator().manual_seed(0), seq_len=97)  # an awkward length
    assert toks.shape == mask.shape == (8, 97) and (toks[:, 0] == BOS).all() and (toks[:, 1:] != BOS).all()
    trig = task.is_trigger(toks)
    i = trig[:, 1:-1].nonzero()  # triggers at positions 1..n-2: the next token copies the one before
    assert len(i) > 50
    b, t = i[:, 0], i[:, 1] + 1
    assert (toks[b, t + 1] == toks[b, t - 1]).all()
    assert mask[:, 1:-1].all() and not mask[:, [0, -1]].any()  # scored: every prediction with a defined answer
    text = task.decode(toks[0])
    assert text[0] == "^" and len(text) == 97


def test_bigram_task_options_validate():
    with pytest.raises(ValueError, match="source must be"):
        BigramBackcopyTask(source="shakespeare")
    with pytest.raises(ValueError, match="smoothing"):
        BigramBackcopyTask(smoothing=1.5)
    with pytest.raises(ValueError, match="n_triggers"):
        BigramBackcopyTask(vocab_size=8, n_triggers=7)
    with pytest.raises(ValueError, match="decode needs"):
        BigramBackcopyTask().decode([1, 2])
    random_chain = BigramBackcopyTask(source="random", vocab_size=20, branching=2)
    probs = random_chain.transitions()
    assert ((probs > 0).sum(-1)[1:] <= 2).all()  # sparse: `branching` successors each
    sharp = dataclasses.replace(TASKS["bigram_backcopy"], smoothing=0.0)
    assert (sharp.transitions() == 0).any()
    assert make_task("bigram_backcopy", {"seq_len": 32}).seq_len == 32
    with pytest.raises(ValueError, match="unknown option"):
        make_task("bigram_backcopy", {"seqlen": 32})
    with pytest.raises(ValueError, match="unknown task"):
        make_task("copy")


def test_toy_task_follows_the_checkpoint_task_args(tmp_path, monkeypatch):
    spec = json.loads((CKPT_DIR / "toy-bigram-backcopy.json").read_text())
    assert toy_task("toy-bigram-backcopy") == TASKS["bigram_backcopy"]  # the shipped one has no overrides
    (tmp_path / "toy-bigram-backcopy.json").write_text(json.dumps(dict(spec, task_args={"seq_len": 32})))
    monkeypatch.setattr("interp.toy.registry.CKPT_DIR", tmp_path)
    assert toy_task("toy-bigram-backcopy").seq_len == 32


def test_trainer_runs_a_variant_and_logs_the_mechanism(tmp_path):
    from interp.toy.model import load_checkpoint
    from interp.toy.train import train

    lines = []
    small = dict(d_model=32, d_mlp=64, n_layers=1, n_heads=1, n_ctx=64, attn_only=False, init_seed=0)
    res = train("toy-bigram-backcopy", tmp_path, log=lines.append, spec=small, steps=3, batch=4, lr=1e-3,
                schedule="onecycle", amp=False, log_every=2, task_args={"seq_len": 40, "source": "random"})
    assert {"eval_loss", "eval_acc", "bos_attn_nontrigger", "prev_attn_trigger"} <= set(res)
    assert 0.0 <= res["bos_attn_nontrigger"] <= 1.0 and any("bos_attn_nontrigger" in s for s in lines)
    spec = json.loads((tmp_path / "toy-bigram-backcopy.json").read_text())
    assert spec["task_args"] == {"seq_len": 40, "source": "random"}
    assert spec["vocab_size"] == TASKS["bigram_backcopy"].vocab_size  # replacing the source keeps the vocabulary
    model = load_checkpoint(tmp_path / "toy-bigram-backcopy.safetensors", tmp_path / "toy-bigram-backcopy.json")
    assert model.config.hidden_size == 32
    two = dict(small, n_layers=2)
    res = train("toy-bigram-backcopy", tmp_path, log=lines.append, spec=two, steps=2, batch=2, max_seconds=0.0,
                amp=False, task_args={"seq_len": 24})
    assert any("stopped at step 1" in s for s in lines)  # a time budget stops early and says so
    assert res["copy_layer"] in (0, 1)  # with several layers the probe names the layer it reads
