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
