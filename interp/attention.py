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

Packed sequences and chunked attention (Llama 4) are read from the mask function as segment ids
(`interp.mask_segments`): the mask handed to the layers carries them (`segments_of`), and the kernels confine each
query to its segment (`segment_ids=`, `interp.kernels.segments`).

What the kernels cannot express is refused with a ValueError instead of being dropped silently: other masks
(`or_mask_function` overlays such as Gemma 3's `use_bidirectional_attention`, bidirectional blocks, custom mask
functions), attention dropout (training mode), additive position biases (`position_bias`) and
`output_attentions=True`. Learned attention sinks (`s_aux`, GPT-OSS) are computed: they reach the kernels as
`sinks=` (`interp.kernels.sinks`).
"""

from __future__ import annotations

import torch

from .kernels import attention_with_stats
from .kernels.checks import has_padding, mark_padded, weak_tag, weak_tag_of
from .kernels.segments import mark_made
from .mask_segments import MU, closure_values, inner_functions, qualname, read_mask, segment_ids

NAME = "interp"
_registered = False
_keys_used: dict = {}  # id(mask) -> (weak reference, (keys used, padded)): masks made for a static cache's layers
_segments: dict = {}  # id(mask) -> (weak reference, (segment ids, padded)): masks made for segmented layers


def keys_used(mask) -> tuple[int, bool] | None:
    """(keys used, padded) when `mask` was made by `interp_mask` for a static cache that holds empty slots, else
    None."""
    return weak_tag_of(_keys_used, mask)


# parts of transformers' mask functions (`transformers.masking_utils`, by qualified name) the kernels cannot
# reproduce, with what a user did to get them
_UNSUPPORTED_PARTS = {
    MU + "blockwise_overlay.<locals>.inner_mask": "bidirectional blocks (block_sequence_ids / token_type_ids)",
    MU + "sliding_window_bidirectional_overlay.<locals>.inner_mask": "a bidirectional sliding window",
    MU + "or_masks.<locals>.or_mask": "a mask widened by an or_mask_function (e.g. Gemma 3's "
                                       "use_bidirectional_attention)",
}


def _structure(fn, depth: int = 0):
    """A mask function as nested tuples: its qualified name, then what its closure holds (mask functions in turn,
    ints, other values by type name)."""
    if depth > 8:
        return ("...",)
    cells = []
    for v in closure_values(fn):
        if callable(v):
            cells.append(_structure(v, depth + 1))
        elif isinstance(v, int) and not isinstance(v, bool):
            cells.append(int(v))
        else:
            cells.append(type(v).__name__)
    return (qualname(fn), *cells)


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
        if qualname(f) in _UNSUPPORTED_PARTS:
            known.append(_UNSUPPORTED_PARTS[qualname(f)])
        if qualname(f).startswith(MU):
            todo.extend(inner_functions(f))
    specific = [k for k in known if k != _UNSUPPORTED_PARTS[MU + "or_masks.<locals>.or_mask"]]
    return (specific or known or [f"the custom mask function {qualname(fn)}"])[0]


def _plain(mask_function) -> bool | None:
    """True for transformers' causal and sliding-window causal mask functions (or none given), False for the
    bidirectional one, None for anything else."""
    from transformers import masking_utils as mu

    if mask_function is None or mask_function is mu.causal_mask_function:
        return True
    if mask_function is mu.bidirectional_mask_function:
        return False
    # a sliding-window causal mask: built as transformers' own sliding_window_causal_mask_function(w) builds it, for
    # a window w found in it (compared by structure, so a transformers release that composes it otherwise still
    # matches its own builder)
    make = getattr(mu, "sliding_window_causal_mask_function", None)
    shape = _structure(mask_function)
    if make is not None and any(shape == _structure(make(w)) for w in _ints(shape)):
        return True
    return None


def mask_layout(mask_function) -> tuple[bool, list]:
    """(causal, segment builders) of a transformers mask function: a causal, sliding-window causal or bidirectional
    base, under packed-sequence and chunked-attention overlays (`interp.mask_segments`); a ValueError naming the
    part for any other mask (the kernels apply only these, so anything else would be dropped silently)."""
    read = read_mask(mask_function, _plain)
    if read is not None:
        return read
    raise ValueError(
        f"interp attention cannot apply this attention mask: {_unsupported_part(mask_function)}. It applies causal, "
        "sliding-window causal and bidirectional masks with a 2-D padding mask, packed sequences and chunked "
        "attention (run this model with set_attn_implementation('eager') for other masks)")


def mask_is_causal(mask_function) -> bool:
    """Whether the mask function's base is causal (True: causal or sliding-window causal, or none given) or
    bidirectional (False); a ValueError naming the part for a mask the kernels cannot apply (`mask_layout`)."""
    return mask_layout(mask_function)[0]


def segments_of(mask) -> tuple[torch.Tensor, bool] | None:
    """(segment ids [batch, keys], whether the mask hides padding keys) when `mask` was made by `interp_mask` for a
    layer whose queries are confined to segments (packed sequences, chunked attention), else None."""
    return weak_tag_of(_segments, mask)


def _with_segments(mask, ids: torch.Tensor, device):
    """`mask` tagged with the segment ids for `interp_attention`; when there is no padding mask, an all-true one
    carries them (and the tag says it hides nothing)."""
    static = None if mask is None else keys_used(mask)  # a static cache's mask: (keys used, padded)
    padded = mask is not None if static is None else static[1]
    if mask is None:
        mask = torch.ones(ids.shape, dtype=torch.bool, device=device)
    mark_made(ids)  # made for this forward, never edited: checked and split into pieces once for every layer
    weak_tag(_segments, mask, (ids, padded))
    return mask


@torch.compiler.disable  # torch.compile (transformers compiles static-cache decoding on a GPU) runs it as it is
def interp_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                attention_mask=None, **kwargs):
    """Compact mask: the 2-D padding mask `[batch, kv_length]` (bool), or None when nothing is padded. With a static
    cache that has empty slots (fewer real keys than kv_length), a mask [batch, real keys] recorded for
    `interp_attention` to cut the cache's keys and values to (see the module's docstring). Packed sequences and
    chunked attention: the mask (an all-true one if nothing is padded) carries the keys' segment ids for
    `interp_attention` (`segments_of`). Any other mask function is refused (`mask_layout`)."""
    causal, builders = mask_layout(mask_function)
    mask, used = _compact(batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask, causal,
                          kwargs.get("device"))
    if builders:
        device = kwargs.get("device") if attention_mask is None else attention_mask.device
        ids = segment_ids(builders, int(kv_offset), kv_length, batch_size, device)
        if ids is not None:
            return _with_segments(mask, ids[:, :used], device)
    return mask


def _compact(batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask, causal, device):
    """(interp_mask's mask, the number of keys the layer keeps)."""
    if not causal:  # an encoder, cross-attention (keys: another sequence), is_causal=False
        return _padding_only(attention_mask, kv_length), kv_length
    # keys that hold tokens: those seen before (the cache's query offset; a 0-d tensor for a static cache) and the
    # new ones. Fewer than kv_length: a static cache's empty slots, unless a mask as long as kv_length keeps keys
    # there (PEFT's prefix tuning, no cache: kv_length is the mask's length and q_offset 0)
    used = min(kv_length, int(q_offset) + q_length - kv_offset)
    if used < kv_length and attention_mask is not None and attention_mask.shape[-1] >= kv_offset + kv_length:
        if attention_mask[:, kv_offset + used:kv_offset + kv_length].any():
            used = kv_length
    if used < kv_length:
        if attention_mask is None:
            mask = torch.ones(batch_size, used, dtype=torch.bool, device=device)
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
        return mask, used
    return _padding_only(attention_mask, kv_length), kv_length


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
    segmented = None if attention_mask is None else segments_of(attention_mask)  # packed sequences, chunked layers
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
    ids = None
    wrapper = getattr(module, "_interp_model", None)
    if segmented is not None:
        ids, padded = segmented
        if not padded:  # an all-true mask that only carried the ids
            attention_mask = None
    if wrapper is not None:  # the layers that ran, and those confined to segments (HookedModel checks that packed
        layer = _layer_of(module)  # prompts were kept apart in every layer)
        wrapper._layers_run.add(layer)
        if segmented is not None:
            wrapper._layers_apart.add(layer)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if wrapper is None or wrapper._ctx is None:  # no hooks, no statistics: the plain fused path
        backend = wrapper.backend if wrapper is not None else "auto"
        out, _ = attention_with_stats(query, key, value, causal=causal, scale=scaling, sliding_window=sliding_window,
                                      attention_mask=attention_mask, stats="none", backend=backend,
                                      softcap=softcap, sinks=sinks, segment_ids=ids)
        return out.transpose(1, 2).contiguous(), None
    return wrapper.attention_call(_layer_of(module), module, query, key, value, attention_mask, scaling, causal,
                                  sliding_window, softcap, sinks=sinks, segment_ids=ids)
