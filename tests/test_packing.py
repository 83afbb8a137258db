"""Prompts packed into one row (`HookedModel.pack`): each prompt's logits, statistics and gradients are what it gets
run alone, on both backends and across architectures (rotary Llama, learned positions GPT-2, Gemma 3's sliding
windows); bad Packed inputs and models that would let packed prompts mix are refused."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import raises_clear_error, tiny_gemma3, tiny_gpt2, tiny_llama

import interp
import interp.attention
from interp.packing import Packed

BACKENDS = ["reference", pytest.param("triton", marks=pytest.mark.skipif(
    not os.environ.get("TRITON_INTERPRET") and torch.cuda.is_available(),
    reason="CPU models: the Triton kernels run there in the interpreter (TRITON_INTERPRET=1)"))]
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [9, 10, 11], [12, 13, 14, 15, 16, 17, 18, 19]]
STATS = ("query_sink_mass", "query_entropy", "query_max_prob", "query_argmax", "key_mass", "key_count")
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2, tiny_gemma3], ids=["llama", "gpt2", "gemma3"])
def test_each_packed_prompt_is_as_alone(build, backend):
    """Logits and statistics of every prompt in the packed row equal its own run's: sink_mass on the prompt's own
    first token, argmax counted from the row's start (the prompt's own + its start)."""
    m = interp.load(build(), backend=backend)
    packed = m.pack(PROMPTS)
    assert packed.spans == [(0, 7), (7, 10), (10, 18)] and packed.tokens.attention_mask is None
    assert packed.position_ids.tolist() == [list(range(7)) + list(range(3)) + list(range(8))]
    logits, cache = m.run_with_cache(packed, stats="all", sink_tokens=1)
    torch.testing.assert_close(m(packed), logits, **TOL)
    torch.testing.assert_close(m.run_with_hooks(packed), logits, **TOL)
    for (s, e), prompt in zip(packed.spans, PROMPTS):
        alone, own = m.run_with_cache([prompt], stats="all", sink_tokens=1)
        torch.testing.assert_close(logits[0, s:e], alone[0], **TOL)
        for layer in range(m.cfg.n_layers):
            for stat in STATS:
                name = f"blocks.{layer}.attn.hook_{stat}"
                got, want = cache[name][0, :, s:e], own[name][0]
                if stat == "query_argmax":
                    assert torch.equal(got, want + s), name
                else:
                    torch.testing.assert_close(got, want, **TOL, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_do_not_cross_prompts(backend):
    """A metric of the last prompt's logits has no gradient at the other prompts' values (exactly 0) and one at its
    own, equal to the gradient of its own run."""
    m = interp.load(tiny_llama(vocab=100), backend=backend)
    packed = m.pack(PROMPTS)
    s, e = packed.spans[-1]
    _, _, grads = m.run_with_cache(packed, names=["blocks.0.attn.hook_v"], grad_of=lambda lg: lg[0, -1].square().sum())
    g = grads["blocks.0.attn.hook_v"][0]  # [pos, kv_head, d_head]
    assert torch.equal(g[:s], torch.zeros_like(g[:s])) and g[s:].abs().max() > 0
    _, _, own = m.run_with_cache([PROMPTS[-1]], names=["blocks.0.attn.hook_v"],
                                 grad_of=lambda lg: lg[0, -1].square().sum())
    torch.testing.assert_close(g[s:], own["blocks.0.attn.hook_v"][0], rtol=1e-4, atol=1e-6)


def test_one_prompt_packed_is_the_plain_run():
    m = interp.load(tiny_llama(vocab=100), backend="reference")
    packed = m.pack([PROMPTS[0]])
    torch.testing.assert_close(m(packed), m([PROMPTS[0]]))


def test_models_that_would_mix_packed_prompts_are_refused(monkeypatch):
    """A model whose mask function does not read packed position ids would let the prompts attend to each other:
    no layer then sees segment ids, and the run is refused instead of answering for mixed prompts."""
    m = interp.load(tiny_llama(vocab=100), backend="reference")
    real = interp.attention.segments_of
    monkeypatch.setattr(interp.attention, "segments_of", lambda mask: None)
    raises_clear_error(ValueError, r"without keeping them apart in layers \[0, 1\]", m, m.pack(PROMPTS))
    # one layer keeping them apart is not enough: the other's mask (here: its second call's) misses the packing
    seen = []
    monkeypatch.setattr(interp.attention, "segments_of", lambda mask: None if seen.append(1) or len(seen) > 1
                        else real(mask))
    raises_clear_error(ValueError, r"without keeping them apart in layers \[1\]", m, m.pack(PROMPTS))


def test_bad_packed_inputs_are_refused():
    m = interp.load(tiny_llama(vocab=100, n_ctx=16), backend="reference")
    packed = m.pack(PROMPTS[:2])
    raises_clear_error(ValueError, "past the model's maximum context 16", m.pack, PROMPTS)
    raises_clear_error(TypeError, "run through model", m.to_tokens, packed)
    raises_clear_error(TypeError, "Packed.spans must be", m, packed._replace(spans=[]))
    raises_clear_error(TypeError, "Packed.spans must be", m, packed._replace(spans=[(0, 7), (7, 7)]))
    raises_clear_error(ValueError, "tile the row", m, packed._replace(spans=[(0, 5), (5, 10)]))
    raises_clear_error(ValueError, "count 0, 1", m, packed._replace(position_ids=torch.arange(10)[None]))
    raises_clear_error(ValueError, "Packed.position_ids must be a tensor", m,
                       packed._replace(position_ids=torch.arange(9)[None]))
    two_rows = m.to_tokens([PROMPTS[0], PROMPTS[0]])
    raises_clear_error(ValueError, "one row without a padding mask", m,
                       Packed(two_rows, torch.arange(7).repeat(2, 1), [(0, 7)]))


def test_interventions_that_keep_the_rows_first_keys_are_refused_packed():
    """StreamingAttention and GatedStreaming keep the row's first sink_tokens keys: packed, those are the first
    prompt's, and every later prompt lost its own sinks (logits 0.37 off its own run); now a ValueError. Head
    ablations act per token and stay allowed."""
    from interp.interventions import GatedStreaming, HeadAblation, StreamingAttention

    m = interp.load(tiny_llama(vocab=100), backend="reference")
    packed = m.pack(PROMPTS)
    for iv in (StreamingAttention(1, sink_tokens=1, window=2), GatedStreaming(0, torch.zeros(2), 1, 2)):
        raises_clear_error(ValueError, "lose its own sinks", lambda: m.run_with_hooks(packed, interventions=[iv]))
        raises_clear_error(ValueError, "lose its own sinks", lambda: m.run_with_cache(packed, interventions=[iv]))
        m.run_with_hooks(m.pack([PROMPTS[0]]), interventions=[iv])  # one prompt: its sinks are the row's
    logits = m.run_with_hooks(packed, interventions=[HeadAblation(0, heads=[1])])
    s, e = packed.spans[1]
    alone = m.run_with_hooks([PROMPTS[1]], interventions=[HeadAblation(0, heads=[1])])
    torch.testing.assert_close(logits[0, s:e], alone[0], **TOL)


def test_analyses_refuse_packed_prompts():
    """Analyses read statistics by row position (a row's first token, its last ones): a Packed, a tuple, passed as
    "a list of ids" and gave answers for the row (long_context_scores' local score 0.81 where the prompts give
    0.53); now a TypeError naming the argument."""
    from interp import analyses as A

    m = interp.load(tiny_llama(vocab=100), backend="reference")
    packed = m.pack(PROMPTS)
    for call in (lambda: A.first_token_alpha(m, packed), lambda: A.value_drains(m, packed),
                 lambda: A.long_context_scores(m, packed, sink_tokens=1, local_window=2),
                 lambda: A.shape_scores(m, packed, sink_tokens=1, local_window=2),
                 lambda: A.hidden_sinks(m, packed), lambda: A.massive_activations(m, packed)):
        raises_clear_error(TypeError, "tokens must be token ids or texts, not prompts packed", call)
    raises_clear_error(TypeError, r"domains\['x'\] must be token ids", lambda: A.dormant_heads(m, {"x": packed}))
