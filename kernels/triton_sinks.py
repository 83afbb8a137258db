"""The rescale of a call with learned attention sinks (`sinks.py`), in one pass over the output: for each query row,
lse' = logaddexp(lse, sink_h) and O' = O * exp(lse - lse'), computed in float32 and stored in O's dtype, in place;
and, when the entropy is asked for, the sink's own entropy term -p_sink ln p_sink (p_sink = exp(sink_h - lse')),
which `sinks.py` adds to the keys' entropy.
(Four torch ops did this before, with float32 copies of O: 1.9 ms of a 32k-token GPT-OSS-shaped call on an H100,
round 27.) The reference is `sinks.rescale_reference`."""

from __future__ import annotations

import triton
import triton.language as tl

RESCALE_BLOCK_M = 64  # query rows per program


@triton.jit
def sinks_rescale_kernel(
    O, LSE, LSE_OUT, SINKS, ENT,  # O [b, h, q_len, D] (strided, rescaled in place); LSE [b, h, q_len] f32
    # (strided); LSE_OUT and ENT [b, h, q_len] f32 contiguous; SINKS [1|b, h] f32 contiguous
    s_ob, s_oh, s_om, s_od, s_lb, s_lh, s_lm,
    heads, q_len, head_dim, sinks_batch_stride,
    HAS_OUT: tl.constexpr, HAS_ENT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // heads, bh % heads
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < q_len
    lse_at = b * s_lb + h * s_lh + rows.to(tl.int64) * s_lm
    lse = tl.load(LSE + lse_at, mask=row_ok, other=0.0)
    sink = tl.load(SINKS + b * sinks_batch_stride + h)
    # logaddexp(lse, sink) with sink finite: lse = -inf gives the sink, NaN stays NaN
    top = tl.maximum(lse, sink)
    lse_s = top + tl.log(tl.exp(lse - top) + tl.exp(sink - top))
    tl.store(LSE_OUT + bh * q_len + rows, lse_s, mask=row_ok)
    if HAS_ENT:  # -p ln p of the sink's probability (0 where p is 0, NaN on a NaN row, as torch.special.xlogy)
        p_sink = tl.exp(sink - lse_s)
        tl.store(ENT + bh * q_len + rows, tl.where(p_sink == 0.0, 0.0, -p_sink * tl.log(p_sink)), mask=row_ok)
    if HAS_OUT:
        keep = tl.exp(lse - lse_s)  # the keys' share of each row, 1 - p_sink; 0 on rows that see nothing
        cols = tl.arange(0, BLOCK_D)
        at = (O + b * s_ob + h * s_oh + rows.to(tl.int64)[:, None] * s_om + cols[None, :] * s_od)
        ok = row_ok[:, None] & (cols[None, :] < head_dim)
        o = tl.load(at, mask=ok, other=0.0).to(tl.float32)
        tl.store(at, (o * keep[:, None]).to(O.dtype.element_ty), mask=ok)
