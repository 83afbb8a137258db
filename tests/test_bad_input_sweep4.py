"""Bad-input sweep 4: the kernel API's options, KV configs, CUDA-graph runs, the residual-stream node helpers and the
interventions that need the attention probabilities. A ValueError/TypeError naming the argument, what it got and what
is allowed; never a hang, an absurd allocation, a silent NaN or a deep torch traceback. Good input next to each case
still runs as before."""

from __future__ import annotations

import copy
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import interp
from interp import head_inputs as HI
from interp import kvconfig
from interp.graphs import GraphedRun
from interp.input_gradients import input_gradients
from interp.interventions import GatedStreaming, StreamingAttention
from interp.kernels import attention_with_stats, normalize_stats, stats_from_pattern
from helpers import raises_clear_error


@pytest.fixture(scope="module")
def x():
    m = interp.load("toy-induction")
    g = torch.Generator().manual_seed(0)
    qkv = tuple(torch.randn(1, 2, 4, 16, generator=g) for _ in range(3))
    return SimpleNamespace(m=m, qkv=qkv, ids=torch.randint(1, 60, (2, 12), generator=g),
                           kv=kvconfig.config_from_scores(m, torch.rand(m.cfg.n_layers, m.cfg.n_heads, generator=g)))


def _metric(logits):
    return logits[:, -1, 0].sum()


# ------------------------------------------------------------------------------------------------ kernel API
@pytest.mark.parametrize("scale", [1e300, 1e39, 1e-300, 1e-40, np.float64(1e300), 10**40, 10**400],
                         ids=["1e300", "1e39", "1e-300", "1e-40", "numpy-1e300", "int-10**40", "int-10**400"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_scale_outside_float32_is_refused(x, scale, backend):
    """scale beyond float32 (inf or 0 in the kernels) gave NaN outputs/statistics (or NaN entropy on Triton) with no
    error; an int past float's range raised OverflowError from math.isfinite."""
    raises_clear_error(ValueError,
                       r"^scale must lie between 1\.18e-38 and 2\.36e\+38 \(the kernels compute in float32\)",
                       lambda: attention_with_stats(*x.qkv, scale=scale, backend=backend))


@pytest.mark.parametrize("scale", [1e30, 1e-30, 2, np.float32(0.25)])
def test_scales_inside_float32_still_run(x, scale):
    out, st = attention_with_stats(*x.qkv, scale=scale, backend="reference")
    assert out.shape == (1, 2, 4, 16) and st.lse is not None


@pytest.mark.parametrize("stats", [b"lse", bytearray(b"entropy")])
def test_stats_as_bytes_is_named(x, stats):
    """stats=b"lse" was iterated byte by byte: "stats must contain strings, got int"."""
    match = r"^stats must be a string or an iterable of strings, got byte(s|array) b'\w+'; decode it first"
    raises_clear_error(TypeError, match, normalize_stats, stats)
    raises_clear_error(TypeError, match, lambda: attention_with_stats(*x.qkv, stats=stats, backend="reference"))
    raises_clear_error(TypeError, match, lambda: stats_from_pattern(torch.full((1, 1, 4, 4), 0.25), stats=stats))
    raises_clear_error(TypeError, match, lambda: x.m.run_with_cache(x.ids, stats=stats))
    assert normalize_stats(["lse"]) == ("lse",)


# ------------------------------------------------------------------------------------------------ KV configs
def _peak_bytes(call):
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("edit, match", [
    # a list of 10^7 layer names, then a message naming every one (n_layers=10**9 hung, then ran out of memory)
    (dict(n_layers=10**7), r"lacks layer\(s\) 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 9999988 more: every layer "
                           r"0\.\.9999999 needs"),
    # list(range(n_heads)) for every layer (n_heads=10**9 took 30 GB and was killed)
    (dict(n_heads=10**7, n_kv_heads=1), r"layer 0: every head 0\.\.9999999 must be either full or streaming once"),
])
def test_damaged_kv_config_sizes_are_refused_without_building_them(x, edit, match):
    config = dict(copy.deepcopy(x.kv), **edit)
    err = []
    peak = _peak_bytes(lambda: err.append(raises_clear_error(ValueError, "^kvconfig.validate: KV config " + match,
                                                             kvconfig.validate, config)))
    assert peak < 2**20, peak
    assert len(str(err[0])) < 300


def test_kv_config_layer_keys_still_checked(x):
    layers = x.kv["layers"]
    for bad in ({"01": layers["1"], "0": layers["0"]}, {"1" * 5000: layers["1"], "0": layers["0"]},
                {1: layers["1"], "0": layers["0"]}):
        raises_clear_error(ValueError, "keys must be the layer numbers '0'..'1' written plainly", kvconfig.validate,
                           dict(x.kv, layers=bad))
    raises_clear_error(ValueError, r"lacks layer\(s\) 1: every layer 0\.\.1", kvconfig.validate,
                       dict(x.kv, layers={"0": layers["0"]}))
    raises_clear_error(ValueError, "layer 1: every head 0..3 must be either full or streaming once", kvconfig.validate,
                       dict(x.kv, layers={"0": layers["0"], "1": {"full": [0, 0, 1, 2], "streaming": []}}))
    kvconfig.validate(x.kv)


def test_streaming_windows_past_int64_mean_every_key(x):
    """config_from_scores(window=10**30) was accepted, then every run with its interventions raised OverflowError
    inside StreamingAttention (a Python int past int64 compared with a tensor); so did GatedStreaming's."""
    config = kvconfig.config_from_scores(x.m, torch.zeros(x.m.cfg.n_layers, x.m.cfg.n_heads), sink_tokens=10**30,
                                         window=10**30)
    with torch.no_grad():
        plain = x.m.run_with_hooks(x.ids)
        for ivs in (kvconfig.interventions(config, x.m),
                    [StreamingAttention(layer=1, sink_tokens=0, window=2**70)],
                    [GatedStreaming(layer=1, gate_logits=torch.zeros(4), sink_tokens=2**70, window=1)]):
            torch.testing.assert_close(x.m.run_with_hooks(x.ids, interventions=ivs), plain)
        # a real window still streams
        small = StreamingAttention(layer=1, sink_tokens=1, window=2)
        assert not torch.allclose(x.m.run_with_hooks(x.ids, interventions=[small]), plain)


# ------------------------------------------------------------------------------------------------ model runs
@pytest.mark.parametrize("run, what", [
    (lambda m, ids: m.run_with_cache(ids, pattern=True, backend="triton"), r"hook_pattern \(pattern=True"),
    (lambda m, ids: m.run_with_cache(ids, names=["blocks.1.attn.hook_pattern"], backend="triton"), "hook_pattern"),
    (lambda m, ids: m.run_with_hooks(ids, backend="triton", interventions=[StreamingAttention(layer=1, heads=[0])]),
     "StreamingAttention"),
    (lambda m, ids: m.run_with_hooks(ids, backend="triton",
                                     interventions=[GatedStreaming(layer=1, gate_logits=torch.zeros(4))]),
     "GatedStreaming"),
])
def test_probabilities_on_the_triton_backend_name_what_needs_them(x, run, what):
    """The kernels' "prob_hook needs the probabilities themselves" named an argument the caller never passed."""
    raises_clear_error(ValueError, rf"^layer \d: {what}.* needs the attention probabilities, which backend='triton' "
                                   r"never forms .* run with backend='auto' or 'reference'", run, x.m, x.ids)


def test_logits_at_far_outside_gives_a_short_message(x):
    """logits_at=range(10**6) on a 12-token prompt put every one of the million positions in the message."""
    e = raises_clear_error(ValueError, r"logits_at positions must lie in 0\.\.11 \(the prompt has 12 tokens\), got "
                                       r"99988 of 100000 outside, first \[12, 13, 14, 15, 16, 17, 18, 19\]$",
                           lambda: x.m.run_with_hooks(x.ids, logits_at=range(10**5)))
    assert len(str(e)) < 200
    raises_clear_error(ValueError, r"got \[0, 99\]$", lambda: x.m.run_with_hooks(x.ids, logits_at=[0, 99]))
    e = raises_clear_error(ValueError, "logits_at must be a non-empty 1-D list", lambda: x.m.run_with_hooks(
        x.ids, logits_at=[[0] * 1000] * 100))
    assert len(str(e)) < 200


def test_numpy_bools_are_flags(x):
    """checkpoint= and input_gradients' mlp= refused np.True_ ("must be True or False, got np.True_"), as other
    flags (interp.input_checks.bool_arg) no longer do."""
    _, _, grads = x.m.run_with_cache(x.ids, names=["blocks.0.hook_resid_post"], grad_of=_metric,
                                     checkpoint=np.True_)
    assert grads["blocks.0.hook_resid_post"].shape[:2] == (2, 12)
    _, g = input_gradients(x.m, x.ids, _metric, mlp=np.False_)
    assert not any(k[0] == "mlp" for k in g)
    raises_clear_error(TypeError, "^checkpoint must be True or False, got int 1",
                       lambda: x.m.run_with_hooks(x.ids, checkpoint=1))
    raises_clear_error(TypeError, "^input_gradients: mlp must be True or False, got str 'no'",
                       lambda: input_gradients(x.m, x.ids, _metric, mlp="no"))


def test_graphed_run_refuses_endless_warmups(x):
    """warmup=10**12 passed the checks: the capture would have run 10^12 warm-up forwards first."""
    raises_clear_error(ValueError, r"^GraphedRun: warmup must be at most 1000 forwards",
                       lambda: GraphedRun(x.m, x.ids, warmup=10**12))
    raises_clear_error(ValueError, "warmup must be >= 1", lambda: GraphedRun(x.m, x.ids, warmup=0))


# ------------------------------------------------------------------------------------------------ node helpers
def test_head_contributions_checks_the_scale():
    """A scale of the wrong shape raised IndexError ("too many indices") from inside the product."""
    z, w = torch.rand(1, 2, 4, 16), torch.rand(4, 16, 64)
    for scale in (torch.ones(7), torch.ones(1, 3, 64), [1.0], torch.ones(2, 2, 64)):
        raises_clear_error(ValueError, r"^head_contributions: scale must be None or the sandwich-norm scale "
                                       r"\[batch, pos, d_model\] = \[1, 2, 64\]", HI.head_contributions, z, scale, w)
    assert HI.head_contributions(z, torch.ones(1, 2, 64), w).shape == (1, 2, 4, 64)
    assert HI.head_contributions(z, torch.ones(1, 1, 1), w).shape == (1, 2, 4, 64)  # broadcasts, as before


def test_started_at_checks_the_residual(x):
    """A meta residual failed inside the first block ("Tensor on device meta is not on the expected device"); an
    integer one was converted silently (InputPatch's start_resid refuses both)."""
    d = x.m.cfg.d_model

    def run(resid):
        with HI.started_at(x.m, 1, resid), torch.no_grad():
            return x.m.run_with_hooks(x.ids)

    raises_clear_error(ValueError, "^started_at: resid is on the meta device", run,
                       torch.zeros(2, 12, d, device="meta"))
    raises_clear_error(TypeError, r"^started_at: resid must be a floating-point tensor \[batch, pos, d_model\], got "
                                  "torch.int64", run, torch.zeros(2, 12, d, dtype=torch.long))
    assert run(torch.zeros(2, 12, d)).shape == (2, 12, x.m.cfg.d_vocab)


def test_streaming_sizes_are_ints(x):
    """A float window was a ValueError "must be an int >= 1" (also for 2.5, which is >= 1), and a NumPy int was
    refused the same way."""
    run = lambda iv: x.m.run_with_hooks(x.ids, interventions=[iv])  # noqa: E731
    raises_clear_error(TypeError, r"^StreamingAttention.window must be an int, got float 2.5", run,
                       StreamingAttention(layer=1, window=2.5))
    raises_clear_error(ValueError, r"^StreamingAttention.window must be >= 1, got 0", run,
                       StreamingAttention(layer=1, window=0))
    raises_clear_error(ValueError, r"^StreamingAttention.sink_tokens must be >= 0, got -1", run,
                       GatedStreaming(layer=1, gate_logits=torch.zeros(4), sink_tokens=-1))
    with torch.no_grad():
        torch.testing.assert_close(run(StreamingAttention(layer=1, sink_tokens=np.int64(1), window=np.int64(3))),
                                   run(StreamingAttention(layer=1, sink_tokens=1, window=3)))


# --- after the sweep: one reader of a stats request (kernels.stats.stats_request) and NumPy spans everywhere ------


@pytest.mark.parametrize("stats", [{"lse": True, "entropy": False}, {"entropy": 1}])
def test_a_mapping_of_stats_is_refused_everywhere(stats):
    """A dict was read as its keys (its values ignored): {"entropy": False} asked for entropy."""
    q = torch.randn(1, 2, 5, 16)
    with pytest.raises(TypeError, match="got a dict .*pass the names wanted"):
        normalize_stats(stats)
    with pytest.raises(TypeError, match="got a dict"):
        attention_with_stats(q, q, q, stats=stats)
    with pytest.raises(TypeError, match="got a dict"):
        stats_from_pattern(torch.full((1, 2, 5, 5), 0.2), stats=stats)


def test_a_mapping_of_stats_is_refused_by_run_with_cache(x):
    with pytest.raises(TypeError, match="got a dict"):
        x.m.run_with_cache(x.ids, stats={"entropy": True})


def test_a_numpy_span_works_in_attention_with_stats_as_in_stats_from_pattern():
    q, k = torch.randn(2, 2, 9, 16), torch.randn(2, 1, 9, 16)
    _, want = attention_with_stats(q, k, k, causal=True, stats=["span_mass"], span=(2, 6), backend="reference")
    for span in (np.array([2, 6]), np.array([[2, 6], [2, 6]], dtype=np.int32), np.array([2, 6], dtype=np.uint8)):
        _, got = attention_with_stats(q, k, k, causal=True, stats=["span_mass"], span=span, backend="reference")
        torch.testing.assert_close(got.span_mass, want.span_mass)
    with pytest.raises(TypeError, match="span array must hold integer key positions, got dtype float64"):
        attention_with_stats(q, k, k, causal=True, stats=["span_mass"], span=np.array([2.0, 6.0]))
    with pytest.raises(ValueError, match=r"0 <= start <= end <= k_len \(9\)"):
        attention_with_stats(q, k, k, causal=True, stats=["span_mass"], span=np.array([6, 2]))


def test_a_generator_of_stats_is_still_read_once():
    q = torch.randn(1, 2, 5, 16)
    _, st = attention_with_stats(q, q, q, stats=(n for n in ["entropy", "max_prob"]), backend="reference")
    assert st.entropy is not None and st.max_prob is not None and st.key_mass is None


class _PassThroughOut(interp.Intervention):
    """An out-stage intervention that never asks for the probabilities."""
    stages = ("out",)

    def __init__(self, layer):
        self.layer = layer

    def out(self, out, call):
        return out


@pytest.mark.parametrize("ivs, kw, what", [
    ([StreamingAttention(layer=1, heads=[0]), _PassThroughOut(1)], {}, "StreamingAttention needs"),
    ([GatedStreaming(layer=1, gate_logits=torch.zeros(4)), _PassThroughOut(1)], {}, "GatedStreaming needs"),
    ([StreamingAttention(layer=0, heads=[0])], dict(pattern=True), r"hook_pattern \(pattern=True or a hook there\) "
                                                                   "and StreamingAttention need"),
])
def test_probabilities_error_names_only_what_asked_for_them(x, ivs, kw, what):
    """Every out-stage intervention at the layer was named as needing the probabilities ("StreamingAttention and
    _PassThroughOut needs ..."), though only the one calling call.attend(prob_hook=...) does."""
    raises_clear_error(ValueError, rf"^layer \d: {what} the attention probabilities, which backend='triton'",
                       lambda: x.m.run_with_cache(x.ids, backend="triton", interventions=ivs, **kw))
