"""Argument checks of HookedModel's and `interp.load`'s own options (hook selections, layers, keywords, generate,
tokenizers, flags): each raises a ValueError/TypeError naming the argument, what it got and what is allowed.

Model input (text, token ids, `Tokens`) is checked in `interp.tokens`.
"""

from __future__ import annotations

import difflib
import numbers
import os

import numpy as np
import torch

from .kernels import normalize_stats
from .kernels.stats import stats_request
from .tokens import _show
from .validate import int_array_as_list, layer_range_error

STAT_OPTIONS = ("stats", "layers", "sink_tokens", "local_window", "span", "backend")  # run_with_hooks' **stat_options


def bool_arg(name: str, value, where: str = "") -> bool:
    """`value` if it is a bool, else a TypeError "{where}: {name} must be True or False, got ..." (no prefix when
    `where` is empty)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where + ': ' if where else ''}{name} must be True or False, got {_show(value)}")
    return bool(value)


def keywords(where: str, given: dict, allowed: tuple[str, ...], takes: str) -> None:
    """Unknown keyword arguments of a function taking **kwargs: name the function, the keyword and what it takes."""
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{where} got an unexpected keyword argument {key!r}{hint}; it takes {takes} and "
                            f"{', '.join(allowed)}")


def layer_list(layers, n_layers: int) -> list[int]:
    """None (all layers), a layer index or an iterable of them (numpy integers too) -> checked list of ints."""
    if layers is None:
        return list(range(n_layers))
    allowed = f"an int in 0..{n_layers - 1}, a list of them, or None (all layers)"
    layers = int_array_as_list(layers, "layers")  # a 0-D/1-D integer tensor or array (a 0-d one is iterable by type)
    if isinstance(layers, numbers.Integral) and not isinstance(layers, bool):
        layers = [layers]
    elif isinstance(layers, (str, bytes, torch.Tensor, np.ndarray)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be {allowed}, got {_show(layers)}")
    out = []
    for l in layers:
        if isinstance(l, bool) or not isinstance(l, numbers.Integral):
            raise TypeError(f"layers must be {allowed}; layer {_show(l)} is not an int")
        if not 0 <= l < n_layers:
            raise layer_range_error(l, n_layers)
        out.append(int(l))
    return out


def hook_names(names) -> list[str]:
    if isinstance(names, str):
        return [names]
    if not hasattr(names, "__iter__"):
        raise TypeError(f"names must be a hook name or a list of hook names (model.hook_names()), got {_show(names)}")
    return list(names)


def names_filter_arg(names_filter):
    if names_filter is not None and not callable(names_filter):
        raise TypeError(f"names_filter must be a function of the hook name returning True/False (e.g. lambda n: "
                        f"n.endswith('hook_z')), got {_show(names_filter)}; to choose hook points by name, use "
                        "names=[...]")
    return names_filter


def stat_selection(stats, span) -> tuple[str, ...]:
    """normalize_stats, where a group ("all", "query") given no span drops span_mass and a span_mass asked for by
    name without a span is refused (the kernels' message)."""
    stats = stats_request(stats)  # (a generator read once, here)
    names = normalize_stats(stats)
    if "span_mass" in names and span is None:
        if stats == "span_mass" or (isinstance(stats, tuple) and "span_mass" in stats):
            raise ValueError("stats asks for span_mass but no span=(start, end) was given")
        names = tuple(n for n in names if n != "span_mass")
    return names


def empty_selection(names, names_filter, stats, layers) -> ValueError:
    """The error of a run_with_cache call whose explicit choices select no hook point (names: the list given or
    None; stats: the statistic names asked for, or None when not given; layers: the layer list, or None)."""
    why = []
    if names is not None and len(names) == 0:
        why.append("names=[] selects no hook point")
    if names_filter is not None:
        why.append("names_filter matches no hook point (model.hook_names() lists them)")
    if stats is not None and len(stats) == 0:
        why.append("stats selects no statistic")
    if layers is not None and len(layers) == 0:
        why.append("layers=[] selects no layer")
    return ValueError(f"run_with_cache: {'; '.join(why) or 'nothing is selected'}; choose hook points (names=, "
                      "names_filter=, pattern=True) or statistics (stats=), or leave them all out to capture every "
                      "statistic")


def max_new_tokens_arg(max_new_tokens, prompt_len: int, n_ctx: int) -> int:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral):
        raise TypeError(f"generate: max_new_tokens must be an int >= 1, got {_show(max_new_tokens)}")
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be an int >= 1, got {max_new_tokens}")
    fed = prompt_len + max_new_tokens - 1  # the last new token is predicted, never fed back
    if fed > n_ctx:
        room = (f"ask for at most {n_ctx - prompt_len + 1} new tokens" if prompt_len <= n_ctx
                else "the prompt alone is longer")
        raise ValueError(f"generate: the prompt has {prompt_len} tokens and max_new_tokens={max_new_tokens}: the "
                         f"model would read {fed} positions, beyond its maximum context (n_ctx) {n_ctx}; shorten the "
                         f"prompt or {room}")
    return int(max_new_tokens)


def tokenizer_arg(tokenizer, where: str):
    """None, or a tokenizer object: callable on text (-> {"input_ids": ...}) and with .decode."""
    if tokenizer is None:
        return None
    if isinstance(tokenizer, (str, os.PathLike)):
        raise TypeError(f"{where}: tokenizer must be a tokenizer object or None, got the {type(tokenizer).__name__} "
                        f"{str(tokenizer)!r}; interp does not load tokenizers by name or path: pass "
                        "transformers.AutoTokenizer.from_pretrained(path_to_local_folder)")
    if not callable(tokenizer) or not callable(getattr(tokenizer, "decode", None)):
        raise TypeError(f"{where}: tokenizer must be None or a tokenizer object (callable on text, with .decode(), "
                        f"e.g. a transformers tokenizer), got {_show(tokenizer)}")
    return tokenizer
