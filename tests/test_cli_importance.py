"""`interp importance`: the tidy table, report, resume, a local Hugging Face folder, bad input."""

import os
import subprocess
import sys

import pandas as pd
import pytest

ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


def cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "interp.cli", "importance", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def test_importance_table_report_and_resume(tmp_path):
    out = tmp_path / "imp"
    r = cli("toy-induction", "--task", "induction", "--n", "8", "--pruning-step", "0.25", "--out", str(out),
            "--no-progress")
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(out / "importance.csv")
    assert list(t.columns) == ["model", "layer", "head", "method", "score"]
    assert len(t) == 6 * 8 and t["score"].notna().all()
    for f in ("importance.parquet", "agreement.csv", "pruning.csv", "report.html"):
        assert (out / f).exists(), f
    html = (out / "report.html").read_text()
    assert "mask_gradient" in html and "pruning" in html
    # the known previous-token head leads the zero-ablation ranking (the ground truth test is in test_importance)
    zero = t[t.method == "ablation_zero"].sort_values("score", ascending=False)
    assert (int(zero.iloc[0]["layer"]), int(zero.iloc[0]["head"])) == (0, 3)
    # resume: every shard is reused, the table is identical
    r2 = cli("toy-induction", "--task", "induction", "--n", "8", "--pruning-step", "0.25", "--out", str(out),
             "--resume")
    assert r2.returncode == 0, r2.stderr
    assert "toy-induction mask_gradient:" not in r2.stderr + r2.stdout  # nothing recomputed
    pd.testing.assert_frame_equal(pd.read_csv(out / "importance.csv"), t)
    # other options on resume are refused, naming the option
    r3 = cli("toy-induction", "--task", "induction", "--n", "6", "--pruning-step", "0.25", "--out", str(out),
             "--resume")
    assert r3.returncode == 2 and "option n is 8 in the file, 6 now" in r3.stderr, r3.stderr


def test_importance_on_a_local_hf_folder(tmp_path, smollm2):
    from helpers import tiny_llama

    path = tmp_path / "m"
    hf = tiny_llama(vocab=smollm2.cfg.d_vocab, n_ctx=128)
    hf.config.architectures = ["LlamaForCausalLM"]
    hf.save_pretrained(path)
    smollm2.tokenizer.save_pretrained(path)
    r = cli(str(path), "--task", "ioi", "--n", "4", "--methods", "mask_gradient", "dla", "ablation_resample",
            "--no-pruning", "--out", str(tmp_path / "o"), "--no-progress")
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(tmp_path / "o" / "importance.csv")
    assert set(t.method) == {"mask_gradient", "dla", "ablation_resample"} and len(t) == 3 * 2 * 4


@pytest.mark.parametrize("args, message", [
    (["--task", "translation"], "unknown task 'translation'"),
    (["--methods", "shapley"], "unknown importance method"),
    (["--task", "ioi"], "needs a tokenizer"),
    (["--n", "1"], "--n must be an int >= 2"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    r = cli("toy-induction", *args, "--out", str(tmp_path / "x"), "--no-progress", timeout=300)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x" / "importance.csv").exists()
