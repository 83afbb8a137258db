"""A decode step's output and statistics in one pass over the cache (the packed walk of `triton_stats_decode.py`
with V as well): no separate forward.

The packed statistics walk reads K once more after cuDNN's forward has read K and V: at 128k cached keys that
second read is what keeps a step at ~1.4-1.6x SDPA (round 21, H200). Here each part of the cache is walked once,
flash-decoding style: the G query heads of a KV head as the rows of one tile, a running max per row, the output
accumulated from V, and every row statistic kept relative to the running max, so parts combine without the lse:

    per part (raw max m, x = s * qk_scale in log2 units, M = m * qk_scale rounded once, by the walk, and stored:
    the combine reads that M, so no part is weighted by a product rounded otherwise):
        l = sum 2^(x - M),  u = sum 2^(x - M) (x - M),  sink / local / span = sum 2^(x - M) over their keys,
        acc = sum 2^(x - M) v
    combined (lse2 = log2 sum_parts 2^M l, w = 2^(M - lse2)):
        sum p log2 p = sum_parts w (u + (M - lse2) l),  masses = sum_parts w mass,  out = sum_parts w acc

The walk stores each key's raw score in key_mass's buffer; the combine turns it into 2^(x - lse2) once the lse is
known. The relative forms (x - M <= 0) keep entropy's sum free of the cancellation that sum p x - lse2 would have
at large scores. Launcher: `launcher_decode.fused_decode`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_stats_decode import (_add_masses, _block_scores, _packed_program, _row_partials, _running_max,
                                  _span_of)
from .triton_stats_rows import LSE_LIMIT, _bad_rows, _row_flags, _store_full_walk, _store_masses

N_PF = 7  # per-part row partials in PF: raw max, l, u, sink, local, span, M (the max in log2 units)


@triton.jit
def _part_weight(m2, lse2):
    """A part's share of its row's mass, 2^(M - lse2) with M its max in log2 units as the walk rounded it (0 for an
    empty part). (Formed again as m_raw * qk_scale - lse2, the compiler makes it one FMA: the exact product, not the
    rounded M that the part's sums are relative to.)"""
    return tl.where(m2 == float("-inf"), 0.0, tl.exp2(m2 - lse2))


@triton.jit
def _part_tile(PF, p0, offs_p, n_parts, n_rows, r, lse2):
    """Parts [p0, p0 + BLOCK_P) of row r: which exist, their offset in PF's planes and PA, raw max, max in log2
    units and weight."""
    pp = p0 + offs_p
    ok = pp < n_parts
    at = pp * n_rows + r
    m_raw = tl.load(PF + at, mask=ok, other=float("-inf"))
    m2 = tl.load(PF + 6 * n_parts * n_rows + at, mask=ok, other=float("-inf"))
    return ok, at, m_raw, m2, _part_weight(m2, lse2)


@triton.jit
def fused_decode_walk_kernel(
    Q, K, V, PF, PA, PO, KM_OUT, SPANS,
    stride_qb, stride_qh, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    H, G, KVH, Lk, q_pos, qk_scale, sink_tokens, local_window, n_rows,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
    WANT_OUT: tl.constexpr, WANT_ARG: tl.constexpr, WANT_ENT: tl.constexpr, WANT_SINK: tl.constexpr,
    WANT_LOCAL: tl.constexpr, WANT_SPAN: tl.constexpr, WANT_KEY: tl.constexpr, UPCAST: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """One (batch x KV head, part) per program, parts fastest. PF [N_PF, n_parts, n_rows] float32 and PA [n_parts,
    n_rows] int32 (the first key at the raw max); PO [n_parts, n_rows, BLOCK_D] float32 (acc, unnormalised); KM_OUT
    [b * H, Lk] float32 (raw scores, made key_mass by the combine); SPANS [b, 2] int64; n_rows = b * H."""
    n_parts, part, b, kvh, offs_g, g_ok, row, lo, hi = _packed_program(n_rows, G, H, KVH, Lk, BLOCK_G, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < HEAD_DIM
    b64 = b.to(tl.int64)
    q_ptrs = Q + b64 * stride_qb + (kvh * G + offs_g).to(tl.int64)[:, None] * stride_qh + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=g_ok[:, None] & dmask[None, :], other=0.0)
    k_base = K + b64 * stride_kb + kvh.to(tl.int64) * stride_kh
    v_base = V + b64 * stride_vb + kvh.to(tl.int64) * stride_vh
    span_lo, span_hi = _span_of(SPANS, b, WANT_SPAN)
    m_i, a_i, u_i, sk_i, lc_i, sp_i = _row_partials(BLOCK_G)  # (m_i: the raw max; scale > 0 keeps the order)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
    offs_n0 = tl.arange(0, BLOCK_N)
    qpos = tl.zeros([BLOCK_G], dtype=tl.int32) + q_pos
    out_base = row.to(tl.int64)[:, None] * Lk  # [BLOCK_G, 1]
    # the running max in log2 units, carried from block to block rather than formed again from m_i: the compiler
    # contracts m_i * qk_scale - big into one FMA, which leaves the product's rounding error (~1e-7) where the max
    # has not moved, so every block rescaled the sums by 2^(that error): lse off by up to 1e-4 over ~1,500 blocks
    # (a decode step over 2^20 keys in 11 parts, H100). Carried, the exponent is exactly 0 there.
    m2_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        s = _block_scores(q, k_base, start_n, offs_n0, offs_n, offs_d, dmask, stride_kn, stride_kd, Lk, qk_scale,
                          qpos, UPCAST, DOT_PREC)
        m_new, a_i = _running_max(s, offs_n, m_i, a_i, WANT_ARG)
        m2_new = m_new * qk_scale  # the new max in log2 units
        big = tl.where(m2_new == float("-inf"), 0.0, m2_new)  # (a row with no finite score yet: nothing to rescale)
        alpha = tl.exp2(m2_i - big)  # 0 on the first block (m2_i = -inf); exactly 1 while the max stays
        t = s * qk_scale - big[:, None]  # x - M_new <= 0; -inf past the cache
        p = tl.exp2(t)
        if WANT_ENT:  # u carried to the new max: 2^(x - M_new) (x - M_new) = alpha 2^(x - M_old) ((x - M_old) + d)
            shift = tl.where(l_i > 0, m2_i - big, 0.0)  # d = M_old - M_new (0 before any mass)
            u_i = alpha * (u_i + shift * l_i) + tl.sum(p * tl.maximum(t, -1e30), 1)
        l_i = alpha * l_i + tl.sum(p, 1)
        if WANT_SINK:  # the masses carried to the new max, then the block's added
            sk_i = sk_i * alpha
        if WANT_LOCAL:
            lc_i = lc_i * alpha
        if WANT_SPAN:
            sp_i = sp_i * alpha
        sk_i, lc_i, sp_i = _add_masses(sk_i, lc_i, sp_i, p, start_n, offs_n, q_pos, sink_tokens, local_window,
                                       span_lo, span_hi, BLOCK_N, WANT_SINK, WANT_LOCAL, WANT_SPAN)
        if WANT_OUT:
            v_ptrs = v_base + offs_n[:, None].to(tl.int64) * stride_vn + offs_d[None, :] * stride_vd
            vx = tl.load(v_ptrs, mask=(offs_n < Lk)[:, None] & dmask[None, :], other=0.0)  # [BLOCK_N, BLOCK_D]
            acc = acc * alpha[:, None]
            if UPCAST:
                acc = tl.dot(p, vx.to(tl.float32), acc, input_precision=DOT_PREC)
            else:
                acc = tl.dot(p.to(vx.dtype), vx, acc, input_precision=DOT_PREC)
        if WANT_KEY:  # raw scores, turned into probabilities by the combine
            tl.store(KM_OUT + out_base + offs_n[None, :], s, mask=g_ok[:, None] & (offs_n < Lk)[None, :])
        m_i = m_new
        m2_i = m2_new
    at = part * n_rows + row
    tl.store(PF + at, m_i, mask=g_ok)
    tl.store(PF + n_parts * n_rows + at, l_i, mask=g_ok)
    tl.store(PF + 2 * n_parts * n_rows + at, u_i, mask=g_ok)
    tl.store(PF + 3 * n_parts * n_rows + at, sk_i, mask=g_ok)
    tl.store(PF + 4 * n_parts * n_rows + at, lc_i, mask=g_ok)
    tl.store(PF + 5 * n_parts * n_rows + at, sp_i, mask=g_ok)
    tl.store(PF + 6 * n_parts * n_rows + at, m2_i, mask=g_ok)
    tl.store(PA + at, a_i, mask=g_ok)
    if WANT_OUT:
        o_ptrs = PO + at.to(tl.int64)[:, None] * BLOCK_D + offs_d[None, :]
        tl.store(o_ptrs, acc, mask=g_ok[:, None])


@triton.jit
def _row_lse2(PF, row, n_parts, n_rows, BLOCK_P: tl.constexpr):
    """A row's lse in log2 units from its parts' (M, l): log2 sum 2^(M_p) l_p, M_p the walk's stored max in log2
    units (empty parts, max -inf, add nothing). NaN where a part's sum is NaN."""
    offs_p = tl.arange(0, BLOCK_P)
    big = tl.full([1], float("-inf"), dtype=tl.float32)
    tot = tl.zeros([1], dtype=tl.float32)
    for p0 in range(0, n_parts, BLOCK_P):
        pp = p0 + offs_p
        ok = pp < n_parts
        m_p = tl.load(PF + 6 * n_parts * n_rows + pp * n_rows + row, mask=ok, other=float("-inf"))
        l_p = tl.load(PF + n_parts * n_rows + pp * n_rows + row, mask=ok, other=0.0)
        new = tl.maximum(big, tl.max(m_p, 0))
        safe = tl.where(new == float("-inf"), 0.0, new)
        tot = tot * tl.exp2(big - safe) + tl.sum(tl.where(l_p > 0, l_p * tl.exp2(m_p - safe), l_p), 0)
        big = new
    return big + tl.log2(tot)


@triton.jit
def fused_decode_combine_kernel(
    PF, PA, PO, KM, KC, KMEAN, OUT, LSE, ROWS, ARG, n_parts, n_rows, Lk, chunk, qk_scale, rows_stride,
    stride_ob, stride_oh, H,
    BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, D_SLICE: tl.constexpr,
    HEAD_DIM: tl.constexpr, WANT_OUT: tl.constexpr, WANT_MAXP: tl.constexpr, WANT_ARG: tl.constexpr,
    WANT_ENT: tl.constexpr, WANT_SINK: tl.constexpr, WANT_LOCAL: tl.constexpr, WANT_SPAN: tl.constexpr,
    WANT_KEY: tl.constexpr, WANT_COUNT: tl.constexpr, WANT_KMEAN: tl.constexpr,
    S_MAXP: tl.constexpr, S_ENT: tl.constexpr, S_SINK: tl.constexpr, S_LOCAL: tl.constexpr, S_SPAN: tl.constexpr,
):
    """n_prog programs per row (rows slowest): program c works out its row's lse from the parts (a few hundred
    floats), turns the raw scores of key chunk c (`chunk` keys; none past the last chunk) into key_mass (0 on bad
    rows, as the general kernel: NaN, or |lse| >= LSE_LIMIT), key_mean and key_count, and combines the output's
    head-dim slice c (D_SLICE wide; none past the head dim) into OUT [b, H, 1, HEAD_DIM] (the query's dtype,
    strides of batch and head): a head's parts are spread over programs, not read by one (528 parts x 256 dims at
    MQA 128k took one program 66 us). Program 0 also stores the lse and the row statistics. Rows are [1]-vectors
    so that the general kernel's row stores serve (`triton_stats_rows`)."""
    LOG2E: tl.constexpr = 1.4426950408889634
    n_prog = tl.num_programs(0) // n_rows
    r = tl.program_id(0) // n_prog
    c = tl.program_id(0) % n_prog
    row = r + tl.zeros([1], dtype=tl.int32)  # [1]
    lse2 = _row_lse2(PF, row, n_parts, n_rows, BLOCK_P)  # [1]
    # bad rows get key_mass 0 (also where every score overflowed to -inf: lse -inf, 2^(x - lse2) NaN); their row
    # statistics follow `_row_flags` (NaN, but 0 / -1 on rows that see nothing, as the other kernels)
    bad = _bad_rows(lse2 / LOG2E, LSE_LIMIT)
    offs_p = tl.arange(0, BLOCK_P)
    if WANT_KEY or WANT_COUNT:
        offs = tl.arange(0, BLOCK_K)
        base = row.to(tl.int64) * Lk
        end = tl.minimum(c * chunk + chunk, Lk)  # (a chunk need not be a multiple of BLOCK_K)
        for k0 in range(c * chunk, end, BLOCK_K):
            o = k0 + offs
            ok = o < end
            if WANT_KEY:
                x = tl.load(KM + base + o, mask=ok, other=0.0)
                mass = tl.where(bad, 0.0, tl.exp2(x * qk_scale - lse2))
                tl.store(KM + base + o, mass, mask=ok)
                if WANT_KMEAN:  # key_count is 1: mean = mass
                    tl.store(KMEAN + base + o, mass, mask=ok)
            if WANT_COUNT:
                tl.store(KC + base + o, tl.full([BLOCK_K], 1.0, tl.float32), mask=ok)
    if WANT_OUT:
        if c * D_SLICE < HEAD_DIM:
            offs_d = c * D_SLICE + tl.arange(0, D_SLICE)
            o_acc = tl.zeros([D_SLICE], dtype=tl.float32)
            for p0 in range(0, n_parts, BLOCK_P):
                ok, at, _, _, w = _part_tile(PF, p0, offs_p, n_parts, n_rows, r, lse2)
                in_po = ok[:, None] & (offs_d < BLOCK_D)[None, :]  # (head dims of 16: a slice wider than the row)
                acc = tl.load(PO + at.to(tl.int64)[:, None] * BLOCK_D + offs_d[None, :], mask=in_po, other=0.0)
                o_acc += tl.sum(w[:, None] * acc, 0)
            o_ptrs = OUT + (r // H).to(tl.int64) * stride_ob + (r % H).to(tl.int64) * stride_oh + offs_d
            tl.store(o_ptrs, o_acc.to(OUT.dtype.element_ty), mask=offs_d < HEAD_DIM)
    if c == 0:
        ok1 = row < n_rows  # [1] True
        tl.store(LSE + row, lse2 / LOG2E)
        tl.debug_barrier()  # (the row stores below load it back)
        m_i, a_i, e_i, sk_i, lc_i, sp_i = _row_partials(1)
        for p0 in range(0, n_parts, BLOCK_P):
            ok, at, m_raw, m2, w = _part_tile(PF, p0, offs_p, n_parts, n_rows, r, lse2)
            if WANT_ARG:  # the first part at the max: parts run in key order, each part's key its own first
                m_c = tl.max(m_raw, 0)
                a_p = tl.load(PA + at, mask=ok, other=-1)
                a_c = tl.min(tl.where(m_raw == m_c, a_p, 2147483647), 0)
                a_i = tl.where(m_c > m_i, a_c, a_i)  # strictly greater: a tie keeps the earlier tile's key
            m_i = tl.maximum(m_i, tl.max(m_raw, 0))
            if WANT_ENT:
                l_p = tl.load(PF + n_parts * n_rows + at, mask=ok, other=0.0)
                u_p = tl.load(PF + 2 * n_parts * n_rows + at, mask=ok, other=0.0)
                shift = tl.where(m2 == float("-inf"), 0.0, m2 - lse2)
                e_i += tl.sum(w * (u_p + shift * l_p), 0)
            if WANT_SINK:
                sk_i += tl.sum(w * tl.load(PF + 3 * n_parts * n_rows + at, mask=ok, other=0.0), 0)
            if WANT_LOCAL:
                lc_i += tl.sum(w * tl.load(PF + 4 * n_parts * n_rows + at, mask=ok, other=0.0), 0)
            if WANT_SPAN:
                sp_i += tl.sum(w * tl.load(PF + 5 * n_parts * n_rows + at, mask=ok, other=0.0), 0)
        rs = tl.cast(rows_stride, tl.int64)
        _store_full_walk(m_i, a_i, e_i, LSE, ROWS, ARG, row, ok1, lse2, qk_scale, rs, S_MAXP, S_ENT, False,
                         WANT_MAXP, WANT_ARG, WANT_ENT)
        _, nan_rows = _row_flags(LSE, row, ok1)  # (rows that see nothing, lse -inf: masses 0)
        _store_masses(sk_i, lc_i, sp_i, nan_rows, ROWS, row, ok1, rs, S_SINK, S_LOCAL, S_SPAN, WANT_SINK,
                      WANT_LOCAL, WANT_SPAN)
