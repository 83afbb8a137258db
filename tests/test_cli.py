"""The `interp` CLI: classification table, report, resume after a kill, bad input, Ray."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from interp.classify import COLUMNS

ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def test_classify_writes_table_and_report(tmp_path):
    r = cli("classify", "toy-induction", "toy-needle", "--out", str(tmp_path), "--no-progress")
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(tmp_path / "heads.csv")
    assert list(t.columns[: len(COLUMNS)]) == COLUMNS
    assert len(t) == 2 * 2 * 4 and set(t["model"]) == {"toy-induction", "toy-needle"}
    ind = t[t.model == "toy-induction"]
    assert (ind[ind.layer == 1]["label"] == "induction").sum() >= 3
    assert "classified 16 heads" in r.stdout
    html = (tmp_path / "report.html").read_text()
    assert html.count("plotly-graph-div") >= 4
    assert '<script src="http' not in html and len(html) > 3_000_000  # plotly.js embedded, no CDN
    r = cli("report", str(tmp_path))
    assert r.returncode == 0 and Path(r.stdout.strip()).exists()


def finished_shards(shards):
    """Finished shard files (pathlib's glob also matches the hidden temporary files of writes in progress)."""
    return sorted(p for p in shards.glob("*/*.json") if not p.name.startswith("."))


def test_resume_after_kill_gives_identical_table(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli("classify", "toy-induction", "toy-needle", "--out", str(full), "--no-progress").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "interp.cli", "classify", "toy-induction", "toy-needle", "--out",
                             str(part), "--no-progress"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shards = part / "shards"
    deadline = time.time() + 300
    while time.time() < deadline and len(finished_shards(shards)) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = finished_shards(shards)
    assert 1 <= len(finished) < 6, finished  # killed part-way
    assert not (part / "heads.csv").exists()  # nothing half-written passes for a result
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    r = cli("classify", "toy-induction", "toy-needle", "--out", str(part), "--no-progress", "--resume")
    assert r.returncode == 0, r.stderr
    assert not list(shards.glob("*/.tmp-*"))  # a write cut by SIGKILL leaves a temporary file; resume removes it
    for p, t in stamps.items():
        assert p.stat().st_mtime_ns == t  # finished shards were not recomputed
    pd.testing.assert_frame_equal(pd.read_csv(full / "heads.csv"), pd.read_csv(part / "heads.csv"))


@pytest.mark.parametrize("args, message", [
    (["classify", "nope", "--out", "{tmp}"], "unknown model 'nope'"),
    (["classify", "{tmp}/missing", "--out", "{tmp}"], "no such file"),
    (["classify", "{tmp}", "--out", "{tmp}/o"], "without config.json"),
    (["classify", "toy-induction", "--out", "/proc/forbidden/x"], "cannot create --out"),
    (["classify", "toy-induction", "--out", "{tmp}", "--bogus"], "unrecognized arguments"),
    (["classify", "toy-induction", "--out", "{tmp}", "--context", "2"], "--context must be an integer of at least 8"),
    (["report", "{tmp}"], "has no heads.csv"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    r = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.returncode == 2
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "heads.csv").exists()


def test_python_dash_m_interp_is_the_same_command_line(tmp_path):
    """`python -m interp` runs the `interp` script's command line: its model list, and its one-line errors."""
    r = subprocess.run([sys.executable, "-m", "interp", "models"], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0 and "toy-induction" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "interp", "classify", "nope", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and "unknown model 'nope'" in r.stderr, r.stderr


def test_context_is_clamped_to_toy_maximum(tmp_path):
    r = cli("classify", "toy-induction", "--out", str(tmp_path), "--context", "4096", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "exceeds the model's maximum context 128" in r.stdout


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    from interp.batch.ray_backend import connect

    connect("local")
    yield ray
    ray.shutdown()


def test_python_api_and_ray_match_local(tmp_path, ray_local):
    from interp.classify import classify  # the compatibility name

    local = classify(["toy-induction"], tmp_path / "local", progress=False, log=lambda *a: None)
    dist = classify(["toy-induction"], tmp_path / "ray", progress=False, log=lambda *a: None, ray_address="local")
    pd.testing.assert_frame_equal(local, dist)


def test_failing_ray_task_is_one_sentence(tmp_path, ray_local, capfd):
    """A task's own exception message, not Ray's wrapping and traceback (a model whose layer-1 MLP overflows)."""
    import torch

    from helpers import tiny_llama
    from interp.batch.classify import classify

    hf = tiny_llama()
    with torch.no_grad():
        hf.model.layers[1].mlp.gate_proj.weight.mul_(1e25)
        hf.model.layers[1].mlp.up_proj.weight.mul_(1e25)
    hf.config.architectures = ["LlamaForCausalLM"]
    hf.save_pretrained(tmp_path / "overflow")
    with pytest.raises(ValueError) as e:
        classify([str(tmp_path / "overflow")], tmp_path / "o", progress=False, log=lambda *a: None,
                 ray_address="local")
    msg = str(e.value)
    assert "\n" not in msg and "activations become non-finite (NaN/Inf) at blocks.1.hook_resid_post" in msg, msg
    assert "RayTaskError" not in msg and "Traceback" not in msg
    err = capfd.readouterr().err
    assert "Traceback" not in err and "RayTaskError" not in err, err[-2000:]
    assert not (tmp_path / "o" / "heads.csv").exists()


# ------------------------------------------------------------------------------------------------ resume checks
def shard_mtimes(out):
    return {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*/*.json")}


def test_resume_checks_options_corrupt_shards_and_duplicate_names(tmp_path):
    out = tmp_path / "o"
    first = cli("classify", "toy-induction", "--out", str(out), "--context", "64", "--no-progress")
    assert first.returncode == 0, first.stderr
    table64 = pd.read_csv(out / "heads.csv")
    stamps = shard_mtimes(out)
    # other options: refused before anything is computed, naming the option and both values
    r = cli("classify", "toy-induction", "--out", str(out), "--context", "128", "--resume", "--no-progress")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "option context is 64 in the file, 128 now" in r.stderr and "--recompute-mismatched" in r.stderr
    assert shard_mtimes(out) == stamps
    # a corrupt shard is named and recomputed; a model named twice is processed once
    bad = out / "shards" / "toy-induction" / "retrieval.json"
    bad.write_text(bad.read_text()[:40])
    stale = out / "shards" / "toy-induction" / ".tmp-killed.json"  # what a SIGKILL during a write leaves
    stale.write_text("{")
    r = cli("classify", "toy-induction", "toy-induction", "--out", str(out), "--context", "64", "--resume",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"{bad} is not a readable shard file" in r.stdout and "named more than once" in r.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p != bad) and not stale.exists()
    pd.testing.assert_frame_equal(pd.read_csv(out / "heads.csv"), table64)
    # asked for: the mismatched shards are recomputed, and it says so
    r = cli("classify", "toy-induction", "--out", str(out), "--context", "128", "--resume", "--recompute-mismatched",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "recomputing 3 shard(s) computed with other settings" in r.stdout
    import json

    assert {json.loads(p.read_text())["options"]["context"] for p in (out / "shards").glob("*/*.json")} == {128}


def default_sigint():
    """In the child: Ctrl-C handled by Python even when the tests run with SIGINT ignored (e.g. under nohup or in
    the background of a non-interactive shell, where Python would not raise KeyboardInterrupt at all)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_inside_a_finalizer_still_stops_the_job(tmp_path, monkeypatch, capsys):
    """Python prints a KeyboardInterrupt raised inside `__del__` as "Exception ignored" and carries on (seen
    once in the test below: the Ctrl-C landed in a regex object's finalizer and the job finished with status 0).
    The job's SIGINT handler also sets a flag, checked between shards: the job stops there."""
    from interp.batch import cli as batch_cli
    from interp.batch import runner

    real, calls = runner.compute_shard, []

    class SendsCtrlC:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the Python-level handler runs here, inside the finalizer

    def compute(*args, **kwargs):
        calls.append(args[2])  # the shard
        result = real(*args, **kwargs)
        if len(calls) == 1:
            SendsCtrlC()  # freed at once: its KeyboardInterrupt is raised in __del__, and swallowed
        return result

    monkeypatch.setattr(runner, "compute_shard", compute)
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: None)  # the swallowed exception's report
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in an interactive run
    try:
        rc = batch_cli.main(["classify", "toy-induction", "--out", str(tmp_path), "--no-progress"])
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, before)
    assert rc == 130 and len(calls) == 1, (rc, calls)
    assert "interrupted" in capsys.readouterr().err
    assert len(finished_shards(tmp_path / "shards")) == 1 and not (tmp_path / "heads.csv").exists()
    assert after is signal.default_int_handler  # the job's handler is gone again


def test_ctrl_c_flag_belongs_to_the_job_that_installed_it():
    """A nested job or one in another thread gets a check that never fires and leaves the outer flag alone; the
    handler in place before the job comes back after it, unless the job installed one of its own."""
    import threading

    from interp.batch.runner import _ctrl_c_sticks

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with _ctrl_c_sticks() as outer:
            handler = signal.getsignal(signal.SIGINT)
            assert handler is not signal.default_int_handler
            try:
                handler(signal.SIGINT, None)  # what a Ctrl-C does
            except KeyboardInterrupt:
                pass
            with _ctrl_c_sticks() as inner:
                inner()  # never fires
            seen = []
            t = threading.Thread(target=lambda: seen.append(_ctrl_c_sticks().__enter__()()))
            t.start()
            t.join()
            assert seen == [None]
            with pytest.raises(KeyboardInterrupt):
                outer()  # the outer job's flag survived both
            assert signal.getsignal(signal.SIGINT) is handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

        def own(signum, frame):
            pass

        with _ctrl_c_sticks():
            signal.signal(signal.SIGINT, own)  # the job's own handler stays
        assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, before)


def test_ctrl_c_turned_into_another_error_is_still_a_ctrl_c():
    """Raised inside a callback from C++, a KeyboardInterrupt can come out of the job as another error (a CI run saw
    torch turn one into "could not determine the shape of object type 'torch.storage.UntypedStorage'", and the CLI
    reported an error, exit 2, instead of the interruption): after a Ctrl-C the job reports the Ctrl-C; without one,
    an error passes through unchanged."""
    from interp.batch.runner import _ctrl_c_sticks

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            with _ctrl_c_sticks():
                try:
                    signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # what a Ctrl-C does
                except KeyboardInterrupt:
                    raise TypeError("could not determine the shape of object type 'torch.storage.UntypedStorage'")
        assert isinstance(info.value.__cause__, TypeError)
        with pytest.raises(TypeError, match="a real error"):
            with _ctrl_c_sticks():
                raise TypeError("a real error")
    finally:
        signal.signal(signal.SIGINT, before)


def test_ctrl_c_exits_130_with_one_line_and_nothing_half_written(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "interp.cli", "classify", "toy-induction", "toy-needle", "--out",
                             str(tmp_path), "--no-progress"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_sigint)
    deadline = time.time() + 300
    while time.time() < deadline and not finished_shards(tmp_path / "shards"):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0], stderr[-2000:]
    assert not any((tmp_path / f).exists() for f in ("heads.csv", "heads.parquet", "report.html"))
    import json

    shards = list((tmp_path / "shards").glob("*/*"))
    assert shards and all(p.suffix == ".json" and "result" in json.loads(p.read_text()) for p in shards), shards


# ------------------------------------------------------------------------------------------------ probes fit
@pytest.fixture(scope="module")
def short_folder(tmp_path_factory, smollm2):
    """A local Hugging Face folder: a random 2-layer Llama with a 128-position context and SmolLM2's tokenizer."""
    from helpers import tiny_llama

    path = tmp_path_factory.mktemp("short") / "m"
    hf = tiny_llama(vocab=smollm2.cfg.d_vocab, n_ctx=128)
    hf.config.architectures = ["LlamaForCausalLM"]
    hf.save_pretrained(path)
    smollm2.tokenizer.save_pretrained(path)
    return path


def test_short_context_model_with_tokenizer_and_shortest_context(tmp_path, short_folder):
    r = cli("classify", str(short_folder), "--out", str(tmp_path / "a"), "--no-progress")
    assert r.returncode == 0, r.stderr  # was: "prompt 0 has 404 tokens; the model's maximum context is 128"
    t = pd.read_csv(tmp_path / "a" / "heads.csv")
    assert len(t) == 2 * 4 and t[["sink_score", "local_score", "induction_score"]].notna().all().all()
    # the smallest --context accepted (8) works, for a text model and a toy alike
    r = cli("classify", str(short_folder), "toy-induction", "--out", str(tmp_path / "b"), "--context", "8",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "b" / "heads.csv")) == 2 * 4 + 2 * 4


def test_sliding_window_heads_get_their_window_and_local_score_there():
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from interp import HookedModel
    from interp.batch.classify import compute

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                           sliding_window=16, layer_types=["sliding_attention", "full_attention"])
    model = HookedModel(Gemma3ForCausalLM(cfg).eval(), None, name="tiny-gemma3")
    scores = compute(model, "long_context", dict(context=128, prompts=2, seed=0))["scores"]
    assert scores["window"][0] == [16] * 4 and all(w != w for w in scores["window"][1])  # NaN: full attention
    arch = torch.tensor(scores["local_score_arch"])
    assert torch.allclose(arch[0], torch.ones(4), atol=1e-5)  # a sliding layer sees only its window
    assert (arch[1] < 0.6).all()  # the global layer spreads further


def test_parquet_is_written_or_said_to_be_missing(tmp_path, monkeypatch):

    from interp.batch.classify import write_outputs

    import torch

    from interp.batch.classify import model_table

    table = model_table("m", {"s": {"sink_score": torch.rand(2, 3).tolist()}}, 2, 3)
    write_outputs(table, tmp_path / "with")
    assert (tmp_path / "with" / "heads.parquet").exists()
    import pandas as pd

    def no_pyarrow(*a, **k):  # what to_parquet raises without a parquet engine (pandas itself may use pyarrow)
        raise ImportError("Unable to find a usable engine; tried using: 'pyarrow', 'fastparquet'.")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_pyarrow)
    said = []
    write_outputs(table, tmp_path / "without", log=said.append)
    assert not (tmp_path / "without" / "heads.parquet").exists() and (tmp_path / "without" / "heads.csv").exists()
    assert len(said) == 1 and "pip install 'interp-heads[parquet]'" in said[0]
