"""Masks the Triton kernels cannot read from positions, through interp's attention on Hugging Face models: mask
functions (Gemma 3's bidirectional or_mask, bidirectional blocks over image tokens, custom functions) and 4-D masks
a user passes, against transformers' own masks and eager attention on the same weights (float32)."""

import os

import pytest
import torch
from helpers import raises_clear_error, tiny_gemma3, tiny_llama

import interp
from interp.attention import interp_mask, mask_function_of, mask_is_causal

TOL = dict(rtol=2e-4, atol=2e-4)


def _dense(mask, q_length, batch):
    """The mask interp_mask handed the layers, as transformers' [batch, 1, q, keys] bool: its mask function on every
    (query, key the layer keeps), and its padding."""
    fn, padded, _ = mask_function_of(mask)
    keys = mask.shape[-1]
    tile = fn.tile(0, q_length, 0, keys, keys - q_length, batch, 1, mask.device)
    return (tile & mask[:, None, None, :]).expand(batch, 1, q_length, keys), padded


def _functions():
    from transformers import masking_utils as mu

    blocks = torch.tensor([[-1, 0, 0, 0, -1, -1, 1, 1, -1, -1, -1, -1, -1, -1],
                           [-1, -1, 0, 0, 0, 0, -1, -1, -1, 1, 1, -1, -1, -1]])
    return {
        "causal-or-blocks": mu.or_masks(mu.causal_mask_function, mu.blockwise_overlay(blocks)),
        "window-and-(causal-or-blocks)": mu.and_masks(mu.or_masks(mu.causal_mask_function,
                                                                  mu.blockwise_overlay(blocks)),
                                                      mu.sliding_window_overlay(3)),
        "bidirectional-window": mu.sliding_window_bidirectional_mask_function(2),
        "custom": mu.and_masks(mu.causal_mask_function, lambda b, h, q, k: (k % 3 != 1) | (k == q)),
    }


@pytest.mark.parametrize("use_vmap", [False, True], ids=["broadcast", "vmap"])
@pytest.mark.parametrize("name", list(_functions()))
@pytest.mark.parametrize("q_length,kv_length,q_offset,kv_offset", [
    (9, 9, 0, 0),  # prefill
    (1, 10, 9, 0),  # a decode step against a dynamic cache
    (3, 14, 5, 0),  # a static cache: empty slots past the 8 real keys
    (2, 6, 11, 7),  # a sliding cache: keys start at position 7
])
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
def test_the_layers_get_transformers_mask(name, use_vmap, q_length, kv_length, q_offset, kv_offset, padded):
    """What interp_mask hands the layers for a mask function it cannot read from positions is transformers' own
    sdpa_mask, entry for entry: query and key offsets, static caches' empty slots, padding."""
    from transformers.masking_utils import sdpa_mask

    fn = _functions()[name]
    pad = None
    if padded:
        pad = torch.ones(2, kv_offset + kv_length, dtype=torch.long)
        pad[1, :2] = 0
        if q_offset + q_length < kv_offset + kv_length:  # a static cache: the 2-D mask covers the tokens seen
            pad = pad[:, :q_offset + q_length]
    assert mask_is_causal(fn) is None
    args = dict(batch_size=2, q_length=q_length, kv_length=kv_length, q_offset=q_offset, kv_offset=kv_offset,
                mask_function=fn, attention_mask=pad, use_vmap=use_vmap, device="cpu")
    mask = interp_mask(**args)
    got, was_padded = _dense(mask, q_length, 2)
    want = sdpa_mask(**args, allow_is_causal_skip=False)
    keys = mask.shape[-1]  # a static cache's empty slots are cut off (over a causal base): transformers hides them
    assert keys == (8 if kv_length == 14 and name != "bidirectional-window" else kv_length)
    assert torch.equal(got, want[..., :keys]) and not want[..., keys:].any()
    assert was_padded == (not bool(mask.all()))


def _bidirectional_gemma3():
    hf = tiny_gemma3()
    hf.config.use_bidirectional_attention = True  # EmbeddingGemma: an or_mask_function over the causal mask
    return hf


def _eager(build):
    ref = build()
    ref.set_attn_implementation("eager")
    return ref


def test_gemma3_bidirectional_matches_eager():
    """Once refused; now its or_mask (full layers) and bidirectional window (sliding layers) run as transformers
    defines them, with left padding, and every statistic describes that attention (eager's own patterns)."""
    ref = _eager(_bidirectional_gemma3)
    m = interp.load(_bidirectional_gemma3(), backend="reference")
    ids = torch.randint(1, 50, (2, 10), generator=torch.Generator().manual_seed(2))
    pad = torch.ones(2, 10, dtype=torch.long)
    pad[1, :3] = 0
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=pad, output_attentions=True)
        got = m.model(input_ids=ids, attention_mask=pad).logits
    keep = pad.bool()
    torch.testing.assert_close(got[keep], want.logits[keep], **TOL)
    # greedy generation with a DynamicCache (the sliding layer's keys then start at an offset)
    gen = dict(max_new_tokens=6, do_sample=False, return_dict_in_generate=True, output_scores=True, pad_token_id=0)
    a, r = m.model.generate(ids[:1], **gen), ref.generate(ids[:1], **gen)
    assert torch.equal(a.sequences, r.sequences)
    torch.testing.assert_close(torch.stack(a.scores), torch.stack(r.scores), **TOL)
    _, cache = m.run_with_cache(ids[:1], stats="all", sink_tokens=1, local_window=3)
    with torch.no_grad():
        pats = ref(input_ids=ids[:1], output_attentions=True).attentions
    for layer, p in enumerate(pats):
        p = p.double()
        pre = f"blocks.{layer}.attn."
        ent = -torch.special.xlogy(p, p).sum(-1)
        torch.testing.assert_close(cache[pre + "hook_query_entropy"].double(), ent, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cache[pre + "hook_key_mass"].double(), p.sum(-2), atol=1e-5, rtol=1e-4)
        pos = torch.arange(10)
        near = (pos[:, None] - pos[None, :]).abs() < 4  # the sliding layer: |q - k| < window, both sides
        assert torch.equal(p[0] > 0, (near if layer == 0 else torch.ones_like(near)).expand(4, 10, 10))


def test_a_static_cache_under_a_mask_function_keeps_its_statistics():
    """A static cache's empty slots are cut off before the layers (as on the causal path): with them, the queries sat
    at the cache's last slots, padding queries were dropped from the key statistics and local_mass read the wrong
    positions, while the logits were right."""
    from transformers import StaticCache

    m = interp.load(_bidirectional_gemma3(), backend="reference")
    ids = torch.randint(1, 50, (1, 6), generator=torch.Generator().manual_seed(2))
    names = [f"blocks.{layer}.attn.hook_{s}" for layer in range(2)
             for s in ("key_mass", "key_count", "query_local_mass", "query_entropy")]

    def run(**kw):
        got = {}

        def save(t, hook):
            got[hook.name] = t.clone()

        with torch.no_grad(), m.hooks(fwd_hooks=[(n, save) for n in names], stats="all", local_window=2):
            logits = m.model(input_ids=ids, **kw).logits
        return logits, got

    want_logits, want = run(use_cache=False)
    cache = StaticCache(config=m.model.config, max_cache_len=12)
    got_logits, got = run(cache=cache, use_cache=True, attention_mask=torch.ones_like(ids))
    torch.testing.assert_close(got_logits, want_logits, **TOL)
    for n in names:
        torch.testing.assert_close(got[n], want[n], **TOL, msg=n)


def test_packed_prompts_under_a_mask_function_stay_apart():
    """transformers and-s its packed-sequence part onto the whole mask function: the prompts cannot see each other,
    so HookedModel.pack runs (it once refused, saying they attended to each other) and each prompt's logits are its
    own run's."""
    m = interp.load(_bidirectional_gemma3(), backend="reference")
    a, b = torch.tensor([[5, 6, 7, 8]]), torch.tensor([[9, 10, 11]])
    packed = m.pack([a[0].tolist(), b[0].tolist()])
    with torch.no_grad():
        got = m(packed)
        alone = [m(x) for x in (a, b)]
    (s0, e0), (s1, e1) = packed.spans
    torch.testing.assert_close(got[:, s0:e0], alone[0], **TOL)
    torch.testing.assert_close(got[:, s1:e1], alone[1], **TOL)


def test_gemma3_bidirectional_on_the_triton_backend_is_refused_clearly():
    if not os.environ.get("TRITON_INTERPRET") and not torch.cuda.is_available():
        pytest.skip("backend='triton' needs CUDA or the interpreter")
    m = interp.load(_bidirectional_gemma3(), backend="triton")
    err = raises_clear_error(ValueError, "or_mask_function", lambda: m.model(input_ids=torch.tensor([[3, 4, 5, 6]])))
    assert "backend='auto'" in str(err)


def test_gemma3_image_blocks_match_eager():
    """Gemma 3's vision masks on the text model: bidirectional blocks over image tokens, or-ed with the causal mask
    (full layers) and cut by the window (sliding layers), as transformers' create_masks_for_vision_model makes
    them for each model's own attention implementation."""
    from transformers.models.gemma3.modeling_gemma3 import (create_masks_for_vision_model,
                                                            get_block_sequence_ids_for_mask)

    ref, hf = _eager(tiny_gemma3), interp.load(tiny_gemma3(), backend="reference").model
    ids = torch.randint(1, 50, (2, 12), generator=torch.Generator().manual_seed(3))
    types = torch.zeros(2, 12, dtype=torch.long)
    types[0, 2:7] = 1  # five image tokens
    types[1, 5:8] = 1
    pad = torch.ones(2, 12, dtype=torch.long)
    pad[1, :2] = 0
    blocks = get_block_sequence_ids_for_mask(types)
    out = {}
    for name, model in (("ref", ref), ("interp", hf)):
        emb = model.model.embed_tokens(ids)
        masks = create_masks_for_vision_model(config=model.config, inputs_embeds=emb, attention_mask=pad, cache=None,
                                              position_ids=torch.arange(12)[None].expand(2, 12),
                                              block_sequence_ids=blocks)
        with torch.no_grad():
            out[name] = model(input_ids=ids, attention_mask=masks, use_cache=False).logits
    keep = pad.bool()
    torch.testing.assert_close(out["interp"][keep], out["ref"][keep], **TOL)
    # the image tokens see each other: the first image token's logits differ from a causal-only run
    with torch.no_grad():
        causal = hf(input_ids=ids, attention_mask=pad, use_cache=False).logits
    assert (causal[0, 2] - out["interp"][0, 2]).abs().max() > 1e-3
    torch.testing.assert_close(causal[0, :2], out["interp"][0, :2], **TOL)  # text before the image: unchanged


def _prefix_lm(b, lq, prefix, dtype=torch.float32, pad_first=0):
    """A 4-D additive mask: the first `prefix` tokens see each other, the rest is causal; row 1 left-padded."""
    q = torch.arange(lq)[:, None]
    k = torch.arange(lq)[None, :]
    see = (k <= q) | ((k < prefix) & (q < prefix))
    see = see[None, None].repeat(b, 1, 1, 1)
    if pad_first:
        see[1, :, :, :pad_first] = False
        see[1, :, :pad_first, :pad_first] = torch.eye(pad_first, dtype=torch.bool)  # padding rows see themselves
    return see, torch.zeros(see.shape, dtype=dtype).masked_fill(~see, torch.finfo(dtype).min)


def test_a_4d_mask_matches_eager():
    """A user's 4-D mask [batch, 1, q, k] (additive float, as eager takes it, or bool) is applied as it is."""
    ref, m = _eager(tiny_llama), interp.load(tiny_llama(), backend="reference")
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(4))
    see, add = _prefix_lm(2, 9, prefix=4, pad_first=2)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=add, use_cache=False).logits
        got = m.model(input_ids=ids, attention_mask=add, use_cache=False).logits
        got_bool = m.model(input_ids=ids, attention_mask=see, use_cache=False).logits
        causal = m.model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(got_bool, got, **TOL)
    assert (causal[0, 0] - got[0, 0]).abs().max() > 1e-3  # the prefix sees ahead


def test_statistics_under_a_4d_mask_are_eager_attentions():
    """`with model.hooks(stats=...)` around a forward with a user's 4-D mask (examples/prefix_sinks.py): the
    statistics describe the attention that mask gives, eager's own attention weights."""
    ref, m = _eager(tiny_llama), interp.load(tiny_llama(), backend="reference")
    ids = torch.randint(3, 100, (1, 9), generator=torch.Generator().manual_seed(6))
    see, add = _prefix_lm(1, 9, prefix=5)
    got = {}

    def save(t, hook):
        got[hook.name] = t

    names = [f"blocks.{layer}.attn.hook_{s}" for layer in range(2) for s in ("key_mass", "query_sink_mass")]
    with torch.no_grad(), m.hooks(fwd_hooks=[(n, save) for n in names], stats=["key_mass", "sink_mass"],
                                  sink_tokens=1):
        m.model(input_ids=ids, attention_mask=see, use_cache=False)
    with torch.no_grad():
        pats = ref(input_ids=ids, attention_mask=add, use_cache=False, output_attentions=True).attentions
    for layer, p in enumerate(pats):
        p = p.double()
        assert (p[0, :, 0, 1:5] > 0).all()  # the prefix's first token sees ahead
        torch.testing.assert_close(got[f"blocks.{layer}.attn.hook_key_mass"].double(), p.sum(-2), **TOL)
        torch.testing.assert_close(got[f"blocks.{layer}.attn.hook_query_sink_mass"].double(), p[..., 0], **TOL)


def test_a_4d_mask_over_a_static_cache_keeps_the_statistics():
    """A user's 4-D mask over a static cache covers the empty slots too (hidden): they are cut off before the layer,
    so the queries sit at their own positions (local_mass was 0 for every query with the slots kept)."""
    from transformers import StaticCache

    m = interp.load(tiny_llama(), backend="reference")
    ids = torch.randint(3, 100, (1, 6), generator=torch.Generator().manual_seed(7))
    see, _ = _prefix_lm(1, 6, prefix=3)
    names = [f"blocks.{layer}.attn.hook_{s}" for layer in range(2) for s in ("key_mass", "query_local_mass")]

    def run(mask, **kw):
        got = {}

        def save(t, hook):
            got[hook.name] = t.clone()

        with torch.no_grad(), m.hooks(fwd_hooks=[(n, save) for n in names], stats="all", local_window=2):
            logits = m.model(input_ids=ids, attention_mask=mask, **kw).logits
        return logits, got

    want_logits, want = run(see, use_cache=False)
    wide = torch.zeros(1, 1, 6, 10, dtype=torch.bool)
    wide[..., :6] = see  # the cache's 4 empty slots: hidden
    got_logits, got = run(wide, cache=StaticCache(config=m.model.config, max_cache_len=10), use_cache=True)
    torch.testing.assert_close(got_logits, want_logits, **TOL)
    for n in names:
        torch.testing.assert_close(got[n], want[n], **TOL, msg=n)
    assert (want["blocks.0.attn.hook_query_local_mass"] > 0).all()


def test_a_4d_mask_of_the_wrong_size_is_refused():
    m = interp.load(tiny_llama(), backend="reference")
    ids = torch.randint(3, 100, (1, 6), generator=torch.Generator().manual_seed(5))
    bad = torch.ones(1, 1, 6, 5, dtype=torch.bool)
    raises_clear_error(ValueError, r"4-D attention_mask passed to the model must be \[batch or 1, heads or 1, q_len, "
                       r"k_len\]", lambda: m.model(input_ids=ids, attention_mask=bad, use_cache=False))
    three = torch.ones(1, 6, 6, dtype=torch.bool)
    raises_clear_error(ValueError, "a 3-D mask", lambda: m.model(input_ids=ids, attention_mask=three,
                                                                   use_cache=False))


@pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="a CUDA device, where backend='auto' would take the Triton kernels")
def test_on_a_gpu_auto_runs_those_layers_on_the_reference_and_says_so():
    ref = _eager(_bidirectional_gemma3).cuda()
    m = interp.load(_bidirectional_gemma3().cuda(), backend="auto")
    ids = torch.randint(1, 50, (2, 10), generator=torch.Generator().manual_seed(2)).cuda()
    with pytest.warns(UserWarning, match="runs on the reference backend"):
        with torch.no_grad():
            got = m.model(input_ids=ids).logits
    with torch.no_grad():
        want = ref(input_ids=ids).logits
    torch.testing.assert_close(got, want, **TOL)
    _, cache = m.run_with_cache(ids[:1], stats="all")  # the layer batch (Triton) is not used for these layers
    torch.testing.assert_close(cache["blocks.1.attn.hook_key_mass"].sum(-1).cpu(), torch.full((1, 4), 10.0))


def test_a_run_with_its_own_mask():
    """run_with_cache / run_with_hooks(attn_mask=...): every layer runs with the run's mask instead of the model's
    (a prefix-LM here, as a function and as a dense tensor), and the statistics and logits are eager's under the same
    4-D mask; padding still applies (a causal function on a padded batch gives the model's own run)."""
    ref, m = _eager(tiny_llama), interp.load(tiny_llama(), backend="reference")
    ids = torch.randint(3, 100, (1, 9), generator=torch.Generator().manual_seed(8))
    see, add = _prefix_lm(1, 9, prefix=4)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=add, use_cache=False, output_attentions=True)
    prefix_lm = lambda b, h, q, k: (k <= q) | ((k < 4) & (q < 4))  # noqa: E731
    for mask in (prefix_lm, see):
        logits, cache = m.run_with_cache(ids, stats=["key_mass", "entropy"], attn_mask=mask)
        torch.testing.assert_close(logits, want.logits, **TOL)
        for layer, p in enumerate(want.attentions):
            p = p.double()
            torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_key_mass"].double(), p.sum(-2), **TOL)
            ent = -torch.special.xlogy(p, p).sum(-1)
            torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_query_entropy"].double(), ent, **TOL)
    torch.testing.assert_close(m.run_with_hooks(ids, attn_mask=prefix_lm), want.logits, **TOL)
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    own = m.run_with_hooks(prompts)
    causal = m.run_with_hooks(prompts, attn_mask=lambda b, h, q, k: k <= q)
    valid = m.to_tokens(prompts).attention_mask.bool()
    torch.testing.assert_close(causal[valid], own[valid], **TOL)


@pytest.mark.parametrize("bad,err,words", [
    ([[True]], TypeError, "mask function"),
    (torch.ones(9, 9, dtype=torch.bool), ValueError, "4-D tensor"),
    (torch.ones(1, 1, 9, 8, dtype=torch.bool), ValueError, r"q_len, k_len\] = \[1, 4, 9, 9\]"),
])
def test_a_bad_run_mask_gets_a_clear_error(bad, err, words):
    m = interp.load(tiny_llama(), backend="reference")
    ids = torch.randint(3, 100, (1, 9), generator=torch.Generator().manual_seed(8))
    raises_clear_error(err, words, lambda: m.run_with_cache(ids, stats=["entropy"], attn_mask=bad))


def test_a_run_mask_where_it_cannot_hold_is_refused():
    """Generation (cached keys: a sliding layer's keys start inside the row), a 4-D mask beside the run's, and packed
    prompts whose separation lived in the model's mask function, which the run's mask replaces: each once ran with
    positions or masks silently wrong (a review's reproductions)."""
    m = interp.load(tiny_llama(), backend="reference")
    ids = torch.randint(3, 100, (1, 6), generator=torch.Generator().manual_seed(9))
    causal = lambda b, h, q, k: k <= q  # noqa: E731
    with m.hooks(attn_mask=causal):
        raises_clear_error(ValueError, "forwards without a KV cache", lambda: m.model.generate(
            ids, max_new_tokens=2, do_sample=False, pad_token_id=0))
        see, _ = _prefix_lm(1, 6, prefix=3)
        raises_clear_error(ValueError, "give one of the two", lambda: m.model(input_ids=ids, attention_mask=see,
                                                                              use_cache=False))
    g = interp.load(_bidirectional_gemma3(), backend="reference")
    packed = g.pack([[5, 6, 7, 8], [9, 10, 11]])
    g(packed)  # the model's own mask keeps them apart
    raises_clear_error(ValueError, "without keeping them apart", lambda: g.run_with_hooks(packed, attn_mask=causal))
    llama_packed = m.pack([[5, 6, 7, 8], [9, 10, 11]])  # segments keep them apart under the run's mask too
    (s0, e0), (s1, e1) = llama_packed.spans
    got = m.run_with_hooks(llama_packed, attn_mask=causal)
    torch.testing.assert_close(got[:, s1:e1], m.run_with_hooks([[9, 10, 11]]), **TOL)
