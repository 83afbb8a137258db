"""The attention function every wrapped Hugging Face model runs through (transformers' AttentionInterface).

`interp_attention` receives each layer's query/key/value (`[batch, heads, seq, d_head]`, GQA not expanded), runs
hooks and interventions, calls `interp.kernels.attention_with_stats`, and publishes statistics as hook points. The
companion mask function hands over only the 2-D padding mask: causal, sliding-window and padding masks are applied
inside the kernels, so nothing O(n^2) is ever built, even at 128k tokens.
"""

from __future__ import annotations

import torch

from .kernels import attention_with_stats
from .kernels.checks import has_padding, mark_padded

NAME = "interp"
_registered = False


def interp_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                attention_mask=None, **kwargs):
    """Compact mask: the 2-D padding mask `[batch, kv_length]` (bool), or None when nothing is padded."""
    if attention_mask is None:
        return None
    attention_mask = attention_mask[:, -kv_length:].to(torch.bool)  # a new tensor object for this forward
    if attention_mask.shape[1] == kv_length and not has_padding(attention_mask):
        return None
    mark_padded(attention_mask)  # the layers' input checks do not sync again
    return attention_mask


def register() -> None:
    """Register `interp` with transformers' attention and mask interfaces (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, interp_attention)
    AttentionMaskInterface.register(NAME, interp_mask)
    _registered = True


def _layer_of(module) -> int:
    layer = getattr(module, "_interp_layer", None)
    if layer is None:
        layer = getattr(module, "layer_idx", None)
    if layer is None:
        raise ValueError(f"{type(module).__name__} has no layer index; wrap the model with interp.HookedModel first")
    return layer


def interp_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, sliding_window=None,
                     softcap=None, is_causal=None, **kwargs):
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(
            "interp attention expects the compact 2-D padding mask; got a "
            f"{attention_mask.dim()}-D mask (a custom 4-D mask is not supported)"
        )
    wrapper = getattr(module, "_interp_model", None)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if wrapper is None or wrapper._ctx is None:  # no hooks, no statistics: the plain fused path
        backend = wrapper.backend if wrapper is not None else "auto"
        out, _ = attention_with_stats(query, key, value, causal=causal, scale=scaling, sliding_window=sliding_window,
                                      attention_mask=attention_mask, stats="none", backend=backend,
                                      softcap=softcap)
        return out.transpose(1, 2).contiguous(), None
    return wrapper.attention_call(_layer_of(module), module, query, key, value, attention_mask, scaling, causal,
                                  sliding_window, softcap)
