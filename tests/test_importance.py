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
UNUSED = {(0, 0), (0, 1)}  # diffuse layer-0 heads with no role in the task
# L0H2 attends two tokens back; it helps the induction heads' keys in the first repeat (see the test below), which
# the task's corruption (second half replaced) leaves untouched: resample ablation cannot see it, the others do.


@pytest.fixture(scope="module")
def toy():
    return interp.load("toy-induction")


@pytest.fixture(scope="module")
def toy_table(toy):
    return I.head_importance(toy, "induction", n=16, seed=0)


def top(table, method, k):
    sub = table[table["method"] == method].sort_values("score", ascending=False)
    return {(int(r.layer), int(r.head)) for r in sub.head(k).itertuples()}


def scores_of(table, method):
    sub = table[table["method"] == method]
    return {(int(r.layer), int(r.head)): float(r.score) for r in sub.itertuples()}


@pytest.mark.parametrize("method", ["ablation_zero", "ablation_mean", "ablation_resample", "mask_gradient",
                                    "attention_influence"])
def test_toy_induction_known_heads_rank_first(toy_table, method):
    s = scores_of(toy_table, method)
    ranked = sorted(s, key=s.get, reverse=True)
    assert ranked[0] == (0, 3), s  # the previous-token head matters most
    if method == "ablation_resample":  # the task-specific ablation finds exactly the known circuit
        assert set(ranked[:5]) == KNOWN, s
    else:
        assert set(ranked[:6]) == KNOWN | {(0, 2)}, s
        assert set(ranked[-2:]) == UNUSED, s  # the two heads without a role matter least


def test_toy_induction_dla_sees_the_heads_that_write_to_the_logits(toy_table):
    """DLA measures direct effects: the layer-1 heads copy the answer; layer 0 acts only through them."""
    s = scores_of(toy_table, "dla")
    assert top(toy_table, "dla", 4) == {(1, h) for h in range(4)}, s
    assert max(abs(s[(0, h)]) for h in range(4)) < 0.05 * min(s[(1, h)] for h in range(4)), s


def test_toy_two_back_head_acts_on_the_key_side(toy):
    """L0H2 (attends to t-2) matters only in the first repeat, where the induction heads' keys are."""
    task = T.get_task("induction")
    batch = task.make(toy, n=16, seed=0)
    base = float(task.metric(toy.run_with_hooks(batch.clean), batch))
    half = batch.clean.input_ids.shape[1] // 2 + 1

    def loss_without(head, positions):
        def f(z, hook):
            z = z.clone()
            z[:, positions, head] = 0
            return z
        return float(task.metric(toy.run_with_hooks(batch.clean, fwd_hooks=[("blocks.0.attn.hook_z", f)]), batch))

    assert loss_without(2, slice(0, half)) > base + 0.1
    assert abs(loss_without(2, slice(half, None)) - base) < 0.02


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


@pytest.mark.parametrize("build", ["llama", "olmo2"])
def test_dla_decomposes_the_logit_difference_exactly(build):
    """Llama (pre-norms) and OLMo 2 (post-norms on the attention and MLP outputs, frozen like Gemma's)."""
    from helpers import tiny_olmo2

    m = HookedModel(tiny_llama() if build == "llama" else tiny_olmo2(), name=build)
    v = m.cfg.d_vocab
    ids = torch.randint(1, v, (2, 7), generator=torch.Generator().manual_seed(0))
    t = torch.randint(0, v, (2, 7, 2), generator=torch.Generator().manual_seed(1))
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
    assert P.heads_removable(curve, 0.5) == 2 and P.heads_removable(curve, 0.05) == 0
    agree = P.method_agreement(toy_table)
    assert len(agree) == 15 and agree["spearman"].between(-1, 1).all()


def test_attention_influence_per_example(toy):
    task = T.get_task("induction")
    batch = task.make(toy, n=4, seed=0)
    ai = I.attention_influence(toy, batch, heads=[(0, 3)], task=task)
    assert ai.shape == (4,) and bool((ai > 0.5).all())  # without the previous-token head induction collapses
    none = I.attention_influence(toy, batch, heads=[(0, 0)], task=task)  # a head without a role
    assert float(none.abs().max()) < float(ai.min())


def test_heads_removable_reads_the_first_break():
    import pandas as pd

    curve = pd.DataFrame({"n_removed": [0, 10, 20, 30], "loss": [2.0, 2.05, 2.3, 2.08]})
    curve["rel_increase"] = curve["loss"] / 2.0 - 1
    assert P.heads_removable(curve, 0.05) == 10  # 30 is within tolerance again, but 20 broke it first
    with pytest.raises(ValueError, match="n_removed = 0"):
        P.heads_removable(curve.iloc[1:], 0.05)


def test_bad_input(toy):
    with pytest.raises(ValueError, match="unknown importance method"):
        I.head_importance(toy, "induction", methods=["shapley"])
    with pytest.raises(ValueError, match="out of range"):
        I.attention_influence(toy, T.get_task("induction").make(toy, n=2), heads=[(5, 0)])
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        P.pruning_curve(toy, T.get_task("induction"), T.get_task("induction").make(toy, n=2), torch.zeros(3, 4))


def test_toy_needle_copying_heads_first():
    """toy-needle: its layer-1 heads copy the value after the marker. Resample ablation and DLA put them first;
    zero/mean ablation also flag the layer-0 heads the copying depends on."""
    m = interp.load("toy-needle")
    table = I.head_importance(m, "needle", methods=["ablation_resample", "dla"], n=12, context=64)
    copying = {(1, h) for h in range(4)}
    assert top(table, "ablation_resample", 4) == copying
    assert top(table, "dla", 4) == copying


def test_relative_increase_with_negative_losses():
    """Higher-is-better metrics give negative losses (-logit diff): a drop in the metric is still an increase."""
    curve = P._frame([0, 2, 4], [-10.0, -9.7, -5.0], 8)
    assert list(curve["rel_increase"].round(3)) == [0.0, 0.03, 0.5]
    assert P.heads_removable(curve, 0.05) == 2
