"""The masking core's shortcuts give the same logits as the plain masked run: logits only at the positions read
(`logits_at`), forwards that start at the first patched layer (`prefix`), and groups that span only the attention's
input (the whole block when the architecture has no separate attention-input norm). Llama (GQA), Gemma 3 (sandwich
norms, a sliding layer, MQA), GPT-2 (Conv1D, learned positions, biases) and OLMoE (q/k norms over all heads)."""

import pytest
import torch

from helpers import tiny_gemma3, tiny_gpt2, tiny_llama, tiny_olmoe
from interp import HookedModel
from interp import head_inputs as H
from interp.analyses.circuits import patching as P
from interp.analyses.circuits.graph import Graph

BUILDERS = {
    "llama": lambda: tiny_llama(n_layers=4, n_heads=4, n_kv_heads=2, d_model=64, vocab=50),
    "gemma3": tiny_gemma3,
    "gpt2": lambda: tiny_gpt2(n_layers=3, vocab=50),
    "olmoe": tiny_olmoe,  # q/k norms over all heads: the per-head q/k/v shortcut must stand aside
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def setup(request):
    m = HookedModel(BUILDERS[request.param](), name=request.param)
    g = Graph.from_model(m)
    gen = torch.Generator().manual_seed(1)
    clean, corrupt = torch.randint(1, 50, (3, 11), generator=gen), torch.randint(1, 50, (3, 11), generator=gen)
    return m, g, clean, P.ablated_outputs(m, g, clean, corrupt)


def random_masks(g: Graph, n: int, first_layer: int, seed: int = 0) -> torch.Tensor:
    """[n, n_up, n_slots] 0/1 weights on about half the edges into inputs at layer >= first_layer."""
    gen = torch.Generator().manual_seed(seed)
    w = (torch.rand(n, g.n_up, g.n_slots, generator=gen) < 0.5).float()
    late = torch.tensor([s.layer >= first_layer for s in g.slots])
    return w * late


def test_logits_at_equals_full_logits_at_those_positions(setup):
    m, g, clean, abl = setup
    w = random_masks(g, 3, 0)
    full = P.masked_logits(m, g, clean, abl, w)
    cols = [2, 10, 5]
    part = P.masked_logits(m, g, clean, abl, w, logits_at=cols)
    assert part.shape == (3, 3, len(cols), full.shape[-1])
    torch.testing.assert_close(part, full[:, :, cols], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m.run_with_hooks(clean, logits_at=[10]), m(clean)[:, [10]], rtol=1e-5, atol=1e-5)


def test_forward_from_the_first_patched_layer_equals_the_whole_forward(setup):
    m, g, clean, abl = setup
    pre = P.clean_run(m, g, clean)
    for first in range(g.n_layers + 1):  # n_layers: only the logits input is patched
        w = random_masks(g, 4, first, seed=first)
        a = P.masked_logits(m, g, clean, abl, w)
        b = P.masked_logits(m, g, clean, abl, w, prefix=pre)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # only an MLP input of the last layer is patched: its attention runs unpatched from the clean residual
    if g.mlp:
        w = torch.zeros(1, g.n_up, g.n_slots)
        w[0, 0, g.slot_index(f"MLP{g.n_layers - 1}")] = 1.0
        torch.testing.assert_close(P.masked_logits(m, g, clean, abl, w, prefix=pre),
                                   P.masked_logits(m, g, clean, abl, w), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="clean run of other prompts"):
        P.masked_logits(m, g, clean[:, :-1], abl[:, :-1], w, prefix=pre)


def test_groups_over_the_whole_block_equal_groups_over_the_attention_input(setup, monkeypatch):
    """Without a separate attention-input norm the whole block runs with the groups (the general path)."""
    m, g, clean, abl = setup
    w = random_masks(g, 3, 0, seed=5)
    fast = P.masked_logits(m, g, clean, abl, w)
    monkeypatch.setattr(H, "ATTN_IN_NORMS", ())
    assert H.attn_input_norm(m.blocks[0]) is None
    general = P.masked_logits(m, g, clean, abl, w)
    torch.testing.assert_close(fast, general, rtol=1e-5, atol=1e-5)
    ones = torch.ones(1, g.n_up, g.n_slots)  # and the general path still reaches the corrupted run exactly
    torch.testing.assert_close(P.masked_logits(m, g, clean, abl, ones)[0],
                               P.masked_logits(m, g, clean, abl, ones, prefix=P.clean_run(m, g, clean))[0],
                               rtol=1e-5, atol=1e-5)


def test_edge_patching_with_the_prefix_equals_one_edge_at_a_time(setup):
    m, g, clean, abl = setup

    def metric(lg):
        return (lg[:, -1, 5] - lg[:, -1, 9]).mean()

    idx = g.edge_index()
    some = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))[:12]]
    got = P.edge_patching(m, g, clean, abl, metric, edges=some, chunk=5)
    base = float(metric(m(clean)))
    for u, s in some.tolist():
        w = torch.zeros(1, g.n_up, g.n_slots)
        w[0, u, s] = 1.0
        want = float(metric(P.masked_logits(m, g, clean, abl, w)[0])) - base
        assert abs(float(got[u, s]) - want) < 1e-4, (g.up[u], g.slots[s].name)
    assert int(torch.isfinite(got).sum()) == len(some)


def test_bad_logits_at(setup):
    m, _, clean, _ = setup
    for bad, msg in (([11], r"0\.\.10"), ([-1], r"0\.\.10"), ([], "non-empty"), ([[1, 2]], "1-D"),
                     ([0.5], "integer"), (torch.tensor([True, False]), "integer")):
        with pytest.raises(ValueError, match=msg):
            m.run_with_hooks(clean, logits_at=bad)
    with pytest.raises(ValueError, match="start must be a layer"):
        H.InputPatch(m, start=99)
    with pytest.raises(ValueError, match="start_resid"):
        H.InputPatch(m, start=1)


def test_logits_at_in_gradients_and_head_patching(setup):
    """Where a metric reads one position, unembedding only that position changes nothing: run_with_cache(grad_of),
    input_gradients and head_patching give the same numbers."""
    m, g, clean, _ = setup
    corrupt = clean.flip(0)
    last = clean.shape[1] - 1

    def full(lg):
        return (lg[:, last, 5] - lg[:, last, 9]).mean()

    def one(lg):
        assert lg.shape[1] == 1
        return (lg[:, 0, 5] - lg[:, 0, 9]).mean()

    names = ["blocks.0.attn.hook_z", "blocks.1.hook_resid_pre"]
    _, _, ga = m.run_with_cache(clean, names=names, grad_of=full)
    lg, _, gb = m.run_with_cache(clean, names=names, grad_of=one, logits_at=[last])
    assert lg.shape[1] == 1 and abs(ga.metric - gb.metric) < 1e-5
    for n in names:
        torch.testing.assert_close(gb[n], ga[n], rtol=1e-4, atol=1e-5)
    va, da = H.input_gradients(m, clean, full)
    vb, db = H.input_gradients(m, clean, one, logits_at=[last])
    assert abs(va - vb) < 1e-5 and set(da) == set(db)
    for key in da:
        torch.testing.assert_close(db[key], da[key], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(P.head_patching(m, clean, corrupt, one, chunk=3, logits_at=[last]),
                               P.head_patching(m, clean, corrupt, full, chunk=3), rtol=1e-4, atol=1e-5)


def test_a_failed_run_leaves_the_model_as_it_was(setup):
    """Module hooks and forward replacements are undone even when the run fails, and a forward the module already
    had (accelerate's dispatch hooks live there) is put back, not deleted."""
    m, g, clean, _ = setup
    mods = list(m.model.modules())
    hooks_before = sum(len(x._forward_pre_hooks) + len(x._forward_hooks) for x in mods)
    mine = m.blocks[0].forward  # an instance forward set by someone else, e.g. accelerate
    m.blocks[0].forward = mine
    proj = getattr(m.attn_modules[-1], "q_proj", None)  # the start layer's: swapped during the run
    theirs = None if proj is None else proj.forward
    if proj is not None:
        proj.forward = theirs
    try:
        patch = H.InputPatch(m, lambda *a: {}, start=1, start_resid=torch.zeros(2, clean.shape[1], m.cfg.d_model))
        with pytest.raises(ValueError, match="start_resid must be"):
            patch.run(m, clean)  # batch 3 is not a multiple of 2
        w = torch.zeros(1, g.n_up, g.n_slots)
        w[0, 0, g.slot_index("logits")] = 1.0
        P.masked_logits(m, g, clean, P.ablated_outputs(m, g, clean, clean.flip(0)), w,
                        prefix=P.clean_run(m, g, clean))  # skips the blocks before the last, swaps its projections
        assert vars(m.blocks[0])["forward"] is mine
        if proj is not None:
            assert vars(proj)["forward"] is theirs
        assert sum(len(x._forward_pre_hooks) + len(x._forward_hooks) for x in mods) == hooks_before
        torch.testing.assert_close(m(clean), m.run_with_hooks(clean))  # a plain run is plain again
    finally:
        vars(m.blocks[0]).pop("forward", None)
        if proj is not None:
            vars(proj).pop("forward", None)


def test_head_patching_from_the_first_patched_layer_equals_whole_forwards(setup):
    """head_patching starts each forward at its first patched layer from the clean residual stream; every effect
    equals a whole-model forward with the same HeadMask (written out here without the shortcut)."""
    from interp import HeadMask

    m, _, clean, _ = setup
    corrupt = clean.flip(0)
    L, Hh = m.cfg.n_layers, m.cfg.n_heads

    def metric(lg):
        return (lg[:, -1, 5] - lg[:, -1, 9]).mean()

    heads = [(L - 1, 0), (1, Hh - 1), (L - 1, 1), (0, 0)]
    got = P.head_patching(m, clean, corrupt, metric, chunk=2, heads=heads)
    names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    with torch.no_grad():
        _, cc = m.run_with_cache(corrupt, names=names)
        base = float(metric(m(clean)))
        for l, h in heads:
            xi = torch.ones(L, Hh)
            xi[l, h] = 0
            want = float(metric(m.run_with_hooks(clean, interventions=[HeadMask(xi, baseline={l: cc[names[l]]})])))
            assert abs(float(got[l, h]) - (want - base)) < 1e-4, (l, h, float(got[l, h]), want - base)
    assert float(got.abs().sum()) > 0


def test_started_at_bad_input(setup):
    m, _, clean, _ = setup
    with pytest.raises(ValueError, match="start must be a layer"):
        with H.started_at(m, m.cfg.n_layers, None):
            pass
    with pytest.raises(TypeError, match="resid must be a tensor"):
        with H.started_at(m, 1, [1.0]):
            pass
    wrong = torch.zeros(clean.shape[0], clean.shape[1] + 1, m.cfg.d_model)
    with pytest.raises(ValueError, match="residual to start layer 1 from"):
        with H.started_at(m, 1, wrong), torch.no_grad():
            m.run_with_hooks(clean)
    assert not any("forward" in vars(b) for b in m.blocks)  # undone after the error
