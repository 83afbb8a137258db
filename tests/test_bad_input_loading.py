"""Bad input to loading and TransformerLens interop: a config.json that does not match its weights, impossible sizes,
an unusable $INTERP_CACHE, unknown devices, and a TLPatternModel given bad arguments or analyses it cannot run: each a
clear ValueError/TypeError naming the argument or file, never random weights, a hang or a deep traceback."""

import json
import time

import pytest
import torch

import interp
from helpers import tiny_llama
from interp import analyses as A
from interp.memory import available_bytes
from interp.tl import to_transformer_lens


def _folder(tmp_path, name, edit=None, **extra):
    hf = tiny_llama(**extra)
    hf.config.architectures = ["LlamaForCausalLM"]
    path = tmp_path / name
    hf.save_pretrained(path)
    if edit is not None:
        cfg = json.loads((path / "config.json").read_text())
        edit(cfg)
        (path / "config.json").write_text(json.dumps(cfg))
    return path


# ------------------------------------------------------------------------------------------------ 1: config vs weights
MISMATCH = [
    ("gpt2-over-llama", lambda c: c.update(model_type="gpt2"), r"missing from the weights.*transformer\.h\.0\."),
    ("more-layers", lambda c: c.update(num_hidden_layers=3), r"missing from the weights.*model\.layers\.2\."),
    ("fewer-layers", lambda c: c.update(num_hidden_layers=1), r"not in the model.*model\.layers\.1\."),
]


@pytest.mark.parametrize("case", MISMATCH, ids=[c[0] for c in MISMATCH])
def test_config_that_does_not_match_the_weights_is_refused(tmp_path, case):
    name, edit, match = case
    path = _folder(tmp_path, name, edit)
    with pytest.raises(ValueError, match=rf"{name}/config\.json does not match the weights.*{match}"):
        interp.load(path)


def test_matching_folder_loads_and_tied_embeddings_are_not_missing(tmp_path):
    plain = interp.load(_folder(tmp_path, "good"))
    assert plain.cfg.n_layers == 2
    tied = interp.load(_folder(tmp_path, "tied", tie_word_embeddings=True))
    assert tied.model.lm_head.weight is tied.model.model.embed_tokens.weight


# ------------------------------------------------------------------------------------------------ 2, 3: config values
BAD_CONFIG = [
    ("zero-layers", lambda c: c.update(num_hidden_layers=0), r"num_hidden_layers must be a positive int.*got 0"),
    ("zero-ctx", lambda c: c.update(max_position_embeddings=0), r"max_position_embeddings must be a positive.*got 0"),
    ("huge-layers", lambda c: c.update(num_hidden_layers=10**6), r"about [\d,]+ parameters \(1000000 layers.*GiB"),
    ("huge-vocab", lambda c: c.update(vocab_size=10**11), r"more than the .* GiB of memory available"),
    ("heads-not-divide", lambda c: c.update(num_attention_heads=3), r"invalid .*config\.json.*number of attention heads"),
    ("str-layers", lambda c: c.update(num_hidden_layers="2"), r"invalid .*config\.json: field 'num_hidden_layers'"),
]


@pytest.mark.parametrize("case", BAD_CONFIG, ids=[c[0] for c in BAD_CONFIG])
def test_bad_config_values_are_refused_before_building(tmp_path, case):
    name, edit, match = case
    path = _folder(tmp_path, name, edit)
    t = time.time()
    with pytest.raises(ValueError, match=match):
        interp.load(path)
    assert time.time() - t < 30


# ------------------------------------------------------------------------------------------------ 4: INTERP_CACHE
def test_unusable_interp_cache_is_refused_before_dequantising(monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", "/dev/null/x")
    t = time.time()
    with pytest.raises(ValueError, match=r"cache folder /dev/null/x/models from INTERP_CACHE='/dev/null/x'"):
        interp.load("smollm2-135m")
    assert time.time() - t < 10


def test_empty_interp_cache_is_the_default_not_the_current_folder(monkeypatch):
    from pathlib import Path

    from interp.zoo import cache_root

    monkeypatch.setenv("INTERP_CACHE", "")
    assert cache_root() == Path.home() / ".cache" / "interp"


# ------------------------------------------------------------------------------------------------ 5, 6: devices, TL
def test_available_bytes_of_unusable_devices():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="available_bytes: device 'cuda' asked for, but no CUDA device"):
            available_bytes("cuda")
    with pytest.raises(ValueError, match="available_bytes: unknown device 'tpu'"):
        available_bytes("tpu")
    with pytest.raises(TypeError, match="available_bytes: device must be a device name"):
        available_bytes(None)
    assert available_bytes("cpu") > 0


@pytest.mark.parametrize("bad", ["x", None])
def test_to_transformer_lens_needs_a_hooked_model(bad):
    with pytest.raises(TypeError, match="to_transformer_lens: model must be an interp HookedModel"):
        to_transformer_lens(bad)


# ------------------------------------------------------------------------------------------------ 7, 8: TLPatternModel
@pytest.fixture(scope="module")
def tiny_pair(smollm2):
    hf = tiny_llama(vocab=smollm2.cfg.d_vocab)
    model = interp.HookedModel(hf, smollm2.tokenizer, name="tiny")
    return model, interp.TLPatternModel(to_transformer_lens(model))


TOKS = torch.tensor([[5, 6, 7, 8, 9, 10]])
TL_BAD = [
    ("sink-negative", dict(sink_tokens=-1), ValueError, "sink_tokens must be >= 0, got -1"),
    ("window-zero", dict(local_window=0), ValueError, "local_window must be >= 1, got 0"),
    ("window-negative", dict(local_window=-3), ValueError, "local_window must be >= 1, got -3"),
    ("span-reversed", dict(span=(5, 2)), ValueError, r"span must satisfy 0 <= start <= end"),
    ("span-mass-no-span", dict(stats=["span_mass"]), ValueError, "stats asks for span_mass but no span"),
    ("unknown-keyword", dict(foo=1), TypeError, "unexpected keyword argument 'foo'"),
    ("names", dict(names=["blocks.0.attn.hook_z"]), TypeError, "got names=: a TLPatternModel gives statistics"),
    ("pattern", dict(pattern=True), TypeError, "got pattern=: a TLPatternModel gives statistics"),
    ("layers-int-zero", dict(layers=0, stats=["entropy"]), None, None),
    ("layers-str", dict(layers="0"), TypeError, "layers must be an int in 0..1"),
    ("float-ids", dict(tokens=TOKS.float()), TypeError, "tokens must be an integer tensor"),
    ("out-of-vocab", dict(tokens=TOKS + 10**7), ValueError, "ids outside the vocabulary"),
    ("negative-ids", dict(tokens=-TOKS), ValueError, "ids outside the vocabulary"),
    ("empty-ids", dict(tokens=TOKS[:, :0]), ValueError, "tokens is empty"),
    ("3-d-ids", dict(tokens=TOKS[None]), ValueError, r"tokens must be 1-D or 2-D"),
    ("too-long", dict(tokens=torch.ones(1, 300, dtype=torch.long)), ValueError, "maximum context is 256"),
    ("to-cpu-str", dict(to_cpu="yes"), TypeError, "to_cpu must be True or False"),
]


@pytest.mark.parametrize("case", TL_BAD, ids=[c[0] for c in TL_BAD])
def test_pattern_model_run_with_cache_checks_its_arguments(tiny_pair, case):
    _, tlm = tiny_pair
    _, kw, exc, match = case
    kw = dict(kw)
    tokens = kw.pop("tokens", TOKS)
    if exc is None:
        _, cache = tlm.run_with_cache(tokens, **kw)
        assert "blocks.0.attn.hook_query_entropy" in cache and "blocks.1.attn.hook_query_entropy" not in cache
        return
    with pytest.raises(exc, match=match):
        tlm.run_with_cache(tokens, **kw)


REFUSED = [
    ("value_drains", lambda m: A.value_drains(m, TOKS)),
    ("dormant_heads", lambda m: A.dormant_heads(m, {"a": TOKS})),
    ("massive_activations", lambda m: A.massive_activations(m, TOKS)),
    ("head_pattern_scores", lambda m: A.head_pattern_scores(m, half=4, n_prompts=2)),
    ("random_tokens", lambda m: A.random_tokens(m, n_tokens=8, n_prompts=2)),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_analyses_that_need_hooks_refuse_a_pattern_model(tiny_pair, case):
    name, call = case
    _, tlm = tiny_pair
    with pytest.raises(TypeError, match=rf"{name}: needs interp's own wrapper.*TLPatternModel"):
        call(tlm)


def test_pattern_statistics_analyses_run_on_a_pattern_model(tiny_pair):
    model, tlm = tiny_pair
    toks = torch.randint(5, 1000, (1, 24), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(A.first_token_alpha(tlm, toks), A.first_token_alpha(model, toks), atol=1e-4, rtol=1e-4)
    a = A.shape_scores(tlm, toks, sink_tokens=1, local_window=4)
    assert a is not None
