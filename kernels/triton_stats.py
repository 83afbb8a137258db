"""Triton statistics pass: every statistic from a known log-sum-exp, in one query-major pass.

The output and the row log-sum-exp come first, from torch's SDPA kernels (FlashAttention/cuDNN) where they apply
and from `triton_forward.py` elsewhere. Knowing lse, each probability is final the moment its score is formed,
p = 2^(s - lse2), so nothing is carried through an online softmax. One program owns BLOCK_M query rows of one
(batch, head) and walks the key blocks they can see, recomputing s = q.k (QK^T only: half the forward's matrix work):

    per query (row sums, in registers):  max score (max_prob = 2^(m - lse2)), argmax (first occurrence wins:
        per block the first column equal to the block's max, kept where the row's max grows; no CTA-wide test),
        sum p log2 p (entropy), mass on the sink / local-window / span keys (carried through the full walk, or,
        with SPLIT_MASSES, in short walks of their own over the few key blocks they can touch: fewer registers)
    per key (column sums): each block's column sum of p (over the tile, or per warp's rows: KEY_GROUPS), rounded
        to fixed point (scale 2^(61 - bits of q_len)) and added with 64-bit integer atomics. Integer addition is
        associative, so the key mass is bit-identical from run to run whatever order the programs finish in; the
        rounding error is below 2^-41 per added sum, ~3e-8 per key at 1M tokens in 128-row tiles of 8 groups.
    key_count: closed form per key (queries that can see it, from the causal/window geometry and a prefix sum
        of the query padding mask), written by the same programs.
    key_mass / key_mean: each program takes a ticket from its (batch, head)'s counter once its atomics and key_count
        stores are fenced; the last one to finish converts that head's fixed-point sums (no torch ops after the
        kernel: short calls feel each one).

TRANSPOSE configs (the first ones tried) do the full walk on key-by-query tiles instead (`triton_stats_t.py`): the
same statistics and fixed-point atomics, per-key sums as row sums inside a warp, per-query ones folded per thread and
reduced once after the walk; the masses then always take walks of their own (query-by-key, as above).

Only the rows that see a key contribute; a row that sees nothing (all keys padding or -inf bias) has p = 0
everywhere: max_prob 0, argmax -1, entropy 0, masses 0, and it counts towards no key. Every offset that can pass
2^31 elements is 64-bit.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

from .device_bench import autotune_timer
from .triton_forward import INTERPRET, _program_at, flag_from_env, _walk_bounds, fitting
from .triton_stats_rows import (LSE_LIMIT, _bad_rows, _combine_parts, _fence, _finalize_keys, _row_flags,
                                 _store_full_walk, _store_masses)
from .triton_stats_t import _key_scores, _walk_t

TRIAL_CONFIGS = flag_from_env("INTERP_STATS_TRIAL_CONFIGS", os.environ.get("INTERP_STATS_TRIAL_CONFIGS"), False)


def _configs():
    """Tile configs, autotuned per key.

    SPLIT_MASSES=1 walks the sink/local/span blocks again after the full walk instead of carrying the masses through
    it: a few more QK^T blocks per program, far fewer registers in the full walk.
    KEY_GROUPS: the key-mass column sums are taken over groups of BLOCK_M // KEY_GROUPS rows, each added with its
    own atomics. 1: one sum over the tile, a reduction across every warp (shared memory, 3 more CTA barriers per key
    block); BLOCK_M // 16: a sum per warp's rows, no cross-warp reduction, KEY_GROUPS times the atomics.
    TRANSPOSE=1: the full walk on [BLOCK_N keys, BLOCK_M queries] tiles (`triton_stats_t.py`; KEY_GROUPS unused,
    masses always in walks of their own).

    Registers per thread on sm_90, Triton 3.6 (`examples/sm90_registers.py`, the GPU machines' compiler; its
    first-config numbers match Nsight Compute's), stats="query" / "all" at head_dim 128: 128x64 w8 s3 155 / 224
    (KEY_GROUPS 8: 155 / 174, ~10 % fewer instructions per key block; capped at 128: no spills, 3-5 % more
    instructions, two CTAs per SM), 128x64 w8 s2 split capped 128 / 128,
    128x32 w8 s3 split 93 / 127 (two 8-warp CTAs per SM at <= 128; one above); `docs/gpu/sm90_registers_t36.log`."""
    if INTERPRET:  # the GPU's default walk (key-by-query); tests/test_stats_configs.py forces the others in CI
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "SPLIT_MASSES": 1, "KEY_GROUPS": 1, "TRANSPOSE": 1},
                              num_warps=4, num_stages=1)]

    def c(bm, bn, split, groups, warps, stages, **kw):
        return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "SPLIT_MASSES": split, "KEY_GROUPS": groups,
                              "TRANSPOSE": kw.pop("transpose", 0)}, num_warps=warps, num_stages=stages, **kw)

    return [  # the first is the one INTERP_AUTOTUNE=0 pins
        # key-by-query tiles (`triton_stats_t.py`; masses in walks of their own): 330-342 instructions per key block
        # on the unmasked walk against 513-525 for the query-by-key tiles below (32 scores per thread), no spill
        # inside the walks. H100, stats="all", 32x128 GQA 32/8, each config pinned
        # (`docs/gpu/stats_configs_round7.log`): 2.21x / 2.02x SDPA at 8k / 32k, the best query-by-key one 2.47x / 2.26x
        c(64, 64, 1, 1, 4, 2, transpose=1, maxnreg=168),  # three CTAs per SM (spills only between the walks)
        c(64, 64, 1, 1, 4, 2, transpose=1),  # 255 registers: two per SM
        c(128, 64, 0, 1, 8, 3),
        c(128, 64, 0, 8, 8, 3),
        c(128, 64, 0, 8, 8, 3, maxnreg=128),  # the same at 128 registers, no spills: two CTAs per SM
        c(128, 64, 1, 8, 8, 2, maxnreg=128),
        c(128, 32, 1, 8, 8, 3),
        c(128, 128, 0, 1, 8, 3),
        c(64, 128, 0, 1, 4, 3),
        c(64, 64, 0, 4, 4, 3),
        c(64, 64, 0, 4, 4, 2, maxnreg=160),  # one warpgroup, three CTAs per SM: the autotuner's pick at 1k
        c(64, 32, 0, 4, 4, 2),
        c(32, 32, 0, 2, 4, 1),
        # 32 queries x 64 keys, four CTAs per SM (head_dim 64: 16 B of spills): few heads at 2k-4k. 9x64 GQA 9/3,
        # CUDA-graph replays against SDPA (`docs/gpu/narrow_blocks_round16.log`): 2.15x / 2.24x at 2k / 4k where the
        # next best config gives 2.45x / 2.54x
        c(32, 64, 1, 1, 4, 2, transpose=1, maxnreg=128),
    ] + ([  # candidates not yet run on a GPU go here: tried only when asked for (INTERP_STATS_TRIAL_CONFIGS=1), so
        # the config tests and benchmarks of a GPU session can take them in before they join the list above
        # (round 8, H200, stats="all", against the first config: 3 stages 1.00x / 0.98x at 8k / 32k, 128 registers =
        # four CTAs per SM with spills in the walk 1.14x / 1.17x, 1 stage 1.05x / 1.04x; none joined. Round 16:
        # key-by-query tiles of 32 keys, 64x32 r168, 2.66x against config 1's 1.70x at 4x256 8k; 16 queries per
        # block, 16x64 / 16x128 / 32x128, no better than the configs above at 1k-4k for any bundled shape: dropped)
        c(32, 64, 1, 1, 4, 2, transpose=1),
        # round 18: 16-query tiles for decode steps (one query row per head: a 32-row tile computes 31 rows for
        # nothing; key-by-query, so the product's M is still 64 / 128 keys)
        c(16, 64, 1, 1, 4, 2, transpose=1),
        c(16, 128, 1, 1, 4, 2, transpose=1),
        # (round 29: two programs per query block, max and argmax in one, entropy and the key sums in the other,
        # for short prefills whose grids fill a fraction of the GPU; pinned on the H100 beside configs 0 and 13,
        # graph replays, 9x64 2.42x / 2.24x at 1k against 2.47x / 2.26x, 32x128 2.69x / 3.03x against 2.23x /
        # 2.26x, `docs/gpu/roles_configs_round29.log`: dropped)
        # (round 24: key-by-query tiles over two warpgroups, one CTA of 8 warps: 64x64 / 64x128 / 128x64 w8 s2, pinned
        # on the H100, 2.13x / 1.88x / 1.80x SDPA at 4x256 8k against config 1's 1.70x, 2.43-3.12x at 32x128 8k
        # against config 0's 2.09x, `docs/gpu/trial_configs_round24.log`: dropped)
    ] if TRIAL_CONFIGS else [])


def config_tag(c) -> str:
    """A config in one short line, as the logs name them: '64x64 w4 s2 r168 split T'."""
    kw = c.kwargs
    maxnreg = getattr(c, "maxnreg", None)
    return (f"{kw['BLOCK_M']}x{kw['BLOCK_N']} w{c.num_warps} s{c.num_stages}" + (f" r{maxnreg}" if maxnreg else "")
            + (" split" if kw.get("SPLIT_MASSES") else "")
            + (f" kg{kw['KEY_GROUPS']}" if kw.get("KEY_GROUPS", 1) > 1 else "") + (" T" if kw.get("TRANSPOSE") else ""))


def _without_key_duplicates(configs, want_key: bool):
    """Without key statistics KEY_GROUPS changes nothing: configs differing only in it compile to the same kernel,
    so only the first of them is timed."""
    if want_key:
        return configs
    seen, kept = set(), []
    for c in configs:
        key = (tuple(sorted((k, v) for k, v in c.kwargs.items() if k != "KEY_GROUPS")), c.num_warps, c.num_stages,
               getattr(c, "maxnreg", None))
        if key not in seen:
            seen.add(key)
            kept.append(c)
    return kept


def _smem(c, block_d, elt):
    bm, bn, st = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], max(1, c.num_stages)
    return (bm * block_d + st * bn * block_d) * elt


def _prune(configs, named_args, **kwargs):
    if INTERPRET:
        return configs
    configs = _without_key_duplicates(configs, bool(kwargs.get("WANT_KEY", named_args.get("WANT_KEY"))))
    return fitting(configs, named_args, kwargs, _smem)


@triton.jit
def _stats_inner(
    m_i, a_i, e_i, sk_i, lc_i, sp_i,
    q, lse_row, qv_row, k_base, stride_kn, stride_kd, kvalid_base, bias_base, km_base,
    qpos, offs_d, lo, hi, Lk, qk_scale, window, sink_tokens, local_window, span_lo, span_hi, q_lo_abs, q_hi_abs,
    fix_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    KEY_GROUPS: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTCAP: tl.constexpr,
    DO_MAX: tl.constexpr, DO_ARG: tl.constexpr, DO_ENT: tl.constexpr, DO_SINK: tl.constexpr,
    DO_LOCAL: tl.constexpr, DO_SPAN: tl.constexpr, DO_KEY: tl.constexpr, UPCAST: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM
    offs_n0 = tl.arange(0, BLOCK_N)
    dmask = offs_d < HEAD_DIM
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        s = _key_scores(q, k_base, start_n, offs_n0, offs_n, offs_d, dmask, stride_kn, stride_kd, Lk, bias_base,
                        qk_scale, kvalid_base, qpos, window, MASKED, EVEN_D, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS,
                        SOFTCAP, UPCAST, DOT_PREC, False)  # [BLOCK_M, BLOCK_N]
        if DO_MAX:  # before t and p: s need not stay live beside them
            m_blk = tl.max(s, 1)
            if DO_ARG:  # first column reaching the block's max; it matters only where the running max grows
                blk_arg = tl.min(tl.where(s == m_blk[:, None], offs_n[None, :], 2147483647), 1)
                a_i = tl.where(m_blk > m_i, blk_arg, a_i)
            m_i = tl.maximum(m_i, m_blk)
        if HAS_BIAS:  # log2 p; -inf where the key is hidden or the row sees nothing
            t = s - lse_row[:, None]
        else:
            t = s * qk_scale - lse_row[:, None]
        p = tl.exp2(t)
        if DO_ENT:  # sum p log2 p
            if MASKED or HAS_BIAS:  # p = 0 where t = -inf (a hidden key): p * max(t, -1e30) = 0, not NaN
                e_i += tl.sum(p * tl.maximum(t, -1e30), 1)
            else:
                e_i += tl.sum(p * t, 1)
        if DO_SINK:
            if start_n < sink_tokens:
                sk_i += tl.sum(tl.where(offs_n[None, :] < sink_tokens, p, 0.0), 1)
        if DO_LOCAL:
            if (start_n + BLOCK_N > q_lo_abs - local_window + 1) & (start_n <= q_hi_abs):
                dist = qpos[:, None] - offs_n[None, :]
                lc_i += tl.sum(tl.where((dist >= 0) & (dist < local_window), p, 0.0), 1)
        if DO_SPAN:
            if (start_n < span_hi) & (start_n + BLOCK_N > span_lo):
                in_span = (offs_n[None, :] >= span_lo) & (offs_n[None, :] < span_hi)
                sp_i += tl.sum(tl.where(in_span, p, 0.0), 1)
        if DO_KEY:
            pk = p
            if HAS_VALID:  # padding queries never count towards key statistics
                pk = tl.where(qv_row[:, None], p, 0.0)
            if KEY_GROUPS == 1:  # one column sum over the tile: a reduction across every warp, then BLOCK_N atomics
                col = tl.sum(pk, 0)
                cols = offs_n
            else:  # a column sum per group of rows (a warp's, at BLOCK_M // 16 groups): no cross-warp reduction,
                # no barrier, KEY_GROUPS times the atomics
                col = tl.sum(tl.reshape(pk, [KEY_GROUPS, BLOCK_M // KEY_GROUPS, BLOCK_N]), 1)  # [groups, BLOCK_N]
                cols = tl.broadcast_to(offs_n[None, :], [KEY_GROUPS, BLOCK_N])
            # col >= 0: round to nearest. A NaN sum (only where every row of it saw a NaN key, so every one of them
            # is a bad row: see `_bad_rows`) adds 0 (fmax), as it does on a GPU's conversion, not INT64_MIN
            fixed = (tl.maximum(col, 0.0) * fix_scale + 0.5).to(tl.int64)
            tl.atomic_add(km_base + cols, fixed, mask=cols < Lk, sem="relaxed")
    return m_i, a_i, e_i, sk_i, lc_i, sp_i


@triton.autotune(
    configs=_configs(),
    key=["LEN_BUCKET", "HEAD_DIM", "CAUSAL", "HAS_WINDOW", "HAS_VALID", "HAS_BIAS", "SOFTCAP", "WANT_MAXP",
         "WANT_ARG", "WANT_ENT", "WANT_SINK", "WANT_LOCAL", "WANT_SPAN", "WANT_KEY", "WANT_COUNT", "WANT_KMEAN",
         "PARTED"],
    prune_configs_by={"early_config_prune": _prune},
    reset_to_zero=["KMASS"],
    **autotune_timer(),  # device time, warm caches (`device_bench.py`)
)
@triton.jit
def attention_stats_kernel(
    Q, K, LSE, ROWS, ARG, KMASS, KCOUNT, KM_OUT, KMEAN_OUT, KVALID, QCUM, BIAS, SPANS, PART, TICKET,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    H, G, Lq, Lk, q_offset, qk_scale, window, sink_tokens, local_window, fix_scale, inv_fix, N_BH, rows_stride,
    LEN_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    SPLIT_MASSES: tl.constexpr, KEY_GROUPS: tl.constexpr, TRANSPOSE: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_VALID: tl.constexpr, HAS_BIAS: tl.constexpr,
    WANT_MAXP: tl.constexpr, WANT_ARG: tl.constexpr, WANT_ENT: tl.constexpr, WANT_SINK: tl.constexpr,
    WANT_LOCAL: tl.constexpr, WANT_SPAN: tl.constexpr, WANT_KEY: tl.constexpr, WANT_COUNT: tl.constexpr,
    WANT_KMEAN: tl.constexpr, FINALIZE: tl.constexpr, PARTED: tl.constexpr,
    S_MAXP: tl.constexpr, S_ENT: tl.constexpr, S_SINK: tl.constexpr, S_LOCAL: tl.constexpr, S_SPAN: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PREC: tl.constexpr, SOFTCAP: tl.constexpr = 0.0,
):
    """LSE [b, h, Lq] natural log (-inf on empty rows); ROWS [slots, b, h, Lq] float32, one slot per requested
    per-query statistic (S_* = its slot); ARG [b, h, Lq] int64; KMASS [b * h * Lk + b * h] int64, zeroed by the
    caller: the fixed-point key sums, then one ticket counter per (batch, head) = N_BH of them; KCOUNT [b, h, Lk]
    float32; KM_OUT, KMEAN_OUT [b, h, Lk] float32: key_mass = sums * inv_fix and key_mean, written by the last
    program of each (batch, head) to finish (FINALIZE; without it the caller converts the sums); QCUM [b, Lq + 1]
    int32 prefix sums of the query padding mask (HAS_VALID only).
    PARTED (a call that may be parted; else none of this is compiled): a grid of n_parts x cdiv(Lq, BLOCK_M) x N_BH
    programs (n_parts > 1 only where `walk_parts.n_parts` says) splits each query block's full walk into n_parts runs
    of consecutive key blocks, one per program; PART [>= n_parts, 3, N_BH * Lq] float32 takes their partial row
    statistics and TICKET [>= N_BH * cdiv(Lq, 16)] int64, zeroed (the tail of the key sums' fill), counts them in
    (`_combine_parts`, which leaves it zeroed again). Part 0 also walks the masses; each part counts its share of
    the keys."""
    LOG2E: tl.constexpr = 1.4426950408889634
    WANT_MAX: tl.constexpr = WANT_MAXP or WANT_ARG
    FULL: tl.constexpr = (WANT_MAX or WANT_ENT) or WANT_KEY  # needs every visible key
    # the masses ride along the full walk unless SPLIT_MASSES (a tile config choice) gives them walks of their own
    # (a TRANSPOSE walk carries none: `triton_stats_t.py`)
    SPLIT: tl.constexpr = SPLIT_MASSES or TRANSPOSE
    MAIN_SINK: tl.constexpr = WANT_SINK and not SPLIT
    MAIN_LOCAL: tl.constexpr = WANT_LOCAL and not SPLIT
    MAIN_SPAN: tl.constexpr = WANT_SPAN and not SPLIT
    ANY_ROW: tl.constexpr = (FULL or WANT_SINK) or (WANT_LOCAL or WANT_SPAN)
    # a config that carries the masses through its full walk is never parted (`walk_parts.n_parts`): it compiles none
    # of the parts' code
    PARTS: tl.constexpr = PARTED and (SPLIT or not (WANT_SINK or WANT_LOCAL or WANT_SPAN))
    SINK_N: tl.constexpr = min(BLOCK_N, 16)  # the sink walk's key block (`lo`, a multiple of BLOCK_N, is one of it)
    n_m = tl.cdiv(Lq, BLOCK_M)
    if PARTS:
        n_parts = tl.num_programs(0) // (n_m * N_BH)
        part = tl.program_id(0) % n_parts  # the parts of one query block run side by side
        pid_m, pid_bh = _program_at(tl.program_id(0) // n_parts, n_m * N_BH, Lq, BLOCK_M)
    else:
        n_parts = 1
        part = 0
        pid_m, pid_bh = _program_at(tl.program_id(0), tl.num_programs(0), Lq, BLOCK_M)
    b = pid_bh // H
    h = pid_bh % H
    kvh = h // G
    m0 = pid_m * BLOCK_M
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_m = m0 + offs_m0
    offs_d = tl.arange(0, BLOCK_D)
    qpos = offs_m + q_offset
    row_ok = offs_m < Lq
    row_base = pid_bh * Lq
    kvalid_base = KVALID + b * Lk
    bias_base = BIAS + pid_bh * Lk

    if ANY_ROW:
        q_ptrs = (Q + b * stride_qb + h * stride_qh + m0.to(tl.int64) * stride_qm
                  + offs_m0[:, None] * stride_qm + offs_d[None, :] * stride_qd)
        lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=float("-inf"))
        bad_in = _bad_rows(lse, LSE_LIMIT)  # (or sees nothing)
        # bad rows get q = 0 and lse +inf: p = 0 for them on every finite key; rows that see nothing: p = 0
        q_mask = row_ok[:, None] & (offs_d[None, :] < HEAD_DIM) & ~bad_in[:, None]
        if not TRANSPOSE:
            q = tl.load(q_ptrs, mask=q_mask, other=0.0)
        lse_row = tl.where(bad_in, float("inf"), lse * LOG2E)
        qv_row = row_ok
        if HAS_VALID:
            qv_row = row_ok & (tl.load(kvalid_base + q_offset + offs_m, mask=row_ok, other=0) != 0)
        k_base = K + b * stride_kb + kvh * stride_kh
        km_base = KMASS + pid_bh * Lk
        span_lo = 0
        span_hi = 0
        if WANT_SPAN:
            span_lo = tl.load(SPANS + 2 * b)
            span_hi = tl.load(SPANS + 2 * b + 1)
        q_lo_abs = m0 + q_offset
        q_hi_abs = tl.minimum(m0 + BLOCK_M, Lq) - 1 + q_offset
        lo, lo_full, mid, hi = _walk_bounds(q_lo_abs, q_hi_abs, Lk, window, BLOCK_N, CAUSAL, HAS_WINDOW, HAS_VALID)
        # this program's part of the full walk: its key blocks, the three runs clipped to them (all of it when
        # n_parts is 1); the mass walks below keep lo / hi
        w_lo, w_full, w_mid, w_hi, mass_hi = lo, lo_full, mid, hi, hi
        if PARTS:
            chunk = tl.cdiv(tl.cdiv(hi - lo, BLOCK_N), n_parts) * BLOCK_N
            w_lo = tl.minimum(lo + part * chunk, hi)
            w_hi = tl.minimum(w_lo + chunk, hi)
            w_full = tl.minimum(tl.maximum(lo_full, w_lo), w_hi)
            w_mid = tl.minimum(tl.maximum(mid, w_lo), w_hi)
            mass_hi = tl.where(part == 0, hi, lo)  # the mass walks: part 0's (empty for the others)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        a_i = tl.full([BLOCK_M], -1, dtype=tl.int32)
        e_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        sk_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        lc_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        sp_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        if FULL and TRANSPOSE:  # the same walk on k q^T tiles (`triton_stats_t.py`)
            qt_ptrs = (Q + b * stride_qb + h * stride_qh + m0.to(tl.int64) * stride_qm
                       + offs_d[:, None] * stride_qd + offs_m0[None, :] * stride_qm)  # [BLOCK_D, BLOCK_M]
            qt = tl.load(qt_ptrs, mask=(offs_d[:, None] < HEAD_DIM) & row_ok[None, :] & ~bad_in[None, :], other=0.0)
            m_i, a_i, e_i = _walk_t(
                qt, lse_row, qv_row, k_base, stride_kn, stride_kd, kvalid_base, bias_base, km_base, qpos, offs_d,
                w_lo, w_full, w_mid, w_hi, Lk, qk_scale, window, fix_scale,
                BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP,
                WANT_MAX, WANT_ARG, WANT_ENT, WANT_KEY, UPCAST, DOT_PREC)
        if FULL and not TRANSPOSE:  # one walk over every visible key block: unmasked blocks, then the masked ones
            if HAS_WINDOW == 2:  # (a wide window's lower edge first, masked)
                m_i, a_i, e_i, sk_i, lc_i, sp_i = _stats_inner(
                    m_i, a_i, e_i, sk_i, lc_i, sp_i, q, lse_row, qv_row, k_base, stride_kn, stride_kd, kvalid_base,
                    bias_base, km_base, qpos, offs_d, w_lo, w_full, Lk, qk_scale, window, sink_tokens, local_window,
                    span_lo, span_hi, q_lo_abs, q_hi_abs, fix_scale,
                    BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, KEY_GROUPS,
                    True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, WANT_MAX, WANT_ARG,
                    WANT_ENT, MAIN_SINK, MAIN_LOCAL, MAIN_SPAN, WANT_KEY, UPCAST, DOT_PREC,
                )
            m_i, a_i, e_i, sk_i, lc_i, sp_i = _stats_inner(
                m_i, a_i, e_i, sk_i, lc_i, sp_i, q, lse_row, qv_row, k_base, stride_kn, stride_kd, kvalid_base,
                bias_base, km_base, qpos, offs_d, w_full, w_mid, Lk, qk_scale, window, sink_tokens, local_window,
                span_lo, span_hi, q_lo_abs, q_hi_abs, fix_scale,
                BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, KEY_GROUPS,
                False, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, WANT_MAX, WANT_ARG,
                WANT_ENT, MAIN_SINK, MAIN_LOCAL, MAIN_SPAN, WANT_KEY, UPCAST, DOT_PREC,
            )
            m_i, a_i, e_i, sk_i, lc_i, sp_i = _stats_inner(
                m_i, a_i, e_i, sk_i, lc_i, sp_i, q, lse_row, qv_row, k_base, stride_kn, stride_kd, kvalid_base,
                bias_base, km_base, qpos, offs_d, w_mid, w_hi, Lk, qk_scale, window, sink_tokens, local_window,
                span_lo, span_hi, q_lo_abs, q_hi_abs, fix_scale,
                BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, KEY_GROUPS,
                True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, WANT_MAX, WANT_ARG,
                WANT_ENT, MAIN_SINK, MAIN_LOCAL, MAIN_SPAN, WANT_KEY, UPCAST, DOT_PREC,
            )
        if FULL:  # the full walk's row statistics are final: stored now, not carried through the mass walks
            last = True
            if PARTS:  # ... once every part's are in: by the last part to finish
                last = n_parts > 0  # (True)
                if n_parts > 1:
                    m_i, a_i, e_i, last = _combine_parts(PART, TICKET, m_i, a_i, e_i, part, n_parts,
                                                         pid_bh * n_m + pid_m, row_base + offs_m, row_ok,
                                                         tl.cast(N_BH, tl.int64) * Lq)
            if last:
                _store_full_walk(m_i, a_i, e_i, LSE, ROWS, ARG, row_base + offs_m, row_ok, lse_row, qk_scale,
                                 tl.cast(rows_stride, tl.int64), S_MAXP, S_ENT, HAS_BIAS, WANT_MAXP, WANT_ARG,
                                 WANT_ENT)
            m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
            a_i = tl.full([BLOCK_M], -1, dtype=tl.int32)
            e_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        if SPLIT or not FULL:  # masses in walks of their own, over just the key blocks each can touch
            if TRANSPOSE:
                q = tl.load(q_ptrs, mask=q_mask, other=0.0)
            if WANT_SINK:  # in blocks of 16 keys: the default 4 sink tokens take one, not a 64-key block
                s_hi = tl.minimum(mass_hi, sink_tokens)
                m_i, a_i, e_i, sk_i, lc_i, sp_i = _stats_inner(
                    m_i, a_i, e_i, sk_i, lc_i, sp_i, q, lse_row, qv_row, k_base, stride_kn, stride_kd, kvalid_base,
                    bias_base, km_base, qpos, offs_d, lo, s_hi, Lk, qk_scale, window, sink_tokens, local_window,
                    span_lo, span_hi, q_lo_abs, q_hi_abs, fix_scale,
                    BLOCK_M, SINK_N, BLOCK_D, HEAD_DIM, KEY_GROUPS,
                    True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, False, False,
                    False, True, False, False, False, UPCAST, DOT_PREC,
                )
            if WANT_LOCAL:
                l_lo = tl.maximum(lo, ((q_lo_abs - local_window + 1) // BLOCK_N) * BLOCK_N)
                l_hi = tl.minimum(mass_hi, q_hi_abs + 1)  # no local key lies after the tile's last query
                m_i, a_i, e_i, sk_i, lc_i, sp_i = _stats_inner(
                    m_i, a_i, e_i, sk_i, lc_i, sp_i, q, lse_row, qv_row, k_base, stride_kn, stride_kd, kvalid_base,
                    bias_base, km_base, qpos, offs_d, l_lo, l_hi, Lk, qk_scale, window, sink_tokens, local_window,
                    span_lo, span_hi, q_lo_abs, q_hi_abs, fix_scale,
                    BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, KEY_GROUPS,
                    True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, False, False,
                    False, False, True, False, False, UPCAST, DOT_PREC,
                )
            if WANT_SPAN:
                p_lo = tl.maximum(lo, (span_lo // BLOCK_N) * BLOCK_N)
                p_hi = tl.minimum(mass_hi, span_hi)
                m_i, a_i, e_i, sk_i, lc_i, sp_i = _stats_inner(
                    m_i, a_i, e_i, sk_i, lc_i, sp_i, q, lse_row, qv_row, k_base, stride_kn, stride_kd, kvalid_base,
                    bias_base, km_base, qpos, offs_d, p_lo, p_hi, Lk, qk_scale, window, sink_tokens, local_window,
                    span_lo, span_hi, q_lo_abs, q_hi_abs, fix_scale,
                    BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, KEY_GROUPS,
                    True, CAUSAL, HAS_WINDOW, HAS_VALID, HAS_BIAS, SOFTCAP, False, False,
                    False, False, False, True, False, UPCAST, DOT_PREC,
                )
        out = row_base + offs_m
        _, bad = _row_flags(LSE, out, row_ok)
        mass_rows = row_ok
        if PARTS:
            mass_rows = row_ok & ((offs_m0 * 0 + part) == 0)  # part 0 stores the masses
        _store_masses(sk_i, lc_i, sp_i, bad, ROWS, out, mass_rows, tl.cast(rows_stride, tl.int64), S_SINK, S_LOCAL,
                      S_SPAN, WANT_SINK, WANT_LOCAL, WANT_SPAN)

    if WANT_COUNT:  # key_count in closed form: keys in chunks of BLOCK_M, spread over this row of programs
        n_chunks = tl.cdiv(Lk, BLOCK_M)
        c0 = pid_m
        c_step = n_m
        if PARTS:  # ... spread over the parts too (a decode step's one query block against a long cache)
            c0 = pid_m * n_parts + part
            c_step = n_m * n_parts
        for c in range(c0, n_chunks, c_step):
            offs_k = c * BLOCK_M + offs_m0
            k_in = offs_k < Lk
            q_lo = tl.zeros([BLOCK_M], dtype=tl.int32)
            q_hi = tl.zeros([BLOCK_M], dtype=tl.int32) + Lq
            if CAUSAL:  # query i sees key k when i + q_offset >= k
                q_lo = tl.maximum(offs_k - q_offset, 0)
            if HAS_WINDOW:  # ... and i + q_offset - k < window
                q_hi = tl.minimum(offs_k + window - q_offset, Lq)
            q_hi = tl.maximum(q_hi, q_lo)
            if HAS_VALID:
                cum = QCUM + b * (Lq + 1)
                cnt = tl.load(cum + q_hi, mask=k_in, other=0) - tl.load(cum + q_lo, mask=k_in, other=0)
                cnt = tl.where(tl.load(kvalid_base + offs_k, mask=k_in, other=0) != 0, cnt, 0)
            else:
                cnt = q_hi - q_lo
            if HAS_BIAS:  # a -inf bias hides the key from this head
                bias_k = tl.load(bias_base + offs_k, mask=k_in, other=0.0)
                cnt = tl.where(bias_k > float("-inf"), cnt, 0)
            tl.store(KCOUNT + pid_bh * Lk + offs_k, cnt.to(tl.float32), mask=k_in)

    if WANT_KEY and FINALIZE:  # the last program of this (batch, head) turns the sums into key_mass / key_mean
        _fence(offs_m0)  # this thread's key atomics and key_count stores, ordered before the ticket
        tl.debug_barrier()  # ... and every thread's, before the ticket is taken
        # (64-bit: b * h * Lk can pass 2^31 with many heads and a long key axis)
        ticket = tl.atomic_add(KMASS + tl.cast(N_BH, tl.int64) * Lk + pid_bh, 1, sem="acq_rel", scope="gpu")
        if ticket == n_m * n_parts - 1:
            _fence(offs_m0)
            _finalize_keys(KMASS + pid_bh * Lk, KCOUNT + pid_bh * Lk, KM_OUT + pid_bh * Lk,
                           KMEAN_OUT + pid_bh * Lk, Lk, inv_fix, 1024, WANT_KMEAN)
