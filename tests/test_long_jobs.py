"""Long circuit jobs report progress while a shard runs and lose nothing already computed: edge patching's sweep is
checkpointed and continued after a kill, and `interp circuit` shows the shard's progress lines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from test_badinput_circuits import induction_setup

from interp.analyses import circuits as C
from interp.analyses import tasks as T
from interp.analyses.circuits.patching import edge_patching
from interp.batch import runner


@pytest.fixture(scope="module")
def setup():
    model, _, _, graph, clean, _, ablated, metric = induction_setup()
    return model, graph, clean, ablated, metric


class Killed(Exception):
    pass


def test_edge_patching_continues_after_a_kill(setup, tmp_path):
    model, graph, clean, ablated, metric = setup
    full = edge_patching(model, graph, clean, ablated, metric, chunk=8)
    ck = tmp_path / "sweep.pt"
    said = []

    def kill_at_second_save(msg):
        said.append(msg)
        if len(said) == 2:
            raise Killed  # a kill between two saves: the first save's edges are on disk

    with pytest.raises(Killed):
        edge_patching(model, graph, clean, ablated, metric, chunk=8, checkpoint=ck, progress=kill_at_second_save,
                      save_every_s=0.0)
    assert said[0].startswith("patched 8 of 81 edges") and ck.exists()
    resumed = []
    again = edge_patching(model, graph, clean, ablated, metric, chunk=8, checkpoint=ck, progress=resumed.append,
                          save_every_s=1e9)
    assert resumed[0] == f"resume: {ck} at edge 16 of 81"
    torch.testing.assert_close(again, full, equal_nan=True)
    with pytest.raises(ValueError, match=r"written under other settings \(differs in: chunk\)"):
        edge_patching(model, graph, clean, ablated, metric, chunk=4, checkpoint=ck)
    with pytest.raises(ValueError, match=r"written under other settings \(differs in: data\)"):  # other ablation
        edge_patching(model, graph, clean, torch.zeros_like(ablated), metric, chunk=8, checkpoint=ck)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not an edge-patching checkpoint"):
        edge_patching(model, graph, clean, ablated, metric, chunk=8, checkpoint=tmp_path / "junk.pt")


def test_score_edges_passes_the_checkpoint_per_bucket(setup, tmp_path):
    model, graph, *_ = setup
    task = T.get_task("induction", half=6)
    batch = task.make(model, n=3, seed=0)
    plain = C.score_edges(model, graph, task, batch, "patching", chunk=8)
    ck = tmp_path / "s.pt"
    got = C.score_edges(model, graph, task, batch, "patching", chunk=8, checkpoint=ck, progress=print)
    torch.testing.assert_close(got, plain, equal_nan=True)
    (tmp_path / "s.pt.b0").write_text("junk")  # the first bucket's file is where its sweep would continue from
    with pytest.raises(ValueError, match=r"s\.pt\.b0 is not an edge-patching checkpoint"):
        C.score_edges(model, graph, task, batch, "patching", chunk=8, checkpoint=ck)


def test_shard_progress_is_throttled_and_silent_by_default(capsys):
    runner.shard_progress("nobody listens")  # outside a shard: silent
    assert capsys.readouterr().out == ""
    seen = []
    log = runner._throttled(seen.append, every_s=3600)
    for i in range(5):
        log(f"line {i}")
    assert seen == ["line 0"]


def test_circuit_cli_shows_progress_inside_the_shard(tmp_path):
    out = tmp_path / "c"
    r = subprocess.run([sys.executable, "-m", "interp.cli", "circuit", "toy-induction", "--task", "induction",
                        "--task-option", "half=6", "--n", "3", "--faith-n", "3", "--top-n", "12", "--method",
                        "patching", "--eval-ablations", "corrupted", "--out", str(out)],
                       capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1"))
    assert r.returncode == 0, r.stderr
    assert "toy-induction circuit: faithfulness under corrupted ablation" in r.stdout, r.stdout
    assert list((out / "shards").rglob("*.partial-*")) == []  # checkpoints gone once the shard is written
