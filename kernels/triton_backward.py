"""Triton backward kernels: FlashAttention-2-style gradients recomputed from the forward pass's log-sum-exp.

With s = scale * q.k + bias (natural units), p = exp(s - lse), O = P V and dO the output gradient:
    dV = P^T dO      dP = dO V^T      dS = P * (dP - D),  D = rowsum(dO * O)
    dQ = scale * dS K      dK = scale * dS^T Q      d bias[key] = sum over queries of dS
Three launches, all deterministic (no atomics):
  * `bwd_preprocess_kernel`: D per query row, and the lse in log2 units with +inf on rows that see no key (so
    p = 2^(s - lse2) is 0 there without a mask: such rows get zero gradients).
  * `bwd_dkdv_kernel`, key-major (the loop of the key-statistics pass): one program owns BLOCK_N keys of one
    (batch, KV head), keeps K, V and the dK, dV accumulators on chip, and walks the query heads of its GQA group
    (or a slice of them, `HEADS_PER_PROG`) and, for each, the query blocks that can see its keys. It also writes the
    key-bias gradient per query head when asked.
  * `bwd_dq_kernel`, query-major (the loop of the forward pass): one program owns BLOCK_M queries of one head.
Scores are kept in log2 units as in the forward (qk_scale = scale * log2 e), and dS is converted back to natural
units by the final `scale` multiplications. Key and query blocks that see each other in full run without masks.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .device_bench import autotune_timer
from .triton_forward import INTERPRET, _visible, _walk_bounds, fitting, softcap_with_slope


def _fit(configs, named_args, kwargs, smem_bytes):
    return configs if INTERPRET else fitting(configs, named_args, kwargs, smem_bytes)


def _dkdv_configs():
    if INTERPRET:  # the CPU interpreter: one config, big tiles = fewer Python-level steps
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=8, num_stages=2),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 128}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 64}, num_warps=8, num_stages=2),  # head_dim 256: 8 warps keep
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=8, num_stages=1),  # dK, dV in registers
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 64}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1),  # head_dim 256 in float32
    ]


def _dq_configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=2),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 32}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=8, num_stages=2),  # head_dim 256
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=8, num_stages=1),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1),
    ]


def _dkdv_smem(c, block_d, elt):  # K, V resident; Q and dO tiles per pipeline stage
    bm, bn, st = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], max(1, c.num_stages)
    return (2 * bn * block_d + 2 * st * bm * block_d) * elt


def _dq_smem(c, block_d, elt):  # Q, dO resident; K and V tiles per pipeline stage
    bm, bn, st = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], max(1, c.num_stages)
    return (2 * bm * block_d + 2 * st * bn * block_d) * elt


def _prune_dkdv(configs, named_args, **kwargs):
    return _fit(configs, named_args, kwargs, _dkdv_smem)


def _prune_dq(configs, named_args, **kwargs):
    return _fit(configs, named_args, kwargs, _dq_smem)


@triton.jit
def bwd_preprocess_kernel(
    Out, DO, LSE, DELTA, LSE2,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    H, Lq,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """DELTA = rowsum(dO * O) (float32); LSE2 = lse * log2(e), +inf where lse = -inf."""
    LOG2E: tl.constexpr = 1.4426950408889634
    pid_bh = tl.program_id(0).to(tl.int64)  # batch x heads on the first grid axis: no 65,535 limit there
    pid_m = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    m0 = tl.cast(pid_m * BLOCK_M, tl.int64)  # 64-bit block start: row * stride may pass 2^31 at 1M tokens
    offs_mb = tl.arange(0, BLOCK_M)
    offs_m = m0 + offs_mb
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Lq
    mask = row_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    o_base = Out + b * stride_ob + h * stride_oh + m0 * stride_om
    do_base = DO + b * stride_dob + h * stride_doh + m0 * stride_dom
    o = tl.load(o_base + offs_mb[:, None] * stride_om + offs_d[None, :] * stride_od, mask=mask, other=0.0)
    do = tl.load(do_base + offs_mb[:, None] * stride_dom + offs_d[None, :] * stride_dod, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    row = pid_bh * Lq + offs_m
    lse = tl.load(LSE + row, mask=row_ok, other=0.0)
    tl.store(DELTA + row, delta, mask=row_ok)
    tl.store(LSE2 + row, tl.where(lse == float("-inf"), float("inf"), lse * LOG2E), mask=row_ok)


@triton.jit
def _dkdv_inner(
    dk, dv, db, k, v, q_base, do_base, lse_base, delta_base, stride_qm, stride_qd, stride_dom, stride_dod,
    bias_col, k_ok, offs_n, offs_d, lo, hi, Lq, q_offset, qk_scale, window,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTCAP: tl.constexpr, WANT_DBIAS: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
):
    LOG2E: tl.constexpr = 1.4426950408889634
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM
    offs_m0 = tl.arange(0, BLOCK_M)
    dmask = offs_d < HEAD_DIM
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        m0 = tl.cast(start_m, tl.int64)  # 64-bit block start, 32-bit offsets inside the block
        qt_ptrs = q_base + m0 * stride_qm + offs_m0[None, :] * stride_qm + offs_d[:, None] * stride_qd  # [D, M]
        do_ptrs = do_base + m0 * stride_dom + offs_m0[:, None] * stride_dom + offs_d[None, :] * stride_dod  # [M, D]
        if MASKED:
            m_ok = offs_m < Lq
            qt = tl.load(qt_ptrs, mask=m_ok[None, :] & dmask[:, None], other=0.0)
            do = tl.load(do_ptrs, mask=m_ok[:, None] & dmask[None, :], other=0.0)
            lse2 = tl.load(lse_base + offs_m, mask=m_ok, other=float("inf"))
            delta = tl.load(delta_base + offs_m, mask=m_ok, other=0.0)
        else:
            if EVEN_D:
                qt = tl.load(qt_ptrs)
                do = tl.load(do_ptrs)
            else:
                qt = tl.load(qt_ptrs, mask=dmask[:, None], other=0.0)
                do = tl.load(do_ptrs, mask=dmask[None, :], other=0.0)
            lse2 = tl.load(lse_base + offs_m)
            delta = tl.load(delta_base + offs_m)
        if UPCAST:
            st = tl.dot(k.to(tl.float32), qt.to(tl.float32), input_precision=DOT_PREC)
        else:
            st = tl.dot(k, qt, input_precision=DOT_PREC)  # [BLOCK_N, BLOCK_M]: scores, transposed
        st = st * qk_scale
        if SOFTCAP > 0:  # capped scores; d(capped) / d(raw) = 1 - tanh^2, taken before any mask sets -inf
            st, dcap = softcap_with_slope(st, SOFTCAP * LOG2E)
        if HAS_BIAS:
            st = st + bias_col[:, None]
        if MASKED:
            qpos = offs_m + q_offset
            ok = k_ok[:, None]
            if CAUSAL:
                ok = ok & (offs_n[:, None] <= qpos[None, :])
            if HAS_WINDOW:
                ok = ok & ((qpos[None, :] - offs_n[:, None]) < window)
            st = tl.where(ok, st, float("-inf"))
        pt = tl.exp2(st - lse2[None, :])  # [BLOCK_N, BLOCK_M]; 0 on masked keys and on rows that see no key
        if UPCAST:
            dv = tl.dot(pt, do.to(tl.float32), dv, input_precision=DOT_PREC)
            dpt = tl.dot(v.to(tl.float32), tl.trans(do.to(tl.float32)), input_precision=DOT_PREC)
        else:
            dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=DOT_PREC)
            dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)  # [BLOCK_N, BLOCK_M]
        dst = pt * (dpt - delta[None, :])  # dS^T in natural units
        if WANT_DBIAS:  # the bias is added after the cap: its gradient is dS itself
            db += tl.sum(dst, 1)
        if SOFTCAP > 0:
            dst = dst * dcap
        if UPCAST:
            dk = tl.dot(dst, tl.trans(qt.to(tl.float32)), dk, input_precision=DOT_PREC)
        else:
            dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk, input_precision=DOT_PREC)
    return dk, dv, db


@triton.autotune(
    configs=_dkdv_configs(),
    key=["LEN_BUCKET", "HEAD_DIM", "CAUSAL", "HAS_WINDOW", "HAS_VALID", "HAS_BIAS", "SOFTCAP", "WANT_DBIAS",
         "SPLIT_OUT"],
    prune_configs_by={"early_config_prune": _prune_dkdv},
    **autotune_timer(),  # device time, warm caches (`device_bench.py`)
)
@triton.jit
def bwd_dkdv_kernel(
    Q, K, V, DO, LSE2, DELTA, KVALID, BIAS, DK, DV, DBIAS,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dks, stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    H, KVH, G, HEADS_PER_PROG, Lq, Lk, q_offset, qk_scale, sm_scale, window, LEN_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr,
    WANT_DBIAS: tl.constexpr, SPLIT_OUT: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
    SOFTCAP: tl.constexpr = 0.0,
):
    LOG2E: tl.constexpr = 1.4426950408889634
    pid_bkh = tl.program_id(0).to(tl.int64)  # (batch, kv head, split)
    pid_n = tl.program_id(1)  # key blocks outer: with a causal mask the first ones, which see most queries, start first
    n_split = G // HEADS_PER_PROG
    split = pid_bkh % n_split
    bkh = pid_bkh // n_split
    b = bkh // KVH
    kvh = bkh % KVH
    k_start = pid_n * BLOCK_N
    offs_n = k_start + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k_in = offs_n < Lk
    kd_mask = k_in[:, None] & (offs_d[None, :] < HEAD_DIM)
    n0 = tl.cast(k_start, tl.int64)  # 64-bit block start: key * stride may pass 2^31 at 1M tokens
    offs_nb = tl.arange(0, BLOCK_N)
    k = tl.load(K + b * stride_kb + kvh * stride_kh + n0 * stride_kn + offs_nb[:, None] * stride_kn
                + offs_d[None, :] * stride_kd, mask=kd_mask, other=0.0)  # [BLOCK_N, BLOCK_D]
    v = tl.load(V + b * stride_vb + kvh * stride_vh + n0 * stride_vn + offs_nb[:, None] * stride_vn
                + offs_d[None, :] * stride_vd, mask=kd_mask, other=0.0)
    k_ok = k_in
    if HAS_VALID:
        kv = tl.load(KVALID + b * Lk + offs_n, mask=k_in, other=0)
        k_ok = k_ok & (kv != 0)

    # query blocks that can see these keys: [lo, mid) may miss some, [mid, full_end) see all, [full_end, hi) ragged
    k_last = tl.minimum(k_start + BLOCK_N, Lk) - 1
    lo = 0
    if CAUSAL:
        lo = tl.maximum(0, k_start - q_offset)
        lo = (lo // BLOCK_M) * BLOCK_M
    hi = Lq
    if HAS_WINDOW:
        hi = tl.minimum(Lq, k_last + window - q_offset)
    if CAUSAL:
        mid = tl.maximum(0, k_start + BLOCK_N - 1 - q_offset)
        mid = ((mid + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
    else:
        mid = lo
    full_end = (Lq // BLOCK_M) * BLOCK_M
    if HAS_WINDOW or HAS_VALID:
        mid = hi
    if k_start + BLOCK_N > Lk:
        mid = hi
    mid = tl.minimum(tl.maximum(mid, lo), hi)
    full_end = tl.maximum(tl.minimum(full_end, hi), mid)

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    h_first = kvh * G + split * HEADS_PER_PROG
    for h in range(h_first, h_first + HEADS_PER_PROG):
        bh = b * H + h
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_dob + h * stride_doh
        lse_base = LSE2 + bh * Lq
        delta_base = DELTA + bh * Lq
        bias_col = tl.zeros([BLOCK_N], dtype=tl.float32)
        if HAS_BIAS:
            bias_col = tl.load(BIAS + bh * Lk + offs_n, mask=k_in, other=0.0) * LOG2E
        db = tl.zeros([BLOCK_N], dtype=tl.float32)
        dk, dv, db = _dkdv_inner(
            dk, dv, db, k, v, q_base, do_base, lse_base, delta_base, stride_qm, stride_qd, stride_dom, stride_dod,
            bias_col, k_ok, offs_n, offs_d, lo, mid, Lq, q_offset, qk_scale, window,
            BLOCK_M, BLOCK_D, HEAD_DIM, True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, WANT_DBIAS, UPCAST,
            DOT_PREC,
        )
        dk, dv, db = _dkdv_inner(
            dk, dv, db, k, v, q_base, do_base, lse_base, delta_base, stride_qm, stride_qd, stride_dom, stride_dod,
            bias_col, k_ok, offs_n, offs_d, mid, full_end, Lq, q_offset, qk_scale, window,
            BLOCK_M, BLOCK_D, HEAD_DIM, False, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, WANT_DBIAS, UPCAST,
            DOT_PREC,
        )
        dk, dv, db = _dkdv_inner(
            dk, dv, db, k, v, q_base, do_base, lse_base, delta_base, stride_qm, stride_qd, stride_dom, stride_dod,
            bias_col, k_ok, offs_n, offs_d, full_end, hi, Lq, q_offset, qk_scale, window,
            BLOCK_M, BLOCK_D, HEAD_DIM, True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, WANT_DBIAS, UPCAST,
            DOT_PREC,
        )
        if WANT_DBIAS:
            tl.store(DBIAS + bh * Lk + offs_n, db, mask=k_in)
    dk = dk * sm_scale
    out_off = split * stride_dks + b * stride_dkb + kvh * stride_dkh + n0 * stride_dkn \
        + offs_nb[:, None] * stride_dkn + offs_d[None, :] * stride_dkd
    if SPLIT_OUT:  # float32 partial sums over a slice of the group, added up by the launcher
        tl.store(DK + out_off, dk, mask=kd_mask)
        tl.store(DV + out_off, dv, mask=kd_mask)
    else:
        tl.store(DK + out_off, dk.to(DK.dtype.element_ty), mask=kd_mask)
        tl.store(DV + out_off, dv.to(DV.dtype.element_ty), mask=kd_mask)


@triton.jit
def _dq_inner(
    dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, kvalid_base, bias_base,
    qpos, offs_d, lo, hi, Lk, qk_scale, window,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTCAP: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
):
    LOG2E: tl.constexpr = 1.4426950408889634
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM
    offs_n0 = tl.arange(0, BLOCK_N)
    dmask = offs_d < HEAD_DIM
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        n0 = tl.cast(start_n, tl.int64)  # 64-bit block start, 32-bit offsets inside the block
        kt_ptrs = k_base + n0 * stride_kn + offs_n0[None, :] * stride_kn + offs_d[:, None] * stride_kd  # [D, N]
        vt_ptrs = v_base + n0 * stride_vn + offs_n0[None, :] * stride_vn + offs_d[:, None] * stride_vd  # [D, N]
        if MASKED:
            kmask = (offs_n[None, :] < Lk) & dmask[:, None]
            kt = tl.load(kt_ptrs, mask=kmask, other=0.0)
            vt = tl.load(vt_ptrs, mask=kmask, other=0.0)
        elif EVEN_D:
            kt = tl.load(kt_ptrs)
            vt = tl.load(vt_ptrs)
        else:
            kt = tl.load(kt_ptrs, mask=dmask[:, None], other=0.0)
            vt = tl.load(vt_ptrs, mask=dmask[:, None], other=0.0)
        if UPCAST:
            s = tl.dot(q.to(tl.float32), kt.to(tl.float32), input_precision=DOT_PREC)
        else:
            s = tl.dot(q, kt, input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_N]
        s = s * qk_scale
        if SOFTCAP > 0:  # capped scores; d(capped) / d(raw) = 1 - tanh^2, taken before any mask sets -inf
            s, dcap = softcap_with_slope(s, SOFTCAP * LOG2E)
        if HAS_BIAS:
            bias = tl.load(bias_base + offs_n, mask=offs_n < Lk, other=0.0)
            s = s + bias[None, :] * LOG2E
        if MASKED:
            ok = _visible(offs_n, qpos, kvalid_base, Lk, window, CAUSAL, HAS_WINDOW, HAS_VALID)
            s = tl.where(ok, s, float("-inf"))
        p = tl.exp2(s - lse2[:, None])
        if UPCAST:
            dp = tl.dot(do.to(tl.float32), vt.to(tl.float32), input_precision=DOT_PREC)
        else:
            dp = tl.dot(do, vt, input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_N]
        ds = p * (dp - delta[:, None])
        if SOFTCAP > 0:
            ds = ds * dcap
        if UPCAST:
            dq = tl.dot(ds, tl.trans(kt.to(tl.float32)), dq, input_precision=DOT_PREC)
        else:
            dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=DOT_PREC)
    return dq


@triton.autotune(
    configs=_dq_configs(),
    key=["LEN_BUCKET", "HEAD_DIM", "CAUSAL", "HAS_WINDOW", "HAS_VALID", "HAS_BIAS", "SOFTCAP"],
    prune_configs_by={"early_config_prune": _prune_dq},
    **autotune_timer(),  # device time, warm caches (`device_bench.py`)
)
@triton.jit
def bwd_dq_kernel(
    Q, K, V, DO, LSE2, DELTA, KVALID, BIAS, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    H, G, Lq, Lk, q_offset, qk_scale, sm_scale, window, LEN_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PREC: tl.constexpr, SOFTCAP: tl.constexpr = 0.0,
):
    pid_bh = tl.program_id(0).to(tl.int64)
    pid_m = tl.num_programs(1) - 1 - tl.program_id(1)  # with a causal mask the last query blocks see most keys: first
    b = pid_bh // H
    h = pid_bh % H
    kvh = h // G
    offs_mb = tl.arange(0, BLOCK_M)
    offs_m = pid_m * BLOCK_M + offs_mb
    m0 = tl.cast(pid_m * BLOCK_M, tl.int64)  # 64-bit block start: row * stride may pass 2^31 at 1M tokens
    offs_d = tl.arange(0, BLOCK_D)
    qpos = offs_m + q_offset
    row_ok = offs_m < Lq
    qd_mask = row_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    q = tl.load(Q + b * stride_qb + h * stride_qh + m0 * stride_qm + offs_mb[:, None] * stride_qm
                + offs_d[None, :] * stride_qd, mask=qd_mask, other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + m0 * stride_dom + offs_mb[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=qd_mask, other=0.0)
    lse2 = tl.load(LSE2 + pid_bh * Lq + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + pid_bh * Lq + offs_m, mask=row_ok, other=0.0)
    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    kvalid_base = KVALID + b * Lk
    bias_base = BIAS + pid_bh * Lk

    # the forward pass's key range: [lo, mid) without masks, [mid, hi) masked (diagonal, window, padding, ragged)
    q_lo_abs = pid_m * BLOCK_M + q_offset
    q_hi_abs = tl.minimum(pid_m * BLOCK_M + BLOCK_M, Lq) - 1 + q_offset
    # (HAS_WINDOW is a bool here: a window walks every block masked, as `window_kind`'s narrow windows do)
    lo, _, mid, hi = _walk_bounds(q_lo_abs, q_hi_abs, Lk, window, BLOCK_N, CAUSAL, HAS_WINDOW, HAS_VALID)

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    dq = _dq_inner(
        dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, kvalid_base, bias_base,
        qpos, offs_d, lo, mid, Lk, qk_scale, window,
        BLOCK_N, BLOCK_D, HEAD_DIM, False, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, UPCAST, DOT_PREC,
    )
    dq = _dq_inner(
        dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, kvalid_base, bias_base,
        qpos, offs_d, mid, hi, Lk, qk_scale, window,
        BLOCK_N, BLOCK_D, HEAD_DIM, True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, UPCAST, DOT_PREC,
    )
    dq = dq * sm_scale
    tl.store(DQ + b * stride_dqb + h * stride_dqh + m0 * stride_dqm + offs_mb[:, None] * stride_dqm
             + offs_d[None, :] * stride_dqd, dq.to(DQ.dtype.element_ty), mask=qd_mask)
