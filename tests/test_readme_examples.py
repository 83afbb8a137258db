"""README claims that had no test: `interp.load(bridge)` runs a TransformerBridge's Hugging Face model through
interp's attention function ("so long-context statistics work"), with hooks and head interventions.

transformer-lens 4.x replaces the HF model's modules in place by bridge components whose attention recomputes
softmax(QK^T)V itself; wrapping that model as it was gave empty statistics and no-op interventions, silently."""

import pytest
import torch

import interp
from helpers import tiny_llama
from interp.tl import to_transformer_lens

pytest.importorskip("transformer_lens")


@pytest.fixture(scope="module")
def bridged(smollm2):
    model = interp.HookedModel(tiny_llama(vocab=smollm2.cfg.d_vocab), smollm2.tokenizer, name="tiny")
    bridge = to_transformer_lens(model)
    return model, bridge, interp.load(bridge)


IDS = torch.randint(5, 1000, (2, 11), generator=torch.Generator().manual_seed(0))


def test_bridge_statistics_and_attention_hooks_are_captured(bridged):
    model, _, wrapped = bridged
    torch.testing.assert_close(wrapped(IDS), model(IDS))
    _, got = wrapped.run_with_cache(IDS, stats=["key_mean", "entropy"])
    _, want = model.run_with_cache(IDS, stats=["key_mean", "entropy"])
    assert len(want.keys()) >= 4 and sorted(got.keys()) == sorted(want.keys())
    for name in want.keys():
        torch.testing.assert_close(got[name], want[name])
    _, cache = wrapped.run_with_cache(IDS, names=["blocks.1.attn.hook_z", "blocks.1.attn.hook_q"])
    assert cache["blocks.1.attn.hook_z"].shape == (2, 11, 4, 16)


def test_bridge_head_interventions_change_the_output(bridged):
    model, _, wrapped = bridged
    ablate = [interp.HeadAblation(layer=1, heads=[0, 1, 2, 3])]
    changed = wrapped.run_with_hooks(IDS, interventions=ablate)
    assert (changed - wrapped(IDS)).abs().max() > 1e-3
    torch.testing.assert_close(changed, model.run_with_hooks(IDS, interventions=ablate))


def test_the_bridge_itself_is_left_as_it_was(bridged):
    model, bridge, wrapped = bridged
    before = bridge(IDS)
    wrapped.run_with_cache(IDS, stats=["key_mean"])
    torch.testing.assert_close(bridge(IDS), before)
    _, cache = bridge.run_with_cache(IDS)
    assert "blocks.0.attn.hook_pattern" in cache  # still TransformerLens' own hooks
    q_bridge = dict(bridge.original_model.named_parameters())
    q_wrapped = dict(wrapped.model.named_parameters())
    shared = {id(p) for p in q_bridge.values()} & {id(p) for p in q_wrapped.values()}
    assert len(shared) == len(q_wrapped)  # the wrapper shares the bridge's weights, copies none
