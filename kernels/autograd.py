"""Differentiable fused attention: the Triton forward wrapped in a `torch.autograd.Function` whose backward runs
the FlashAttention-2-style kernels of `triton_backward.py`.

Where the forward's output comes from torch's own fused attention (`sdpa_path.py`: CUDA, fp16/bf16, no window,
padding or key bias) and no deterministic algorithms are requested, the gradients come from that op's own backward
(cuDNN / FlashAttention-2) through ordinary autograd instead, and the statistics from the Triton pass on the detached
lse: gradients then cost exactly what SDPA's cost. `INTERP_SDPA=off` or `torch.use_deterministic_algorithms(True)`
keeps the Triton backward (deterministic: no atomics).

The forward is the ordinary launcher with "lse" added to the requested statistics (the backward recomputes the
probabilities from it). Statistics come back as outputs without gradients. Saved for backward: q, k, v, the output,
the lse and the key bias — O(n) memory, no probabilities. The key-bias gradient, sum over queries of dS, is how much
the loss changes per unit of extra (log-)attention to each key: the attribution of attending to it.
"""

from __future__ import annotations

import dataclasses

import torch

from .checks import AttnSpec, check_fits_in_memory
from .launcher import triton_attention, triton_stats
from .launcher_backward import triton_attention_backward
from .sdpa_path import eligible, sdpa_out_lse_differentiable
from .stats import ALL_STATS, AttentionStats


class FusedAttention(torch.autograd.Function):
    """apply(q, k, v, key_bias_f32 or None, sinks [1|b, h] or None, spec) -> (out, *statistics in `spec.stats`
    order).

    With learned sinks (`sinks.py`) the forward returns O' = O exp(lse - lse') and lse' = logaddexp(lse, sink). The
    backward kernels then need nothing new: fed lse', they recompute the keys' probabilities p' (the sink's share
    left out of every row), and D = rowsum(dO * O') is the sink-inclusive softmax's, so dq, dk, dv and the key-bias
    gradient are exact. The sink logit's own gradient is -sum_i p_sink_i D_i (its score's dO . v term is 0: the sink
    carries no value)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, sinks, spec: AttnSpec):
        fwd_stats = spec.stats if "lse" in spec.stats else tuple(n for n in ALL_STATS if n in spec.stats or n == "lse")
        out, st = triton_attention(q, k, v, dataclasses.replace(spec, stats=fwd_stats), need_out=True)
        stats = tuple(getattr(st, name) for name in spec.stats)
        ctx.spec = dataclasses.replace(spec, sinks=None)  # the backward reads lse' (already sink-inclusive)
        ctx.save_for_backward(q, k, v, out, st.lse, bias, sinks)
        ctx.mark_non_differentiable(*stats)
        return (out, *stats)

    @staticmethod
    def backward(ctx, dout, *_stat_grads):
        if torch.is_grad_enabled():  # create_graph=True: the kernels' gradients are not differentiable again
            raise RuntimeError(
                "the fused Triton attention has no second derivative (create_graph=True / double backward); "
                "use attention_with_stats(..., backend='reference') for higher-order gradients"
            )
        q, k, v, out, lse, bias, sinks = ctx.saved_tensors
        need_q, need_k, need_v, need_bias, need_sinks = ctx.needs_input_grad[:5]
        dq = dk = dv = dbias = None
        if need_q or need_k or need_v or (need_bias and bias is not None):
            dq, dk, dv, dbias = triton_attention_backward(
                dout, q, k, v, out, lse, ctx.spec,
                need_dq=need_q, need_dkv=need_k or need_v, need_dbias=need_bias and bias is not None,
            )
        dsinks = None
        if need_sinks and sinks is not None:  # [1|b, h]: -sum over rows (and a broadcast batch) of p_sink * D
            d = (dout.float() * out.float()).sum(-1)  # [b, h, q_len]
            d_sink = -torch.exp(sinks[:, :, None] - lse) * d  # (a row that sees nothing: p_sink 1, O' = 0, D = 0)
            dsinks = d_sink.sum(-1).sum(0, keepdim=True) if sinks.shape[0] == 1 else d_sink.sum(-1)
        return (dq if need_q else None, dk if need_k else None, dv if need_v else None, dbias, dsinks, None)


def differentiable_triton_attention(
    q: torch.Tensor,  # [batch, heads, q_len, head_dim]
    k: torch.Tensor,  # [batch, kv_heads, k_len, head_dim]
    v: torch.Tensor,  # [batch, kv_heads, k_len, head_dim]
    spec: AttnSpec,
) -> tuple[torch.Tensor, AttentionStats]:
    """The Triton path with gradients for q, k, v, the key bias (spec.key_bias, whose autograd history reaches
    the caller's `[batch|1, heads|1, k_len]` tensor, so broadcast dimensions are summed there) and learned sinks
    (spec.sinks, likewise)."""
    if spec.key_bias is None and spec.sinks is None and eligible(q, k, v, spec):
        check_fits_in_memory(q, spec)
        res = sdpa_out_lse_differentiable(q, k, v, spec)
        if res is not None:
            out, lse = res
            return out, triton_stats(q.detach(), k.detach(), lse.detach(), spec)
    out, *stats = FusedAttention.apply(q, k, v, spec.key_bias, spec.sinks, spec)
    return out, AttentionStats(**dict(zip(spec.stats, stats)))
