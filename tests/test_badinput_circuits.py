"""Bad input to the circuit functions gets a clear TypeError / ValueError naming the argument and what is allowed,
before the work starts: token arguments, edges, metric return values, checkpoints (path, interval, damaged files)
and flags. Also: graph=None builds the model's graph everywhere, and find_circuit passes checkpoint / progress on."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.analyses import circuits as C
from interp.analyses import tasks as T
from interp.analyses.circuits import api, patching
from interp.analyses.circuits.acdc import acdc_task
from interp.analyses.circuits.graph import Graph
from interp.head_inputs import check_unpadded

TOKENS = r"clean prompts must be an integer tensor of token ids \[batch, pos\]"


def induction_setup():
    """toy-induction, its induction task (3 rows), graph, clean / corrupt ids, corrupted activations and the task's
    metric (shared with tests/test_long_jobs.py)."""
    model = interp.load("toy-induction")
    task = T.get_task("induction", half=6)
    batch = task.make(model, n=3, seed=0)
    graph = Graph.from_model(model)
    clean, corrupt = batch.clean.input_ids, batch.corrupt.input_ids
    ablated = patching.ablated_outputs(model, graph, clean, corrupt, "corrupted")

    def metric(lg):
        return task.metric(lg, batch)

    return model, task, batch, graph, clean, corrupt, ablated, metric


@pytest.fixture(scope="module")
def setup():
    return induction_setup()


# ---------------------------------------------------------------------------------------------- item 6: tokens
def test_check_unpadded_names_the_argument_and_the_forms(setup):
    model, task, batch, *_ = setup
    ids = batch.clean.input_ids
    assert check_unpadded(batch.clean, "clean prompts") is batch.clean.input_ids
    assert check_unpadded(ids) is ids
    with pytest.raises(ValueError, match=TOKENS + r".*got shape \(\d+,\); add the batch dimension: ids\[None\]"):
        check_unpadded(ids[0], "clean prompts")
    with pytest.raises(TypeError, match=TOKENS + r".*this is a TaskBatch: pass batch.clean"):
        check_unpadded(batch, "clean prompts")
    with pytest.raises(TypeError, match=TOKENS + r".*got str 'hello'.*model.to_tokens"):
        check_unpadded("hello", "clean prompts")
    with pytest.raises(TypeError, match=r"corrupted prompts must be .*got NoneType"):
        check_unpadded(None, "corrupted prompts")
    with pytest.raises(TypeError, match=TOKENS + r".*got a torch.float32 tensor"):
        check_unpadded(ids.float(), "clean prompts")
    with pytest.raises(ValueError, match=r"clean prompts are empty"):
        check_unpadded(ids[:0], "clean prompts")


BAD_TOKENS = {"1-D ids": lambda c: c[0], "text": lambda c: "the cat", "lists": lambda c: c.tolist(),
              "float ids": lambda c: c.float()}
CALLS = {
    "head_patching": lambda m, g, x, y, f, a: C.head_patching(m, x, y, f),
    "path_patching": lambda m, g, x, y, f, a: C.path_patching(m, x, y, f, ["L0H0"], ["logits"], graph=g, chunk=1),
    "input_patching": lambda m, g, x, y, f, a: C.input_patching(m, x, y, f, graph=g, chunk=1),
    "edge_patching": lambda m, g, x, y, f, a: C.edge_patching(m, g, x, a, f, edges=[[0, 0], [0, 24]], chunk=1),
    "ablated_outputs": lambda m, g, x, y, f, a: C.ablated_outputs(m, g, x, y),
    "eap": lambda m, g, x, y, f, a: C.eap(m, g, x, f, y),
    "eap_ig": lambda m, g, x, y, f, a: C.eap_ig(m, g, x, f, y, steps=1),
    "eap_ig_act": lambda m, g, x, y, f, a: C.eap_ig_act(m, g, x, f, y, steps=1),
    "atp_nodes": lambda m, g, x, y, f, a: C.atp_nodes(m, x, y, f),
    "atp_star": lambda m, g, x, y, f, a: C.atp_star(m, g, x, f, y),
    "atp_heads": lambda m, g, x, y, f, a: C.atp_heads(m, x, f, y),
}


@pytest.mark.parametrize("bad", sorted(BAD_TOKENS))
@pytest.mark.parametrize("call", sorted(CALLS))
def test_circuit_functions_refuse_bad_clean_tokens(setup, call, bad):
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    x = BAD_TOKENS[bad](clean)
    y = BAD_TOKENS[bad](corrupt)
    err = ValueError if bad == "1-D ids" else TypeError
    with pytest.raises(err, match=TOKENS):
        CALLS[call](model, graph, x, y, metric, ablated)


@pytest.mark.parametrize("call", ["head_patching", "atp_nodes", "eap_ig"])
def test_missing_or_taskbatch_corrupt_is_named(setup, call):
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    with pytest.raises((TypeError, ValueError), match="corrupted prompts"):
        CALLS[call](model, graph, clean, None, metric, ablated)
    with pytest.raises(TypeError, match=r"corrupted prompts must be .*TaskBatch"):
        CALLS[call](model, graph, clean, batch, metric, ablated)


def test_graph_none_builds_the_models_graph(setup):
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    for scores in (C.eap_ig(model, None, clean, metric, corrupt, steps=1),
                   C.atp_star(model, None, clean, metric, corrupt, qk_fix=False, graddrop=False)):
        assert scores.shape == (graph.n_up, graph.n_slots)
        assert torch.isfinite(scores[graph.valid()]).all() and scores[~graph.valid()].isnan().all()
    torch.testing.assert_close(C.ablated_outputs(model, None, clean, corrupt), ablated)
    with pytest.raises(TypeError, match=r"eap: graph must be a circuits Graph"):
        C.eap(model, "graph", clean, metric, corrupt)


# ---------------------------------------------------------------------------------------------- item 4: edges
EDGES = r"edges must be an int \[n, 2\] tensor of \(up, slot\) pairs that are edges of the graph"


@pytest.mark.parametrize("edges, err, match", [
    (torch.tensor([[8, 0]]), ValueError, r"edges\[0\] = \(8, 0\) is not an edge: L1H3 does not feed L0H0<q>"),
    (torch.tensor([[0, 24], [8, 0]]), ValueError, r"edges\[1\] = \(8, 0\) is not an edge"),
    (torch.tensor([[-1, -1]]), ValueError, r"edges\[0\] = \(-1, -1\) is out of range: up must be in 0\.\.8"),
    (torch.tensor([[100, 100]]), ValueError, r"\(100, 100\) is out of range.*slot in 0\.\.24"),
    (torch.tensor([[0.5, 1.0]]), TypeError, EDGES + r".*got a torch.float32 tensor"),
    ([1, 2, 3], ValueError, EDGES + r".*got shape \(3,\)"),
    (torch.zeros(0, 2, dtype=torch.long), ValueError, r"edges is empty"),
    ([], ValueError, r"edges is empty"),
    ("L0H0", TypeError, EDGES + r".*got str"),
])
def test_edge_patching_checks_edges_against_the_graph(setup, edges, err, match):
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    with pytest.raises(err, match=match):
        C.edge_patching(model, graph, clean, ablated, metric, edges=edges)


def test_edge_patching_takes_edges_as_a_list_of_pairs(setup):
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    got = C.edge_patching(model, graph, clean, ablated, metric, edges=[[0, 24], (1, 24)])
    assert torch.isfinite(got).sum() == 2 and torch.isfinite(got[[0, 1], 24]).all()


# ---------------------------------------------------------------------------------------------- item 7: metrics
PATCH_CALLS = ["head_patching", "path_patching", "input_patching", "edge_patching"]


BAD_METRICS = {
    "per-example": (lambda task, batch: (lambda lg: task.metric(lg, batch, per_example=True)), ValueError,
                    r"metric must return a scalar tensor \(one number for the batch\); got shape \(3,\) for the clean "
                    r"run \(a per-example metric"),
    "float": (lambda task, batch: (lambda lg: float(task.metric(lg, batch))), TypeError,
              r"metric must return a scalar tensor .*got float"),
    "None": (lambda task, batch: (lambda lg: None), TypeError, r"metric must return a scalar tensor .*got NoneType"),
    "nan": (lambda task, batch: (lambda lg: lg.sum() * float("nan")), ValueError,
            r"metric returned a non-finite value \(\[nan\]\) for the clean run"),
}


@pytest.mark.parametrize("bad", sorted(BAD_METRICS))
@pytest.mark.parametrize("call", PATCH_CALLS)
def test_patching_checks_what_the_metric_returns(setup, call, bad):
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    make, err, match = BAD_METRICS[bad]
    with pytest.raises(err, match=f"{call}: " + match):
        CALLS[call](model, graph, clean, corrupt, make(task, batch), ablated)


@pytest.mark.parametrize("call", PATCH_CALLS)
def test_patching_refuses_a_metric_that_is_not_callable(setup, call):
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    with pytest.raises(TypeError, match=f"{call}: metric must be a callable"):
        CALLS[call](model, graph, clean, corrupt, "logit_diff", ablated)


@pytest.mark.parametrize("call, what", [("head_patching", r"head L0H0 patched"),
                                        ("edge_patching", r"edge input -> L0H0<q>"),
                                        ("input_patching", r"input L0H0<q> patched"),
                                        ("path_patching", r"the path 'L0H0' -> 'logits'")])
def test_a_non_finite_patched_metric_names_the_variant(setup, call, what):
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    calls = []

    def nan_after_clean(lg):
        calls.append(1)
        v = metric(lg)
        return v if len(calls) == 1 else v * float("inf")

    with pytest.raises(ValueError, match=f"{call}: metric returned a non-finite value .* for {what}"):
        CALLS[call](model, graph, clean, corrupt, nan_after_clean, ablated)


def test_check_metric_value_per_example_shape():
    with pytest.raises(ValueError, match=r"metric must return a tensor of shape \[4\] \(one value per example"):
        patching.check_metric_value(torch.zeros(3), "f", batch=4)
    assert patching.check_metric_value(torch.zeros(4), "f", batch=4).shape == (4,)
    assert patching.check_metric_value(torch.ones(1), "f").shape == ()


# ---------------------------------------------------------------------------------------------- item 8: long jobs
@pytest.mark.parametrize("value, err, match", [
    (float("nan"), ValueError, r"save_every_s must be a finite number in \[0, inf\), got nan"),
    (-1, ValueError, r"save_every_s must be a finite number in \[0, inf\), got -1"),
    ("1", TypeError, r"save_every_s must be a number, got str '1'"),
])
def test_edge_patching_checks_save_every_s(setup, tmp_path, value, err, match):
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    with pytest.raises(err, match="edge_patching: " + match):
        C.edge_patching(model, graph, clean, ablated, metric, checkpoint=tmp_path / "ck.pt", save_every_s=value)


def test_checkpoint_folder_is_made_or_refused_before_the_work(setup, tmp_path):
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    ck = tmp_path / "new" / "deeper" / "ck.pt"
    one = torch.tensor([[0, 24], [1, 24]])
    C.edge_patching(model, graph, clean, ablated, metric, edges=one, chunk=1, checkpoint=ck, save_every_s=0)
    assert ck.exists()  # the folder was made before the first save
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"edge_patching: cannot create the folder .*file.* of checkpoint"):
        C.edge_patching(model, graph, clean, ablated, metric, checkpoint=tmp_path / "file" / "ck.pt")
    with pytest.raises(ValueError, match=r"edge_patching: checkpoint .* is a folder; pass a file path inside it"):
        C.edge_patching(model, graph, clean, ablated, metric, checkpoint=tmp_path)
    with pytest.raises(TypeError, match=r"edge_patching: checkpoint must be a file path"):
        C.edge_patching(model, graph, clean, ablated, metric, checkpoint=3)
    with pytest.raises(TypeError, match=r"edge_patching: progress must be a callable"):
        C.edge_patching(model, graph, clean, ablated, metric, progress="yes")


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def partial(setup, tmp_path_factory):
    """A sweep killed after its first save: (path, the saved file's contents)."""
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    path = tmp_path_factory.mktemp("ck") / "sweep.pt"

    def kill(msg):
        raise Killed(msg)

    with pytest.raises(Killed):
        C.edge_patching(model, graph, clean, ablated, metric, chunk=8, checkpoint=path, progress=kill,
                        save_every_s=0)
    return path, torch.load(path)


def _tampered(saved, tmp_path, change):
    s = {"settings": dict(saved["settings"]), "state": dict(saved["state"])}
    change(s["state"])
    p = tmp_path / "t.pt"
    torch.save(s, p)
    return p


@pytest.mark.parametrize("change, match", [
    (lambda st: st.update(done=10 ** 6), r"'done' must be a whole number of chunks of 8 edges in 0\.\.81, got 1000000"),
    (lambda st: st.update(done=5), r"'done' must be a whole number of chunks .* got 5"),
    (lambda st: st.update(done="8"), r"'done' must be .* got '8'"),
    (lambda st: st.pop("done"), r"its state must hold 'done' and 'scores', got \['scores'\]"),
    (lambda st: st.update(scores=torch.zeros(3, 3)), r"'scores' must be a float tensor \[9, 25\]"),
    (lambda st: st.update(scores=torch.full((9, 25), float("nan"))), r"'scores' lacks a finite score on some of the 8 edges"),
])
def test_edge_patching_refuses_a_damaged_checkpoint(setup, partial, tmp_path, change, match):
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    p = _tampered(partial[1], tmp_path, change)
    with pytest.raises(ValueError, match=r"checkpoint .*t\.pt is damaged or not an edge-patching checkpoint: " + match):
        C.edge_patching(model, graph, clean, ablated, metric, chunk=8, checkpoint=p)


def test_find_circuit_patching_passes_checkpoint_and_progress(setup, tmp_path, monkeypatch):
    model, task, batch, graph, *_ = setup
    seen = []

    def spy(*a, **kw):
        seen.append((kw.get("checkpoint"), kw.get("progress")))
        return torch.zeros(graph.n_up, graph.n_slots)

    monkeypatch.setattr(patching, "edge_patching", spy)
    said = []
    c = C.find_circuit(model, task, batch, method="patching", checkpoint=tmp_path / "s.pt", progress=said.append)
    assert seen == [(tmp_path / "s.pt.b0", said.append)] and c.method == "patching"
    with pytest.raises(ValueError, match=r"find_circuit: checkpoint is for the long searches.*method 'eap' runs in "
                                         r"one pass"):
        C.find_circuit(model, task, batch, method="eap", checkpoint=tmp_path / "e.pt")
    with pytest.raises(TypeError, match=r"find_circuit: progress must be a callable"):
        C.find_circuit(model, task, batch, method="patching", progress="yes")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"find_circuit: cannot create the folder"):
        C.find_circuit(model, task, batch, method="patching", checkpoint=tmp_path / "f" / "s.pt")


def test_find_circuit_acdc_passes_checkpoint_and_progress(setup, tmp_path, monkeypatch):
    from interp.analyses.circuits import acdc

    model, task, batch, graph, *_ = setup
    seen = []

    def spy(*a, **kw):
        seen.append((kw.get("checkpoint"), kw.get("progress")))
        return C.Circuit(graph, torch.zeros(graph.n_up, graph.n_slots), method="acdc")

    monkeypatch.setattr(acdc, "acdc_task", spy)
    said = []
    C.find_circuit(model, task, batch, method="acdc", checkpoint=tmp_path / "a.pt", progress=said.append)
    C.score_edges(model, graph, task, batch, "acdc", checkpoint=tmp_path / "b.pt", progress=said.append)
    assert seen == [(tmp_path / "a.pt", said.append), (tmp_path / "b.pt", said.append)]


@pytest.fixture(scope="module")
def acdc_saved(setup, tmp_path_factory):
    """The checkpoint of an ACDC search stopped after its first receiver (the file's contents)."""
    model, task, batch, *_ = setup
    ck = tmp_path_factory.mktemp("acdc") / "a.pt"
    acdc_task(model, task, batch, 0.01, checkpoint=ck, evaluate=False, max_receivers=1)
    return torch.load(ck)


@pytest.mark.parametrize("change, match", [
    (lambda st: st.update(next=999), r"'next' must be a receiver position in 0\.\.25, got 999"),
    (lambda st: st.pop("removed"), r"its state must hold exactly .*; missing \['removed'\]"),
    (lambda st: st.update(scores=torch.zeros(2)), r"'scores' must be a float tensor \[9, 25\]"),
    (lambda st: st.update(removed=torch.zeros(9, 25)), r"'removed' must be a bool tensor \[9, 25\]"),
    (lambda st: st.update(n_tested=-1), r"'n_tested' must be an int >= 0"),
])
def test_acdc_refuses_a_damaged_checkpoint(setup, acdc_saved, tmp_path, change, match):
    model, task, batch, graph, *_ = setup
    p = _tampered(acdc_saved, tmp_path, change)
    with pytest.raises(ValueError, match=r"checkpoint .*t\.pt is damaged or not an ACDC checkpoint: " + match):
        acdc_task(model, task, batch, 0.01, checkpoint=p, evaluate=False, max_receivers=1)


# ---------------------------------------------------------------------------------------------- item 13: flags
def _flag_calls(setup):
    model, task, batch, graph, clean, corrupt, ablated, metric = setup
    circuit = C.Circuit(graph, torch.zeros(graph.n_up, graph.n_slots))
    return {
        "head_patching(batched)": lambda: C.head_patching(model, clean, corrupt, metric, batched="no"),
        "head_effects(batched)": lambda: C.head_effects(model, task, batch, batched=0),
        "atp_nodes(qk_fix)": lambda: C.atp_nodes(model, clean, corrupt, metric, qk_fix="no"),
        "atp_nodes(graddrop)": lambda: C.atp_nodes(model, clean, corrupt, metric, graddrop="yes"),
        "atp_star(qk_fix)": lambda: C.atp_star(model, graph, clean, metric, corrupt, qk_fix="no"),
        "atp_star(graddrop)": lambda: C.atp_star(model, graph, clean, metric, corrupt, graddrop=1),
        "acdc_task(evaluate)": lambda: acdc_task(model, task, batch, 0.01, evaluate="no"),
        "acdc_batch(skip_dead)": lambda: C.acdc_batch(model, graph, clean, ablated, 0.01, skip_dead="no"),
        "Circuit.select(absolute)": lambda: circuit.select(top_n=3, absolute="no"),
        "Circuit.select(prune)": lambda: circuit.select(top_n=3, prune="no"),
        "faithfulness_curve(prune)": lambda: C.faithfulness_curve(model, circuit, clean, ablated, metric, prune="no"),
        "read_json(same_name)": lambda: C.read_json("graph.json", model, same_name="no"),
        "Graph.from_config(mlp)": lambda: Graph.from_config(2, 4, 4, mlp="no"),
        "Graph.from_model(mlp)": lambda: Graph.from_model(model, mlp="no"),
    }


FLAGS = ["head_patching(batched)", "head_effects(batched)", "atp_nodes(qk_fix)", "atp_nodes(graddrop)",
         "atp_star(qk_fix)", "atp_star(graddrop)", "acdc_task(evaluate)", "acdc_batch(skip_dead)",
         "Circuit.select(absolute)", "Circuit.select(prune)", "faithfulness_curve(prune)", "read_json(same_name)",
         "Graph.from_config(mlp)", "Graph.from_model(mlp)"]


@pytest.mark.parametrize("name", FLAGS)
def test_bool_flags_refuse_non_bools(setup, name):
    flag = name.split("(")[1].rstrip(")")
    with pytest.raises(TypeError, match=rf"{flag} must be True(, False or None \(detect\)| or False)"):
        _flag_calls(setup)[name]()


def test_run_circuit_job_checks_faithfulness_flag(setup, tmp_path):
    model, *_ = setup
    with pytest.raises(TypeError, match=r"run_circuit_job: faithfulness must be True or False"):
        C.run_circuit_job(model, "induction", method="eap", out_dir=tmp_path, n=2, faithfulness="no")
    with pytest.raises(TypeError, match=r"run_circuit_job: progress must be a callable"):
        C.run_circuit_job(model, "induction", method="eap", out_dir=tmp_path, n=2, progress="yes")


def test_score_edges_refuses_a_bad_checkpoint_before_the_sweep(setup, tmp_path):
    model, task, batch, graph, *_ = setup
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"score_edges: cannot create the folder"):
        api.score_edges(model, graph, task, batch, "patching", checkpoint=tmp_path / "f" / "s.pt")


def test_tuple_senders_and_numpy_bools_still_work(setup):
    """A tuple of senders (only a bare tuple of receivers is ambiguous: a receiver may be a tuple) and numpy's bool
    for Graph's mlp flag, both taken before the round-19 checks."""
    import numpy as np

    model, _, _, graph, clean, corrupt, ablated, metric = setup
    a = C.path_patching(model, clean, corrupt, metric, ("L0H0", "L0H1"), ["logits"], graph=graph, ablated=ablated)
    b = C.path_patching(model, clean, corrupt, metric, ["L0H0", "L0H1"], ["logits"], graph=graph, ablated=ablated)
    torch.testing.assert_close(a, b)
    assert Graph.from_config(2, 4, 4, mlp=np.bool_(False)).mlp is False
    with pytest.raises(TypeError, match="receivers must be a list"):
        C.path_patching(model, clean, corrupt, metric, ["L0H0"], ("logits",), graph=graph, ablated=ablated)


@pytest.mark.parametrize("method", ["eap", "eap-ig", "atp"])
def test_score_edges_refuses_a_checkpoint_for_one_pass_methods(setup, tmp_path, method):
    model, task, batch, graph, *_ = setup
    with pytest.raises(ValueError, match=rf"score_edges: checkpoint is for the long searches.*'{method}' runs in one"):
        C.score_edges(model, graph, task, batch, method, checkpoint=tmp_path / "s.pt")
    assert not (tmp_path / "s.pt").exists()
