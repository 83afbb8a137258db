"""Per-head interventions that run inside the attention call.

- `HeadAblation`: replace chosen heads' outputs (hook_z) by zero or by their mean.
- `KeyMask`: chosen heads may not attend to chosen keys (a -inf score bias; runs in the Triton kernels too).
- `ScaleAttention`: chosen heads' attention to chosen keys is multiplied by `factor`. With
  `redistribute="proportional"` (ACT's calibration) the removed mass goes back to the other keys in proportion to
  their share, so p'_S = factor * p_S exactly; with `redistribute="renormalize"` the scores get log(factor) added
  (softmax renormalises; runs in the Triton kernels too).

Keys are given as distinct integer positions (an int, a list/tuple of ints or a 1-D integer tensor/array, e.g.
`[2, 5]`, applied to every batch row; negative positions count from the end) or as a bool tensor/array mask `[k_len]`
or `[batch, k_len]` (True = chosen). Floats, strings and 0/1 integer masks are rejected, not rounded or read as
positions.
Each class is an `interp.stages.Intervention`: it names the stage it acts at and implements that stage's method.

Mean ablation under a KV cache (`generate`): `HeadAblation(mode="mean")` and `HeadMask(baseline="mean")` without
given values take the mean over the real tokens of a forward with no past tokens (a plain run, or generate's prompt
pass) and reuse it at every later forward of the same hooks context that continues a KV cache (a decode step: its own
mean over one new position would be the head's own output, leaving the head unchanged); `prompt_mean` below.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch

from .stages import AttnCall, Intervention
from .validate import _show, int_arg, int_array_as_list, layer_range_error, not_meta


def _as_heads(heads, n_heads: int, what: str) -> list[int]:
    if heads is None:
        return list(range(n_heads))
    heads = int_array_as_list(heads, f"{what}.heads")
    if isinstance(heads, numbers.Integral) and not isinstance(heads, bool):
        heads = [heads]
    if isinstance(heads, (str, bytes, torch.Tensor, np.ndarray)) or not isinstance(heads, Collection):
        raise TypeError(f"{what}: heads must be an int, a list of ints, a 1-D integer tensor/array or None (every "
                        f"head), got {_show(heads)}")
    if len(heads) == 0:
        raise ValueError(f"{what}: heads must name at least one head, got an empty {type(heads).__name__} "
                         "(heads=None means every head)")
    out = []
    for h in heads:
        if isinstance(h, bool) or not isinstance(h, numbers.Integral):
            raise TypeError(f"{what}: head indices must be ints, got {h!r}")
        if not 0 <= h < n_heads:
            raise ValueError(f"{what}: head {h} out of range; this layer has heads 0..{n_heads - 1}")
        out.append(int(h))
    return out


def _check_keys(keys, what: str):
    """`keys` as given -> a list of distinct int positions or a bool mask tensor [k_len] / [batch, k_len]."""
    allowed = ("an int position, a list/tuple of int positions, a 1-D integer tensor/array of positions, or a bool "
               "tensor/array mask [k_len] or [batch, k_len]")
    if keys is None or isinstance(keys, (str, bytes, float, bool)):
        raise TypeError(f"{what}.keys must be {allowed}; got {_show(keys)}")
    if isinstance(keys, np.ndarray):
        if keys.dtype != np.bool_ and not np.issubdtype(keys.dtype, np.integer):
            raise TypeError(f"{what}.keys must be {allowed}; got a numpy array of dtype {keys.dtype} (positions are "
                            "not rounded; a 0/1 mask must have dtype bool)")
        keys = torch.from_numpy(np.ascontiguousarray(keys))
    if isinstance(keys, torch.Tensor):
        not_meta(f"{what}.keys", keys)
        if keys.dtype == torch.bool:
            if keys.dim() not in (1, 2):
                raise ValueError(f"{what}.keys: a bool mask must be [k_len] or [batch, k_len], got shape "
                                 f"{tuple(keys.shape)}")
            if not bool(keys.any()):
                raise ValueError(f"{what}.keys: the bool mask selects no key (all False); it must choose at least one")
            return keys
        if keys.dtype.is_floating_point or keys.dtype.is_complex:
            raise TypeError(f"{what}.keys must be {allowed}; got a {keys.dtype} tensor (positions are not rounded; "
                            "a 0/1 mask must be a bool tensor: keys.bool())")
        if keys.dim() > 1:
            raise ValueError(f"{what}.keys: a tensor of positions must be 0-D or 1-D, got shape {tuple(keys.shape)} "
                             "(for a per-row choice pass a bool mask [batch, k_len])")
        keys = keys.reshape(-1).tolist()
    elif isinstance(keys, numbers.Integral):
        keys = [keys]
    elif not isinstance(keys, Collection):
        raise TypeError(f"{what}.keys must be {allowed}; got {_show(keys)}")
    out, seen = [], set()
    for pos in keys:
        if isinstance(pos, bool) or not isinstance(pos, numbers.Integral):
            raise TypeError(f"{what}.keys: positions must be ints, got {pos!r} in {_show(keys)} (positions are not "
                            "rounded; a mask must be a bool tensor)")
        if int(pos) in seen:
            raise ValueError(f"{what}.keys repeats position {int(pos)}; positions must be distinct (a 0/1 mask must "
                             "be a bool tensor, not integers)")
        seen.add(int(pos))
        out.append(int(pos))
    if not out:
        raise ValueError(f"{what}.keys must name at least one key position, got an empty {type(keys).__name__}")
    return out


def _check_layer(layer, n_layers: int, what: str) -> None:
    if isinstance(layer, (bool, np.bool_)) or not isinstance(layer, numbers.Integral):  # (NumPy ints too, as layers=)
        raise TypeError(f"{what}: layer must be an int, got {layer!r}")
    if not 0 <= layer < n_layers:
        raise layer_range_error(layer, n_layers, what)


def key_selector(keys, batch: int, k_len: int, device, what: str = "key_selector") -> torch.Tensor:
    """Positions or a bool mask (see `_check_keys`) -> bool [batch, k_len]. Negative positions count from the end."""
    return _select(_check_keys(keys, what), batch, k_len, device, what)


def _select(keys, batch: int, k_len: int, device, what: str) -> torch.Tensor:
    """`_check_keys`'s result -> bool [batch, k_len], checked against this run's keys."""
    if isinstance(keys, torch.Tensor):
        shape = tuple(keys.shape)
        if keys.dim() == 1:
            keys = keys[None].expand(batch, -1)
        if keys.shape != (batch, k_len):
            raise ValueError(f"{what}.keys: a bool mask must be [k_len] = [{k_len}] or [batch, k_len] = "
                             f"[{batch}, {k_len}] (this run's keys), got {shape}")
        return keys.to(device)
    sel = torch.zeros(batch, k_len, dtype=torch.bool, device=device)
    for pos in keys:
        if not -k_len <= pos < k_len:
            raise ValueError(f"{what}.keys: key position {pos} out of range for {k_len} keys "
                             f"(allowed: {-k_len}..{k_len - 1})")
        sel[:, pos] = True
    return sel


def _factor(factor) -> float:
    """ScaleAttention.factor: a real number >= 0 (python, numpy scalar or 0-D tensor; not a bool) -> float."""
    if isinstance(factor, torch.Tensor) and factor.dim() == 0 and not factor.dtype.is_complex \
            and factor.dtype != torch.bool:
        not_meta("ScaleAttention.factor", factor)
        if factor.requires_grad:
            raise TypeError("ScaleAttention.factor is a tensor that requires grad; ScaleAttention is not "
                            "differentiable in factor: pass a number (factor.item())")
        factor = factor.item()
    elif isinstance(factor, np.ndarray) and factor.ndim == 0:
        factor = factor.item()
    if isinstance(factor, (bool, np.bool_)) or not isinstance(factor, numbers.Real):
        raise TypeError(f"ScaleAttention.factor must be a real number >= 0 (int, float, numpy scalar or 0-D tensor), "
                        f"got {_show(factor)}")
    factor = float(factor)
    if not math.isfinite(factor) or factor < 0:
        raise ValueError(f"ScaleAttention.factor must be a finite number >= 0, got {factor}")
    return factor


def token_mean(z: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """z [batch, pos, head, d] -> its mean over batch and positions, [1, 1, head, d]: over the real tokens where
    `valid` (the run's padding mask [batch, >= pos], True = real token) is given."""
    if valid is None:
        return z.mean((0, 1), keepdim=True)
    w = valid[:, -z.shape[1]:, None, None].to(z.dtype)
    return (z * w).sum((0, 1), keepdim=True) / w.sum((0, 1), keepdim=True).clamp_min(1)


def prompt_mean(means: dict, call: AttnCall, compute: Callable[[], torch.Tensor], who: str,
                instead: str) -> torch.Tensor:
    """The mean a mean ablation uses at this attention call. A forward with no past tokens (`call.q_offset == 0`: a
    plain run, or generate's prompt pass) takes it over its own tokens (`compute()`) and records it in `means` under
    the layer; a forward that continues a KV cache (a decode step) reuses the one recorded, and without one raises a
    ValueError that says to give the values (`instead`). `means` is emptied when a hooks context starts (validate)."""
    if call.q_offset == 0:
        mean = compute()
        means[call.layer] = mean.detach()
        return mean
    if call.layer not in means:
        raise ValueError(
            f"{who}: layer {call.layer}'s forward continues a KV cache ({call.q_offset} past tokens, {call.q_len} "
            f"new), and no prompt pass (a forward with no past tokens) ran in this hooks context to take the mean "
            f"from (a cache filled outside it?); the new tokens' own mean would leave the head (nearly) unchanged, "
            f"so it is not used: {instead}")
    return means[call.layer]


@dataclass
class HeadAblation(Intervention):
    """Replace the chosen heads' outputs (hook_z) by zero (mode="zero") or by a mean (mode="mean").

    mode="mean" uses `mean_value` ([n_heads, d_head_v], e.g. a dataset mean) where given, else the heads' mean
    hook_z over the real tokens of the batch. Under a KV cache (`generate`) that mean is taken on the prompt pass
    and reused at every decode step of the same hooks context; a decode step with no prompt pass before it (a cache
    filled elsewhere) is refused with a ValueError: pass mean_value= then."""

    layer: int
    heads: Sequence[int] | int | None = None
    mode: str = "zero"  # "zero" | "mean"
    mean_value: torch.Tensor | None = None  # [head, d_head_v] (hook_z's), e.g. a dataset mean; default: this input's

    def validate(self, n_layers: int, n_heads: int) -> None:
        self._prompt_means = {}  # {layer: mean hook_z of the prompt pass}, per hooks context
        _check_layer(self.layer, n_layers, "HeadAblation")
        self._heads = _as_heads(self.heads, n_heads, "HeadAblation")
        if self.mode not in ("zero", "mean"):
            raise ValueError(f"HeadAblation.mode must be 'zero' or 'mean', got {self.mode!r}")
        mv = self.mean_value
        if mv is None:
            return
        if self.mode != "mean":
            raise ValueError(f"HeadAblation.mean_value is only used with mode='mean', got mode={self.mode!r} "
                             "(drop mean_value, or pass mode='mean')")
        if not isinstance(mv, torch.Tensor):
            raise TypeError(f"HeadAblation.mean_value must be a tensor [n_heads, d_head_v] = [{n_heads}, d_head_v], "
                            f"got {_show(mv)}")
        not_meta("HeadAblation.mean_value", mv)
        if not mv.dtype.is_floating_point:
            raise TypeError(f"HeadAblation.mean_value must be a floating-point tensor, got {mv.dtype}")
        if mv.dim() != 2 or mv.shape[0] != n_heads:
            raise ValueError(f"HeadAblation.mean_value must be [n_heads, d_head_v] = [{n_heads}, d_head_v] (one mean "
                             f"hook_z per head of the layer), got {tuple(mv.shape)}")
        if not bool(torch.isfinite(mv.detach()).all()):
            raise ValueError("HeadAblation.mean_value has NaN or Inf entries")

    stages = ("z",)

    def z(self, z: torch.Tensor, call: AttnCall) -> torch.Tensor:
        """z: [batch, pos, head, d_head_v] -> ablated copy."""
        z = z.clone()
        idx = self._heads
        if self.mode == "zero":
            z[:, :, idx] = 0
        elif self.mean_value is not None:
            mv = self.mean_value
            if tuple(mv.shape) != (z.shape[2], z.shape[3]):
                raise ValueError(f"HeadAblation.mean_value must be [n_heads, d_head_v] = [{z.shape[2]}, {z.shape[3]}] "
                                 f"(this layer's hook_z), got {tuple(mv.shape)}")
            z[:, :, idx] = mv[idx].to(z)
        else:  # the chosen heads' mean over the real tokens (of the prompt pass, under a KV cache)
            means = self.__dict__.setdefault("_prompt_means", {})
            z[:, :, idx] = prompt_mean(means, call, lambda: token_mean(z[:, :, idx], call.valid),
                                       "HeadAblation(mode='mean')",
                                       "pass mean_value= (the heads' mean hook_z, [n_heads, d_head_v])").to(z)
        return z


@dataclass
class KeyMask(Intervention):
    layer: int
    keys: object
    heads: Sequence[int] | int | None = None

    stages = ("key_bias",)

    def validate(self, n_layers: int, n_heads: int) -> None:
        _check_layer(self.layer, n_layers, "KeyMask")
        self._heads = _as_heads(self.heads, n_heads, "KeyMask")
        self._keys = _check_keys(self.keys, "KeyMask")

    def key_bias(self, call: AttnCall) -> torch.Tensor:
        batch, n_heads, k_len, device = call.batch, call.heads, call.k_len, call.device
        sel = _select(self._keys, batch, k_len, device, "KeyMask")  # [b, k]
        bias = torch.zeros(batch, n_heads, k_len, device=device)
        heads = torch.zeros(n_heads, dtype=torch.bool, device=device)
        heads[self._heads] = True
        return bias.masked_fill(sel[:, None, :] & heads[None, :, None], float("-inf"))


@dataclass
class ScaleAttention(Intervention):
    layer: int
    keys: object
    factor: float
    heads: Sequence[int] | int | None = None
    redistribute: str = "proportional"  # "proportional" (ACT) | "renormalize"
    _heads: list = field(default_factory=list, repr=False)

    def validate(self, n_layers: int, n_heads: int) -> None:
        _check_layer(self.layer, n_layers, "ScaleAttention")
        self._heads = _as_heads(self.heads, n_heads, "ScaleAttention")
        self._keys = _check_keys(self.keys, "ScaleAttention")
        self._factor = _factor(self.factor)
        if self.redistribute not in ("proportional", "renormalize"):
            raise ValueError(
                f"ScaleAttention.redistribute must be 'proportional' or 'renormalize', got {self.redistribute!r}"
            )
        if self.redistribute == "proportional" and self._factor > 1:
            raise ValueError("ScaleAttention with redistribute='proportional' takes 0 <= factor <= 1 "
                             f"(got {self._factor}); use redistribute='renormalize' to boost a token")

    @property
    def stages(self) -> tuple[str, ...]:
        return ("probs",) if self.redistribute == "proportional" else ("key_bias",)

    def probs(self, p: torch.Tensor, q_start: int, call: AttnCall) -> torch.Tensor:
        return self.transform(p, _select(self._keys, call.batch, call.k_len, call.device, "ScaleAttention"))

    def key_bias(self, call: AttnCall) -> torch.Tensor:
        batch, n_heads, k_len, device = call.batch, call.heads, call.k_len, call.device
        sel = _select(self._keys, batch, k_len, device, "ScaleAttention")
        heads = torch.zeros(n_heads, dtype=torch.bool, device=device)
        heads[self._heads] = True
        val = math.log(self._factor) if self._factor > 0 else float("-inf")
        return torch.zeros(batch, n_heads, k_len, device=device).masked_fill(
            sel[:, None, :] & heads[None, :, None], val
        )

    def transform(self, p: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        """p: [batch, heads, q, k]; sel: [batch, k] bool. p'_S = factor p_S; others scaled to keep rows summing to 1
        (rows that see only the chosen keys are left alone)."""
        s = sel[:, None, None, :].to(p.dtype)
        p_s = (p * s).sum(-1, keepdim=True)  # [b, h, q, 1]
        rest = 1 - p_s
        factor = self._factor if hasattr(self, "_factor") else _factor(self.factor)  # set by validate
        scale_rest = (1 - factor * p_s) / rest.clamp_min(1e-12)
        new = torch.where(s.bool(), p * factor, p * scale_rest)
        new = torch.where(rest > 1e-6, new, p)  # a row that sees only the chosen keys has nowhere to move mass
        out = p.clone()
        out[:, self._heads] = new[:, self._heads]
        return out


@dataclass
class StreamingAttention(Intervention):
    """Chosen heads see only the first `sink_tokens` keys and the last `window` keys (StreamingLLM / DuoAttention
    streaming heads): what a KV cache that keeps only sinks + a recent window gives them."""

    layer: int
    heads: Sequence[int] | int | None = None
    sink_tokens: int = 4
    window: int = 64
    _heads: list = field(default_factory=list, repr=False)
    keeps_row_start: ClassVar[bool] = True  # its sinks are the row's first keys

    stages = ("probs",)

    def validate(self, n_layers: int, n_heads: int) -> None:
        _check_layer(self.layer, n_layers, "StreamingAttention")
        self._heads = _as_heads(self.heads, n_heads, "StreamingAttention")
        for name in ("sink_tokens", "window"):  # (a float: TypeError naming it; NumPy ints are ints)
            int_arg(f"StreamingAttention.{name}", getattr(self, name), minimum=0 if name == "sink_tokens" else 1)

    def probs(self, p: torch.Tensor, q_start: int, call: AttnCall) -> torch.Tensor:
        return self.transform(p, q_start + call.q_offset)

    def transform(self, p: torch.Tensor, q_pos0: int) -> torch.Tensor:
        """p: [batch, heads, q, k] for queries at absolute positions q_pos0, q_pos0 + 1, ..."""
        q, k = p.shape[-2], p.shape[-1]
        qpos = torch.arange(q, device=p.device)[:, None] + q_pos0
        kpos = torch.arange(k, device=p.device)[None, :]
        # (clamped: past k / the farthest query-key distance both mean every key, and a Python int past int64, e.g.
        # a KV config's window=10**30, would not compare with a tensor)
        sink, window = min(self.sink_tokens, k), min(self.window, q_pos0 + q)
        keep = (kpos < sink) | ((qpos - kpos) < window)
        sub = p[:, self._heads] * keep
        sub = sub / sub.sum(-1, keepdim=True).clamp_min(1e-30)
        out = p.clone()
        out[:, self._heads] = sub
        return out


@dataclass
class GatedStreaming(Intervention):
    """DuoAttention's mix: each KV head's output is alpha * full attention + (1 - alpha) * streaming attention
    (sinks + recent window), alpha = sigmoid(gate_logits[kv_head]). Differentiable in the gate (for training)."""

    layer: int
    gate_logits: torch.Tensor  # [kv_heads]
    sink_tokens: int = 4
    window: int = 64
    keeps_row_start: ClassVar[bool] = True  # its streaming part's sinks are the row's first keys

    stages = ("out",)

    def validate(self, n_layers: int, n_heads: int) -> None:
        _check_layer(self.layer, n_layers, "GatedStreaming")
        g = self.gate_logits
        if not isinstance(g, torch.Tensor) or g.dim() != 1:
            raise TypeError(f"GatedStreaming.gate_logits must be a 1-D tensor [kv_heads], got {_show(g)}")
        not_meta("GatedStreaming.gate_logits", g)
        if g.numel() == 0:
            raise ValueError(f"GatedStreaming.gate_logits is empty; give one logit per KV head (a number of gates "
                             f"that divides the {n_heads} heads)")
        if not bool(torch.isfinite(g.detach()).all()):
            raise ValueError("GatedStreaming.gate_logits has NaN or Inf entries")
        if n_heads % self.gate_logits.numel():
            raise ValueError(f"GatedStreaming: {self.gate_logits.numel()} gates do not divide {n_heads} heads")
        self._stream = StreamingAttention(self.layer, None, self.sink_tokens, self.window)
        self._stream.validate(n_layers, n_heads)

    def alpha_per_head(self, n_heads: int) -> torch.Tensor:
        a = torch.sigmoid(self.gate_logits)
        return a.repeat_interleave(n_heads // a.numel())  # [heads]

    def requires_grad(self) -> bool:
        return self.gate_logits.requires_grad

    def out(self, out: torch.Tensor, call: AttnCall) -> torch.Tensor:
        """DuoAttention: mix the full output with a streaming re-run of the same attention, per KV head."""
        stream = call.attend(prob_hook=lambda p, qs: self._stream.transform(p, qs + call.q_offset))
        a = self.alpha_per_head(call.heads).to(out.device)[None, :, None, None]
        return (a * out.float() + (1 - a) * stream.float()).to(out.dtype)
