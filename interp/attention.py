"""The attention function every wrapped Hugging Face model runs through (transformers' AttentionInterface).

`interp_attention` receives each layer's query/key/value (`[batch, heads, seq, d_head]`, GQA not expanded), runs
hooks and interventions, calls `interp.kernels.attention_with_stats`, and publishes statistics as hook points. The
companion mask function hands over only the 2-D padding mask: causal, sliding-window and padding masks are applied
inside the kernels, so nothing O(n^2) is ever built, even at 128k tokens.

Static KV caches (`generate(cache_implementation="static")`, `StaticCache`) hand every layer the whole preallocated
cache, [batch, kv_heads, max_cache_len, d_head], whose slots past the tokens seen so far are empty. The kernels align
the queries to the last key, so those slots must not reach them: the mask function, which knows how many keys are
real (the cache's query offset plus the new tokens), returns a mask of exactly that many keys and records it
(`keys_used`), and the attention function cuts the keys and values to it. A static sliding-window layer that has
filled its window already hands over only real keys, in order.
"""

from __future__ import annotations

import weakref

import torch

from .kernels import attention_with_stats
from .kernels.checks import has_padding, mark_padded

NAME = "interp"
_registered = False
_keys_used: dict = {}  # id(mask) -> (weak reference, keys used, padded): masks made for a static cache's layers


def keys_used(mask) -> tuple[int, bool] | None:
    """(keys used, padded) when `mask` was made by `interp_mask` for a static cache that holds empty slots, else
    None."""
    entry = _keys_used.get(id(mask))
    if entry is not None and entry[0]() is mask:
        return entry[1], entry[2]
    return None


def _mark_keys_used(mask: torch.Tensor, used: int, padded: bool) -> None:
    key = id(mask)

    def forget(ref, key=key):
        if _keys_used.get(key, (None,))[0] is ref:
            del _keys_used[key]

    _keys_used[key] = (weakref.ref(mask, forget), used, padded)


def interp_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                attention_mask=None, **kwargs):
    """Compact mask: the 2-D padding mask `[batch, kv_length]` (bool), or None when nothing is padded. With a static
    cache that has empty slots (fewer real keys than kv_length), a mask [batch, real keys] recorded for
    `interp_attention` to cut the cache's keys and values to (see the module's docstring)."""
    # keys that hold tokens: those seen before (the cache's query offset; a 0-d tensor for a static cache) and the
    # new ones. Fewer than kv_length: a static cache's empty slots, unless a mask as long as kv_length keeps keys
    # there (PEFT's prefix tuning, no cache: kv_length is the mask's length and q_offset 0)
    used = min(kv_length, int(q_offset) + q_length - kv_offset)
    if used < kv_length and attention_mask is not None and attention_mask.shape[-1] >= kv_offset + kv_length:
        if attention_mask[:, kv_offset + used:kv_offset + kv_length].any():
            used = kv_length
    if used < kv_length:
        if attention_mask is None:
            mask = torch.ones(batch_size, used, dtype=torch.bool, device=kwargs.get("device"))
        else:
            if attention_mask.shape[-1] < kv_offset + used:
                raise ValueError(
                    f"attention_mask covers {attention_mask.shape[-1]} tokens, but the cache and the new tokens hold "
                    f"{kv_offset + used}: pass a 2-D mask [batch, tokens seen + new tokens]")
            mask = attention_mask[:, kv_offset:kv_offset + used].to(torch.bool)
        padded = attention_mask is not None and has_padding(mask)
        _mark_keys_used(mask, used, padded)
        return mask
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
    if attention_mask is not None and attention_mask.shape[-1] != key.shape[-2]:
        static = keys_used(attention_mask)
        if static is None or static[0] > key.shape[-2]:
            raise ValueError(
                f"the attention mask covers {attention_mask.shape[-1]} keys but the layer has {key.shape[-2]}: "
                "a KV cache this attention function does not know handed it over")
        used, padded = static  # a static cache: its slots past the real keys are empty
        key, value = key[:, :, :used], value[:, :, :used]
        if not padded:
            attention_mask = None
        else:
            mark_padded(attention_mask)
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
