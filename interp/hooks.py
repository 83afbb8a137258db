"""Hook points: their names (TransformerLens style), shapes, and the per-run context that the model consults.

Every hook function has the TransformerLens signature `fn(tensor, hook) -> tensor | None`; returning a tensor
replaces the activation (for hooks marked writable), returning None leaves it alone. `hook.name` and `hook.layer`
tell the function where it is.

d_head is the q/k head dim and d_head_v the value head dim (`ModelConfig.d_head_v`): the same number except in
multi-head latent attention (DeepSeek-V2/V3: q/k 192, v 128), where hook_v, hook_z and W_O's heads are d_head_v wide.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from .kernels.stats import KEY_STATS, QUERY_STATS

# name template -> (shape, writable). {l} is the layer index.
HOOK_POINTS: dict[str, tuple[str, bool]] = {
    "hook_embed": ("[batch, pos, d_model]", True),
    "blocks.{l}.hook_resid_pre": ("[batch, pos, d_model]", True),
    "blocks.{l}.hook_attn_out": ("[batch, pos, d_model]", True),
    "blocks.{l}.hook_mlp_out": ("[batch, pos, d_model]", True),
    "blocks.{l}.hook_resid_post": ("[batch, pos, d_model]", True),
    "blocks.{l}.attn.hook_q": ("[batch, query_pos, head, d_head]", True),
    "blocks.{l}.attn.hook_k": ("[batch, key_pos, kv_head, d_head]", True),
    "blocks.{l}.attn.hook_v": ("[batch, key_pos, kv_head, d_head_v]", True),
    "blocks.{l}.attn.hook_pattern": ("[batch, head, query_pos, key_pos]", True),
    "blocks.{l}.attn.hook_z": ("[batch, query_pos, head, d_head_v]", True),
    "blocks.{l}.attn.hook_result": ("[batch, query_pos, head, d_model]", False),
    "ln_final.hook_normalized": ("[batch, pos, d_model]", True),
}
# statistics hooks: read-only, computed by interp.kernels without n x n maps
STAT_HOOKS: dict[str, str] = {}
for _s in QUERY_STATS:
    STAT_HOOKS[f"hook_query_{_s}"] = _s
for _s in KEY_STATS:
    STAT_HOOKS[f"hook_{_s}"] = _s
for _h in STAT_HOOKS:
    HOOK_POINTS[f"blocks.{{l}}.attn.{_h}"] = (
        "[batch, head, key_pos]" if STAT_HOOKS[_h] in KEY_STATS else "[batch, head, query_pos]", False
    )
HOOK_OF_STAT = {s: h for h, s in STAT_HOOKS.items()}  # "entropy" -> "hook_query_entropy"

_LAYER_RE = re.compile(r"^blocks\.([^.]+)\.(.+)$")
_PLAIN_INT = re.compile(r"^(0|[1-9][0-9]*)$")  # ASCII digits, no leading zero: the only spelling hooks fire under


def all_hook_names(n_layers: int) -> list[str]:
    names = []
    for template in HOOK_POINTS:
        if "{l}" in template:
            names.extend(template.format(l=l) for l in range(n_layers))
        else:
            names.append(template)
    return names


def parse_hook_name(name: str, n_layers: int) -> tuple[int | None, str]:
    """'blocks.3.attn.hook_z' -> (3, 'blocks.{l}.attn.hook_z'). Unknown names raise with close matches."""
    if not isinstance(name, str):
        raise TypeError(f"hook names are strings, got {type(name).__name__}")
    return _parse_hook_name(name, n_layers)


@functools.lru_cache(maxsize=65536)
def _parse_hook_name(name: str, n_layers: int) -> tuple[int | None, str]:
    """parse_hook_name's work, remembered: a run with every statistic names 9 hook points per layer, parsed at
    every run (exceptions are not cached: a bad name raises each time)."""
    m = _LAYER_RE.match(name)
    if m:
        template = "blocks.{l}." + m.group(2)
        if template in HOOK_POINTS:
            if not _PLAIN_INT.match(m.group(1)):
                raise ValueError(f"hook {name!r}: the layer must be a plain number (ASCII digits, no leading zero, "
                                 f"e.g. 'blocks.1.{m.group(2)}'), got {m.group(1)!r}")
            layer = int(m.group(1))
            if layer >= n_layers:
                raise ValueError(f"hook {name!r}: layer {layer} out of range; the model has layers 0..{n_layers - 1}")
            return layer, template
    elif name in HOOK_POINTS:
        return None, name
    close = difflib.get_close_matches(name, all_hook_names(n_layers), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown hook name {name!r}{hint} (model.hook_names() lists all of them)")


@functools.lru_cache(maxsize=None)
def _template_info(template: str) -> tuple[str | None, bool]:
    """(the statistic a hook point publishes, or None; whether its hooks may replace the tensor)."""
    last = template.rsplit(".", 1)[-1]
    stat = STAT_HOOKS[last] if template.startswith("blocks.{l}.attn.hook_") and last in STAT_HOOKS else None
    return stat, HOOK_POINTS[template][1]


@dataclass
class HookPoint:
    """What a hook function receives as `hook`."""

    name: str
    layer: int | None

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


HookFn = Callable[[torch.Tensor, HookPoint], "torch.Tensor | None"]


@dataclass
class RunContext:
    """What is active during one forward pass: hooks, statistics to capture, interventions."""

    n_layers: int
    hooks: dict[str, list[HookFn]] = field(default_factory=dict)
    writable: dict[str, bool] = field(default_factory=dict)  # hook name -> may its functions replace the tensor
    stats: dict[int, tuple[str, ...]] = field(default_factory=dict)  # layer -> statistic names
    stat_options: dict = field(default_factory=dict)  # sink_tokens, local_window, span
    interventions: dict[int, list] = field(default_factory=dict)  # layer -> [Intervention]
    backend: str = "auto"
    bwd_hooks: dict[str, list[HookFn]] = field(default_factory=dict)  # hook name -> functions of its gradient
    grad_names: set = field(default_factory=set)  # hook names whose live tensors are kept for grad_of
    live: dict[str, torch.Tensor] = field(default_factory=dict)  # hook name -> the tensor the forward went on with
    grad: bool = False  # record a graph from the embeddings on (gradients of activations requested)
    checkpoint: bool = False  # gradient runs keep block inputs only and recompute blocks in the backward
    recomputing: bool = False  # a checkpointed block is being recomputed (during the backward): no bookkeeping
    points: dict[str, "HookPoint"] = field(default_factory=dict)  # hook name -> the HookPoint its functions get
    layer_batch: object = None  # an interp.layer_batch.LayerBatch: statistics published after the layer (run_with_cache)
    attn_mask: object = None  # the run's own mask, instead of the model's (`HookedModel.hooks(attn_mask=)`)

    def add_hook(self, name: str, fn: HookFn) -> None:
        layer, template = parse_hook_name(name, self.n_layers)
        if not callable(fn):
            raise TypeError(f"hook function for {name!r} must be callable, got {type(fn).__name__}")
        stat, writable = _template_info(template)
        if stat is not None:
            have = self.stats.get(layer, ())
            if stat not in have:
                self.stats[layer] = have + (stat,)
        fns = self.hooks.get(name)
        if fns is None:
            self.hooks[name] = [fn]
        else:
            fns.append(fn)
        self.writable[name] = writable

    def add_bwd_hook(self, name: str, fn: HookFn) -> None:
        layer, template = parse_hook_name(name, self.n_layers)
        if not callable(fn):
            raise TypeError(f"backward hook function for {name!r} must be callable, got {type(fn).__name__}")
        if not differentiable(template):
            raise ValueError(f"{name!r} has no gradient (statistics and hook_result are side outputs that the "
                             f"forward pass does not go on with); hook hook_z or the residual stream instead")
        self.bwd_hooks.setdefault(name, []).append(fn)

    def track(self, name: str) -> None:
        """Keep the live tensor at `name` (for gradients of a metric with respect to it)."""
        self.grad_names.add(name)

    def tracked(self, name: str) -> bool:
        return name in self.bwd_hooks or name in self.grad_names

    def active(self, name: str) -> bool:
        return name in self.hooks or name in self.bwd_hooks or name in self.grad_names

    def apply(self, name: str, tensor: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Run the hooks registered at `name`; writable hooks may replace the tensor."""
        fns = self.hooks.get(name)
        if not fns:
            return self._after(name, tensor, layer)
        point = self._point(name, layer)
        writable = self.writable[name]
        for fn in fns:
            out = fn(tensor, point)
            if out is not None:
                if not writable:
                    raise ValueError(f"hook {name!r} is read-only; its function must return None")
                if not isinstance(out, torch.Tensor) or out.shape != tensor.shape:
                    raise ValueError(
                        f"hook {name!r} returned {getattr(out, 'shape', type(out).__name__)}; "
                        f"it must return None or a tensor of shape {tuple(tensor.shape)}"
                    )
                if out.dtype != tensor.dtype or out.device != tensor.device:
                    raise ValueError(
                        f"hook {name!r} returned a {out.dtype} tensor on {out.device}; it must return None or a "
                        f"tensor of the activation's dtype and device, {tensor.dtype} on {tensor.device} (cast with "
                        f".to(t.dtype) or .to(t))"
                    )
                tensor = out
        return self._after(name, tensor, layer)

    def _point(self, name: str, layer: int | None) -> HookPoint:
        """The HookPoint hook functions at `name` receive: one object per name and run."""
        point = self.points.get(name)
        if point is None:
            point = self.points[name] = HookPoint(name, layer)
        return point

    def _after(self, name: str, tensor: torch.Tensor, layer: int | None) -> torch.Tensor:
        if self.recomputing:  # tracked tensors and backward hooks belong to the first pass
            return tensor
        if name in self.grad_names:
            self.live[name] = tensor
        if name in self.bwd_hooks and tensor.requires_grad:
            point = self._point(name, layer)
            for fn in self.bwd_hooks[name]:
                tensor.register_hook(lambda g, fn=fn: _checked_grad(fn(g, point), g, name))
        return tensor


def differentiable(template: str) -> bool:
    """Whether a hook point lies on the forward path (so a metric has a gradient with respect to it)."""
    last = template.split(".")[-1]
    return last not in STAT_HOOKS and last != "hook_result"


def no_gradient(name: str) -> str | None:
    """Why the hook point `name` has no gradient of a metric, in words (None when it has one)."""
    last = name.rsplit(".", 1)[-1]
    if last == "hook_result":
        layer = name.split(".")[1] if name.startswith("blocks.") else "{l}"
        return (f"{name!r} has no gradient: hook_result is derived from hook_z and W_O beside the forward path (the "
                f"model never reads it); ask for 'blocks.{layer}.attn.hook_z' instead (hook_result = hook_z @ W_O "
                f"per head), or 'blocks.{layer}.hook_attn_out' (the heads' hook_result summed: each head's gradient "
                f"is its gradient)")
    if last in STAT_HOOKS:
        return (f"{name!r} has no gradient: attention statistics are side outputs of the kernels that the forward "
                f"pass does not go on with")
    return None


def _checked_grad(out, grad: torch.Tensor, name: str):
    if out is None:
        return None
    if not isinstance(out, torch.Tensor) or out.shape != grad.shape:
        raise ValueError(f"backward hook at {name!r} returned {getattr(out, 'shape', type(out).__name__)}; it must "
                         f"return None or a gradient of shape {tuple(grad.shape)}")
    if out.dtype != grad.dtype or out.device != grad.device:
        raise ValueError(f"backward hook at {name!r} returned a {out.dtype} gradient on {out.device}; it must return "
                         f"None or a gradient of the same dtype and device, {grad.dtype} on {grad.device}")
    return out
