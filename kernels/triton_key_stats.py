"""Triton key-major pass: per-key received attention mass, reusing the forward pass's log-sum-exp.

One program owns BLOCK_N keys of one (batch, query head) and walks down the query blocks that can see them,
recomputing s = q.k and p = 2^(s - lse2) (only the QK^T product: half the forward's matrix work, but the same
number of exponentials, so this pass is exp-bound). Probabilities are added into a [BLOCK_M, BLOCK_N] float32
register tile and reduced over queries once at the end (a per-block column reduction would cost cross-thread
shuffles every step); the sums are written once: deterministic, no atomics. Query blocks that see every key of the block in full run without masks.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_forward import INTERPRET, fitting


def _configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=1)]
    configs = [
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 64}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1),
    ]
    return configs


def _smem(c, block_d, elt):
    bm, bn, st = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], max(1, c.num_stages)
    return (bn * block_d + st * bm * block_d) * elt


def _prune(configs, named_args, **kwargs):
    return configs if INTERPRET else fitting(configs, named_args, kwargs, _smem)


@triton.jit
def _key_inner(
    km, kc, kt, k_ok, kvalid_q_base, q_base, stride_qm, stride_qd, lse_base, bias_row,
    offs_n, offs_d, lo, hi, Lq, Lk, q_offset, qk_scale, window,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr,
    WANT_COUNT: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
):
    offs_m0 = tl.arange(0, BLOCK_M)
    dmask = offs_d < HEAD_DIM
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        q_ptrs = q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
        if MASKED:
            q = tl.load(q_ptrs, mask=(offs_m[:, None] < Lq) & dmask[None, :], other=0.0)
            lse2 = tl.load(lse_base + offs_m, mask=offs_m < Lq, other=float("-inf"))
        else:
            q = tl.load(q_ptrs, mask=dmask[None, :], other=0.0)
            lse2 = tl.load(lse_base + offs_m)
        if UPCAST:
            s = tl.dot(q.to(tl.float32), kt.to(tl.float32), input_precision=DOT_PREC)
        else:
            s = tl.dot(q, kt, input_precision=DOT_PREC)
        s = s * qk_scale
        if HAS_BIAS:
            s = s + bias_row[None, :]
        if MASKED:
            qpos = offs_m + q_offset
            ok = (offs_m[:, None] < Lq) & k_ok[None, :] & (lse2[:, None] > float("-inf"))
            if CAUSAL:
                ok = ok & (offs_n[None, :] <= qpos[:, None])
            if HAS_WINDOW:
                ok = ok & ((qpos[:, None] - offs_n[None, :]) < window)
            if HAS_BIAS:
                ok = ok & (bias_row[None, :] > float("-inf"))
            if HAS_VALID:
                qv = tl.load(kvalid_q_base + offs_m, mask=offs_m < Lq, other=0)
                ok = ok & (qv[:, None] != 0)
            lse_safe = tl.where(lse2 > float("-inf"), lse2, 0.0)
            p = tl.where(ok, tl.exp2(s - lse_safe[:, None]), 0.0)
            if WANT_COUNT:
                kc += tl.sum(ok.to(tl.float32), 0)
        else:
            p = tl.exp2(s - lse2[:, None])
            if WANT_COUNT:
                kc += BLOCK_M
        km += p  # [BLOCK_M, BLOCK_N]: summed over queries once, after the loop (no per-block reduction)
    return km, kc


@triton.autotune(
    configs=_configs(),
    key=["LEN_BUCKET", "HEAD_DIM", "CAUSAL", "HAS_WINDOW", "HAS_VALID", "HAS_BIAS", "WANT_COUNT"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def key_stats_kernel(
    Q, K, LSE2, KMASS, KCOUNT, KVALID, BIAS,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    H, G, Lq, Lk, q_offset, qk_scale, window, LEN_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr,
    WANT_COUNT: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
):
    LOG2E: tl.constexpr = 1.4426950408889634
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    kvh = h // G
    k_start = pid_n * BLOCK_N
    offs_n = k_start + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k_ok = offs_n < Lk
    k_ptrs = K + b * stride_kb + kvh * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    kt = tl.load(k_ptrs, mask=k_ok[None, :] & (offs_d[:, None] < HEAD_DIM), other=0.0)  # [BLOCK_D, BLOCK_N]
    if HAS_VALID:
        kv = tl.load(KVALID + b * Lk + offs_n, mask=k_ok, other=0)
        k_ok = k_ok & (kv != 0)
    bias_row = tl.zeros([BLOCK_N], dtype=tl.float32)
    if HAS_BIAS:
        bias_row = tl.load(BIAS + pid_bh * Lk + offs_n, mask=offs_n < Lk, other=0.0) * LOG2E
    q_base = Q + b * stride_qb + h * stride_qh
    lse_base = LSE2 + pid_bh * Lq
    kvalid_q_base = KVALID + b * Lk + q_offset

    k_last = tl.minimum(k_start + BLOCK_N, Lk) - 1
    lo = 0
    if CAUSAL:
        lo = tl.maximum(0, k_start - q_offset)
        lo = (lo // BLOCK_M) * BLOCK_M
    hi = Lq
    if HAS_WINDOW:
        hi = tl.minimum(Lq, k_last + window - q_offset)
    # [lo, mid): rows that may miss some keys of the block; [mid, full_end): rows that see them all
    if CAUSAL:
        mid = tl.maximum(0, k_start + BLOCK_N - 1 - q_offset)
        mid = ((mid + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
    else:
        mid = lo
    full_end = (Lq // BLOCK_M) * BLOCK_M
    if HAS_WINDOW or HAS_VALID or HAS_BIAS:
        mid = hi
    if k_start + BLOCK_N > Lk:
        mid = hi
    mid = tl.minimum(tl.maximum(mid, lo), hi)
    full_end = tl.maximum(tl.minimum(full_end, hi), mid)

    km = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    kc = tl.zeros([BLOCK_N], dtype=tl.float32)
    km, kc = _key_inner(
        km, kc, kt, k_ok, kvalid_q_base, q_base, stride_qm, stride_qd, lse_base, bias_row,
        offs_n, offs_d, lo, mid, Lq, Lk, q_offset, qk_scale, window,
        BLOCK_M, BLOCK_D, HEAD_DIM, True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, WANT_COUNT, UPCAST, DOT_PREC,
    )
    km, kc = _key_inner(
        km, kc, kt, k_ok, kvalid_q_base, q_base, stride_qm, stride_qd, lse_base, bias_row,
        offs_n, offs_d, mid, full_end, Lq, Lk, q_offset, qk_scale, window,
        BLOCK_M, BLOCK_D, HEAD_DIM, False, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, WANT_COUNT, UPCAST, DOT_PREC,
    )
    km, kc = _key_inner(
        km, kc, kt, k_ok, kvalid_q_base, q_base, stride_qm, stride_qd, lse_base, bias_row,
        offs_n, offs_d, full_end, hi, Lq, Lk, q_offset, qk_scale, window,
        BLOCK_M, BLOCK_D, HEAD_DIM, True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, WANT_COUNT, UPCAST, DOT_PREC,
    )
    out_off = pid_bh * Lk + offs_n
    tl.store(KMASS + out_off, tl.sum(km, 0), mask=offs_n < Lk)
    if WANT_COUNT:
        tl.store(KCOUNT + out_off, kc, mask=offs_n < Lk)
