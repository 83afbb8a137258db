"""Arbitrary attention masks (`attention_with_stats(..., attn_mask=...)`), applied by the reference backend.

The Triton kernels apply the masks they can compute from positions (causal, sliding window, padding, segments) and
never read an n x n mask. Everything else a model may ask for arrives here:
- a dense mask [batch or 1, heads or 1, q_len, k_len] in SDPA's convention: bool (True = the query may attend to the
  key) or floating point (added to the scaled scores; -inf, or anything at or below -1e30 or its dtype's most
  negative value, hides the key; a finite very negative value such as -1e4 is a bias, as in SDPA: its key gets
  next to no mass but still counts in key_count), e.g. a 4-D mask a user passes to a Hugging Face model;
- a mask function `fn(batch_idx, head_idx, q_idx, kv_idx) -> bool tensor`, in transformers' convention (the
  `masking_utils` functions: or_mask overlays such as Gemma 3's bidirectional attention, bidirectional blocks over
  image tokens, custom functions). It is called with broadcastable index tensors, batch_idx [b, 1, 1, 1], head_idx
  [1, h, 1, 1], q_idx [1, 1, chunk, 1] and kv_idx [1, 1, 1, keys], and returns a bool tensor that broadcasts to
  [b, h, chunk, keys]. q_idx is each query's position on the key axis (query i sits at i + k_len - q_len), so
  `kv_idx <= q_idx` is the causal mask.

Either one is combined with every other mask of the call (causal, window, padding, segments, key_bias) by "and". The
reference backend evaluates it one query chunk at a time (`tile`), so a mask function never costs n x n memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .checks import MASK_BIAS, capturing  # an additive value at or below MASK_BIAS hides the key

MaskFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class AttnMask:
    """A checked `attn_mask`: exactly one of `dense` (bool, or float with hidden entries as -inf) and `fn`."""

    dense: torch.Tensor | None = None  # [b|1, h|1, q_len, k_len]
    fn: MaskFunction | None = None
    describe: str = "attn_mask"  # how errors name it

    def tile(self, q_start: int, q_end: int, k_lo: int, k_hi: int, q_offset: int, batch: int, heads: int,
             device) -> torch.Tensor:
        """Rows q_start..q_end-1, keys k_lo..k_hi-1 -> [b|1, h|1, rows, keys]: bool (may attend) or float32 (added to
        the scaled scores, -inf where hidden)."""
        if self.dense is not None:
            t = self.dense[:, :, q_start:q_end, k_lo:k_hi]
            return t.float() if t.is_floating_point() else t
        return call_mask_function(self.fn, self.describe, batch, heads, q_start + q_offset, q_end + q_offset,
                                  k_lo, k_hi, device)


def call_mask_function(fn: MaskFunction, describe: str, batch: int, heads: int, q_lo: int, q_hi: int, k_lo: int,
                       k_hi: int, device) -> torch.Tensor:
    """fn on the index tensors of queries at key positions q_lo..q_hi-1 and keys k_lo..k_hi-1, checked:
    -> bool [b|1, h|1, q_hi - q_lo, k_hi - k_lo]."""
    idx = dict(device=device)
    args = (torch.arange(batch, **idx)[:, None, None, None], torch.arange(heads, **idx)[None, :, None, None],
            torch.arange(q_lo, q_hi, **idx)[None, None, :, None], torch.arange(k_lo, k_hi, **idx)[None, None, None, :])
    out = fn(*args)
    want = (batch, heads, q_hi - q_lo, k_hi - k_lo)
    if isinstance(out, bool):
        out = torch.tensor(out, device=device)
    if not isinstance(out, torch.Tensor) or out.dtype != torch.bool:
        got = f"a {out.dtype} tensor" if isinstance(out, torch.Tensor) else type(out).__name__
        raise TypeError(f"{describe} must return a bool tensor (True = the query may attend to the key), got {got}")
    try:
        shape = torch.broadcast_shapes(out.shape, want)
    except RuntimeError:
        shape = None
    if shape != want:
        raise ValueError(f"{describe} must return a bool tensor that broadcasts to [batch, heads, queries, keys] = "
                         f"{list(want)} when called with index tensors of shapes [b, 1, 1, 1], [1, h, 1, 1], "
                         f"[1, 1, queries, 1], [1, 1, 1, keys]; got shape {tuple(out.shape)}")
    if out.device != device:
        out = out.to(device)
    while out.dim() < 4:
        out = out[None]
    return out


def check_run_mask(attn_mask, where: str = "attn_mask") -> None:
    """What a run's own mask may be before any layer's shapes are known: None, a mask function, or a 4-D tensor
    (each layer checks its shape, dtype and values: `check_attn_mask`)."""
    if attn_mask is None or (callable(attn_mask) and not isinstance(attn_mask, torch.Tensor)):
        return
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"{where} must be None, a mask function fn(batch_idx, head_idx, q_idx, kv_idx) -> bool tensor "
                        f"or a 4-D tensor [batch or 1, heads or 1, q_len, k_len], got {type(attn_mask).__name__}")
    if attn_mask.dim() != 4:
        raise ValueError(f"{where} must be a 4-D tensor [batch or 1, heads or 1, q_len, k_len] (or a mask function), "
                         f"got shape {tuple(attn_mask.shape)}")


def check_attn_mask(attn_mask, b: int, h: int, lq: int, lk: int, device, describe: str = "attn_mask") -> AttnMask:
    """attn_mask (a tensor or a mask function, module docstring) checked -> AttnMask. A mask function is called once
    here on the first query row, so that a wrong one fails before any attention runs."""
    if isinstance(attn_mask, AttnMask):
        return attn_mask
    if callable(attn_mask) and not isinstance(attn_mask, torch.Tensor):
        call_mask_function(attn_mask, describe, b, h, lk - lq, lk - lq + 1, 0, lk, device)
        return AttnMask(fn=attn_mask, describe=describe)
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"{describe} must be a tensor [batch or 1, heads or 1, q_len, k_len] (bool, or float added to "
                        f"the scores) or a mask function fn(batch_idx, head_idx, q_idx, kv_idx), got "
                        f"{type(attn_mask).__name__}")
    if (attn_mask.dim() != 4 or attn_mask.shape[0] not in (1, b) or attn_mask.shape[1] not in (1, h)
            or tuple(attn_mask.shape[2:]) != (lq, lk)):
        raise ValueError(f"{describe} must be [batch or 1, heads or 1, q_len, k_len] = [{b}, {h}, {lq}, {lk}], got "
                         f"shape {tuple(attn_mask.shape)}")
    if attn_mask.device != device:
        raise ValueError(f"{describe} is on {attn_mask.device} but q is on {device}")
    if attn_mask.dtype == torch.bool:
        return AttnMask(dense=attn_mask, describe=describe)
    if not attn_mask.is_floating_point():
        raise TypeError(f"{describe} must be bool (True = the query may attend to the key) or floating point (added to "
                        f"the scaled scores; -inf hides the key), got dtype {attn_mask.dtype}")
    if attn_mask.requires_grad:
        raise ValueError(f"{describe} requires grad; a mask carries no gradient here: pass it detached (a learned "
                         "per-key bias can go in key_bias, which is differentiable)")
    # (one device sync per check; none while a CUDA graph is being captured, where a sync is an error: a graphed
    # call is checked when it runs eagerly first)
    syncs = not capturing(attn_mask)
    if syncs and bool((torch.isnan(attn_mask) | (attn_mask == float("inf"))).any()):
        raise ValueError(f"{describe} has NaN or +inf values; an additive mask must be finite, or -inf to hide a key")
    if syncs and attn_mask.dtype == torch.float64 and bool((attn_mask > torch.finfo(torch.float32).max).any()):
        raise ValueError(f"{describe} has values beyond float32's range; the scores are float32")
    # torch.finfo(dtype).min, as transformers' eager masks write "hidden", means hidden: -inf (a float64 mask is read
    # as float32, tile by tile)
    hidden = attn_mask <= max(MASK_BIAS, torch.finfo(attn_mask.dtype).min)
    if not syncs or bool(hidden.any()):
        attn_mask = attn_mask.masked_fill(hidden, float("-inf"))
    return AttnMask(dense=attn_mask, describe=describe)
