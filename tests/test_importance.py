"""Head importance: every method on the toy ground truth, the DLA decomposition, pruning curves, bad input."""

import pytest
import torch

import interp
from interp import HookedModel
from interp.analyses import importance as I
from interp.analyses import pruning as P
from interp.analyses import tasks as T
from interp.readout import logit_attribution
from helpers import tiny_llama

KNOWN = {(0, 3), (1, 0), (1, 1), (1, 2), (1, 3)}  # toy-induction: previous-token head + the layer-1 induction heads


@pytest.fixture(scope="module")
def toy():
    return interp.load("toy-induction")


@pytest.fixture(scope="module")
def toy_table(toy):
    return I.head_importance(toy, "induction", n=16, seed=0)


def top(table, method, k):
    sub = table[table["method"] == method].sort_values("score", ascending=False)
    return {(int(r.layer), int(r.head)) for r in sub.head(k).itertuples()}


@pytest.mark.parametrize("method", ["ablation_zero", "ablation_mean", "ablation_resample", "mask_gradient", "dla",
                                    "attention_influence"])
def test_toy_induction_known_heads_rank_first(toy_table, method):
    assert top(toy_table, method, len(KNOWN)) == KNOWN, toy_table[toy_table["method"] == method]


def test_random_model_of_the_same_shape_has_no_such_structure(toy):
    """The same architecture with random weights: the known heads do not stand out (the test above can fail)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(1)
    rand = HookedModel(LlamaForCausalLM(toy.model.config), name="random-toy")
    table = I.head_importance(rand, "induction", methods=["ablation_zero"], n=16)
    scores = table.set_index(["layer", "head"])["score"]
    assert top(table, "ablation_zero", len(KNOWN)) != KNOWN
    assert scores.abs().max() < 0.1  # no head matters much when nothing was learned


def test_table_is_tidy(toy_table, toy):
    assert list(toy_table.columns) == ["model", "layer", "head", "method", "score"]
    assert len(toy_table) == 6 * toy.cfg.n_layers * toy.cfg.n_heads
    assert toy_table["score"].notna().all()


def test_batched_ablation_equals_one_forward_per_head(toy):
    task = T.get_task("induction")
    batch = task.make(toy, n=4, seed=3)
    batched = I.ablated_losses(toy, task, batch, "ablation_zero")
    loss = I._loss_fn(task)
    for (l, h) in [(0, 3), (1, 2)]:
        one = loss(toy.run_with_hooks(batch.clean, interventions=[interp.HeadAblation(layer=l, heads=[h])]), batch)
        torch.testing.assert_close(batched[l, h], one.float(), rtol=1e-4, atol=1e-5)


def test_mask_gradient_matches_per_example_autograd(toy):
    task = T.get_task("induction")
    batch = task.make(toy, n=3, seed=1)
    got = I.mask_gradient_scores(toy, task, batch, normalize=False)
    per = []
    for i in range(3):
        xi = torch.ones(2, 4, requires_grad=True)
        lg = toy.run_with_hooks(batch[i].clean, interventions=[interp.HeadMask(xi)])
        task.metric(lg, batch[i]).backward()
        per.append(xi.grad.abs())
    torch.testing.assert_close(got, torch.stack(per).mean(0), rtol=1e-4, atol=1e-6)


def test_dla_decomposes_the_logit_difference_exactly():
    m = HookedModel(tiny_llama(), name="tiny")
    ids = torch.randint(1, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    t = torch.randint(0, 100, (2, 7, 2), generator=torch.Generator().manual_seed(1))
    att = logit_attribution(m, ids, t)
    lg = m(ids).gather(-1, t)
    torch.testing.assert_close(att.target, lg[..., 0] - lg[..., 1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(att.total(), att.target, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_dla_exact_with_gemma_sandwich_norms(gemma3):
    ids = gemma3.to_tokens("The quick brown fox jumps over the lazy dog").input_ids
    t = torch.randint(0, 1000, (*ids.shape, 2))
    att = logit_attribution(gemma3, ids, t)
    lg = gemma3(ids).gather(-1, t)
    torch.testing.assert_close(att.total(), lg[..., 0] - lg[..., 1], rtol=1e-3, atol=2e-3)


def test_pruning_curve_and_agreement(toy, toy_table):
    task = T.get_task("induction")
    batch = task.make(toy, n=8, seed=2)
    scores = torch.tensor(toy_table[toy_table.method == "ablation_zero"]["score"].to_numpy()).reshape(2, 4).float()
    curve = P.pruning_curve(toy, task, batch, scores, fractions=[0, 0.25, 0.5, 0.75])
    control = P.random_pruning_curve(toy, task, batch, fractions=[0, 0.25, 0.5, 0.75], n_orders=2)
    assert list(curve["n_removed"]) == [0, 2, 4, 6]
    # removing the 3 unimportant heads first costs less than removing random heads
    assert curve["loss"].iloc[1] <= control["loss"].iloc[1] + 1e-6
    assert P.heads_removable(curve, 0.05) >= 2
    agree = P.method_agreement(toy_table)
    assert len(agree) == 15 and agree["spearman"].between(-1, 1).all()


def test_attention_influence_per_example(toy):
    task = T.get_task("induction")
    batch = task.make(toy, n=4, seed=0)
    ai = I.attention_influence(toy, batch, heads=[(0, 3)], task=task)
    assert ai.shape == (4,) and bool((ai > 0.5).all())  # without the previous-token head induction collapses
    none = I.attention_influence(toy, batch, heads=[(0, 2)], task=task)
    assert float(none.abs().max()) < float(ai.min())


def test_bad_input(toy):
    with pytest.raises(ValueError, match="unknown importance method"):
        I.head_importance(toy, "induction", methods=["shapley"])
    with pytest.raises(ValueError, match="out of range"):
        I.attention_influence(toy, T.get_task("induction").make(toy, n=2), heads=[(5, 0)])
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        P.pruning_curve(toy, T.get_task("induction"), T.get_task("induction").make(toy, n=2), torch.zeros(3, 4))
