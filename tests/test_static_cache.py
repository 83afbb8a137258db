"""Static KV caches (`generate(cache_implementation="static")`, `StaticCache`): each layer is handed the whole
preallocated cache, whose slots past the real keys are empty. Before interp cut them off, the kernels aligned the
queries to the last (empty) slot and generation went silently wrong. Checked here against transformers' eager
attention on the same weights, and against interp with a dynamic cache (statistics included)."""

import pytest
import torch
from helpers import tiny_gemma2, tiny_gemma3, tiny_llama

import interp
from interp.attention import interp_attention, interp_mask, keys_used

BACKENDS = ["reference", "triton"]


def _scores(hf, ids, mask, steps, **kw):
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                          output_scores=True, return_dict_in_generate=True, pad_token_id=0, **kw)
    return out.sequences, torch.stack(out.scores)


def _prompts(vocab, seed=1):
    """A left-padded batch of two prompts (7 and 4 tokens)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    ids[1, :3] = 0
    mask[1, :3] = 0
    return ids, mask


MODELS = {
    "llama": lambda: tiny_llama(vocab=100),  # full attention, GQA 4/2
    "gemma3": tiny_gemma3,  # a sliding-window layer (window 4, filled and rolled while generating), MQA
    "gemma2": tiny_gemma2,  # soft-capping, sliding window
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_static_cache_generation_matches_eager(name, backend, device):
    ref = MODELS[name]().to(device)
    ref.set_attn_implementation("eager")
    vocab = ref.config.vocab_size
    ids, mask = (t.to(device) for t in _prompts(vocab))
    steps = 9  # past the sliding window, and the static cache's slots are never all filled (max_cache_len 16+)
    seq_ref, sc_ref = _scores(ref, ids, mask, steps, cache_implementation="static")
    seq_dyn, sc_dyn = _scores(ref, ids, mask, steps)
    assert torch.equal(seq_ref, seq_dyn)  # transformers' own static and dynamic caches agree
    m = interp.load(MODELS[name]().to(device), backend=backend)
    seq, sc = _scores(m.model, ids, mask, steps, cache_implementation="static")
    assert torch.equal(seq, seq_ref)
    torch.testing.assert_close(sc, sc_ref, rtol=2e-4, atol=2e-4)


def test_static_cache_statistics_equal_the_dynamic_caches(device):
    """Statistics captured at every decode step: the same with a static cache as with a dynamic one (the key axis
    holds only real keys)."""
    m = interp.load(tiny_llama(vocab=100).to(device), backend="triton")
    names = ["blocks.1.attn.hook_key_mass", "blocks.0.attn.hook_query_entropy", "blocks.1.attn.hook_query_argmax"]

    def run(**kw):
        seen = {n: [] for n in names}
        hooks = [(n, lambda t, hook, n=n: seen[n].append(t.clone())) for n in names]
        with m.hooks(fwd_hooks=hooks):
            out = m.generate([[5, 6, 7, 8, 9], [1, 2]], max_new_tokens=4, **kw)
        return out, seen

    out_s, seen_s = run(cache_implementation="static")
    out_d, seen_d = run()
    assert torch.equal(out_s, out_d)
    for n in names:
        assert [t.shape for t in seen_s[n]] == [t.shape for t in seen_d[n]], n
        for a, b in zip(seen_s[n], seen_d[n]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert seen_s[names[0]][-1].shape[-1] == 5 + 3  # the prompt and three generated keys, not the cache's length


def test_forward_with_a_static_cache_object(device):
    """A StaticCache passed by hand to the wrapped model's forward: prefill, then one step, as the eager model."""
    from transformers import StaticCache

    ref = tiny_llama(vocab=100).to(device)
    ref.set_attn_implementation("eager")
    m = interp.load(tiny_llama(vocab=100).to(device), backend="triton")
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]], device=device)
    logits = {}
    for key, hf in (("ref", ref), ("interp", m.model)):
        cache = StaticCache(config=hf.config, max_cache_len=32)
        with torch.no_grad():
            a = hf(input_ids=ids, past_key_values=cache, use_cache=True).logits
            b = hf(input_ids=torch.tensor([[9]], device=device), past_key_values=cache, use_cache=True).logits
        logits[key] = torch.cat([a, b], 1)
    torch.testing.assert_close(logits["interp"], logits["ref"], rtol=2e-4, atol=2e-4)


# ---------------------------------------------------------------- the mask function's rules
def test_mask_function_cuts_only_empty_slots():
    # a dynamic cache or none: every key is real, nothing recorded
    assert interp_mask(2, 5, 5) is None
    assert interp_mask(2, 1, 9, q_offset=8) is None
    # a static cache at prefill (offset 0) and while decoding (a 0-d tensor offset): the real keys only
    m = interp_mask(2, 5, 16)
    assert m.shape == (2, 5) and bool(m.all()) and keys_used(m) == (5, False)
    pad = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    m = interp_mask(2, 1, 16, q_offset=torch.tensor(5), attention_mask=pad)
    assert m.tolist() == pad.bool().tolist() and keys_used(m) == (6, True)
    # PEFT's prefix tuning (no cache): a mask as long as kv_length that keeps keys past the queries
    prefix = torch.ones(2, 9, dtype=torch.long)
    assert interp_mask(2, 5, 9, attention_mask=prefix) is None
    # a 2-D mask padded to the static cache's length with zeros: those slots are empty
    long = torch.zeros(2, 16, dtype=torch.long)
    long[:, :5] = 1
    m = interp_mask(2, 5, 16, attention_mask=long)
    assert m.shape == (2, 5) and keys_used(m) == (5, False)


def test_mask_and_attention_refuse_what_does_not_fit():
    short = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="attention_mask covers 3 tokens, but the cache and the new tokens hold 6"):
        interp_mask(2, 1, 16, q_offset=torch.tensor(5), attention_mask=short)
    q = torch.randn(1, 4, 2, 16)
    k = v = torch.randn(1, 2, 8, 16)

    class Layer(torch.nn.Module):
        layer_idx = 0
        is_causal = True

    with pytest.raises(ValueError, match="the attention mask covers 5 keys but the layer has 8"):
        interp_attention(Layer(), q, k, v, torch.ones(1, 5, dtype=torch.bool))


def test_static_cache_generation_under_torch_compile(device):
    """transformers compiles static-cache decoding (on a GPU by default; here forced with the eager backend):
    dynamo must run interp's attention and mask functions as they are, not trace into the Triton launch (which
    failed on the H100 and, traced, fails in the CPU interpreter too)."""
    from transformers import CompileConfig

    ref = tiny_llama(vocab=100).to(device)
    ref.set_attn_implementation("eager")
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]], device=device)
    seq_ref, sc_ref = _scores(ref, ids, None, 5, cache_implementation="static")
    cc = CompileConfig(backend="eager", mode=None)
    cc._compile_all_devices = True
    m = interp.load(tiny_llama(vocab=100).to(device), backend="triton")
    seq, sc = _scores(m.model, ids, None, 5, cache_implementation="static", compile_config=cc)
    assert torch.equal(seq, seq_ref)
    torch.testing.assert_close(sc, sc_ref, rtol=2e-4, atol=2e-4)


def test_packed_sequence_part_of_a_single_sequence_is_causal():
    """transformers adds a packed-sequence part to the mask whenever it cannot read the position ids (a CUDA graph
    capture, as interp's GraphedRun makes): with one sequence per row it is the plain causal (or window) mask;
    several sequences in a row become segment ids that the mask carries to the layers."""
    from transformers import masking_utils as mu

    from interp.attention import mask_is_causal, segments_of

    pos = torch.arange(6).expand(2, 6)
    remap = getattr(mu, "remap_positions_for_packed_sequence", None)  # (older 5.x releases have no remap)

    def packed(base, ids):
        return mu.and_masks(remap(base, pos) if remap else base, mu.packed_sequence_mask_function(ids))

    one = torch.zeros(2, 6, dtype=torch.long)
    for base in (mu.causal_mask_function, mu.sliding_window_causal_mask_function(3)):
        assert mask_is_causal(packed(base, one)) is True
    two = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]])
    assert mask_is_causal(packed(mu.causal_mask_function, two)) is True
    ids, padded = segments_of(interp_mask(2, 6, 6, mask_function=packed(mu.causal_mask_function, two)))
    assert torch.equal(ids, two) and padded is False
