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


def _booted(smollm2, run_first: bool):
    """A bridge booted straight from a Hugging Face model (run once first when `run_first`: transformers then has
    its output-capturing hooks on the model's modules)."""
    from transformer_lens.model_bridge import TransformerBridge

    hf = tiny_llama(vocab=smollm2.cfg.d_vocab)
    hf.set_attn_implementation("eager")
    hf.config.architectures = [type(hf).__name__]
    ref = hf(IDS, output_hidden_states=True) if run_first else None
    return hf, ref, TransformerBridge.boot_transformers("tiny", hf_model=hf, tokenizer=smollm2.tokenizer)


def test_bridge_model_keeps_transformers_output_capturing(smollm2):
    """Clearing every forward hook on the copy took transformers' own output-capturing hooks too, while its
    "installed" flag was copied: output_hidden_states=True gave an empty tuple."""
    _, ref, bridge = _booted(smollm2, run_first=True)
    wrapped = interp.load(bridge)
    out = wrapped.model(IDS, output_hidden_states=True)
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for got, want in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(got, want)


def test_bridge_moved_after_loading_moves_the_wrapper_too(smollm2):
    """Buffers were deep-copied dicts: bridge.to(torch.bfloat16) after interp.load(bridge) converted the parameters
    (shared) but not the copy's buffers (the bridge's zero lm_head bias), and the wrapper's forward failed with
    "self and mat2 must have the same dtype"."""
    model = interp.HookedModel(tiny_llama(vocab=smollm2.cfg.d_vocab), smollm2.tokenizer, name="tiny")
    bridge = to_transformer_lens(model)
    wrapped = interp.load(bridge)
    bridge.to(torch.bfloat16)
    assert wrapped(IDS).dtype == torch.bfloat16
    assert {b.dtype for b in wrapped.model.buffers()} == {torch.bfloat16}
    got = dict(wrapped.model.named_buffers())
    for name, b in bridge.original_model.named_buffers():
        assert got[name.replace("._original_component", "")] is b


def test_bridge_of_an_offloaded_model_copies_no_offloaded_weights(smollm2):
    """accelerate's hooks were deep-copied: an offloaded model's weights_map (every offloaded weight) was duplicated."""
    accelerate = pytest.importorskip("accelerate")
    from interp.tl import unbridged

    hf = tiny_llama(vocab=smollm2.cfg.d_vocab)
    hf.set_attn_implementation("eager")
    hf.config.architectures = [type(hf).__name__]
    accelerate.cpu_offload(hf, execution_device=torch.device("cpu"))
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers("tiny", hf_model=hf, tokenizer=smollm2.tokenizer)
    out = unbridged(bridge.original_model)
    hooks = {id(m._hf_hook) for m in bridge.original_model.modules() if hasattr(m, "_hf_hook")}
    copied = {id(m._hf_hook) for m in out.modules() if hasattr(m, "_hf_hook")}
    assert copied and copied <= hooks  # the same hook objects, none copied
