"""Bad input to head importance, pruning, circuits and their batch jobs: a ValueError/TypeError that names the
argument, what it got and what is allowed (CLI: one line on stderr, exit 2), never a silent wrong answer, a deep
torch/pandas error, an OOM kill or a long silence. One row per case; grow the tables with every case found."""

from __future__ import annotations

import math
import json
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from interp.analyses import circuits as C
from interp.analyses import importance as I
from interp.analyses import pruning as P
from interp.analyses import tasks as T
from interp.analyses.circuits import job as J
from interp.analyses.circuits.graph import Graph
from helpers import fork_cli, one_line_exit_2, raises_clear_error

ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
NAN = float("nan")


@pytest.fixture(scope="module")
def x():
    """toy-induction, a small induction batch and what the circuit functions take."""
    m = interp.load("toy-induction")
    task = T.get_task("induction", half=6)
    batch = task.make(m, n=4)
    g = Graph.from_model(m)
    ids, cor = batch.clean.input_ids, batch.corrupt.input_ids
    circuit = C.find_circuit(m, task, batch, method="eap").select(top_n=10)
    table = pd.concat([I.scores_frame(m.name, "a", torch.arange(8.).reshape(2, 4)),
                       I.scores_frame(m.name, "b", torch.arange(8.).flip(0).reshape(2, 4))], ignore_index=True)
    return SimpleNamespace(m=m, task=task, batch=batch, g=g, ids=ids, cor=cor, circuit=circuit, table=table,
                           metric=lambda lg: task.metric(lg, batch),
                           ablated=C.ablated_outputs(m, g, ids, cor, "corrupted"),
                           curve=P.pruning_curve(m, task, batch, torch.rand(2, 4), fractions=[0, 0.5]))


CASES = [
    # --- heads_per_forward (finding 2): -1 gave zeros, 0 the default, 2.5 a raw TypeError
    ("ablated_losses heads_per_forward -1", lambda x: I.ablated_losses(x.m, x.task, x.batch, heads_per_forward=-1),
     ValueError, r"ablated_losses: heads_per_forward must be >= 1, got -1"),
    ("ablation_scores heads_per_forward 0", lambda x: I.ablation_scores(x.m, x.task, x.batch, heads_per_forward=0),
     ValueError, r"heads_per_forward must be >= 1, got 0"),
    ("ablated_losses heads_per_forward 2.5", lambda x: I.ablated_losses(x.m, x.task, x.batch, heads_per_forward=2.5),
     TypeError, r"heads_per_forward must be an int or None, got float 2.5"),
    # --- chunk of the patching sweeps (finding 3): negative gave zeros / NaN, 0 a range() error
    ("head_patching chunk -2", lambda x: C.head_patching(x.m, x.ids, x.cor, x.metric, chunk=-2), ValueError,
     r"head_patching: chunk must be >= 1, got -2"),
    ("head_patching chunk 0", lambda x: C.head_patching(x.m, x.ids, x.cor, x.metric, chunk=0), ValueError,
     r"head_patching: chunk must be >= 1, got 0"),
    ("edge_patching chunk -1", lambda x: C.edge_patching(x.m, x.g, x.ids, x.ablated, x.metric, chunk=-1), ValueError,
     r"edge_patching: chunk must be >= 1, got -1"),
    ("score_edges chunk str", lambda x: C.score_edges(x.m, x.g, x.task, x.batch, "patching", chunk="abc"), TypeError,
     r"score_edges: chunk must be an int, got str 'abc'"),
    ("masked_logits chunk 0", lambda x: C.masked_logits(x.m, x.g, x.ids, x.ablated, torch.zeros(2, 9, 25), chunk=0),
     ValueError, r"masked_logits: chunk must be >= 1"),
    ("faithfulness chunk -1", lambda x: C.faithfulness(x.m, x.g, x.ids, x.ablated, x.metric, [x.circuit.in_circuit],
                                                       chunk=-1), ValueError, r"faithfulness: chunk must be >= 1"),
    ("head_patching heads out of range", lambda x: C.head_patching(x.m, x.ids, x.cor, x.metric, heads=[(2, 0)]),
     ValueError, r"head_patching: head \(2, 0\) out of range"),
    # --- pruning (finding 4)
    ("pruning_curve NaN scores", lambda x: P.pruning_curve(x.m, x.task, x.batch, torch.full((2, 4), NAN)),
     ValueError, r"pruning_curve: scores are NaN/Inf \(8 of 8, first at layer 0 head 0\)"),
    ("pruning_curve fractions empty", lambda x: P.pruning_curve(x.m, x.task, x.batch, torch.rand(2, 4), fractions=[]),
     ValueError, r"pruning_curve: fractions is empty"),
    ("pruning_curve fractions str", lambda x: P.pruning_curve(x.m, x.task, x.batch, torch.rand(2, 4),
                                                              fractions="0.5"),
     TypeError, r"fractions must be a list of numbers in \[0, 1\).*got str '0.5'"),
    ("pruning_curve fraction 1", lambda x: P.pruning_curve(x.m, x.task, x.batch, torch.rand(2, 4), fractions=[0, 1]),
     ValueError, r"fractions\[\] must be a finite number in \[0, 1\), got 1.0"),
    ("heads_removable tolerance -1", lambda x: P.heads_removable(x.curve, -1.0), ValueError,
     r"heads_removable: tolerance must be a finite number in \[0, inf\), got -1.0"),
    ("heads_removable tolerance nan", lambda x: P.heads_removable(x.curve, NAN), ValueError,
     r"tolerance must be a finite number"),
    ("heads_removable list", lambda x: P.heads_removable([1, 2]), TypeError,
     r"heads_removable: curve must be a pandas DataFrame \(as pruning_curve returns\), got list"),
    ("heads_removable columns", lambda x: P.heads_removable(pd.DataFrame({"a": [0]})), ValueError,
     r"curve lacks column\(s\) \['n_removed', 'rel_increase'\]"),
    ("heads_removable empty", lambda x: P.heads_removable(x.curve.iloc[:0]), ValueError, r"curve is empty"),
    ("method_agreement top_frac 5", lambda x: P.method_agreement(x.table, top_frac=5), ValueError,
     r"method_agreement: top_frac must be a finite number in \(0, 1\], got 5.0"),
    ("method_agreement top_frac -1", lambda x: P.method_agreement(x.table, top_frac=-1), ValueError,
     r"top_frac must be a finite number in \(0, 1\]"),
    ("method_agreement duplicates", lambda x: P.method_agreement(pd.concat([x.table, x.table])), ValueError,
     r"table has 32 rows that repeat a \(layer, head, method\)"),
    ("method_agreement one method", lambda x: P.method_agreement(x.table[x.table.method == "a"]), ValueError,
     r"needs at least 2, got \['a'\]"),
    ("method_agreement list", lambda x: P.method_agreement([1]), TypeError, r"table must be a pandas DataFrame"),
    ("method_agreement columns", lambda x: P.method_agreement(x.table.drop(columns="score")), ValueError,
     r"table lacks column\(s\) \['score'\]"),
    ("random_pruning_curve n_orders 1.5", lambda x: P.random_pruning_curve(x.m, x.task, x.batch, n_orders=1.5),
     TypeError, r"random_pruning_curve: n_orders must be an int, got float 1.5"),
    ("random_pruning_curve n_orders str", lambda x: P.random_pruning_curve(x.m, x.task, x.batch, n_orders="3"),
     TypeError, r"n_orders must be an int, got str '3'"),
    # --- task / batch of the wrong kind (finding 5): one rule everywhere, names are looked up, others refused
    ("ablation_scores task None", lambda x: I.ablation_scores(x.m, None, x.batch), TypeError,
     r"ablated_losses: task must be a Task .* or a task name, one of lm, induction"),
    ("mask_gradient_scores task int", lambda x: I.mask_gradient_scores(x.m, 3, x.batch), TypeError,
     r"mask_gradient_scores: task must be a Task"),
    ("pruning_curve task None", lambda x: P.pruning_curve(x.m, None, x.batch, torch.rand(2, 4)), TypeError,
     r"pruning_curve: task must be a Task"),
    ("find_circuit task None", lambda x: C.find_circuit(x.m, None, x.batch, method="eap"), TypeError,
     r"find_circuit: task must be a Task"),
    ("head_importance task None", lambda x: I.head_importance(x.m, None, methods=["dla"]), TypeError,
     r"head_importance: task must be a Task"),
    ("find_circuit unknown task name", lambda x: C.find_circuit(x.m, "iio", x.batch), ValueError,
     r"unknown task 'iio'"),
    ("ablation_scores Tokens batch", lambda x: I.ablation_scores(x.m, x.task, x.batch.clean), TypeError,
     r"batch must be a TaskBatch, as task.make\(model, n=...\) returns; got Tokens"),
    ("mask_gradient_scores Tokens batch", lambda x: I.mask_gradient_scores(x.m, x.task, x.batch.clean), TypeError,
     r"mask_gradient_scores: batch must be a TaskBatch"),
    ("find_circuit batch None", lambda x: C.find_circuit(x.m, x.task, None), TypeError,
     r"find_circuit: batch must be a TaskBatch.*got NoneType"),
    # --- attention_influence heads (finding 6)
    ("attention_influence float head", lambda x: I.attention_influence(x.m, x.batch, [(0.5, 1)]), TypeError,
     r"heads must be a list of \(layer, head\) int pairs.*got the entry \(0.5, 1\)"),
    ("attention_influence triple", lambda x: I.attention_influence(x.m, x.batch, [(0, 1, 2)]), TypeError,
     r"got the entry \(0, 1, 2\)"),
    ("attention_influence ints", lambda x: I.attention_influence(x.m, x.batch, [1, 2]), TypeError,
     r"got the entry 1"),
    ("attention_influence str", lambda x: I.attention_influence(x.m, x.batch, "01"), TypeError,
     r"heads must be a list of \(layer, head\) int pairs"),
    ("attention_influence out of range", lambda x: I.attention_influence(x.m, x.batch, [(0, 4)]), ValueError,
     r"head \(0, 4\) out of range; the model has layers 0..1 and heads 0..3"),
    ("attention_influence empty", lambda x: I.attention_influence(x.m, x.batch, []), ValueError, r"heads is empty"),
    ("attention_influence Tokens", lambda x: I.attention_influence(x.m, x.batch.clean, [(0, 1)]), TypeError,
     r"attention_influence: batch must be a TaskBatch"),
    # --- circuits (finding 7)
    ("faithfulness_curve fractions empty", lambda x: C.faithfulness_curve(x.m, x.circuit, x.ids, x.ablated, x.metric,
                                                                         fractions=[]),
     ValueError, r"faithfulness_curve: fractions is empty"),
    ("faithfulness_curve fraction -0.5", lambda x: C.faithfulness_curve(x.m, x.circuit, x.ids, x.ablated, x.metric,
                                                                       fractions=[-0.5, 0.5]),
     ValueError, r"fractions\[\] must be a finite number in \(0, 1\], got -0.5"),
    ("faithfulness_curve fraction 5", lambda x: C.faithfulness_curve(x.m, x.circuit, x.ids, x.ablated, x.metric,
                                                                    fractions=[0.5, 5.0]),
     ValueError, r"in \(0, 1\], got 5.0"),
    ("find_circuit graph of another model", lambda x: C.find_circuit(
        x.m, x.task, x.batch, method="eap", graph=Graph.from_config(1, 1, 1, False, "toy-other")), ValueError,
     r"find_circuit: graph is the graph of toy-other, not of toy-induction: n_layers 1 in the graph, 2 in"),
    ("find_circuit graph not a Graph", lambda x: C.find_circuit(x.m, x.task, x.batch, graph="g"), TypeError,
     r"graph must be a circuits Graph"),
    ("faithfulness circuit shape", lambda x: C.faithfulness(x.m, x.g, x.ids, x.ablated, x.metric,
                                                            [torch.zeros(2, 2)]),
     ValueError, r"faithfulness: circuits\[0\] must be a \[9, 25\] bool mask .* got \(2, 2\)"),
    ("faithfulness one mask", lambda x: C.faithfulness(x.m, x.g, x.ids, x.ablated, x.metric, x.circuit.in_circuit),
     TypeError, r"circuits must be a list of \[9, 25\] bool masks .*wrap one mask in a list"),
    ("roc_auc shapes", lambda x: C.roc_auc(torch.rand(3), torch.ones(4, dtype=torch.bool)), ValueError,
     r"roc_auc: scores \(3,\) and positive \(4,\) must have one shape"),
    ("spearman shapes", lambda x: C.spearman(torch.rand(5), torch.rand(4)), ValueError,
     r"spearman: a \(5,\) and b \(4,\) must have one shape"),
    ("Circuit scores list", lambda x: C.Circuit(x.g, [[0.0]]), TypeError,
     r"Circuit.scores must be a tensor \[9, 25\]"),
    ("Circuit in_circuit shape", lambda x: C.Circuit(x.g, torch.zeros(9, 25), in_circuit=torch.zeros(2, 2)),
     ValueError, r"Circuit.in_circuit must be \[9, 25\] for this graph \(like scores\), got \(2, 2\)"),
    ("Circuit graph None", lambda x: C.Circuit(None, torch.zeros(9, 25)), TypeError, r"Circuit.graph must be"),
    ("select threshold nan", lambda x: C.Circuit(x.g, x.circuit.scores).select(threshold=NAN), ValueError,
     r"Circuit.select: threshold must be a finite number"),
    ("write a Tensor", lambda x: C.write(x.circuit.scores, "/nonexistent"), TypeError, r"write: c must be a Circuit"),
    # --- the job's settings (finding 8), as the command line spells them
    ("check_settings --n", lambda x: J.check_settings("eap", 0, 5, "corrupted", 10, "topn", 8, ("corrupted",),
                                                      flags=True), ValueError, r"^--n must be an int >= 1, got 0"),
    ("check_settings --steps", lambda x: J.check_settings("eap", 4, 0, "corrupted", 10, "topn", 8, ("corrupted",),
                                                          flags=True), ValueError, r"^--steps must be an int >= 1"),
    ("method option chunk -1", lambda x: J.check_method_options({"chunk": -1}, "patching"), ValueError,
     r"method option chunk \(edges per forward\) must be an int >= 1, got -1"),
    ("method option chunk without patching", lambda x: J.check_method_options({"chunk": 4}, "eap"), ValueError,
     r"method option chunk is the edges per forward of method patching: it needs method patching, not 'eap'"),
]


@pytest.mark.parametrize("call, err, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(x, call, err, match):
    raises_clear_error(err, match, call, x)


# ------------------------------------------------------------------------------------------------ good input
def test_task_names_are_looked_up_everywhere(x):
    """A task name works wherever a Task does (as head_importance always allowed), with the same result."""
    induction = T.get_task("induction")
    torch.testing.assert_close(I.ablation_scores(x.m, "induction", x.batch), I.ablation_scores(x.m, induction, x.batch))
    torch.testing.assert_close(I.mask_gradient_scores(x.m, "induction", x.batch),
                               I.mask_gradient_scores(x.m, induction, x.batch))
    scores = torch.arange(8.).reshape(2, 4)
    pd.testing.assert_frame_equal(P.pruning_curve(x.m, "induction", x.batch, scores, [0, 0.5]),
                                  P.pruning_curve(x.m, induction, x.batch, scores, [0, 0.5]))
    torch.testing.assert_close(C.find_circuit(x.m, "induction", x.batch, method="eap").scores,
                               C.find_circuit(x.m, induction, x.batch, method="eap").scores, equal_nan=True)


def test_heads_per_forward_still_batches(x):
    default = I.ablated_losses(x.m, x.task, x.batch)
    for k in (1, 3, 8, np.int64(2)):
        torch.testing.assert_close(I.ablated_losses(x.m, x.task, x.batch, heads_per_forward=k), default)
    assert bool((default != 0).any())


def test_pruning_curve_always_has_its_reference(x):
    """fractions without 0: the full model is measured anyway, so rel_increase is defined (it was all NaN)."""
    curve = P.pruning_curve(x.m, x.task, x.batch, torch.arange(8.).reshape(2, 4), fractions=[0.5])
    assert curve["n_removed"].tolist() == [0, 4] and curve["rel_increase"].notna().all()
    assert curve["rel_increase"].iloc[0] == 0 and P.heads_removable(curve, 0.0) == 0
    assert len(P.random_pruning_curve(x.m, x.task, x.batch, fractions=np.array([0.25]), n_orders=1)) == 2


def test_method_agreement_needs_no_model_column_and_counts_k_right(x):
    res = P.method_agreement(x.table.drop(columns="model"), top_frac=0.25)
    assert list(res.columns) == ["method_a", "method_b", "spearman", "top2_overlap"]
    assert res["spearman"].iloc[0] == pytest.approx(-1.0) and res["top2_overlap"].iloc[0] == 0
    assert "top8_overlap" in P.method_agreement(x.table, top_frac=1).columns


def test_attention_influence_accepts_numpy_and_tensor_pairs(x):
    ref = I.attention_influence(x.m, x.batch, [(0, 1)])
    torch.testing.assert_close(I.attention_influence(x.m, x.batch, [(np.int64(0), np.int64(1))]), ref)
    torch.testing.assert_close(I.attention_influence(x.m, x.batch, torch.tensor([[0, 1]])), ref)
    torch.testing.assert_close(I.attention_influence(x.m, x.batch, [[0, 1]], task="induction"),
                               I.attention_influence(x.m, x.batch, [(0, 1)], task=x.task))


def test_circuit_in_circuit_and_chunks_that_are_fine(x):
    c = C.Circuit(x.g, x.circuit.scores, in_circuit=x.circuit.in_circuit.int())
    assert c.in_circuit.dtype == torch.bool and c.n_edges == x.circuit.n_edges
    a = C.head_patching(x.m, x.ids, x.cor, x.metric, chunk=3)
    torch.testing.assert_close(a, C.head_patching(x.m, x.ids, x.cor, x.metric), rtol=1e-5, atol=1e-6)
    assert bool((a != 0).any())


def test_write_into_a_file_path_says_what_to_do(x, tmp_path):
    f = tmp_path / "taken.txt"
    f.write_text("keep me")
    with pytest.raises(ValueError, match=r"write: out_dir '.*taken.txt' is a file, not a folder; .* give a folder"):
        C.write(x.circuit, f)
    assert f.read_text() == "keep me"
    with pytest.raises(ValueError, match=r"cannot make the folder .*: a part of that path is a file"):
        C.write(x.circuit, f / "sub")
    assert [p.name for p in C.write(x.circuit, tmp_path / "new")] == ["edges.csv", "nodes.csv", "graph.json"]


def test_task_file_that_is_a_folder(tmp_path):
    with pytest.raises(ValueError, match=r"task file '.*' is a folder, not a file; give a .jsonl or .csv file"):
        T.read_rows(tmp_path)


def test_job_seeds_are_checked_before_any_model_loads():
    from interp.batch import circuit as BC
    from interp.batch import importance as BI

    with pytest.raises(ValueError, match=r"^seed must be between 0 and 2\*\*63 - 1"):
        BC.options(task="induction", method="eap", seed=2**64)
    with pytest.raises(ValueError, match=r"^--seed must be between 0 and 2\*\*63 - 1 = \d+, got -1"):
        BI.options(task="induction", seed=-1)
    from interp.batch import classify as BK

    with pytest.raises(ValueError, match=r"^seed must be between 0 and 2\*\*63 - 1 = \d+, got -5"):
        BK.classify(["toy-induction"], "unused-out", seed=-5)  # the Python entry point checks it too
    with pytest.raises(ValueError, match=r"^seed must be an int, got 1.5"):
        BK.options(seed=1.5)


# ------------------------------------------------------------------------------------------------ memory (finding 1)
def test_batch_memory_is_checked_before_the_prompts_are_built(x, tmp_path):
    cfg, task = x.m.cfg, T.get_task("induction")  # 41 tokens a prompt (BOS + 2 x 20)
    limit = T.pass_bytes(cfg, 10, 41)
    assert T.check_batch_fits(x.m, task, 10, limit=limit) == limit
    with pytest.raises(ValueError, match=r"^--n 11 is too many prompts for toy-induction: one pass over 11 prompts "
                                         r"of 41 tokens would take about .* GiB .*; the largest --n that fits is "
                                         r"about 10$"):
        T.check_batch_fits(x.m, task, 11, flag="--n", limit=limit)
    with pytest.raises(ValueError, match=r"not even one prompt fits"):
        T.check_batch_fits(x.m, task, 1, limit=100)
    with pytest.raises(ValueError, match=r"head_importance: n 100000000 is too many prompts .* the largest n that "
                                         r"fits is about \d+"):
        I.head_importance(x.m, "induction", methods=["dla"], n=10**8)
    # the file task has as many prompts as rows, whatever n asks for
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"clean": [1, 5, 6, 7], "answer": 5}) + "\n" for _ in range(3)))
    ft = T.get_task("file", path=str(rows))
    assert T.check_batch_fits(x.m, ft, 10**9, limit=T.pass_bytes(cfg, 3, 4)) == T.pass_bytes(cfg, 3, 4)


# ------------------------------------------------------------------------------------------------ command line
BAD_CLI = [  # (id, arguments, text of the one stderr line); {d} = a folder of this test
    ("circuit_n_huge", ["circuit", "toy-induction", "--task", "induction", "--n", "100000000", "--method", "eap"],
     r"--n 100000000 is too many prompts for toy-induction: .* the largest --n that fits is about \d+"),
    ("importance_n_huge", ["importance", "toy-induction", "--task", "induction", "--n", "100000000", "--methods",
                           "dla", "--no-pruning"], r"--n 100000000 is too many prompts .* the largest --n that fits"),
    ("patching_chunk_-1", ["circuit", "toy-induction", "--task", "induction", "--n", "4", "--method", "patching",
                           "--method-option", "chunk=-1"], r"method option chunk \(edges per forward\) must be an int "
                                                          r">= 1, got -1"),
    ("patching_chunk_0", ["circuit", "toy-induction", "--task", "induction", "--method", "patching",
                          "--method-option", "chunk=0"], r"chunk \(edges per forward\) must be an int >= 1, got 0"),
    ("patching_chunk_abc", ["circuit", "toy-induction", "--task", "induction", "--method", "patching",
                            "--method-option", "chunk=abc"], r"must be an int >= 1, got 'abc'"),
    ("chunk_without_patching", ["circuit", "toy-induction", "--task", "induction", "--method", "eap",
                                "--method-option", "chunk=4"], r"it needs method patching, not 'eap'"),
    ("classify_seed_huge", ["classify", "toy-induction", "--seed", "99999999999999999999"],
     r"--seed must be between 0 and 2\*\*63 - 1 = 9223372036854775807, got 99999999999999999999"),
    ("importance_seed_negative", ["importance", "toy-induction", "--task", "induction", "--seed", "-1"],
     r"--seed must be between 0 and 2\*\*63 - 1"),
    ("task_file_folder", ["circuit", "toy-induction", "--task", "file", "--task-file", "{d}"],
     r"task file '.*' is a folder, not a file; give a .jsonl or .csv file of rows"),
    ("circuit_n_0", ["circuit", "toy-induction", "--task", "induction", "--n", "0"], r"--n must be an int >= 1, got 0"),
    ("circuit_steps_0", ["circuit", "toy-induction", "--task", "induction", "--steps", "0"],
     r"--steps must be an int >= 1, got 0"),
    ("circuit_faith_n_-2", ["circuit", "toy-induction", "--task", "induction", "--faith-n", "-2"],
     r"--faith-n must be an int >= 1, got -2"),
]
GOOD_CLI = ["circuit", "toy-induction", "--task", "induction", "--method", "eap", "--task-option", "half=6", "--n",
            "3", "--faith-n", "3", "--top-n", "12"]


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    """Every command line in its own forked process (tests/cli_fork.py), in one go; the last one is a good run
    with progress on."""
    d = tmp_path_factory.mktemp("cli")
    cases = [dict(args=[*[a.replace("{d}", str(d)) for a in args], "--out", str(d / cid), "--no-progress"],
                  timeout=300) for cid, args, _ in BAD_CLI]
    cases.append(dict(args=[*GOOD_CLI, "--out", str(d / "good")], timeout=600))
    results = fork_cli(cases, d / "cases.json", d / "results.json", ENV, 1800)
    return d, dict(zip([c[0] for c in BAD_CLI] + ["good"], results))


@pytest.mark.parametrize("case", BAD_CLI, ids=[c[0] for c in BAD_CLI])
def test_cli_bad_input_is_one_line_exit_2(case, cli_results):
    import re

    cid, _, message = case
    d, results = cli_results
    r = results[cid]
    line = one_line_exit_2(r)
    assert re.search(message, line), line
    assert r["seconds"] < 120, r["seconds"]  # refused up front, not after building 10^8 prompts
    out = d / cid
    left = [p.name for p in out.iterdir() if p.name != "shards"] if out.exists() else []
    assert left == [], left


def test_cli_prints_progress_before_the_first_shard(cli_results):
    _, results = cli_results
    r = results["good"]
    assert r["returncode"] == 0, r["stderr"][-3000:]
    lines = r["stdout"].splitlines()
    assert lines[0].startswith("interp circuit: 1 model(s), 1 shard(s) into "), lines
    assert any(line.startswith("toy-induction circuit:") for line in lines[1:]), lines


def test_spearman_without_two_finite_pairs_is_nan():
    """A layer-0 receiver has one upstream edge: its correlation is NaN, and a sweep over receivers goes on."""
    assert math.isnan(C.spearman(torch.full((5,), NAN), torch.rand(5)))
    assert math.isnan(C.spearman(torch.tensor([1.0, NAN]), torch.tensor([2.0, 3.0])))
    assert C.spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 5.0, 9.0])) == pytest.approx(1.0)
