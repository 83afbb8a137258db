"""Bad input to the public analyses: a ValueError/TypeError that names the argument and what is allowed, raised
before any work (never a deep torch traceback, an AttributeError, or a silent empty/NaN answer).

One row per case; grow the table with every case found."""

import pytest
import torch

from interp import HookedModel
from interp import analyses as A
from interp.analyses import calibration, duo, retrieval
from helpers import raises_clear_error, tiny_llama

VOCAB, CTX = 100, 256


@pytest.fixture(scope="module")
def m():
    return HookedModel(tiny_llama(vocab=VOCAB, n_ctx=CTX))


def toks(b=1, n=12):
    return torch.randint(1, VOCAB, (b, n), generator=torch.Generator().manual_seed(0))


META = torch.zeros(1, 12, dtype=torch.long, device="meta")
ALPHA = torch.rand(2, 4)
PATTERN = torch.rand(1, 2, 9, 9)
STAT = torch.rand(1, 2, 9)

CASES = [
    # --- sinks
    ("sink_metric str", lambda m: A.sink_metric("abc"), TypeError, r"sink_metric: alpha_first must be a tensor"),
    ("sink_metric list", lambda m: A.sink_metric([0.5, 0.1]), TypeError, r"alpha_first must be a tensor"),
    ("sink_metric int tensor", lambda m: A.sink_metric(torch.ones(2, 2, dtype=torch.long)), TypeError,
     r"alpha_first must be a floating-point tensor"),
    ("sink_metric empty", lambda m: A.sink_metric(torch.zeros(0, 4)), ValueError, r"alpha_first is empty"),
    ("sink_metric meta", lambda m: A.sink_metric(torch.zeros(2, 4, device="meta")), ValueError,
     r"alpha_first is on the meta device"),
    ("sink_metric eps 1.5", lambda m: A.sink_metric(ALPHA, 1.5), ValueError, r"eps must be a finite number in \(0, 1\)"),
    ("sink_metric eps 0", lambda m: A.sink_metric(ALPHA, 0), ValueError, r"eps must be a finite number in \(0, 1\)"),
    ("sink_metric eps nan", lambda m: A.sink_metric(ALPHA, float("nan")), ValueError, r"eps must be a finite"),
    ("sink_metric eps str", lambda m: A.sink_metric(ALPHA, "0.3"), TypeError, r"eps must be a number"),
    ("first_token_alpha None model", lambda m: A.first_token_alpha(None, toks()), TypeError,
     r"first_token_alpha: model must be an interp HookedModel"),
    ("first_token_alpha float tokens", lambda m: A.first_token_alpha(m, torch.rand(1, 5)), TypeError,
     r"tokens must be an integer tensor of token ids"),
    ("first_token_alpha 3-D tokens", lambda m: A.first_token_alpha(m, torch.ones(1, 2, 3, dtype=torch.long)),
     ValueError, r"tokens must be 1-D or 2-D"),
    ("first_token_alpha empty tokens", lambda m: A.first_token_alpha(m, torch.zeros(1, 0, dtype=torch.long)),
     ValueError, r"tokens is empty"),
    ("first_token_alpha meta tokens", lambda m: A.first_token_alpha(m, META), ValueError,
     r"tokens is on the meta device"),
    ("first_token_alpha ids outside vocab", lambda m: A.first_token_alpha(m, torch.tensor([[1, 2, 500]])),
     ValueError, r"outside the vocabulary \[0, 100\)"),
    ("first_token_alpha too long", lambda m: A.first_token_alpha(m, torch.ones(1, CTX + 1, dtype=torch.long)),
     ValueError, r"maximum context is 256"),
    ("first_token_alpha dict tokens", lambda m: A.first_token_alpha(m, {"a": 1}), TypeError,
     r"tokens must be an integer tensor"),
    ("first_token_alpha empty list", lambda m: A.first_token_alpha(m, []), ValueError, r"tokens is empty"),
    ("first_token_alpha layer 9", lambda m: A.first_token_alpha(m, toks(), layers=[9]), ValueError,
     r"layer 9 out of range; the model has layers 0\.\.1"),
    ("hidden_sinks None model", lambda m: A.hidden_sinks(None, toks()), TypeError,
     r"hidden_sinks: model must be an interp HookedModel"),
    ("hidden_sinks None tokens", lambda m: A.hidden_sinks(m, None), TypeError, r"hidden_sinks: tokens must be"),
    ("hidden_sinks threshold 1", lambda m: A.hidden_sinks(m, toks(), threshold=1.0), ValueError,
     r"threshold must be a finite number in \[0, 1\)"),
    ("hidden_sinks min_queries 0", lambda m: A.hidden_sinks(m, toks(), min_queries=0), ValueError,
     r"min_queries must be >= 1"),
    ("dormant_heads list", lambda m: A.dormant_heads(m, [toks()]), TypeError,
     r"domains must be a non-empty dict of name -> tokens"),
    ("dormant_heads empty", lambda m: A.dormant_heads(m, {}), TypeError, r"domains must be a non-empty dict"),
    ("dormant_heads float tokens", lambda m: A.dormant_heads(m, {"x": torch.rand(1, 4)}), TypeError,
     r"domains\['x'\] must be an integer tensor"),
    ("dormant_heads sink_threshold", lambda m: A.dormant_heads(m, {"x": toks()}, sink_threshold=2), ValueError,
     r"sink_threshold must be a finite number in \[0, 1\)"),
    ("dormant_by_query None model", lambda m: A.dormant_by_query(None, toks(), {"a": torch.ones(1, 12, dtype=bool)}),
     TypeError, r"model must be an interp HookedModel"),
    ("dormant_by_query meta tokens", lambda m: A.dormant_by_query(m, META, {"a": torch.ones(1, 12, dtype=bool)}),
     ValueError, r"tokens is on the meta device"),
    ("dormant_by_query meta mask", lambda m: A.dormant_by_query(
        m, toks(), {"a": torch.ones(1, 12, dtype=bool, device="meta")}), ValueError,
     r"query_masks\['a'\] is on the meta device"),
    ("value_drains position -1", lambda m: A.value_drains(m, toks(), position=-1), ValueError,
     r"position must be between 0 and 11"),
    ("value_drains position 12", lambda m: A.value_drains(m, toks(), position=12), ValueError,
     r"position must be between 0 and 11"),
    ("value_drains one token", lambda m: A.value_drains(m, toks(n=1)), ValueError, r"one position"),
    ("value_drains position str", lambda m: A.value_drains(m, toks(), position="0"), TypeError,
     r"position must be an int"),
    ("massive_activations top_dims 0", lambda m: A.massive_activations(m, toks(), top_dims=0), ValueError,
     r"top_dims must be between 1 and 64"),
    ("massive_activations None", lambda m: A.massive_activations(m, None), TypeError, r"tokens must be"),
    # --- probes
    ("text_tokens n_tokens -5", lambda m: A.text_tokens(m, n_tokens=-5), ValueError,
     r"text_tokens: n_tokens must be >= 1, got -5"),
    ("text_tokens n_tokens 0", lambda m: A.text_tokens(m, n_tokens=0), ValueError, r"n_tokens must be >= 1"),
    ("text_tokens n_tokens float", lambda m: A.text_tokens(m, n_tokens=10.5), TypeError,
     r"n_tokens must be an int or None"),
    ("text_tokens domain", lambda m: A.text_tokens(m, domain=3), ValueError, r"unknown text domain 3; available"),
    ("text_tokens None model", lambda m: A.text_tokens(None), TypeError, r"model must be an interp HookedModel"),
    ("text_tokens prepend_bos str", lambda m: A.text_tokens(m, prepend_bos="yes"), TypeError,
     r"prepend_bos must be True or False"),
    ("repeated_tokens half 0", lambda m: A.repeated_tokens(m, half=0), ValueError, r"half must be >= 1"),
    ("repeated_tokens n_prompts 0", lambda m: A.repeated_tokens(m, n_prompts=0), ValueError,
     r"n_prompts must be >= 1"),
    ("random_tokens n_tokens -1", lambda m: A.random_tokens(m, n_tokens=-1), ValueError,
     r"n_tokens must be between 2 and 256"),
    ("random_tokens n_tokens too long", lambda m: A.random_tokens(m, n_tokens=CTX + 1), ValueError,
     r"n_tokens must be between 2 and 256"),
    ("random_tokens seed str", lambda m: A.random_tokens(m, seed="x"), TypeError, r"seed must be an int"),
    # --- head patterns
    ("head_pattern_scores half -1", lambda m: A.head_pattern_scores(m, half=-1), ValueError,
     r"head_pattern_scores: half must be between 2 and 127, got -1"),
    ("head_pattern_scores half 1", lambda m: A.head_pattern_scores(m, half=1), ValueError, r"half must be between 2"),
    ("head_pattern_scores half too long", lambda m: A.head_pattern_scores(m, half=200), ValueError,
     r"half must be between 2 and 127"),
    ("head_pattern_scores None", lambda m: A.head_pattern_scores(None), TypeError, r"model must be an interp"),
    ("head_pattern_scores n_prompts 0", lambda m: A.head_pattern_scores(m, n_prompts=0), ValueError,
     r"n_prompts must be >= 1"),
    ("previous_token_score 3-D", lambda m: A.previous_token_score(torch.rand(2, 9, 9)), ValueError,
     r"pattern must be 4-D \[batch, head, query_pos, key_pos\]"),
    ("previous_token_score not square", lambda m: A.previous_token_score(torch.rand(1, 2, 3, 9)), ValueError,
     r"pattern must be square"),
    ("previous_token_score str", lambda m: A.previous_token_score("p"), TypeError, r"pattern must be a tensor"),
    ("previous_token_score too short", lambda m: A.previous_token_score(torch.rand(1, 1, 2, 2)), ValueError,
     r"no query with a previous token"),
    ("induction_score period 0", lambda m: A.induction_score(PATTERN, 0), ValueError, r"period must be >= 2"),
    ("induction_score period too long", lambda m: A.induction_score(PATTERN, 8), ValueError,
     r"period 8 leaves no second copy in a pattern of 9 positions"),
    ("duplicate_token_score period float", lambda m: A.duplicate_token_score(PATTERN, 2.0), TypeError,
     r"period must be an int"),
    ("local_score shapes", lambda m: A.local_score(STAT, torch.rand(1, 2, 8), 4, 64), ValueError,
     r"sink_mass \(1, 2, 9\) and local_mass \(1, 2, 8\) must have one shape"),
    ("local_score window 0", lambda m: A.local_score(STAT, STAT, 4, 0), ValueError, r"local_window must be >= 1"),
    ("diffuseness list", lambda m: A.diffuseness([0.1, 0.2]), TypeError, r"diffuseness: entropy must be a tensor"),
    ("long_context_scores sink_tokens -1", lambda m: A.long_context_scores(m, toks(), sink_tokens=-1), ValueError,
     r"sink_tokens must be >= 0"),
    ("long_context_scores meta", lambda m: A.long_context_scores(m, META), ValueError, r"meta device"),
    ("long_context_scores None model", lambda m: A.long_context_scores(None, toks()), TypeError,
     r"long_context_scores: model must be"),
    # --- shapes
    ("shape_scores top_frac 0", lambda m: A.shape_scores(m, toks(), top_frac=0), ValueError,
     r"top_frac must be a finite number in \(0, 1\]"),
    ("shape_scores tokens str list", lambda m: A.shape_scores(m, 42), TypeError, r"tokens must be"),
    ("shape_labels list", lambda m: A.shape_labels([[0.1]]), TypeError,
     r"scores must be a dict with 'a_shape_score' and 'vertical_score'"),
    ("shape_labels shapes", lambda m: A.shape_labels({"a_shape_score": torch.zeros(2, 2),
                                                      "vertical_score": torch.zeros(2, 3)}), ValueError,
     r"differ in shape"),
    ("vertical_share one key", lambda m: A.vertical_share(torch.ones(1, 1, 1), 1), ValueError,
     r"at least 2 keys"),
    # --- ACT calibration
    ("act_calibrate beta str", lambda m: calibration.act_calibrate(m, toks(), toks(), beta="x"), TypeError,
     r"beta must be a number"),
    ("act_calibrate beta 2", lambda m: calibration.act_calibrate(m, toks(), toks(), beta=2.0), ValueError,
     r"beta must be a finite number in \[0, 1\]"),
    ("act_calibrate text", lambda m: calibration.act_calibrate(m, "some text", toks()), TypeError,
     r"calib must be an integer tensor of token ids"),
    ("act_calibrate batch", lambda m: calibration.act_calibrate(m, toks(b=2), toks()), ValueError,
     r"calib must be one prompt"),
    ("act_calibrate one token", lambda m: calibration.act_calibrate(m, toks(), toks(n=1)), ValueError,
     r"heldout needs at least 2 tokens"),
    ("act_calibrate max_heads 0", lambda m: calibration.act_calibrate(m, toks(), toks(), max_heads=0), ValueError,
     r"max_heads must be >= 1"),
    ("act_calibrate None", lambda m: calibration.act_calibrate(None, toks(), toks()), TypeError,
     r"act_calibrate: model must be"),
    ("hidden_sink_positions None", lambda m: calibration.hidden_sink_positions(None, toks()), TypeError,
     r"model must be an interp HookedModel"),
    # --- retrieval heads
    ("make_trials None", lambda m: retrieval.make_trials(None), TypeError, r"make_trials: model must be"),
    ("make_trials contexts str", lambda m: retrieval.make_trials(m, contexts="64"), TypeError,
     r"contexts must be a list of numbers"),
    ("make_trials contexts empty", lambda m: retrieval.make_trials(m, contexts=()), ValueError, r"contexts is empty"),
    ("make_trials context 0", lambda m: retrieval.make_trials(m, contexts=(0,)), ValueError,
     r"contexts\[\] must be >= 1"),
    ("make_trials context float", lambda m: retrieval.make_trials(m, contexts=(64.5,)), TypeError,
     r"contexts\[\] must be an int"),
    ("make_trials context too long", lambda m: retrieval.make_trials(m, contexts=(CTX + 1,)), ValueError,
     r"exceeds the model's maximum context 256"),
    ("make_trials depth 1.5", lambda m: retrieval.make_trials(m, contexts=(64,), depths=(1.5,)), ValueError,
     r"depths\[\] must be a finite number in \[0, 1\]"),
    ("make_trials depth str", lambda m: retrieval.make_trials(m, contexts=(64,), depths=("a",)), TypeError,
     r"depths\[\] must be a number"),
    ("retrieval_scores empty", lambda m: retrieval.retrieval_scores(m, []), TypeError,
     r"trials must be a non-empty list of Trial"),
    ("needle_accuracy empty", lambda m: retrieval.needle_accuracy(m, []), TypeError,
     r"trials must be a non-empty list of Trial"),
    ("needle_accuracy tensors", lambda m: retrieval.needle_accuracy(m, [toks()]), TypeError,
     r"trials must be a non-empty list of Trial"),
    ("masking_experiment scores shape", lambda m: retrieval.masking_experiment(
        m, retrieval.make_trials(m, contexts=(32,), depths=(0.5,)), torch.zeros(3, 3), k=2), ValueError,
     r"scores must be \[layer, head\] = \[2, 4\]"),
    ("masking_experiment k too big", lambda m: retrieval.masking_experiment(
        m, retrieval.make_trials(m, contexts=(32,), depths=(0.5,)), torch.zeros(2, 4), k=8), ValueError,
     r"k must be a positive int \(heads to mask\) below the 8 heads"),
    ("decode_with_argmax tensor", lambda m: retrieval.decode_with_argmax(m, toks()), TypeError,
     r"trial must be a Trial"),
    # --- DuoAttention gates
    ("train_gates None", lambda m: duo.train_gates(None), TypeError, r"train_gates: model must be"),
    ("train_gates steps 0", lambda m: duo.train_gates(m, steps=0), ValueError, r"steps must be >= 1"),
    ("train_gates lr 0", lambda m: duo.train_gates(m, lr=0), ValueError, r"lr must be a finite number in \(0, inf\)"),
    ("train_gates context too long", lambda m: duo.train_gates(m, context=CTX + 1), ValueError,
     r"context must be between 1 and 256"),
    ("head_scores n_heads", lambda m: duo.DuoResult(torch.ones(2, 2), []).head_scores(3), ValueError,
     r"n_heads=3 is not a multiple of the 2 KV heads"),
]


@pytest.mark.parametrize("call, err, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(m, call, err, match):
    raises_clear_error(err, match, call, m)


def test_meta_device_model_is_refused():
    meta = HookedModel(tiny_llama(vocab=VOCAB, n_ctx=CTX).to("meta"))
    with pytest.raises(ValueError, match=r"first_token_alpha: the model's weights are on the meta device"):
        A.first_token_alpha(meta, toks())
    with pytest.raises(ValueError, match=r"the model's weights are on the meta device"):
        A.head_pattern_scores(meta)


def test_good_input_still_runs(m):
    """The checks let the ordinary calls through (text_tokens needs a tokenizer, so that one is checked elsewhere)."""
    alpha = A.first_token_alpha(m, toks(2, 16))
    assert alpha.shape == (2, 4) and 0 <= A.sink_metric(alpha, 0.3) <= 1
    assert A.value_drains(m, toks(), position=3).shape == (2, 2)
    assert A.random_tokens(m, n_tokens=2, n_prompts=1).shape[-1] == 2
    assert len(retrieval.make_trials(m, contexts=32, depths=0.5)) == 1


def test_meta_tokens_are_refused(m):
    from interp.tokens import Tokens

    ids = torch.zeros(1, 4, dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match="meta device"):
        m(ids)
    with pytest.raises(ValueError, match="meta device"):
        m.run_with_hooks(Tokens(ids, None, [4]))


def test_meta_attention_inputs_are_refused():
    from interp.kernels import attention_with_stats

    q = torch.zeros(1, 2, 4, 16, device="meta")
    for backend in ("reference", "auto"):
        with pytest.raises(ValueError, match="meta device"):
            attention_with_stats(q, q, q, backend=backend)
