"""TransformerLens interop: TLPatternModel has a cfg and computes lse; a bridge needs a tokenizer, said clearly."""

import pytest
import torch

import interp
from helpers import tiny_llama
from interp import analyses as A
from interp.tl import to_transformer_lens


@pytest.fixture(scope="module")
def tiny_pair(smollm2):
    hf = tiny_llama(vocab=smollm2.cfg.d_vocab)
    model = interp.HookedModel(hf, smollm2.tokenizer, name="tiny")
    return model, interp.TLPatternModel(to_transformer_lens(model))


def test_pattern_model_has_cfg_and_lse_matching_the_kernels(tiny_pair):
    model, tlm = tiny_pair
    c = tlm.cfg
    assert (c.n_layers, c.n_heads, c.n_kv_heads, c.d_head, c.n_ctx) == (2, 4, 2, 16, 256)
    toks = torch.randint(5, 1000, (2, 13), generator=torch.Generator().manual_seed(0))
    _, a = tlm.run_with_cache(toks, stats=["lse", "entropy"], layers=[0, 1])
    _, b = model.run_with_cache(toks, stats=["lse", "entropy"])
    for name in ("blocks.1.attn.hook_query_lse", "blocks.0.attn.hook_query_entropy"):
        assert name in a
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)
    # analyses that read model.cfg run on it
    scores = A.long_context_scores(tlm, toks, sink_tokens=1, local_window=4)
    assert scores["local_score"].shape == (2, 4) and torch.isfinite(scores["local_score"]).all()


def test_bad_layers_and_non_tl_objects(tiny_pair):
    _, tlm = tiny_pair
    with pytest.raises(ValueError, match=r"^layer 5 out of range; the model has layers 0..1$"):  # as HookedModel says
        tlm.run_with_cache(torch.tensor([[1, 2, 3]]), layers=[5])
    with pytest.raises(TypeError, match="needs a TransformerLens model"):
        interp.TLPatternModel(object())


def test_bridge_of_a_tokenizer_less_model_is_refused_offline():
    with pytest.raises(ValueError, match="toy-induction has no tokenizer.*TransformerBridge needs one"):
        to_transformer_lens(interp.load("toy-induction"))


def test_gradients_and_interventions_need_interp_s_wrapper(tiny_pair):
    """A TLPatternModel gives statistics only: gradient requests, importance and circuit methods say so."""
    from interp.analyses import importance as I
    from interp.analyses.circuits import attribution as CA
    from interp.analyses.circuits import patching as P
    from interp.analyses.circuits.graph import Graph

    model, tlm = tiny_pair
    toks = torch.tensor([[5, 6, 7, 8]])
    with pytest.raises(ValueError, match="gradients need interp's own wrapper"):
        tlm.run_with_cache(toks, grad_of=lambda lg: lg.sum())
    with pytest.raises(TypeError, match="head_importance: needs interp's own wrapper.*TLPatternModel"):
        I.head_importance(tlm, "induction", methods=["mask_gradient"], n=2)
    g = Graph.from_model(model)
    with pytest.raises(TypeError, match="eap: needs interp's own wrapper"):
        CA.eap(tlm, g, toks, lambda lg: lg.sum(), corrupt=toks)
    with pytest.raises(TypeError, match="head_patching: model must be an interp HookedModel"):
        P.head_patching(object(), toks, toks, lambda lg: lg.sum())
