"""Launchers: turn a validated AttnSpec into Triton launches (grid, strides, flags) and back into AttentionStats."""

from __future__ import annotations

import math

import torch
import triton

from .checks import AttnSpec
from .stats import AttentionStats, finish_key_stats
from .triton_forward import INTERPRET, attention_fwd_kernel
from .triton_key_stats import key_stats_kernel

LN2 = math.log(2.0)
LOG2E = 1.0 / LN2


def _dummy(device, dtype=torch.float32):
    return torch.empty(1, device=device, dtype=dtype)


def triton_attention(q, k, v, spec: AttnSpec, *, need_out: bool = True):
    """Run the forward kernel and, if key statistics were requested, the key-major kernel."""
    b, h, lq, lk, d = spec.batch, spec.heads, spec.q_len, spec.k_len, spec.head_dim
    dev = q.device
    want = set(spec.stats)
    upcast = INTERPRET and q.dtype == torch.bfloat16  # tl.dot on bf16 tiles is wrong in the CPU interpreter
    dot_prec = "ieee" if q.dtype == torch.float32 else None  # exact fp32 products; fp16/bf16 use the default
    block_d = max(16, triton.next_power_of_2(d))
    # autotune key: tuned once per power-of-two length up to 8k; longer inputs reuse the 8k choice
    len_bucket = min(triton.next_power_of_2(max(lq, lk)), 8192)
    f32 = dict(device=dev, dtype=torch.float32)

    out = torch.empty(b, h, lq, d, device=dev, dtype=q.dtype) if need_out else _dummy(dev, q.dtype)
    lse2 = torch.empty(b, h, lq, **f32)
    st = AttentionStats()
    bufs = {}
    for name in ("max_prob", "entropy", "sink_mass", "local_mass", "span_mass"):
        bufs[name] = torch.empty(b, h, lq, **f32) if name in want else _dummy(dev)
    arg = torch.empty(b, h, lq, device=dev, dtype=torch.int32) if "argmax" in want else _dummy(dev, torch.int32)
    kvalid = spec.key_valid.to(torch.int8).contiguous() if spec.key_valid is not None else _dummy(dev, torch.int8)
    bias = spec.key_bias if spec.key_bias is not None else _dummy(dev)
    spans = spec.span if spec.span is not None else _dummy(dev, torch.int64)
    o_strides = out.stride() if need_out else (0, 0, 0, 0)
    flags = dict(
        CAUSAL=spec.causal, HAS_WINDOW=spec.sliding_window is not None, HAS_VALID=spec.key_valid is not None,
        HAS_BIAS=spec.key_bias is not None, UPCAST=upcast, DOT_PREC=dot_prec,
    )
    window = spec.sliding_window or 0
    qk_scale = spec.scale * LOG2E

    def grid_q(meta):
        return (triton.cdiv(lq, meta["BLOCK_M"]), b * h)

    attention_fwd_kernel[grid_q](
        q, k, v, out, lse2, bufs["max_prob"], arg, bufs["entropy"], bufs["sink_mass"], bufs["local_mass"],
        bufs["span_mass"], kvalid, bias, spans,
        *q.stride(), *k.stride(), *v.stride(), *o_strides,
        h, spec.group, lq, lk, spec.q_offset, qk_scale, window, spec.sink_tokens, spec.local_window, len_bucket,
        HEAD_DIM=d, BLOCK_D=block_d,
        WANT_MAXP="max_prob" in want, WANT_ENT="entropy" in want, WANT_ARG="argmax" in want,
        WANT_SINK="sink_mass" in want, WANT_LOCAL="local_mass" in want, WANT_SPAN="span_mass" in want,
        NEED_OUT=need_out, **flags,
    )
    if "lse" in want:
        st.lse = lse2 * LN2
    for name in ("max_prob", "entropy", "sink_mass", "local_mass", "span_mass"):
        if name in want:
            setattr(st, name, bufs[name])
    if "argmax" in want:
        st.argmax = arg.to(torch.int64)

    if want & {"key_mass", "key_mean", "key_count"}:
        kmass = torch.empty(b, h, lk, **f32)
        want_count = bool(want & {"key_mean", "key_count"})
        kcount = torch.empty(b, h, lk, **f32) if want_count else _dummy(dev)

        def grid_k(meta):
            return (triton.cdiv(lk, meta["BLOCK_N"]), b * h)

        key_stats_kernel[grid_k](
            q, k, lse2, kmass, kcount, kvalid, bias,
            *q.stride(), *k.stride(),
            h, spec.group, lq, lk, spec.q_offset, qk_scale, window, len_bucket,
            HEAD_DIM=d, BLOCK_D=block_d, WANT_COUNT=want_count, **flags,
        )
        finish_key_stats(st, want, kmass, kcount)
    return (out if need_out else None), st
