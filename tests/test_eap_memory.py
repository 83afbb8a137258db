"""Memory-lean EAP: compact node deltas expanded per position chunk, gradients contracted as they are produced.
The lean path must give the scores of the direct computation (`attribution.eap_reference`)."""

import pytest
import torch

import interp
from helpers import tiny_gemma3, tiny_llama
from interp import HookedModel
from interp.analyses.circuits import attribution as A
from interp.analyses.circuits import deltas as D
from interp.analyses.circuits import patching as P
from interp.analyses.circuits.graph import Graph
from interp.head_inputs import InputPatch, head_contributions, head_weights, input_gradients, node_outputs


def _gemma():
    hf = tiny_gemma3()
    return HookedModel(hf, name="tiny-gemma3", backend="reference")


@pytest.fixture(scope="module")
def models():
    return {"llama-gqa": HookedModel(tiny_llama(n_layers=3, n_heads=4, n_kv_heads=2, d_model=64, vocab=50),
                                     name="tiny", backend="reference"),
            "gemma3": _gemma(),
            "toy-induction": interp.load("toy-induction", backend="reference")}


@pytest.fixture(scope="module")
def pair():
    g = torch.Generator().manual_seed(3)
    return torch.randint(1, 50, (3, 11), generator=g), torch.randint(1, 50, (3, 11), generator=g)


def metric(lg):
    return (lg[:, -1, 5] - lg[:, -1, 9]).mean()


def close(a, b, rtol=1e-5):
    ok = torch.isfinite(a)
    assert torch.equal(ok, torch.isfinite(b))
    scale = float(a[ok].abs().max())
    assert scale > 0
    assert float((a[ok] - b[ok]).abs().max()) <= rtol * scale


@pytest.mark.parametrize("name", ["llama-gqa", "gemma3", "toy-induction"])
@pytest.mark.parametrize("ablation", ["corrupted", "zero", "mean", "resample"])
def test_lean_eap_equals_the_direct_computation(models, pair, name, ablation):
    m = models[name]
    g = Graph.from_model(m)
    ref = A.eap_reference(m, g, pair[0], metric, pair[1], ablation)
    # awkward chunks: 11 positions in chunks of 4, one head per pull-back
    close(ref, A.eap(m, g, pair[0], metric, pair[1], ablation, pos_chunk=4, head_chunk=1))
    if ablation == "corrupted":
        close(ref, A.eap(m, g, pair[0], metric, pair[1]))  # default chunks
        close(ref, A.eap(m, g, pair[0], metric, ablated=P.ablated_outputs(m, g, pair[0], pair[1]), pos_chunk=3))


@pytest.mark.parametrize("name", ["llama-gqa", "gemma3"])
def test_ig_variants_compact_equal_dense_ablated(models, pair, name):
    """Compact deltas in chunks vs a dense `ablated` tensor in one piece: two different delta code paths."""
    m = models[name]
    g = Graph.from_model(m)
    abl = P.ablated_outputs(m, g, pair[0], pair[1])
    for fn, steps in ((A.eap_ig, 3), (A.eap_ig_act, 2)):
        dense = fn(m, g, pair[0], metric, pair[1], steps=steps, ablated=abl, pos_chunk=11)
        lean = fn(m, g, pair[0], metric, pair[1], steps=steps, pos_chunk=5, head_chunk=3)
        close(dense, lean)


def test_input_gradients_sink_gets_head_chunks(models, pair):
    m = models["llama-gqa"]
    _, full = input_gradients(m, pair[0], metric)
    got = {}

    def sink(key, g, heads):
        assert g.shape[0] == len(heads) <= 3 and g.shape[1:] == (3, 11, 64)
        got.setdefault(key, {}).update({h: g[i] for i, h in enumerate(heads)})

    value, grads = input_gradients(m, pair[0], metric, sink=sink, head_chunk=3)
    assert grads == {} and set(got) == set(full)
    for key, g in full.items():
        if key[0] in ("q", "k", "v"):
            assert sorted(got[key]) == list(range(g.shape[0]))
            assert torch.equal(torch.stack([got[key][h] for h in range(g.shape[0])]), g)
        else:
            assert torch.equal(got[key][0], g)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="head_chunk"):
            input_gradients(m, pair[0], metric, sink=sink, head_chunk=bad)


@pytest.mark.parametrize("name", ["llama-gqa", "gemma3"])
def test_compact_node_outputs_expand_to_the_head_contributions(models, pair, name):
    m = models[name]
    full, comp = node_outputs(m, pair[0]), node_outputs(m, pair[0], compact=True)
    assert "logits" not in comp and ("head", 0) not in comp
    assert (("scale", 0) in comp) == (name == "gemma3")  # sandwich norms only
    for l in range(m.cfg.n_layers):
        assert comp[("z", l)].shape == (3, 11, m.cfg.n_heads, m.cfg.d_head)
        h = head_contributions(comp[("z", l)], comp.get(("scale", l)), head_weights(m, l))
        torch.testing.assert_close(h, full[("head", l)])
        assert torch.equal(comp[("mlp", l)], full[("mlp", l)])


def test_node_deltas_pieces_cover_positions_in_bounded_chunks(models, pair):
    m = models["gemma3"]
    g = Graph.from_model(m)
    d = D.node_deltas(m, g, pair[0], pair[1])
    dense = P.ablated_outputs(m, g, pair[0], pair[1]) - P.stack_outputs(node_outputs(m, pair[0]), g)
    for n in (1, 5, 6, g.n_up):
        seen = []
        for sl, piece in d.pieces(n, pos_chunk=4):
            assert piece.shape == (n, 3 * (sl.stop - sl.start) * 64)
            want = dense[:, sl, :n].permute(2, 0, 1, 3).reshape(n, -1)
            torch.testing.assert_close(piece, want, rtol=1e-5, atol=1e-6)
            seen += list(range(sl.start, sl.stop))
        assert seen == list(range(11))
    # small inputs: expanded once for every n and kept; over the cache size: position chunks again
    whole = [(sl, piece) for n in (1, g.n_up) for sl, piece in d.pieces(n)]
    assert d._all is not None and [sl for sl, _ in whole] == [slice(0, 11)] * 2
    assert whole[0][1].data_ptr() == whole[1][1].data_ptr()  # a view of the same expansion
    torch.testing.assert_close(whole[1][1], dense.permute(2, 0, 1, 3).reshape(g.n_up, -1), rtol=1e-5, atol=1e-6)
    d2 = D.node_deltas(m, g, pair[0], pair[1])
    old, D.CACHE_ELEMENTS = D.CACHE_ELEMENTS, 0
    try:
        assert len(list(d2.pieces(g.n_up))) == 1 and d2._all is None
    finally:
        D.CACHE_ELEMENTS = old


def test_bad_inputs_raise(models, pair):
    m = models["llama-gqa"]
    g = Graph.from_model(m)
    with pytest.raises(ValueError, match="ablated outputs must be"):
        A.eap(m, g, pair[0], metric, ablated=torch.zeros(3, 11, 2, 64))
    with pytest.raises(ValueError, match="ablation must be one of"):
        A.eap(m, g, pair[0], metric, pair[1], ablation="median")
    with pytest.raises(ValueError, match="needs corrupted prompts"):
        A.eap(m, g, pair[0], metric)
    with pytest.raises(ValueError, match="at least 2 examples"):
        A.eap(m, g, pair[0][:1], metric, ablation="resample")
    with pytest.raises(ValueError, match="compact=True"):
        InputPatch(m, delta_fn=lambda *a: {}, compact=True)


@pytest.mark.parametrize("kw", [{"pos_chunk": -1}, {"pos_chunk": 0}, {"pos_chunk": 1.5}, {"head_chunk": True},
                                {"head_chunk": 0}])
def test_bad_chunks_refused_before_any_work(models, pair, kw):
    m = models["llama-gqa"]
    g = Graph.from_model(m)
    name = next(iter(kw))
    for fn in (A.eap, A.eap_ig, A.eap_ig_act):
        with pytest.raises(ValueError, match=f"{name} must be a positive int or None"):
            fn(m, g, pair[0], metric, pair[1], **kw)
