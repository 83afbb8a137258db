"""Turning user input (text, texts, token ids) into padded token tensors, with clear errors."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from .kernels.checks import outside_0_1


class Tokens(NamedTuple):
    input_ids: torch.Tensor  # [batch, pos] int64
    attention_mask: torch.Tensor | None  # [batch, pos] bool, None when nothing is padded
    lengths: list[int]


FORMS = "a text, a list of texts, a list of token ids (ints), a list of such lists, or an integer tensor"


def _show(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def check_prepend_bos(prepend_bos) -> bool | None:
    if prepend_bos is not None and not isinstance(prepend_bos, bool):
        raise TypeError(f"prepend_bos must be True, False or None (the tokenizer's default), got {_show(prepend_bos)}")
    return prepend_bos


def _encode(text: str, tokenizer, prepend_bos: bool | None) -> list[int]:
    if tokenizer is None:
        raise ValueError("this model has no tokenizer: pass token ids (a tensor or a list of ints) instead of text")
    ids = tokenizer(text, add_special_tokens=True if prepend_bos is None else False)["input_ids"]
    if prepend_bos:
        bos = tokenizer.bos_token_id
        if bos is None:
            raise ValueError("prepend_bos=True but the tokenizer has no BOS token")
        if not ids or ids[0] != bos:
            ids = [bos] + list(ids)
    return list(ids)


def _id_seq(x, where: str, caller: str = "", forms: str = f"inputs must be {FORMS}") -> list[int]:
    """One prompt's token ids: a list/tuple of ints (numpy ints too) or a 1-D integer tensor. A non-int id's error
    starts with `caller` and ends with `forms` (what the caller takes)."""
    if isinstance(x, torch.Tensor):
        if x.device.type == "meta":
            raise ValueError(f"{where} is on the meta device (no values); pass real token ids")
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"{where} must be an integer tensor of token ids, got {x.dtype}")
        if x.dim() != 1:
            raise ValueError(f"{where} must be a 1-D tensor of token ids (one prompt), got shape {tuple(x.shape)}")
        return x.tolist()
    for j, t in enumerate(x):
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise TypeError(f"{caller}token ids must be ints: {where}[{j}] is {_show(t)}; {forms}")
    return [int(t) for t in x]


def to_string_ids(ids, vocab: int) -> tuple[list[list[int]], bool]:
    """What `HookedModel.to_string` decodes: an id, a 1-D list/tensor of ids (-> one row, flat=True) or a 2-D one
    (-> rows, flat=False), every id an int in [0, vocab). -> (rows, flat)."""
    forms = "an int id, a list of int ids, a list of such lists, or an integer tensor [pos] or [batch, pos]"
    if type(ids).__module__ == "numpy":
        ids = torch.as_tensor(ids) if hasattr(ids, "shape") and ids.shape != () else ids.item()
    if isinstance(ids, torch.Tensor):
        if ids.device.type == "meta":
            raise ValueError("to_string: the ids are on the meta device (no values); pass real token ids")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"to_string: ids must be {forms}, got {_show(ids)}")
        if ids.dim() > 2:
            raise ValueError(f"to_string: ids must be {forms}, got a tensor of shape {tuple(ids.shape)}")
        flat = ids.dim() < 2
        rows = [[ids.item()]] if ids.dim() == 0 else [ids.tolist()] if flat else ids.tolist()
    elif isinstance(ids, numbers.Integral) and not isinstance(ids, bool):
        rows, flat = [[int(ids)]], True
    elif isinstance(ids, (list, tuple)):
        def row(x, where):
            return _id_seq(x, where, "to_string: ", f"ids must be {forms}")

        if ids and all(isinstance(x, (list, tuple, torch.Tensor)) for x in ids):
            rows, flat = [row(x, f"ids[{i}]") for i, x in enumerate(ids)], False
        else:
            rows, flat = [row(ids, "ids")], True
    else:
        raise TypeError(f"to_string: ids must be {forms}, got {_show(ids)}")
    for i, r in enumerate(rows):
        bad = [t for t in r if not 0 <= t < vocab]
        if bad:
            where = "" if flat else f" (row {i})"
            raise ValueError(f"to_string: token ids outside the vocabulary [0, {vocab}){where}: {bad[:5]}")
    return rows, flat


def _with_bos(seqs: list[list[int]], tokenizer, bos_id: int | None) -> list[list[int]]:
    """prepend_bos=True for token ids: the BOS id first in every prompt that does not start with it."""
    bos = tokenizer.bos_token_id if tokenizer is not None else bos_id
    if bos is None:
        raise ValueError("prepend_bos=True but the model has no BOS token (neither its tokenizer nor its config "
                         "names one); pass the ids as they are (prepend_bos=None or False)")
    return [s if s and s[0] == bos else [bos] + s for s in seqs]


def to_tokens(inputs, tokenizer, cfg, device, prepend_bos: bool | None = None,
              padding_side: str = "right", bos_id: int | None = None) -> Tokens:
    """str | list[str] | list[int] | list[list[int]] | LongTensor [pos] or [batch, pos] | Tokens -> Tokens.

    An already-built `Tokens` (e.g. a task batch's padded prompts) passes through, moved to `device`.
    `prepend_bos=True` puts the BOS id (the tokenizer's, else `bos_id`, the model config's) before every prompt
    that does not start with it, for text and token ids alike; None keeps the tokenizer's default (ids as given)."""
    check_prepend_bos(prepend_bos)
    if isinstance(inputs, Tokens):
        if padding_side != "right" and inputs.attention_mask is not None:
            raise ValueError(f"a padded Tokens batch is right-padded; {padding_side}-padding (generate) needs "
                             "texts or token-id lists instead")
        toks = _checked_tokens(inputs, cfg, device)
        if prepend_bos:
            bos = tokenizer.bos_token_id if tokenizer is not None else bos_id
            first = toks.input_ids[torch.arange(len(toks.lengths)), first_real(toks)]
            if bos is None or bool((first != bos).any()):
                raise ValueError("prepend_bos=True with a Tokens batch whose prompts do not all start with BOS: a "
                                 "built Tokens is used as it is; give token ids or texts to have BOS prepended")
        return toks
    if type(inputs).__name__ == "Packed":  # interp.packing's (not imported here: it imports this module)
        raise TypeError("prompts packed by HookedModel.pack run through model(...), run_with_hooks and run_with_cache; "
                        "here give the prompts themselves")
    text = False  # text input: _encode has handled prepend_bos
    if isinstance(inputs, str):
        seqs, text = [_encode(inputs, tokenizer, prepend_bos)], True
    elif isinstance(inputs, torch.Tensor):
        if inputs.device.type == "meta":
            raise ValueError("token ids are on the meta device (no values); pass real token ids")
        if inputs.dtype.is_floating_point or inputs.dtype.is_complex or inputs.dtype == torch.bool:
            raise TypeError(f"token ids must be an integer tensor, got {inputs.dtype}")
        if inputs.dim() == 1:
            inputs = inputs[None]
        if inputs.dim() != 2:
            raise ValueError(f"token ids must be [pos] or [batch, pos], got shape {tuple(inputs.shape)}")
        if inputs.shape[0] == 0:
            raise ValueError(f"token ids have no prompt (shape {tuple(inputs.shape)}); give at least one")
        if not prepend_bos and inputs.dtype in _FAST_ID_DTYPES:
            return _tensor_tokens(inputs, cfg, device)
        seqs = [row.tolist() for row in inputs]
    elif isinstance(inputs, (list, tuple)):
        if len(inputs) == 0:
            raise ValueError("empty input: give a text, a list of texts or token ids")
        if all(isinstance(x, str) for x in inputs):
            seqs, text = [_encode(x, tokenizer, prepend_bos) for x in inputs], True
        elif all(isinstance(x, (list, tuple, torch.Tensor)) for x in inputs):
            seqs = [_id_seq(x, f"inputs[{i}]") for i, x in enumerate(inputs)]
        elif any(isinstance(x, (str, list, tuple, torch.Tensor)) for x in inputs):
            kinds = sorted({type(x).__name__ for x in inputs})
            raise TypeError(f"inputs mixes {', '.join(kinds)}; inputs must be {FORMS}")
        else:
            seqs = [_id_seq(inputs, "inputs")]
    else:
        raise TypeError(f"inputs must be text or token ids ({FORMS}), got {type(inputs).__name__}")
    if prepend_bos and not text:
        seqs = _with_bos(seqs, tokenizer, bos_id)
    for i, s in enumerate(seqs):
        _check_length(i, len(s), cfg)
        if min(s) < 0 or max(s) >= cfg.d_vocab:  # C loops; the list is only walked in Python to name the bad ids
            _outside_vocabulary(i, [t for t in s if not 0 <= int(t) < cfg.d_vocab], cfg)
    lengths = [len(s) for s in seqs]
    n = max(lengths)
    pad_id = 0
    if tokenizer is not None and getattr(tokenizer, "pad_token_id", None) is not None:
        pad_id = tokenizer.pad_token_id
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), n, dtype=torch.bool)
    for i, s in enumerate(seqs):
        if padding_side == "right":
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = True
        else:
            ids[i, n - len(s):] = torch.tensor(s)
            mask[i, n - len(s):] = True
    ids = ids.to(device)
    return Tokens(ids, None if bool(mask.all()) else mask.to(device), lengths)


def _check_length(i: int, n: int, cfg) -> None:
    """Prompt i's n tokens: at least one, at most the model's context."""
    if n == 0:
        raise ValueError(f"prompt {i} is empty (no tokens)")
    if n > cfg.n_ctx:
        raise ValueError(f"prompt {i} has {n} tokens; the model's maximum context is {cfg.n_ctx}")


def _outside_vocabulary(i: int, bad: list, cfg):
    """The error for prompt i, naming its first ids outside the vocabulary."""
    raise ValueError(f"prompt {i} has token ids outside the vocabulary [0, {cfg.d_vocab}): {bad[:5]}")


# integer dtypes torch.aminmax takes on every device (not uint16/32/64: those take the list path)
_FAST_ID_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _tensor_tokens(ids: torch.Tensor, cfg, device) -> Tokens:
    """An integer tensor [batch, pos] of ids taken as it is (every row pos tokens, nothing padded): one min/max
    read checks the vocabulary range (a single device sync on a GPU tensor, no per-token Python, no copy through
    host lists), then the ids are copied to `device` as contiguous int64 (a copy: the caller's tensor stays theirs,
    and a cache's tokens do not change when it does)."""
    b, n = ids.shape
    _check_length(0, n, cfg)  # every row has n tokens
    lo, hi = torch.stack(torch.aminmax(ids)).tolist()
    if lo < 0 or hi >= cfg.d_vocab:
        outside = (ids < 0) | (ids >= cfg.d_vocab)
        i = int(outside.any(1).long().argmax())
        _outside_vocabulary(i, ids[i][outside[i]][:5].tolist(), cfg)
    ids = ids.to(device=device, dtype=torch.long, copy=True, memory_format=torch.contiguous_format)
    return Tokens(ids, None, [n] * b)


def first_real(toks: Tokens) -> torch.Tensor:
    """[batch] position of each row's first real token (0 unless left-padded)."""
    if toks.attention_mask is None:
        return torch.zeros(toks.input_ids.shape[0], dtype=torch.long, device=toks.input_ids.device)
    return toks.attention_mask.long().argmax(-1)


def padding_mask(what: str, mask: torch.Tensor, row: str) -> tuple[torch.Tensor, list[int]]:
    """A padding mask [batch, pos] of the ids' shape (checked by the caller), checked: real values (not meta), bool or
    0/1 integers, each row >= 1 real token in one run (right- or left-padded, no holes) -> (bool mask, real tokens
    per row). `what` names the argument and `row` a row in the errors."""
    if mask.device.type == "meta":
        raise ValueError(f"{what} is on the meta device (no values); pass a real mask")
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise TypeError(f"{what} must be a bool (or 0/1 integer) tensor (True/1 = real token), not an additive float "
                        f"mask, got {mask.dtype}")
    if mask.dtype != torch.bool:
        if outside_0_1(mask).numel():
            raise ValueError(f"{what} must hold only 0 and 1 (or True/False), got values "
                             f"{sorted(set(mask.unique().tolist()))[:5]}")
        mask = mask.bool()
    n = mask.shape[-1]
    counts = mask.sum(-1)
    pos = torch.arange(n, device=mask.device)
    right = (mask == (pos < counts[:, None])).all(-1)
    left = (mask == (pos >= n - counts[:, None])).all(-1)
    counts, ok = counts.tolist(), (right | left).tolist()
    for i, c in enumerate(counts):
        if c == 0:
            raise ValueError(f"{row} {i} has no real token (its attention_mask row is all False); every prompt needs at "
                             "least one")
        if not ok[i]:
            raise ValueError(f"{row} {i} has an attention_mask with holes (a padding position between real tokens); a "
                             "padding mask is one run of True, padded on the right or on the left")
    return mask, counts


def _checked_tokens(toks: Tokens, cfg, device) -> Tokens:
    """A user-built Tokens, checked: integer ids [batch >= 1, pos >= 1]; a 0/1 mask of the same shape whose rows
    each hold >= 1 real token in one run (right- or left-padding, no holes); lengths = the mask's row sums."""
    ids, mask = toks.input_ids, toks.attention_mask
    if isinstance(ids, torch.Tensor) and ids.device.type == "meta":
        raise ValueError("Tokens.input_ids are on the meta device (no values); pass real token ids")
    if (not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype.is_complex
            or ids.dtype == torch.bool):
        raise TypeError(f"Tokens.input_ids must be an integer tensor [batch, pos], got {_show(ids)}")
    if ids.numel() == 0:
        raise ValueError(f"Tokens.input_ids is empty (shape {tuple(ids.shape)}); give at least one prompt of at "
                         "least one token")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != ids.shape):
        raise ValueError(f"Tokens.attention_mask must be None or a tensor of shape {tuple(ids.shape)}")
    if ids.shape[1] > cfg.n_ctx:
        raise ValueError(f"Tokens have {ids.shape[1]} positions; the model's maximum context is {cfg.n_ctx}")
    if ids.dtype not in _FAST_ID_DTYPES:  # uint16/32/64: no min/max kernels on every device; Python ints instead
        values = ids.tolist()
        if not all(0 <= t < cfg.d_vocab for row in values for t in row):
            raise ValueError(f"Tokens.input_ids has ids outside the vocabulary [0, {cfg.d_vocab})")
        ids = torch.tensor(values, dtype=torch.long, device=ids.device)
    elif not (0 <= int(ids.min()) and int(ids.max()) < cfg.d_vocab):
        raise ValueError(f"Tokens.input_ids has ids outside the vocabulary [0, {cfg.d_vocab})")
    b, n = ids.shape
    if mask is not None:
        mask, counts = padding_mask("Tokens.attention_mask", mask, "Tokens row")
    else:
        counts = [n] * b
    raw = toks.lengths.tolist() if isinstance(toks.lengths, torch.Tensor) else toks.lengths
    if not isinstance(raw, (list, tuple)) or any(isinstance(x, bool) or not isinstance(x, numbers.Integral)
                                                  for x in raw):
        raise TypeError(f"Tokens.lengths must be a list of ints (real tokens per row), got {_show(toks.lengths)}")
    lengths = [int(x) for x in raw]
    if lengths != counts:
        raise ValueError(f"Tokens.lengths {lengths[:8]} disagree with the attention mask, which has {counts[:8]} real "
                         f"tokens per row (no mask: every row has all {n} positions)")
    return Tokens(ids.to(device), None if mask is None else mask.to(device=device, dtype=torch.bool), lengths)
