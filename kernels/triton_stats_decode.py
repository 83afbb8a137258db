"""Statistics of a decode step (one query per head), the query heads of each KV head packed into one tile.

The general statistics kernel (`triton_stats.py`) runs one program per query block and head. In a decode step a
query block holds one live row, so a 32-row tile computes 31 rows for nothing, and each of a KV head's G query heads
walks the same K on its own (round 18, `docs/gpu/kspeed_notes.md`: at 128k cached keys, 9x64 spent 152 us in
statistics against cuDNN's 41 us for the output; 32x128 212 us against 185 us). Here one program takes the G query
heads of a KV head as the rows of one tile [BLOCK_G >= 16, keys]: K is read once per KV head, G rows of each tile
live. The cache is split into `n_parts` runs of consecutive key blocks, one program each; a second kernel combines
the parts' row partials in key order (the first of equal maxima, as one walk).

With one query per head, a head's key_mass is its probability row: stored as float32, no atomics, no fixed point
(the general kernel's int64 sums give the same value to float32 rounding), key_count is 1 for every key and key_mean
equals key_mass. Applies to q_len == 1 with no padding mask, key bias or window (`launcher_decode.eligible`); on
by default (INTERP_DECODE_PACK=0: the general kernel; `launcher_decode`).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_stats_rows import LSE_LIMIT, _bad_rows, _row_flags, _store_full_walk, _store_masses
from .triton_stats_t import _key_scores


@triton.jit
def _row_partials(N: tl.constexpr):
    """Empty row partials of N rows: max score -inf, its key -1, sum p log2 p and the sink / local / span masses 0."""
    zero = tl.zeros([N], dtype=tl.float32)
    return tl.full([N], float("-inf"), dtype=tl.float32), tl.full([N], -1, dtype=tl.int32), zero, zero, zero, zero


@triton.jit
def _packed_program(n_rows, G, H, KVH, Lk, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's share of a packed decode walk, one (batch x KV head, part) per program, parts fastest:
    (parts per KV head, this part, batch, KV head, the tile's row offsets [BLOCK_G], which of them are live query
    heads, their (batch x head) = their row of the outputs, and the part's keys [lo, hi): consecutive key blocks,
    none for a part past the cache)."""
    n_parts = tl.num_programs(0) // (n_rows // G)
    part = tl.program_id(0) % n_parts
    pid_bk = tl.program_id(0) // n_parts  # batch x KV head
    b = pid_bk // KVH
    kvh = pid_bk % KVH
    offs_g = tl.arange(0, BLOCK_G)
    g_ok = offs_g < G
    row = b * H + kvh * G + offs_g
    chunk = tl.cdiv(tl.cdiv(Lk, BLOCK_N), n_parts) * BLOCK_N
    lo = part * chunk
    return n_parts, part, b, kvh, offs_g, g_ok, row, lo, tl.minimum(lo + chunk, Lk)


@triton.jit
def _block_scores(q, k_base, start_n, offs_n0, offs_n, offs_d, dmask, stride_kn, stride_kd, Lk, qk_scale, qpos,
                  UPCAST: tl.constexpr, DOT_PREC: tl.constexpr):
    """Raw scores q.k of one key block [BLOCK_G, BLOCK_N]: every key is visible to the step's query, so only the
    end of the cache is masked (-inf)."""
    return _key_scores(q, k_base, start_n, offs_n0, offs_n, offs_d, dmask, stride_kn, stride_kd, Lk, k_base,
                       qk_scale, k_base, qpos, 0, True, False, False, 0, False, False, 0.0, UPCAST, DOT_PREC, False)


@triton.jit
def _span_of(SPANS, b, WANT_SPAN: tl.constexpr):
    """Batch b's span [lo, hi) from SPANS [b, 2] int64 (0, 0 when no span is asked for)."""
    span_lo = 0
    span_hi = 0
    if WANT_SPAN:
        span_lo = tl.load(SPANS + 2 * b)
        span_hi = tl.load(SPANS + 2 * b + 1)
    return span_lo, span_hi


@triton.jit
def _running_max(s, offs_n, m_i, a_i, WANT_ARG: tl.constexpr):
    """Each row's running max score and its first key, after key block s [BLOCK_G, BLOCK_N] (keys offs_n): the
    block's first key at its max, kept only where the max grows (a tie keeps the earlier block's key)."""
    m_blk = tl.max(s, 1)
    if WANT_ARG:
        blk_arg = tl.min(tl.where(s == m_blk[:, None], offs_n[None, :], 2147483647), 1)
        a_i = tl.where(m_blk > m_i, blk_arg, a_i)
    return tl.maximum(m_i, m_blk), a_i


@triton.jit
def _add_masses(sk_i, lc_i, sp_i, p, start_n, offs_n, q_pos, sink_tokens, local_window, span_lo, span_hi,
                BLOCK_N: tl.constexpr, WANT_SINK: tl.constexpr, WANT_LOCAL: tl.constexpr, WANT_SPAN: tl.constexpr):
    """A key block's share p [BLOCK_G, BLOCK_N] of each row's sink / local / span mass, added where the block
    reaches those keys (the local window: the step's query at q_pos)."""
    if WANT_SINK:
        if start_n < sink_tokens:
            sk_i += tl.sum(tl.where(offs_n[None, :] < sink_tokens, p, 0.0), 1)
    if WANT_LOCAL:  # (only the blocks the window reaches)
        if start_n + BLOCK_N > q_pos - local_window + 1:
            dist = q_pos - offs_n
            lc_i += tl.sum(tl.where(((dist >= 0) & (dist < local_window))[None, :], p, 0.0), 1)
    if WANT_SPAN:
        if (start_n < span_hi) & (start_n + BLOCK_N > span_lo):
            sp_i += tl.sum(tl.where(((offs_n >= span_lo) & (offs_n < span_hi))[None, :], p, 0.0), 1)
    return sk_i, lc_i, sp_i


@triton.jit
def decode_walk_kernel(
    Q, K, LSE, PF, PA, KM_OUT, KCOUNT, KMEAN_OUT, SPANS,
    stride_qb, stride_qh, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    H, G, KVH, Lk, q_pos, qk_scale, sink_tokens, local_window, n_rows,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
    WANT_MAX: tl.constexpr, WANT_ARG: tl.constexpr, WANT_ENT: tl.constexpr, WANT_SINK: tl.constexpr,
    WANT_LOCAL: tl.constexpr, WANT_SPAN: tl.constexpr, WANT_KEY: tl.constexpr, WANT_COUNT: tl.constexpr,
    WANT_KMEAN: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """One (batch x KV head, part) per program, parts fastest. LSE [b * H] float32 (natural log); PF [5, n_parts,
    n_rows] float32 partials (max score, sum p log2 p, sink / local / span mass) and PA [n_parts, n_rows] int32 (the
    first key of the max), n_rows = b * H; KM_OUT, KCOUNT, KMEAN_OUT [b * H, Lk] float32; SPANS [b, 2] int64."""
    LOG2E: tl.constexpr = 1.4426950408889634
    n_parts, part, b, kvh, offs_g, g_ok, row, lo, hi = _packed_program(n_rows, G, H, KVH, Lk, BLOCK_G, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < HEAD_DIM
    lse = tl.load(LSE + row, mask=g_ok, other=float("-inf"))
    bad = _bad_rows(lse, LSE_LIMIT)  # (or sees nothing): q = 0 and lse +inf give p = 0 on every finite key
    b64 = b.to(tl.int64)  # (a sliced cache buffer can pass 2^31 elements)
    q_ptrs = Q + b64 * stride_qb + (kvh * G + offs_g).to(tl.int64)[:, None] * stride_qh + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=g_ok[:, None] & dmask[None, :] & ~bad[:, None], other=0.0)
    lse_row = tl.where(bad, float("inf"), lse * LOG2E)
    k_base = K + b64 * stride_kb + kvh.to(tl.int64) * stride_kh
    span_lo, span_hi = _span_of(SPANS, b, WANT_SPAN)
    m_i, a_i, e_i, sk_i, lc_i, sp_i = _row_partials(BLOCK_G)
    offs_n0 = tl.arange(0, BLOCK_N)
    qpos = tl.zeros([BLOCK_G], dtype=tl.int32) + q_pos
    out_base = row.to(tl.int64)[:, None] * Lk  # [BLOCK_G, 1]
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        s = _block_scores(q, k_base, start_n, offs_n0, offs_n, offs_d, dmask, stride_kn, stride_kd, Lk, qk_scale,
                          qpos, UPCAST, DOT_PREC)
        if WANT_MAX:
            m_i, a_i = _running_max(s, offs_n, m_i, a_i, WANT_ARG)
        t = s * qk_scale - lse_row[:, None]
        p = tl.exp2(t)
        if WANT_ENT:  # p = 0 where t = -inf (past the cache): p * max(t, -1e30) = 0, not NaN
            e_i += tl.sum(p * tl.maximum(t, -1e30), 1)
        sk_i, lc_i, sp_i = _add_masses(sk_i, lc_i, sp_i, p, start_n, offs_n, q_pos, sink_tokens, local_window,
                                       span_lo, span_hi, BLOCK_N, WANT_SINK, WANT_LOCAL, WANT_SPAN)
        k_in = g_ok[:, None] & (offs_n < Lk)[None, :]
        if WANT_KEY:  # a head's key mass is its probability row; bad rows add nothing (NaN only on a NaN key)
            mass = tl.where(bad[:, None], 0.0, p)
            tl.store(KM_OUT + out_base + offs_n[None, :], mass, mask=k_in)
            if WANT_KMEAN:  # key_count is 1: mean = mass
                tl.store(KMEAN_OUT + out_base + offs_n[None, :], mass, mask=k_in)
        if WANT_COUNT:  # geometry: every key seen by the step's query, bad rows included
            tl.store(KCOUNT + out_base + offs_n[None, :], tl.full([BLOCK_G, BLOCK_N], 1.0, tl.float32), mask=k_in)
    at = part * n_rows + row
    tl.store(PF + at, m_i, mask=g_ok)
    tl.store(PF + n_parts * n_rows + at, e_i, mask=g_ok)
    tl.store(PF + 2 * n_parts * n_rows + at, sk_i, mask=g_ok)
    tl.store(PF + 3 * n_parts * n_rows + at, lc_i, mask=g_ok)
    tl.store(PF + 4 * n_parts * n_rows + at, sp_i, mask=g_ok)
    tl.store(PA + at, a_i, mask=g_ok)


@triton.jit
def decode_combine_kernel(
    LSE, PF, PA, ROWS, ARG, n_parts, n_rows, qk_scale, rows_stride,
    BLOCK: tl.constexpr, BLOCK_P: tl.constexpr, WANT_MAXP: tl.constexpr, WANT_ARG: tl.constexpr,
    WANT_ENT: tl.constexpr, WANT_SINK: tl.constexpr, WANT_LOCAL: tl.constexpr, WANT_SPAN: tl.constexpr,
    S_MAXP: tl.constexpr, S_ENT: tl.constexpr, S_SINK: tl.constexpr, S_LOCAL: tl.constexpr, S_SPAN: tl.constexpr,
):
    """The parts' partials of BLOCK rows combined in key order, then the row statistics stored by the general
    kernel's own code (NaN / -1 on bad rows; max_prob, entropy 0 and argmax -1 on rows that see nothing).

    BLOCK_P parts at a time, loaded as one [BLOCK, BLOCK_P] tile and reduced across it: a loop over single parts
    (unrolled by four on sm_90, `examples/sm90_decode.py`) waits for its loads every iteration. Round 19 suspected it
    of most of a 9x64 8k step's 92 us at 128 parts (an estimate from the code, not profiled)."""
    LOG2E: tl.constexpr = 1.4426950408889634
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = rows < n_rows
    m_i, a_i, e_i, sk_i, lc_i, sp_i = _row_partials(BLOCK)
    offs_p = tl.arange(0, BLOCK_P)
    for p0 in range(0, n_parts, BLOCK_P):
        pp = p0 + offs_p
        msk = ok[:, None] & (pp < n_parts)[None, :]
        at = pp[None, :] * n_rows + rows[:, None]  # [BLOCK, BLOCK_P]
        m_p = tl.load(PF + at, mask=msk, other=float("-inf"))
        a_p = tl.load(PA + at, mask=msk, other=-1)
        m_c = tl.max(m_p, 1)
        # the first key among the parts at the chunk's max: parts run in key order and each part's key is its own
        # first at its max (all -inf: the parts' -1)
        a_c = tl.min(tl.where(m_p == m_c[:, None], a_p, 2147483647), 1)
        a_i = tl.where(m_c > m_i, a_c, a_i)  # strictly greater: a tie keeps the earlier chunk's (lower) key
        m_i = tl.maximum(m_i, m_c)
        if WANT_ENT:
            e_i += tl.sum(tl.load(PF + n_parts * n_rows + at, mask=msk, other=0.0), 1)
        if WANT_SINK:
            sk_i += tl.sum(tl.load(PF + 2 * n_parts * n_rows + at, mask=msk, other=0.0), 1)
        if WANT_LOCAL:
            lc_i += tl.sum(tl.load(PF + 3 * n_parts * n_rows + at, mask=msk, other=0.0), 1)
        if WANT_SPAN:
            sp_i += tl.sum(tl.load(PF + 4 * n_parts * n_rows + at, mask=msk, other=0.0), 1)
    lse_row = tl.load(LSE + rows, mask=ok, other=0.0) * LOG2E
    rs = tl.cast(rows_stride, tl.int64)
    _store_full_walk(m_i, a_i, e_i, LSE, ROWS, ARG, rows, ok, lse_row, qk_scale, rs, S_MAXP, S_ENT, False, WANT_MAXP,
                     WANT_ARG, WANT_ENT)
    _, bad = _row_flags(LSE, rows, ok)
    _store_masses(sk_i, lc_i, sp_i, bad, ROWS, rows, ok, rs, S_SINK, S_LOCAL, S_SPAN, WANT_SINK, WANT_LOCAL, WANT_SPAN)
