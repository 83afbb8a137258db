"""Pure-PyTorch reference for attention with statistics: the ground truth in tests and the CPU path.

It walks over query chunks, so memory is O(chunk * k_len) rather than O(q_len * k_len): moderate lengths
(a few thousand tokens) run on a CPU, forward and backward (under autograd the chunks are checkpointed: the backward
recomputes each chunk's probabilities instead of keeping them all). All arithmetic is float32 whatever the input
dtype.

`prob_hook(p, q_start)` sees the normalised probabilities of each chunk, `p: [batch, heads, chunk, k_len]`, and
may return a replacement: this is how full patterns are captured and how interventions that reshape attention
(masking keys, scaling a token's share) run. Statistics then describe the attention that was actually used.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from .checks import AttnSpec
from .stats import AttentionStats, finish_key_stats

ProbHook = Callable[[torch.Tensor, int], "torch.Tensor | None"]

DEFAULT_CHUNK_BYTES = 256 * 2**20


def visible_keys(spec: AttnSpec, q_start: int, q_end: int, device, k_lo: int = 0,
                 k_hi: int | None = None) -> torch.Tensor:
    """Which keys k_lo..k_hi-1 (default all) each query of the chunk may attend to.
    -> [batch or 1, 1, chunk, k_hi - k_lo] bool."""
    k_hi = spec.k_len if k_hi is None else k_hi
    kpos = torch.arange(k_lo, k_hi, device=device)
    qpos = torch.arange(q_start, q_end, device=device) + spec.q_offset
    allowed = torch.ones(q_end - q_start, k_hi - k_lo, dtype=torch.bool, device=device)
    if spec.causal:
        allowed &= kpos[None, :] <= qpos[:, None]
    if spec.sliding_window is not None:
        allowed &= (qpos[:, None] - kpos[None, :]) < spec.sliding_window
    allowed = allowed[None, None]
    if spec.key_valid is not None:
        allowed = allowed & spec.key_valid[:, None, None, k_lo:k_hi]
    if spec.segment_ids is not None:  # a query sees only its own segment's keys (`segments.py`)
        ids = spec.segment_ids
        q_ids = ids[:, q_start + spec.q_offset:q_end + spec.q_offset]  # [b, chunk]
        allowed = allowed & (q_ids[:, None, :, None] == ids[:, None, None, k_lo:k_hi])
    return allowed


def key_range(spec: AttnSpec, q_start: int, q_end: int) -> tuple[int, int]:
    """The keys [lo, hi) that any query of the chunk can see under the causal mask and the sliding window: the
    only columns worth computing (half the work of causal attention, W / n of a windowed layer's)."""
    lo, hi = 0, spec.k_len
    if spec.causal:
        hi = min(hi, q_end - 1 + spec.q_offset + 1)
    if spec.sliding_window is not None:
        lo = max(0, q_start + spec.q_offset - spec.sliding_window + 1)
    return lo, max(hi, lo + 1)


def _chunk_size(spec: AttnSpec, chunk: int | None) -> int:
    if chunk is not None:
        return max(1, int(chunk))
    per_row = spec.batch * spec.heads * spec.k_len * 4 * 4  # scores, probs and two temporaries, float32
    return max(1, min(spec.q_len, DEFAULT_CHUNK_BYTES // max(per_row, 1)))


def _hook_result(replaced, p: torch.Tensor) -> torch.Tensor:
    """A prob_hook's replacement for p, checked: a floating tensor of p's shape on p's device, no negative or +inf
    probability (NaN passes: it follows the inputs' NaN policy); returned as float32."""
    if not isinstance(replaced, torch.Tensor) or not replaced.is_floating_point():
        raise TypeError(f"prob_hook must return None or a floating tensor of the probabilities' shape "
                        f"{tuple(p.shape)}, got {type(replaced).__name__}"
                        + (f" of dtype {replaced.dtype}" if isinstance(replaced, torch.Tensor) else ""))
    if replaced.shape != p.shape or replaced.device != p.device:
        raise ValueError(f"prob_hook must return probabilities of shape {tuple(p.shape)} on {p.device} "
                         f"([batch, heads, chunk, k_len], as it was given), got {tuple(replaced.shape)} on "
                         f"{replaced.device}")
    if bool(((replaced < 0) | torch.isposinf(replaced)).any()):
        raise ValueError("prob_hook returned negative or +inf probabilities; they must be finite and >= 0")
    return replaced.float()


def _attend_chunk(qc, kf, vf, bias, spec: AttnSpec, qs: int, prob_hook: ProbHook | None, need_out: bool = True,
                  k_lo: int = 0, sinks=None):
    """One query chunk against the keys k_lo..k_lo+kf.shape[-2]-1: qc [b, h, cq, d], kf [b, hk, 1, nk, d], vf
    [b, hk, 1, nk, dv] (dv may differ from d), bias [b|1, h|1, nk], sinks [b|1, h] (learned sink logits: one more term
    in each row's softmax denominator) -> (output [b, h, cq, dv] float32, p [b, h, cq, nk], lse [b, h, cq], allowed
    [b|1, 1|h, cq, nk], empty [b, h, cq], the sink's probability [b, h, cq] or None). Pure in its tensor inputs
    (checkpointed under autograd)."""
    b, h, hk, d, g = spec.batch, spec.heads, spec.kv_heads, spec.head_dim, spec.group
    lk = kf.shape[-2]
    cq = qc.shape[2]
    qc = qc.float().reshape(b, hk, g, cq, d)
    s = torch.matmul(qc, kf.transpose(-1, -2)).reshape(b, h, cq, lk) * spec.scale  # [b, h, cq, lk]
    if spec.softcap is not None:  # Gemma 2's logit soft-capping, before any bias or mask (as transformers does)
        s = spec.softcap * torch.tanh(s / spec.softcap)
    if bias is not None:
        s = s + bias[:, :, None, :]
    allowed = visible_keys(spec, qs, qs + cq, qc.device, k_lo, k_lo + lk)  # [b|1, 1, cq, lk]
    if spec.attn_mask is not None:  # a dense mask or a mask function (`attn_mask.py`): [b|1, h|1, cq, lk]
        tile = spec.attn_mask.tile(qs, qs + cq, k_lo, k_lo + lk, spec.q_offset, b, h, qc.device)
        if tile.dtype == torch.bool:
            allowed = allowed & tile
        else:  # added to the scaled scores; -inf hides the key
            s = s + tile
            allowed = allowed & ~torch.isneginf(tile)
    s = s.masked_fill(~allowed, float("-inf"))
    if bias is not None:  # a -inf bias hides the key as surely as a mask does
        allowed = allowed & ~torch.isneginf(bias[:, :, None, :])
    # softmax as max-shifted exponentials over their sum: exact when every score of a row carries a huge shift
    # (exp(s - lse) would lose the row's log(n) to float32 rounding there), and finite gradients for rows that see
    # nothing (logsumexp's gradient over a row of -inf is NaN)
    m = s.amax(dim=-1)  # [b, h, cq]; -inf on rows that see nothing
    empty = torch.isneginf(m)
    p_sink = None
    if sinks is None:
        e = torch.exp(s - m.masked_fill(empty, 0.0)[..., None])  # exp(-inf) = 0 on masked keys
        den = e.sum(-1)  # >= 1 on rows that see a key
        p = e / den.masked_fill(empty, 1.0)[..., None]  # 0 on rows that see nothing
        lse = m + torch.log(den)  # -inf (+ log 0) on rows that see nothing; NaN where the scores hold NaN
    else:  # GPT-OSS: the sink logit (unscaled) joins each row's softmax, and its probability is dropped
        sink = sinks[:, :, None].expand_as(m)  # [b, h, cq]
        ms = torch.maximum(m, sink)  # finite on rows that see nothing (the sink's own); NaN stays NaN
        e = torch.exp(s - ms[..., None])
        e_sink = torch.exp(sink - ms)
        den = e.sum(-1) + e_sink  # >= 1
        p = e / den[..., None]
        p_sink = e_sink / den  # 1 on rows that see nothing
        lse = ms + torch.log(den)  # the sink's logit on rows that see nothing
    p = p.masked_fill(~allowed, 0.0)  # hidden keys get nothing, also from a row whose scores hold NaN
    if prob_hook is not None:
        replaced = prob_hook(p, qs)
        if replaced is not None:
            p = _hook_result(replaced, p)
    o = torch.matmul(p.reshape(b, hk, g, cq, lk), vf).reshape(b, h, cq, vf.shape[-1]) if need_out else None
    return o, p, lse, allowed, empty, p_sink


def reference_attention(
    q: torch.Tensor,  # [batch, heads, q_len, head_dim]
    k: torch.Tensor,  # [batch, kv_heads, k_len, head_dim]
    v: torch.Tensor,  # [batch, kv_heads, k_len, v_head_dim] (v_head_dim may differ from head_dim: MLA)
    spec: AttnSpec,
    *,
    prob_hook: ProbHook | None = None,
    chunk: int | None = None,
    need_out: bool = True,
) -> tuple[torch.Tensor | None, AttentionStats]:
    b, h, lq, lk = spec.batch, spec.heads, spec.q_len, spec.k_len
    dev = q.device
    want = set(spec.stats)
    kf = k.float().unsqueeze(2)  # [b, hk, 1, lk, d]
    vf = v.float().unsqueeze(2)  # [b, hk, 1, lk, dv]
    out = torch.empty(b, h, lq, spec.value_dim, dtype=q.dtype, device=dev) if need_out else None  # [b, h, lq, dv]
    st = AttentionStats()
    f32 = dict(dtype=torch.float32, device=dev)
    for name in ("lse", "max_prob", "entropy", "sink_mass", "local_mass", "span_mass"):
        if name in want:
            setattr(st, name, torch.empty(b, h, lq, **f32))
    if "argmax" in want:
        st.argmax = torch.empty(b, h, lq, dtype=torch.int64, device=dev)
    key_stats = bool(want & {"key_mass", "key_count", "key_mean"})
    if key_stats:
        key_mass = torch.zeros(b, h, lk, **f32)
        per_head = spec.key_bias is not None or spec.attn_mask is not None  # masks that may differ by head
        key_count = torch.zeros(b, h if per_head else 1, lk, **f32)
    qvalid = spec.key_valid[:, spec.q_offset:] if spec.key_valid is not None else None  # [b, lq]
    if spec.segment_ids is not None and "sink_mass" in want:  # the first keys of each query's own segment
        from .segments import segment_starts

        q_first = segment_starts(spec.segment_ids)[:, spec.q_offset:]  # [b, lq]
    kpos = torch.arange(lk, device=dev)
    step = _chunk_size(spec, chunk)
    bias = spec.key_bias
    # Under autograd each chunk is checkpointed (its probabilities recomputed in the backward), so a backward
    # through this path needs O(chunk * k_len) memory instead of keeping every chunk's probabilities: O(n^2).
    # A prob_hook may edit or capture the probabilities themselves: then they are kept.
    sinks = spec.sinks
    recompute = need_out and prob_hook is None and torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, bias, sinks))
    for qs in range(0, lq, step):
        qe = min(lq, qs + step)
        cq = qe - qs
        # only the keys the chunk can see (a prob_hook is handed every key: p [b, h, cq, k_len])
        lo, hi = (0, lk) if prob_hook is not None else key_range(spec, qs, qe)
        kc, vc = kf[..., lo:hi, :], vf[..., lo:hi, :]
        bc = None if bias is None else bias[..., lo:hi]
        if recompute:
            o, p, lse, allowed, empty, p_sink = checkpoint(_attend_chunk, q[:, :, qs:qe], kc, vc, bc, spec, qs, None,
                                                           True, lo, sinks, use_reentrant=False)
            p, lse = p.detach(), lse.detach()  # statistics carry no gradient
            p_sink = None if p_sink is None else p_sink.detach()
        else:
            o, p, lse, allowed, empty, p_sink = _attend_chunk(q[:, :, qs:qe], kc, vc, bc, spec, qs, prob_hook,
                                                              need_out, lo, sinks)
        kp = kpos[lo:hi]  # the absolute positions of p's columns
        if need_out:
            out[:, :, qs:qe] = o.to(q.dtype)
        if "lse" in want:
            st.lse[:, :, qs:qe] = lse
        if "max_prob" in want or "argmax" in want:
            mp, am = p.max(dim=-1)
            if "max_prob" in want:
                st.max_prob[:, :, qs:qe] = mp
            if "argmax" in want:
                st.argmax[:, :, qs:qe] = (am + lo).masked_fill(empty | torch.isnan(lse), -1)
        if "entropy" in want:
            ent = 0.0 - torch.special.xlogy(p, p).sum(-1)  # +0.0 (not -0.0) on empty rows
            if p_sink is not None:  # the whole softmax's entropy: the sink's own probability included
                ent = ent - torch.special.xlogy(p_sink, p_sink)
            st.entropy[:, :, qs:qe] = ent
        if "sink_mass" in want and spec.segment_ids is not None:
            sink = kp[None, None, :] < q_first[:, qs:qe, None] + spec.sink_tokens  # [b, cq, hi - lo]
            st.sink_mass[:, :, qs:qe] = (p * sink[:, None]).sum(-1)
        elif "sink_mass" in want:
            st.sink_mass[:, :, qs:qe] = p[..., : max(0, spec.sink_tokens - lo)].sum(-1)
        if "local_mass" in want:
            qpos = torch.arange(qs, qe, device=dev) + spec.q_offset
            dist = qpos[:, None] - kp[None, :]
            local = (dist >= 0) & (dist < spec.local_window)  # [cq, hi - lo]
            st.local_mass[:, :, qs:qe] = (p * local).sum(-1)
        if "span_mass" in want:
            in_span = (kp[None, :] >= spec.span[:, :1]) & (kp[None, :] < spec.span[:, 1:])  # [b, hi - lo]
            st.span_mass[:, :, qs:qe] = (p * in_span[:, None, None, :]).sum(-1)
        if key_stats:
            counted = ~torch.isnan(lse)[..., None]  # [b, h, cq, 1]: rows with NaN statistics add no key mass
            if qvalid is not None:
                qv = qvalid[:, None, qs:qe, None]  # [b, 1, cq, 1]
                key_mass[..., lo:hi] += torch.where(qv & counted, p, 0.0).sum(-2)
                key_count[..., lo:hi] += (allowed & qv).sum(-2, dtype=torch.float32)
            else:
                key_mass[..., lo:hi] += torch.where(counted, p, 0.0).sum(-2)
                key_count[..., lo:hi] += allowed.sum(-2, dtype=torch.float32).expand(b, key_count.shape[1], hi - lo)
    if key_stats:
        finish_key_stats(st, want, key_mass, key_count.expand(b, h, lk))
    return out, st
