"""`interp circuit --method acdc|sae`: the written circuit is ACDC's own kept edge set (the API's, not a top-n
re-selection), a killed ACDC shard resumes from its per-receiver checkpoint to the same circuit, and SAE is scored
and selected like the other scoring methods. Bad input: tests/test_cli_circuit.py (BAD)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import interp
from interp.analyses import circuits as C
from interp.analyses import tasks as T
from interp.analyses.circuits import acdc as A
from interp.batch.circuit import circuit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from circuits_toy import known_circuit  # noqa: E402

# resample ablation destroys the previous-token head's output on every position, so ACDC needs the whole known
# circuit (13 edges); the induction task's own corruption (fresh second half) leaves the first-half keys unchanged
HALF, N, TAU = 6, 3, 0.01
KW = dict(task="induction", task_options={"half": HALF}, method="acdc", n=N, faith_n=N, ablation="resample",
          progress=False, log=lambda *a: None)


@pytest.fixture(scope="module")
def toy():
    model = interp.load("toy-induction")
    return model, C.Graph.from_model(model)


def api_acdc(model, graph, tau):
    task = T.get_task("induction", half=HALF)
    batch = task.make(model, n=N, seed=0)
    return C.find_circuit(model, task, batch, method="acdc", tau=tau, ablation="resample", graph=graph)


def kept_set(folder: Path) -> set:
    e = pd.read_csv(folder / "edges.csv")
    return {(r.src, r.dst, r.dst_input) for r in e.itertuples() if r.in_circuit}


def as_set(c) -> set:
    return {(r["src"], r["dst"], r["dst_input"]) for r in c.edges() if r["in_circuit"]}


def test_cli_acdc_writes_acdcs_own_kept_set(toy, tmp_path):
    model, graph = toy
    out = tmp_path / "c"
    r = subprocess.run([sys.executable, "-m", "interp.cli", "circuit", "toy-induction", "--task", "induction",
                        "--task-option", f"half={HALF}", "--n", str(N), "--faith-n", str(N), "--method", "acdc",
                        "--ablation", "resample", "--method-option", f"tau={TAU}", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    ref = api_acdc(model, graph, TAU)
    known = known_circuit(graph)
    assert bool(ref.in_circuit[known].all()) and 13 < ref.n_edges < graph.n_edges  # the API: all 13 known, + extras
    folder = out / "toy-induction"
    assert kept_set(folder) == as_set(ref)  # ACDC's own set, not the top 200 (= all 81) edges by score
    assert f"{ref.n_edges} of 81 edges (kept by ACDC at tau=0.01)" in r.stdout
    e = pd.read_csv(folder / "edges.csv")
    api_scores = {(x["src"], x["dst"], x["dst_input"]): x["score"] for x in ref.edges()}
    for x in e.itertuples():  # edges.csv keeps 6 significant digits
        assert x.score == pytest.approx(api_scores[(x.src, x.dst, x.dst_input)], rel=6e-6, abs=1e-9)
    back = C.read_json(folder / "graph.json", model)
    assert torch.equal(back.in_circuit, ref.in_circuit)
    meta = json.loads((folder / "graph.json").read_text())["meta"]
    assert meta["tau"] == TAU and "top_n" not in meta and meta["acdc"]["complete"] is True
    assert meta["n_edges_unreached"] == int((ref.in_circuit & ~C.prune_to_connected(graph, ref.in_circuit)).sum())
    nodes = pd.read_csv(folder / "nodes.csv")
    assert set(nodes.node[nodes.in_circuit == 1]) == set(ref.nodes_in_circuit())
    # the circuit's f and size are those of ACDC's set (same prompts and ablation as the API's own evaluation)
    s = pd.read_csv(out / "summary.csv")
    assert list(s.n_edges_circuit) == [ref.n_edges] and list(s.eval_ablation) == ["resample"]
    assert s.f_circuit[0] == pytest.approx(ref.meta["faithfulness"]["f"], abs=1e-4)
    curve = json.loads((folder / "faithfulness.json").read_text())["curves"]["resample"]
    assert curve["circuit"]["n_edges"] == ref.n_edges and len(curve["f"]) == 10  # the |score| curve is still there
    assert not list((out / "shards" / "toy-induction").glob("*.partial-*"))  # the checkpoint went with the shard


def test_other_tau_other_set_and_python_api(toy, tmp_path):
    model, graph = toy
    ref = api_acdc(model, graph, 0.05)
    table = circuit(["toy-induction"], tmp_path / "p", method_options={"tau": 0.05}, **KW)
    assert kept_set(tmp_path / "p" / "toy-induction") == as_set(ref)
    assert list(table.n_edges_circuit) == [ref.n_edges] and ref.n_edges < api_acdc(model, graph, TAU).n_edges
    # top_n / select do not change ACDC's circuit
    circuit(["toy-induction"], tmp_path / "q", method_options={"tau": 0.05}, top_n=3, select="greedy", **KW)
    assert kept_set(tmp_path / "q" / "toy-induction") == as_set(ref)


class Kill(Exception):
    pass


def test_killed_acdc_shard_resumes_to_the_same_circuit(toy, tmp_path, monkeypatch):
    model, graph = toy
    ref = api_acdc(model, graph, TAU)
    real, seen = A._receiver, []

    def receiver(obj, st, slot, tau, window, kill_after=None):
        if kill_after is not None and len(seen) >= kill_after:
            raise Kill("simulated kill")
        seen.append(slot)
        return real(obj, st, slot, tau, window)

    out = tmp_path / "k"
    monkeypatch.setattr(A, "_receiver", lambda *a: receiver(*a, kill_after=3))
    with pytest.raises(Kill):
        circuit(["toy-induction"], out, method_options={"tau": TAU}, **KW)
    shard_dir = out / "shards" / "toy-induction"
    (ck,) = shard_dir.glob("circuit.partial-*.pt")
    assert not (shard_dir / "circuit.json").exists() and not (out / "summary.csv").exists()
    assert torch.load(ck)["state"]["next"] >= 3
    first = list(seen)

    # resumed: only the receivers after the checkpoint are tested, and the circuit is ACDC's uninterrupted one
    seen.clear()
    monkeypatch.setattr(A, "_receiver", lambda *a: receiver(*a))
    circuit(["toy-induction"], out, method_options={"tau": TAU}, resume=True, **KW)
    assert seen and not set(seen) & set(first)
    assert kept_set(out / "toy-induction") == as_set(ref)
    assert not ck.exists() and (shard_dir / "circuit.json").exists()

    # a fresh run (no --resume) after a kill starts over: it does not continue the checkpoint
    out2 = tmp_path / "f"
    seen.clear()
    monkeypatch.setattr(A, "_receiver", lambda *a: receiver(*a, kill_after=3))
    with pytest.raises(Kill):
        circuit(["toy-induction"], out2, method_options={"tau": TAU}, **KW)
    seen.clear()
    monkeypatch.setattr(A, "_receiver", lambda *a: receiver(*a))
    circuit(["toy-induction"], out2, method_options={"tau": TAU}, **KW)
    assert seen[:3] == first[:3]
    assert kept_set(out2 / "toy-induction") == as_set(ref)

    # a resume with another tau does not continue (or trip over) the other search's checkpoint
    out3 = tmp_path / "t"
    seen.clear()
    monkeypatch.setattr(A, "_receiver", lambda *a: receiver(*a, kill_after=3))
    with pytest.raises(Kill):
        circuit(["toy-induction"], out3, method_options={"tau": TAU}, **KW)
    seen.clear()
    monkeypatch.setattr(A, "_receiver", lambda *a: receiver(*a))
    circuit(["toy-induction"], out3, method_options={"tau": 0.05}, resume=True, **KW)
    assert seen[:3] == first[:3]
    assert kept_set(out3 / "toy-induction") == as_set(api_acdc(model, graph, 0.05))


def test_sae_is_scored_then_selected(tmp_path):
    """SAE gives edge scores (code separation in [0, 1]), not an edge set: the job selects from them."""
    out = tmp_path / "s"
    kw = dict(KW, method="sae", n=5, faith_n=5, ablation="corrupted", select="greedy", top_n=6)
    table = circuit(["toy-induction"], out, **kw)
    e = pd.read_csv(out / "toy-induction" / "edges.csv")
    assert e.score.between(0, 1).all() and 0 < e.in_circuit.sum() <= 6
    assert list(table.n_edges_circuit) == [int(e.in_circuit.sum())]
    meta = json.loads((out / "toy-induction" / "graph.json").read_text())["meta"]
    assert meta["method"] == "sae" and meta["top_n"] == 6 and meta["select"] == "greedy"


def test_run_circuit_job_acdc_keeps_acdcs_set_and_resumes(toy, tmp_path):
    model, graph = toy
    ref = api_acdc(model, graph, TAU)
    task = T.get_task("induction", half=HALF)
    kw = dict(n=N, faith_n=N, ablation="resample", eval_ablations=("resample",), method_options={"tau": TAU})
    msgs = []
    c = C.run_circuit_job(model, task, "acdc", tmp_path, progress=msgs.append, **kw)
    assert torch.equal(c.in_circuit, ref.in_circuit) and kept_set(tmp_path) == as_set(ref)
    assert f"ACDC kept {ref.n_edges} edges at tau=0.01" in msgs
    assert not list(tmp_path.glob("acdc_tau*.pt"))  # the finished search lives in scores.pt
    msgs.clear()
    again = C.run_circuit_job(model, task, "acdc", tmp_path, progress=msgs.append, **kw)
    assert any(m.startswith("resume: scores from") for m in msgs)
    assert torch.equal(again.in_circuit, ref.in_circuit)
    assert again.meta["results"]["faithfulness"]["resample"]["circuit"]["n_edges"] == ref.n_edges
