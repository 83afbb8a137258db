"""Interventions by stage: where in a layer's attention an intervention acts, and what it is handed there.

The attention path of `HookedModel` runs these stages in order for every layer, and at each stage calls the
interventions that declare it (`Intervention.stages`), in the order the user gave them:

    qkv        (q [batch, heads, q_len, d_head], k [batch, kv_heads, k_len, d_head], v [..., d_head_v]) -> (q, k, v)
    key_bias   -> an additive score bias [batch, heads, k_len] (or None); biases of several interventions add up
    probs      p [batch, heads, chunk, k_len] of one query chunk -> p   (forces the PyTorch reference path)
    out        attention output [batch, heads, q_len, d_head_v] -> output  (may re-run attention: `call.attend`)
    z          z [batch, q_len, heads, d_head_v] (what hook_z sees) -> z
    resid_pre, attn_out, mlp_out, resid_post   residual-stream tensors [batch, pos, d_model] -> tensor

(d_head_v, the value head dim, is d_head except in multi-head latent attention: `ModelConfig.d_head_v`.)

A new intervention is a subclass that sets `stages` and implements the method of each stage it names; nothing in
`HookedModel` changes. Interventions that span layers (e.g. `HeadMask`) say so in `layers()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

ATTN_STAGES = ("qkv", "key_bias", "probs", "out", "z")
RESID_STAGES = ("resid_pre", "attn_out", "mlp_out", "resid_post")
STAGES = ATTN_STAGES + RESID_STAGES


@dataclass
class AttnCall:
    """One layer's attention call as the stages see it."""

    layer: int
    query: torch.Tensor  # [batch, heads, q_len, d_head]
    key: torch.Tensor  # [batch, kv_heads, k_len, d_head]
    value: torch.Tensor  # [batch, kv_heads, k_len, d_head_v]
    valid: torch.Tensor | None  # [batch, pos] padding mask of the run (True = real token), None if unpadded
    attend: Callable[..., torch.Tensor]  # attend(prob_hook=None) -> output [batch, heads, q_len, d_head_v]

    @property
    def batch(self) -> int:
        return self.query.shape[0]

    @property
    def heads(self) -> int:
        return self.query.shape[1]

    @property
    def q_len(self) -> int:
        return self.query.shape[2]

    @property
    def k_len(self) -> int:
        return self.key.shape[2]

    @property
    def q_offset(self) -> int:
        """Absolute key position of query 0 (queries are aligned to the end of the keys)."""
        return self.k_len - self.q_len

    @property
    def device(self) -> torch.device:
        return self.query.device


class Intervention:
    """Base class of everything passed as `interventions=[...]`.

    Subclasses set `stages` (a tuple of stage names) and implement the matching methods (`resid` for the residual
    stages); `validate` is called once per run with the model's sizes and raises ValueError/TypeError for bad settings
    (default: nothing to check). `layers` says which layers it acts on (default: `[self.layer]`); the run checks that
    they are distinct ints in 0..n_layers-1.

    Each stage method must return a tensor of the shape, dtype and device it was handed (qkv: three of them;
    key_bias: None or a float bias [batch or 1, heads or 1, k_len]), else the run raises ValueError/TypeError naming
    the class and the stage. `resizes_batch = True` lets an intervention change the batch dimension between stages
    (`InputPatch` runs several copies of the batch); the other dimensions must still match. `keeps_row_start = True`
    marks one that treats a row's first keys as every query's sinks: refused on prompts packed into one row
    (`interp.packing`), where those keys belong to the first prompt only.
    """

    stages: ClassVar[tuple[str, ...]] = ()
    resizes_batch: ClassVar[bool] = False
    keeps_row_start: ClassVar[bool] = False

    def validate(self, n_layers: int, n_heads: int) -> None:
        """Raise ValueError/TypeError for settings that do not fit a model of this size (default: nothing to check;
        the layers are checked by the run)."""

    def layers(self, n_layers: int) -> list[int]:
        """The layers it acts on (default: the one in its `layer` field)."""
        layer = getattr(self, "layer", _MISSING)
        if layer is _MISSING:
            raise TypeError(f"{type(self).__name__} has no `layer` attribute: an Intervention acts on the layer in "
                            "its `layer` field (set self.layer), or on the layers its `layers(n_layers)` method "
                            "returns (override it)")
        return [layer]

    @property
    def needs_probs(self) -> bool:
        """True when the intervention reshapes probabilities (the run then uses the PyTorch reference path)."""
        return "probs" in self.stages

    def requires_grad(self) -> bool:
        """True when the intervention holds a tensor that requires grad (the run then records a graph)."""
        return False

    # stage methods: each receives the tensor(s) of its stage and the AttnCall, and returns the replacement
    def qkv(self, q, k, v, call: AttnCall):
        return q, k, v

    def key_bias(self, call: AttnCall) -> torch.Tensor | None:
        return None

    def probs(self, p: torch.Tensor, q_start: int, call: AttnCall) -> torch.Tensor:
        return p

    def out(self, out: torch.Tensor, call: AttnCall) -> torch.Tensor:
        return out

    def z(self, z: torch.Tensor, call: AttnCall) -> torch.Tensor:
        return z

    def resid(self, stage: str, x: torch.Tensor, layer: int, valid: torch.Tensor | None) -> torch.Tensor:
        return x


_MISSING = object()
METHOD_OF_STAGE = {**{s: s for s in ATTN_STAGES}, **{s: "resid" for s in RESID_STAGES}}
SIGNATURE = {"qkv": "(self, q, k, v, call)", "key_bias": "(self, call)", "probs": "(self, p, q_start, call)",
             "out": "(self, out, call)", "z": "(self, z, call)", "resid": "(self, stage, x, layer, valid)"}
# what each stage hands its method, for the messages of `checked`
LAYOUT = {"qkv": "[batch, heads or kv_heads, len, d_head (v: d_head_v)]", "probs": "[batch, heads, chunk, k_len]",
          "out": "[batch, heads, q_len, d_head_v]", "z": "[batch, q_len, heads, d_head_v]",
          **{s: "[batch, pos, d_model]" for s in RESID_STAGES}}


def check_stages(iv: Intervention) -> None:
    """`iv.stages`: a non-empty tuple/list of known stage names, each with its method implemented (a stage whose
    method is the base class's would do nothing)."""
    name, stages = type(iv).__name__, iv.stages
    if isinstance(stages, (str, bytes)) or not isinstance(stages, (tuple, list)):
        raise TypeError(f"{name}.stages must be a tuple of stage names from {STAGES}, e.g. ('z',), got {stages!r}")
    unknown = [s for s in stages if s not in STAGES]
    if not stages or unknown:
        raise ValueError(f"{name}.stages must name stages from {STAGES}, got {stages!r}")
    for s in stages:
        method = METHOD_OF_STAGE[s]
        if getattr(type(iv), method, None) is getattr(Intervention, method) and method not in vars(iv):
            raise TypeError(f"{name}.stages names stage {s!r} but {name} does not implement its method "
                            f"{method}{SIGNATURE[method]}; implement it or drop {s!r} from stages")


def _got(out) -> str:
    return (f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else
            "None" if out is None else type(out).__name__)


def checked(iv: Intervention, stage: str, out, like: torch.Tensor, layer, what: str | None = None):
    """A stage method's return value, checked against the tensor it was handed (`like`): a tensor of its shape (the
    batch may differ when `iv.resizes_batch`), dtype and device. Attribute checks only (no device sync)."""
    fits = isinstance(out, torch.Tensor) and (out.shape == like.shape or (
        iv.resizes_batch and out.dim() == like.dim() and out.shape[1:] == like.shape[1:]))
    if fits and out.dtype == like.dtype and out.device == like.device:
        return out
    who = f"{type(iv).__name__}.{METHOD_OF_STAGE[stage]} (stage {stage!r}, layer {layer})"
    what = what or ("x" if stage in RESID_STAGES else stage)
    if not fits:
        shape = f"[any batch, {', '.join(map(str, like.shape[1:]))}]" if iv.resizes_batch else tuple(like.shape)
        raise ValueError(f"{who} returned {_got(out)} for {what}; it must return a tensor of {what}'s shape "
                         f"{shape} = {LAYOUT[stage]}")
    raise ValueError(f"{who} returned a {out.dtype} tensor on {out.device} for {what}; it must return a tensor of "
                     f"{what}'s dtype and device, {like.dtype} on {like.device} (cast with .to({what}.dtype) or "
                     f".to({what}))")


def checked_qkv(iv: Intervention, out, q, k, v, layer):
    """What a qkv method returned: a tuple (q, k, v), each checked against the one it was handed."""
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise ValueError(f"{type(iv).__name__}.qkv (stage 'qkv', layer {layer}) returned "
                         f"{_got(out) if not isinstance(out, (tuple, list)) else f'{len(out)} items'}; it must return "
                         f"a tuple (q, k, v) of tensors shaped like the q, k, v it was handed")
    return tuple(checked(iv, "qkv", o, t, layer, n) for o, t, n in zip(out, (q, k, v), "qkv"))


def checked_bias(iv: Intervention, bias, call: AttnCall):
    """What a key_bias method returned: None or a floating tensor [batch or 1, heads or 1, k_len] on the call's
    device."""
    if bias is None:
        return None
    b, h, lk = call.batch, call.heads, call.k_len
    if not (isinstance(bias, torch.Tensor) and bias.dim() == 3 and bias.shape[0] in (1, b)
            and bias.shape[1] in (1, h) and bias.shape[2] == lk and bias.is_floating_point()
            and bias.device == call.device):
        got = (f"a {bias.dtype} tensor of shape {tuple(bias.shape)} on {bias.device}"
               if isinstance(bias, torch.Tensor) else type(bias).__name__)
        raise ValueError(f"{type(iv).__name__}.key_bias (stage 'key_bias', layer {call.layer}) returned {got}; it "
                         f"must return None or a floating-point tensor [batch or 1, heads or 1, k_len] = "
                         f"[{b}, {h}, {lk}] on {call.device}")
    return bias
