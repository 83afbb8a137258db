"""The bundled real models: wrapper parity with transformers, statistics vs eager patterns, sliding windows."""

import torch

import interp
from conftest import eager_run

TEXT = ("The cat sat on the mat. The dog slept by the door, and the bird sang in the tree. "
        "When the sun rose, the cat woke up and stretched.")


def test_smollm2_logits_and_stats_match_eager(smollm2):
    toks = smollm2.to_tokens(TEXT)
    logits, cache = smollm2.run_with_cache(toks.input_ids, stats="all", sink_tokens=1, local_window=8)
    ref = eager_run(smollm2, toks.input_ids)
    torch.testing.assert_close(logits, ref.logits, atol=3e-4, rtol=1e-4)
    n = toks.input_ids.shape[1]
    for l in (0, 7, 29):
        p = ref.attentions[l][0].float()  # [head, q, k]
        torch.testing.assert_close(cache[f"blocks.{l}.attn.hook_key_mass"][0], p.sum(1), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cache[f"blocks.{l}.attn.hook_key_mean"][0], p.sum(1) / torch.arange(n, 0, -1),
                                   atol=1e-5, rtol=1e-4)
        ent = -(torch.special.xlogy(p, p)).sum(-1)
        torch.testing.assert_close(cache[f"blocks.{l}.attn.hook_query_entropy"][0], ent, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cache[f"blocks.{l}.attn.hook_query_sink_mass"][0], p[..., 0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cache[f"blocks.{l}.attn.hook_query_max_prob"][0], p.max(-1).values,
                                   atol=1e-5, rtol=1e-4)


def test_smollm2_ragged_batch(smollm2):
    prompts = ["Hello there, how are you today?", TEXT]
    logits = smollm2(prompts)
    for i, p in enumerate(prompts):
        single = smollm2(p)
        n = single.shape[1]
        torch.testing.assert_close(logits[i, :n], single[0], atol=2e-4, rtol=1e-4)


def test_smollm2_generates_sensible_text(smollm2):
    out = smollm2.to_string(smollm2.generate("The capital of France is", max_new_tokens=4)[0])
    assert "Paris" in out


def test_gemma3_sliding_window_layers_match_transformers(gemma3):
    """At 700 tokens the local layers' window (512) matters: parity with transformers' eager path proves the kernel
    applies it (a function that ignored it would be off by ~28 in the logits)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 5000, (1, 700), generator=g)
    ids[0, 0] = gemma3.tokenizer.bos_token_id
    logits, cache = gemma3.run_with_cache(ids, stats=["key_mass", "local_mass"], layers=[0, 5], local_window=512)
    ref = eager_run(gemma3, ids)
    torch.testing.assert_close(logits, ref.logits, atol=2e-3, rtol=1e-3)
    assert gemma3.cfg.layer_windows[0] == 512 and gemma3.cfg.layer_windows[5] is None
    # a local layer puts all its mass inside the window; the global layer 5 does not have to
    assert cache["blocks.0.attn.hook_query_local_mass"].min() > 1 - 1e-4
    p0 = ref.attentions[0][0].float()
    torch.testing.assert_close(cache["blocks.0.attn.hook_key_mass"][0], p0.sum(1), atol=2e-3, rtol=1e-3)


def test_transformer_lens_round_trip(smollm2):
    bridge = smollm2.to_transformer_lens()
    toks = smollm2.to_tokens("A short sentence for the bridge.")
    torch.testing.assert_close(bridge(toks.input_ids), smollm2(toks.input_ids), atol=3e-4, rtol=1e-4)
    # statistics from TransformerLens' own patterns equal ours
    tlm = interp.TLPatternModel(bridge)
    _, a = tlm.run_with_cache(toks.input_ids, stats=["key_mean", "entropy"], layers=[4])
    _, b = smollm2.run_with_cache(toks.input_ids, stats=["key_mean", "entropy"], layers=[4])
    for name in ("blocks.4.attn.hook_key_mean", "blocks.4.attn.hook_query_entropy"):
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-4)
    # and the bridge's HF model loads back into interp
    again = interp.load(bridge)
    torch.testing.assert_close(again(toks.input_ids), smollm2(toks.input_ids), atol=3e-4, rtol=1e-4)


def test_smollm2_packed_documents_are_each_as_alone(smollm2):
    """Three documents packed into one row (HookedModel.pack): each document's logits and statistics are its own
    run's (30 layers, GQA 9/3); concatenated without the packing, a later document's first token is no sink (the
    README's packed-sinks table, examples/packed_sinks.py)."""
    docs = [TEXT[:40], "Hello there, how are you today?", TEXT[40:]]
    packed = smollm2.pack(docs)
    logits, cache = smollm2.run_with_cache(packed, stats=["sink_mass", "key_mass"], sink_tokens=1)
    for i, (s, e) in enumerate(packed.spans):
        alone, own = smollm2.run_with_cache(docs[i], stats=["sink_mass", "key_mass"], sink_tokens=1)
        torch.testing.assert_close(logits[0, s:e], alone[0], atol=3e-4, rtol=1e-4)
        for l in (0, 15, 29):
            for name in ("hook_query_sink_mass", "hook_key_mass"):
                key = f"blocks.{l}.attn.{name}"
                torch.testing.assert_close(cache[key][0, :, s:e], own[key][0], atol=1e-4, rtol=1e-4)
    s, e = packed.spans[1]
    _, plain = smollm2.run_with_cache(packed.tokens.input_ids, stats=["key_mass"], layers=[15])
    packed_mass = cache["blocks.15.attn.hook_key_mass"][0, :, s].mean()  # from document 2's queries only
    # concatenated, document 2's and 3's queries together give its first token less than a third of that
    assert plain["blocks.15.attn.hook_key_mass"][0, :, s].mean() < packed_mass / 3
