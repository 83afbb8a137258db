"""Output and log-sum-exp from torch's own fused attention (cuDNN / FlashAttention), where it applies.

These kernels return the row log-sum-exp beside the output; with it, every statistic comes from one Triton pass
(`triton_stats.py`), so the output costs what SDPA costs. They apply to plain causal or non-causal attention in
float16/bfloat16 on CUDA: no sliding window, padding mask or key bias (those run through `triton_forward.py`), a
contiguous last dimension, and causal only with q_len == k_len or a single query (SDPA aligns the causal mask
top-left; ours is bottom-right, which is the same thing in those two cases).

Which op runs is decided once per (dtype, head_dim, GQA, causal) by trying them in `ORDER` and keeping the first
that works (an op that raises is skipped). `MODE` (env `INTERP_SDPA`): "auto" (default), "off" (always the Triton
forward), or one op name to force it.
"""

from __future__ import annotations

import os

import torch

ORDER = ("cudnn", "flash")
MODE = os.environ.get("INTERP_SDPA", "auto")
if MODE not in ("auto", "off", *ORDER):
    raise ValueError(f"INTERP_SDPA must be one of {['auto', 'off', *ORDER]}, got {MODE!r}")
_chosen: dict = {}  # (dtype, head_dim, gqa, causal) -> op name, or None where no op works


def _cudnn(q, k, v, causal, scale, lse=True):
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, lse, 0.0, causal, False,
                                                                   scale=scale)[:2]
    return out, lse


def _flash(q, k, v, causal, scale, lse=True):  # FlashAttention returns the lse whatever is asked
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)[:2]
    return out, lse


OPS = {"cudnn": _cudnn, "flash": _flash}


def eligible(q, k, v, spec) -> bool:
    """Can an SDPA kernel give this call's output and lse? (cheap: attribute checks only)"""
    if MODE == "off" or not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    if spec.sliding_window is not None or spec.key_valid is not None or spec.key_bias is not None:
        return False
    if spec.causal and not (spec.q_len == spec.k_len or spec.q_len == 1):
        return False
    if spec.head_dim % 8 or q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        return False
    return True


def sdpa_out_lse(q, k, v, spec, need_lse: bool = True):
    """(out [b, h, q_len, d], lse [b, h, q_len] float32 natural log, contiguous), or None where no op works.
    need_lse=False (no statistic asked for): lse is None and cuDNN does not write it."""
    causal = spec.causal and spec.q_len > 1  # one query at the end of the keys sees every key
    key = (q.dtype, spec.head_dim, spec.heads != spec.kv_heads, causal)
    name = _chosen.get(key, "")
    if name == "":
        order = ORDER if MODE == "auto" else (MODE,)
        for cand in order:
            try:
                out, lse = _run(OPS[cand], q, k, v, causal, spec, need_lse)
            except (RuntimeError, NotImplementedError):
                continue
            _chosen[key] = cand
            return out, lse
        _chosen[key] = None
        return None
    if name is None:
        return None
    try:
        return _run(OPS[name], q, k, v, causal, spec, need_lse)
    except (RuntimeError, NotImplementedError):  # e.g. strides this op refuses: the Triton forward instead
        return None


def _run(op, q, k, v, causal, spec, need_lse: bool = True):
    out, lse = op(q, k, v, causal, spec.scale, need_lse)
    if not need_lse:
        return out, None
    b, h, lq = spec.batch, spec.heads, spec.q_len
    if lse.dim() == 4 and lse.shape[2] == lq and lse.shape[3] == 1:  # cuDNN: [b, h, lq, 1], one view op
        lse = lse.squeeze(3)
    elif lse.dim() != 3 or lse.shape[2] != lq:  # some builds pad the query axis
        lse = lse.reshape(b, h, -1)[:, :, :lq]
    if lse.dtype != torch.float32 or not lse.is_contiguous():
        lse = lse.float().contiguous()
    return out, lse


_grad_ok: dict = {}  # (op name, dtype, head_dim, gqa, causal) -> does the op's own backward work and agree?


def sdpa_out_lse_differentiable(q, k, v, spec):
    """(out, lse) from the op `sdpa_out_lse` picks, called so that autograd differentiates it with torch's own
    backward kernel (cuDNN / FlashAttention-2); None where that does not apply: deterministic algorithms requested
    (those backwards accumulate dQ with atomics; the Triton backward is deterministic), no op for this call, or an op
    whose backward failed the one-time probe below for this (dtype, head_dim, GQA, causal)."""
    if torch.are_deterministic_algorithms_enabled():
        return None
    if spec.q_len == 1 and spec.k_len == 1:  # cuDNN's backward refuses s_q = s_kv = 1 (seen on an H100)
        return None
    causal = spec.causal and spec.q_len > 1
    fkey = (q.dtype, spec.head_dim, spec.heads != spec.kv_heads, causal)
    if _chosen.get(fkey, "") == "":
        with torch.no_grad():  # let the forward choose its op first
            if sdpa_out_lse(q.detach(), k.detach(), v.detach(), spec) is None:
                return None
    name = _chosen.get(fkey)
    if name is None:
        return None
    gkey = (name, *fkey)
    if gkey not in _grad_ok:
        _grad_ok[gkey] = _probe_backward(OPS[name], q, k, causal, spec)
    if not _grad_ok[gkey]:
        return None
    try:
        return _run(OPS[name], q, k, v, causal, spec)
    except (RuntimeError, NotImplementedError):
        return None


def _probe_backward(op, q, k, causal, spec) -> bool:
    """Run the op forward + backward on small inputs of this call's kind and compare the gradients with float32
    math attention: an op whose backward raises or disagrees (e.g. GQA handled differently) is not used."""
    g = torch.Generator(device=q.device).manual_seed(0)
    n, d = 96, spec.head_dim
    x = [torch.randn(1, hh, n, d, device=q.device, dtype=q.dtype, generator=g).requires_grad_(True)
         for hh in (spec.heads, spec.kv_heads, spec.kv_heads)]
    do = torch.randn(1, spec.heads, n, d, device=q.device, dtype=q.dtype, generator=g)
    try:
        with torch.enable_grad():
            out = op(*x, causal, spec.scale)[0]
            got = torch.autograd.grad(out, x, do)
            xf = [t.detach().float().requires_grad_(True) for t in x]
            rep = spec.heads // spec.kv_heads
            kf, vf = (t.repeat_interleave(rep, 1) for t in xf[1:])
            ref_out = torch.nn.functional.scaled_dot_product_attention(xf[0], kf, vf, is_causal=causal,
                                                                       scale=spec.scale)
            ref = torch.autograd.grad(ref_out, xf, do.float())
    except (RuntimeError, NotImplementedError):
        return False
    for a, b in zip(got, ref):
        if not torch.isfinite(a).all() or (a.float() - b).abs().max() > 3e-2 * max(b.abs().max().item(), 1.0):
            return False
    return True
