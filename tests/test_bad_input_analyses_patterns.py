"""Bad input to the pattern / shape / probe / retrieval / sink / DuoAttention analyses and to logit_attribution: a
clear ValueError/TypeError naming the function and the argument, raised before any work (never a silent answer
computed from garbage, a hang, or a deep library traceback)."""

import numpy as np
import pytest
import torch

import interp
from interp import analyses as A
from interp.analyses import duo, retrieval, shapes, sinks
from interp.readout import logit_attribution


@pytest.fixture(scope="module")
def m():
    return interp.load("toy-induction")


@pytest.fixture(scope="module")
def needle():
    return interp.load("toy-needle")


@pytest.fixture(scope="module")
def trials(needle):
    return retrieval.make_trials(needle, contexts=(64,), depths=(0.5,))


def toks(n=40, b=2):
    return torch.randint(1, 64, (b, n), generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------- 1. inputs too short for the local score
@pytest.mark.parametrize("call", [
    lambda m: A.long_context_scores(m, toks(10)),
    lambda m: A.long_context_scores(m, toks(40), sink_tokens=10**12),
    lambda m: A.shape_scores(m, toks(40)),
    lambda m: A.shape_scores(m, toks(68)),
], ids=["long_context 10", "long_context huge sink", "shape_scores 40", "shape_scores 68"])
def test_short_input_is_refused_not_scored_local(m, call):
    with pytest.raises(ValueError, match=r"(long_context_scores|shape_scores): tokens has \d+ positions; .*longer "
                                         r"than sink_tokens \+ local_window"):
        call(m)


def test_long_enough_input_still_scores(m):
    s = A.long_context_scores(m, toks(40), sink_tokens=1, local_window=8)
    assert torch.isfinite(s["local_score"]).all() and (s["local_score"] < 1).any()
    assert torch.isfinite(A.shape_scores(m, toks(40), sink_tokens=1, local_window=8)["a_shape_score"]).all()


def test_local_score_helper_refuses_short_and_0d():
    with pytest.raises(ValueError, match=r"local_score: sink_mass has 10 positions.*sink_tokens \+ local_window"):
        A.local_score(torch.rand(1, 2, 10), torch.rand(1, 2, 10), 4, 64)
    with pytest.raises(ValueError, match=r"local_score: valid_from must be below the 10"):
        A.local_score(torch.rand(1, 2, 10), torch.rand(1, 2, 10), 1, 2, valid_from=100)
    with pytest.raises(ValueError, match=r"local_score: sink_mass must have at least 1 dim"):
        A.local_score(torch.tensor(0.5), torch.tensor(0.5), 4, 4)
    with pytest.raises(ValueError, match=r"diffuseness: entropy must have at least 1 dim"):
        A.diffuseness(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"diffuseness: q_offset must be between 0 and"):
        A.diffuseness(torch.rand(1, 2, 10), q_offset=10**30)
    with pytest.raises(ValueError, match=r"vertical_share: key_mass needs at least 2 keys"):
        A.vertical_share(torch.tensor(1.0), 10)


# ------------------------------------------------------------------------------------- 2. huge prompt counts
def test_huge_n_prompts_refused_before_allocating(m):
    with pytest.raises(ValueError, match=r"head_pattern_scores: n_prompts=10000000 needs .* GiB .*n_prompts must be "
                                         r"at most \d+"):
        A.head_pattern_scores(m, n_prompts=10**7)
    for call in (lambda: A.random_tokens(m, n_tokens=64, n_prompts=10**12),
                 lambda: A.repeated_tokens(m, half=16, n_prompts=10**12)):
        with pytest.raises(ValueError, match=r"(random|repeated)_tokens: n_prompts=1000000000000 needs .* GiB for "
                                             r"\[n_prompts, \d+\] token ids.*n_prompts must be at most \d+"):
            call()


def test_seed_out_of_range(m):
    for call in (lambda: A.random_tokens(m, n_tokens=64, seed=2**64), lambda: A.repeated_tokens(m, half=16, seed=2**64),
                 lambda: A.head_pattern_scores(m, seed=2**64), lambda: A.random_tokens(m, n_tokens=64, seed=-1)):
        with pytest.raises(ValueError, match=r"(random_tokens|repeated_tokens|head_pattern_scores): seed must be "
                                             r"between 0 and 9223372036854775807"):
            call()


# ------------------------------------------------------------------------------------- 3. masking_experiment
def test_masking_experiment_bounds(needle, trials):
    good = torch.rand(2, 4)
    with pytest.raises(ValueError, match=r"masking_experiment: draws must be between 0 and 10000"):
        retrieval.masking_experiment(needle, trials, good, k=2, draws=10**9)
    with pytest.raises(ValueError, match=r"masking_experiment: scores are all NaN: no trial was answered"):
        retrieval.masking_experiment(needle, trials, torch.full((2, 4), float("nan")), k=2)
    with pytest.raises(ValueError, match=r"masking_experiment: k must be a positive int .*at most 4 .*got 7"):
        retrieval.masking_experiment(needle, trials, good, k=7)
    with pytest.raises(TypeError, match=r"masking_experiment: k must be an int"):
        retrieval.masking_experiment(needle, trials, good, k=2.0)
    partly = good.clone()
    partly[0, :] = float("nan")
    partly[1, 0] = float("nan")  # 3 of the 8 heads measured: a top-4 would take an unmeasured head
    with pytest.raises(ValueError, match=r"masking_experiment: k=4 is more than the 3 heads with a retrieval score "
                                         r"\(the other 5 are NaN"):
        retrieval.masking_experiment(needle, trials, partly, k=4, draws=0)
    df = retrieval.masking_experiment(needle, trials, partly, k=3, draws=0)  # the 3 measured heads
    assert sorted(df.heads[1].split()) == ["L1H1", "L1H2", "L1H3"]


def test_masking_experiment_accepts_numpy_k(needle, trials):
    df = retrieval.masking_experiment(needle, trials, torch.rand(2, 4), k=np.int64(2), draws=1)
    assert list(df.condition) == ["none", "top-2 retrieval", "random-2 #1"]
    assert len(df.heads[2].split()) == 2


# ------------------------------------------------------------------------------------------ 4. garbage results
def test_garbage_results_refused(m):
    with pytest.raises(ValueError, match=r"shape_labels: scores\['a_shape_score'\] holds NaN"):
        shapes.shape_labels({"a_shape_score": torch.full((1, 2), float("nan")), "vertical_score": torch.zeros(1, 2)})
    with pytest.raises(ValueError, match=r"dormant_heads: domains\['r'\] has 1 position; it needs at least 2"):
        sinks.dormant_heads(m, {"r": toks()[:, :1]})
    with pytest.raises(ValueError, match=r"massive_activations: tokens has 1 position; it needs at least 2"):
        sinks.massive_activations(m, toks()[:, :1])
    for bad in (float("inf"), -5.0, 3.0):
        with pytest.raises(ValueError, match=r"sink_metric: alpha_first must hold attention shares in \[0, 1\]"):
            sinks.sink_metric(torch.full((2, 4), bad))
    assert sinks.sink_metric(torch.tensor([[0.9, float("nan")]])) == 1.0


# ---------------------------------------------------------------------------------------- 5. logit_attribution
def test_logit_attribution_bad_directions(m):
    x = toks(8, 1)
    out = logit_attribution(m, x, torch.zeros(1, 8, dtype=torch.uint8))  # id 0 everywhere: valid
    assert out.heads.shape == (1, 8, 2, 4)
    with pytest.raises(TypeError, match=r"logit_attribution: directions must be an integer tensor"):
        logit_attribution(m, x, torch.zeros(1, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"logit_attribution: directions is on the meta device"):
        logit_attribution(m, x, torch.zeros(1, 8, dtype=torch.long, device="meta"))
    with pytest.raises(TypeError, match=r"logit_attribution: model must be"):
        logit_attribution(None, x, torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logit_attribution: directions hold token ids outside \[0, 64\)"):
        logit_attribution(m, x, torch.full((1, 8), 64))


# ---------------------------------------------------------------------------------------------- 6. train_gates
def test_train_gates_checks_up_front(needle):
    with pytest.raises(TypeError, match=r"train_gates: log must be None or a callable"):
        duo.train_gates(needle, steps=2, context=32, log="yes")
    with pytest.raises(ValueError, match=r"train_gates: l1 must be a finite number in \[0, 1e\+06\]"):
        duo.train_gates(needle, steps=2, context=32, l1=1e308)
    for c in (5, 9):
        with pytest.raises(ValueError, match=rf"train_gates: context={c} is too short.*at least 10"):
            duo.train_gates(needle, steps=2, context=c)
    res = duo.train_gates(needle, steps=2, context=10, log=lambda s: None)
    assert torch.isfinite(res.alpha).all()


# ------------------------------------------------------------------------------------ 7. retrieval helpers
def test_needle_accuracy_bad_trials(needle, trials):
    tr = trials[0]
    one_d = retrieval.Trial(tr.input_ids[0], tr.needle_span, tr.answer, tr.context, tr.depth)
    with pytest.raises(ValueError, match=r"needle_accuracy: trials\[0\]\.input_ids must be 2-D"):
        retrieval.needle_accuracy(needle, [one_d])
    big = retrieval.Trial(tr.input_ids, tr.needle_span, [999], tr.context, tr.depth)
    with pytest.raises(ValueError, match=r"needle_accuracy: trials\[0\]\.answer has ids outside the vocabulary"):
        retrieval.needle_accuracy(needle, [big])


def test_copy_hits_bad_input():
    arg = torch.zeros(2, 2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"copy_hits: prompt must be a non-empty list"):
        retrieval.copy_hits([1, 2], arg, [], (0, 0))
    with pytest.raises(TypeError, match=r"copy_hits: argmax must be an integer tensor"):
        retrieval.copy_hits([1, 2], arg.float(), [1, 2, 3], (0, 2))
    with pytest.raises(ValueError, match=r"copy_hits: argmax must be 3-D"):
        retrieval.copy_hits([1, 2], arg[0], [1, 2, 3], (0, 2))
    assert retrieval.copy_hits([1, 2], arg, [1, 2, 3], (0, 2)).shape == (2, 4)
