"""Launcher for the backward kernels: grids, strides and flags from a validated AttnSpec, gradients back."""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
import triton

from . import launcher
from .checks import AttnSpec
from .triton_backward import bwd_dkdv_kernel, bwd_dq_kernel, bwd_preprocess_kernel
from .triton_forward import AUTOTUNE, INTERPRET

LOG2E = 1.0 / math.log(2.0)
PREPROCESS_BLOCK_M = 64
_proxied: set = set()  # backward requests whose kernels were tuned on a proxy


def _dummy(device, dtype=torch.float32):
    return torch.empty(1, device=device, dtype=dtype)


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def group_split(spec: AttnSpec, device: torch.device) -> int:
    """How many programs share one KV head's query-head group in the key-major kernel. One (the whole group in one
    program, dK/dV written once) unless that leaves SMs idle: fewer key blocks x KV heads than SMs (short inputs,
    MQA); then the smallest divisor of the group that fills them."""
    g = spec.group
    if INTERPRET or device.type != "cuda" or g == 1:
        return 1
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    programs = triton.cdiv(spec.k_len, 128) * spec.batch * spec.kv_heads
    split = 1
    for cand in range(1, g + 1):
        if g % cand == 0:
            split = cand
            if programs * cand >= sms:
                break
    return split


def triton_attention_backward(
    do: torch.Tensor,  # [batch, heads, q_len, head_dim], gradient of the output
    q: torch.Tensor,  # [batch, heads, q_len, head_dim]
    k: torch.Tensor,  # [batch, kv_heads, k_len, head_dim]
    v: torch.Tensor,  # [batch, kv_heads, k_len, head_dim]
    out: torch.Tensor,  # [batch, heads, q_len, head_dim]
    lse: torch.Tensor,  # [batch, heads, q_len] float32, natural log, -inf on rows that see no key
    spec: AttnSpec,
    *,
    need_dq: bool = True,
    need_dkv: bool = True,
    need_dbias: bool = False,
    split: int | None = None,
):
    """-> (dq, dk, dv, dbias); dbias `[batch, heads, k_len]` float32 (the key bias gradient per query head),
    None where not asked for. `split` overrides how many programs share a GQA group (tests)."""
    b, h, hk, lq, lk, d = spec.batch, spec.heads, spec.kv_heads, spec.q_len, spec.k_len, spec.head_dim
    dev = q.device
    if need_dkv or need_dbias:
        if split is None:
            split = group_split(spec, dev)
        elif split < 1 or spec.group % split:
            raise ValueError(f"split must divide the GQA group size {spec.group}, got {split}")
    _tune_on_proxy(q, spec, need_dq, need_dkv, need_dbias, split)
    f32 = dict(device=dev, dtype=torch.float32)
    upcast = INTERPRET and q.dtype == torch.bfloat16  # tl.dot on bf16 tiles is wrong in the CPU interpreter
    dot_prec = "ieee" if q.dtype == torch.float32 else None
    block_d = max(16, triton.next_power_of_2(d))
    len_bucket = launcher._len_bucket(spec)
    qk_scale = spec.scale * LOG2E
    window = spec.sliding_window or 0
    kvalid = spec.key_valid.to(torch.int8).contiguous() if spec.key_valid is not None else _dummy(dev, torch.int8)
    bias = spec.key_bias.detach() if spec.key_bias is not None else _dummy(dev)
    flags = dict(
        CAUSAL=spec.causal, HAS_WINDOW=spec.sliding_window is not None, HAS_VALID=spec.key_valid is not None,
        HAS_BIAS=spec.key_bias is not None, UPCAST=upcast, DOT_PREC=dot_prec, SOFTCAP=spec.softcap or 0.0,
    )
    need_dbias = need_dbias and spec.key_bias is not None

    delta = torch.empty(b, h, lq, **f32)
    lse2 = torch.empty(b, h, lq, **f32)
    lse = lse.contiguous()
    bwd_preprocess_kernel[(b * h, triton.cdiv(lq, PREPROCESS_BLOCK_M))](
        out, do, lse, delta, lse2, *out.stride(), *do.stride(), h, lq,
        HEAD_DIM=d, BLOCK_D=block_d, BLOCK_M=PREPROCESS_BLOCK_M,
    )

    dq = dk = dv = dbias = None
    if need_dkv or need_dbias:
        if split == 1:
            dk = torch.empty(b, hk, lk, d, device=dev, dtype=k.dtype)
            dv = torch.empty(b, hk, lk, d, device=dev, dtype=v.dtype)
            dk_buf, dv_buf, dk_strides = dk, dv, (0, *dk.stride())
        else:  # float32 partial sums per slice of the group, added up below (a fixed order: deterministic)
            dk_buf = torch.empty(split, b, hk, lk, d, **f32)
            dv_buf = torch.empty(split, b, hk, lk, d, **f32)
            dk_strides = dk_buf.stride()
        dbias = torch.empty(b, h, lk, **f32) if need_dbias else _dummy(dev)

        def grid_kv(meta):
            return (split * b * hk, triton.cdiv(lk, meta["BLOCK_N"]))

        bwd_dkdv_kernel[grid_kv](
            q, k, v, do, lse2, delta, kvalid, bias, dk_buf, dv_buf, dbias,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk_strides,
            h, hk, spec.group, spec.group // split, lq, lk, spec.q_offset, qk_scale, spec.scale, window, len_bucket,
            HEAD_DIM=d, BLOCK_D=block_d, WANT_DBIAS=need_dbias, SPLIT_OUT=split > 1, **flags,
        )
        if split > 1:
            dk = dk_buf.sum(0).to(k.dtype)
            dv = dv_buf.sum(0).to(v.dtype)
        if not need_dbias:
            dbias = None

    if need_dq:
        dq = torch.empty(b, h, lq, d, device=dev, dtype=q.dtype)

        def grid_q(meta):
            return (b * h, triton.cdiv(lq, meta["BLOCK_M"]))

        bwd_dq_kernel[grid_q](
            q, k, v, do, lse2, delta, kvalid, bias, dq,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
            h, spec.group, lq, lk, spec.q_offset, qk_scale, spec.scale, window, len_bucket,
            HEAD_DIM=d, BLOCK_D=block_d, **flags,
        )
    return dq, dk, dv, dbias


def _tune_on_proxy(q, spec: AttnSpec, need_dq, need_dkv, need_dbias, split) -> None:
    """The backward kernels' autotuning on a `launcher.tune_cap`-token proxy (as `launcher._tune_on_proxy` does for the
    forward): before the first long backward of a kind, so the autotuner never times configs on the long input."""
    if INTERPRET or not AUTOTUNE or max(spec.q_len, spec.k_len) <= launcher.tune_cap(spec):
        return
    need_dbias = need_dbias and spec.key_bias is not None
    key = (*launcher.proxy_kind(q, spec), need_dq, need_dkv, need_dbias, split)
    if key in _proxied:
        return
    ps = dataclasses.replace(launcher._proxy_spec(spec, q.device), stats=("lse",))
    qp, kp, vp, g = launcher.proxy_inputs(ps, q)
    out, st = launcher.triton_attention(qp, kp, vp, ps)
    do = torch.randn(out.shape, device=q.device, dtype=q.dtype, generator=g)  # (never the global generator)
    triton_attention_backward(do, qp, kp, vp, out, st.lse, ps, need_dq=need_dq,
                              need_dkv=need_dkv, need_dbias=need_dbias, split=split)
    _proxied.add(key)
