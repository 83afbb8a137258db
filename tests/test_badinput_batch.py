"""Bad input to the batch jobs (interp.batch) and the classification report, from a bad-input sweep: the output
folder, the models, the run's flags and Ray timeout are refused before any model is loaded; --resume recomputes a
shard whose result is readable JSON but wrong (a missing or non-finite score, a value outside its range, another
shape); `interp report` refuses a heads.csv cut short; a report path that cannot be written is refused before
anything is drawn."""

import copy
import json
import math
import shutil
import sys
import time
import types
from pathlib import Path

import pandas as pd
import pytest
import torch

import interp
import interp.zoo
from interp.batch import arguments
from interp.batch.circuit import circuit
from interp.batch.classify import classify, model_table
from interp.batch.importance import importance
from interp.batch.runner import get_job, plan, result_problem


def quiet(*a):
    pass


@pytest.fixture
def no_loading(monkeypatch):
    """Loading a model fails the test: bad input must be refused before any model is loaded."""
    def load(*a, **k):
        raise AssertionError("a model was loaded although the input is bad")

    monkeypatch.setattr(interp.zoo, "load", load)


# ------------------------------------------------------------------------------------------------ out= (item 1)
OUT_CASES = [
    ("none", lambda d: None, TypeError, r"out must be a folder path \(a str or pathlib.Path\), got NoneType"),
    ("int", lambda d: 3, TypeError, "out must be a folder path"),
    ("empty", lambda d: "", ValueError, "out must name a directory, got an empty string"),
    ("blank", lambda d: "  ", ValueError, "out must name a directory"),
    ("a-file", lambda d: d / "file", ValueError, "is a file, not a folder; give a folder"),
    ("under-a-file", lambda d: d / "file" / "o", ValueError, "cannot create out .*: .*file is a file, not a folder"),
    ("cannot-create", lambda d: "/proc/forbidden/x", ValueError, "cannot create out /proc/forbidden/x"),
]


@pytest.mark.parametrize("entry", ["classify", "importance", "circuit"])
@pytest.mark.parametrize("make, exc, match", [c[1:] for c in OUT_CASES], ids=[c[0] for c in OUT_CASES])
def test_out_is_checked_before_any_model_is_loaded(tmp_path, monkeypatch, no_loading, entry, make, exc, match):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.chdir(tmp_path)  # out="" once wrote heads.csv, report.html and shards/ here
    call = {"classify": lambda out: classify("toy-induction", out, progress=False, log=quiet),
            "importance": lambda out: importance("toy-induction", out, task="induction", progress=False, log=quiet),
            "circuit": lambda out: circuit("toy-induction", out, task="induction", progress=False, log=quiet)}[entry]
    with pytest.raises(exc, match=match):
        call(make(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_unwritable_out_is_refused_before_loading(tmp_path, monkeypatch, no_loading, capsys):
    """A folder the user may not write (simulated: tests may run as root, for whom os.access says yes)."""
    from interp.batch.cli import main

    monkeypatch.setattr(arguments, "writable_folder", lambda folder: False)
    with pytest.raises(ValueError, match=f"out {tmp_path / 'o'} is not writable"):
        classify(["toy-induction"], tmp_path / "o", progress=False, log=quiet)
    with pytest.raises(SystemExit) as e:
        main(["classify", "toy-induction", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err == f"interp: error: --out {tmp_path / 'c'} is not writable", err


def test_cli_out_naming_a_file_is_one_line(tmp_path, capsys):
    from interp.batch.cli import main

    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as e:
        main(["classify", "toy-induction", "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "is a file, not a folder" in err, err


# -------------------------------------------------------------------------------------- models, log, flags (item 15)
API_CASES = [
    ("log-none", dict(log=None), TypeError, r"log must be a callable taking one str \(e.g. print"),
    ("log-str", dict(log="print"), TypeError, "log must be a callable"),
    ("models-int", dict(models=3), TypeError, "models must be a model name or path, or a list of them, got int 3"),
    ("models-bytes", dict(models=b"toy-induction"), TypeError, "models must be a model name or path"),
    ("models-none-inside", dict(models=["toy-induction", None]), TypeError,
     r"models\[1\] must be a model name or path .*got NoneType"),
    ("resume-str", dict(resume="yes"), TypeError, "resume must be True or False, got str 'yes'"),
    ("progress-str", dict(progress="no"), TypeError, "progress must be True or False"),
    ("recompute-without-resume", dict(recompute_mismatched=True), ValueError, "only makes sense with resume=True"),
    ("ray-address-int", dict(ray_address=6379), TypeError, "ray_address must be None"),
    ("ray-timeout-str", dict(ray_timeout="5"), TypeError, "ray_timeout must be a positive number of seconds"),
    ("ray-timeout-bool", dict(ray_timeout=True), TypeError, "ray_timeout must be a positive number of seconds"),
    ("ray-timeout-inf", dict(ray_timeout=math.inf), ValueError, "ray_timeout must be a positive number of seconds"),
    ("ray-timeout-nan", dict(ray_timeout=math.nan), ValueError, "positive number of seconds, got nan"),
    ("ray-timeout-zero", dict(ray_timeout=0), ValueError, "positive number of seconds, got 0"),
]


@pytest.mark.parametrize("kw, exc, match", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_run_arguments_are_checked_before_any_model_is_loaded(tmp_path, no_loading, kw, exc, match):
    args = dict(dict(models=["toy-induction"], out=tmp_path / "o", progress=False, log=quiet), **kw)
    with pytest.raises(exc, match=match):
        classify(**args)
    assert not (tmp_path / "o").exists()


def test_a_loaded_model_is_refused_by_name(tmp_path):
    m = interp.load("toy-induction")
    with pytest.raises(TypeError, match=r"models\[0\] is a loaded model \(HookedModel\); batch jobs load each model "
                                        r"themselves .* take its name or path, e.g. 'toy-induction'"):
        classify([m], tmp_path / "o", progress=False, log=quiet)
    with pytest.raises(TypeError, match="models is a loaded model"):
        importance(m, tmp_path / "o", task="induction", progress=False, log=quiet)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ Ray timeout (10)
def test_huge_ray_timeout_waits_instead_of_overflowing(monkeypatch):
    """--ray-timeout 1e10 (> threading.TIMEOUT_MAX) was an OverflowError traceback; it now waits as long as
    threading allows. A stand-in `ray` whose init takes 0.3 s."""
    from interp.batch.ray_backend import connect

    fake = types.SimpleNamespace(is_initialized=lambda: False, init=lambda **kw: time.sleep(0.3))
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_IGNORE_UNHANDLED_ERRORS", raising=False)  # (connect sets it; restored afterwards)
    assert connect("local", 1e10) is fake
    with pytest.raises(ValueError, match="the Ray connection timeout must be a positive number of seconds, got nan"):
        connect("local", math.nan)


# ------------------------------------------------------------------------------------------------ resume (item 2)
@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    """A finished classify run of toy-induction: (its folder, the table)."""
    out = tmp_path_factory.mktemp("classified")
    table = classify(["toy-induction"], out, progress=False, log=quiet)
    return out, table


def _copy_run(src, dst):
    shutil.copytree(src / "shards", dst / "shards")
    return dst


def _edit(out, shard, change=None, result=None):
    """Edit the shard file's result in place with `change`, or replace it by `result`."""
    path = out / "shards" / "toy-induction" / f"{shard}.json"
    saved = json.loads(path.read_text())
    if change is not None:
        change(saved["result"])
    else:
        saved["result"] = result
    path.write_text(json.dumps(saved))
    return path


def _set(key, layer, head, value):
    def change(r):
        r["scores"][key][layer][head] = value
    return change


# (id, shard, edit of its result, text of the reason in the note)
TAMPERED = [
    ("missing-score", "patterns", lambda r: r["scores"].pop("induction_score"), "result.scores has no "
     "'induction_score'"),
    ("nan-score", "patterns", _set("induction_score", 1, 2, math.nan), "induction_score at layer 1 head 2 is NaN"),
    ("score-above-range", "patterns", _set("induction_score", 0, 0, 5.0), "is 5, outside its range [-0.01, 1.01]"),
    ("score-below-range", "patterns", _set("previous_token_score", 0, 1, -3.0), "is -3, outside its range"),
    ("string-score", "patterns", _set("induction_score", 0, 0, "0.5"), "is str '0.5', not a number"),
    ("null-score", "long_context", _set("sink_score", 0, 0, None), "is NoneType None, not a number"),
    ("inf-entropy", "long_context", _set("entropy", 1, 1, math.inf), "is inf, not a finite number"),
    ("fractional-window", "long_context", _set("window", 0, 0, 2.5), "window at layer 0 head 0 is 2.5, not a whole"),
    ("missing-layer", "long_context", lambda r: r["scores"]["sink_score"].pop(), "sink_score must be a [2][4] list"),
    ("short-row", "retrieval", lambda r: r["scores"]["retrieval_score"][0].pop(), "must be a [2][4] list"),
    ("unknown-score", "retrieval", lambda r: r["scores"].update(inductoin_score=[[0.0] * 4] * 2),
     "unexpected key 'inductoin_score'"),
    ("no-shape", "retrieval", lambda r: r.pop("shape"), "result has no 'shape'"),
    ("bad-shape", "retrieval", lambda r: r.update(shape=[2, 0]), r"result.shape[1] must be an integer >= 1"),
]


def _plan(out, said):
    opts = json.loads((out / "shards" / "toy-induction" / "patterns.json").read_text())["options"]
    return plan(get_job("classify"), ["toy-induction"], out, opts, resume=True, log=said.append)


@pytest.mark.parametrize("shard, change, reason", [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_resume_recomputes_a_shard_whose_result_is_wrong(classified, tmp_path, shard, change, reason):
    out = _copy_run(classified[0], tmp_path)
    path = _edit(out, shard, change)
    said = []
    p = _plan(out, said)
    assert p.todo == [("toy-induction", shard)], p.todo
    assert len(said) == 1 and said[0].startswith(f"note: {path} holds an invalid result (") and reason in said[0] \
        and said[0].endswith("; recomputing it"), said


@pytest.mark.parametrize("result", [[], "x", None, 3], ids=["list", "str", "null", "int"])
def test_resume_recomputes_a_result_that_is_not_an_object(classified, tmp_path, result):
    out = _copy_run(classified[0], tmp_path)
    path = _edit(out, "patterns", result=result)
    said = []
    assert _plan(out, said).todo == [("toy-induction", "patterns")]
    assert said == [f"note: {path} holds an invalid result (result must be an object, got "
                    f"{type(result).__name__}); recomputing it"]


def test_resume_keeps_valid_shards_nan_where_allowed(classified, tmp_path):
    """A finished run's shards are all reused; NaN stays allowed where the job writes it (no answered needle
    trial, no sliding window)."""
    out = _copy_run(classified[0], tmp_path)
    said = []
    assert _plan(out, said).todo == [] and said == []
    _edit(out, "retrieval", lambda r: r["scores"].update(retrieval_score=[[math.nan] * 4] * 2))
    assert _plan(out, said).todo == [] and said == []


def test_resume_recomputes_shards_that_disagree_on_the_model_size(classified, tmp_path):
    out = _copy_run(classified[0], tmp_path)
    _edit(out, "retrieval", lambda r: r.update(shape=[3, 4], scores={"retrieval_score": [[0.5] * 4] * 3}))
    said = []
    p = _plan(out, said)
    assert sorted(s for _, s in p.todo) == ["long_context", "patterns", "retrieval"], p.todo
    assert len(said) == 1 and "the shards of toy-induction disagree on the model's size" in said[0], said
    assert "retrieval.json: (3, 4)" in said[0]


def test_resume_with_a_wrong_shard_gives_the_original_table(classified, tmp_path):
    """End to end: a shard missing a score is named, recomputed and rewritten; the table is the first run's."""
    out = _copy_run(classified[0], tmp_path)
    path = _edit(out, "patterns", lambda r: r["scores"].pop("induction_score"))
    said = []
    table = classify(["toy-induction"], out, resume=True, progress=False, log=said.append)
    assert any(f"note: {path} holds an invalid result" in s for s in said), said
    assert "induction_score" in json.loads(path.read_text())["result"]["scores"]
    pd.testing.assert_frame_equal(table, classified[1])


# the importance and circuit jobs' checks, on results shaped like the real ones (no model run needed)
IMP_OPTS = {"task": "induction", "methods": ["ablation_zero", "attention_influence", "dla"], "n": 4, "seed": 0,
            "pruning": True, "pruning_step": 0.5, "pruning_seq_len": 64, "dtype": None}
GRID = [[0.1, -0.2, 0.3, 0.0], [1.5, 0.0, -2.0, 0.25]]
CURVE = [{"n_removed": 0, "fraction": 0.0, "loss": 0.15, "rel_increase": 0.0, "source": "induction",
          "order": "mask_gradient order"},
         {"n_removed": 4, "fraction": 0.5, "loss": 0.3, "rel_increase": 1.0, "source": "induction",
          "order": "random order"}]
IMP_CASES = [
    ("missing-method", "ablation_zero", lambda r: r["scores"].pop("attention_influence"), "has no "
     "'attention_influence'"),
    ("nan", "dla", lambda r: r["scores"]["dla"][1].__setitem__(3, math.nan), "dla at layer 1 head 3 is NaN"),
    ("ragged", "ablation_zero", lambda r: r["scores"]["attention_influence"][1].pop(), "must be a [2][4] list"),
    ("shapes-differ", "ablation_zero", lambda r: r["scores"].update(attention_influence=[[0.0] * 4] * 3),
     "attention_influence must be a [2][4] list"),
    ("no-curves", "pruning", lambda r: r.update(curves=[]), "result.curves must be a non-empty list"),
    ("curve-fraction", "pruning", lambda r: r["curves"][1].update(fraction=1.5), "curves[1].fraction is 1.5, outside"),
    ("curve-loss-nan", "pruning", lambda r: r["curves"][0].update(loss=math.nan), "curves[0].loss is NaN"),
    ("curve-order", "pruning", lambda r: r["curves"][0].update(order="best"), "order must be one of"),
    ("curve-missing-key", "pruning", lambda r: r["curves"][0].pop("source"), "curves[0] has no 'source'"),
]


def _imp_result(shard):
    if shard == "pruning":
        return {"curves": copy.deepcopy(CURVE)}
    names = {"ablation_zero": ("ablation_zero", "attention_influence"), "dla": ("dla",)}[shard]
    return {"scores": {n: copy.deepcopy(GRID) for n in names}}


@pytest.mark.parametrize("shard, change, reason", [c[1:] for c in IMP_CASES], ids=[c[0] for c in IMP_CASES])
def test_importance_shard_check(shard, change, reason):
    job = get_job("importance")
    assert result_problem(job, shard, _imp_result(shard), IMP_OPTS) == (None if shard == "pruning" else (2, 4))
    bad = _imp_result(shard)
    change(bad)
    problem = result_problem(job, shard, bad, IMP_OPTS)
    assert isinstance(problem, str) and reason in problem, problem


def _circuit_result(acdc=False):
    from interp.analyses.circuits.graph import Graph

    n = Graph.from_config(2, 4, 4, False, "toy-induction").n_edges  # 81
    faith = {"full": 0.1, "empty": 9.0, "metric": [9.0, 5.0, 0.1], "f": [0.0, 0.45, 1.0],
             "fractions": [0.01, 0.5, 1.0], "n_edges": [1, 40, n], "cpr": 0.9, "cmd": 0.1,
             "circuit": {"n_edges": 11, "f": 1.0, "metric": 0.1}}
    r = {"graph": {"model": "toy-induction", "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "mlp": False,
                   "n_edges": n}, "n_prompts": 4, "scores": [0.01] * n, "faithfulness": {"corrupted": faith},
         "notes": ["x"]}
    if acdc:
        r.update(in_circuit=[False] * n, meta={"acdc": {"metric": "kl"}, "n_edges_unreached": 0})
    return r


CIRCUIT_OPTS = {"task": "induction", "method": "eap", "n": 4, "seed": 0, "steps": 5, "ablation": "corrupted",
                "top_n": 200, "select": "topn", "eval_ablations": ["corrupted"], "faith_n": 4, "task_options": {},
                "method_options": {}, "dtype": None}
CIRCUIT_CASES = [
    ("scores-short", False, lambda r: r["scores"].pop(), "result.scores has 80 edge scores, the graph 81 edges"),
    ("score-nan", False, lambda r: r["scores"].__setitem__(5, math.nan), "result.scores[5] is NaN"),
    ("graph-edges", False, lambda r: r["graph"].update(n_edges=80), "result.graph.n_edges is 80, but a graph"),
    ("graph-heads", False, lambda r: r["graph"].update(n_heads=0), "result.graph.n_heads must be an integer >= 1"),
    ("faith-missing", False, lambda r: r.update(faithfulness={}), "result.faithfulness has no 'corrupted'"),
    ("faith-full-nan", False, lambda r: r["faithfulness"]["corrupted"].update(full=math.nan),
     "corrupted.full is NaN"),
    ("faith-lengths", False, lambda r: r["faithfulness"]["corrupted"]["f"].pop(), "one entry per point"),
    ("faith-fraction", False, lambda r: r["faithfulness"]["corrupted"]["fractions"].__setitem__(0, 0),
     "fractions of the edges in (0, 1]"),
    ("faith-edges", False, lambda r: r["faithfulness"]["corrupted"]["n_edges"].__setitem__(0, 500),
     "n_edges[0] is 500, outside its range [0, 81]"),
    ("n-prompts", False, lambda r: r.update(n_prompts=0), "result.n_prompts must be an integer in [1, 4]"),
    ("acdc-no-kept", True, lambda r: r.pop("in_circuit"), "result has no 'in_circuit'"),
    ("acdc-kept-ints", True, lambda r: r["in_circuit"].__setitem__(0, 1), "81 true/false flags"),
    ("acdc-meta", True, lambda r: r["meta"].update(n_edges_unreached=-1), "n_edges_unreached must be an integer"),
]


@pytest.mark.parametrize("acdc, change, reason", [c[1:] for c in CIRCUIT_CASES], ids=[c[0] for c in CIRCUIT_CASES])
def test_circuit_shard_check(acdc, change, reason):
    job = get_job("circuit")
    opts = dict(CIRCUIT_OPTS, method="acdc" if acdc else "eap")
    assert result_problem(job, "circuit", _circuit_result(acdc), opts) == (2, 4)
    bad = _circuit_result(acdc)
    change(bad)
    problem = result_problem(job, "circuit", bad, opts)
    assert isinstance(problem, str) and reason in problem, problem
    nan_f = _circuit_result(acdc)  # f (and so CPR, CMD) is NaN when the full and empty circuits score the same
    nan_f["faithfulness"]["corrupted"].update(f=[math.nan] * 3, cpr=math.nan, cmd=math.nan)
    assert result_problem(job, "circuit", nan_f, opts) == (2, 4)


# ------------------------------------------------------------------------------------------------ report (item 17)
@pytest.fixture
def heads_dir(tmp_path):
    """DIR/heads.csv as `interp classify` writes it: 2 layers x 4 heads of one model."""
    g = torch.Generator().manual_seed(0)
    table = model_table("m", {"s": {"sink_score": torch.rand(2, 4, generator=g).tolist(),
                                    "induction_score": torch.rand(2, 4, generator=g).tolist()}}, 2, 4)
    table.to_csv(tmp_path / "heads.csv", index=False)
    return tmp_path


def _cli_report(d, capsys):
    from interp.batch.cli import main

    with pytest.raises(SystemExit) as e:
        main(["report", str(d)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert not (d / "report.html").exists()
    return err


def test_report_refuses_heads_csv_cut_mid_row(heads_dir, capsys):
    text = (heads_dir / "heads.csv").read_text()
    (heads_dir / "heads.csv").write_text(text[: text.rindex("\n", 0, len(text) - 1) + 12])  # 12 chars of the last
    err = _cli_report(heads_dir, capsys)
    assert f"{heads_dir / 'heads.csv'}: data row 8 has 4 of the header's 14 fields; the file looks cut short" in err
    assert "interp classify" in err


def test_report_refuses_heads_csv_missing_heads(heads_dir, capsys):
    lines = (heads_dir / "heads.csv").read_text().splitlines(keepends=True)
    (heads_dir / "heads.csv").write_text("".join(lines[:-2]))  # cut at a row boundary: two heads gone
    err = _cli_report(heads_dir, capsys)
    assert "model 'm' has 6 of its 2 x 4 heads; layer 1 head 2 is missing (and 1 more)" in err, err


@pytest.mark.parametrize("where", ["/proc/forbidden/r.html", "/proc/r.html"])
def test_report_to_a_path_that_cannot_be_written(where, tmp_path):
    """Was a raw PermissionError from the final write, after every figure was drawn (/proc refuses even root)."""
    from interp.report import write_classification_report

    table = model_table("m", {"s": {"sink_score": [[0.5] * 4] * 2}}, 2, 4)
    with pytest.raises(ValueError, match=f"cannot write the report '{where}': no permission to create files in "
                                         "'/proc'"):
        write_classification_report(table, where)
    with pytest.raises(TypeError, match="path must be the report's file path"):
        write_classification_report(table, None)


@pytest.mark.parametrize("where", ["/proc/forbidden/r.html", "/proc/r.html"])
def test_write_report_to_a_path_that_cannot_be_written(where):
    """interp.plots.write_report raised a raw FileNotFoundError/PermissionError from its final write (/proc refuses
    even root); now a ValueError naming the path and the folder, before anything is drawn."""
    from interp.plots import write_report

    with pytest.raises(ValueError, match=f"write_report: cannot write '{where}': no permission to create files in "
                                         "'/proc'"):
        write_report(where, "t", [("s", "text")])


def test_models_may_be_any_iterable_of_names():
    """A list, a tuple, interp.available()'s dict (its keys), a set or a generator of names."""
    want = ["toy-induction", "toy-needle"]
    for models in (want, tuple(want), dict.fromkeys(want, 1), (m for m in want)):
        assert arguments._model_sources(models) == want
    assert arguments._model_sources({"toy-induction"}) == ["toy-induction"]
    assert arguments._model_sources(Path("some/folder")) == ["some/folder"]
