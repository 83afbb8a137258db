"""Prompts packed into one row (`HookedModel.pack`): no padding, each prompt attending only to itself.

Packed, the prompts of a batch run as one sequence whose position ids restart at 0 at each prompt. transformers
reads such position ids (given without an attention mask or cache) as packed sequences and confines each token to
its own prompt; interp's kernels do the same (`interp.kernels.segments`), so every prompt's logits, activations and
statistics are what it gets run alone (to float rounding), while the batch holds no padding. `sink_mass` is then the
mass on each prompt's own first tokens. Per-key statistics of the row belong to the prompt whose tokens they are:
`Packed.spans` says which.

    packed = model.pack(["The cat sat.", "A dog ran home."])
    logits, cache = model.run_with_cache(packed, stats="all")
    for start, end in packed.spans: ...  # cache["blocks.0.attn.hook_key_mass"][0, :, start:end]
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .tokens import Tokens


class Packed(NamedTuple):
    """Prompts packed into one row: `tokens` (input_ids [1, total], no padding mask), `position_ids` [1, total]
    (0, 1, ... within each prompt) and `spans` [(start, end)], each prompt's positions in the row."""

    tokens: Tokens
    position_ids: torch.Tensor
    spans: list[tuple[int, int]]


def pack(toks: Tokens, n_ctx: int) -> Packed:
    """A padded batch (`to_tokens`'s, right- or left-padded) -> its prompts back to back in one row."""
    ids, mask = toks.input_ids, toks.attention_mask
    rows = [ids[i] if mask is None else ids[i][mask[i]] for i in range(ids.shape[0])]
    total = sum(len(r) for r in rows)
    if total > n_ctx:
        raise ValueError(f"the packed prompts hold {total} tokens, past the model's maximum context {n_ctx}; pack "
                         "fewer prompts per row")
    starts = [0]
    for r in rows:
        starts.append(starts[-1] + len(r))
    position_ids = torch.cat([torch.arange(len(r), device=ids.device) for r in rows])[None]
    return Packed(Tokens(torch.cat(rows)[None], None, [total]), position_ids, list(zip(starts[:-1], starts[1:])))


def checked_packed(packed: Packed, cfg, device, to_tokens) -> tuple[Tokens, torch.Tensor]:
    """A Packed input, checked (its tokens as `to_tokens` checks a Tokens; position ids of their shape, 0 at each
    span's start and rising by one inside it) -> (tokens, position ids) on `device`."""
    spans = packed.spans
    if not isinstance(spans, (list, tuple)) or not spans or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(type(x) is int for x in p) and 0 <= p[0] < p[1]
            for p in spans):
        raise TypeError(f"Packed.spans must be a non-empty list of (start, end) int pairs with start < end, got "
                        f"{spans!r:.80}")
    toks = to_tokens(packed.tokens)
    pos = packed.position_ids
    if not isinstance(pos, torch.Tensor) or tuple(pos.shape) != tuple(toks.input_ids.shape):
        raise ValueError(f"Packed.position_ids must be a tensor of the tokens' shape {tuple(toks.input_ids.shape)}, "
                         f"got {type(pos).__name__} {tuple(getattr(pos, 'shape', ()))}")
    if toks.input_ids.shape[0] != 1 or toks.attention_mask is not None:
        raise ValueError("Packed.tokens must be one row without a padding mask (as HookedModel.pack makes it)")
    want = torch.cat([torch.arange(e - s) for s, e in spans])[None]
    if want.shape != pos.shape or not torch.equal(pos.detach().cpu().long(), want):
        raise ValueError("Packed.position_ids must count 0, 1, ... within each of Packed.spans, which must tile the "
                         "row; build it with HookedModel.pack")
    return toks, pos.to(device=device, dtype=torch.long)


def check_packed_interventions(interventions: dict) -> None:
    """Refuse, for packed prompts, interventions whose sink keys are the row's first keys (`keeps_row_start`;
    {layer: [intervention]}, as a hooks context holds them): each later prompt would lose its own."""
    for layer, ivs in interventions.items():
        for iv in ivs:
            if getattr(iv, "keeps_row_start", False):
                raise ValueError(
                    f"{type(iv).__name__} (layer {layer}) keeps the row's first sink_tokens keys; with prompts packed "
                    "by HookedModel.pack those belong to the first prompt only, so every later prompt would lose its "
                    "own sinks. Run these prompts as a padded batch (model.to_tokens) instead of a Packed")
