"""`HeadMask`: a differentiable gate on every head's output, the mechanism behind head importance and patching.

    z'_h = xi_h * z_h + (1 - xi_h) * baseline_h          (z = hook_z, [batch, pos, head, d_head_v])

- xi = 1 everywhere leaves the model unchanged; xi requires grad -> dL/dxi_h at xi = 1 is the mask-gradient
  importance of Michel et al. (2019).
- xi of shape [batch, n_layers, n_heads] gives every batch row its own mask: an ablation sweep over many heads runs
  as one batched forward (row i ablates head i) instead of one forward per head.
- baseline "zero" (default) ablates to zero, "mean" to the head's mean output over the real tokens of the batch
  (under a KV cache, `generate`: the prompt pass's mean, reused at every decode step of the same hooks context; a
  decode step with no prompt pass before it is refused, see `interp.interventions.prompt_mean`), and a dict
  {layer: tensor} patches in given activations (e.g. hook_z of a corrupted run: activation patching,
  resample ablation). A baseline tensor broadcasts to [batch, pos, head, d_head_v] (d_head_v: the value head dim,
  `ModelConfig.d_head_v`; d_head except in multi-head latent attention).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .interventions import prompt_mean, token_mean
from .stages import AttnCall, Intervention
from .validate import distinct_layers, int_array_as_list, not_meta

BASELINES = ("zero", "mean")


@dataclass
class HeadMask(Intervention):
    mask: torch.Tensor  # [n_layers, n_heads] or [batch, n_layers, n_heads]
    baseline: str | dict = "zero"
    only_layers: Sequence[int] | int | None = None  # act on these distinct layers only (default: all)
    _layers: list = field(default_factory=list, repr=False)

    stages = ("z",)

    def validate(self, n_layers: int, n_heads: int) -> None:
        self._prompt_means = {}  # {layer: mean hook_z of the prompt pass} for baseline="mean", per hooks context
        m = self.mask
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"HeadMask.mask must be a tensor [n_layers, n_heads] or [batch, n_layers, n_heads], "
                            f"got {type(m).__name__}")
        if not m.dtype.is_floating_point:
            raise TypeError(f"HeadMask.mask must be a floating-point tensor, got {m.dtype}")
        if m.dim() not in (2, 3) or tuple(m.shape[-2:]) != (n_layers, n_heads):
            raise ValueError(f"HeadMask.mask must be [{n_layers}, {n_heads}] or [batch, {n_layers}, {n_heads}] "
                             f"(layers x heads of this model), got {tuple(m.shape)}")
        not_meta("HeadMask.mask", m)
        if not bool(torch.isfinite(m.detach()).all()):
            raise ValueError("HeadMask.mask has NaN or Inf entries")
        if isinstance(self.baseline, str):
            if self.baseline not in BASELINES:
                raise ValueError(f"HeadMask.baseline must be one of {BASELINES} or a dict {{layer: tensor}}, "
                                 f"got {self.baseline!r}")
        elif isinstance(self.baseline, dict):
            for layer, t in self.baseline.items():
                if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or not 0 <= layer < n_layers:
                    raise ValueError(f"HeadMask.baseline keys must be layers 0..{n_layers - 1}, got {layer!r}")
                if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[2] != n_heads:
                    raise ValueError(f"HeadMask.baseline[{layer}] must be a tensor [batch, pos, {n_heads}, d_head_v] "
                                     f"(hook_z's shape; batch and pos may be 1), got "
                                     f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
                not_meta(f"HeadMask.baseline[{layer}]", t)
                if not t.dtype.is_floating_point:
                    raise TypeError(f"HeadMask.baseline[{layer}] must be a floating-point tensor, got {t.dtype}")
                if not bool(torch.isfinite(t.detach()).all()):
                    raise ValueError(f"HeadMask.baseline[{layer}] has NaN or Inf entries")
        else:
            raise TypeError(f"HeadMask.baseline must be 'zero', 'mean' or a dict {{layer: tensor}}, "
                            f"got {type(self.baseline).__name__}")
        self._layers = self._check_layers(n_layers)

    def _check_layers(self, n_layers: int) -> list[int]:
        layers = self.only_layers
        if layers is None:
            return list(range(n_layers))
        layers = int_array_as_list(layers, "HeadMask.only_layers")
        if isinstance(layers, numbers.Integral) and not isinstance(layers, bool):
            layers = [layers]
        allowed = f"an int layer, a list of distinct layers in 0..{n_layers - 1}, or None (every layer)"
        return distinct_layers(layers, n_layers, "HeadMask.only_layers", allowed, "the mask")

    def layers(self, n_layers: int) -> list[int]:
        return list(self._layers)

    def requires_grad(self) -> bool:
        return self.mask.requires_grad

    def z(self, z: torch.Tensor, call: AttnCall) -> torch.Tensor:
        """z: [batch, pos, head, d_head_v] -> masked z."""
        b = z.shape[0]
        xi = self.mask[..., call.layer, :]  # [head] or [mask_batch, head]
        if xi.dim() == 2 and xi.shape[0] != b:
            raise ValueError(f"HeadMask.mask has batch {xi.shape[0]} but the run has batch {b}")
        xi = (xi[:, None, :, None] if xi.dim() == 2 else xi[None, None, :, None]).to(device=z.device, dtype=z.dtype)
        base = self._baseline(z, call)
        if base is None:
            return z * xi
        return z * xi + (1 - xi) * base

    def _baseline(self, z: torch.Tensor, call: AttnCall) -> torch.Tensor | None:
        if isinstance(self.baseline, dict):
            t = self.baseline.get(call.layer)
            if t is None:
                return None  # no baseline given for this layer: zero
            try:
                return torch.broadcast_to(t.to(device=z.device, dtype=z.dtype), z.shape)
            except RuntimeError:
                raise ValueError(f"HeadMask.baseline[{call.layer}] has shape {tuple(t.shape)}, which does not "
                                 f"broadcast to this run's hook_z {tuple(z.shape)}") from None
        if self.baseline == "mean":
            means = self.__dict__.setdefault("_prompt_means", {})
            return prompt_mean(means, call, lambda: token_mean(z.detach(), call.valid), "HeadMask(baseline='mean')",
                               "pass an explicit baseline={layer: tensor} (e.g. the prompt's mean hook_z, "
                               "[1, 1, n_heads, d_head_v])").to(z)
        return None
