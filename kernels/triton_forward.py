"""Triton forward kernel: attention output and log-sum-exp in one pass, no n x n map.

Used where torch's SDPA kernels cannot run (sliding window, padding, key bias, float32, the CPU interpreter, ...):
one program owns BLOCK_M query rows of one (batch, head) and streams the key/value blocks it can see with the usual
online softmax (running max m, running sum l, output accumulator). The statistics are computed afterwards from the
log-sum-exp by `triton_stats.py`, the same pass whichever kernel produced the output.

Blocks that every row can see in full run without masks (MASKED=False); only diagonal, padding and ragged blocks pay
for the mask arithmetic, and, under a sliding window, its lower edge (a wide window, HAS_WINDOW = 2) or every block (a
narrow one, HAS_WINDOW = 1: `window_kind`, `_walk_bounds`). Every offset that can pass 2^31 elements (batch/head
bases, block starts times strides) is formed in 64 bits; offsets inside a tile stay 32-bit. Autotune configurations
live here, beside the kernel.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

from .device_bench import autotune_timer

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
FLAG_ON, FLAG_OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def flag_from_env(name: str, value: str | None, default: bool) -> bool:
    """An on/off environment variable: unset or empty -> `default`; 1/true/on/yes or 0/false/off/no (any case) ->
    on/off; anything else a ValueError naming the variable and the spellings it takes."""
    v = (value or "").strip().lower()
    if not v:
        return default
    if v in FLAG_ON or v in FLAG_OFF:
        return v in FLAG_ON
    raise ValueError(f"{name}={value!r}: use {'/'.join(FLAG_ON)} (on) or {'/'.join(FLAG_OFF)} (off); unset is "
                     f"{'on' if default else 'off'}")


# INTERP_AUTOTUNE=0 pins the first config of each kernel (quick compiles for correctness runs on a GPU)
AUTOTUNE = flag_from_env("INTERP_AUTOTUNE", os.environ.get("INTERP_AUTOTUNE"), True)


def wide_window_from_env(env: str | None) -> int:
    """`WIDE_WINDOW` from env INTERP_WIDE_WINDOW (unset: 2048 keys); a clear error for anything but a positive int."""
    if env is None:
        return 2048
    if not (env.strip().isascii() and env.strip().isdigit()) or int(env) < 1:
        raise ValueError(f"INTERP_WIDE_WINDOW must be a positive number of keys (default 2048), got {env!r}")
    return int(env)


# sliding windows of at least this many keys walk their interior unmasked (HAS_WINDOW = 2); narrower ones walk every
# block masked (HAS_WINDOW = 1). H100, 32x128 statistics kernel against every block masked: -19 % at a 4096 window,
# -2 to -9 % at 2048, +3-5 % at 1024, +14-19 % at 512 (`docs/gpu/variants_round14.log`, `window_kind_round15.log`);
# INTERP_WIDE_WINDOW moves the line (the GPU A/B sets it)
WIDE_WINDOW = wide_window_from_env(os.environ.get("INTERP_WIDE_WINDOW"))


def window_kind(window) -> int:
    """The HAS_WINDOW constexpr of the kernels for a sliding window of `window` keys (None: no window)."""
    if window is None:
        return 0
    return 2 if window >= WIDE_WINDOW else 1


def _configs():
    if INTERPRET:  # the CPU interpreter: one config, big tiles = fewer Python-level steps
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=1),  # head_dim 256 in float32
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1),
    ]  # pruned per call by _prune (shared memory), and to one config when INTERP_AUTOTUNE=0


SMEM_BUDGET = 200 * 1024  # bytes; the H100 allows 227 KiB per block
# inputs of at most this many tokens (autotune key LEN_BUCKET) are not autotuned: their run times differ by
# microseconds between configs, while tuning compiles every config once per key (minutes over a model's many keys)
SHORT_BUCKET = 256


def fitting(configs, named_args, kwargs, smem_bytes):
    """Keep the configs whose tiles fit in shared memory (head_dim 256 and float32 need small tiles); without
    autotuning, or for short inputs (LEN_BUCKET <= SHORT_BUCKET), the first that fits.
    `smem_bytes(config, block_d, element_size)` estimates one config's need."""
    block_d = kwargs.get("BLOCK_D", named_args.get("BLOCK_D", 128))
    elt = named_args["Q"].element_size() if "Q" in named_args else 2
    kept = [c for c in configs if 1.25 * smem_bytes(c, block_d, elt) <= SMEM_BUDGET]  # 25% for scratch
    if not kept:
        kept = [min(configs, key=lambda c: smem_bytes(c, block_d, elt))]
    bucket = kwargs.get("LEN_BUCKET", named_args.get("LEN_BUCKET"))
    short = bucket is not None and int(bucket) <= SHORT_BUCKET
    return kept if AUTOTUNE and not short else kept[:1]


def _smem(c, block_d, elt):
    bm, bn, st = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], max(1, c.num_stages)
    return (bm * block_d + 2 * st * bn * block_d) * elt


def _prune(configs, named_args, **kwargs):
    return configs if INTERPRET else fitting(configs, named_args, kwargs, _smem)


# up to this many query tokens the programs run heads-first, longest first (`_program`)
HEAVY_FIRST_MAX = tl.constexpr(8192)


@triton.jit
def _program(Lq, BLOCK_M: tl.constexpr):
    """(query block, batch x head) of this program on a 1-D grid of cdiv(Lq, BLOCK_M) x (b * h) programs (one axis:
    no 65,535 limit on batch x heads).
    Up to HEAVY_FIRST_MAX query tokens, heads vary fastest and the query blocks run from the last: under a causal
    mask those see the most keys, so in the one or few waves of a short call the short programs fill the tail
    instead of long ones starting late (H100, every statistic, graph-replayed: 1k 85.8 -> 76.4 us, 2k 207.2 ->
    190.9 us; `docs/gpu/ab_order_round8.log`). Longer, the order before: the query blocks of one head vary
    fastest, from the first (heads-first was 5-9 % slower at 256k-512k for the per-query and per-key statistics,
    H200, `docs/gpu/ab_heavy_first_long_round8.log`)."""
    return _program_at(tl.program_id(0), tl.num_programs(0), Lq, BLOCK_M)


@triton.jit
def _program_at(pid, n_programs, Lq, BLOCK_M: tl.constexpr):
    """`_program` for program `pid` of `n_programs` (the statistics pass numbers the query blocks it splits)."""
    n_m = tl.cdiv(Lq, BLOCK_M)
    if Lq <= HEAVY_FIRST_MAX:
        n_bh = n_programs // n_m
        pid_m = n_m - 1 - pid // n_bh
        pid_bh = pid % n_bh
    else:
        pid_m = pid % n_m
        pid_bh = pid // n_m
    return pid_m, pid_bh.to(tl.int64)


@triton.jit
def _walk_bounds(q_lo_abs, q_hi_abs, Lk, window, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                 HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr):
    """The key blocks a tile of queries at absolute positions [q_lo_abs, q_hi_abs] walks, in three runs:
    [lo, lo_full) masked (a wide sliding window's lower edge), [lo_full, mid) unmasked (every query of the tile sees
    every key of these blocks), [mid, hi) masked (the causal diagonal, the ragged end; with a padding mask or a
    narrow window every block: lo_full = mid = lo). Without a wide window lo_full = lo, and the kernels compile no
    lower-edge run at all (its mere presence slowed the 512-token window's walks by 8 %: `docs/gpu/kspeed_notes.md`,
    round 14)."""
    lo = 0
    if HAS_WINDOW:
        lo = tl.maximum(0, q_lo_abs - window + 1)
        lo = (lo // BLOCK_N) * BLOCK_N
    if CAUSAL:
        hi = tl.minimum(Lk, q_hi_abs + 1)
        mid = ((q_lo_abs + 1) // BLOCK_N) * BLOCK_N
    else:
        hi = Lk
        mid = (Lk // BLOCK_N) * BLOCK_N
    if HAS_VALID or HAS_WINDOW == 1:
        mid = lo
    mid = tl.minimum(tl.maximum(mid, lo), hi)
    lo_full = lo
    if HAS_WINDOW == 2:  # the tile's last query sees keys after q_hi_abs - window: every query sees them
        lo_full = tl.cdiv(tl.maximum(q_hi_abs - window + 1, 0), BLOCK_N) * BLOCK_N
        lo_full = tl.minimum(tl.maximum(lo_full, lo), mid)
    return lo, lo_full, mid, hi


@triton.jit
def _visible(offs_n, qpos, kvalid_base, Lk, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
             HAS_VALID: tl.constexpr, KEYS_FIRST: tl.constexpr = False):
    """Which (query, key) pairs of a tile are visible: key inside the sequence, causal, inside the window, key not
    padding. offs_n [BLOCK_N] key positions, qpos [BLOCK_M] absolute query positions; the mask is
    [BLOCK_M, BLOCK_N], or [BLOCK_N, BLOCK_M] when KEYS_FIRST (the key-by-query tiles of `triton_stats_t.py`)."""
    if KEYS_FIRST:
        kn = offs_n[:, None]
        qp = qpos[None, :]
    else:
        kn = offs_n[None, :]
        qp = qpos[:, None]
    if CAUSAL:  # inside the sequence and not after the query: one compare against min(query, Lk - 1)
        ok = kn <= tl.minimum(qp, Lk - 1)
    else:
        ok = kn < Lk
    if HAS_WINDOW:
        ok = ok & ((qp - kn) < window)
    if HAS_VALID:
        kv = tl.load(kvalid_base + offs_n, mask=offs_n < Lk, other=0)
        if KEYS_FIRST:
            ok = ok & (kv[:, None] != 0)
        else:
            ok = ok & (kv[None, :] != 0)
    return ok


@triton.jit
def softcap_scores(s, CAP2: tl.constexpr):
    """CAP2 * tanh(s / CAP2): the capped scores in log2 units (`cap_tanh`)."""
    return CAP2 * cap_tanh(s, CAP2)


@triton.jit
def softcap_with_slope(s, CAP2: tl.constexpr):
    """(CAP2 * tanh(s / CAP2), 1 - tanh^2): the capped scores and their derivative by s, for the backward (the
    slope exactly 0 where tanh saturates at +-1)."""
    th = cap_tanh(s, CAP2)
    return th * CAP2, 1.0 - th * th


@triton.jit
def cap_tanh(s, CAP2: tl.constexpr):
    """tanh(s / CAP2) for logit soft-capping in log2 units: s and CAP2 = softcap * log2(e) both scaled by log2(e),
    so that CAP2 * tanh(s / CAP2) is softcap * tanh(x / softcap) of the natural-unit score x, in log2 units. tanh
    from one exp2 (the interpreter has no libdevice tanh), and its odd series near 0, where 1 - 2 / (e^2y + 1) would
    cancel. Against float64 over |s| <= 2000 (CAP2 = 72): CAP2 * tanh within 1.1e-6 relative, 2e-7 * CAP2 absolute."""
    LOG2E: tl.constexpr = 1.4426950408889634
    y = s * (1.0 / CAP2)
    y2 = y * y
    small = y * (1.0 + y2 * (-1.0 / 3.0 + y2 * (2.0 / 15.0 + y2 * (-17.0 / 315.0))))
    big = 1.0 - 2.0 / (tl.exp2(y * (2.0 * LOG2E)) + 1.0)
    return tl.where(tl.abs(y) < 0.125, small, big)


@triton.jit
def _fwd_inner(
    acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, kvalid_base, bias_base,
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
        blk = tl.cast(start_n, tl.int64)
        k_ptrs = k_base + blk * stride_kn + offs_n0[None, :] * stride_kn + offs_d[:, None] * stride_kd  # [D, N]
        if MASKED:
            kt = tl.load(k_ptrs, mask=(offs_n[None, :] < Lk) & dmask[:, None], other=0.0)
        elif EVEN_D:
            kt = tl.load(k_ptrs)
        else:
            kt = tl.load(k_ptrs, mask=dmask[:, None], other=0.0)
        if UPCAST:
            s = tl.dot(q.to(tl.float32), kt.to(tl.float32), input_precision=DOT_PREC)
        else:
            s = tl.dot(q, kt, input_precision=DOT_PREC)
        s = s * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
        if SOFTCAP > 0:
            s = softcap_scores(s, SOFTCAP * LOG2E)
        if HAS_BIAS:
            bias = tl.load(bias_base + offs_n, mask=offs_n < Lk, other=0.0)
            s = s + bias[None, :] * LOG2E
        if MASKED:
            ok = _visible(offs_n, qpos, kvalid_base, Lk, window, CAUSAL, HAS_WINDOW, HAS_VALID)
            s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v_ptrs = v_base + blk * stride_vn + offs_n0[:, None] * stride_vn + offs_d[None, :] * stride_vd  # [N, D]
        if MASKED:
            v = tl.load(v_ptrs, mask=(offs_n[:, None] < Lk) & dmask[None, :], other=0.0)
        elif EVEN_D:
            v = tl.load(v_ptrs)
        else:
            v = tl.load(v_ptrs, mask=dmask[None, :], other=0.0)
        acc = acc * alpha[:, None]
        if UPCAST:
            acc = tl.dot(p, v.to(tl.float32), acc, input_precision=DOT_PREC)
        else:
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PREC)
        m_i = m_new
    return acc, m_i, l_i


@triton.autotune(
    configs=_configs(),
    key=["LEN_BUCKET", "HEAD_DIM", "CAUSAL", "HAS_WINDOW", "HAS_VALID", "HAS_BIAS", "SOFTCAP"],
    prune_configs_by={"early_config_prune": _prune},
    **autotune_timer(),  # device time, warm caches (`device_bench.py`)
)
@triton.jit
def attention_fwd_kernel(
    Q, K, V, Out, LSE, KVALID, BIAS,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    H, G, Lq, Lk, q_offset, qk_scale, window, LEN_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PREC: tl.constexpr, SOFTCAP: tl.constexpr = 0.0,
):
    """Out [b, h, Lq, d] (any strides) and LSE [b, h, Lq] float32 contiguous, natural log, -inf on empty rows."""
    LN2: tl.constexpr = 0.6931471805599453
    pid_m, pid_bh = _program(Lq, BLOCK_M)
    b = pid_bh // H
    h = pid_bh % H
    kvh = h // G
    m0 = pid_m * BLOCK_M
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_m = m0 + offs_m0
    offs_d = tl.arange(0, BLOCK_D)
    qpos = offs_m + q_offset
    row_ok = offs_m < Lq
    q_ptrs = (Q + b * stride_qb + h * stride_qh + m0.to(tl.int64) * stride_qm
              + offs_m0[:, None] * stride_qm + offs_d[None, :] * stride_qd)
    q = tl.load(q_ptrs, mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    kvalid_base = KVALID + b * Lk
    bias_base = BIAS + pid_bh * Lk

    q_lo_abs = m0 + q_offset
    q_hi_abs = tl.minimum(m0 + BLOCK_M, Lq) - 1 + q_offset
    lo, lo_full, mid, hi = _walk_bounds(q_lo_abs, q_hi_abs, Lk, window, BLOCK_N, CAUSAL, HAS_WINDOW, HAS_VALID)

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    if HAS_WINDOW == 2:  # a wide window's lower edge
        acc, m_i, l_i = _fwd_inner(
            acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, kvalid_base, bias_base,
            qpos, offs_d, lo, lo_full, Lk, qk_scale, window,
            BLOCK_N, BLOCK_D, HEAD_DIM, True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, UPCAST, DOT_PREC,
        )
    acc, m_i, l_i = _fwd_inner(
        acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, kvalid_base, bias_base,
        qpos, offs_d, lo_full, mid, Lk, qk_scale, window,
        BLOCK_N, BLOCK_D, HEAD_DIM, False, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, UPCAST, DOT_PREC,
    )
    acc, m_i, l_i = _fwd_inner(
        acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, kvalid_base, bias_base,
        qpos, offs_d, mid, hi, Lk, qk_scale, window,
        BLOCK_N, BLOCK_D, HEAD_DIM, True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, UPCAST, DOT_PREC,
    )

    seen = l_i > 0.0
    l_safe = tl.where(seen, l_i, 1.0)
    lse = tl.where(seen, (m_i + tl.log2(l_safe)) * LN2, float("-inf"))
    lse = tl.where(l_i == l_i, lse, float("nan"))  # NaN in the row's scores: NaN, as SDPA gives (not "sees nothing")
    tl.store(LSE + pid_bh * Lq + offs_m, lse, mask=row_ok)
    out = acc * (1.0 / l_safe)[:, None]  # rows that see no key: acc = 0, so the output is 0
    o_ptrs = (Out + b * stride_ob + h * stride_oh + m0.to(tl.int64) * stride_om
              + offs_m0[:, None] * stride_om + offs_d[None, :] * stride_od)
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM))
