"""Transformers' mask functions read as the kernels' masks: causal or not, plus the segments a query is confined to.

A transformers model describes its attention mask as a function of (batch, head, q_idx, kv_idx), composed from
`transformers.masking_utils` parts. interp's kernels apply causal, sliding-window and padding masks themselves and
confine queries to segments given as ids (`interp.kernels.segments`). Two parts are segments:
- packed sequences (`packed_sequence_mask_function(ids)`, added when position_ids restart within a row and no
  attention mask or cache is given): one segment per sequence, under a remap of positions to each sequence's own
  (`remap_positions_for_packed_sequence`, which leaves a causal or window relation between two tokens of one
  sequence as it was);
- chunked attention (`chunked_overlay(C, left_padding)`, Llama 4's `attention_chunk_size`): a query sees keys of its
  own chunk, chunks counted from each row's first real token: (position - left_padding) // C, positions being the
  keys' absolute ones (kv_offset + j), or the remapped ones inside a packed remap.
`read_mask` gives (causal, [segment-id builders]); `segment_ids` runs the builders and merges them into one id per
key (a new segment wherever any of them changes).
"""

from __future__ import annotations

from typing import Callable

import torch

from .kernels.checks import capturing

MU = "transformers.masking_utils."
PACKED_PART = MU + "packed_sequence_mask_function.<locals>.inner_mask"
CHUNK_PART = MU + "chunked_overlay.<locals>.inner_mask"
REMAP = MU + "remap_positions_for_packed_sequence.<locals>.inner_mask"
AND = MU + "and_masks.<locals>.and_mask"

# (kv_offset, kv_length, batch, device) -> ids [batch, kv_length] (any integer dtype), or None: nothing to add
Builder = Callable[[int, int, int, torch.device], "torch.Tensor | None"]


def qualname(fn) -> str:
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def closure_values(fn) -> list:
    """What a function's closure holds, a tuple's items one by one (empty cells left out)."""
    found = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        found.extend(value if isinstance(value, tuple) else (value,))
    return found


def inner_functions(fn) -> list:
    """The mask functions a transformers combination (and_masks, or_masks, a remap) closes over, else []."""
    return [v for v in closure_values(fn) if callable(v)]


def _tensors(fn) -> list:
    return [v for v in closure_values(fn) if isinstance(v, torch.Tensor)]


def _packed(part) -> Builder | None:
    """The builder of a packed_sequence_mask_function part: its sequence ids [batch, n], one segment each. While a CUDA
    graph is captured they cannot be read (interp's GraphedRun feeds positions 0..n-1: one sequence), so nothing."""
    ids = _tensors(part)
    if len(ids) != 1 or ids[0].dim() != 2:
        return None
    seq = ids[0]

    def build(kv_offset, kv_length, batch, device):
        if capturing(seq):
            return None
        if kv_offset != 0 or seq.shape[-1] != kv_length:
            raise ValueError(f"packed sequences: transformers' sequence ids cover {seq.shape[-1]} tokens but the "
                             f"layer has {kv_length} keys at offset {kv_offset} (packed inputs run without a cache)")
        if bool((seq[:, 1:] < seq[:, :-1]).any()):  # transformers' own count up (a cumsum); merging needs runs
            raise ValueError("packed sequences: the mask's sequence ids must not decrease along a row (each "
                             "sequence one contiguous run, as transformers' find_packed_sequence_indices makes them)")
        return seq.to(device).expand(batch, kv_length)

    return build


def _remap_check(positions: torch.Tensor, seq: torch.Tensor) -> Builder:
    """A builder that adds no ids but checks that the remapped positions rise by one inside each packed sequence
    (as transformers detects sequences: where they do not): only then does the remap leave the causal or window
    relation of two tokens of one sequence as it was, which the kernels apply on the row's positions."""

    def build(kv_offset, kv_length, batch, device):
        if capturing(positions) or capturing(seq):
            return None
        pos, ids = positions.expand(batch, -1), seq.to(positions.device).expand(batch, -1)
        inside = ids[:, 1:] == ids[:, :-1]
        if bool((inside & (pos[:, 1:] - pos[:, :-1] != 1)).any()):
            raise ValueError("packed sequences: the mask remaps positions that do not rise by one inside a packed "
                             "sequence; interp's kernels apply the causal and window masks on the row's positions "
                             "(run this mask with set_attn_implementation('eager'))")
        return None

    return build


def _chunked(part, positions) -> Builder | None:
    """The builder of a chunked_overlay(C, left_padding) part: (position - left_padding) // C per key."""
    sizes = [v for v in closure_values(part) if isinstance(v, int) and not isinstance(v, bool)]
    pads = _tensors(part)
    if len(sizes) != 1 or len(pads) != 1 or sizes[0] < 1:
        return None
    chunk, pad = sizes[0], pads[0]

    def build(kv_offset, kv_length, batch, device):
        if capturing(pad):
            raise ValueError("chunked attention (config.attention_chunk_size, Llama 4) cannot run inside a CUDA graph "
                             "capture: interp splits it into its chunks on the host (run it without CUDA graphs)")
        if positions is not None:  # inside a packed remap: each sequence's own positions
            pos = positions.to(device).expand(batch, -1)[:, :kv_length]
        else:
            pos = torch.arange(int(kv_offset), int(kv_offset) + kv_length, device=device)[None]
        return torch.div(pos - pad.to(device).reshape(-1, 1), chunk, rounding_mode="floor").expand(batch, kv_length)

    return build


def read_mask(fn, is_plain: Callable, positions=None, packed=None) -> tuple[bool, list[Builder]] | None:
    """(causal, segment builders) for a mask function made of a causal, sliding-window causal or bidirectional base
    (`is_plain(fn)` -> True / False, or None for anything else) under packed-sequence and chunked overlays; None when
    `fn` holds anything else. A position remap is read only as transformers makes it, the base of an and_masks that
    also holds the packed sequences (`packed`: their ids), whose sequences it maps to their own positions."""
    plain = is_plain(fn)
    if plain is not None:
        return plain, []
    name = qualname(fn)
    if name == REMAP:  # positions remapped to each packed sequence's own
        inner = inner_functions(fn)
        pos = _tensors(fn)
        if packed is None or positions is not None or len(inner) != 1 or len(pos) != 1 or pos[0].dim() != 2:
            return None
        read = read_mask(inner[0], is_plain, pos[0])
        return None if read is None else (read[0], [_remap_check(pos[0], packed)] + read[1])
    if name != AND:
        return None
    builders, bases, seqs = [], [], []
    for part in inner_functions(fn):
        part_name = qualname(part)
        made = _packed(part) if part_name == PACKED_PART else _chunked(part, positions) if part_name == CHUNK_PART \
            else None
        if made is None and part_name in (PACKED_PART, CHUNK_PART):
            return None
        if part_name == PACKED_PART:
            seqs.extend(_tensors(part))
        if made is not None:
            builders.append(made)
        else:
            bases.append(part)
    if not builders or len(bases) != 1 or len(seqs) > 1:
        return None
    base = read_mask(bases[0], is_plain, positions, seqs[0] if seqs else None)
    if base is None:
        return None
    return base[0], builders + base[1]


def segment_ids(builders: list[Builder], kv_offset: int, kv_length: int, batch: int,
                device) -> torch.Tensor | None:
    """One segment id per key [batch, kv_length] int64 from every builder (a new segment wherever any of them
    changes), or None when there is nothing to confine."""
    made = [m for m in (build(kv_offset, kv_length, batch, device) for build in builders) if m is not None]
    if not made:
        return None
    if len(made) == 1:
        return made[0].to(torch.int64).contiguous()
    change = torch.zeros(batch, kv_length, dtype=torch.int64, device=device)
    for m in made:
        change[:, 1:] |= (m[:, 1:] != m[:, :-1]).to(torch.int64)
    return change.cumsum(1)
