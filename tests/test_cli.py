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


def test_resume_after_kill_gives_identical_table(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli("classify", "toy-induction", "toy-needle", "--out", str(full), "--no-progress").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "interp.cli", "classify", "toy-induction", "toy-needle", "--out",
                             str(part), "--no-progress"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shards = part / "shards"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob("*/*.json"))) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in shards.glob("*/*.json"))
    assert 1 <= len(finished) < 6, finished  # killed part-way
    assert not (part / "heads.csv").exists()  # nothing half-written passes for a result
    assert not list(shards.glob("*/.tmp-*"))
    stamps = {p: p.stat().st_mtime_ns for p in shards.glob("*/*.json")}
    r = cli("classify", "toy-induction", "toy-needle", "--out", str(part), "--no-progress", "--resume")
    assert r.returncode == 0, r.stderr
    for p, t in stamps.items():
        assert p.stat().st_mtime_ns == t  # finished shards were not recomputed
    pd.testing.assert_frame_equal(pd.read_csv(full / "heads.csv"), pd.read_csv(part / "heads.csv"))


@pytest.mark.parametrize("args, message", [
    (["classify", "nope", "--out", "{tmp}"], "unknown model 'nope'"),
    (["classify", "{tmp}/missing", "--out", "{tmp}"], "no such file"),
    (["classify", "{tmp}", "--out", "{tmp}/o"], "without config.json"),
    (["classify", "toy-induction", "--out", "/proc/forbidden/x"], "cannot create --out"),
    (["classify", "toy-induction", "--out", "{tmp}", "--bogus"], "unrecognized arguments"),
    (["classify", "toy-induction", "--out", "{tmp}", "--context", "2"], "--context must be at least 8"),
    (["report", "{tmp}"], "has no heads.csv"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    r = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.returncode == 2
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "heads.csv").exists()


def test_context_is_clamped_to_toy_maximum(tmp_path):
    r = cli("classify", "toy-induction", "--out", str(tmp_path), "--context", "4096", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "exceeds the model's maximum context 128" in r.stdout


def test_python_api_and_ray_match_local(tmp_path):
    ray = pytest.importorskip("ray")
    from interp.classify import classify

    local = classify(["toy-induction"], tmp_path / "local", progress=False, log=lambda *a: None)
    try:
        dist = classify(["toy-induction"], tmp_path / "ray", progress=False, log=lambda *a: None,
                        ray_address="local")
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(local, dist)
