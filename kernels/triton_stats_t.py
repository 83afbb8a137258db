"""The statistics pass's full walk on a transposed tile (TRANSPOSE=1 configs of `triton_stats.py`).

The query-major walk forms s = q k^T as a [BLOCK_M queries, BLOCK_N keys] tile. There, per-key mass is a column
sum: a butterfly across the 8 lanes that share a column and a reduction across warps, every key block (about 170 of
the loop's 525 instructions per thread on sm_90; `docs/gpu/kspeed_notes.md`, round 6).

Here the same program (BLOCK_M queries of one head, walking the key blocks) forms s^T = k q^T, a [BLOCK_N keys,
BLOCK_M queries] tile, so that
    per key: a row sum, which in the tensor-core accumulator layout stays inside one warp (2 shuffles per row), then
        the same fixed-point int64 atomics as the query-major walk (bit-identical reruns);
    per query (max, argmax, sum p log2 p): column statistics, but no reduction per key block: each thread folds the
        two rows it holds of each 16-row group into running partials [BLOCK_N // 16, 8, BLOCK_M] (a reshape that
        splits the accumulator's rows into (warp group of 16, register row, lane row) keeps the fold inside the
        thread) and the partials are reduced across lanes and warps once, after the walk.
The argmax keeps, per partial, the first key index reaching its running max (strictly greater replaces); after the
walk the smallest index among the partials equal to the row's max wins: the first occurrence, as in the reference.
Sink / local / span masses are not carried here: TRANSPOSE configs take them in walks of their own (SPLIT_MASSES).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_forward import _visible, softcap_scores


@triton.jit
def _key_scores(qx, k_base, start_n, offs_n0, offs_n, offs_d, dmask, stride_kn, stride_kd, Lk, bias_base, qk_scale,
                kvalid_base, qpos, window, MASKED: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
                HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTCAP: tl.constexpr,
                UPCAST: tl.constexpr,
                DOT_PREC: tl.constexpr, KEYS_FIRST: tl.constexpr):
    """One key block's scores for both statistics walks: the K tile loaded, its product with the queries, the key
    bias and, in masked blocks, -inf where a key is hidden. qx is q [BLOCK_M, BLOCK_D] and the result
    [BLOCK_M, BLOCK_N]; with KEYS_FIRST, qx is q transposed [BLOCK_D, BLOCK_M] and the result [BLOCK_N, BLOCK_M].
    The raw q.k (scale > 0 keeps its order, so max and argmax need no scaling), or, with a key bias, the scaled and
    biased score in log2 units."""
    LOG2E: tl.constexpr = 1.4426950408889634
    base = k_base + tl.cast(start_n, tl.int64) * stride_kn
    if KEYS_FIRST:
        k_ptrs = base + offs_n0[:, None] * stride_kn + offs_d[None, :] * stride_kd  # [BLOCK_N, BLOCK_D]
        in_keys = (offs_n[:, None] < Lk) & dmask[None, :]
        in_d = dmask[None, :]
    else:
        k_ptrs = base + offs_n0[None, :] * stride_kn + offs_d[:, None] * stride_kd  # [BLOCK_D, BLOCK_N]
        in_keys = (offs_n[None, :] < Lk) & dmask[:, None]
        in_d = dmask[:, None]
    if MASKED:
        kx = tl.load(k_ptrs, mask=in_keys, other=0.0)
    elif EVEN_D:
        kx = tl.load(k_ptrs)
    else:
        kx = tl.load(k_ptrs, mask=in_d, other=0.0)
    if KEYS_FIRST:
        a = kx
        b = qx
    else:
        a = qx
        b = kx
    if UPCAST:
        s = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=DOT_PREC)
    else:
        s = tl.dot(a, b, input_precision=DOT_PREC)
    if HAS_BIAS:
        bias = tl.load(bias_base + offs_n, mask=offs_n < Lk, other=0.0)
        s = s * qk_scale
        if SOFTCAP > 0:  # capped before the bias is added (a soft-capping call always takes this path: its bias
            # is zero when none was given)
            s = softcap_scores(s, SOFTCAP * LOG2E)
        if KEYS_FIRST:
            s = s + bias[:, None] * LOG2E
        else:
            s = s + bias[None, :] * LOG2E
    if MASKED:
        ok = _visible(offs_n, qpos, kvalid_base, Lk, window, CAUSAL, HAS_WINDOW, HAS_VALID, KEYS_FIRST)
        s = tl.where(ok, s, float("-inf"))
    return s


@triton.jit
def _stats_inner_t(
    m_acc, a_acc, e_acc,
    qt, lse_col, qv_col, k_base, stride_kn, stride_kd, kvalid_base, bias_base, km_base,
    qpos_col, offs_d, lo, hi, Lk, qk_scale, window, fix_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTCAP: tl.constexpr, DO_MAX: tl.constexpr, DO_ARG: tl.constexpr, DO_ENT: tl.constexpr,
    DO_KEY: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """m_acc, a_acc, e_acc: [BLOCK_N // 16, 8, BLOCK_M] running partials (max score, its first key, sum p log2 p);
    qt [BLOCK_D, BLOCK_M] the queries, transposed; lse_col, qv_col, qpos_col [BLOCK_M]."""
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM
    tl.static_assert(BLOCK_N % 16 == 0, "TRANSPOSE configs need BLOCK_N a multiple of 16 (one warp's rows)")
    G: tl.constexpr = BLOCK_N // 16
    offs_n0 = tl.arange(0, BLOCK_N)
    dmask = offs_d < HEAD_DIM
    # key index of each partial's first register row: group g, lane row l -> 16 g + l (the second row is + 8)
    row0 = (tl.arange(0, G)[:, None, None] * 16 + tl.arange(0, 8)[None, :, None])  # [G, 8, 1]
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        s = _key_scores(qt, k_base, start_n, offs_n0, offs_n, offs_d, dmask, stride_kn, stride_kd, Lk, bias_base,
                        qk_scale, kvalid_base, qpos_col, window, MASKED, EVEN_D, CAUSAL, HAS_WINDOW, HAS_VALID,
                        HAS_BIAS, SOFTCAP, UPCAST, DOT_PREC, True)  # [BLOCK_N, BLOCK_M]: keys x queries
        if DO_MAX:  # the thread's two rows of each group (keys key0 and key0 + 8) into the running partials
            s0, s1 = tl.split(tl.permute(tl.reshape(s, [G, 2, 8, BLOCK_M]), (0, 2, 3, 1)))
            if DO_ARG:  # strictly greater replaces: ties keep the first (lower) key
                key0 = start_n + row0
                a_acc = tl.where(s0 > m_acc, key0, a_acc)
                m_acc = tl.maximum(m_acc, s0)
                a_acc = tl.where(s1 > m_acc, key0 + 8, a_acc)
                m_acc = tl.maximum(m_acc, s1)
            else:
                m_acc = tl.maximum(m_acc, tl.maximum(s0, s1))
        if HAS_BIAS:  # log2 p; -inf where the key is hidden or the row sees nothing
            t = s - lse_col[None, :]
        else:
            t = s * qk_scale - lse_col[None, :]
        p = tl.exp2(t)
        if DO_ENT:  # sum p log2 p: two fused multiply-adds per partial
            if MASKED or HAS_BIAS:  # p = 0 where t = -inf (a hidden key): p * max(t, -1e30) = 0, not NaN
                t = tl.maximum(t, -1e30)
            p0, p1 = tl.split(tl.permute(tl.reshape(p, [G, 2, 8, BLOCK_M]), (0, 2, 3, 1)))
            t0, t1 = tl.split(tl.permute(tl.reshape(t, [G, 2, 8, BLOCK_M]), (0, 2, 3, 1)))
            e_acc = e_acc + p0 * t0
            e_acc = e_acc + p1 * t1
        if DO_KEY:
            pk = p
            if HAS_VALID:  # padding queries never count towards key statistics
                pk = tl.where(qv_col[None, :], p, 0.0)
            row = tl.sum(pk, 1)  # [BLOCK_N]: inside one warp
            fixed = (tl.maximum(row, 0.0) * fix_scale + 0.5).to(tl.int64)
            tl.atomic_add(km_base + offs_n, fixed, mask=offs_n < Lk, sem="relaxed")
    return m_acc, a_acc, e_acc


@triton.jit
def _finish_t(m_acc, a_acc, e_acc, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The partials reduced across lanes and warps: (max score, its first key or -1, sum p log2 p), each [BLOCK_M]."""
    R: tl.constexpr = (BLOCK_N // 16) * 8
    m2 = tl.reshape(m_acc, [R, BLOCK_M])
    m_i = tl.max(m2, 0)
    a_i = tl.min(tl.where(m2 == m_i[None, :], tl.reshape(a_acc, [R, BLOCK_M]), 2147483647), 0)
    a_i = tl.where(a_i == 2147483647, -1, a_i)
    e_i = tl.sum(tl.reshape(e_acc, [R, BLOCK_M]), 0)
    return m_i, a_i, e_i


@triton.jit
def _walk_t(qt, lse_col, qv_col, k_base, stride_kn, stride_kd, kvalid_base, bias_base, km_base, qpos_col, offs_d,
            w_lo, w_full, w_mid, w_hi, Lk, qk_scale, window, fix_scale,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
            CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr,
            SOFTCAP: tl.constexpr, DO_MAX: tl.constexpr, DO_ARG: tl.constexpr, DO_ENT: tl.constexpr,
            DO_KEY: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr):
    """The full walk over key blocks [w_lo, w_hi) in its runs (`triton_forward._walk_bounds`): a wide window's
    masked lower edge [w_lo, w_full), the unmasked blocks [w_full, w_mid), the masked ones [w_mid, w_hi); then the
    partials reduced: (max score, its first key or -1, sum p log2 p), each [BLOCK_M]."""
    m_acc = tl.full([BLOCK_N // 16, 8, BLOCK_M], float("-inf"), dtype=tl.float32)
    a_acc = tl.full([BLOCK_N // 16, 8, BLOCK_M], -1, dtype=tl.int32)
    e_acc = tl.zeros([BLOCK_N // 16, 8, BLOCK_M], dtype=tl.float32)
    if HAS_WINDOW == 2:  # a wide window's lower edge (masked), then the blocks every row sees in full
        m_acc, a_acc, e_acc = _stats_inner_t(
            m_acc, a_acc, e_acc, qt, lse_col, qv_col, k_base, stride_kn, stride_kd, kvalid_base, bias_base, km_base,
            qpos_col, offs_d, w_lo, w_full, Lk, qk_scale, window, fix_scale, BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM,
            True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, DO_MAX, DO_ARG, DO_ENT, DO_KEY, UPCAST, DOT_PREC)
    m_acc, a_acc, e_acc = _stats_inner_t(
        m_acc, a_acc, e_acc, qt, lse_col, qv_col, k_base, stride_kn, stride_kd, kvalid_base, bias_base, km_base,
        qpos_col, offs_d, w_full, w_mid, Lk, qk_scale, window, fix_scale, BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM,
        False, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, DO_MAX, DO_ARG, DO_ENT, DO_KEY, UPCAST, DOT_PREC)
    m_acc, a_acc, e_acc = _stats_inner_t(
        m_acc, a_acc, e_acc, qt, lse_col, qv_col, k_base, stride_kn, stride_kd, kvalid_base, bias_base, km_base,
        qpos_col, offs_d, w_mid, w_hi, Lk, qk_scale, window, fix_scale, BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM,
        True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, DO_MAX, DO_ARG, DO_ENT, DO_KEY, UPCAST, DOT_PREC)
    return _finish_t(m_acc, a_acc, e_acc, BLOCK_M, BLOCK_N)
