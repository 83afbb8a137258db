"""ACDC: the batched search equals a plain sequential ACDC, resumes after a kill, and finds toy-induction's circuit."""

import math
import sys
from pathlib import Path

import pytest
import torch

import interp
from interp.analyses import circuits as C
from interp.analyses import tasks as T
from interp.analyses.circuits import acdc as A
from interp.analyses.circuits.evaluate import top_edges

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from circuits_toy import corrupt_first_half, known_circuit  # noqa: E402


# ---------------------------------------------------------------------------------------------- a plain reference
def plain_acdc(D, graph, tau, metric):
    """ACDC written the obvious way: one evaluation per tested edge, no batching, no speculation."""
    valid = graph.valid()
    removed = torch.zeros_like(valid)
    d = D(removed)
    group = graph.n_heads // graph.n_kv_heads
    for s in reversed(range(graph.n_slots)):
        sl = graph.slots[s]
        if sl.kind != "logits":  # dead receiver: nothing it feeds keeps an outgoing edge
            feeds = ([f"L{sl.layer}H{h}" for h in range(sl.index * group, (sl.index + 1) * group)]
                     if sl.kind in "kv" else [sl.node])
            if not any(bool((valid[graph.up_index(n)] & ~removed[graph.up_index(n)]).any()) for n in feeds):
                removed[:graph.n_up_of_slot[s], s] = True
                continue
        for u in reversed(range(graph.n_up_of_slot[s])):
            trial = removed.clone()
            trial[u, s] = True
            d_new = D(trial)
            delta = d_new - d
            if (abs(delta) if metric == "task" else delta) < tau:
                removed, d = trial, d_new
    return valid & ~removed


class Synthetic:
    """A deterministic, batch-independent objective on a small GQA graph: D = sum a_e r_e + (sum b_e r_e)^2 / 4
    (the interaction makes the decisions depend on the order and on the earlier removals)."""

    def __init__(self, graph, seed=0, metric="kl", fail_after=None):
        g = torch.Generator().manual_seed(seed)
        self.graph, self.metric = graph, metric
        self.a = torch.rand(graph.n_up, graph.n_slots, generator=g, dtype=torch.float64) ** 3
        self.b = torch.randn(graph.n_up, graph.n_slots, generator=g, dtype=torch.float64) * 0.3
        self.n_variants = self.n_forwards = 0
        self.calls = []
        self.fail_after = fail_after

    def value(self, r):
        r = (r & self.graph.valid()).double()
        return float((self.a * r).sum() + ((self.b * r).sum()) ** 2 / 4)

    def __call__(self, removed):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append(removed.shape[0])
        self.n_variants += removed.shape[0]
        self.n_forwards += 1
        return torch.tensor([self.value(r) for r in removed], dtype=torch.float64)

    def fingerprint(self):
        return "synthetic"


@pytest.fixture(scope="module")
def small_graph():
    return C.Graph.from_config(2, 4, 2, mlp=True)  # GQA: k/v inputs at KV-head granularity


@pytest.mark.parametrize("metric", ["kl", "task"])
@pytest.mark.parametrize("seed", [0, 1])
def test_batched_equals_plain_sequential(small_graph, metric, seed):
    g = small_graph
    probe = Synthetic(g, seed, metric)
    for tau in (0.0, 0.02, 0.1, 1e9):
        ref = plain_acdc(probe.value, g, tau, metric)
        for window in (1, 5, 1000):
            obj = Synthetic(g, seed, metric)
            c = A.search(obj, tau, window=window)
            assert torch.equal(c.in_circuit, ref), (tau, window)
            if window > 1:
                assert max(obj.calls) > 1  # really batched
        if tau == 0.0 and metric == "task":
            assert torch.equal(ref, g.valid())  # |delta| < 0 never holds: every edge kept
        if tau == 1e9:
            assert c.n_edges == 0
    one = Synthetic(g, seed, metric)
    A.search(one, 0.05, window=1)
    assert max(one.calls) == 1  # window=1 is the sequential schedule


def test_scores_are_the_measured_changes(small_graph):
    obj = Synthetic(small_graph, 0)
    c = A.search(obj, 0.3, window=8)
    v = small_graph.valid()
    assert torch.isnan(c.scores[~v]).all() and torch.isfinite(c.scores[v]).all()
    assert c.meta["n_tested"] + c.meta["n_skipped"] == small_graph.n_edges and c.meta["n_skipped"] > 0
    # D is carried from the forward that produced the state (synthetic D also counts dead edges: test all)
    obj = Synthetic(small_graph, 0)
    c = A.search(obj, 0.05, window=8, skip_dead=False)
    assert c.meta["d_circuit"] == pytest.approx(obj.value(~c.in_circuit & v), abs=1e-12)
    # the logits receiver is tested first, against the full model: its scores are single-edge effects
    s = small_graph.n_slots - 1
    u = small_graph.n_up - 1
    r = torch.zeros_like(v)
    r[u, s] = True
    assert float(c.scores[u, s]) == pytest.approx(obj.value(r), rel=1e-6)  # scores are float32


def test_resume_after_kill_equals_uninterrupted(small_graph, tmp_path):
    probe = Synthetic(small_graph, 1)
    full = A.search(probe, 0.02, window=4)
    ck = tmp_path / "acdc.pt"
    third = len(probe.calls) // 3
    assert third >= 8
    for fail_after in (third, third):  # killed in the middle of receivers, resumed and killed again
        with pytest.raises(KeyboardInterrupt):
            A.search(Synthetic(small_graph, 1, fail_after=fail_after), 0.02, window=4, checkpoint=ck)
        assert ck.exists() and not ck.with_name("acdc.pt.tmp").exists()
    msgs = []
    again = A.search(Synthetic(small_graph, 1), 0.02, window=4, checkpoint=ck, progress=msgs.append)
    assert msgs[0].startswith("resume:")
    assert torch.equal(again.in_circuit, full.in_circuit)
    assert torch.equal(torch.nan_to_num(again.scores, nan=-7), torch.nan_to_num(full.scores, nan=-7))
    assert again.meta["n_tested"] == full.meta["n_tested"]
    # a finished checkpoint returns at once; another tau refuses the file
    obj = Synthetic(small_graph, 1)
    A.search(obj, 0.02, window=4, checkpoint=ck)
    assert obj.calls == []
    with pytest.raises(ValueError, match="differs in: tau"):
        A.search(Synthetic(small_graph, 1), 0.5, checkpoint=ck)


def test_partial_search_and_bad_input(small_graph, tmp_path):
    c = A.search(Synthetic(small_graph, 0), 0.05, max_receivers=2)
    assert c.meta["complete"] is False and c.meta["n_receivers_done"] == 2
    for bad in (-0.1, float("nan"), float("inf"), True, "0.1", None):
        with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
            A.search(Synthetic(small_graph, 0), bad, checkpoint=tmp_path / "x.pt")
    with pytest.raises(ValueError, match="window must be a positive int"):
        A.search(Synthetic(small_graph, 0), 0.1, window=0)
    assert list(tmp_path.iterdir()) == []  # nothing written
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not an ACDC checkpoint"):
        A.search(Synthetic(small_graph, 0), 0.1, checkpoint=tmp_path / "junk.pt")


# ---------------------------------------------------------------------------------------------- toy-induction
@pytest.fixture(scope="module")
def toy():
    model = interp.load("toy-induction")
    task = T.get_task("induction", half=8)
    batch = corrupt_first_half(task.make(model, n=3, seed=0), model.cfg.d_vocab, 0, 8)
    graph = C.Graph.from_model(model)
    return model, task, batch, graph


def test_toy_induction_circuit_recovered(toy):
    model, task, batch, graph = toy
    known = known_circuit(graph)
    c = A.acdc_task(model, task, batch, 0.02, graph=graph, window=16)
    kept = c.in_circuit
    tp = int((kept & known).sum())
    assert tp == int(known.sum())  # recall 1: prev-token head -> k of the induction heads -> logits
    assert tp / int(kept.sum()) >= 0.5  # precision
    assert C.roc_auc(c.scores, known) >= 0.85
    assert c.meta["faithfulness"]["f"] >= 0.8
    assert kept[graph.up_index("L0H3"), graph.slot_index("L1H0", "k")]
    # exact patching agrees on what matters most: its 6 largest edges are all kept
    exact = C.score_edges(model, graph, task, batch, "patching", chunk=81)
    top = top_edges(torch.nan_to_num(exact.abs(), nan=-math.inf), 6)
    assert bool(kept[top].all())


def test_toy_extremes_and_api(toy):
    model, task, batch, graph = toy
    c = C.find_circuit(model, task, batch, method="acdc", tau=1e6, graph=graph)
    assert c.method == "acdc" and c.n_edges == 0
    assert c.meta["n_tested"] == graph.n_up_of_slot[-1]  # only the logits' senders: the rest is dead
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        C.find_circuit(model, task, batch, method="acdc", tau=-1, graph=graph)


def test_toy_target_faithfulness_unreachable(toy, tmp_path):
    model, task, batch, graph = toy
    with pytest.raises(ValueError, match=r"every tau in taus must be a finite number >= 0.*got -0.5"):
        A.tau_sweep(model, task, batch, [0.1, -0.5], graph=graph, checkpoint_dir=tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    with pytest.raises(ValueError, match="no tau in .* reaches faithfulness 0.9"):
        A.tau_sweep(model, task, batch, [1e6], graph=graph, target_faithfulness=0.9)
    res = A.tau_sweep(model, task, batch, [1e6], graph=graph, target_faithfulness=-1.0)
    assert res["chosen"] == 0 and res["rows"][0]["n_edges"] == 0


def test_fingerprint_survives_float_noise_not_other_data(toy):
    """A checkpoint written on one device resumes on another: float32 noise in the ablation values keeps the digest,
    other ablation values or prompts change it."""
    model, task, batch, graph = toy
    obj = A.task_objective(model, graph, task, batch)
    base = obj.fingerprint()
    part = obj.parts[0]
    abl = part.ablated.clone()
    part.ablated = abl * (1 + 1e-6 * torch.randn_like(abl))  # a GPU's float32 rounding
    assert obj.fingerprint() == base
    part.ablated = abl * 1.01
    assert obj.fingerprint() != base
    part.ablated = abl
    part.clean = part.clean.flip(1)
    assert obj.fingerprint() != base
