"""Segments: attention confined to contiguous runs of keys (packed sequences, Llama 4's chunked attention).

`segment_ids` `[batch, k_len]` (integers, never decreasing along a row) puts every key in a segment; a query, which
sits at key position i + k_len - q_len, sees only the keys of its own segment, on top of the causal, window and
padding masks. Packed documents: one id per document. Chunked attention (Llama 4, `attention_chunk_size` C): the
id of position p is p // C.

The reference backend applies the segment mask in its own probabilities (`reference.visible_keys`), so a prob_hook
sees [batch, heads, chunk, k_len] rows that are zero outside the query's segment. The Triton kernels run once per
piece instead: for the rows whose segments lie alike, each run of queries in one segment against that segment's
keys, [segment start, run end). A piece is exactly the attention of that segment alone, so outputs, gradients and
statistics are exact, and the work is only the segments' own (chunked attention at 128k tokens with C = 8k: a
sixteenth of causal attention's). The pieces' statistics are put back in place: per-query ones at their queries,
argmax shifted by the segment's start, key statistics at their keys (keys of a segment that holds no query get
mass 0, count 0 and mean NaN, as any key no query sees).

Where a segment starts matters to one statistic: `sink_mass` is the mass on the first `sink_tokens` keys of the
query's own segment (a packed document's first tokens, a chunk's). `local_mass` and `span_mass` keep the row's key
positions (a span is given in them).

Checking the ids and finding the pieces read them on the host (device syncs). For ids made by interp's mask
function (`mark_made`: one tensor per forward, never edited, which every layer reuses) that is done once and
remembered for the tensor object; a caller's own ids are read on every call, as a caller's padding mask is (an
in-place change, however made, is always seen: through `.data`, a NumPy array sharing the memory, an inference
tensor that keeps no version counter). So segments cannot be used while a CUDA graph is captured.
"""

from __future__ import annotations

from typing import Callable

import torch

from .checks import capturing, mark_checked_bias, mark_padded, weak_tag, weak_tag_of
from .stats import KEY_STATS, AttentionStats, finish_key_stats

# id(ids) -> (weak reference, True): ids made by interp's mask function for one forward (`mark_made`)
_made: dict = {}
# id(ids made) -> (weak reference, "one" | "same" | their int64 copy): what checking them gave
_checked: dict = {}
# id(int64 ids of ids made) -> (weak reference, {q_len: pieces}): the pieces found for them
_plans: dict = {}

# one piece's rows (a slice or an index tensor), queries [qa, qe) and keys [ks, ke) -> (output or None, statistics)
Piece = Callable[[object, int, int, int, int], "tuple[torch.Tensor | None, AttentionStats]"]


def mark_made(ids: torch.Tensor) -> None:
    """Record that `ids` were made by the caller for one forward and are never edited (interp's mask function makes
    one tensor per forward, handed to every layer): they are checked, and their pieces found, once."""
    weak_tag(_made, ids)


def check_segment_ids(segment_ids, b: int, lk: int, device) -> torch.Tensor | None:
    """segment_ids [batch, k_len] of integers on q's device, never decreasing along a row -> int64 (the same tensor
    object when it already is one), or None when every row is one segment (then the mask adds nothing)."""
    _check_form(segment_ids, b, lk, device)
    made = weak_tag_of(_made, segment_ids, False)
    known = weak_tag_of(_checked, segment_ids) if made else None
    if known is not None:
        return None if known == "one" else segment_ids if known == "same" else known
    if capturing(segment_ids):
        raise ValueError("segment_ids cannot be used while a CUDA graph is captured: splitting attention into its "
                         "segments reads them on the host (run these calls eagerly)")
    ids = _int64_ids(segment_ids)
    _check_order(ids)
    one = bool((ids[:, 0] == ids[:, -1]).all())
    if made:
        weak_tag(_checked, segment_ids, "one" if one else "same" if ids is segment_ids else ids)  # (a copy lives
        if not one:  # as long as the tensor given)
            weak_tag(_plans, ids, {})
    return None if one else ids


def _check_form(segment_ids, b: int, lk: int, device) -> None:
    """A TypeError/ValueError unless segment_ids is an integer tensor [b, lk] on `device`."""
    if not isinstance(segment_ids, torch.Tensor):
        raise TypeError(f"segment_ids must be an integer tensor [batch, k_len] = [{b}, {lk}] (the segment of every "
                        f"key: a packed document's index, or position // chunk size), got {type(segment_ids).__name__}")
    if segment_ids.dtype.is_floating_point or segment_ids.dtype.is_complex or segment_ids.dtype == torch.bool:
        raise TypeError(f"segment_ids must hold integers (one segment index per key), got dtype {segment_ids.dtype}")
    if tuple(segment_ids.shape) != (b, lk):
        raise ValueError(f"segment_ids must be [batch, k_len] = [{b}, {lk}] (one segment index per key; queries take "
                         f"the ids of the last q_len keys), got shape {tuple(segment_ids.shape)}")
    if segment_ids.device.type == "meta":
        raise ValueError("segment_ids is on the meta device (shape only, no values); pass the real segment ids on "
                         f"q's device ({device})")
    if segment_ids.device != device:
        raise ValueError(f"segment_ids is on {segment_ids.device} but q is on {device}")


def _int64_ids(segment_ids: torch.Tensor) -> torch.Tensor:
    """The ids as a contiguous int64 tensor (segment_ids itself when it is one); a ValueError for unsigned 64-bit
    values beyond int64's range (which would wrap around to negative ids)."""
    ids = segment_ids.to(torch.int64).contiguous()
    if segment_ids.dtype == getattr(torch, "uint64", None) and bool((ids < 0).any()):
        raise ValueError(f"segment_ids must fit in int64 (up to {torch.iinfo(torch.int64).max}), got uint64 values "
                         f"beyond it")
    return ids


def _check_order(ids: torch.Tensor) -> None:
    """A ValueError naming the first place where int64 ids [batch, k_len] decrease along a row."""
    if ids.shape[1] < 2:
        return
    down = ids[:, 1:] < ids[:, :-1]
    if bool(down.any()):
        row, j = (int(x) for x in down.nonzero()[0])
        raise ValueError(f"segment_ids must not decrease along a row (each segment is one contiguous run of keys), "
                         f"but row {row} goes from {int(ids[row, j])} at key {j} to {int(ids[row, j + 1])} at key "
                         f"{j + 1}")


def piece_stats(names) -> tuple[str, ...]:
    """The statistics each piece is asked for: the call's, and key_mass and key_count whenever any key statistic is
    asked for (`run_pieces` puts both in place, then makes key_mean and the ones asked for of them)."""
    names = tuple(names)
    if not any(n in KEY_STATS for n in names):
        return names
    return names + tuple(n for n in ("key_mass", "key_count") if n not in names)


def segment_starts(ids: torch.Tensor) -> torch.Tensor:
    """ids [batch, k_len] int64 -> [batch, k_len] int64: the position of the first key of every key's segment."""
    lk = ids.shape[1]
    pos = torch.arange(lk, device=ids.device).expand_as(ids)
    first = torch.ones_like(ids, dtype=torch.bool)
    first[:, 1:] = ids[:, 1:] != ids[:, :-1]
    return torch.cummax(torch.where(first, pos, 0), dim=1).values


def plan(ids: torch.Tensor, lq: int) -> list[tuple[tuple[int, ...], tuple[tuple[int, int, int], ...]]]:
    """The pieces of a call with q_len lq: [(rows, runs)], rows that share their runs, each run (qa, qe, ks): queries
    [qa, qe) of one segment, whose keys are [ks, qe + k_len - lq). One sync, remembered for ids made by interp's
    mask function (`mark_made`)."""
    cache = weak_tag_of(_plans, ids)
    if cache is not None and lq in cache:
        return cache[lq]
    b, lk = ids.shape
    off = lk - lq
    starts = segment_starts(ids)[:, off:]  # [b, lq]
    run_first = torch.ones(b, lq, dtype=torch.bool, device=ids.device)
    run_first[:, 1:] = ids[:, off + 1:] != ids[:, off:-1]
    where = run_first.nonzero().tolist()  # [(row, qa)], row-major
    ks = starts[run_first].tolist()
    runs: list[list[tuple[int, int, int]]] = [[] for _ in range(b)]
    for (row, qa), s in zip(where, ks):
        if runs[row]:
            a, _, s0 = runs[row][-1]
            runs[row][-1] = (a, qa, s0)
        runs[row].append((qa, lq, s))
    groups: dict = {}
    for row, r in enumerate(runs):
        groups.setdefault(tuple(r), []).append(row)
    found = [(tuple(rows), r) for r, rows in groups.items()]
    if cache is not None:
        cache[lq] = found
    return found


def run_pieces(spec, ids: torch.Tensor, piece: Piece, need_out: bool) -> tuple[torch.Tensor | None, AttentionStats]:
    """Attention with a segment mask as pieces (see the module's docstring): `piece(rows, qa, qe, ks, ke)` runs the
    call on rows (a slice, or an index tensor), queries [qa, qe) and keys [ks, ke); its outputs are put together
    (differentiably) and its statistics put in place."""
    b, h, lq, lk = spec.batch, spec.heads, spec.q_len, spec.k_len
    dev = ids.device
    want = set(spec.stats)
    st = AttentionStats()
    f32 = dict(dtype=torch.float32, device=dev)
    for name in spec.stats:
        if name == "argmax":
            st.argmax = torch.full((b, h, lq), -1, dtype=torch.int64, device=dev)
        elif name not in KEY_STATS:
            setattr(st, name, torch.zeros(b, h, lq, **f32))
    keys = bool(want & set(KEY_STATS))
    mass = torch.zeros(b, h, lk, **f32) if keys else None
    count = torch.zeros(b, h, lk, **f32) if keys else None
    outs, order = [], []
    out = None  # without autograd each piece's output is copied into one tensor as it comes (memory: the output
    # and one piece, not every piece and their concatenation)
    for rows, runs in plan(ids, lq):
        sel = slice(None) if len(rows) == b else torch.tensor(rows, device=dev)
        pieces = []
        for qa, qe, ks in runs:
            ke = qe + spec.q_offset
            o, part = piece(sel, qa, qe, ks, ke)
            if o is not None and not o.requires_grad:
                if out is None:
                    out = o.new_empty(b, h, lq, o.shape[-1])
                out[sel, :, qa:qe] = o
            else:
                pieces.append(o)
            for name, t in part.items():
                if name in KEY_STATS:
                    continue
                if name == "argmax":
                    t = torch.where(t >= 0, t + ks, t)
                getattr(st, name)[sel, :, qa:qe] = t
            if keys:
                mass[sel, :, ks:ke] = part.key_mass
                count[sel, :, ks:ke] = part.key_count
        if need_out and pieces:
            outs.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2))
        order.extend(rows)
    if keys:
        finish_key_stats(st, want, mass, count)
    if not need_out or out is not None:
        return out, st
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)  # differentiable: the pieces carry autograd
    if order != list(range(b)):
        out = out[torch.argsort(torch.tensor(order, device=dev))]
    return out, st


def piece_options(spec, rows, ks: int, ke: int, sink_tokens: int, local_window: int) -> dict:
    """The keyword arguments one piece's call shares with the whole call's (`attention_with_stats` and
    `stats_from_lse` alike): its rows' and keys' part of the padding mask, marked padded (`checks.mark_padded`, so
    that the piece's input checks do not sync to ask: were it all true, the kernels would apply an all-true mask,
    changing only speed), the span renumbered from the piece's first key, and the statistics each piece is asked for
    (`piece_stats`)."""
    mask = None
    if spec.key_valid is not None:
        mask = spec.key_valid[rows, ks:ke]
        mark_padded(mask)
    span = None if spec.span is None else (spec.span[rows] - ks).clamp(0, ke - ks)  # [rows, 2]
    return dict(causal=spec.causal, scale=spec.scale, sliding_window=spec.sliding_window, attention_mask=mask,
                stats=piece_stats(spec.stats), sink_tokens=sink_tokens, local_window=local_window, span=span)


def piece_bias(spec, rows, ks: int, ke: int) -> torch.Tensor | None:
    """A piece's slice of the call's checked key bias (a softcap's zero bias included; None without one), marked
    checked (`checks.mark_checked_bias`) so that the piece's input checks skip their device sync."""
    if spec.key_bias is None:
        return None
    bias = spec.key_bias[rows, :, ks:ke]
    mark_checked_bias(bias)
    return bias
