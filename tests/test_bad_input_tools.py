"""Bad input to kvconfig, InputPatch, input_gradients, importance_report, sae_codes and draw: clear errors naming
the function and argument, never a silent wrong answer or a deep library traceback."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from interp import kvconfig
from interp.head_inputs import InputPatch, head_weights
from interp.input_gradients import input_gradients

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def m():
    return interp.load("toy-induction")


@pytest.fixture(scope="module")
def toks():
    return torch.randint(1, 64, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def cfg(m):
    return kvconfig.config_from_scores(m, torch.tensor([[0.5, 0, 0, 0], [0, 0, 0.3, 0]]), sink_tokens=1, window=8)


# ---------------------------------------------------------------------------------------------- kvconfig
@pytest.mark.parametrize("kw, err, match", [
    (dict(threshold=float("nan")), ValueError, "threshold"), (dict(threshold="0.1"), TypeError, "threshold"),
    (dict(sink_tokens=-1), ValueError, "sink_tokens"), (dict(window=0), ValueError, "window"),
    (dict(window="64"), TypeError, "window"), (dict(window=1.5), TypeError, "window")])
def test_config_from_scores_checks_settings(m, kw, err, match):
    with pytest.raises(err, match=f"config_from_scores: {match}"):
        kvconfig.config_from_scores(m, torch.zeros(2, 4), **kw)
    with pytest.raises(TypeError, match="retrieval_scores"):
        kvconfig.config_from_scores(m, [[0.0] * 4] * 2)


def _edit(cfg, **kw):
    return {**cfg, "layers": {k: dict(v) for k, v in cfg["layers"].items()}, **kw}


@pytest.mark.parametrize("change, match", [
    (lambda c: c["layers"].pop("1"), "lacks layer"),
    (lambda c: c["layers"].__setitem__(" 1", c["layers"]["1"]), "keys must be"),
    (lambda c: c["layers"].__setitem__("01", c["layers"].pop("1")), "keys must be"),
    (lambda c: c["layers"].__setitem__("x", c["layers"].pop("1")), "keys must be"),
    (lambda c: c["layers"].__setitem__("1", None), "layer 1 must be"),
    (lambda c: c["layers"]["1"].pop("streaming"), "layer 1 must be"),
    (lambda c: c["layers"]["0"].__setitem__("full", [True]), "head"),
    (lambda c: c.__setitem__("version", 99), "version"), (lambda c: c.__setitem__("n_kv_heads", 3), "n_kv_heads"),
    (lambda c: c.__setitem__("sink_tokens", -1), "sink_tokens"), (lambda c: c.__setitem__("window", 0), "window"),
    (lambda c: c.__setitem__("layers", [1, 2]), "layers")])
def test_validate_refuses_bad_configs(cfg, change, match):
    bad = _edit(cfg)
    change(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        kvconfig.validate(bad)
    with pytest.raises(TypeError, match="kvconfig.validate: config must be a dict"):
        kvconfig.validate(None)


def test_kv_memory_save_load_checks(cfg, tmp_path):
    with pytest.raises(ValueError, match="kv_memory: n_tokens"):
        kvconfig.kv_memory(cfg, 0)
    with pytest.raises(ValueError, match="n_tokens"):
        kvconfig.kv_memory(cfg, -5)
    with pytest.raises(ValueError, match="lacks layer"):
        kvconfig.kv_memory(_edit(cfg, n_layers=10), 100)
    with pytest.raises(ValueError, match="n_kv_heads"):
        kvconfig.kv_memory(_edit(cfg, n_kv_heads=0), 100)
    with pytest.raises(ValueError, match="cannot write"):
        kvconfig.save(cfg, tmp_path)
    with pytest.raises(ValueError, match="sink_tokens"):
        kvconfig.save(_edit(cfg, sink_tokens=-1), tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
    (tmp_path / "b.json").write_bytes(b"\xff\xfe\x00\x80")
    with pytest.raises(ValueError, match="cannot read"):
        kvconfig.load(tmp_path / "b.json")
    assert kvconfig.load(kvconfig.save(cfg, tmp_path / "ok.json")) == cfg


@pytest.mark.parametrize("args, match", [(["--window", "0"], "--window"), (["--sink-tokens", "-1"], "--sink-tokens"),
                                         (["--out", "/tmp"], "--out"), (["--contexts", "0"], "--contexts"),
                                         (["--model", "no-such-model"], "--model")])
def test_kv_config_script_one_line_errors(args, match):
    r = subprocess.run([sys.executable, str(ROOT / "examples/kv_config.py"), "--model", "toy-needle", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------- InputPatch
def test_input_patch_refuses_another_model(m, toks):
    other = interp.load("toy-needle")
    with pytest.raises(ValueError, match="InputPatch.run: model 'toy-needle' is not the model"):
        InputPatch(m).run(other, toks)
    InputPatch(m).run(m, toks)  # its own model still runs


@pytest.mark.parametrize("fn, err, match", [
    (lambda l, p, pt: [], TypeError, "must return a dict"),
    (lambda l, p, pt: {("q", 99): torch.zeros(2, 12, 64)} if p == "attn" else {}, ValueError, "unknown slot"),
    (lambda l, p, pt: {("x", 0): torch.zeros(2, 12, 64)} if p == "attn" else {}, ValueError, "unknown slot"),
    (lambda l, p, pt: {("q", 1): torch.zeros(2, 12, 3)} if p == "attn" else {}, ValueError, r"\[2, 12, 64\]"),
    (lambda l, p, pt: {("mlp",): [0.0]} if p == "mlp" else {}, TypeError, "floating-point tensor")])
def test_input_patch_checks_delta_fn(m, toks, fn, err, match):
    with pytest.raises(err, match=match):
        InputPatch(m, delta_fn=fn).run(m, toks)


def test_input_patch_arguments(m):
    with pytest.raises(TypeError, match="InputPatch: delta_fn must be a callable"):
        InputPatch(m, delta_fn=3)
    with pytest.raises(ValueError, match="meta"):
        InputPatch(m, start=1, start_resid=torch.zeros(2, 12, 64, device="meta"))
    with pytest.raises(TypeError, match="InputPatch: model"):
        InputPatch(None)
    with pytest.raises(ValueError, match="head_weights: layer"):
        head_weights(m, 9)


# ---------------------------------------------------------------------------------------------- input_gradients
def _metric(lg):
    return lg[:, -1, 3].sum()


def test_input_gradients_attention_only_and_int_layers(m, toks):
    value, g = input_gradients(m, toks, _metric)  # default mlp=True on a model with zero MLPs
    assert math.isfinite(value) and g[("mlp", 0)].abs().sum() == 0 and g[("q", 1)].abs().sum() > 0
    _, g1 = input_gradients(m, toks, _metric, layers=1)
    assert ("q", 1) in g1 and ("q", 0) not in g1
    torch.testing.assert_close(g1[("q", 1)], g[("q", 1)])
    _, g2 = input_gradients(m, toks, _metric, layers=np.array([1]))  # numpy ints, as layers= takes elsewhere
    torch.testing.assert_close(g2[("q", 1)], g[("q", 1)])


@pytest.mark.parametrize("kw, err, match", [
    (dict(metric=5), TypeError, "metric must be a callable"), (dict(sink=3), TypeError, "sink must be a callable"),
    (dict(mlp="no"), TypeError, "mlp must be True or False"), (dict(layers="01"), TypeError, "layers"),
    (dict(metric=lambda lg: torch.zeros((), requires_grad=True)), ValueError, "the metric.s value does not depend on the logits"),
    # round 22's sweep: a NaN metric gave NaN gradients silently; fwd_hooks=5 / layers=[] / numpy layers
    (dict(metric=lambda lg: lg[:, -1, 5].sum() * float("nan")), ValueError, "the metric is nan"),
    (dict(metric=lambda lg: lg[:, -1, 5].sum() * 0 + torch.sqrt(lg[:, -1, 5].sum() * 0)), ValueError,
     "the gradient of the metric is NaN/Inf"),
    (dict(fwd_hooks=5), TypeError, "fwd_hooks must be a list of"), (dict(layers=[]), ValueError, "layers selects no layer"),
    (dict(layers=[2]), ValueError, "layer 2 out of range")])
def test_input_gradients_bad_arguments(m, toks, kw, err, match):
    kw = {"metric": _metric, **kw}
    with pytest.raises(err, match=f"input_gradients: {match}"):
        input_gradients(m, toks, **kw)


# ---------------------------------------------------------------------------------------------- importance_report
def _table():
    return pd.DataFrame([dict(model="toy", layer=l, head=h, method="dla", score=float(l + h))
                         for l in range(2) for h in range(4)])


@pytest.mark.parametrize("table, err, match", [
    (None, TypeError, "DataFrame"), (pd.DataFrame(), ValueError, "lacks column"),
    (_table().iloc[:0], ValueError, "no rows"), (_table().drop(columns="score"), ValueError, "lacks column.*score"),
    (_table().assign(score="x"), TypeError, "'score' must be numeric"),
    (pd.concat([_table(), _table().assign(score=100.0)]), ValueError, "repeat a \\(model, layer, head, method\\)")])
def test_importance_report_checks_table(tmp_path, table, err, match):
    from interp.importance_report import write_importance_report

    with pytest.raises(err, match=match):
        write_importance_report(table, tmp_path / "r.html")


def test_importance_report_nan_scores_and_curves(tmp_path):
    from interp.importance_report import importance_sections, pruning_figure, write_importance_report

    assert write_importance_report(_table().assign(score=float("nan")), tmp_path / "r.html").stat().st_size > 0
    with pytest.raises(ValueError, match="pruning_figure: curve 'a' lacks column.*n_removed"):
        pruning_figure({"a": pd.DataFrame(dict(fraction=[0, 0.5], loss=[1, 2]))})
    with pytest.raises(ValueError, match="lacks column"):
        importance_sections(_table(), curves={"toy": {"t": {"x": pd.DataFrame()}}})


# ---------------------------------------------------------------------------------------------- sae_codes
def test_discrete_sae_and_separation():
    from interp.analyses.circuits.sae_codes import DiscreteSAE, separation

    X = np.full((3, 3), 1e38)
    X[0] = -1e38
    sae = DiscreteSAE(n_epochs=5).fit(X)
    assert math.isfinite(sae.scale_)
    with pytest.raises(ValueError, match="separation: labels must be 0/1"):
        separation(torch.tensor([0, 0, 1, 1]), torch.tensor([2, 3, 2, 3]))
    with pytest.raises(ValueError, match="separation: labels must be 1-D"):
        separation(torch.tensor([0, 0, 1, 1]), torch.tensor([1, 0]))
    assert float(separation(torch.tensor([0, 0, 1, 1]), torch.tensor([True, True, False, False]))) == 0.5
    with pytest.raises(TypeError, match="random_state"):
        DiscreteSAE(random_state="a").fit(X)


def test_sae_circuit_checks_task_and_seed(m):
    from interp.analyses import tasks as T
    from interp.analyses.circuits.sae_codes import sae_circuit

    batch = T.get_task("induction").make(m, n=5)
    with pytest.raises(ValueError, match="batch was made by task 'induction', not by task 'needle'"):
        sae_circuit(m, T.get_task("needle"), batch, n_epochs=2)
    for seed, err in (("x", TypeError), (1.5, TypeError)):
        with pytest.raises(err, match="sae_circuit: seed must be an int"):
            sae_circuit(m, T.get_task("induction"), batch, n_epochs=2, seed=seed)


# ---------------------------------------------------------------------------------------------- draw
@pytest.fixture(scope="module")
def circuit(m):
    from interp.analyses import tasks as T
    from interp.analyses.circuits.sae_codes import sae_circuit

    task = T.get_task("induction")
    return sae_circuit(m, task, task.make(m, n=5), n_epochs=2)


def test_draw_checks_max_edges_scores_and_extra(circuit):
    from interp.analyses.circuits import Circuit
    from interp.analyses.circuits import draw as D

    for bad, err in ((-5, ValueError), (0, ValueError), ("10", TypeError), (1.5, TypeError)):
        with pytest.raises(err, match="figure: max_edges"):
            D.figure(circuit, max_edges=bad)
    assert len(D.figure(circuit, max_edges=None).data) >= 2
    for v in (float("nan"), float("inf")):
        sc = circuit.scores.clone()
        sc[~torch.isnan(sc)] = v
        fig = D.figure(Circuit(circuit.graph, sc, method="x"))
        assert all(math.isfinite(t.line.width) for t in fig.data if t.mode == "lines")
    page = D.report_html(circuit, extra={"t": torch.tensor([1.0, 2.0]), "a": np.arange(2), "s": np.float32(0.5)})
    assert "[\n  1.0," in page or "1.0" in page
    with pytest.raises(TypeError, match=r"report_html: extra\['o'\]"):
        D.report_html(circuit, extra={"o": object()})


# ---------------------------------------------------------------------------------------------- HeadMask baseline
def test_head_mask_baseline_takes_numpy_layer_keys(m, toks):
    """Round 22's sweep: baseline={np.int64(0): ...} was refused as "keys must be layers 0..1, got np.int64(0)" (0 is
    a layer); only_layers already took numpy ints. The numpy key patches exactly as the int key."""
    from interp import HeadMask

    L, H, d = m.cfg.n_layers, m.cfg.n_heads, m.cfg.d_head
    base = torch.randn(1, 1, H, d, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(L, H)
    outs = [m.run_with_hooks(toks, interventions=[HeadMask(mask, baseline={k: base}, only_layers=[0])])
            for k in (0, np.int64(0))]
    torch.testing.assert_close(outs[0], outs[1])
    with pytest.raises(ValueError, match="HeadMask.baseline keys must be layers 0..1, got 2"):
        m.run_with_hooks(toks, interventions=[HeadMask(mask, baseline={2: base})])
