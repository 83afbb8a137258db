"""Bad-input sweep 3c: the command line and batch runner, the toy training CLI and the kernels' pattern statistics.

stats_from_pattern checked none of its options (sink_tokens=-2 summed all but the last two keys, a reversed or
out-of-range span gave 0 or a clipped sum, a [batch, 2] span tensor crashed, q_len > k_len, empty, integer or meta
patterns and masks of the wrong shape went through or failed deep in torch) and its default stats="all" always
raised (lse); a span tensor on the meta device failed in torch; a model source or --out that the OS cannot take
(~nosuchuser/..., a name longer than 255 bytes) was a traceback; a model given as "." or ".." put its shard and
circuit files beside the others' or outside --out; importance(pruning_step=...) failed in a comparison for a str
or None and hung for 1e-12; NumPy ints were refused as "not an integer"; circuit(task_file=3) failed in pathlib;
the toy training CLI wrote a NaN checkpoint with exit 0 when training diverged and printed a traceback for a
--batch too large for memory."""

import json
import math

import numpy as np
import pytest
import torch

from interp import zoo
from interp.batch import arguments, checks
from interp.batch import circuit as batch_circuit
from interp.batch import classify as batch_classify
from interp.batch import importance as batch_importance
from interp.batch.runner import shard_path, slug
from interp.kernels import attention_with_stats, stats_from_pattern


def quiet(*a):
    pass


# ------------------------------------------------------------------------------------------ stats_from_pattern
def _pattern(b=2, h=3, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, h, n, n, generator=g).masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
    return torch.softmax(scores, -1)


P = _pattern()
PATTERN_BAD = [
    ("sink-negative", dict(stats=("sink_mass",), sink_tokens=-2), ValueError, "sink_tokens must be >= 0, got -2"),
    ("sink-float", dict(stats=("sink_mass",), sink_tokens=2.5), TypeError, "sink_tokens must be an int"),
    ("local-zero", dict(stats=("local_mass",), local_window=0), ValueError, "local_window must be >= 1, got 0"),
    ("span-reversed", dict(stats=("span_mass",), span=(4, 1)), ValueError, r"0 <= start <= end <= k_len \(5\)"),
    ("span-outside", dict(stats=("span_mass",), span=(-3, 99)), ValueError, r"0 <= start <= end <= k_len \(5\)"),
    ("span-float", dict(stats=("span_mass",), span=(0.5, 3)), TypeError, "span bounds must be ints"),
    ("span-int", dict(stats=("span_mass",), span=3), TypeError, r"span must be \(start, end\)"),
    ("span-tensor-3", dict(stats=("span_mass",), span=torch.tensor([[0, 2], [1, 3], [0, 1]])), ValueError,
     r"span tensor must be \[2\] or \[batch, 2\] = \[2, 2\]"),
    ("span-meta", dict(stats=("span_mass",), span=torch.zeros(2, dtype=torch.long, device="meta")), ValueError,
     "span is on the meta device"),
    ("span-mass-no-span", dict(stats=("span_mass",)), ValueError, "span_mass but no span"),
    ("query-valid-shape", dict(stats=("key_count",), query_valid=torch.ones(3, 5, dtype=torch.bool)), ValueError,
     r"query_valid must be a bool tensor \[batch, q_len\] = \[2, 5\], got shape \(3, 5\)"),
    ("key-valid-shape", dict(stats=("key_count",), key_valid=torch.ones(2, 4, dtype=torch.bool)), ValueError,
     r"key_valid must be a bool tensor \[batch, k_len\] = \[2, 5\]"),
    ("key-valid-list", dict(stats=("key_count",), key_valid=[[1] * 5] * 2), TypeError, "key_valid must be None or"),
    ("key-valid-twos", dict(stats=("key_count",), key_valid=torch.full((2, 5), 2)), ValueError, "must hold 0 / 1"),
    ("causal-str", dict(stats=("key_count",), causal="no"), TypeError, "causal must be True or False"),
]


@pytest.mark.parametrize("kw, exc, match", [c[1:] for c in PATTERN_BAD], ids=[c[0] for c in PATTERN_BAD])
def test_stats_from_pattern_checks_its_options(kw, exc, match):
    with pytest.raises(exc, match=match):
        stats_from_pattern(P, **kw)


@pytest.mark.parametrize("pattern, exc, match", [
    (torch.rand(1, 1, 5, 3), ValueError, r"q_len \(5\) > k_len \(3\)"),
    (torch.ones(1, 1, 2, 2, dtype=torch.long), TypeError, "floating-point tensor of attention probabilities"),
    (torch.ones(1, 1, 2, 2, dtype=torch.bool), TypeError, "floating-point tensor"),
    (torch.ones(1, 1, 2, 2, device="meta"), ValueError, "pattern is on the meta device"),
    (torch.ones(0, 1, 2, 2), ValueError, "empty pattern: batch=0"),
    (torch.ones(1, 1, 0, 0), ValueError, "empty pattern: .*k_len=0"),
    (torch.ones(1, 0, 2, 2), ValueError, "empty pattern: .*heads=0"),
], ids=["q-longer-than-k", "int", "bool", "meta", "batch-0", "len-0", "heads-0"])
def test_stats_from_pattern_checks_the_pattern(pattern, exc, match):
    with pytest.raises(exc, match=match):
        stats_from_pattern(pattern, ("max_prob", "key_count"))


def test_stats_from_pattern_takes_numpy_spans_and_int_or_tensor_causal():
    """Valid input the first form of the sweep refused (a review of round 23)."""
    base = stats_from_pattern(P, ("span_mass", "key_count"), span=(1, 3))
    got = stats_from_pattern(P, ("span_mass", "key_count"), span=np.array([1, 3]), causal=1)
    torch.testing.assert_close(got.span_mass, base.span_mass)
    torch.testing.assert_close(stats_from_pattern(P, ("key_count",), causal=torch.tensor(False)).key_count,
                               stats_from_pattern(P, ("key_count",), causal=False).key_count)


def test_stats_from_pattern_default_gives_every_pattern_statistic():
    """stats="all" (the default) gives all but lse, which needs the raw scores; lse by name is still refused."""
    st = stats_from_pattern(P)
    assert set(st.requested()) == {"max_prob", "argmax", "entropy", "sink_mass", "local_mass", "key_mass",
                                   "key_mean", "key_count"}
    explicit = stats_from_pattern(P, tuple(st.requested()))
    for name, t in st.items():
        torch.testing.assert_close(t, getattr(explicit, name), equal_nan=True)
    with pytest.raises(ValueError, match="lse cannot be recovered"):
        stats_from_pattern(P, ("lse",))


def test_stats_from_pattern_span_per_batch_row_and_huge_windows():
    spans = torch.tensor([[0, 2], [1, 4]])
    per_row = stats_from_pattern(P, ("span_mass",), span=spans).span_mass
    for i, (s, e) in enumerate(spans.tolist()):
        one = stats_from_pattern(P[i:i + 1], ("span_mass",), span=(s, e)).span_mass
        torch.testing.assert_close(per_row[i:i + 1], one)
    # sink / local beyond k_len mean every key (as in the kernels), not an int64 overflow
    big = stats_from_pattern(P, ("sink_mass", "local_mass"), sink_tokens=10**30, local_window=10**30)
    torch.testing.assert_close(big.sink_mass, P.sum(-1))
    torch.testing.assert_close(big.local_mass, P.sum(-1))


def test_attention_span_tensor_on_the_meta_device_is_refused():
    q = torch.randn(1, 2, 4, 16)
    with pytest.raises(ValueError, match="span is on the meta device"):
        attention_with_stats(q, q, q, span=torch.zeros(2, dtype=torch.long, device="meta"), stats="span_mass",
                             backend="reference")


# ------------------------------------------------------------------------------------------ model sources and --out
LONG = "a" * 300


@pytest.mark.parametrize("source, match", [
    ("~nosuchuser123xyz/m", "is not a usable path .*home directory"),
    (LONG, "is not a usable path .*File name too long"),
    (f"/tmp/{LONG}/m", "is not a usable path .*File name too long"),
])
def test_model_sources_the_os_cannot_take_are_value_errors(source, match):
    with pytest.raises(ValueError, match=match):
        zoo.resolve(source)


def test_cli_model_source_and_out_the_os_cannot_take_are_one_line(tmp_path, capsys):
    from interp.batch.cli import main

    for args, match in ((["classify", "~nosuchuser123xyz/m", "--out", str(tmp_path / "o")], "not a usable path"),
                        (["classify", "toy-induction", "--out", str(tmp_path / LONG)],
                         "cannot be a folder: File name too long")):
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and match in err, err


def test_out_with_a_name_too_long_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="out .* cannot be a folder: File name too long"):
        arguments.check_out(tmp_path / LONG / "x")


@pytest.mark.parametrize("name", [".", "..", "...", "./", "/"])
def test_a_model_named_by_dots_keeps_its_files_in_its_own_folder(tmp_path, name):
    assert slug(name) == "model"
    path = shard_path(tmp_path, name, "patterns")
    assert path.parent == tmp_path / "shards" / "model"
    assert slug("./m") == "._m" and slug("toy-induction") == "toy-induction"  # other names as before


# ------------------------------------------------------------------------------------------ job options
@pytest.mark.parametrize("kw, exc, match", [
    (dict(pruning_step="0.1"), TypeError, "--pruning-step must be a number in .*got str '0.1'"),
    (dict(pruning_step=None), TypeError, "--pruning-step must be a number"),
    (dict(pruning_step=torch.tensor(0.1)), TypeError, "--pruning-step must be a number"),
    (dict(pruning_step=1e-12), ValueError, "--pruning-step must be in .*at least 0.0001"),
    (dict(pruning_step=math.nan), ValueError, "--pruning-step must be in"),
    (dict(pruning="no"), TypeError, "pruning must be True or False"),
], ids=["step-str", "step-none", "step-tensor", "step-tiny", "step-nan", "pruning-str"])
def test_importance_options(kw, exc, match):
    with pytest.raises(exc, match=match):
        batch_importance.options(task="induction", **kw)


def test_numpy_integers_are_integers_in_job_options():
    opts = batch_importance.options(task="induction", n=np.int64(8), seed=np.int64(3), pruning_seq_len=np.int32(16),
                                    pruning_step=np.float64(0.25))
    assert (opts["n"], opts["seed"], opts["pruning_seq_len"], opts["pruning_step"]) == (8, 3, 16, 0.25)
    json.dumps(opts)  # recorded in every shard file
    opts = batch_classify.options(context=np.int64(64), prompts=np.int16(2), seed=np.uint8(1))
    assert opts == dict(context=64, prompts=2, seed=1) and all(type(v) is int for v in opts.values())
    assert checks.check_seed(np.int64(5)) == 5 and type(checks.check_seed(np.int64(5))) is int
    for bad in (4.0, "4", True):
        with pytest.raises(ValueError, match="prompts must be a positive integer"):
            batch_classify.options(prompts=bad)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(task="file", task_file=3), TypeError, "--task-file must be the path of a .jsonl or .csv file of rows, got int 3"),
    (dict(task="file", task_file=""), ValueError, "--task-file must be the path"),
    (dict(task="file", task_file=b"rows.jsonl"), TypeError, "--task-file must be the path"),
    (dict(task="induction", task_options="half=3"), TypeError, "task_options must be a dict"),
], ids=["file-int", "file-empty", "file-bytes", "task-options-str"])
def test_circuit_options(kw, exc, match):
    with pytest.raises(exc, match=match):
        batch_circuit.options(**kw)


def test_circuit_task_options_as_pairs_still_work():
    assert batch_circuit.options(task="induction", task_options=[("half", 6)])["task_options"] == {"half": 6}


# ------------------------------------------------------------------------------------------ toy training CLI
def test_diverged_training_writes_no_checkpoint(tmp_path, capsys):
    from interp.toy import train

    with pytest.raises(ValueError, match="training diverged .*no checkpoint written"):
        train.train("toy-induction", tmp_path / "a", log=quiet, steps=3, lr=1e30)
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").iterdir())
    with pytest.raises(SystemExit) as e:
        train.main(["toy-induction", "--out", str(tmp_path / "b"), "--steps", "3", "--lr", "1e30"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "training diverged" in err, err
    assert not list((tmp_path / "b").glob("*.safetensors"))


def test_training_out_of_memory_is_one_line(tmp_path, monkeypatch, capsys):
    from interp.toy import train

    def no_memory(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 32000000000 bytes.")

    monkeypatch.setattr(train, "train", no_memory)
    with pytest.raises(SystemExit) as e:
        train.main(["toy-induction", "--out", str(tmp_path), "--batch", "100000000"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "out of memory on cpu" in err, err
    monkeypatch.setattr(train, "train", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug of ours")))
    with pytest.raises(RuntimeError, match="a bug of ours"):  # other errors are not dressed up as memory
        train.main(["toy-induction", "--out", str(tmp_path)])
