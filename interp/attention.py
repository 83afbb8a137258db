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

What the kernels cannot express is refused with a ValueError instead of being dropped silently: masks other than
causal, sliding-window causal or bidirectional (packed sequences, chunked attention, `or_mask_function` overlays such
as Gemma 3's `use_bidirectional_attention`), attention dropout (training mode), additive position biases
(`position_bias`) and `output_attentions=True`. Learned attention sinks (`s_aux`, GPT-OSS) are computed: they reach
the kernels as `sinks=` (`interp.kernels.sinks`).
"""

from __future__ import annotations

import torch

from .kernels import attention_with_stats
from .kernels.checks import capturing, has_padding, mark_padded, weak_tag, weak_tag_of

NAME = "interp"
_registered = False
_keys_used: dict = {}  # id(mask) -> (weak reference, (keys used, padded)): masks made for a static cache's layers


def keys_used(mask) -> tuple[int, bool] | None:
    """(keys used, padded) when `mask` was made by `interp_mask` for a static cache that holds empty slots, else
    None."""
    return weak_tag_of(_keys_used, mask)


# parts of transformers' mask functions (`transformers.masking_utils`, by qualified name) the kernels cannot
# reproduce, with what a user did to get them
_MU = "transformers.masking_utils."
_PACKED = ("packed sequences (position_ids that restart within a row, passed without an attention_mask; pass one "
           "sequence per row with an attention_mask instead)")
_PACKED_PART = _MU + "packed_sequence_mask_function.<locals>.inner_mask"
_UNSUPPORTED_PARTS = {
    _PACKED_PART: _PACKED,
    _MU + "remap_positions_for_packed_sequence.<locals>.inner_mask": _PACKED,
    _MU + "chunked_overlay.<locals>.inner_mask": "chunked attention (config.attention_chunk_size, Llama 4)",
    _MU + "blockwise_overlay.<locals>.inner_mask": "bidirectional blocks (block_sequence_ids / token_type_ids)",
    _MU + "sliding_window_bidirectional_overlay.<locals>.inner_mask": "a bidirectional sliding window",
    _MU + "or_masks.<locals>.or_mask": "a mask widened by an or_mask_function (e.g. Gemma 3's "
                                       "use_bidirectional_attention)",
}


def _qualname(fn) -> str:
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _closure_values(fn) -> list:
    """What a function's closure holds, a tuple's items one by one (empty cells left out)."""
    found = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        found.extend(value if isinstance(value, tuple) else (value,))
    return found


def _inner_functions(fn) -> list:
    """The mask functions a transformers combination (and_masks, or_masks, a remap) closes over, else []."""
    return [v for v in _closure_values(fn) if callable(v)]


def _structure(fn, depth: int = 0):
    """A mask function as nested tuples: its qualified name, then what its closure holds (mask functions in turn,
    ints, other values by type name)."""
    if depth > 8:
        return ("...",)
    cells = []
    for v in _closure_values(fn):
        if callable(v):
            cells.append(_structure(v, depth + 1))
        elif isinstance(v, int) and not isinstance(v, bool):
            cells.append(int(v))
        else:
            cells.append(type(v).__name__)
    return (_qualname(fn), *cells)


def _ints(shape) -> set:
    """The ints anywhere in a `_structure`."""
    found = set()
    for v in shape[1:]:
        if isinstance(v, tuple):
            found |= _ints(v)
        elif isinstance(v, int):
            found.add(v)
    return found


def _unsupported_part(fn) -> str:
    """What in the mask function `fn` the kernels cannot reproduce, in words (the most specific part found)."""
    todo, known = [fn], []
    for _ in range(64):  # a few levels of and_masks / or_masks / remaps
        if not todo:
            break
        f = todo.pop(0)
        if _qualname(f) in _UNSUPPORTED_PARTS:
            known.append(_UNSUPPORTED_PARTS[_qualname(f)])
        if _qualname(f).startswith(_MU):
            todo.extend(_inner_functions(f))
    specific = [k for k in known if k != _UNSUPPORTED_PARTS[_MU + "or_masks.<locals>.or_mask"]]
    return (specific or known or [f"the custom mask function {_qualname(fn)}"])[0]


def _without_packing(fn):
    """transformers adds a packed-sequence part to the mask of every forward given position_ids without an attention
    mask or cache whenever it cannot look at them (a CUDA graph capture, torch.compile): and_masks(remap(X), packed).
    When its sequence ids mark one sequence per row, or cannot be read (a capture; interp's GraphedRun feeds
    positions 0..n-1), that is X; then X is returned, else None."""
    if _qualname(fn) != _MU + "and_masks.<locals>.and_mask":
        return None
    parts = _inner_functions(fn)
    packed = [p for p in parts if _qualname(p) == _PACKED_PART]
    rest = [p for p in parts if _qualname(p) != _PACKED_PART]
    if len(packed) != 1 or len(rest) != 1:
        return None
    ids = [v for v in _closure_values(packed[0]) if isinstance(v, torch.Tensor)]
    if len(ids) != 1 or ids[0].dim() != 2:
        return None
    if not capturing() and bool(ids[0][:, -1].any()):
        return None  # several sequences in a row: really packed
    base = rest[0]
    if _qualname(base) == _MU + "remap_positions_for_packed_sequence.<locals>.inner_mask":
        inner = _inner_functions(base)  # (positions that rise by one per token keep a causal or window relation)
        if len(inner) != 1:
            return None
        base = inner[0]
    return base


def mask_is_causal(mask_function) -> bool:
    """True for transformers' causal and sliding-window causal mask functions (or none given), False for the
    bidirectional one; a ValueError naming the pattern for any other mask (the kernels apply only causal, sliding-window
    and padding masks, so anything else would be dropped silently)."""
    from transformers import masking_utils as mu

    if mask_function is None or mask_function is mu.causal_mask_function:
        return True
    if mask_function is mu.bidirectional_mask_function:
        return False
    base = _without_packing(mask_function)
    if base is not None:
        return mask_is_causal(base)
    # a sliding-window causal mask: built as transformers' own sliding_window_causal_mask_function(w) builds it, for
    # a window w found in it (compared by structure, so a transformers release that composes it otherwise still
    # matches its own builder)
    make = getattr(mu, "sliding_window_causal_mask_function", None)
    shape = _structure(mask_function)
    if make is not None and any(shape == _structure(make(w)) for w in _ints(shape)):
        return True
    raise ValueError(
        f"interp attention cannot apply this attention mask: {_unsupported_part(mask_function)}. It applies causal, "
        "sliding-window causal and bidirectional masks with a 2-D padding mask (run this model with "
        "set_attn_implementation('eager') for other masks)")


@torch.compiler.disable  # torch.compile (transformers compiles static-cache decoding on a GPU) runs it as it is
def interp_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                attention_mask=None, **kwargs):
    """Compact mask: the 2-D padding mask `[batch, kv_length]` (bool), or None when nothing is padded. With a static
    cache that has empty slots (fewer real keys than kv_length), a mask [batch, real keys] recorded for
    `interp_attention` to cut the cache's keys and values to (see the module's docstring). A mask function other
    than causal, sliding-window causal or bidirectional is refused (`mask_is_causal`)."""
    if not mask_is_causal(mask_function):  # an encoder, cross-attention (keys: another sequence), is_causal=False
        return _padding_only(attention_mask, kv_length)
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
        if padded:
            mark_padded(mask)  # the layers' input checks do not sync again
        weak_tag(_keys_used, mask, (used, padded))
        return mask
    return _padding_only(attention_mask, kv_length)


def _padding_only(attention_mask, kv_length):
    """The last kv_length columns of the 2-D padding mask (bool, marked padded), or None when nothing is padded."""
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


def check_call_options(module, dropout, kwargs: dict) -> None:
    """A ValueError for what a model asks of its attention function that the kernels do not compute (each would
    otherwise be dropped silently): attention dropout, an additive position bias, returned attention weights.
    (Attention sinks, `s_aux`, are computed: `interp_attention` hands them to the kernels as `sinks`.)"""
    where = type(module).__name__
    if dropout is not None and float(dropout) > 0:
        raise ValueError(
            f"{where} asks for attention dropout {float(dropout):g} (the model is in training mode with a nonzero "
            "attention dropout); interp attention has no dropout: call model.eval(), or set the config's attention "
            "dropout to 0 before training through it")
    if kwargs.get("position_bias") is not None:
        raise ValueError(
            f"{where} adds a position bias [batch, heads, queries, keys] to the scores, which interp's kernels do not "
            "take (they apply only causal, sliding-window and padding masks); run this model with "
            "set_attn_implementation('eager')")
    if kwargs.get("output_attentions"):
        refuse_output_attentions()


def refuse_output_attentions():
    """The ValueError for output_attentions=True, asked of a layer or of the whole model (`interp.model`)."""
    raise ValueError(
        "output_attentions=True: interp attention never forms the attention weights, so it returns none; capture "
        "patterns with HookedModel.run_with_cache(..., pattern=True) (hook_pattern), or run the model with "
        "set_attn_implementation('eager')")


@torch.compiler.disable  # torch.compile graph-breaks here: interp's kernels, hooks and statistics run eagerly
def interp_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, sliding_window=None,
                     softcap=None, is_causal=None, **kwargs):
    check_call_options(module, dropout, kwargs)
    sinks = kwargs.get("s_aux")  # GPT-OSS: one learned sink logit per query head
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
    wrapper = getattr(module, "_interp_model", None)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if wrapper is None or wrapper._ctx is None:  # no hooks, no statistics: the plain fused path
        backend = wrapper.backend if wrapper is not None else "auto"
        out, _ = attention_with_stats(query, key, value, causal=causal, scale=scaling, sliding_window=sliding_window,
                                      attention_mask=attention_mask, stats="none", backend=backend,
                                      softcap=softcap, sinks=sinks)
        return out.transpose(1, 2).contiguous(), None
    return wrapper.attention_call(_layer_of(module), module, query, key, value, attention_mask, scaling, causal,
                                  sliding_window, softcap, sinks=sinks)
