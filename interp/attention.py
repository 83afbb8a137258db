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

Any other mask runs on the reference backend, exactly as transformers defines it: a mask function the kernels cannot
read from positions (`or_mask_function` overlays such as Gemma 3's `use_bidirectional_attention`, bidirectional
blocks over image tokens, custom mask functions) is carried by the mask handed to the layers (`mask_function_of`) and
evaluated one query chunk at a time (`attn_mask=` of `attention_with_stats`, `interp.kernels.attn_mask`); a 4-D mask
a user passes to the model is applied as it is. The Triton kernels never read such masks: a model loaded with
backend='triton' refuses them, and backend='auto' runs those layers on the reference (O(chunk * keys) memory, every
query-key pair computed).

What cannot be computed is refused with a ValueError instead of being dropped silently: attention dropout (training
mode), additive position biases (`position_bias`) and `output_attentions=True`. Learned attention sinks (`s_aux`,
GPT-OSS) are computed: they reach the kernels as `sinks=` (`interp.kernels.sinks`).
"""

from __future__ import annotations

import torch

from .kernels import attention_with_stats
from .kernels.attn_mask import AttnMask, check_attn_mask
from .kernels.checks import capturing, has_padding, mark_padded, weak_tag, weak_tag_of
from .kernels.segments import mark_made
from .mask_segments import AND, MU, PACKED_PART, closure_values, inner_functions, qualname, read_mask, segment_ids

NAME = "interp"
_registered = False
_keys_used: dict = {}  # id(mask) -> (weak reference, (keys used, padded)): masks made for a static cache's layers
_segments: dict = {}  # id(mask) -> (weak reference, (segment ids, padded)): masks made for segmented layers
_functions: dict = {}  # id(mask) -> (weak reference, (AttnMask, padded, keeps packed sequences apart)): masks made
# for other mask functions


def keys_used(mask) -> tuple[int, bool] | None:
    """(keys used, padded) when `mask` was made by `interp_mask` for a static cache that holds empty slots, else
    None."""
    return weak_tag_of(_keys_used, mask)


# parts of transformers' mask functions (`transformers.masking_utils`, by qualified name) the kernels cannot read
# from positions, with what a user did to get them (they name the mask in messages)
_FUNCTION_PARTS = {
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


def _mask_parts(fn):
    """`fn` and the mask functions inside it, breadth first, through transformers' and_masks / or_masks / remaps (a few
    levels; at most 64 parts)."""
    todo = [fn]
    for _ in range(64):
        if not todo:
            return
        f = todo.pop(0)
        yield f
        if qualname(f).startswith(MU):
            todo.extend(inner_functions(f))


def _describe_mask(fn) -> str:
    """What in the mask function `fn` the kernels cannot read from positions, in words (the most specific part)."""
    known = [_FUNCTION_PARTS[qualname(f)] for f in _mask_parts(fn) if qualname(f) in _FUNCTION_PARTS]
    specific = [k for k in known if k != _FUNCTION_PARTS[MU + "or_masks.<locals>.or_mask"]]
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


def mask_is_causal(mask_function) -> bool | None:
    """Whether the kernels read the mask function as causal (True: causal or sliding-window causal, or none given)
    or bidirectional (False), under packed-sequence and chunked overlays (`interp.mask_segments`); None for any other
    mask, which `interp_mask` hands to the layers as a mask function (`mask_function_of`)."""
    read = read_mask(mask_function, _plain)
    return None if read is None else read[0]


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
    `interp_attention` (`segments_of`). Any other mask function: the mask carries it (`mask_function_of`)."""
    if attention_mask is not None and getattr(attention_mask, "dim", lambda: 2)() != 2:
        raise _mask_rank_error(attention_mask)
    def as_function():  # the mask function itself, evaluated in the layers
        return _with_function(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function, attention_mask,
                              bool(kwargs.get("use_vmap", False)), kwargs.get("device"))

    read = read_mask(mask_function, _plain)
    if read is None:
        return as_function()
    causal, builders = read
    mask, used = _compact(batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask, causal,
                          kwargs.get("device"))
    if builders:
        device = kwargs.get("device") if attention_mask is None else attention_mask.device
        try:
            ids = segment_ids(builders, int(kv_offset), kv_length, batch_size, device)
        except ValueError:  # packed parts the segments cannot express: the mask function itself, exactly
            return as_function()
        if ids is not None:
            return _with_segments(mask, ids[:, :used], device)
    return mask


def _mask_rank_error(mask) -> ValueError:
    return ValueError("interp attention takes a 2-D padding mask [batch, keys] or a 4-D mask [batch, 1 or heads, "
                      f"queries, keys]; got a {mask.dim()}-D mask of shape {tuple(mask.shape)}")


def mask_function_of(mask) -> tuple[AttnMask, bool, bool] | None:
    """(the layer's mask as an `attn_mask`, whether the 2-D mask hides padding keys, whether it keeps packed sequences
    apart) when `mask` was made by `interp_mask` for a mask function the kernels cannot read from positions, else
    None."""
    return weak_tag_of(_functions, mask)


def _layer_mask_function(mask_function, q_length: int, kv_length: int, q_offset, kv_offset: int, use_vmap: bool):
    """transformers' mask function in `attn_mask`'s convention: a query's position on the layer's key axis (query i
    at i + kv_length - q_length) becomes transformers' q_idx (i + q_offset), a key j its kv_idx (j + kv_offset).
    use_vmap: called as transformers calls it when it asks for vmap (custom functions may index with scalars);
    else on broadcast index tensors."""
    shift = q_offset - (kv_length - q_length)  # (a 0-d tensor for a static cache: no sync)

    def fn(b, h, qi, ki):
        qi, ki, h = qi + shift, ki + kv_offset, h[:, :1]  # head 0 only, as transformers calls it
        if not use_vmap:
            return mask_function(b, h, qi, ki)
        from torch._dynamo._trace_wrapped_higher_order_op import TransformGetItemToIndex
        from transformers.masking_utils import _vmap_expansion_sdpa

        with TransformGetItemToIndex():
            return _vmap_expansion_sdpa(mask_function)(b.reshape(-1), h.reshape(-1), qi.reshape(-1),
                                                       ki.reshape(-1))

    return fn


def _with_function(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function, attention_mask, use_vmap,
                   device):
    """The 2-D padding mask [batch, keys] (an all-true one if nothing is padded), tagged with the layer's mask function
    for `interp_attention`. Padding as transformers reads it (the 2-D mask padded with False to kv_offset + kv_length,
    then from kv_offset on). Over a self-attention base (causal in the function), the keys past the tokens seen and
    new are a static cache's empty slots: the mask stops before them and is recorded (`keys_used`), as the causal
    path's, so that the layer's queries sit at its last real keys."""
    used = kv_length
    if _has_causal_base(mask_function):
        used = _keys_holding_tokens(q_length, kv_length, q_offset, kv_offset, attention_mask)
    if attention_mask is not None:
        device = attention_mask.device
        short = kv_offset + kv_length - attention_mask.shape[-1]
        pad = torch.nn.functional.pad(attention_mask, (0, short)) if short > 0 else attention_mask
        mask = pad[:, kv_offset:kv_offset + used].to(torch.bool)
        padded = has_padding(mask)
        if padded:
            mark_padded(mask)
    else:
        mask, padded = torch.ones(batch_size, used, dtype=torch.bool, device=device), False
    if used < kv_length:
        weak_tag(_keys_used, mask, (used, padded))
    fn = _layer_mask_function(mask_function, q_length, used, q_offset, kv_offset, use_vmap)
    describe = f"the model's attention mask ({_describe_mask(mask_function)})"
    weak_tag(_functions, mask, (AttnMask(fn=fn, describe=describe), padded, _keeps_packed_apart(mask_function)))
    return mask


def _has_causal_base(fn) -> bool:
    """Whether transformers' causal mask function is a part of `fn` (a self-attention mask: keys are the tokens
    seen and new), searched through its and_masks / or_masks / remaps."""
    from transformers import masking_utils as mu

    return any(f is mu.causal_mask_function for f in _mask_parts(fn))


def _keeps_packed_apart(fn) -> bool:
    """Whether `fn` is an and_masks with a packed-sequence part among its own parts (as transformers adds it, last):
    then no query sees another packed sequence's keys, whatever the other parts allow."""
    return qualname(fn) == AND and any(qualname(p) == PACKED_PART for p in inner_functions(fn))


def _keys_holding_tokens(q_length, kv_length, q_offset, kv_offset, attention_mask) -> int:
    """Of a self-attention layer's kv_length keys, those that hold tokens: the tokens seen before (the cache's query
    offset; a 0-d tensor for a static cache) and the new ones. Fewer than kv_length: a static cache's empty slots,
    unless a mask as long as kv_length keeps keys there (PEFT's prefix tuning, no cache: kv_length is the mask's
    length and q_offset 0)."""
    used = min(kv_length, int(q_offset) + q_length - kv_offset)
    if used < kv_length and attention_mask is not None and attention_mask.shape[-1] >= kv_offset + kv_length:
        if attention_mask[:, kv_offset + used:kv_offset + kv_length].any():
            used = kv_length
    return used


def _compact(batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask, causal, device):
    """(interp_mask's mask, the number of keys the layer keeps)."""
    if not causal:  # an encoder, cross-attention (keys: another sequence), is_causal=False
        return _padding_only(attention_mask, kv_length), kv_length
    used = _keys_holding_tokens(q_length, kv_length, q_offset, kv_offset, attention_mask)
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


def _cut_unseen_keys(key, value, attn_mask: AttnMask, q_len: int):
    """A user's 4-D mask over a static cache hides the cache's empty slots, the last keys, from every query. The
    kernels place the queries at the last keys, so those keys are cut off (as `keys_used` cuts them on the causal
    path): then the queries sit where they are, for the position-based statistics (local_mass) and interventions.
    Keys no query sees add nothing to any output or statistic. One device sync; none while a CUDA graph is captured."""
    dense = attn_mask.dense
    if capturing(dense):
        return key, value, attn_mask
    seen = (dense if dense.dtype == torch.bool else ~torch.isneginf(dense)).any(dim=(0, 1, 2))  # [keys]
    used = max(int(seen.nonzero().max()) + 1 if bool(seen.any()) else 0, q_len)
    if used == key.shape[-2]:
        return key, value, attn_mask
    cut = AttnMask(dense=dense[..., :used], describe=attn_mask.describe)
    return key[:, :, :used], value[:, :, :used], cut


@torch.compiler.disable  # torch.compile graph-breaks here: interp's kernels, hooks and statistics run eagerly
def interp_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, sliding_window=None,
                     softcap=None, is_causal=None, **kwargs):
    check_call_options(module, dropout, kwargs)
    sinks = kwargs.get("s_aux")  # GPT-OSS: one learned sink logit per query head
    segmented = None if attention_mask is None else segments_of(attention_mask)  # packed sequences, chunked layers
    general = None if attention_mask is None else mask_function_of(attention_mask)  # other mask functions
    attn_mask = None
    wrapper = getattr(module, "_interp_model", None)
    run_mask = wrapper is not None and wrapper._ctx is not None and wrapper._ctx.attn_mask is not None
    if attention_mask is not None and attention_mask.dim() == 4 and run_mask:
        raise ValueError("a 4-D attention_mask was passed to the model inside a run with its own attn_mask "
                         "(HookedModel.hooks / run_with_cache / run_with_hooks): give one of the two")
    if attention_mask is not None and attention_mask.dim() == 4:  # a prepared mask the user passed: as it is
        attn_mask = check_attn_mask(attention_mask, query.shape[0], query.shape[1], query.shape[2], key.shape[2],
                                    query.device, "the 4-D attention_mask passed to the model")
        key, value, attn_mask = _cut_unseen_keys(key, value, attn_mask, query.shape[2])
        attention_mask, sliding_window = None, None
        is_causal = False
    elif attention_mask is not None and attention_mask.dim() != 2:
        raise _mask_rank_error(attention_mask)
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
    if general is not None:  # the mask function holds the causal and window parts itself
        attn_mask, padded, _ = general
        sliding_window, is_causal = None, False
        if not padded:
            attention_mask = None
    if run_mask:  # the run's own mask, instead of the model's (`HookedModel.hooks(attn_mask=)`)
        if query.shape[2] != key.shape[2]:  # positions on this key axis are not the row's (a sliding cache)
            raise ValueError(
                f"attn_mask (the run's own mask) applies to forwards without a KV cache, where a layer's queries and "
                f"keys are the row's tokens; layer {_layer_of(module)} has {query.shape[2]} queries against "
                f"{key.shape[2]} keys (generation or a cache): run it without attn_mask, or through run_with_cache / "
                "run_with_hooks")
        attn_mask, sliding_window, is_causal = wrapper._ctx.attn_mask, None, False
    ids = None
    if segmented is not None:
        ids, padded = segmented
        if not padded:  # an all-true mask that only carried the ids
            attention_mask = None
    if wrapper is not None:  # the layers that ran, and those confined to segments (HookedModel checks that packed
        layer = _layer_of(module)  # prompts were kept apart in every layer)
        wrapper._layers_run.add(layer)
        # (a run's own mask replaces a mask function, and the packed part inside it: then only segments keep
        # packed prompts apart, and HookedModel refuses a layer that did not)
        if segmented is not None or (general is not None and general[2] and not run_mask):
            wrapper._layers_apart.add(layer)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if wrapper is None or wrapper._ctx is None:  # no hooks, no statistics: the plain fused path
        backend = wrapper.backend if wrapper is not None else "auto"
        out, _ = attention_with_stats(query, key, value, causal=causal, scale=scaling, sliding_window=sliding_window,
                                      attention_mask=attention_mask, stats="none", backend=backend,
                                      softcap=softcap, sinks=sinks, segment_ids=ids, attn_mask=attn_mask)
        return out.transpose(1, 2).contiguous(), None
    return wrapper.attention_call(_layer_of(module), module, query, key, value, attention_mask, scaling, causal,
                                  sliding_window, softcap, sinks=sinks, segment_ids=ids, attn_mask=attn_mask)
