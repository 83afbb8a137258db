"""Per-head interventions that run inside the attention call.

- `HeadAblation`: replace chosen heads' outputs (hook_z) by zero or by their mean.
- `KeyMask`: chosen heads may not attend to chosen keys (a -inf score bias; runs in the Triton kernels too).
- `ScaleAttention`: chosen heads' attention to chosen keys is multiplied by `factor`. With
  `redistribute="proportional"` (ACT's calibration) the removed mass goes back to the other keys in proportion to
  their share, so p'_S = factor * p_S exactly; with `redistribute="renormalize"` the scores get log(factor) added
  (softmax renormalises; runs in the Triton kernels too).

Keys are given as positions (`[2, 5]`, applied to every batch row) or a boolean mask `[batch, k_len]`.
Each class is an `interp.stages.Intervention`: it names the stage it acts at and implements that stage's method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .stages import AttnCall, Intervention


def _as_heads(heads, n_heads: int, what: str) -> list[int]:
    if heads is None:
        return list(range(n_heads))
    if isinstance(heads, int):
        heads = [heads]
    out = []
    for h in heads:
        if isinstance(h, bool) or not isinstance(h, int):
            raise TypeError(f"{what}: head indices must be ints, got {h!r}")
        if not 0 <= h < n_heads:
            raise ValueError(f"{what}: head {h} out of range; this layer has heads 0..{n_heads - 1}")
        out.append(h)
    return out


def _check_layer(layer, n_layers: int, what: str) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"{what}: layer must be an int, got {layer!r}")
    if not 0 <= layer < n_layers:
        raise ValueError(f"{what}: layer {layer} out of range; the model has layers 0..{n_layers - 1}")


def key_selector(keys, batch: int, k_len: int, device) -> torch.Tensor:
    """Positions or a bool mask -> bool [batch, k_len]. Negative positions count from the end."""
    if isinstance(keys, torch.Tensor) and keys.dtype == torch.bool:
        if keys.dim() == 1:
            keys = keys[None].expand(batch, -1)
        if keys.shape != (batch, k_len):
            raise ValueError(f"key mask must be [batch, k_len] = [{batch}, {k_len}], got {tuple(keys.shape)}")
        return keys.to(device)
    if isinstance(keys, int):
        keys = [keys]
    sel = torch.zeros(batch, k_len, dtype=torch.bool, device=device)
    for pos in list(keys):
        pos = int(pos)
        if not -k_len <= pos < k_len:
            raise ValueError(f"key position {pos} out of range for {k_len} keys")
        sel[:, pos] = True
    return sel


@dataclass
class HeadAblation(Intervention):
    layer: int
    heads: Sequence[int] | int | None = None
    mode: str = "zero"  # "zero" | "mean"
    mean_value: torch.Tensor | None = None  # [head, d_head], e.g. a dataset mean; default: mean of this input

    def validate(self, n_layers: int, n_heads: int) -> None:
        _check_layer(self.layer, n_layers, "HeadAblation")
        self._heads = _as_heads(self.heads, n_heads, "HeadAblation")
        if self.mode not in ("zero", "mean"):
            raise ValueError(f"HeadAblation.mode must be 'zero' or 'mean', got {self.mode!r}")

    stages = ("z",)

    def z(self, z: torch.Tensor, call: AttnCall) -> torch.Tensor:
        return self.apply_z(z, call.valid)

    def apply_z(self, z: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """z: [batch, pos, head, d_head] -> ablated copy."""
        z = z.clone()
        idx = self._heads
        if self.mode == "zero":
            z[:, :, idx] = 0
        elif self.mean_value is not None:
            z[:, :, idx] = self.mean_value[idx].to(z)
        else:
            if valid is not None:
                w = valid[:, -z.shape[1]:, None, None].to(z.dtype)
                mean = (z[:, :, idx] * w).sum((0, 1)) / w.sum((0, 1)).clamp_min(1)
            else:
                mean = z[:, :, idx].mean((0, 1))
            z[:, :, idx] = mean
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

    def key_bias(self, call: AttnCall) -> torch.Tensor:
        batch, n_heads, k_len, device = call.batch, call.heads, call.k_len, call.device
        sel = key_selector(self.keys, batch, k_len, device)  # [b, k]
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
        if not isinstance(self.factor, (int, float)) or self.factor < 0 or not math.isfinite(self.factor):
            raise ValueError(f"ScaleAttention.factor must be a finite number >= 0, got {self.factor!r}")
        if self.redistribute not in ("proportional", "renormalize"):
            raise ValueError(
                f"ScaleAttention.redistribute must be 'proportional' or 'renormalize', got {self.redistribute!r}"
            )
        if self.redistribute == "proportional" and self.factor > 1:
            raise ValueError("ScaleAttention with redistribute='proportional' takes 0 <= factor <= 1 "
                             f"(got {self.factor}); use redistribute='renormalize' to boost a token")

    @property
    def stages(self) -> tuple[str, ...]:
        return ("probs",) if self.redistribute == "proportional" else ("key_bias",)

    def probs(self, p: torch.Tensor, q_start: int, call: AttnCall) -> torch.Tensor:
        return self.transform(p, key_selector(self.keys, call.batch, call.k_len, call.device))

    def key_bias(self, call: AttnCall) -> torch.Tensor:
        batch, n_heads, k_len, device = call.batch, call.heads, call.k_len, call.device
        sel = key_selector(self.keys, batch, k_len, device)
        heads = torch.zeros(n_heads, dtype=torch.bool, device=device)
        heads[self._heads] = True
        val = math.log(self.factor) if self.factor > 0 else float("-inf")
        return torch.zeros(batch, n_heads, k_len, device=device).masked_fill(
            sel[:, None, :] & heads[None, :, None], val
        )

    def transform(self, p: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        """p: [batch, heads, q, k]; sel: [batch, k] bool. p'_S = factor p_S; others scaled to keep rows summing to 1
        (rows that see only the chosen keys are left alone)."""
        s = sel[:, None, None, :].to(p.dtype)
        p_s = (p * s).sum(-1, keepdim=True)  # [b, h, q, 1]
        rest = 1 - p_s
        scale_rest = (1 - self.factor * p_s) / rest.clamp_min(1e-12)
        new = torch.where(s.bool(), p * self.factor, p * scale_rest)
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

    stages = ("probs",)

    def validate(self, n_layers: int, n_heads: int) -> None:
        _check_layer(self.layer, n_layers, "StreamingAttention")
        self._heads = _as_heads(self.heads, n_heads, "StreamingAttention")
        for name in ("sink_tokens", "window"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "sink_tokens" else 1):
                raise ValueError(f"StreamingAttention.{name} must be an int >= {0 if name == 'sink_tokens' else 1}")

    def probs(self, p: torch.Tensor, q_start: int, call: AttnCall) -> torch.Tensor:
        return self.transform(p, q_start + call.q_offset)

    def transform(self, p: torch.Tensor, q_pos0: int) -> torch.Tensor:
        """p: [batch, heads, q, k] for queries at absolute positions q_pos0, q_pos0 + 1, ..."""
        q, k = p.shape[-2], p.shape[-1]
        qpos = torch.arange(q, device=p.device)[:, None] + q_pos0
        kpos = torch.arange(k, device=p.device)[None, :]
        keep = (kpos < self.sink_tokens) | ((qpos - kpos) < self.window)
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

    stages = ("out",)

    def validate(self, n_layers: int, n_heads: int) -> None:
        _check_layer(self.layer, n_layers, "GatedStreaming")
        if not isinstance(self.gate_logits, torch.Tensor) or self.gate_logits.dim() != 1:
            raise TypeError("GatedStreaming.gate_logits must be a 1-D tensor [kv_heads]")
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
