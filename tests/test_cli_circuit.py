"""`interp circuit`: per-model files and their columns, resume after a kill, option checks, GPT-2 and Llama-style
local folders, the file task, and bad input (one line on stderr, exit 2, no output files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import interp
from helpers import fork_cli, one_line_exit_2, tiny_llama

ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
FAST = ["--task-option", "half=6", "--n", "3", "--faith-n", "3", "--top-n", "12", "--no-progress"]
MODEL_FILES = ("edges.csv", "nodes.csv", "graph.json", "faithfulness.json", "report.html")
SAME_FILES = ("edges.csv", "nodes.csv", "graph.json", "faithfulness.json")  # report.html has random plotly ids


def cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "interp.cli", "circuit", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def contents(out: Path, model_dir: str) -> dict:
    files = {f: (out / model_dir / f).read_text() for f in SAME_FILES}
    files.update({f: (out / f).read_text() for f in ("summary.csv", "faithfulness.csv")})
    return files


# ------------------------------------------------------------------------------------------------ folders
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny random GPT-2 (Conv1D projections, learned positions, biases; no tokenizer files) and a tiny
    Llama-style GQA model with SmolLM2's tokenizer, saved as Hugging Face folders."""
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=60, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                      bos_token_id=0, eos_token_id=0)).eval()
    with torch.no_grad():
        for n, p in gpt2.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)  # biases must cancel in every difference of two runs
    gpt2.save_pretrained(d / "gpt2")
    smollm2 = interp.load("smollm2-135m")
    llama = tiny_llama(vocab=smollm2.cfg.d_vocab, n_ctx=128)
    llama.config.architectures = ["LlamaForCausalLM"]
    llama.save_pretrained(d / "llama")
    smollm2.tokenizer.save_pretrained(d / "llama")
    rows = [
        {"clean": "When Mary and John went to the store, John gave a drink to",
         "corrupt": "When Mary and John went to the store, Mary gave a drink to", "answer": " Mary", "wrong": " John"},
        {"clean": "When Alice and Bob went to the park, Bob gave a ball to",
         "corrupt": "When Alice and Bob went to the park, Alice gave a ball to", "answer": " Alice", "wrong": " Bob"},
        {"clean": "The cat sat on the mat and the dog sat on the",  # another token length: its own bucket
         "corrupt": "The cat sat on the mat and the dog sat on a", "answer": " mat", "wrong": " dog"},
    ]
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = dict(rows[0], corrupt="When Mary and John went to the big store, Mary gave a drink to")
    (d / "unequal.jsonl").write_text(json.dumps(bad) + "\n")
    (d / "nocorrupt.csv").write_text("clean,answer\nThe cat sat on the,\" mat\"\n")
    return d


# ------------------------------------------------------------------------------------------------ files, resume
def test_files_columns_resume_and_option_mismatch(tmp_path):
    out = tmp_path / "c"
    args = ["toy-induction", "--task", "induction", "--method", "eap", "--eval-ablations", "corrupted", "zero",
            "--out", str(out), *FAST]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "toy-induction circuit:" not in r.stdout  # --no-progress
    for f in MODEL_FILES:
        assert (out / "toy-induction" / f).stat().st_size > 0, f
    edges = pd.read_csv(out / "toy-induction" / "edges.csv")
    assert list(edges.columns) == ["src", "dst", "dst_input", "score", "in_circuit"] and len(edges) == 81
    assert set(edges.dst_input) == {"q", "k", "v", "logits"} and 0 < edges.in_circuit.sum() <= 12
    nodes = pd.read_csv(out / "toy-induction" / "nodes.csv")
    assert list(nodes.columns) == ["node", "kind", "layer", "index", "out_score", "in_circuit"] and len(nodes) == 10
    g = json.loads((out / "toy-induction" / "graph.json").read_text())
    assert {"cfg", "nodes", "edges"} <= set(g) and "a0.h3->a1.h0<k>" in g["edges"]
    assert "a1.h2->logits" in g["edges"]
    assert g["meta"]["method"] == "eap" and g["meta"]["task"] == "induction"
    faith = json.loads((out / "toy-induction" / "faithfulness.json").read_text())["curves"]
    assert set(faith) == {"corrupted", "zero"}
    for c in faith.values():
        assert len(c["f"]) == 10 and c["f"][-1] == pytest.approx(1.0, abs=1e-3)  # every edge kept: the model
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.eval_ablation) == ["corrupted", "zero"]
    assert {"model", "method", "n_edges_circuit", "f_circuit", "cpr", "cmd"} <= set(summary.columns)
    assert len(pd.read_csv(out / "faithfulness.csv")) == 2 * 10
    from interp.analyses.circuits import read_json

    back = read_json(out / "toy-induction" / "graph.json", interp.load("toy-induction"))
    assert back.n_edges == int(edges.in_circuit.sum())
    before = contents(out, "toy-induction")
    shard = out / "shards" / "toy-induction" / "circuit.json"
    stamp = shard.stat().st_mtime_ns

    # a kill after the shard was written, before the files: --resume scores nothing and writes the same files
    for f in ("summary.csv", "faithfulness.csv"):
        (out / f).unlink()
    for f in MODEL_FILES:
        (out / "toy-induction" / f).unlink()
    r = cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert shard.stat().st_mtime_ns == stamp  # not recomputed
    assert contents(out, "toy-induction") == before

    # other options on resume are refused, naming the option; nothing is written
    (out / "summary.csv").unlink()
    r = cli(*[a if a != "12" else "5" for a in args], "--resume")
    assert r.returncode == 2 and "option top_n is 12 in the file, 5 now" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (out / "summary.csv").exists()


def finished_shards(out: Path) -> list[Path]:
    return sorted(p for p in (out / "shards").glob("*/*.json") if not p.name.startswith("."))


@pytest.mark.slow
def test_sigkill_then_resume_keeps_the_finished_model(tmp_path):
    out = tmp_path / "k"
    args = [sys.executable, "-m", "interp.cli", "circuit", "toy-induction", "toy-needle", "--task", "induction",
            "--method", "eap", "--out", str(out), *FAST]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while time.time() < deadline and not finished_shards(out):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = finished_shards(out)
    assert len(done) == 1 and not (out / "summary.csv").exists(), done
    stamp = done[0].stat().st_mtime_ns
    r = cli(*args[4:-1], "--resume")  # the same command line with progress lines, resumed
    assert r.returncode == 0, r.stderr
    assert done[0].stat().st_mtime_ns == stamp
    assert "toy-induction circuit:" not in r.stdout and "toy-needle circuit:" in r.stdout, r.stdout
    assert set(pd.read_csv(out / "summary.csv").model) == {"toy-induction", "toy-needle"}


# ------------------------------------------------------------------------------------------------ architectures
def test_gpt2_folder_core_identities(folders):
    """GPT-2 (Conv1D W_O, learned positions, non-zero biases): the patching core's endpoints are the clean and the
    corrupted runs, and EAP is its derivative."""
    from interp.analyses.circuits import attribution as A
    from interp.analyses.circuits import patching as P
    from interp.analyses.circuits.graph import Graph

    m = interp.load(str(folders / "gpt2"))
    assert m.tokenizer is None  # a folder without tokenizer files has none (not an empty one)
    g = Graph.from_model(m)
    assert (g.n_kv_heads, g.mlp, g.n_edges) == (4, True, 110)
    gen = torch.Generator().manual_seed(0)
    clean, corrupt = torch.randint(1, 60, (3, 7), generator=gen), torch.randint(1, 60, (3, 7), generator=gen)
    abl = P.ablated_outputs(m, g, clean, corrupt)
    lg = P.masked_logits(m, g, clean, abl, torch.stack([torch.zeros(g.n_up, g.n_slots), torch.ones(g.n_up, g.n_slots)]))
    torch.testing.assert_close(lg[0], m(clean), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lg[1], m(corrupt), rtol=1e-4, atol=1e-4)

    def metric(x):
        return (x[:, -1, 5] - x[:, -1, 9]).mean()

    eap = A.eap(m, g, clean, metric, ablated=abl)
    idx, a = g.edge_index(), 1e-2
    w = torch.zeros(len(idx), g.n_up, g.n_slots)
    w[torch.arange(len(idx)), idx[:, 0], idx[:, 1]] = a
    fd = (P.metric_of(P.masked_logits(m, g, clean, abl, w), metric)
          - P.metric_of(P.masked_logits(m, g, clean, abl, -w), metric)) / (2 * a)
    ev = eap[idx[:, 0], idx[:, 1]]
    scale = float(ev.abs().max())
    assert scale > 1e-4
    torch.testing.assert_close(ev, fd, rtol=2e-2, atol=2e-3 * scale)


def test_gpt2_and_llama_folders_through_the_cli(folders, tmp_path):
    out = tmp_path / "g"
    r = cli(str(folders / "gpt2"), "--task", "induction", "--method", "eap-ig", "--steps", "2", "--out", str(out),
            *FAST)
    assert r.returncode == 0, r.stderr
    (model_dir,) = [p for p in out.iterdir() if p.is_dir() and p.name != "shards"]
    g = json.loads((model_dir / "graph.json").read_text())
    assert g["cfg"]["n_kv_heads"] == g["cfg"]["n_heads"] == 4 and g["cfg"]["mlp"] and len(g["edges"]) == 110
    assert "m0->a1.h2<q>" in g["edges"] and not g["cfg"]["gqa"]
    # Llama-style GQA folder, the user's rows (two token lengths: bucketed), faithfulness under two ablations
    out = tmp_path / "l"
    r = cli(str(folders / "llama"), "--task", "file", "--task-file", str(folders / "rows.jsonl"), "--method", "eap",
            "--eval-ablations", "corrupted", "mean", "--top-n", "20", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    (model_dir,) = [p for p in out.iterdir() if p.is_dir() and p.name != "shards"]
    g = json.loads((model_dir / "graph.json").read_text())
    assert g["cfg"]["gqa"] and "input->a1.kv0<k>" in g["edges"]
    assert g["meta"]["task"] == "file" and g["meta"]["task_file"].endswith("rows.jsonl")
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.eval_ablation) == ["corrupted", "mean"] and summary.f_circuit.notna().all()


# ------------------------------------------------------------------------------------------------ bad input
BAD = [  # (id, arguments after `circuit`, text of the one stderr line); {m} = the models folder
    ("method", ["toy-induction", "--task", "induction", "--method", "magic"], "unknown method 'magic'; available:"),
    ("task", ["toy-induction", "--task", "translation"], "unknown task 'translation'"),
    ("task_option", ["toy-induction", "--task", "induction", "--task-option", "lenght=3"],
     "unknown option(s) ['lenght'] for task 'induction'"),
    ("method_option", ["toy-induction", "--task", "induction", "--method-option", "frobnicate=1"],
     "unknown method option 'frobnicate'"),
    ("method_option_form", ["toy-induction", "--method-option", "tau"], "--method-option must be KEY=VALUE"),
    ("eval_ablation", ["toy-induction", "--task", "induction", "--eval-ablations", "median"],
     "eval ablation must be one of corrupted, zero, mean, resample, got 'median'"),
    ("ig_needs_corrupt", ["toy-induction", "--task", "induction", "--ablation", "mean"],
     "eap-ig interpolates corrupt -> clean inputs"),
    ("top_n", ["toy-induction", "--task", "induction", "--top-n", "-1"], "top_n must be an int >= 0, got -1"),
    ("select", ["toy-induction", "--task", "induction", "--select", "best"], "select must be one of topn, greedy"),
    ("file_without_rows", ["toy-induction", "--task", "file"], "--task file needs --task-file"),
    ("rows_without_file_task", ["toy-induction", "--task", "induction", "--task-file", "{m}/rows.jsonl"],
     "--task-file is for --task file"),
    ("missing_rows", ["toy-induction", "--task", "file", "--task-file", "{m}/nope.jsonl"], "does not exist"),
    ("no_corrupt_column", ["{m}/llama", "--task", "file", "--task-file", "{m}/nocorrupt.csv"],
     "nocorrupt.csv has no corrupt column"),
    ("unequal_lengths", ["{m}/llama", "--task", "file", "--task-file", "{m}/unequal.jsonl", "--method", "eap"],
     "unequal.jsonl row 0: clean is 14 tokens but corrupt is 15"),
    ("needs_tokenizer", ["{m}/gpt2", "--task", "ioi"], "needs a tokenizer"),
    ("acdc_negative_tau", ["toy-induction", "--task", "induction", "--method", "acdc", "--method-option", "tau=-1"],
     "tau must be a finite number >= 0"),
    ("acdc_text_tau", ["toy-induction", "--task", "induction", "--method", "acdc", "--method-option", "tau=big"],
     "tau must be a finite number >= 0"),
    ("tau_without_acdc", ["toy-induction", "--task", "induction", "--method", "eap", "--method-option", "tau=0.1"],
     "method option tau is ACDC's threshold: it needs method acdc, not 'eap'"),
    ("sae_too_few", ["toy-induction", "--task", "induction", "--method", "sae", "--n", "2"],
     "method sae needs n >= 5"),
    ("sae_too_few_rows", ["{m}/llama", "--task", "file", "--task-file", "{m}/rows.jsonl", "--method", "sae"],
     "the SAE-code method needs at least 5 positive and 5 negative examples; the batch has 3"),
]


@pytest.fixture(scope="module")
def bad_results(folders, tmp_path_factory):
    """Every bad command line, each in its own forked process (tests/cli_fork.py), in one go."""
    d = tmp_path_factory.mktemp("bad")
    cases = [dict(args=["circuit", *[a.replace("{m}", str(folders)) for a in args], "--out", str(d / cid),
                        "--no-progress"], timeout=300) for cid, args, _ in BAD]
    return d, dict(zip([c[0] for c in BAD], fork_cli(cases, d / "cases.json", d / "results.json", ENV, 1800)))


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_one_line_exit_2_no_files(case, bad_results):
    cid, _, message = case
    d, results = bad_results
    r = results[cid]
    line = one_line_exit_2(r)
    assert message in line, line
    out = d / cid
    left = [p.name for p in out.iterdir() if p.name != "shards"] if out.exists() else []
    assert left == [], left  # no summary, no per-model folder


def test_graph_json_of_another_model_or_with_bad_nodes(folders, tmp_path):
    from interp.analyses.circuits import Circuit, Graph, read_json, write

    toy = interp.load("toy-induction")
    g = Graph.from_model(toy)
    c = Circuit(g, torch.where(g.valid(), torch.arange(g.n_up * g.n_slots).reshape(g.n_up, g.n_slots).float(),
                               torch.tensor(float("nan"))), "eap").select(top_n=5)
    write(c, tmp_path)
    path = tmp_path / "graph.json"
    assert read_json(path, toy).n_edges == c.n_edges
    llama = interp.load(str(folders / "llama"))
    with pytest.raises(ValueError, match=r"is a circuit of toy-induction, not of .*llama: n_kv_heads 4 in the file, "
                                         r"2 in") as e:
        read_json(path, llama)
    assert "\n" not in str(e.value)
    gpt2 = interp.load(str(folders / "gpt2"))  # same layers and heads: MLP nodes differ
    with pytest.raises(ValueError, match="no MLP nodes in the file, MLP nodes in"):
        read_json(path, gpt2)
    d = json.loads(path.read_text())
    d["cfg"]["model"] = "toy-other"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="circuit of toy-other, not of toy-induction .same shape.; pass same_name"):
        read_json(path, toy)
    assert read_json(path, toy, same_name=False).n_edges == c.n_edges
    for key, message in [("a0.h9->logits", "unknown upstream node 'L0H9'"), ("a1.h0->a0.h1<q>", "no such edge"),
                         ("x7->logits", "unknown node name 'x7'"), ("a0.h1", "edge keys look like"),
                         ("a0.h1->a1.h0<z>", "unknown downstream input 'L1H0' <z>")]:
            d["edges"] = {key: {"score": 1.0, "in_graph": True}}
            path.write_text(json.dumps(d))
            with pytest.raises(ValueError, match=f"bad edge '{key}'") as e:
                read_json(path)
            assert message in str(e.value)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not a circuit graph.json"):
        read_json(path)


@pytest.mark.slow
def test_python_api_on_ray_matches_local(tmp_path):
    """The same shard as a Ray task (`--ray local`): the same summary and circuit files as a local run."""
    ray = pytest.importorskip("ray")
    from interp.batch.circuit import circuit
    from interp.batch.ray_backend import connect

    kw = dict(task="induction", task_options={"half": 6}, method="eap", n=3, faith_n=3, top_n=12, progress=False,
              log=lambda *a: None)
    local = circuit(["toy-induction"], tmp_path / "local", **kw)
    connect("local")
    try:
        dist = circuit(["toy-induction"], tmp_path / "ray", ray_address="local", **kw)
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(local, dist)
    assert contents(tmp_path / "local", "toy-induction") == contents(tmp_path / "ray", "toy-induction")
