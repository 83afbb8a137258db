"""run_with_cache runs the statistics of many layers in one pass (`interp.layer_batch`): every statistic must equal,
bit for bit, what each layer's own call gives (run_with_hooks saving the same hook points takes that path)."""

import pytest
import torch

import interp.layer_batch as layer_batch
from interp import HookedModel
from interp.hooks import HOOK_OF_STAT
from interp.kernels import ALL_STATS, attention_with_stats, stats_from_lse

from helpers import tiny_gemma2, tiny_gemma3, tiny_llama

STAT_NAMES = [f"blocks.{l}.attn.{HOOK_OF_STAT[s]}" for l in range(3) for s in ALL_STATS if s != "span_mass"]


def per_layer(model, ids, names, **kw):
    """The statistics at `names` through each layer's own attention call (no LayerBatch in run_with_hooks)."""
    got = {}

    def save(t, hook):
        got[hook.name] = t.detach().clone()

    model.run_with_hooks(ids, fwd_hooks=[(n, save) for n in names], **kw)
    return got


def _equal_nan(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and bool(((a == b) | (a.isnan() & b.isnan())).all())


DEV = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: the Triton interpreter (conftest sets it)


@pytest.fixture(scope="module")
def llama():
    model = tiny_llama(n_layers=3).to(DEV)
    if DEV == "cuda":  # the cuDNN lse path: fp16
        model = model.half()
    return HookedModel(model, backend="triton")


def test_batched_statistics_equal_per_layer_calls(llama, monkeypatch):
    ids = torch.randint(0, 100, (2, 37), generator=torch.Generator().manual_seed(0))
    calls = []
    real = layer_batch.stats_from_lse
    monkeypatch.setattr(layer_batch, "stats_from_lse", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    _, cache = llama.run_with_cache(ids, stats="all")
    assert calls == [torch.Size([6, 4, 37, 16])], "three layers of batch 2 should make one statistics pass"
    expected = per_layer(llama, ids, STAT_NAMES)
    assert set(cache) == set(expected)
    for name, t in expected.items():
        assert _equal_nan(cache[name], t), name
    layers = [int(n.split(".")[1]) for n in cache]
    assert layers == sorted(layers), "statistics published out of layer order"


def test_padding_mask_and_span_are_repeated_per_layer(llama):
    ids = torch.randint(1, 100, (21,), generator=torch.Generator().manual_seed(1)).tolist()
    prompts = [ids, ids[:15]]  # different lengths: the second row is padded
    span = torch.tensor([[2, 9], [7, 15]])
    names = STAT_NAMES + [f"blocks.{l}.attn.hook_query_span_mass" for l in range(3)]
    _, cache = llama.run_with_cache(prompts, stats="all", span=span)
    assert cache.tokens.attention_mask is not None and not bool(cache.tokens.attention_mask.all())
    expected = per_layer(llama, prompts, names, span=span)
    assert set(cache) == set(expected)
    for name, t in expected.items():
        assert _equal_nan(cache[name], t), name


def test_small_budget_flushes_early_and_keeps_order(llama, monkeypatch):
    """A budget that holds one layer: a pass per layer, still published in layer order, same statistics."""
    monkeypatch.setattr(layer_batch, "DEFAULT_BUDGET", 1)
    ids = torch.randint(0, 100, (1, 19), generator=torch.Generator().manual_seed(2))
    passes = []
    real = layer_batch.stats_from_lse
    monkeypatch.setattr(layer_batch, "stats_from_lse", lambda *a, **k: passes.append(1) or real(*a, **k))
    _, cache = llama.run_with_cache(ids, stats=["entropy", "key_mass"])
    assert len(passes) == 3
    expected = per_layer(llama, ids, [f"blocks.{l}.attn.{h}" for l in range(3)
                                      for h in ("hook_query_entropy", "hook_key_mass")])
    assert list(cache) == list(expected)
    for name, t in expected.items():
        assert torch.equal(cache[name], t), name


def test_sliding_window_layers_form_their_own_pass(monkeypatch):
    """Gemma 3 alternates windowed and global layers: one pass per kind, each equal to the per-layer calls."""
    m = HookedModel(tiny_gemma3().to(DEV), backend="triton")
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(3))
    windows = []
    real = layer_batch.stats_from_lse
    monkeypatch.setattr(layer_batch, "stats_from_lse",
                        lambda *a, **k: windows.append(k["sliding_window"]) or real(*a, **k))
    _, cache = m.run_with_cache(ids, stats="all")
    assert sorted(windows, key=str) == sorted([4, None], key=str)
    names = [f"blocks.{l}.attn.{HOOK_OF_STAT[s]}" for l in range(2) for s in ALL_STATS if s != "span_mass"]
    expected = per_layer(m, ids, names)
    for name, t in expected.items():
        assert _equal_nan(cache[name], t), name


def test_chunked_layers_are_batched_with_their_segments(monkeypatch):
    """Llama 4's chunked layers (attention_chunk_size 4 here; layers 0 and 2 chunked, 1 and 3 global): the chunked
    layers' pass takes their segment ids (stats_from_lse(segment_ids=), repeated per layer) and equals the per-layer
    calls bit for bit, with a right-padded row; a pass without the ids would give other statistics."""
    from test_hf_features import _tiny_llama4

    m = HookedModel(_tiny_llama4(layers=4).to(DEV), backend="triton")
    ids = torch.randint(1, 50, (11,), generator=torch.Generator().manual_seed(3)).tolist()
    prompts = [ids, ids[:8]]
    seen = []
    real = layer_batch.stats_from_lse
    monkeypatch.setattr(layer_batch, "stats_from_lse",
                        lambda *a, **k: seen.append((a[0].shape[0], k["segment_ids"] is not None)) or real(*a, **k))
    _, cache = m.run_with_cache(prompts, stats="all")
    assert sorted(seen) == [(4, False), (4, True)]  # two layers of batch 2 in each pass
    names = [f"blocks.{l}.attn.{HOOK_OF_STAT[s]}" for l in range(4) for s in ALL_STATS if s != "span_mass"]
    expected = per_layer(m, prompts, names)
    for name, t in expected.items():
        assert _equal_nan(cache[name], t), name
    monkeypatch.setattr(layer_batch, "stats_from_lse", lambda *a, **k: real(*a, **{**k, "segment_ids": None}))
    _, unsegmented = m.run_with_cache(prompts, stats="all")
    assert not torch.allclose(unsegmented["blocks.0.attn.hook_query_entropy"],
                              cache["blocks.0.attn.hook_query_entropy"])


def test_soft_capped_layers_are_batched_with_their_cap(monkeypatch):
    """Gemma 2 caps its attention logits: its layers' pass takes the cap (stats_from_lse(softcap=)) and equals the
    per-layer calls bit for bit; a pass without the cap would give other statistics."""
    m = HookedModel(tiny_gemma2().to(DEV), backend="triton")
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(3))
    caps = []
    real = layer_batch.stats_from_lse
    monkeypatch.setattr(layer_batch, "stats_from_lse", lambda *a, **k: caps.append(k["softcap"]) or real(*a, **k))
    _, cache = m.run_with_cache(ids, stats="all")
    assert caps == [2.0, 2.0]  # a windowed and a global layer: two passes, each with the cap
    names = [f"blocks.{l}.attn.{HOOK_OF_STAT[s]}" for l in range(2) for s in ALL_STATS if s != "span_mass"]
    expected = per_layer(m, ids, names)
    for name, t in expected.items():
        assert _equal_nan(cache[name], t), name
    monkeypatch.setattr(layer_batch, "stats_from_lse", lambda *a, **k: real(*a, **{**k, "softcap": None}))
    _, uncapped = m.run_with_cache(ids, stats="all")
    assert not torch.allclose(uncapped["blocks.1.attn.hook_query_entropy"], cache["blocks.1.attn.hook_query_entropy"])


def test_long_layers_keep_their_own_call(llama, monkeypatch):
    monkeypatch.setattr(layer_batch, "LAYER_BYTES", 100)
    monkeypatch.setattr(layer_batch, "stats_from_lse", lambda *a, **k: pytest.fail("a long layer was batched"))
    ids = torch.randint(0, 100, (1, 9), generator=torch.Generator().manual_seed(8))
    _, cache = llama.run_with_cache(ids, stats=["entropy", "key_count"])
    expected = per_layer(llama, ids, [f"blocks.{l}.attn.{h}" for l in range(3)
                                      for h in ("hook_query_entropy", "hook_key_count")])
    assert list(cache) == list(expected)
    for name, t in expected.items():
        assert torch.equal(cache[name], t), name


def test_switched_off_takes_per_layer_calls(llama, monkeypatch):
    monkeypatch.setattr(layer_batch, "ENABLED", False)
    monkeypatch.setattr(layer_batch, "stats_from_lse", lambda *a, **k: pytest.fail("batched while switched off"))
    ids = torch.randint(0, 100, (1, 9), generator=torch.Generator().manual_seed(7))
    _, cache = llama.run_with_cache(ids, stats=["entropy"])
    assert len(cache) == 3


def test_reference_backend_keeps_per_layer_calls(monkeypatch):
    m = HookedModel(tiny_llama(n_layers=2), backend="reference")
    monkeypatch.setattr(layer_batch, "stats_from_lse", lambda *a, **k: pytest.fail("reference backend batched"))
    ids = torch.randint(0, 100, (1, 9), generator=torch.Generator().manual_seed(4))
    _, cache = m.run_with_cache(ids, stats=["entropy"])
    assert set(cache) == {"blocks.0.attn.hook_query_entropy", "blocks.1.attn.hook_query_entropy"}


def test_stats_from_lse_matches_one_call_and_checks_lse():
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(2, 4, 13, 16, generator=g).to(DEV), torch.randn(2, 2, 13, 16, generator=g).to(DEV)
    _, st = attention_with_stats(q, k, k, stats="all", backend="triton")
    again = stats_from_lse(q, k, st.lse, stats="all")
    for name, t in st.items():
        assert _equal_nan(getattr(again, name), t), name
    with pytest.raises(ValueError, match=r"lse must be a float32 tensor of shape \[batch, heads, q_len\]"):
        stats_from_lse(q, k, st.lse[:, :, :5], stats="all")
    with pytest.raises(ValueError, match="float32"):
        stats_from_lse(q, k, st.lse.double(), stats="all")
    with pytest.raises(TypeError, match="lse must be a torch.Tensor"):
        stats_from_lse(q, k, st.lse.tolist(), stats="all")


def test_layer_with_key_bias_keeps_its_own_call(llama, monkeypatch):
    """A KeyMask at layer 1 adds a key_bias there: that layer's statistics come from its own call (they depend on
    the bias), published in the layer after layer 0's pending pass; layer 2 gets a pass of its own at the end; all
    equal the per-layer path, in layer order."""
    from interp.interventions import KeyMask

    ids = torch.randint(0, 100, (1, 23), generator=torch.Generator().manual_seed(6))
    ivs = [KeyMask(layer=1, keys=[3, 4])]
    shapes = []
    real = layer_batch.stats_from_lse
    monkeypatch.setattr(layer_batch, "stats_from_lse", lambda *a, **k: shapes.append(a[0].shape[0]) or real(*a, **k))
    _, cache = llama.run_with_cache(ids, stats=["key_mass", "max_prob"], interventions=ivs)
    assert shapes == [1, 1]
    names = [f"blocks.{l}.attn.{h}" for l in range(3) for h in ("hook_query_max_prob", "hook_key_mass")]
    expected = per_layer(llama, ids, names, interventions=ivs)
    assert list(cache) == list(expected)
    for name, t in expected.items():
        assert torch.equal(cache[name], t), name


@pytest.mark.parametrize("span", [[2, 9], (2, 9), torch.tensor([2, 9])], ids=["list", "tuple", "tensor[2]"])
def test_every_span_form_is_batched(llama, span):
    ids = torch.randint(0, 100, (2, 17), generator=torch.Generator().manual_seed(9))
    names = [f"blocks.{l}.attn.hook_query_span_mass" for l in range(3)]
    _, cache = llama.run_with_cache(ids, stats=["span_mass"], span=span)
    expected = per_layer(llama, ids, names, span=span)
    for name, t in expected.items():
        assert torch.equal(cache[name], t), name


def test_layers_with_different_scales_form_their_own_passes(monkeypatch):
    """GPT-2 with scale_attn_by_inverse_layer_idx scales layer l's scores by 1 / (l + 1): each layer is its own
    kind, and each layer's statistics equal its own call's."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=60, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                     scale_attn_by_inverse_layer_idx=True)
    m = HookedModel(GPT2LMHeadModel(cfg).eval().to(DEV), backend="triton")
    scales = []
    real = layer_batch.stats_from_lse
    monkeypatch.setattr(layer_batch, "stats_from_lse", lambda *a, **k: scales.append(k["scale"]) or real(*a, **k))
    ids = torch.randint(0, 60, (1, 15), generator=torch.Generator().manual_seed(10))
    _, cache = m.run_with_cache(ids, stats=["entropy", "key_mass"])
    assert len(scales) == 2 and scales[0] != scales[1]
    expected = per_layer(m, ids, [f"blocks.{l}.attn.{h}" for l in range(2)
                                  for h in ("hook_query_entropy", "hook_key_mass")])
    for name, t in expected.items():
        assert torch.equal(cache[name], t), name


def test_to_cpu_and_other_hook_points_alongside(llama):
    ids = torch.randint(0, 100, (1, 11), generator=torch.Generator().manual_seed(11))
    names = [f"blocks.{l}.attn.hook_z" for l in range(3)]
    stat_names = [f"blocks.{l}.attn.hook_query_max_prob" for l in range(3)]
    _, cache = llama.run_with_cache(ids, names=names, stats=["max_prob"], to_cpu=True)
    expected = per_layer(llama, ids, names + stat_names)
    assert set(cache) == set(expected)
    for name, t in expected.items():
        assert cache[name].device.type == "cpu" and torch.equal(cache[name], t.cpu()), name
