"""Checks of HookedModel's model and run arguments that need the model's shape: weights the kernels take, a pattern
that fits in memory, the span_mass hook point without a span, `logits_at` positions and the interventions. Each
raises a TypeError/ValueError naming the argument, what it got and what is allowed. (Split from `interp.model`, which
re-exports these names.)"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from .hooks import HOOK_OF_STAT, no_gradient
from .stages import Intervention, check_stages
from .validate import distinct_layers

PATTERN_BYTES_LIMIT = 4 * 2**30
SPAN_HOOK = ".attn." + HOOK_OF_STAT["span_mass"]  # the one hook point that needs an option (span=) to exist


def span_hook_error(name: str, why: str = "") -> str:
    return (f"{why + ': ' if why else ''}hook point {name!r} is the attention mass on a span of keys, and no "
            "span=(start, end) was given; pass span=(start, end) (key positions), or leave that hook point out "
            "(names_filter=... skips span_mass hook points when no span is given)")


def check_span_hooks(names, span) -> None:
    """ValueError naming the first span_mass hook point among `names` when no span is given."""
    if span is None:
        for n in names:
            if n.endswith(SPAN_HOOK):
                raise ValueError(span_hook_error(n))


def check_pattern_size(batch: int, heads: int, q_len: int, k_len: int, layer) -> None:
    need = batch * heads * q_len * k_len * 4
    if need > PATTERN_BYTES_LIMIT:
        raise ValueError(
            f"hook_pattern at layer {layer} would take {need / 2**30:.1f} GiB ([{batch}, {heads}, {q_len}, {k_len}] "
            "float32); capture statistics instead (stats=...), which need O(n) memory"
        )


def probabilities_error(layer: int, pattern: bool, interventions) -> ValueError:
    """The error of a backend='triton' run that needs a layer's attention probabilities: its pattern hook point, or
    the interventions that asked for them (StreamingAttention editing the probabilities, GatedStreaming re-running the
    attention on them); the kernels' own message would name a prob_hook, which the caller never passed."""
    needs = (["hook_pattern (pattern=True or a hook there)"] if pattern else []) + [
        type(iv).__name__ for iv in interventions]
    verb = "need" if len(needs) > 1 else "needs"
    return ValueError(f"layer {layer}: {' and '.join(needs) or 'an intervention'} {verb} the attention probabilities, "
                      "which backend='triton' never forms (its kernels keep no [query, key] map); run with "
                      "backend='auto' or 'reference'")


def check_weight_dtype(hf_model: torch.nn.Module, label: str = "the model") -> None:
    """ValueError for float64 weights: their activations reach attention as float64, which every backend refuses
    (at the first forward); caught here, when the model is wrapped. (Other dtypes, e.g. float8 weights behind a
    quantizer, may compute in a dtype the kernels take: left to the kernels' own check.)"""
    from .kernels.checks import SUPPORTED_DTYPES

    bad = next(((n, p.dtype) for n, p in hf_model.named_parameters() if p.dtype == torch.float64), None)
    if bad is not None:
        allowed = ", ".join(str(d).replace("torch.", "") for d in SUPPORTED_DTYPES)
        raise ValueError(f"{label}: parameter {bad[0]} is {bad[1]}; interp's attention kernels take {allowed} "
                         f"weights. Convert it: interp.load(model, dtype='float32') (or model.to(torch.float32))")


def check_grad_of(grad_of, chosen) -> None:
    """run_with_cache's `grad_of` (None, or a function of the logits) and the hook points chosen for its gradients."""
    if grad_of is not None:
        if not callable(grad_of):
            raise TypeError(f"grad_of must be a function of the logits returning a scalar, got "
                            f"{type(grad_of).__name__}")
        if not chosen:
            raise ValueError("grad_of needs the hook points whose gradients you want: names=[...] or "
                             "names_filter=...")
        if all(no_gradient(n) for n in chosen):  # hook_result first: the one most often taken for hook_z
            first = min(chosen, key=lambda n: (not n.endswith(".hook_result"), n))
            raise ValueError(f"grad_of needs hook points on the forward path, and none of those chosen has a "
                             f"gradient: {no_gradient(first)}")


def check_metric_value(value) -> None:
    """What a `grad_of` metric returned: a scalar tensor that depends on the logits."""
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ValueError(f"grad_of must return a scalar tensor (e.g. a mean over the batch), got "
                         f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
    if not value.requires_grad:
        raise ValueError("the grad_of metric does not depend on the logits it was given (no gradient)")


def logits_positions(logits_at, n_pos: int) -> torch.Tensor:
    """`logits_at` (positions, 1-D; or a slice of the positions, e.g. slice(-1, None) for the last) -> an
    int64 index tensor in the order given, checked against n_pos."""
    if isinstance(logits_at, slice):
        try:
            picked = range(n_pos)[logits_at]
        except (TypeError, ValueError):
            raise TypeError(f"logits_at as a slice needs int bounds and a non-zero step, got "
                            f"{logits_at!r}") from None
        if len(picked) == 0:
            raise ValueError(f"logits_at={logits_at!r} selects no position of the {n_pos}-token prompt")
        return torch.tensor(list(picked), dtype=torch.long)
    allowed = ("logits_at must be a non-empty 1-D list/tensor of integer positions (e.g. [n - 1]) or a slice of "
               "the positions (e.g. slice(-1, None): the last)")
    if isinstance(logits_at, (str, bytes, dict, set)):
        raise TypeError(f"{allowed}, got {type(logits_at).__name__} {logits_at!r:.40}")
    try:
        t = torch.as_tensor(logits_at)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{allowed}, got {type(logits_at).__name__} {logits_at!r:.40}") from None
    if t.dim() != 1 or t.numel() == 0 or t.dtype in (torch.bool,) or t.is_floating_point():
        raise ValueError(f"logits_at must be a non-empty 1-D list/tensor of integer positions, got "
                         f"{logits_at!r:.80}")
    t = t.long().cpu()
    bad = t[(t < 0) | (t >= n_pos)]
    if len(bad):  # a long list: its first positions outside only (range(10**6) once gave a 7 MB message)
        got = t.tolist() if len(t) <= 8 else f"{len(bad)} of {len(t)} outside, first {bad[:8].tolist()}"
        raise ValueError(f"logits_at positions must lie in 0..{n_pos - 1} (the prompt has {n_pos} tokens), got "
                         f"{got}")
    return t


def check_interventions(interventions, n_layers: int, n_heads: int) -> dict[int, list]:
    """`interventions` (one Intervention or a list of them) checked against the model's size -> {layer: [those acting
    there]}."""
    if isinstance(interventions, Intervention):
        interventions = [interventions]
    if isinstance(interventions, (str, bytes, type)) or not (interventions is None
                                                            or hasattr(interventions, "__iter__")):
        raise TypeError(f"interventions must be a list of Intervention objects (HeadAblation(...), KeyMask(...), "
                        f"...), got {interventions!r}")
    by_layer: dict[int, list] = {}
    for iv in interventions or ():
        if not isinstance(iv, Intervention):
            raise TypeError(f"unknown intervention {iv!r}; interventions are interp.stages.Intervention "
                            "subclasses (HeadAblation, HeadMask, KeyMask, ScaleAttention, StreamingAttention, "
                            "GatedStreaming, ...)")
        check_stages(iv)
        iv.validate(n_layers, n_heads)
        for layer in intervention_layers(iv, n_layers):
            by_layer.setdefault(layer, []).append(iv)
    return by_layer


def intervention_layers(iv: Intervention, n_layers: int) -> list[int]:
    """`iv.layers(n_layers)` checked: a non-empty collection of distinct int layers (NumPy ints too) in range (a
    layer out of range would never be applied; a repeated one would be applied twice)."""
    name = type(iv).__name__
    default = type(iv).layers is Intervention.layers
    who = f"{name}.layer" if default else f"{name}.layers({n_layers})"
    allowed = (f"an int layer in 0..{n_layers - 1}" if default else
               f"a non-empty list of distinct int layers in 0..{n_layers - 1}")
    got = iv.layers(n_layers)
    if default:  # the one layer in iv.layer, named as such
        layer = got[0] if isinstance(got, list) and len(got) == 1 else got
        if isinstance(layer, (bool, np.bool_)) or not isinstance(layer, numbers.Integral):
            raise TypeError(f"{who} must be {allowed}, got {layer!r}")
    return distinct_layers(got, n_layers, who, allowed, name)
