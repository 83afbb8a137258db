"""Circuits core: graph sizes, node outputs, the patching core (exact identities), EAP = derivative of the core."""

import pytest
import torch

from helpers import tiny_gemma3, tiny_llama, tiny_olmo2, tiny_olmoe
from interp import HookedModel
from interp.analyses.circuits import attribution as A
from interp.analyses.circuits import evaluate as E
from interp.analyses.circuits import patching as P
from interp.analyses.circuits.graph import Graph
from interp.head_inputs import node_outputs


@pytest.fixture(scope="module")
def model():
    return HookedModel(tiny_llama(n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, vocab=50), name="tiny")


@pytest.fixture(scope="module")
def gemma():
    hf = tiny_gemma3()
    return HookedModel(hf, name="tiny-gemma3")


@pytest.fixture(scope="module")
def olmo2():
    """post-norms only (the MLP reads the residual itself), q/k norms over all heads"""
    return HookedModel(tiny_olmo2(), name="tiny-olmo2")


@pytest.fixture(scope="module")
def olmoe():
    """pre-norms with a q/k norm over all heads (the q/k/v shortcut must not slice those) and an MoE MLP"""
    return HookedModel(tiny_olmoe(), name="tiny-olmoe")


@pytest.fixture(scope="module")
def pair():
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, 50, (3, 9), generator=g), torch.randint(1, 50, (3, 9), generator=g)


def metric(lg):
    return (lg[:, -1, 5] - lg[:, -1, 9]).mean()


def test_edge_counts_match_the_eap_ig_formula():
    assert Graph.from_config(30, 9, 3).n_edges == 70651  # SmolLM2-135M, GQA-native
    assert Graph.from_config(18, 4, 1).n_edges == 5644  # Gemma 3 270M
    assert Graph.from_config(12, 12, 12).n_edges == 32491  # GPT-2 small
    assert Graph.from_config(2, 4, 4, mlp=False).n_edges == 81  # toy-induction
    g = Graph.from_config(2, 4, 2)
    assert g.kv_name(1, 1) == "L1KV1" and g.slots[g.slot_index("L1KV1", "k")].key == ("k", 1)
    assert len(g.edge_names()) == g.n_edges == int(g.valid().sum())


@pytest.mark.parametrize("which", ["model", "gemma", "olmo2", "olmoe"])
def test_node_outputs_add_up_to_the_residual_stream(which, request, pair):
    m = request.getfixturevalue(which)
    out = node_outputs(m, pair[0])
    _, cache = m.run_with_cache(pair[0], names=["blocks.1.hook_resid_post"])
    total = out["input"] + sum(out[("head", l)].sum(2) + out[("mlp", l)] for l in range(2))
    torch.testing.assert_close(total, cache["blocks.1.hook_resid_post"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which", ["model", "gemma", "olmo2", "olmoe"])
def test_masked_core_endpoints_are_clean_and_corrupt(which, request, pair):
    """weights 0 = the clean model, weights 1 on every edge = the corrupted run, exactly (sandwich norms too)."""
    m = request.getfixturevalue(which)
    g = Graph.from_model(m)
    clean, corrupt = pair
    abl = P.ablated_outputs(m, g, clean, corrupt)
    w = torch.stack([torch.zeros(g.n_up, g.n_slots), torch.ones(g.n_up, g.n_slots)])
    lg = P.masked_logits(m, g, clean, abl, w)
    torch.testing.assert_close(lg[0], m(clean), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lg[1], m(corrupt), rtol=1e-4, atol=1e-4)


def test_single_edge_patch_equals_recomputing_the_head_input_by_hand(model, pair):
    """Independent path: for u -> L1H2<q> (and u -> L1KV1<k>), run layer 1 on resid_pre + delta_u (a probe run), take
    that head's q (k) from it and splice it into a clean run with a hook."""
    g = Graph.from_model(model)
    clean, corrupt = pair
    abl = P.ablated_outputs(model, g, clean, corrupt)
    out = P.stack_outputs(node_outputs(model, clean), g)
    for u_name, slot, hook, idx in [("L0H1", ("L1H2", "q"), "hook_q", 2), ("input", ("L1KV1", "k"), "hook_k", 1),
                                    ("L0H3", ("L1KV0", "v"), "hook_v", 0)]:
        u, s = g.up_index(u_name), g.slot_index(*slot)
        delta = abl[:, :, u] - out[:, :, u]
        got = {}

        def add(x, hook_, d=delta):
            return x + d

        def grab(x, hook_):
            got["t"] = x.clone()

        model.run_with_hooks(clean, fwd_hooks=[("blocks.1.hook_resid_pre", add), (f"blocks.1.attn.{hook}", grab)])

        def splice(x, hook_):
            x = x.clone()
            x[:, :, idx] = got["t"][:, :, idx]
            return x

        ref = model.run_with_hooks(clean, fwd_hooks=[(f"blocks.1.attn.{hook}", splice)])
        w = torch.zeros(1, g.n_up, g.n_slots)
        w[0, u, s] = 1
        torch.testing.assert_close(P.masked_logits(model, g, clean, abl, w)[0], ref, rtol=1e-4, atol=1e-4)
        assert (ref - model(clean)).abs().max() > 1e-4


def test_logits_and_mlp_edges_by_hand(model, pair):
    g = Graph.from_model(model)
    clean, corrupt = pair
    abl = P.ablated_outputs(model, g, clean, corrupt)
    out = P.stack_outputs(node_outputs(model, clean), g)
    u = g.up_index("L1H0")
    delta = abl[:, :, u] - out[:, :, u]
    ref = model.run_with_hooks(clean, fwd_hooks=[("blocks.1.hook_resid_post", lambda x, h: x + delta)])
    w = torch.zeros(1, g.n_up, g.n_slots)
    w[0, u, g.slot_index("logits")] = 1
    torch.testing.assert_close(P.masked_logits(model, g, clean, abl, w)[0], ref, rtol=1e-4, atol=1e-4)
    # input -> MLP0: MLP0 reads resid_mid + delta; its output change then flows on (the skip path stays clean)
    u = g.up_index("input")
    delta = abl[:, :, u] - out[:, :, u]
    _, c1 = model.run_with_cache(clean, names=["blocks.0.hook_resid_pre", "blocks.0.hook_attn_out"])
    mlp = model.model.model.layers[0]
    with torch.no_grad():
        mid = c1["blocks.0.hook_resid_pre"] + c1["blocks.0.hook_attn_out"]
        new = mlp.mlp(mlp.post_attention_layernorm(mid + delta))
    ref = model.run_with_hooks(clean, fwd_hooks=[("blocks.0.hook_mlp_out", lambda x, h: new)])
    w = torch.zeros(1, g.n_up, g.n_slots)
    w[0, u, g.slot_index("MLP0")] = 1
    torch.testing.assert_close(P.masked_logits(model, g, clean, abl, w)[0], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which", ["model", "gemma", "olmo2", "olmoe"])
def test_eap_is_the_derivative_of_the_patching_core(which, request, pair):
    """EAP(u->v) = d M / d w_uv at w = 0, checked by central differences of the exact core on every edge."""
    m = request.getfixturevalue(which)
    g = Graph.from_model(m)
    clean, corrupt = pair
    abl = P.ablated_outputs(m, g, clean, corrupt)
    eap = A.eap(m, g, clean, metric, ablated=abl)
    idx = g.edge_index()
    a = 1e-2
    w = torch.zeros(len(idx), g.n_up, g.n_slots)
    w[torch.arange(len(idx)), idx[:, 0], idx[:, 1]] = a
    up = P.metric_of(P.masked_logits(m, g, clean, abl, w), metric)
    down = P.metric_of(P.masked_logits(m, g, clean, abl, -w), metric)
    fd = (up - down) / (2 * a)
    ev = eap[idx[:, 0], idx[:, 1]]
    scale = float(ev.abs().max())
    assert scale > 1e-3
    torch.testing.assert_close(ev, fd, rtol=2e-2, atol=2e-3 * scale)


def test_eap_ig_with_one_step_from_clean_is_eap(model, pair):
    """EAP-IG's first step sits at the corrupted input; with clean == corrupt embeddings everywhere, it is EAP."""
    g = Graph.from_model(model)
    clean, corrupt = pair
    abl = P.ablated_outputs(model, g, clean, corrupt)
    ig = A.eap_ig(model, g, clean, metric, clean, steps=1, ablated=abl)
    torch.testing.assert_close(ig, A.eap(model, g, clean, metric, ablated=abl), equal_nan=True)


def test_faithfulness_endpoints_and_selection(model, pair):
    g = Graph.from_model(model)
    clean, corrupt = pair
    abl = P.ablated_outputs(model, g, clean, corrupt)
    valid = g.valid()
    r = E.faithfulness(model, g, clean, abl, metric, [valid, torch.zeros_like(valid)])
    assert r["f"][0] == pytest.approx(1.0, abs=1e-4) and r["f"][1] == pytest.approx(0.0, abs=1e-4)
    assert r["full"] == pytest.approx(float(metric(model(clean))), rel=1e-4)
    assert r["empty"] == pytest.approx(float(metric(model(corrupt))), rel=1e-4)
    scores = A.eap(model, g, clean, metric, ablated=abl)
    c = E.Circuit(g, scores, "eap").select(top_n=10)
    assert 0 < c.n_edges <= 10
    kept = c.in_circuit.nonzero().tolist()
    assert any(g.slots[s].kind == "logits" for _, s in kept)  # connected to the logits
    gr = E.Circuit(g, scores, "eap").select(top_n=10, method="greedy")
    assert 0 < gr.n_edges <= 10
    assert E.areas([0.0, 1.0], [1.0, 1.0]) == {"cpr": 1.0, "cmd": 0.0}


def test_prune_drops_dangling_edges():
    g = Graph.from_config(2, 2, 2, mlp=False)
    chosen = torch.zeros(g.n_up, g.n_slots, dtype=torch.bool)
    chosen[g.up_index("input"), g.slot_index("L0H0", "q")] = True  # L0H0 has no path on to the logits
    chosen[g.up_index("L1H1"), g.slot_index("logits")] = True  # L1H1 is never fed
    chosen[g.up_index("input"), g.slot_index("L1H0", "v")] = True
    chosen[g.up_index("L1H0"), g.slot_index("logits")] = True
    kept = E.prune_to_connected(g, chosen)
    assert int(kept.sum()) == 2
    assert kept[g.up_index("L1H0"), g.slot_index("logits")]


def test_batched_head_patching_equals_the_loop(model, pair):
    clean, corrupt = pair
    a = P.head_patching(model, clean, corrupt, metric, chunk=5)
    b = P.head_patching(model, clean, corrupt, metric, batched=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert a.abs().max() > 1e-3


def test_bad_inputs(model, pair):
    g = Graph.from_model(model)
    clean, corrupt = pair
    with pytest.raises(ValueError, match="same shape"):
        P.ablated_outputs(model, g, clean, corrupt[:, :-1])
    with pytest.raises(ValueError, match="ablation must be one of"):
        P.ablated_outputs(model, g, clean, corrupt, "median")
    with pytest.raises(ValueError, match="padded"):
        from interp.tokens import Tokens
        P.ablated_outputs(model, g, Tokens(clean, torch.ones_like(clean).bool().index_fill(1, torch.tensor([8]), False),
                                           [8] * 3), None, "zero")
    with pytest.raises(ValueError, match="unknown upstream node 'L7H0'"):
        g.up_index("L7H0")
    with pytest.raises(ValueError, match="unknown downstream input"):
        g.slot_index("L1H9", "q")
    with pytest.raises(ValueError, match="weights must be"):
        P.masked_logits(model, g, clean, P.ablated_outputs(model, g, clean, corrupt), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="steps"):
        A.eap_ig(model, g, clean, metric, corrupt, steps=0)
