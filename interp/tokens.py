"""Turning user input (text, texts, token ids) into padded token tensors, with clear errors."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Tokens(NamedTuple):
    input_ids: torch.Tensor  # [batch, pos] int64
    attention_mask: torch.Tensor | None  # [batch, pos] bool, None when nothing is padded
    lengths: list[int]


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


def to_tokens(inputs, tokenizer, cfg, device, prepend_bos: bool | None = None,
              padding_side: str = "right") -> Tokens:
    """str | list[str] | list[int] | list[list[int]] | LongTensor [pos] or [batch, pos] | Tokens -> Tokens.

    An already-built `Tokens` (e.g. a task batch's padded prompts) passes through, moved to `device`."""
    if isinstance(inputs, Tokens):
        return _checked_tokens(inputs, cfg, device)
    if isinstance(inputs, str):
        seqs = [_encode(inputs, tokenizer, prepend_bos)]
    elif isinstance(inputs, torch.Tensor):
        if inputs.dtype.is_floating_point or inputs.dtype == torch.bool:
            raise TypeError(f"token ids must be an integer tensor, got {inputs.dtype}")
        if inputs.dim() == 1:
            inputs = inputs[None]
        if inputs.dim() != 2:
            raise ValueError(f"token ids must be [pos] or [batch, pos], got shape {tuple(inputs.shape)}")
        seqs = [row.tolist() for row in inputs]
    elif isinstance(inputs, (list, tuple)):
        if len(inputs) == 0:
            raise ValueError("empty input: give a text, a list of texts or token ids")
        if all(isinstance(x, str) for x in inputs):
            seqs = [_encode(x, tokenizer, prepend_bos) for x in inputs]
        elif all(isinstance(x, int) and not isinstance(x, bool) for x in inputs):
            seqs = [list(inputs)]
        elif all(isinstance(x, (list, tuple, torch.Tensor)) for x in inputs):
            seqs = [list(x.tolist() if isinstance(x, torch.Tensor) else x) for x in inputs]
        else:
            raise TypeError("inputs must be a text, a list of texts, a list of token ids or a list of such lists")
    else:
        raise TypeError(f"inputs must be text or token ids, got {type(inputs).__name__}")
    for i, s in enumerate(seqs):
        if len(s) == 0:
            raise ValueError(f"prompt {i} is empty (no tokens)")
        if len(s) > cfg.n_ctx:
            raise ValueError(f"prompt {i} has {len(s)} tokens; the model's maximum context is {cfg.n_ctx}")
        bad = [t for t in s if not 0 <= int(t) < cfg.d_vocab]
        if bad:
            raise ValueError(f"prompt {i} has token ids outside the vocabulary [0, {cfg.d_vocab}): {bad[:5]}")
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


def _checked_tokens(toks: Tokens, cfg, device) -> Tokens:
    ids, mask = toks.input_ids, toks.attention_mask
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError("Tokens.input_ids must be an integer tensor [batch, pos]")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != ids.shape):
        raise ValueError(f"Tokens.attention_mask must be None or a tensor of shape {tuple(ids.shape)}")
    if ids.shape[1] > cfg.n_ctx:
        raise ValueError(f"Tokens have {ids.shape[1]} positions; the model's maximum context is {cfg.n_ctx}")
    if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < cfg.d_vocab):
        raise ValueError(f"Tokens.input_ids has ids outside the vocabulary [0, {cfg.d_vocab})")
    return Tokens(ids.to(device), None if mask is None else mask.to(device=device, dtype=torch.bool),
                  list(toks.lengths))
