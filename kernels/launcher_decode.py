"""Launcher of a decode step's packed paths: which calls take them, how many parts, and the launches.

- `fused_decode` (`triton_decode_fused.py`, on at every head dim; INTERP_DECODE_FUSED=0 off): output, lse and
  statistics in one walk over K and V, then a combine, with the cache parted for 2 programs per SM. Round 21b (H100,
  CUDA-graph replays, every statistic, 8k / 32k / 128k cached keys; `docs/gpu/decode_fused_round21b.log`): 32x128
  1.15x / 1.13x / 1.20x SDPA, 9x64 1.21x / 1.12x / 1.16x, 4x256 1.05x / 0.95x / 0.85x, against the packed walk's
  1.41-1.60x in the same run.
- `decode_stats` (`triton_stats_decode.py`): the statistics alone, after cuDNN's forward gave the lse
  (INTERP_DECODE_FUSED=0, and `stats_from_lse`). With its combine tiled it took 1.36-1.64x SDPA on the H200
  against the general kernel's 2.18-3.59x in the same run (`docs/gpu/decode_round21.log`).

INTERP_DECODE_PACK=0 turns both off (the general kernel)."""

from __future__ import annotations

import os

import torch

from . import walk_parts
from .checks import AttnSpec
from .stats import AttentionStats
from .triton_decode_fused import N_PF, fused_decode_combine_kernel, fused_decode_walk_kernel
from .triton_stats_decode import decode_combine_kernel, decode_walk_kernel

ENV = "INTERP_DECODE_PACK"


def enabled_from_env(value: str | None, env: str = ENV) -> bool:
    """INTERP_DECODE_PACK or INTERP_DECODE_FUSED: unset, "" or "1" on (the default); "0" off."""
    v = (value or "").strip()
    if v not in ("", "0", "1"):
        raise ValueError(f"{env}={value!r}: use 1 (on, the default) or 0 (off)")
    return v != "0"


ENABLED = enabled_from_env(os.environ.get(ENV))
MAX_GROUP = 16  # query heads per KV head packed into one 16-row tile (more: the general kernel; larger tiles would
# hold a 32 / 64-row q tile in registers, already at 248-255 with 16 rows on sm_90)
CPU_PARTS = 3  # in the interpreter (no GPU to fill), still more than one part, so that the combine is tested
COMBINE_BLOCK = 16  # rows per combine program
COMBINE_PARTS = 128  # parts loaded at once by a combine program ([16, 128] tiles)
FUSED_ENV = "INTERP_DECODE_FUSED"
FUSED = enabled_from_env(os.environ.get(FUSED_ENV), FUSED_ENV)  # output and statistics in one walk (with ENABLED)
# head dim 256 (Gemma 3) too since its combine was spread over programs: 1.74-2.51x SDPA before, 0.85-1.05x after
# (H100, round 21b)
FUSED_MAX_HEAD_DIM = 256
FUSED_PER_SM = 2  # fused walk programs per SM: against 4 (the other walks' target) and 8, the fastest of the three
# in 7 cells of 9 and within 3 % in the other two; up to 20 % ahead of 4 per SM (H100, round 21b)
FUSED_TILE = {64: (64, 4), 128: (64, 4), 256: (32, 4)}  # fused walk (BLOCK_N, warps) by padded head dim (16-256)
FUSED_KEY_CHUNK = 2048  # keys finalized per program of the fused combine (128k keys: 64 programs a row)
FUSED_COMBINE_PARTS = 128  # parts loaded at once by a fused combine program (its row's lse, statistics, output)
FUSED_D_SLICE = 32  # output dims combined per program of the fused combine (4x256: 8 programs a head)


def eligible(spec: AttnSpec) -> bool:
    """A decode step this path covers: one query per head at the end of the keys (it sees every key), no padding
    mask, key bias or window, G <= MAX_GROUP."""
    return (ENABLED and spec.q_len == 1 and spec.key_valid is None and spec.key_bias is None
            and spec.sliding_window is None and spec.group <= MAX_GROUP
            and (not spec.causal or spec.q_offset == spec.k_len - 1))


def n_parts(n_programs: int, key_blocks: int, device, per_sm: int = walk_parts.PER_SM) -> int:
    """Parts per (batch x KV head): enough programs for per_sm per SM (`walk_parts.target_programs`; one part while
    INTERP_STATS_PARTS is off), at most one per key block; CPU_PARTS in the interpreter."""
    if device.type == "cuda":
        target = walk_parts.target_programs(device, per_sm)
        want = target // n_programs if target > 0 else 1
    else:
        want = CPU_PARTS
    return max(1, min(key_blocks, want))


def fused_eligible(spec: AttnSpec) -> bool:
    """A decode step (`eligible`) asking for a statistic besides lse, head dim <= FUSED_MAX_HEAD_DIM, with the fused
    walk on."""
    return (FUSED and spec.head_dim <= FUSED_MAX_HEAD_DIM and eligible(spec)
            and any(n != "lse" for n in spec.stats))


def decode_stats(q, k, lse, spec: AttnSpec, row: tuple, slots: dict, qk_scale: float, flags: dict) -> AttentionStats:
    """The statistics spec.stats asks for, for a decode step: q [b, h, 1, d], k [b, kv_heads, Lk, d], lse [b, h, 1]
    float32 (natural log). row: the per-query statistics besides argmax, in slot order, and slots their S_*
    constexprs (`launcher._row_slots`); qk_scale: the softmax scale times log2(e); flags: UPCAST and DOT_PREC as the
    general kernel takes them."""
    b, h, kvh, lk, d, g = spec.batch, spec.heads, spec.kv_heads, spec.k_len, spec.head_dim, spec.group
    dev = q.device
    want = set(spec.stats)
    st = AttentionStats()
    if "lse" in want:
        st.lse = lse
    f32 = dict(device=dev, dtype=torch.float32)
    block_n = 64 if d <= 128 else 32
    parts = n_parts(b * kvh, -(-lk // block_n), dev)
    n_rows = b * h
    pf = torch.empty(5, parts, n_rows, **f32)
    pa = torch.empty(parts, n_rows, device=dev, dtype=torch.int32)
    want_key, want_count, km, kc, kmean, rows, arg = _stat_buffers(want, row, spec, pf, pa)
    spans = spec.span if spec.span is not None else pa
    want_max = "max_prob" in want or "argmax" in want
    decode_walk_kernel[(b * kvh * parts,)](
        q, k, lse, pf, pa, km, kc, kmean, spans, q.stride(0), q.stride(1), q.stride(3), *k.stride(),
        h, g, kvh, lk, spec.q_offset, qk_scale, spec.sink_tokens, spec.local_window, n_rows,
        HEAD_DIM=d, BLOCK_D=max(16, 1 << (d - 1).bit_length()), BLOCK_G=max(16, 1 << (g - 1).bit_length()),
        BLOCK_N=block_n, WANT_MAX=want_max, WANT_ARG="argmax" in want, WANT_ENT="entropy" in want,
        WANT_SINK="sink_mass" in want, WANT_LOCAL="local_mass" in want, WANT_SPAN="span_mass" in want,
        WANT_KEY=want_key, WANT_COUNT=want_count, WANT_KMEAN="key_mean" in want, num_warps=4, **flags,
    )
    if row or "argmax" in want:
        decode_combine_kernel[(-(-n_rows // COMBINE_BLOCK),)](
            lse, pf, pa, rows, arg, parts, n_rows, qk_scale, n_rows,
            BLOCK=COMBINE_BLOCK, BLOCK_P=COMBINE_PARTS, WANT_MAXP="max_prob" in want, WANT_ARG="argmax" in want,
            WANT_ENT="entropy" in want, WANT_SINK="sink_mass" in want, WANT_LOCAL="local_mass" in want,
            WANT_SPAN="span_mass" in want, **slots, num_warps=4,
        )
    return _fill(st, want, row, rows, arg, km, kmean, kc)


def fused_decode(q, k, v, spec: AttnSpec, row: tuple, slots: dict, qk_scale: float, flags: dict, need_out: bool):
    """Output (None unless need_out) and the statistics spec.stats asks for, lse included, of a decode step in one
    walk over the cache (`triton_decode_fused.py`): q [b, h, 1, d], k and v [b, kv_heads, Lk, d]. row, slots,
    qk_scale and flags as `decode_stats` takes them."""
    b, h, kvh, lk, d, g = spec.batch, spec.heads, spec.kv_heads, spec.k_len, spec.head_dim, spec.group
    dev = q.device
    want = set(spec.stats)
    f32 = dict(device=dev, dtype=torch.float32)
    block_d = max(16, 1 << (d - 1).bit_length())
    block_n, warps = FUSED_TILE[max(64, block_d)]
    parts = n_parts(b * kvh, -(-lk // block_n), dev, FUSED_PER_SM)
    n_rows = b * h
    pf = torch.empty(N_PF, parts, n_rows, **f32)
    pa = torch.empty(parts, n_rows, device=dev, dtype=torch.int32)
    po = torch.empty(parts, n_rows, block_d, **f32) if need_out else pf
    want_key, want_count, km, kc, kmean, rows, arg = _stat_buffers(want, row, spec, pf, pa)
    spans = spec.span if spec.span is not None else pa
    fused_decode_walk_kernel[(b * kvh * parts,)](
        q, k, v, pf, pa, po, km, spans, q.stride(0), q.stride(1), q.stride(3), *k.stride(), *v.stride(),
        h, g, kvh, lk, spec.q_offset, qk_scale, spec.sink_tokens, spec.local_window, n_rows,
        HEAD_DIM=d, BLOCK_D=block_d, BLOCK_G=max(16, 1 << (g - 1).bit_length()), BLOCK_N=block_n,
        WANT_OUT=need_out, WANT_ARG="argmax" in want, WANT_ENT="entropy" in want, WANT_SINK="sink_mass" in want,
        WANT_LOCAL="local_mass" in want, WANT_SPAN="span_mass" in want, WANT_KEY=want_key, num_warps=warps,
        **flags,
    )
    out = torch.empty(b, h, 1, d, device=dev, dtype=q.dtype) if need_out else q
    lse = torch.empty(b, h, 1, **f32)
    chunk = FUSED_KEY_CHUNK if (want_key or want_count) else lk
    n_prog = max(-(-lk // chunk), -(-d // FUSED_D_SLICE) if need_out else 1)  # key chunks, output slices
    fused_decode_combine_kernel[(n_rows * n_prog,)](
        pf, pa, po, km, kc, kmean, out, lse, rows, arg, parts, n_rows, lk, chunk, qk_scale, n_rows,
        out.stride(0) if need_out else 0, out.stride(1) if need_out else 0, h,
        BLOCK_P=FUSED_COMBINE_PARTS, BLOCK_K=1024, BLOCK_D=block_d, D_SLICE=FUSED_D_SLICE, HEAD_DIM=d,
        WANT_OUT=need_out, WANT_MAXP="max_prob" in want, WANT_ARG="argmax" in want, WANT_ENT="entropy" in want,
        WANT_SINK="sink_mass" in want, WANT_LOCAL="local_mass" in want, WANT_SPAN="span_mass" in want,
        WANT_KEY=want_key, WANT_COUNT=want_count, WANT_KMEAN="key_mean" in want, **slots, num_warps=4,
    )
    st = AttentionStats()
    if "lse" in want:
        st.lse = lse
    return (out if need_out else None), _fill(st, want, row, rows, arg, km, kmean, kc)


def _stat_buffers(want: set, row: tuple, spec: AttnSpec, dummy: torch.Tensor, dummy_i32: torch.Tensor):
    """The outputs a packed decode path writes: (want key sums, want key_count, key_mass, key_count, key_mean
    [b, h, Lk], the per-query statistics' slots rows [len(row), b, h, 1] float32, argmax [b, h, 1] int64), with
    `dummy` (float32) or `dummy_i32` in place of those not asked for."""
    b, h, lk = spec.batch, spec.heads, spec.k_len
    f32 = dict(device=dummy.device, dtype=torch.float32)
    want_key = "key_mass" in want or "key_mean" in want
    want_count = "key_count" in want or "key_mean" in want
    km = torch.empty(b, h, lk, **f32) if want_key else dummy
    kc = torch.empty(b, h, lk, **f32) if want_count else dummy
    kmean = torch.empty(b, h, lk, **f32) if "key_mean" in want else dummy
    rows = torch.empty(len(row), b, h, 1, **f32) if row else dummy
    arg = torch.empty(b, h, 1, device=dummy.device, dtype=torch.int64) if "argmax" in want else dummy_i32
    return want_key, want_count, km, kc, kmean, rows, arg


def _fill(st: AttentionStats, want: set, row: tuple, rows, arg, km, kmean, kc) -> AttentionStats:
    """st with the statistics `want` asks for: the per-query ones from their slots of rows [len(row), b, h, 1],
    argmax, and the key statistics [b, h, Lk]."""
    for n, t in zip(row, rows.unbind(0) if row else ()):
        setattr(st, n, t)
    if "argmax" in want:
        st.argmax = arg
    if "key_mass" in want:
        st.key_mass = km
    if "key_mean" in want:
        st.key_mean = kmean
    if "key_count" in want:
        st.key_count = kc
    return st
