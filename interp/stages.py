"""Interventions by stage: where in a layer's attention an intervention acts, and what it is handed there.

The attention path of `HookedModel` runs these stages in order for every layer, and at each stage calls the
interventions that declare it (`Intervention.stages`), in the order the user gave them:

    qkv        (q [batch, heads, q_len, d_head], k/v [batch, kv_heads, k_len, d_head]) -> (q, k, v)
    key_bias   -> an additive score bias [batch, heads, k_len] (or None); biases of several interventions add up
    probs      p [batch, heads, chunk, k_len] of one query chunk -> p   (forces the PyTorch reference path)
    out        attention output [batch, heads, q_len, d_head] -> output  (may re-run attention: `call.attend`)
    z          z [batch, q_len, heads, d_head] (what hook_z sees) -> z
    resid_pre, attn_out, mlp_out, resid_post   residual-stream tensors [batch, pos, d_model] -> tensor

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
    value: torch.Tensor  # [batch, kv_heads, k_len, d_head]
    valid: torch.Tensor | None  # [batch, pos] padding mask of the run (True = real token), None if unpadded
    attend: Callable[..., torch.Tensor]  # attend(prob_hook=None) -> output [batch, heads, q_len, d_head]

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

    Subclasses set `stages` and implement the matching methods; `validate` is called once per run with the model's
    sizes and raises ValueError/TypeError for bad settings. `layers` says which layers it acts on.
    """

    stages: ClassVar[tuple[str, ...]] = ()

    def validate(self, n_layers: int, n_heads: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def layers(self, n_layers: int) -> list[int]:
        """The layers it acts on (default: the one in its `layer` field)."""
        return [self.layer]

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


def check_stages(iv: Intervention) -> None:
    unknown = [s for s in iv.stages if s not in STAGES]
    if not iv.stages or unknown:
        raise ValueError(f"{type(iv).__name__}.stages must name stages from {STAGES}, got {iv.stages!r}")
