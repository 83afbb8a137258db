"""More bad input to the circuit and task functions (a second sweep): each case gets a clear TypeError /
ValueError naming the argument, what it got and what is allowed -- not a deep torch / pathlib error, a hang, an
empty batch or a silently wrong result. Damaged resume files of the circuit job are recomputed, not a crash."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import interp
from interp.analyses import circuits as C
from interp.analyses import tasks as T
from interp.analyses.circuits import acdc
from interp.analyses.circuits import job as J
from helpers import raises_clear_error
from test_badinput_circuits import induction_setup

NAN = float("nan")


@pytest.fixture(scope="module")
def x(tmp_path_factory):
    m, task, batch, g, ids, cor, ablated, metric = induction_setup()
    circuit = C.find_circuit(m, task, batch, method="eap")
    d = tmp_path_factory.mktemp("more")
    (d / "file").write_text("x")
    C.write(circuit, d / "written")
    acdc.acdc_task(m, task, batch, 0.01, checkpoint=d / "acdc.pt", evaluate=False, max_receivers=1)
    return SimpleNamespace(m=m, task=task, batch=batch, g=g, ids=ids, cor=cor, ablated=ablated, circuit=circuit, d=d,
                           gj=json.loads((d / "written" / "graph.json").read_text()),
                           metric=metric)


def _json(x, name, obj):
    p = x.d / name
    p.write_text(json.dumps(obj))
    return p


def _acdc_ck(x, name, **state):
    saved = torch.load(x.d / "acdc.pt")
    saved["state"].update(state)
    torch.save(saved, x.d / name)
    return x.d / name


def _pp(x, senders, receivers, **kw):
    return C.path_patching(x.m, x.ids, x.cor, x.metric, senders, receivers, graph=x.g, **kw)


CASES = [
    # --- path / input patching: groups, receiver names, precomputed ablations (IndexError / AttributeError before)
    ("path_patching empty sender group", lambda x: _pp(x, [[]], ["logits"], ablated=x.ablated), ValueError,
     r"path_patching: senders\[0\] is an empty group; a group .* needs at least one node"),
    ("path_patching empty receiver group", lambda x: _pp(x, ["L0H0"], ["logits", []], ablated=x.ablated), ValueError,
     r"path_patching: receivers\[1\] is an empty group"),
    ("path_patching receiver node int", lambda x: _pp(x, ["L0H0"], [(1, "k")], ablated=x.ablated), TypeError,
     r"a receiver's node is a name like 'L1H0', 'L1KV0', 'MLP2' or 'logits', got int 1 in \(1, 'k'\)"),
    ("path_patching ablated list", lambda x: _pp(x, ["L0H0"], ["logits"], ablated=[1]), TypeError,
     r"path_patching: ablated must be a tensor \[3, 13, 9, d_model\] .* or None, got list"),
    ("input_patching ablated list", lambda x: C.input_patching(x.m, x.ids, x.cor, x.metric, graph=x.g, ablated=[1]),
     TypeError, r"input_patching: ablated must be a tensor \[3, 13, 9, d_model\]"),
    ("masked_logits ablated d_model", lambda x: C.masked_logits(x.m, x.g, x.ids, x.ablated[..., :5],
                                                                torch.zeros(1, 9, 25)),
     ValueError, r"masked_logits: ablated outputs must be \[3, 13, 9, 64\] \(d_model of toy-induction\), got "
                 r"\(3, 13, 9, 5\)"),
    ("ablated_outputs seed str", lambda x: C.ablated_outputs(x.m, x.g, x.ids, None, "resample", seed="a"), TypeError,
     r"ablated_outputs: seed must be an int, got str 'a'"),
    ("ablated_outputs seed float", lambda x: C.ablated_outputs(x.m, x.g, x.ids, None, "resample", seed=1.5),
     TypeError, r"ablated_outputs: seed must be an int, got float 1.5"),
    ("acdc_task seed str", lambda x: acdc.acdc_task(x.m, x.task, x.batch, 0.1, ablation="resample", seed="x",
                                                    evaluate=False, max_receivers=1),
     TypeError, r"seed must be an int, got str 'x'"),
    # --- ACDC: positions (IndexError / a logits_at message before), taus, checkpoint_dir, damaged checkpoints
    ("acdc_batch positions shape", lambda x: C.acdc_batch(x.m, x.g, x.ids, x.ablated, 0.1,
                                                          positions=torch.ones(2, 2, dtype=torch.bool)),
     ValueError, r"acdc_batch: positions must be a bool tensor \[3, 13\] .* got a torch.bool tensor of shape \(2, 2\)"),
    ("acdc_batch positions float", lambda x: C.acdc_batch(x.m, x.g, x.ids, x.ablated, 0.1,
                                                          positions=torch.ones(3, 13)),
     TypeError, r"acdc_batch: positions must be a bool tensor .* got a torch.float32 tensor"),
    ("acdc_batch positions index", lambda x: C.acdc_batch(x.m, x.g, x.ids, x.ablated, 0.1,
                                                          positions=torch.tensor([12, 12, 12])),
     TypeError, r"acdc_batch: positions must be a bool tensor \[3, 13\]"),
    ("acdc_batch positions all False", lambda x: C.acdc_batch(x.m, x.g, x.ids, x.ablated, 0.1,
                                                              positions=torch.zeros(3, 13, dtype=torch.bool)),
     ValueError, r"acdc_batch: positions is all False, so KL would read no position"),
    ("tau_sweep taus None", lambda x: C.tau_sweep(x.m, x.task, x.batch, None), TypeError,
     r"tau_sweep: taus must be a list of finite numbers >= 0 .* got NoneType None"),
    ("tau_sweep checkpoint_dir file", lambda x: C.tau_sweep(x.m, x.task, x.batch, [1.0], checkpoint_dir=x.d / "file"),
     ValueError, r"tau_sweep: checkpoint_dir .*file is a file, not a folder"),
    ("tau_sweep checkpoint_dir int", lambda x: C.tau_sweep(x.m, x.task, x.batch, [1.0], checkpoint_dir=3), TypeError,
     r"tau_sweep: checkpoint_dir must be a folder path \(a str or pathlib.Path\), got int 3"),
    ("acdc checkpoint d_cur NaN", lambda x: acdc.acdc_task(x.m, x.task, x.batch, 0.01, evaluate=False,
                                                           checkpoint=_acdc_ck(x, "nan.pt", d_cur=NAN)),
     ValueError, r"nan.pt is damaged or not an ACDC checkpoint: 'd_cur' must be a finite number, got nan"),
    ("acdc checkpoint NaN scores", lambda x: acdc.acdc_task(
        x.m, x.task, x.batch, 0.01, evaluate=False,
        checkpoint=_acdc_ck(x, "sn.pt", scores=torch.full((9, 25), NAN))),
     ValueError, r"sn.pt is damaged .*: 'scores' lacks a finite score on some edge of the 1 receivers it says are "
                 r"done"),
    ("checkpoint settings not a dict", lambda x: (torch.save({"settings": [1], "state": {}}, x.d / "sl.pt"),
                                                  C.edge_patching(x.m, x.g, x.ids, x.ablated, x.metric, edges=[[0, 24]],
                                                                  checkpoint=x.d / "sl.pt")),
     ValueError, r"sl.pt is not an edge-patching checkpoint \(TypeError: its 'settings' is a list, not a dict\)"),
    # --- evaluation: silently wrong areas, ignored options, deep errors
    ("faithfulness_curve unsorted fractions", lambda x: C.faithfulness_curve(x.m, x.circuit, x.ids, x.ablated,
                                                                             x.metric, fractions=[1.0, 0.1, 0.5]),
     ValueError, r"faithfulness_curve: fractions must be strictly increasing .* fractions\[1\] = 0.1 does not exceed "
                 r"1.0"),
    ("faithfulness_curve repeated fraction", lambda x: C.faithfulness_curve(x.m, x.circuit, x.ids, x.ablated,
                                                                            x.metric, fractions=[0.5, 0.5]),
     ValueError, r"fractions must be strictly increasing"),
    ("areas lengths", lambda x: C.areas([0.1, 0.5], [1.0]), ValueError,
     r"areas: fractions and f must be non-empty lists of one length .* got 2 fractions and 1 values of f"),
    ("areas empty", lambda x: C.areas([], []), ValueError, r"areas: fractions and f must be non-empty"),
    ("areas str", lambda x: C.areas("ab", [1.0, 2.0]), TypeError, r"areas: fractions must be a list of numbers"),
    ("faithfulness metric str", lambda x: C.faithfulness(x.m, x.g, x.ids, x.ablated, "logit_diff",
                                                         [x.circuit.in_circuit]),
     TypeError, r"faithfulness: metric must be a callable"),
    ("select greedy with threshold", lambda x: C.Circuit(x.g, x.circuit.scores).select(threshold=0.0, method="greedy"),
     ValueError, r"Circuit.select: method 'greedy' grows a circuit of top_n edges .* takes top_n, not threshold"),
    ("Circuit method int", lambda x: C.Circuit(x.g, x.circuit.scores, method=5), TypeError,
     r"Circuit.method must be a str"),
    ("Circuit meta list", lambda x: C.Circuit(x.g, x.circuit.scores, meta=[1]), TypeError,
     r"Circuit.meta must be a dict, got list"),
    # --- export
    ("write out_dir None", lambda x: C.write(x.circuit, None), TypeError,
     r"write: out_dir must be a folder path \(a str or pathlib.Path\), got NoneType"),
    ("read_json path None", lambda x: C.read_json(None), TypeError, r"read_json: path must be the path .* got NoneType"),
    ("read_json model str", lambda x: C.read_json(x.d / "written" / "graph.json", model="toy-induction"), TypeError,
     r"read_json: model must be an interp HookedModel"),
    ("read_json in_graph str", lambda x: C.read_json(_json(x, "ig.json", dict(
        x.gj, edges={"input->logits": {"score": 1.0, "in_graph": "false"}}))),
     ValueError, r"ig.json: bad edge 'input->logits': 'in_graph' must be true or false, got 'false'"),
    ("read_json huge cfg", lambda x: C.read_json(_json(x, "huge.json", dict(
        x.gj, cfg=dict(x.gj["cfg"], n_layers=10**6, n_heads=64, n_kv_heads=64))), x.m),
     ValueError, r"huge.json is not a circuit graph.json .*describes 64000002 nodes, but 'nodes' lists 10"),
    ("read_json cfg list", lambda x: C.read_json(_json(x, "cl.json", dict(x.gj, cfg=[1]))), ValueError,
     r"cl.json is not a circuit graph.json \(TypeError: 'cfg' must be an object, got list\)"),
    ("read_json meta list", lambda x: C.read_json(_json(x, "ml.json", dict(x.gj, meta=[1]))), ValueError,
     r"ml.json is not a circuit graph.json .*'meta' an object"),
    # --- the circuit job (FileExistsError / AttributeError / raw TypeError before)
    ("run_circuit_job out_dir file", lambda x: C.run_circuit_job(x.m, "induction", method="eap", out_dir=x.d / "file",
                                                                 n=2, progress=None),
     ValueError, r"run_circuit_job: out_dir .*file is a file, not a folder"),
    ("run_circuit_job out_dir None", lambda x: C.run_circuit_job(x.m, "induction", method="eap", out_dir=None, n=2,
                                                                 progress=None),
     TypeError, r"run_circuit_job: out_dir must be a folder path"),
    ("run_circuit_job model name", lambda x: C.run_circuit_job("toy-induction", "induction", method="eap",
                                                               out_dir=x.d / "j", n=2, progress=None),
     TypeError, r"run_circuit_job: model must be an interp HookedModel"),
    ("run_circuit_job task None", lambda x: C.run_circuit_job(x.m, None, method="eap", out_dir=x.d / "j", n=2,
                                                              progress=None),
     TypeError, r"run_circuit_job: task must be a Task"),
    ("run_circuit_job method_options list", lambda x: C.run_circuit_job(x.m, "induction", method="eap",
                                                                        out_dir=x.d / "j", method_options=[1]),
     TypeError, r"method_options must be a dict of score_edges keyword options .* got list \[1\]"),
    ("run_circuit_job eval_ablations None", lambda x: C.run_circuit_job(x.m, "induction", method="eap",
                                                                        out_dir=x.d / "j", eval_ablations=None),
     TypeError, r"eval ablations must be a non-empty list of corrupted, zero, mean, resample"),
    ("run_circuit_job eval_ablations empty", lambda x: C.run_circuit_job(x.m, "induction", method="eap",
                                                                         out_dir=x.d / "j", eval_ablations=[]),
     ValueError, r"eval ablations must be a non-empty list"),
    # --- tasks
    ("make model None", lambda x: x.task.make(None, n=2), TypeError,
     r"task 'induction': model must be an interp HookedModel"),
    ("make model name", lambda x: T.get_task("needle").make("toy-induction", n=2), TypeError,
     r"task 'needle': model must be an interp HookedModel .* got str 'toy-induction'"),
    ("task_report n 0", lambda x: T.task_report(x.m, tasks=["induction"], n=0), ValueError,
     r"task_report: n must be >= 1, got 0"),
    ("task_report seed str", lambda x: T.task_report(x.m, tasks=["induction"], n=2, seed="x"), TypeError,
     r"task_report: seed must be an int, got str 'x'"),
    ("task_report batch_size 0", lambda x: T.task_report(x.m, tasks=["induction"], n=2, batch_size=0), ValueError,
     r"task_report: batch_size must be >= 1, got 0"),
    ("task_report tasks int", lambda x: T.task_report(x.m, tasks=5, n=2), TypeError,
     r"task_report: tasks must be a task name, a Task, a list of them or None"),
    ("task_metrics batch_size str", lambda x: T.task_metrics(x.m, x.task, x.batch, batch_size="a"), TypeError,
     r"task_metrics: batch_size must be an int, got str 'a'"),
    ("TaskBatch row past the end", lambda x: x.batch[3], IndexError,
     r"TaskBatch: row 3 is outside the batch of 3 rows \(rows -3..2\)"),
    ("TaskBatch row before the start", lambda x: x.batch[-4], IndexError, r"TaskBatch: row -4 is outside the batch"),
    ("TaskBatch rows str", lambda x: x.batch["a"], TypeError,
     r"TaskBatch: rows must be an int, a slice or an index tensor / list, got str 'a'"),
    ("read_rows None", lambda x: T.read_rows(None), TypeError,
     r"task file path must be a str or pathlib.Path of a .jsonl, .json or .csv file, got NoneType"),
    ("file task path int", lambda x: T.get_task("file", path=5).make(x.m), TypeError,
     r"task file path must be a str or pathlib.Path .* got int 5"),
]


@pytest.mark.parametrize("call, err, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(x, call, err, match):
    raises_clear_error(err, match, call, x)


# ------------------------------------------------------------------------------------------------ good input
def test_task_batch_rows_index_like_a_list(x):
    """batch[-1] is the last row (it was an empty batch), and `for row in batch` ends (it never did)."""
    rows = list(x.batch)
    assert [len(r) for r in rows] == [1, 1, 1]
    assert x.batch[-1].answer.tolist() == x.batch.answer[-1:].tolist() == rows[2].answer.tolist()
    assert len(x.batch[torch.tensor([0, 2])]) == 2 and len(x.batch[[1]]) == 1 and len(x.batch[1:]) == 2


def test_acdc_batch_positions_and_graph_none(x):
    last = torch.zeros(3, 13, dtype=torch.bool)
    last[:, -1] = True
    a = C.acdc_batch(x.m, None, x.ids, x.ablated, 0.1)  # graph=None: the model's graph (an AttributeError before)
    b = C.acdc_batch(x.m, x.g, x.ids, x.ablated, 0.1, positions=last)
    assert torch.equal(a.in_circuit, b.in_circuit)


def test_good_values_still_work(x):
    assert C.areas([0.0, 1.0], [1.0, 1.0]) == {"cpr": 1.0, "cmd": 0.0}
    # valid input the first form of the sweep refused (a review of round 23): arrays and tensors, NumPy seeds and
    # sizes, any iterable of ablations, option pairs, a range of rows
    assert C.areas(np.array([0.0, 1.0]), torch.tensor([1.0, 1.0])) == {"cpr": 1.0, "cmd": 0.0}
    a = C.ablated_outputs(x.m, x.g, x.ids, None, "resample", seed=np.int64(1))
    assert torch.equal(a, C.ablated_outputs(x.m, x.g, x.ids, None, "resample", seed=1))
    row = T.task_report(x.m, ["induction"], n=np.int64(2), seed=np.int64(1)).iloc[0]
    assert row["n"] == 2, row.to_dict()
    assert J.check_settings("eap", 2, 1, "corrupted", 5, "topn", 2, {"corrupted"})[0] == ("corrupted",)
    assert J.check_method_options([("tau", 0.1)], "acdc") == {"tau": 0.1}
    assert len(x.batch[range(0, 2)]) == 2
    assert C.ablated_outputs(x.m, x.g, x.ids, None, "resample", seed=-1).shape == x.ablated.shape
    assert C.tau_sweep(x.m, x.task, x.batch, torch.tensor([1.0]))["rows"][0]["tau"] == 1.0
    r = C.faithfulness_curve(x.m, x.circuit, x.ids, x.ablated, x.metric, fractions=[0.1, 0.5, 1.0])
    assert len(r["f"]) == 3 and math.isfinite(r["cpr"])
    assert C.read_json(x.d / "written" / "graph.json", x.m).n_edges == x.circuit.n_edges
    assert C.Circuit(x.g, x.circuit.scores).select(top_n=5, method="greedy").n_edges <= 5


@pytest.mark.parametrize("damage", ["garbage", "list", "shape", "nan", "faith-json", "faith-list"])
def test_circuit_job_recomputes_a_damaged_resume_file(x, tmp_path, damage):
    said = []
    kw = dict(method="eap", out_dir=tmp_path, n=3, faith_n=3, top_n=5, progress=said.append)
    want = C.run_circuit_job(x.m, "induction", **kw)
    scores, faith = tmp_path / "scores.pt", tmp_path / "faithfulness.json"
    saved = torch.load(scores)
    {"garbage": lambda: scores.write_bytes(b"garbage"),
     "list": lambda: torch.save([1], scores),
     "shape": lambda: torch.save(dict(saved, scores=torch.zeros(2, 2)), scores),
     "nan": lambda: torch.save(dict(saved, scores=torch.full_like(saved["scores"], NAN)), scores),
     "faith-json": lambda: faith.write_text("{broken"),
     "faith-list": lambda: faith.write_text("[1]")}[damage]()
    said.clear()
    got = C.run_circuit_job(x.m, "induction", **kw)
    assert torch.equal(got.in_circuit, want.in_circuit)
    assert any("recomputing" in s for s in said), said
    assert got.meta["results"]["faithfulness"] == want.meta["results"]["faithfulness"]


def test_circuit_job_takes_progress_none(x, tmp_path):
    """progress=None (allowed by the check) means no progress lines; it crashed once the job had started."""
    c = C.run_circuit_job(x.m, "induction", method="eap", out_dir=tmp_path, n=3, faith_n=3, top_n=5, progress=None)
    assert c.n_edges > 0 and (tmp_path / "report.html").exists()
