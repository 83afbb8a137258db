"""The long-context needle circuit pipeline (examples/circuits_needle.py) on toy-needle, whose copying heads are
known: the four layer-1 heads (README, "Head importance on the toy models"; "Retrieval heads")."""

import sys
from pathlib import Path

import pytest
import torch

import interp
from interp.analyses import tasks as T
from interp.analyses.circuits import Graph, atp_heads, eap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from circuits_needle import SDPAGrad, analyse, atp_prompt, hypergeom_sf, main  # noqa: E402
from circuits_needle_edges import edge_attribution  # noqa: E402

COPYING = {"L1H0", "L1H1", "L1H2", "L1H3"}


@pytest.fixture(scope="module")
def toy():
    return interp.load("toy-needle")


@pytest.fixture(scope="module")
def result(toy):
    return analyse(toy, context=64, n=2, k=4, chunk=4, retrieval_context=64, edges=True)


def test_pipeline_finds_the_copying_heads(result):
    assert result["metric_clean"][0] > 0 and all(c < 0 for c in result["metric_corrupt"])
    assert set(result["top_heads"]) == COPYING
    exact = torch.tensor(result["exact"])
    atp = torch.tensor(result["atp"])
    for name in COPYING:
        l, h = (int(x) for x in name[1:].split("H"))
        assert exact[l, h] < 0 and atp[l, h] < 0  # patching one copying head to the corrupted run hurts
    assert torch.isnan(exact[0]).all()  # only the top-k are patched exactly
    # all four together carry the answer; the rest of the heads alone do not
    assert result["explained_by_top_k"] > 0.8
    assert result["kept_by_top_k_alone"] > 0.5
    v = result["vs_retrieval"]
    assert result["retrieval_answered"] == 3
    assert v["overlap_top_k"] == 4 and v["p_top_k"] == pytest.approx(1 / 70)  # C(8, 4) = 70
    assert result["spearman_abs_atp_vs_copy"] > 0.5
    # edges: the copying heads read the needle through their values and write the answer to the logits
    into_logits = dict(result["edges"]["top"]["logits"][:4])
    assert set(into_logits) == COPYING and all(s < 0 for s in into_logits.values())
    for name in COPYING:  # ... and read the needle's value tokens themselves (the input) through v, not q or k
        src, score = result["edges"]["top"][f"{name}<v>"][0]
        assert src == "input" and score < -1
        assert abs(result["edges"]["top"][f"{name}<q>"][0][1]) < 0.1 * abs(score)


def test_sdpa_gradient_path_matches_the_reference_backward(toy):
    task = T.get_task("needle", context=64)
    batch = task.make(toy, n=2, seed=1)
    for i in range(2):
        row = batch[i]
        ours = atp_prompt(toy, task, row)["atp"]  # through SDPAGrad on the CPU
        ref = atp_heads(toy, row.clean.input_ids, lambda lg, b=row: task.metric(lg, b), row.corrupt.input_ids)
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-3)


def test_sliding_window_model_takes_the_reference_backward():
    """A sliding-window model (tiny Gemma 3: a window-4 layer, sandwich norms) gets no SDPAGrad; its AtP through the
    reference path's chunked backward, with only the answer position unembedded, equals the library's atp_heads."""
    from helpers import tiny_gemma3

    from circuits_needle import grad_interventions  # noqa: PLC0415

    m = interp.HookedModel(tiny_gemma3(), name="tiny-gemma3")
    assert grad_interventions(m) == []
    task = T.get_task("needle", context=40)
    row = task.make(m, n=1, seed=3)[0]
    ours = atp_prompt(m, task, row)
    ref = atp_heads(m, row.clean.input_ids, lambda lg: task.metric(lg, row), row.corrupt.input_ids)
    torch.testing.assert_close(ours["atp"], ref, atol=1e-4, rtol=1e-3)
    assert ours["clean"] == pytest.approx(float(task.metric(m(row.clean), row)), abs=1e-4)


def test_sdpa_grad_refuses_a_wrong_scale(toy):
    task = T.get_task("needle", context=40)
    row = task.make(toy, n=1)[0]
    names = ["blocks.0.attn.hook_z"]
    with pytest.raises(ValueError, match="differs from the reference"):
        toy.run_with_cache(row.clean, names=names, grad_of=lambda lg: task.metric(lg, row),
                           interventions=[SDPAGrad([1.0] * toy.cfg.n_layers)])
    with pytest.raises(ValueError, match="1 scales for a model with 2 layers"):
        toy.run_with_cache(row.clean, names=names, grad_of=lambda lg: task.metric(lg, row),
                           interventions=[SDPAGrad([1.0])])


def test_edges_match_library_eap(toy):
    task = T.get_task("needle", context=48)
    batch = task.make(toy, n=2, seed=2)
    heads = [(1, 0), (1, 3)]
    ours = edge_attribution(toy, task, batch, heads, mlp=False)
    g = Graph.from_model(toy)
    assert not g.mlp
    metric = lambda lg: task.metric(lg, batch)  # noqa: E731
    ref = eap(toy, g, batch.clean.input_ids, metric, batch.corrupt.input_ids)
    assert ours["up"] == g.up
    checked = 0
    for s, name in enumerate(ours["slots"]):
        j = g.slot_index(name)
        for u, v in enumerate(ours["scores"][s]):
            if v is None:
                assert torch.isnan(ref[u, j])
            else:
                assert v == pytest.approx(float(ref[u, j]), abs=1e-4, rel=1e-3)
                checked += 1
    assert checked == 6 * 5 + 9  # q, k, v of two layer-1 heads read input + 4 layer-0 heads; logits read all 9


def test_hypergeometric_tail():
    assert hypergeom_sf(0, 270, 10, 10) == pytest.approx(1.0)
    assert hypergeom_sf(4, 8, 4, 4) == pytest.approx(1 / 70)
    # P(X >= 1) = 1 - C(260, 10) / C(270, 10)
    from math import comb
    assert hypergeom_sf(1, 270, 10, 10) == pytest.approx(1 - comb(260, 10) / comb(270, 10))


def test_cli_bad_input_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--model", "toy-needle", "--context", "64", "--top-k", "0"])
    assert e.value.code == 2
    assert "--top-k must be >= 1" in capsys.readouterr().err


def test_from_partial_compares_a_stopped_run(tmp_path, capsys):
    import json

    atp = torch.zeros(2, 4)
    atp[1] = torch.tensor([-3.0, -2.0, -1.0, -0.5])
    copy = torch.zeros(2, 4)
    copy[1, :3] = 1.0
    part = {"model": "toy", "context": 64, "n_done": 1, "metric_clean": [5.0], "metric_corrupt": [-5.0],
            "atp": atp.tolist(), "atp_last": atp.tolist()}
    (tmp_path / "p.json").write_text(json.dumps(part))
    (tmp_path / "c.json").write_text(json.dumps({"copy_score": copy.tolist()}))
    main(["--from-partial", str(tmp_path / "p.json"), str(tmp_path / "c.json"), "--top-k", "3"])
    out = capsys.readouterr().out
    assert "top-3 overlap with the copy-score top-3: 3" in out and "| L1H0 | -3.000 |" in out
    with pytest.raises(SystemExit) as e:
        main(["--from-partial", str(tmp_path / "nope.json"), str(tmp_path / "c.json")])
    assert e.value.code == 2 and "--from-partial" in capsys.readouterr().err
