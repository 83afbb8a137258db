"""Long jobs, continued (tests/test_long_jobs.py has edge patching's sweep and the circuit shard's progress): the
importance job's ablation sweeps and pruning curves keep their progress inside the shard and continue it after a
kill; a batch job's own checkpoint that is damaged is named and started over, not a crash; `run_circuit_job` keeps
edge patching's sweep and does not reuse the scores of a task with other options."""

from __future__ import annotations

import functools

import pandas as pd
import pytest
import torch

import interp
from interp.analyses import circuits as C
from interp.analyses import importance as I
from interp.analyses import tasks as T
from interp.analyses.circuits import acdc as A
from interp.analyses.circuits import patching
from interp.batch import importance as BI
from interp.batch.circuit import circuit


class Killed(Exception):
    pass


def kill_at(monkeypatch, module, text: str, seen: list):
    """`module.shard_progress` records every message and raises Killed at the first one containing `text` (a kill
    right after the shard reported that progress)."""

    def progress(msg):
        seen.append(msg)
        if text is not None and text in msg:
            raise Killed(msg)

    monkeypatch.setattr(module, "shard_progress", progress)


IMP = dict(task="induction", n=4, progress=False, log=lambda *a: None)


def test_importance_ablation_sweep_continues_after_a_kill(tmp_path, monkeypatch):
    monkeypatch.setattr(I, "LOGIT_BUDGET", 1)  # one head per forward: 8 forwards on the toy
    plain = BI.importance(["toy-induction"], tmp_path / "plain", methods=["ablation_zero"], pruning=False, **IMP)
    out, seen = tmp_path / "k", []
    kill_at(monkeypatch, BI, "3 of 8 heads ablated", seen)
    with pytest.raises(Killed):
        BI.importance(["toy-induction"], out, methods=["ablation_zero"], pruning=False, **IMP)
    (ck,) = (out / "shards" / "toy-induction").glob("ablation_zero.partial-*.pt")
    seen.clear()
    kill_at(monkeypatch, BI, None, seen)
    again = BI.importance(["toy-induction"], out, methods=["ablation_zero"], pruning=False, resume=True, **IMP)
    assert seen[0] == "3 of 8 heads ablated" and len(seen) == 6, seen  # continued after the third head
    pd.testing.assert_frame_equal(again, plain)
    assert not ck.exists()  # the shard file holds the result now

    # a damaged checkpoint of the job's own is named and the shard started over, with the same table
    seen.clear()
    kill_at(monkeypatch, BI, "3 of 8 heads ablated", seen)
    with pytest.raises(Killed):
        BI.importance(["toy-induction"], tmp_path / "d", methods=["ablation_zero"], pruning=False, **IMP)
    (ck,) = (tmp_path / "d" / "shards" / "toy-induction").glob("ablation_zero.partial-*.pt")
    ck.write_bytes(ck.read_bytes()[:50])
    said = []
    kill_at(monkeypatch, BI, None, [])
    again = BI.importance(["toy-induction"], tmp_path / "d", methods=["ablation_zero"], pruning=False, resume=True,
                          **dict(IMP, log=said.append))
    assert any(s.startswith(f"note: checkpoint {ck} is not a head-ablation checkpoint") and
               s.endswith("starting toy-induction ablation_zero over") for s in said), said
    pd.testing.assert_frame_equal(again, plain)


def test_shards_under_their_former_names_are_reused(tmp_path, monkeypatch):
    """The ablation shards were named zero_ablation / mean_ablation / resample_ablation before they took the
    methods' names: a run folder from then resumes without recomputing, its finished shard and its unfinished
    checkpoint both."""
    monkeypatch.setattr(I, "LOGIT_BUDGET", 1)  # one head per forward: 8 forwards on the toy
    plain = BI.importance(["toy-induction"], tmp_path / "plain", methods=["ablation_zero"], pruning=False, **IMP)
    folder = tmp_path / "plain" / "shards" / "toy-induction"
    (folder / "ablation_zero.json").rename(folder / "zero_ablation.json")
    said, seen = [], []
    kill_at(monkeypatch, BI, None, seen)
    again = BI.importance(["toy-induction"], tmp_path / "plain", methods=["ablation_zero"], pruning=False,
                          resume=True, **dict(IMP, log=said.append))
    assert seen == [] and any("zero_ablation.json is now ablation_zero.json" in s for s in said), (seen, said)
    pd.testing.assert_frame_equal(again, plain)

    out = tmp_path / "k"
    kill_at(monkeypatch, BI, "3 of 8 heads ablated", seen)
    with pytest.raises(Killed):
        BI.importance(["toy-induction"], out, methods=["ablation_zero"], pruning=False, **IMP)
    (ck,) = (out / "shards" / "toy-induction").glob("ablation_zero.partial-*.pt")
    ck.rename(ck.with_name("zero_ablation" + ck.name[len("ablation_zero"):]))
    seen.clear()
    kill_at(monkeypatch, BI, None, seen)
    again = BI.importance(["toy-induction"], out, methods=["ablation_zero"], pruning=False, resume=True, **IMP)
    assert seen[0] == "3 of 8 heads ablated" and len(seen) == 6, seen  # continued after the third head
    pd.testing.assert_frame_equal(again, plain)


def test_ablated_losses_checkpoint_refuses_another_sweep(tmp_path):
    model = interp.load("toy-induction")
    task = T.get_task("induction", half=6)
    batch = task.make(model, n=3, seed=0)
    ck, said = tmp_path / "a.pt", []

    def stop_at_4(done, total):
        said.append(done)
        if done == 4:
            raise Killed

    full = I.ablated_losses(model, task, batch, heads_per_forward=2)
    with pytest.raises(Killed):
        I.ablated_losses(model, task, batch, heads_per_forward=2, checkpoint=ck, progress=stop_at_4)
    said.clear()
    got = I.ablated_losses(model, task, batch, heads_per_forward=2, checkpoint=ck,
                           progress=lambda done, total: said.append(done))
    assert said == [4, 6, 8] and torch.equal(got, full)
    with pytest.raises(ValueError, match=r"other settings \(differs in: baseline, kind\)"):
        I.ablated_losses(model, task, batch, "ablation_mean", heads_per_forward=2, checkpoint=ck)
    with pytest.raises(ValueError, match=r"other settings \(differs in: prompts\)"):
        I.ablated_losses(model, task, task.make(model, n=3, seed=1), heads_per_forward=2, checkpoint=ck)


def test_pruning_shard_shows_progress_and_continues_after_a_kill(tmp_path, monkeypatch):
    kw = dict(IMP, methods=["dla"], pruning_step=0.25)
    plain = tmp_path / "plain"
    BI.importance(["toy-induction"], plain, **kw)
    out, seen = tmp_path / "k", []
    kill_at(monkeypatch, BI, "1 of 2 pruning curves", seen)  # toy: the task's curve in mask-gradient, random order
    with pytest.raises(Killed):
        BI.importance(["toy-induction"], out, **kw)
    seen.clear()
    kill_at(monkeypatch, BI, None, seen)
    BI.importance(["toy-induction"], out, resume=True, **kw)
    assert seen[0].startswith("resume: 1 of 2 curves from pruning.partial-"), seen
    assert seen[1:] == ["2 of 2 pruning curves (induction, random order)"], seen
    pd.testing.assert_frame_equal(pd.read_csv(out / "pruning.csv"), pd.read_csv(plain / "pruning.csv"))


# ------------------------------------------------------------------------------------------------ circuits
HALF, N, TAU = 6, 3, 0.01
ACDC = dict(task="induction", task_options={"half": HALF}, method="acdc", n=N, faith_n=N, ablation="resample",
            method_options={"tau": TAU}, progress=False)


def kept(folder) -> set:
    e = pd.read_csv(folder / "edges.csv")
    return {(r.src, r.dst, r.dst_input) for r in e.itertuples() if r.in_circuit}


def test_damaged_acdc_shard_checkpoint_is_started_over(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    circuit(["toy-induction"], plain, log=lambda *a: None, **ACDC)
    real, n = A._receiver, []

    def receiver(*args):
        if len(n) == 3:
            raise Killed
        n.append(1)
        return real(*args)

    out = tmp_path / "k"
    monkeypatch.setattr(A, "_receiver", receiver)
    with pytest.raises(Killed):
        circuit(["toy-induction"], out, log=lambda *a: None, **ACDC)
    monkeypatch.setattr(A, "_receiver", real)
    (ck,) = (out / "shards" / "toy-induction").glob("circuit.partial-*.pt")
    ck.write_bytes(b"not a checkpoint")
    said = []
    circuit(["toy-induction"], out, resume=True, log=said.append, **ACDC)  # was: ValueError "delete it or pass ..."
    assert any(s.startswith(f"note: checkpoint {ck} is not an ACDC checkpoint") for s in said), said
    assert kept(out / "toy-induction") == kept(plain / "toy-induction") and not ck.exists()


def test_run_circuit_job_does_not_reuse_scores_of_other_prompts(tmp_path):
    model = interp.load("toy-induction")
    kw = dict(n=4, faith_n=4, top_n=10)
    C.run_circuit_job(model, T.get_task("induction", half=6), "eap", tmp_path / "a", progress=None, **kw)
    said = []
    other = C.run_circuit_job(model, T.get_task("induction", half=10), "eap", tmp_path / "a", progress=said.append,
                              **kw)
    assert not any(s.startswith("resume:") for s in said), said  # was: half=6's scores and faithfulness, reused
    fresh = C.run_circuit_job(model, T.get_task("induction", half=10), "eap", tmp_path / "b", progress=None, **kw)
    torch.testing.assert_close(other.scores, fresh.scores, equal_nan=True)
    assert other.meta["results"] == fresh.meta["results"]


def test_run_circuit_job_patching_continues_after_a_kill(tmp_path, monkeypatch):
    model = interp.load("toy-induction")
    task = T.get_task("induction", half=6)
    kw = dict(n=3, faith_n=3, top_n=10, ablation="corrupted", method_options={"chunk": 8})
    plain = C.run_circuit_job(model, task, "patching", tmp_path / "plain", progress=None, **kw)
    real = patching.edge_patching
    monkeypatch.setattr(patching, "edge_patching", functools.partial(real, save_every_s=0.0))  # save every chunk

    def kill_at_second_save(msg):
        if msg.startswith("patched 16 of"):
            raise Killed

    out = tmp_path / "k"
    with pytest.raises(Killed):  # was: no checkpoint, so no save and no progress line (the sweep ran to the end)
        C.run_circuit_job(model, task, "patching", out, progress=kill_at_second_save, **kw)
    (ck,) = out.glob("patching-*.pt.b0")
    said = []
    again = C.run_circuit_job(model, task, "patching", out, progress=said.append, **kw)
    assert f"resume: {ck} at edge 16 of 81" in said, said
    torch.testing.assert_close(again.scores, plain.scores, equal_nan=True)
    assert not list(out.glob("patching-*")) and torch.equal(again.in_circuit, plain.in_circuit)

    # a damaged sweep file is named and the sweep started over
    with pytest.raises(Killed):
        C.run_circuit_job(model, task, "patching", tmp_path / "d", progress=kill_at_second_save, **kw)
    (ck,) = (tmp_path / "d").glob("patching-*.pt.b0")
    ck.write_text("junk")
    said = []
    again = C.run_circuit_job(model, task, "patching", tmp_path / "d", progress=said.append, **kw)
    assert any(s.startswith(f"checkpoint {ck} is not an edge-patching checkpoint") and s.endswith("over")
               for s in said), said
    torch.testing.assert_close(again.scores, plain.scores, equal_nan=True)


# ------------------------------------------------------------------------------------------------ review fixes
def test_ablated_losses_checkpoint_refuses_another_dtype(tmp_path):
    # was: a float32 sweep's losses continued under bfloat16 (mixed losses, 0.03 off an uninterrupted bf16 sweep)
    task = T.get_task("induction", half=6)
    m32, m16 = interp.load("toy-induction"), interp.load("toy-induction", dtype=torch.bfloat16)
    ck = tmp_path / "a.pt"

    def stop_at_4(done, total):
        if done == 4:
            raise Killed

    with pytest.raises(Killed):
        I.ablated_losses(m32, task, task.make(m32, n=3, seed=0), heads_per_forward=2, checkpoint=ck, progress=stop_at_4)
    with pytest.raises(ValueError, match=r"other settings \(differs in: dtype\)"):
        I.ablated_losses(m16, task, task.make(m16, n=3, seed=0), heads_per_forward=2, checkpoint=ck)
    said = []  # the same dtype still continues
    I.ablated_losses(m32, task, task.make(m32, n=3, seed=0), heads_per_forward=2, checkpoint=ck,
                     progress=lambda done, total: said.append(done))
    assert said == [4, 6, 8]


def test_discard_removes_only_the_checkpoints_own_files(tmp_path):
    from interp.analyses.circuits.checkpoints import discard, is_unusable, unusable

    base = "acdc_tau0.01-abc.pt"
    own = [base, base + ".tmp", base + ".b0", base + ".b12", base + ".b0.tmp"]
    others = [base + ".bak", base + "2", "acdc_tau0.01-abcd.pt", "acdc_tau0.01-abc.pt.b0.copy", "scores.pt"]
    for n in own + others:
        (tmp_path / n).write_text("x")
    discard(tmp_path / base)  # was: a glob PATH*, which also removed PATH.bak, PATH2, ...
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
    assert all(is_unusable(unusable(tmp_path / n, "m"), tmp_path / base) for n in own)
    assert not any(is_unusable(unusable(tmp_path / n, "m"), tmp_path / base) for n in others)
    discard(tmp_path / "missing" / base)  # no folder: nothing to do


def test_run_circuit_job_says_why_an_older_scores_file_is_recomputed(tmp_path):
    model = interp.load("toy-induction")
    task, kw = T.get_task("induction", half=6), dict(n=4, faith_n=4, top_n=10)
    C.run_circuit_job(model, task, "eap", tmp_path, progress=None, **kw)
    saved = torch.load(tmp_path / "scores.pt", weights_only=False)
    saved["settings"].pop("prompts")  # as written before the prompts digest
    torch.save(saved, tmp_path / "scores.pt")
    said = []
    C.run_circuit_job(model, task, "eap", tmp_path, progress=said.append, **kw)
    assert said[0].endswith("predates the prompts digest in its settings (its prompts cannot be checked); "
                            "recomputing once"), said
    said.clear()
    C.run_circuit_job(model, task, "eap", tmp_path, progress=said.append, **kw)
    assert said[0] == f"resume: scores from {tmp_path / 'scores.pt'}", said
