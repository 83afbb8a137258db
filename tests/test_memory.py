"""Memory estimates before a run: full patterns across every requested layer (interp.memory)."""

import pytest
import torch

from interp import HookedModel
from interp.config import ModelConfig
from interp.memory import GiB, check_pattern_memory, pattern_bytes
from helpers import tiny_llama


def cfg(n_layers=30, n_heads=9):
    return ModelConfig(n_layers=n_layers, n_heads=n_heads, n_kv_heads=3, d_head=64, d_model=576, d_vocab=100,
                       n_ctx=8192, layer_windows=(None,) * n_layers, is_causal=True, architecture="LlamaForCausalLM")


def test_pattern_bytes_counts_every_requested_layer():
    c = cfg()
    one = 2 * 9 * 100 * 120 * 4
    assert pattern_bytes(c, 2, 100, 120, layers=[3]) == 2 * one  # the cached map + one working buffer
    assert pattern_bytes(c, 2, 100, 120, layers=[0, 5, 5, 7]) == 4 * one  # duplicates count once
    assert pattern_bytes(c, 2, 100, 120) == 31 * one  # None = all 30 layers
    assert pattern_bytes(c, 2, 100, 120, layers=[]) == 0


def test_estimate_matches_what_run_with_cache_keeps():
    m = HookedModel(tiny_llama(n_layers=3))
    x = torch.randint(0, 100, (2, 17), generator=torch.Generator().manual_seed(0))
    _, cache = m.run_with_cache(x, pattern=True, layers=[0, 2])
    kept = sum(t.numel() * t.element_size() for name, t in cache.items() if name.endswith("hook_pattern"))
    per_layer = kept // 2
    assert pattern_bytes(m.cfg, 2, 17, 17, layers=[0, 2]) == kept + per_layer


def test_all_layers_are_refused_before_running_while_one_layer_fits():
    c = cfg()
    one_layer = 1 * 9 * 8192 * 8192 * 4  # 2.25 GiB: under hook_pattern's per-layer 4 GiB check
    assert one_layer < 4 * GiB
    assert check_pattern_memory(c, 1, 8192, 8192, layers=[12], limit=16 * GiB) == 2 * one_layer
    with pytest.raises(ValueError, match=r"30 layers would take 69\.8 GiB .*16\.0 GiB available"):
        check_pattern_memory(c, 1, 8192, 8192, layers=None, limit=16 * GiB)
    with pytest.raises(ValueError, match="statistics instead"):
        check_pattern_memory(c, 4, 8192, 8192, layers=[0], limit=GiB)


def test_default_limit_is_the_free_memory():
    c = cfg()
    assert check_pattern_memory(c, 1, 16, 16, layers=[0]) == 2 * 9 * 16 * 16 * 4  # tiny: fits anywhere
    with pytest.raises(ValueError, match="available on cpu"):
        check_pattern_memory(c, 1 << 20, 8192, 8192)  # petabytes


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(batch=0), ValueError, "batch must be >= 1"),
    (dict(batch=1.5), TypeError, "batch must be an int"),
    (dict(q_len=-3), ValueError, "q_len must be >= 1"),
    (dict(k_len="8"), TypeError, "k_len must be an int"),
    (dict(layers=[30]), ValueError, r"layer 30 out of range; the model has layers 0\.\.29"),
    (dict(layers=[True]), TypeError, r"layers must be an int in 0\.\.29, a list of them, or None \(all layers\); "
                                     r"layer bool True is not an int"),
    (dict(layers="0"), TypeError, r"layers must be an int in 0\.\.29, a list of them, or None \(all layers\), got str"),
])
def test_bad_arguments(kwargs, err, match):
    args = dict(batch=1, q_len=8, k_len=8, layers=None) | kwargs
    with pytest.raises(err, match=match):
        pattern_bytes(cfg(), **args)


@pytest.mark.parametrize("limit, err, match", [
    (float("nan"), TypeError, "limit must be an int or None, got float nan"),  # NaN once refused nothing
    ("4GB", TypeError, "limit must be an int or None, got str"),
    (-1, ValueError, "limit must be >= 0, got -1"),
])
def test_limit_is_checked(limit, err, match):
    """Round 22's sweep: limit=nan let a 44,703 GiB request through; '4GB' raised a comparison TypeError."""
    with pytest.raises(err, match=match):
        check_pattern_memory(cfg(), 1, 10**6, 10**6, limit=limit)


def test_a_model_is_taken_for_its_config():
    m = HookedModel(tiny_llama(n_layers=3), name="tiny")
    assert pattern_bytes(m, 2, 17, 17, layers=[0, 2]) == pattern_bytes(m.cfg, 2, 17, 17, layers=[0, 2])
    with pytest.raises(TypeError, match="cfg must be a model's config"):
        pattern_bytes("cfg", 2, 17, 17)


def test_layers_as_tensors():
    """Round 22's sweep: layers=torch.tensor(1) raised "iteration over a 0-d tensor" from inside torch. Integer
    tensors (0-d or 1-D) are layers; float or 2-D ones are refused."""
    c = cfg()
    assert pattern_bytes(c, 1, 8, 8, layers=torch.tensor(1)) == pattern_bytes(c, 1, 8, 8, layers=[1])
    assert pattern_bytes(c, 1, 8, 8, layers=torch.tensor([1, 2])) == pattern_bytes(c, 1, 8, 8, layers=[1, 2])
    with pytest.raises(TypeError, match=r"got a torch.float32 tensor of shape \(1,\)"):
        pattern_bytes(c, 1, 8, 8, layers=torch.tensor([1.0]))
    with pytest.raises(TypeError, match=r"got a torch.int64 tensor of shape \(1, 1\)"):
        pattern_bytes(c, 1, 8, 8, layers=torch.tensor([[1]]))
