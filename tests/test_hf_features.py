"""Transformers features through interp's attention, against transformers' eager attention on the same weights:
what works gives the same tokens and scores (float32, 2e-4); what cannot be computed is refused with a ValueError
that names it, instead of being dropped silently (attention dropout, position biases, output_attentions, models
whose attention does not go through the AttentionInterface). Attention sinks (GPT-OSS), packed sequences, Llama 4's
chunked attention and other masks (tests/test_hf_masks.py), once refused, are computed."""

import os

import pytest
import torch
from helpers import raises_clear_error, tiny_gemma2, tiny_gemma3, tiny_gpt2, tiny_llama

import interp
from interp.attention import interp_attention, interp_mask, mask_function_of, mask_is_causal, segments_of

# these models run on the CPU: there the Triton kernels need the interpreter (CI sets it; a GPU machine does not)
BACKENDS = ["reference", pytest.param("triton", marks=pytest.mark.skipif(
    not os.environ.get("TRITON_INTERPRET") and torch.cuda.is_available(),
    reason="CPU models: the Triton kernels run there in the interpreter (TRITON_INTERPRET=1)"))]

TOL = dict(rtol=2e-4, atol=2e-4)


def _pair(build, backend="reference"):
    """The eager model and an interp-wrapped copy (the same weights: the builders seed)."""
    ref = build()
    ref.set_attn_implementation("eager")
    return ref, interp.load(build(), backend=backend).model


def _generate(hf, ids, mask=None, steps=6, **kw):
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, do_sample=kw.pop("do_sample", False),
                          output_scores=True, return_dict_in_generate=True, pad_token_id=0, **kw)
    return out.sequences, torch.stack(out.scores)


def _assert_same_generation(ref, hf, *args, **kw):
    seq_ref, sc_ref = _generate(ref, *args, **kw)
    seq, sc = _generate(hf, *args, **kw)
    assert torch.equal(seq, seq_ref)
    torch.testing.assert_close(sc, sc_ref, **TOL)


def _left_padded(vocab, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    ids[1, :3], mask[1, :3] = 0, 0
    return ids, mask


def _logits(hf, **kw):
    with torch.no_grad():
        return hf(**kw).logits


# ---------------------------------------------------------------- what works: decoding strategies and caches
def test_decoding_strategies_match_eager():
    """Beam search, seeded sampling with several sequences, prompt lookup and assisted generation (multi-token
    verification, cache cropped), and a DynamicCache reused by a second generate call."""
    from transformers import DynamicCache

    ref, hf = _pair(lambda: tiny_llama(vocab=100))
    ids, mask = _left_padded(100)
    _assert_same_generation(ref, hf, ids, mask, num_beams=3, num_return_sequences=2)
    sampled = []
    for model in (ref, hf):  # sampling: the same draws from the same seed
        torch.manual_seed(5)
        sampled.append(_generate(model, ids, mask, do_sample=True, num_return_sequences=2, top_k=0))
    assert torch.equal(sampled[1][0], sampled[0][0])
    torch.testing.assert_close(sampled[1][1], sampled[0][1], **TOL)
    rep = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5, 6]])
    _assert_same_generation(ref, hf, rep, steps=8, prompt_lookup_num_tokens=3)
    _assert_same_generation(ref, hf, ids[:1], mask[:1], steps=8, assistant_model=tiny_llama(vocab=100, n_layers=1))
    runs = []
    for model in (ref, hf):
        cache = DynamicCache(config=model.config)
        first = _generate(model, ids, mask, steps=3, past_key_values=cache)
        more = torch.cat([mask, torch.ones(2, 3, dtype=torch.long)], 1)
        runs.append(first + _generate(model, first[0], more, steps=3, past_key_values=cache))
    for got, want in zip(runs[1], runs[0]):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sliding_window_past_the_window_matches_eager(backend):
    """Gemma 2 (window 4, soft-capping): a left-padded batch generating past the window with beam search, and a
    chunked prefill (several queries per step against a rolled sliding-window cache)."""
    from transformers import DynamicCache

    ref, hf = _pair(tiny_gemma2, backend)
    ids, mask = _left_padded(50)
    _assert_same_generation(ref, hf, ids, mask, steps=8, num_beams=2)
    x = torch.randint(1, 50, (2, 11), generator=torch.Generator().manual_seed(5))
    am = torch.ones(2, 11, dtype=torch.long)
    am[1, :2] = 0
    pos = (am.cumsum(-1) - 1).clamp_min(0)
    outs = {}
    for key, model in (("ref", ref), ("interp", hf)):
        cache, start, chunks = DynamicCache(config=model.config), 0, []
        for n in (5, 3, 2, 1):
            chunks.append(_logits(model, input_ids=x[:, start:start + n], attention_mask=am[:, :start + n],
                                  position_ids=pos[:, start:start + n], past_key_values=cache, use_cache=True))
            start += n
        outs[key] = torch.cat(chunks, 1)[am.bool()]
    torch.testing.assert_close(outs["interp"], outs["ref"], **TOL)


def test_bidirectional_config_matches_eager():
    """config.is_causal = False (transformers' bidirectional power feature), with padding."""
    def build():
        hf = tiny_llama(vocab=100)
        hf.config.is_causal = False
        return hf

    ref, hf = _pair(build)
    ids, mask = _left_padded(100)
    want = _logits(ref, input_ids=ids, attention_mask=mask, use_cache=False)
    got = _logits(hf, input_ids=ids, attention_mask=mask, use_cache=False)
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], **TOL)


# ---------------------------------------------------------------- fixed: cross-attention without an encoder mask
def _tiny_bart(seed=0):
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    cfg = BartConfig(vocab_size=50, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64)
    return BartForConditionalGeneration(cfg).eval()


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_attention_without_an_encoder_mask_sees_every_encoder_token(backend):
    """An encoder-decoder called without an attention_mask: the cross-attention mask has no padding and more keys
    (encoder tokens) than queries (decoder tokens). The mask function took the keys past the queries for a static
    cache's empty slots and cut the encoder's keys to the decoder's length, silently."""
    ref, hf = _pair(_tiny_bart, backend)
    x = torch.randint(3, 50, (2, 6), generator=torch.Generator().manual_seed(2))
    want = _logits(ref, input_ids=x, decoder_input_ids=x[:, :3])
    torch.testing.assert_close(_logits(hf, input_ids=x, decoder_input_ids=x[:, :3]), want, **TOL)
    _assert_same_generation(ref, hf, x, steps=4, decoder_start_token_id=2, cache_implementation="static")


# ---------------------------------------------------------------- refused: what the kernels do not compute
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_sequences_match_eager(backend):
    """position_ids restarting within a row, without an attention_mask: transformers builds a block-diagonal mask
    (one block per packed sequence), which interp once refused: the logits are eager's."""
    ref, hf = _pair(lambda: tiny_llama(vocab=100), backend)
    ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18]])
    pos = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 0, 1]])  # rows packed unlike
    kw = dict(input_ids=ids, position_ids=pos, use_cache=False)
    want = _logits(ref, **kw)
    torch.testing.assert_close(_logits(hf, **kw), want, **TOL)
    plain = _logits(ref, input_ids=ids, use_cache=False)
    assert (plain - want).abs().max() > 1e-2  # (the packing changes the logits: a test that can fail)
    # positions that only start later are one sequence: as eager
    later = dict(input_ids=ids[:1], position_ids=torch.arange(10, 18)[None], use_cache=False)
    torch.testing.assert_close(_logits(hf, **later), _logits(ref, **later), **TOL)


def _tiny_llama4(seed=0, layers=2):
    """Layers alternate chunked (rope, attention_chunk_size 4) and global (no rope), chunked first."""
    from transformers import Llama4ForCausalLM, Llama4TextConfig

    torch.manual_seed(seed)
    cfg = Llama4TextConfig(vocab_size=50, hidden_size=64, intermediate_size=64, intermediate_size_mlp=96,
                           num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                           num_local_experts=2, attention_chunk_size=4, max_position_embeddings=64,
                           no_rope_layers=[1, 0] * (layers // 2), moe_layers=[], interleave_moe_layer_step=0)
    return Llama4ForCausalLM(cfg).eval()


@pytest.mark.parametrize("backend", BACKENDS)
def test_llama4_chunked_attention_matches_eager(backend):
    """Llama 4's chunked layers (a query sees only its own chunk of attention_chunk_size tokens; here 4, layer 0
    chunked, layer 1 global), once refused: logits as eager's with and without left padding, greedy generation past
    several chunks with dynamic (a sliding cache: keys from an offset) and static caches, packed sequences inside
    the chunks; the captured patterns are eager's attention weights and the Triton statistics the reference's."""
    ref, hf = _pair(_tiny_llama4, backend)
    assert interp.load(_tiny_llama4(layers=4)).cfg.layer_chunks == (4, None, 4, None)
    ids = torch.randint(1, 50, (2, 11), generator=torch.Generator().manual_seed(2))
    want = _logits(ref, input_ids=ids, use_cache=False)
    torch.testing.assert_close(_logits(hf, input_ids=ids, use_cache=False), want, **TOL)
    unchunked = _tiny_llama4()
    unchunked.config.attention_chunk_size = 64
    unchunked.set_attn_implementation("eager")
    assert (_logits(unchunked, input_ids=ids, use_cache=False) - want).abs().max() > 1e-2  # the chunks matter
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, :3] = 0  # chunks counted from row 1's first real token
    got, want = (_logits(m, input_ids=ids, attention_mask=mask, use_cache=False) for m in (hf, ref))
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], **TOL)
    _assert_same_generation(ref, hf, ids, mask, steps=6)
    _assert_same_generation(ref, hf, ids, steps=6, cache_implementation="static")
    packed = dict(input_ids=ids, position_ids=torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]]), use_cache=False)
    torch.testing.assert_close(_logits(hf, **packed), _logits(ref, **packed), **TOL)
    if backend == "reference":
        with torch.no_grad():
            eager = ref(input_ids=ids, output_attentions=True, use_cache=False).attentions
        _, cache = interp.load(_tiny_llama4(), backend="reference").run_with_cache(ids, pattern=True)
        for layer in range(2):
            torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_pattern"], eager[layer], **TOL)
    else:
        _, got = interp.load(_tiny_llama4(), backend="triton").run_with_cache(ids, stats="all")
        _, want = interp.load(_tiny_llama4(), backend="reference").run_with_cache(ids, stats="all")
        for name in want.keys():
            torch.testing.assert_close(got[name].float(), want[name].float(), equal_nan=True, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_llama4_chunked_attention_gradients_match_eager(backend):
    """Gradients through the chunked layers (the Triton path: each chunk's FusedAttention backward, put together):
    the loss's gradient with respect to the input embeddings, as eager attention's (interp freezes the weights: it
    takes gradients of activations)."""
    ref, hf = _pair(_tiny_llama4, backend)
    ids = torch.randint(1, 50, (2, 11), generator=torch.Generator().manual_seed(4))
    grads = []
    for m in (ref, hf):
        emb = m.get_input_embeddings()(ids).detach().requires_grad_()
        grads.append(torch.autograd.grad(m(inputs_embeds=emb, labels=ids, use_cache=False).loss, emb)[0])
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-6)


def test_mask_functions_recognised():
    from transformers import masking_utils as mu

    assert mask_is_causal(None) and mask_is_causal(mu.causal_mask_function)
    assert mask_is_causal(mu.sliding_window_causal_mask_function(4))
    assert mask_is_causal(mu.bidirectional_mask_function) is False
    # what the kernels cannot read from positions goes to the layers as a mask function, named in messages
    for fn, words in ((mu.sliding_window_bidirectional_mask_function(4), "bidirectional sliding window"),
                      (mu.or_masks(mu.causal_mask_function, lambda *a: True), "or_mask_function"),
                      (mu.and_masks(mu.causal_mask_function, lambda b, h, q, k: k > 0), "custom mask function")):
        assert mask_is_causal(fn) is None
        made, padded, apart = mask_function_of(interp_mask(1, 4, 4, mask_function=fn, device="cpu"))
        assert words in made.describe and padded is False and apart is False
    # packed sequences and chunked attention: segment ids carried by the mask
    packed = interp_mask(1, 4, 4, mask_function=mu.and_masks(
        mu.causal_mask_function, mu.packed_sequence_mask_function(torch.tensor([[0, 0, 1, 1]]))))
    assert torch.equal(segments_of(packed)[0], torch.tensor([[0, 0, 1, 1]]))
    chunked = mu.chunked_causal_mask_function(4, torch.tensor([0, 2]))  # row 1: two left-padding tokens
    assert mask_is_causal(chunked) is True
    pad = torch.tensor([[1] * 10, [0, 0] + [1] * 8])
    ids, padded = segments_of(interp_mask(2, 3, 10, q_offset=7, mask_function=chunked, attention_mask=pad))
    assert padded and torch.equal(ids, torch.tensor([[0] * 4 + [1] * 4 + [2] * 2, [-1] * 2 + [0] * 4 + [1] * 4]))
    # a sliding cache's keys start at an offset: chunks of absolute positions 5..12
    one_row = mu.chunked_causal_mask_function(4, torch.tensor([0]))
    ids, padded = segments_of(interp_mask(1, 1, 8, q_offset=12, kv_offset=5, mask_function=one_row))
    assert not padded and torch.equal(ids, torch.tensor([[1, 1, 1, 2, 2, 2, 2, 3]]))



def test_packed_parts_transformers_never_makes_run_as_mask_functions():
    """Packed-sequence parts read as segments only as transformers builds them: ids in contiguous runs (merged with
    chunks, [0, 0, 1, 1, 0, 0, 1, 1] once became four segments where tokens 0 and 4 see each other), a position remap
    only beside its packed ids, with positions rising by one inside each sequence (the kernels apply causality on
    the row's positions); once these dropped the remap or split the runs silently, then they were refused. Any
    other packed part now reaches the layers as the mask function itself: transformers' own mask, entry for entry."""
    from transformers import masking_utils as mu

    def check(fn, n=8):
        made = interp_mask(1, n, n, mask_function=fn, device="cpu")
        assert segments_of(made) is None
        tile = mask_function_of(made)[0].tile(0, n, 0, n, 0, 1, 1, "cpu")
        assert torch.equal(tile, mu.sdpa_mask(1, n, n, mask_function=fn, allow_is_causal_skip=False))

    interleaved = mu.packed_sequence_mask_function(torch.tensor([[0, 0, 1, 1, 0, 0, 1, 1]]))
    chunks = mu.chunked_causal_mask_function(8, torch.zeros(1, dtype=torch.long))
    check(mu.and_masks(chunks, interleaved))
    check(mu.and_masks(mu.causal_mask_function, interleaved))
    reversed_positions = torch.tensor([[3, 2, 1, 0, 3, 2, 1, 0]])
    remapped = mu.remap_positions_for_packed_sequence(mu.causal_mask_function, reversed_positions)
    check(remapped)  # a remap with no packed ids beside it
    two = mu.packed_sequence_mask_function(torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]]))
    check(mu.and_masks(remapped, two))
    ok = mu.remap_positions_for_packed_sequence(mu.causal_mask_function, torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]]))
    made = interp_mask(1, 8, 8, mask_function=mu.and_masks(ok, two), device="cpu")
    assert torch.equal(segments_of(made)[0], two.__closure__[0].cell_contents)

def test_attention_dropout_in_training_mode_is_refused():
    """model.train() with a nonzero attention dropout: eager drops probabilities, interp's kernels have no dropout."""
    for build, p in ((lambda: tiny_llama(vocab=100, attention_dropout=0.5), "0.5"), (tiny_gpt2, "0.1")):
        hf = interp.load(build(), backend="reference").model
        ids = torch.tensor([[3, 4, 5, 6]])
        _logits(hf, input_ids=ids)  # eval mode: no dropout, runs
        hf.train()
        with pytest.raises(ValueError, match=rf"attention dropout {p} \(the model is in training mode"):
            _logits(hf, input_ids=ids)


def test_attention_sinks_are_computed():
    """GPT-OSS's learned sinks (s_aux), once refused, reach the kernels as sinks= (tests/test_sinks.py has the rest)."""
    from transformers import GptOssConfig, GptOssForCausalLM

    torch.manual_seed(0)
    cfg = GptOssConfig(vocab_size=50, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                       max_position_embeddings=64, sliding_window=4, layer_types=["sliding_attention", "full_attention"])
    model = GptOssForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.sinks.copy_(torch.randn(4) * 2 + 1.0)
    hf = interp.load(model, backend="reference").model
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    got = _logits(hf, input_ids=ids)
    hf.set_attn_implementation("eager")
    try:
        want = _logits(hf, input_ids=ids)
    finally:
        hf.set_attn_implementation("interp")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_position_bias_is_refused():
    class Layer(torch.nn.Module):
        layer_idx = 0
        is_causal = False

    q = k = v = torch.randn(1, 2, 4, 8)
    raises_clear_error(ValueError, "adds a position bias", lambda: interp_attention(
        Layer(), q, k, v, None, position_bias=torch.zeros(1, 2, 4, 4)))


@pytest.mark.parametrize("build", [lambda: tiny_llama(vocab=100), tiny_gpt2], ids=["llama", "gpt2"])
def test_output_attentions_is_refused_until_eager(build):
    """output_attentions=True gave an empty tuple (GPT-2 does not even hand the flag to its attention function);
    switched back to eager attention, the model returns them as usual."""
    m = interp.load(build(), backend="reference")
    ids = torch.tensor([[3, 4, 5, 6]])
    with pytest.raises(ValueError, match="output_attentions=True: interp attention never forms"):
        m.model(input_ids=ids, output_attentions=True)
    with pytest.raises(ValueError, match="output_attentions=True"):
        m.generate([[3, 4, 5]], max_new_tokens=2, output_attentions=True, return_dict_in_generate=True)
    m.model.set_attn_implementation("eager")
    try:
        assert len(m.model(input_ids=ids, output_attentions=True).attentions) == m.cfg.n_layers
    finally:
        m.model.set_attn_implementation("interp")


def test_model_outside_the_attention_interface_is_refused():
    """MPNet keeps its own attention (no AttentionInterface): run_with_cache captured nothing, silently."""
    from transformers import MPNetConfig, MPNetModel

    hf = MPNetModel(MPNetConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=64)).eval()
    with pytest.raises(ValueError, match="MPNetModel kept attention implementation 'eager'"):
        interp.load(hf)


def test_classify_notes_chunked_layers():
    """`interp classify`'s long-context pass says which layers attend in chunks shorter than its context (their
    long-context scores describe a chunk), and says nothing at a context within one chunk."""
    from interp.batch.classify import _long_context

    m = interp.load(_tiny_llama4(layers=4), backend="reference")
    notes = []
    _long_context(m, 12, 1, 0, notes)
    assert any("layers [0, 2] attend in chunks of 4 tokens" in n for n in notes), notes
    notes = []
    _long_context(m, 4, 1, 0, notes)
    assert not any("chunks" in n for n in notes), notes
