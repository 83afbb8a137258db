"""Argument checks for public functions: each raises a ValueError/TypeError that names the argument, what it got and
what is allowed, before any work starts (no bare asserts, no deep torch tracebacks).

    n = int_arg("n_tokens", n_tokens, minimum=1, where="text_tokens")
    eps = real_arg("eps", eps, low=0, high=1, low_open=True, high_open=True, where="sink_metric")
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Collection

import numpy as np
import torch


def _where(where: str | None) -> str:
    return f"{where}: " if where else ""


def _show(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def int_array_as_list(value, name: str):
    """A 0-D/1-D integer tensor or numpy array -> a list of ints; anything else unchanged (checked by the caller)."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim <= 1 and (
            np.issubdtype(value.dtype, np.integer) if isinstance(value, np.ndarray)
            else not (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool)):
        if isinstance(value, torch.Tensor):
            not_meta(name, value)
        return value.reshape(-1).tolist()
    return value


def is_path(value) -> bool:
    """Whether `value` is a file system path: a str or an os.PathLike whose path is a str (not bytes, not a bool)."""
    return isinstance(value, (str, os.PathLike)) and isinstance(os.fspath(value), str)


def is_number_column(column) -> bool:
    """Whether a pandas column holds numbers: a numeric dtype that is not bool (NaN allowed)."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return is_numeric_dtype(column) and not is_bool_dtype(column)


def progress_arg(progress, where: str):
    """None or a callable taking a progress message (e.g. print), else a TypeError naming `where`."""
    if progress is not None and not callable(progress):
        raise TypeError(f"{where}: progress must be a callable taking a message (e.g. print) or None, got "
                        f"{_show(progress)}")
    return progress


def layer_range_error(layer, n_layers: int, who: str = "") -> ValueError:
    """The ValueError for a layer index outside 0..n_layers - 1; a negative one is said not to count from the end
    (TransformerLens reads -1 as the last layer, interp does not)."""
    last = (f" (negative indices do not count from the end here: the last layer is {n_layers - 1})"
            if layer < 0 else "")
    return ValueError(f"{who + ': ' if who else ''}layer {int(layer)} out of range; the model has layers "
                      f"0..{n_layers - 1}{last}")


def distinct_layers(layers, n_layers: int, who: str, allowed: str, acts: str) -> list[int]:
    """A non-empty collection of distinct int layers (NumPy ints too) in 0..n_layers - 1, as a list of ints. `who`
    names what gave them (a run's intervention, an option), `allowed` says what is allowed and `acts` what would act
    on them, for the messages: a missing layer would leave `acts` nowhere, a repeated one would apply it twice."""
    if isinstance(layers, (str, bytes, dict, torch.Tensor)) or not isinstance(layers, Collection):
        raise TypeError(f"{who} must be {allowed}, got {_show(layers)}")
    if len(layers) == 0:
        raise ValueError(f"{who} is empty, so {acts} would act nowhere; it must be {allowed}")
    out: list[int] = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
            raise TypeError(f"{who}: layers must be ints, got {layer!r} in {_show(layers)}")
        if not 0 <= layer < n_layers:
            raise layer_range_error(layer, n_layers, who)
        if int(layer) in out:
            raise ValueError(f"{who} repeats layer {int(layer)}; each layer may appear once (a repeated layer would "
                             f"apply {acts} twice)")
        out.append(int(layer))
    return out


def int_arg(name: str, value, minimum: int | None = None, maximum: int | None = None, where: str | None = None,
            optional: bool = False) -> int | None:
    """An int (not a bool) in [minimum, maximum]; None passes when optional."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{_where(where)}{name} must be an int{' or None' if optional else ''}, got {_show(value)}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        allowed = (f"between {minimum} and {maximum}" if minimum is not None and maximum is not None
                   else f">= {minimum}" if minimum is not None else f"<= {maximum}")
        raise ValueError(f"{_where(where)}{name} must be {allowed}, got {value}")
    return value


def real_arg(name: str, value, low: float | None = None, high: float | None = None, low_open: bool = False,
             high_open: bool = False, where: str | None = None) -> float:
    """A finite real number (not a bool) in the interval given; open ends exclude the bound."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{_where(where)}{name} must be a number, got {_show(value)}")
    value = float(value)
    bad = not math.isfinite(value)
    bad |= low is not None and (value <= low if low_open else value < low)
    bad |= high is not None and (value >= high if high_open else value > high)
    if bad:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{_where(where)}{name} must be a finite number in {interval}, got {value}")
    return value


def fraction_list(name: str, value, *, low_open: bool, high_open: bool, meaning: str, example: list,
                  where: str | None = None) -> list[float]:
    """A non-empty list/tuple/array/tensor of numbers between 0 and 1 (ends open as given); `meaning` says what a
    fraction counts (e.g. "fractions of the edges kept") in the messages."""
    interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
    if isinstance(value, (str, bytes)) or not (isinstance(value, (list, tuple, torch.Tensor))
                                               or type(value).__name__ == "ndarray"):
        raise TypeError(f"{_where(where)}{name} must be a list of numbers in {interval} ({meaning}), got "
                        f"{_show(value)}")
    items = value.tolist() if hasattr(value, "tolist") else list(value)
    if not items:
        raise ValueError(f"{_where(where)}{name} is empty; give {meaning} in {interval}, e.g. {list(example)}")
    return [real_arg(f"{name}[]", f, low=0, high=1, low_open=low_open, high_open=high_open, where=where)
            for f in items]


def not_meta(name: str, t: torch.Tensor, where: str | None = None) -> torch.Tensor:
    if t.device.type == "meta":
        raise ValueError(f"{_where(where)}{name} is on the meta device (shape only, no data); pass a tensor with "
                         "values, on the CPU or the model's device")
    return t


def tensor_arg(name: str, value, dims: tuple[int, ...] | None = None, floating: bool | None = None,
               where: str | None = None, shape_doc: str = "") -> torch.Tensor:
    """A non-empty tensor with data (not on the meta device), of the given number of dimensions and kind."""
    doc = f" {shape_doc}" if shape_doc else ""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{_where(where)}{name} must be a tensor{doc}, got {_show(value)}")
    not_meta(name, value, where)
    if dims is not None and value.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{_where(where)}{name} must be {want}{doc}, got shape {tuple(value.shape)}")
    if floating is True and not value.dtype.is_floating_point:
        raise TypeError(f"{_where(where)}{name} must be a floating-point tensor{doc}, got {value.dtype}")
    if floating is False and (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool):
        raise TypeError(f"{_where(where)}{name} must be an integer tensor{doc}, got {value.dtype}")
    if value.numel() == 0:
        raise ValueError(f"{_where(where)}{name} is empty (shape {tuple(value.shape)}){doc}")
    return value


# analyses that need only pattern statistics (run_with_cache(stats=...), cfg, to_tokens): a TLPatternModel runs them
PATTERN_STATS_ANALYSES = frozenset({"first_token_alpha", "hidden_sinks", "hidden_sink_positions", "shape_scores",
                                    "long_context_scores", "text_tokens", "make_trials"})


def model_arg(model, where: str | None = None, pattern_stats_ok: bool | None = None):
    """An interp HookedModel (or anything with its public API: cfg, run_with_cache, run_with_hooks, to_tokens).

    A TLPatternModel passes only where pattern statistics suffice: `pattern_stats_ok=True`, or (None) an analysis
    named in PATTERN_STATS_ANALYSES; elsewhere it gets hooked_model_arg's TypeError instead of a deep crash."""
    from .tl import TLPatternModel

    if isinstance(model, TLPatternModel):
        ok = where in PATTERN_STATS_ANALYSES if pattern_stats_ok is None else pattern_stats_ok
        if not ok:
            hooked_model_arg(model, where)
    need = ("cfg", "run_with_cache", "run_with_hooks", "to_tokens")
    missing = [a for a in need if not hasattr(model, a)]
    if missing:
        raise TypeError(f"{_where(where)}model must be an interp HookedModel (e.g. interp.load('smollm2-135m')), got "
                        f"{_show(model)}")
    device = getattr(model, "device", None)
    if isinstance(device, torch.device) and device.type == "meta":
        raise ValueError(f"{_where(where)}the model's weights are on the meta device (not loaded); load it with "
                         "interp.load(..., device='cpu' or 'cuda')")
    return model


def hooked_model_arg(model, where: str | None = None):
    """A model that runs through interp's own wrapper (hooks, interventions, gradients): an interp HookedModel."""
    from .model import HookedModel

    if isinstance(model, HookedModel):
        return model
    from .tl import TLPatternModel

    if isinstance(model, TLPatternModel):
        raise TypeError(f"{_where(where)}needs interp's own wrapper (hooks, interventions, gradients); a TLPatternModel "
                        "gives pattern statistics only: load the model with interp.load(hf_model) (a TransformerLens "
                        "TransformerBridge: interp.load(bridge))")
    raise TypeError(f"{_where(where)}model must be an interp HookedModel (e.g. interp.load('smollm2-135m')), got "
                    f"{_show(model)}")


def tokens_arg(value, model=None, name: str = "tokens", where: str | None = None, tensor_only: bool = False,
               dims: tuple[int, ...] = (1, 2)):
    """Model input: an integer tensor of token ids [pos] or [batch, pos] (checked here: kind, shape, emptiness,
    meta device, vocabulary), or, unless tensor_only, text / a list of texts / lists of ids (checked by
    model.to_tokens when it runs). `dims=(2,)` allows [batch, pos] only."""
    shape_doc = "of token ids, " + " or ".join({1: "[pos]", 2: "[batch, pos]"}[d] for d in dims)
    from .packing import Packed  # (here: interp.packing imports interp.tokens, which imports this module)

    if isinstance(value, Packed):  # a tuple: it would pass as a list of ids, and be read by row position
        raise TypeError(f"{_where(where)}{name} must be token ids or texts, not prompts packed by HookedModel.pack: "
                        "analyses read statistics by row position (the first token, each row's last ones), which a "
                        "packed row does not keep per prompt; give the prompts themselves")
    if isinstance(value, torch.Tensor):
        tensor_arg(name, value, dims=dims, floating=False, where=where, shape_doc=shape_doc)
        if model is not None:
            lo, hi = (int(x) for x in value.aminmax())  # one device sync
            if lo < 0 or hi >= model.cfg.d_vocab:
                raise ValueError(f"{_where(where)}{name} has ids outside the vocabulary [0, {model.cfg.d_vocab}): "
                                 f"min {lo}, max {hi}")
            if value.shape[-1] > model.cfg.n_ctx:
                raise ValueError(f"{_where(where)}{name} has {value.shape[-1]} positions; the model's maximum context "
                                 f"is {model.cfg.n_ctx}")
        return value
    if not tensor_only and (isinstance(value, str) or (isinstance(value, (list, tuple)) and len(value) > 0)):
        return value
    allowed = "an integer tensor " + shape_doc + ("" if tensor_only else ", a text or a list of texts / of ids")
    if isinstance(value, (str, list, tuple)) and len(value) == 0:
        raise ValueError(f"{_where(where)}{name} is empty; give {allowed}")
    raise TypeError(f"{_where(where)}{name} must be {allowed}, got {_show(value)}")


def frame_arg(table, columns, where: str | None, name: str, maker: str):
    """A pandas DataFrame holding `columns` (as `maker` returns); TypeError / ValueError naming what is missing."""
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{_where(where)}{name} must be a pandas DataFrame (as {maker} returns), got "
                        f"{type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{_where(where)}{name} lacks column(s) {missing}; it needs {list(columns)} (as {maker} "
                         f"returns), got columns {list(table.columns)[:12]}")
    return table
