"""The statistics pass's per-row finish (`triton_stats.py`): which rows are bad, the stores of the full walk's row
statistics, the combine of a walk parted over several programs, and the key sums' finalize. Kept apart from the
walks so each file holds one concept."""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_forward import INTERPRET

# rows with |lse| >= LSE_LIMIT get NaN statistics: p = 2^(s - lse2) is not float32-precise there (see `_bad_rows`)
LSE_LIMIT = tl.constexpr(100000.0)
ON_GPU = tl.constexpr(not INTERPRET)


@triton.jit
def _bad_rows(lse, LSE_LIMIT: tl.constexpr):
    """Rows whose statistics cannot be formed and are reported as NaN: a NaN lse (NaN or Inf in the inputs), or
    one so large that p = 2^(s - lse2) loses its precision in float32 (|lse| >= LSE_LIMIT: scores of that size).
    True also on rows that see nothing (lse = -inf), which the caller tells apart. Bad rows add nothing to key
    statistics: their q is zeroed and their lse taken as +inf, so p = 0 (NaN only on a NaN key, which only bad
    rows see)."""
    return ~(tl.abs(lse) < LSE_LIMIT)


@triton.jit
def _row_flags(LSE, out, row_ok):
    """(rows that see a key, rows whose statistics are NaN: `_bad_rows` but not merely empty), from the lse at `out`,
    loaded again where it is needed (fewer live registers than keeping it)."""
    lse = tl.load(LSE + out, mask=row_ok, other=float("-inf"))
    return lse > float("-inf"), _bad_rows(lse, LSE_LIMIT) & (lse != float("-inf"))  # NaN included (NaN > -inf: no)


@triton.jit
def _store_full_walk(m_i, a_i, e_i, LSE, ROWS, ARG, out, row_ok, lse_row, qk_scale, rs, S_MAXP: tl.constexpr,
                     S_ENT: tl.constexpr, HAS_BIAS: tl.constexpr, WANT_MAXP: tl.constexpr, WANT_ARG: tl.constexpr,
                     WANT_ENT: tl.constexpr):
    """max_prob, argmax and entropy of the rows at `out`, NaN / -1 on bad rows, 0 / -1 on rows that see nothing."""
    LN2: tl.constexpr = 0.6931471805599453
    seen, bad = _row_flags(LSE, out, row_ok)
    if WANT_MAXP:
        m_log2 = m_i if HAS_BIAS else m_i * qk_scale  # the row's max score in log2 units
        maxp = tl.where(seen, tl.exp2(m_log2 - lse_row), 0.0)
        tl.store(ROWS + S_MAXP * rs + out, tl.where(bad, float("nan"), maxp), mask=row_ok)
    if WANT_ARG:
        tl.store(ARG + out, tl.where(bad | ~seen, -1, a_i), mask=row_ok)  # (a packed walk zeroes q on such rows)
    if WANT_ENT:  # H = -sum p ln p, >= 0; NaN stays NaN: a score that overflowed float32 to -inf (finite inputs
        # near 1e20) added p * t = 0 * -inf to the row's sum, and the walk cannot tell what it lost (`stats.py`)
        ent = -LN2 * e_i
        ent = tl.where(seen, tl.where(ent < 0.0, 0.0, ent), 0.0)
        tl.store(ROWS + S_ENT * rs + out, tl.where(bad, float("nan"), ent), mask=row_ok)


@triton.jit
def _store_masses(sk_i, lc_i, sp_i, bad, ROWS, out, mask, rs, S_SINK: tl.constexpr, S_LOCAL: tl.constexpr,
                  S_SPAN: tl.constexpr, WANT_SINK: tl.constexpr, WANT_LOCAL: tl.constexpr, WANT_SPAN: tl.constexpr):
    """sink / local / span mass of the rows at `out` (NaN on `bad` rows: `_row_flags`), stored where `mask`."""
    nan = float("nan")
    if WANT_SINK:
        tl.store(ROWS + S_SINK * rs + out, tl.where(bad, nan, sk_i), mask=mask)
    if WANT_LOCAL:
        tl.store(ROWS + S_LOCAL * rs + out, tl.where(bad, nan, lc_i), mask=mask)
    if WANT_SPAN:
        tl.store(ROWS + S_SPAN * rs + out, tl.where(bad, nan, sp_i), mask=mask)


@triton.jit
def _fence(x):
    """fence.acq_rel.gpu in every thread, once per element of x it holds (a no-op in the CPU interpreter, which runs
    programs one at a time)."""
    if ON_GPU:
        tl.inline_asm_elementwise("fence.acq_rel.gpu;\n mov.u32 $0, $1;", "=r,r", [x], dtype=tl.int32,
                                  is_pure=False, pack=1)


@triton.jit
def _finalize_keys(KM, KC, OUT, MEAN, Lk, inv_fix, BLOCK: tl.constexpr, WANT_KMEAN: tl.constexpr):
    """key_mass = fixed-point sum * inv_fix (int64 -> float32, then the product: as torch's `kmass * (1 / fix)`), and
    key_mean = key_mass / key_count (NaN where no query sees the key), for one (batch, head)'s Lk keys. Loads go to
    L2 (.cg): the atomics of other programs live there, not in this SM's L1. Wide chunks (BLOCK = 1024: 8 per thread
    at 4 warps) keep the serial loop short: it runs at the end of the kernel, after the head's other programs."""
    offs = tl.arange(0, BLOCK)
    for c in range(0, Lk, BLOCK):
        o = c + offs
        ok = o < Lk
        mass = tl.load(KM + o, mask=ok, other=0, cache_modifier=".cg").to(tl.float32) * inv_fix
        tl.store(OUT + o, mass, mask=ok)
        if WANT_KMEAN:
            cnt = tl.load(KC + o, mask=ok, other=1.0, cache_modifier=".cg")
            tl.store(MEAN + o, tl.math.div_rn(mass, cnt), mask=ok)  # rounded as torch's division


@triton.jit
def _combine_parts(PART, TICKET, m_i, a_i, e_i, part, n_parts, ticket_at, out, row_ok, n_rows):
    """A query block's full walk split over n_parts programs (consecutive key ranges, `part` = this one's): each
    stores its partial max score, argmax and sum p log2 p for the rows at `out` in PART [n_parts, 3, n_rows] float32
    (argmax bit-cast), then takes a ticket; the last to arrive combines the partials in key order, so the result does
    not depend on which program ends last: max of the maxima; the argmax of the first split holding the max (a later
    one replaces it only when strictly greater: the first key, as in one walk); the sums added in part order. It
    returns (max, argmax, sum, whether it is the last): only the last stores the rows. The ticket goes back to 0."""
    base = PART + tl.cast(part, tl.int64) * 3 * n_rows
    tl.store(base + out, m_i, mask=row_ok)
    tl.store(base + n_rows + out, a_i.to(tl.float32, bitcast=True), mask=row_ok)
    tl.store(base + 2 * n_rows + out, e_i, mask=row_ok)
    # this thread's partials, ordered before the ticket: one fence per thread (32 elements hold one per thread; a_i
    # in the key-by-query walk's layout holds 16, and fencing once per element of it cost 20 us at 9x64 1k)
    _fence(tl.arange(0, 32))
    tl.debug_barrier()  # ... and every thread's
    ticket = tl.atomic_add(TICKET + ticket_at, 1, sem="acq_rel", scope="gpu")
    last = ticket == n_parts - 1
    if last:
        _fence(tl.arange(0, 32))
        m_i = tl.full(m_i.shape, float("-inf"), dtype=tl.float32)
        a_i = tl.full(a_i.shape, -1, dtype=tl.int32)
        e_i = tl.zeros(e_i.shape, dtype=tl.float32)
        for s in range(0, n_parts):
            at = PART + tl.cast(s, tl.int64) * 3 * n_rows + out
            m_s = tl.load(at, mask=row_ok, other=float("-inf"), cache_modifier=".cg")
            a_s = tl.load(at + n_rows, mask=row_ok, other=0.0, cache_modifier=".cg").to(tl.int32, bitcast=True)
            e_s = tl.load(at + 2 * n_rows, mask=row_ok, other=0.0, cache_modifier=".cg")
            better = m_s > m_i
            m_i = tl.where(better, m_s, m_i)
            a_i = tl.where(better, a_s, a_i)
            e_i += e_s
        tl.atomic_xchg(TICKET + ticket_at, 0)  # ready for the next launch (and the autotuner's timing runs)
    return m_i, a_i, e_i, last
