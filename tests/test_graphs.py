"""interp.graphs.GraphedRun: a forward with statistics captured as a CUDA graph and replayed (GPU), and its input
checks (everywhere)."""

import pytest
import torch

import interp
from interp.graphs import GraphedRun


@pytest.fixture(scope="module")
def toy():
    return interp.load("toy-induction")


def test_graphed_run_needs_a_cuda_model_and_token_ids(toy):
    ids = torch.randint(1, 64, (2, 20))
    with pytest.raises(TypeError, match="needs an interp HookedModel"):
        GraphedRun(toy.model, ids)
    with pytest.raises(ValueError, match="span_mass"):  # options are checked before the device
        GraphedRun(toy, ids, stats=["span_mass"])
    with pytest.raises(ValueError, match="nothing to capture"):
        GraphedRun(toy, ids, stats=None)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a model on a CUDA device"):
            GraphedRun(toy, ids)
        with pytest.raises(ValueError, match="needs a model on a CUDA device"):  # names=None: none, as elsewhere
            GraphedRun(toy, ids, names=None)
    # round 22's sweep: names=None raised "'NoneType' object is not iterable", names=[5] a TypeError from sorted()
    for kw, err, match in [(dict(names=[5]), TypeError, "hook names are strings, got int"),
                           (dict(names=["blocks.0.attn.hook_zz"]), ValueError, "hook_zz"),
                           (dict(names=5), TypeError, "names must be a hook name or a list"),
                           (dict(sink_tokens=-1), ValueError, "sink_tokens must be >= 0"),
                           (dict(local_window=0), ValueError, "local_window must be >= 1"),
                           (dict(warmup=0), ValueError, "warmup must be >= 1")]:
        with pytest.raises(err, match=match):
            GraphedRun(toy, ids, **kw)


@pytest.mark.gpu
def test_graphed_run_replays_what_run_with_cache_computes(device):
    model = interp.load("toy-induction", device=device)
    g = torch.Generator().manual_seed(0)
    ids, other = (torch.randint(1, 64, (2, 40), generator=g).to(device) for _ in range(2))
    for bad, err, match in [(ids.float(), TypeError, "integer tensor"),
                            (ids[0], ValueError, r"must be 2-D of token ids, \[batch, pos\]"),
                            (ids.cpu(), ValueError, "tokens are on cpu"),
                            (ids * 0 + 64, ValueError, "outside the vocabulary")]:
        with pytest.raises(err, match=match):
            GraphedRun(model, bad)
    with pytest.raises(ValueError, match="span_mass"):
        GraphedRun(model, ids, stats=["span_mass"])
    run = GraphedRun(model, ids, stats=["key_mean", "entropy"], layers=[1], names=["blocks.0.hook_resid_post"])
    for x in (other, ids):
        want_logits, want = model.run_with_cache(x, stats=["key_mean", "entropy"], layers=[1],
                                                 names=["blocks.0.hook_resid_post"])
        logits, cache = run(x)
        torch.testing.assert_close(logits, want_logits)
        assert set(cache) == set(want)
        for name, t in want.items():
            torch.testing.assert_close(cache[name], t, equal_nan=True)
    with pytest.raises(ValueError, match="captured shape"):
        run(ids[:, :10])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        run(ids * 0 + 64)
