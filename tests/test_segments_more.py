"""`segment_ids`, more: key statistics asked for alone on the Triton pieces, inference mode (whose tensors keep no
version counter), a caller's ids edited where no version counter sees it, and the checks of awkward ids (dtypes,
meta, uint64 beyond int64) on both entry points."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_segments import _case, _close, _dense, _ids, attend, lse_stats

from interp.kernels import attention_with_stats, segments, stats_from_lse


def _rows_unlike():
    return _case((2, 4, 2, 9, [[3, 6], [6, 3]], {}), seed=11)


@pytest.mark.parametrize("stats", [["key_mass"], ["key_count"], ["key_mean"], ["lse", "key_count"], "key"])
def test_key_statistics_asked_for_alone(stats):
    """The pieces are asked for key_mass and key_count whenever any key statistic is (put in place, then key_mean
    made of them): once a TypeError for key_mass or key_count alone."""
    q, k, v, ids, kw, dense = _rows_unlike()
    _, want = _dense(q, k, v, ids, **dense)
    for backend in ("reference", "triton"):
        _, st = attend(q, k, v, segment_ids=ids, stats=stats, backend=backend, **kw)
        _, plain = attend(q, k, v, stats=stats, backend=backend, **kw)
        assert st.requested() == plain.requested()
        for name in st.requested():
            _close(st[name], want[name], name)
    lse = attend(q, k, v, segment_ids=ids, stats=["lse"], backend="triton", **kw)[1].lse
    again = lse_stats(q, k, lse, segment_ids=ids, stats=stats, **kw)
    for name in again.requested():
        _close(again[name], want[name], name)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_inference_mode(backend):
    """Inference tensors keep no version counter: asking for it was a RuntimeError."""
    q, k, v, ids, kw, dense = _rows_unlike()
    want_out, want = _dense(q, k, v, ids, **dense)
    with torch.inference_mode():
        out, st = attend(q, k, v, segment_ids=ids.clone(), backend=backend, **kw)
    _close(out, want_out, "output")
    _close(st.lse, want["lse"], "lse")


def test_llama4_chunked_attention_in_inference_mode():
    from test_hf_features import _tiny_llama4

    import interp

    hf = interp.load(_tiny_llama4(), backend="reference").model
    ids = torch.randint(1, 50, (2, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = hf(input_ids=ids, use_cache=False).logits
    with torch.inference_mode():
        got = hf(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("edit", ["data", "numpy"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_a_callers_ids_edited_without_a_version_bump_are_seen(edit, backend):
    """A caller's ids are read on every call: an edit through .data or a NumPy array sharing the memory (no version
    counter moves) once gave the pieces (and the check) of the ids as they were."""
    q, k, v, _, _, _ = _case((1, 2, 2, 6, [[3, 3]], {}), seed=2)
    arr = np.array([[0, 0, 0, 1, 1, 1]])
    ids = torch.from_numpy(arr) if edit == "numpy" else torch.tensor(arr)
    attend(q, k, v, segment_ids=ids, backend=backend, stats="none")
    if edit == "numpy":
        arr[0, 3:] = 0
    else:
        ids.data[0, 3:] = 0
    out, _ = attend(q, k, v, segment_ids=ids, backend=backend, stats="none")
    torch.testing.assert_close(out, attend(q, k, v, backend=backend, stats="none")[0])
    ids.data[0, 4:] = -1  # decreasing now: refused, not read from an earlier check
    with pytest.raises(ValueError, match="must not decrease"):
        attend(q, k, v, segment_ids=ids, backend=backend, stats="none")


def test_ids_made_by_the_mask_function_are_marked():
    from transformers import masking_utils as mu

    from interp.attention import interp_mask, segments_of

    chunked = mu.chunked_causal_mask_function(4, torch.tensor([0]))
    ids, _ = segments_of(interp_mask(1, 10, 10, mask_function=chunked))
    assert segments.weak_tag_of(segments._made, ids, False)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_every_integer_dtype_is_read_as_int64(dtype):
    q, k, v, ids, kw, _ = _rows_unlike()
    for backend in ("reference", "triton"):
        want = attend(q, k, v, segment_ids=ids, backend=backend, **kw)
        got = attend(q, k, v, segment_ids=ids.to(dtype), backend=backend, **kw)
        assert torch.equal(got[0], want[0])
        for name, t in want[1].items():
            assert torch.equal(got[1][name].nan_to_num(-1), t.nan_to_num(-1)), name


def _bad_ids():
    ids = _ids([[3, 3], [2, 4]])
    cases = [
        (ids.to("meta"), ValueError, "segment_ids is on the meta device"),
        (ids.numpy(), TypeError, "segment_ids must be an integer tensor"),
        (ids.tolist(), TypeError, "segment_ids must be an integer tensor"),
        (ids[0], ValueError, r"segment_ids must be \[batch, k_len\] = \[2, 6\]"),
        (ids[None], ValueError, r"segment_ids must be \[batch, k_len\] = \[2, 6\]"),
        (ids.to(torch.complex64), TypeError, "segment_ids must hold integers"),
        (torch.tensor([[0, 0, 1, 1, 0, 0]] * 2), ValueError, "segment_ids must not decrease"),
    ]
    if hasattr(torch, "uint64"):  # beyond int64: would wrap around to negative ids
        cases.append((ids.to(torch.uint64) * 2 ** 63, ValueError, "segment_ids must fit in int64"))
    return cases


@pytest.mark.parametrize("entry", ["reference", "triton", "stats_from_lse"])
@pytest.mark.parametrize("bad,err,match", _bad_ids())
def test_bad_segment_ids_are_refused_on_every_entry_point(entry, bad, err, match):
    q, k, v, _, _, _ = _case((2, 2, 2, 6, [[6], [6]], {}))
    with pytest.raises(err, match=match):
        if entry == "stats_from_lse":
            stats_from_lse(q, k, torch.zeros(2, 2, 6), segment_ids=bad)
        else:
            attention_with_stats(q, k, v, segment_ids=bad, backend=entry)


def test_cached_placeholders_made_in_inference_mode_are_normal_tensors():
    """The launcher's placeholder arguments and the cached span rows are made once and kept: made inside
    torch.inference_mode() they were inference tensors, and the autotuner's zeroing of KMASS (a placeholder when no
    key statistic is asked for) then failed on the GPU for every later call outside inference mode
    ("Inplace update to inference tensor outside InferenceMode")."""
    from interp.kernels import checks, launcher

    launcher._dummies.clear()
    checks._span_tensor.cache_clear()
    with torch.inference_mode():
        dummy = launcher._dummy(torch.device("cpu"), torch.int64)
        span = checks._span_tensor(1, 3, 2, torch.device("cpu"))
    assert not dummy.is_inference() and not span.is_inference()
    dummy.zero_()  # outside inference mode, as the autotuner does
    q, k, v, _, _, _ = _case((2, 2, 2, 6, [[6], [6]], {}))
    with torch.inference_mode():
        attend(q, k, v, stats="query", span=(1, 3), backend="triton")
    out, st = attend(q, k, v, stats="query", span=(1, 3), backend="triton")
    assert torch.isfinite(st.span_mass).all()


@pytest.mark.parametrize("option", ["key_bias", "softcap"])
def test_pieces_do_not_check_the_bias_again(option, monkeypatch):
    """The whole call checks its key bias (a NaN test: one device sync on a GPU); each segment's piece gets a slice
    of the checked bias and skips the test (`checks.mark_checked_bias`), with a softcap's zero bias too."""
    q, k, v, ids, kw, dense = _case((2, 4, 2, 9, [[3, 6], [6, 3]], {"bias": option == "key_bias"}), seed=3)
    if option == "softcap":
        kw["softcap"] = 5.0
    tests = []
    isnan = torch.isnan
    monkeypatch.setattr(torch, "isnan", lambda t: tests.append(tuple(t.shape)) or isnan(t))
    out, st = attend(q, k, v, segment_ids=ids, stats="all", backend="triton", **kw)
    assert len(tests) == (1 if option == "key_bias" else 0), tests  # the whole call's, none per piece
    monkeypatch.setattr(torch, "isnan", isnan)
    if option == "key_bias":
        want_out, want = _dense(q, k, v, ids, **dense)
        _close(out, want_out, "output")
        for name in ("entropy", "key_mass", "max_prob"):
            _close(st[name], want[name], name)
