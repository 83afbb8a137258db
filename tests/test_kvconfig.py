"""KV-cache config from head roles: round trip, streaming attention, memory accounting."""

import pytest
import torch

import interp
from interp import StreamingAttention, kvconfig
from helpers import tiny_llama


def test_streaming_attention_sees_only_sinks_and_window():
    m = interp.HookedModel(tiny_llama())
    x = torch.randint(0, 100, (1, 40), generator=torch.Generator().manual_seed(0))
    _, c = m.run_with_cache(x, pattern=True, interventions=[StreamingAttention(0, heads=[1], sink_tokens=2, window=5)])
    p = c["blocks.0.attn.hook_pattern"][0]
    q = torch.arange(40)[:, None]
    k = torch.arange(40)[None, :]
    outside = (k >= 2) & (q - k >= 5)
    assert p[1][outside].abs().max() == 0 and p[0][outside & (k <= q)].min() > 0
    torch.testing.assert_close(p[1].sum(-1), torch.ones(40))
    with pytest.raises(ValueError, match="window"):
        m.run_with_hooks(x, interventions=[StreamingAttention(0, heads=[1], window=0)])


def test_config_round_trip_and_memory(tmp_path):
    m = interp.HookedModel(tiny_llama(n_layers=2, n_heads=4, n_kv_heads=2))
    scores = torch.tensor([[0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    cfg = kvconfig.config_from_scores(m, scores, sink_tokens=4, window=16)
    path = kvconfig.save(cfg, tmp_path / "kv.json")
    assert kvconfig.load(path) == cfg
    ivs = kvconfig.interventions(cfg, m)
    assert [(iv.layer, list(iv.heads)) for iv in ivs] == [(0, [1, 2, 3]), (1, [0, 1, 2, 3])]
    mem = kvconfig.kv_memory(cfg, n_tokens=1000)
    # KV head 0 of layer 0 serves a full head: 3 of 4 KV heads keep only 20 entries
    assert mem["kept_entries"] == 1000 + 3 * 20 and mem["saved_fraction"] == pytest.approx(1 - 1060 / 4000)
    bad = dict(cfg, layers={"0": {"full": [0], "streaming": [1]}})
    with pytest.raises(ValueError, match="every head"):
        kvconfig.validate(bad)
    with pytest.raises(ValueError, match="cannot read"):
        kvconfig.load(tmp_path / "missing.json")


def test_toy_needle_keeps_retrieval_with_its_retrieval_heads_full():
    from interp.analyses import retrieval as R

    m = interp.load("toy-needle")
    trials = R.make_trials(m, contexts=(160,), depths=(0.1, 0.5))
    scores, _ = R.retrieval_scores(m, trials)
    cfg = kvconfig.config_from_scores(m, scores, sink_tokens=1, window=8)
    kept = R.needle_accuracy(m, trials, kvconfig.interventions(cfg, m))
    everything_streams = kvconfig.config_from_scores(m, torch.zeros(2, 4), sink_tokens=1, window=8)
    lost = R.needle_accuracy(m, trials, kvconfig.interventions(everything_streams, m))
    assert kept["recall"] == 1.0 and lost["recall"] < 0.5


def test_gated_streaming_interpolates_full_and_streaming():
    from interp import GatedStreaming

    m = interp.HookedModel(tiny_llama())
    x = torch.randint(0, 100, (1, 40), generator=torch.Generator().manual_seed(1))
    full = m(x)
    stream = m.run_with_hooks(x, interventions=[StreamingAttention(0, heads=None, sink_tokens=2, window=5)])
    ones = m.run_with_hooks(x, interventions=[GatedStreaming(0, torch.full((2,), 30.0), 2, 5)])
    zeros = m.run_with_hooks(x, interventions=[GatedStreaming(0, torch.full((2,), -30.0), 2, 5)])
    torch.testing.assert_close(ones, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zeros, stream, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="do not divide"):
        m.run_with_hooks(x, interventions=[GatedStreaming(0, torch.zeros(3))])


def test_duo_gates_on_toy_needle_find_its_retrieval_layer():
    from interp.analyses import duo
    from interp.analyses import retrieval as R

    m = interp.load("toy-needle")
    res = duo.train_gates(m, steps=40, context=160, l1=0.1, lr=0.2, sink_tokens=1, window=8)
    assert res.alpha.shape == (2, 4)
    assert (res.alpha[0] < 0.5).all() and (res.alpha[1] > 0.5).all()  # layer 0 streams, layer 1 retrieves
    cfg = kvconfig.config_from_scores(m, res.head_scores(4), threshold=0.5, sink_tokens=1, window=8)
    trials = R.make_trials(m, contexts=(160,), depths=(0.1, 0.5, 0.9))
    assert R.needle_accuracy(m, trials, kvconfig.interventions(cfg, m))["recall"] == 1.0
    assert kvconfig.kv_memory(cfg, 160)["saved_fraction"] > 0.4
    with pytest.raises(ValueError, match="steps"):
        duo.train_gates(m, steps=0)
