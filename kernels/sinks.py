"""Learned attention sinks (GPT-OSS's `s_aux`) on the Triton backend, without touching the kernels.

Each query head h has a sink logit z_h that joins every row's softmax (unscaled, as transformers' eager
`modeling_gpt_oss.eager_attention_forward` concatenates it to the scaled, masked scores) and whose probability is
then dropped. With lse the log-sum-exp of the visible (scaled) scores and O the usual output:

    lse' = logaddexp(lse, z_h)       the sink-inclusive normaliser (the `lse` statistic of a call with sinks)
    p'_ij = exp(s_ij - lse'_i)       every key's probability (they sum to 1 - p_sink)
    O'   = O * exp(lse - lse')       the output
    p_sink = exp(z_h - lse')         the sink's own probability (`sink_prob`)

So the forward runs as usual (SDPA's kernels or the Triton forward; never the fused decode walk, which forms its
statistics in the same pass), the output is rescaled, and the statistics pass reads lse' instead of lse: key_mass,
key_mean, max_prob, sink/local/span mass then all describe p'. The statistics kernel's entropy is -sum_j p'_j ln p'_j
over the keys; the sink's term -p_sink ln p_sink is added here, so `entropy` is the entropy of the whole softmax
(nats). argmax / max_prob range over the keys only. A row that sees no key has lse' = z_h, p_sink = 1, output 0,
entropy 0, argmax -1 and no key mass.

Gradients: `autograd.FusedAttention` saves O' and lse'; the backward kernels, fed lse', recompute p' and take
D = rowsum(dO * O'), so dq, dk, dv are exact, and the sink's own gradient is -sum_i p_sink_i D_i.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from .checks import AttnSpec
from .stats import AttentionStats


def sink_prob(lse: torch.Tensor, sinks: torch.Tensor) -> torch.Tensor:
    """The sink's probability per query row, exp(sink_h - lse'): lse' the `lse` statistic of a call with sinks
    ([batch, heads, q_len]), sinks its [heads] (or [1 or batch, heads]) logits. 1 - p_sink is the mass on the keys."""
    for name, t in (("lse", lse), ("sinks", sinks)):
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
            raise TypeError(f"sink_prob: {name} must be a float tensor, got "
                            f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
    if lse.dim() != 3 or tuple(sinks.shape) not in ((lse.shape[1],), (1, lse.shape[1]), tuple(lse.shape[:2])):
        raise ValueError(f"sink_prob: lse must be [batch, heads, q_len] and sinks [heads] or [1 or batch, heads] of "
                         f"the same heads, got lse {tuple(lse.shape)} and sinks {tuple(sinks.shape)}")
    s = sinks.to(device=lse.device, dtype=torch.float32)
    s = s[None, :, None] if s.dim() == 1 else s[:, :, None]
    return torch.exp(s - lse)


def add_sink_entropy(st: AttentionStats, lse_sinks: torch.Tensor, sinks: torch.Tensor) -> AttentionStats:
    """The entropy statistic of the keys alone (-sum_j p'_j ln p'_j) -> that of the whole softmax, the sink's
    probability included (NaN rows stay NaN)."""
    if st.entropy is not None:
        ps = sink_prob(lse_sinks, sinks)
        st.entropy = st.entropy - torch.special.xlogy(ps, ps)
    return st


def stats_with_sinks(q, k, lse_sinks: torch.Tensor, spec: AttnSpec, sink_entropy=None) -> AttentionStats:
    """The statistics of spec.stats from the sink-inclusive lse' (one statistics pass reading lse'). sink_entropy:
    the sink's entropy term per row when `rescale` made it (else computed here)."""
    from .launcher import triton_stats

    plain = dataclasses.replace(spec, sinks=None)
    st = triton_stats(q, k, lse_sinks.contiguous(), plain)
    if sink_entropy is not None and st.entropy is not None:
        st.entropy.add_(sink_entropy)
        return st
    return add_sink_entropy(st, lse_sinks, spec.sinks)


def rescale_reference(out: torch.Tensor | None, lse: torch.Tensor, sinks: torch.Tensor):
    """lse' = logaddexp(lse, sink) and O' = O exp(lse - lse') in float32 (`rescale`'s reference): (O' or None, lse')."""
    lse_s = torch.logaddexp(lse, sinks[:, :, None])  # = the sink where lse = -inf; NaN stays NaN
    if out is None:
        return None, lse_s
    keep = torch.exp(lse - lse_s)  # the keys' share, 1 - p_sink: 0 on rows that see nothing
    return (out.float() * keep[..., None]).to(out.dtype), lse_s


def rescale(out: torch.Tensor | None, lse: torch.Tensor, sinks: torch.Tensor, entropy: bool = False):
    """The forward's output O [b, h, q_len, dv] (or None) and lse [b, h, q_len] -> (lse' = logaddexp(lse, sink_h),
    the sink's entropy term -p_sink ln p_sink per row or None), with O rescaled to O exp(lse - lse') in place: one
    Triton pass (`triton_sinks.py`), float32 inside, launched directly once compiled (`direct_launch.py`)."""
    import triton

    from .triton_sinks import RESCALE_BLOCK_M

    b, h, m = lse.shape
    lse_s = torch.empty((b, h, m), device=lse.device, dtype=torch.float32)
    ent = torch.empty((b, h, m), device=lse.device, dtype=torch.float32) if entropy else lse_s
    o = out if out is not None else lse.new_empty((1, 1, 1, 1))
    block_d = triton.next_power_of_2(o.shape[-1])
    consts = dict(HAS_OUT=out is not None, HAS_ENT=entropy, BLOCK_M=RESCALE_BLOCK_M, BLOCK_D=block_d)
    _direct_rescale()(
        (triton.cdiv(m, RESCALE_BLOCK_M), b * h),
        (o, lse, lse_s, sinks, ent, *o.stride(), *lse.stride(), h, m, o.shape[-1],
         sinks.stride(0) if sinks.shape[0] > 1 else 0),
        consts, tuple(consts.values()))
    return lse_s, (ent if entropy else None)


@functools.cache
def _direct_rescale():
    """The rescale kernel's DirectLauncher, made on first use (the JIT path in the CPU interpreter)."""
    from .direct_launch import DirectLauncher
    from .triton_forward import INTERPRET
    from .triton_sinks import sinks_rescale_kernel

    return DirectLauncher(sinks_rescale_kernel, enabled=not INTERPRET)


def triton_attention_with_sinks(q, k, v, spec: AttnSpec, *, need_out: bool = True):
    """`launcher.triton_attention` for a call with spec.sinks: (output or None, AttentionStats)."""
    from .launcher import triton_attention

    fwd = dataclasses.replace(spec, stats=("lse",), sinks=None)  # output + lse only: no fused decode walk
    out, st = triton_attention(q, k, v, fwd, need_out=need_out)
    rest = tuple(n for n in spec.stats if n != "lse")
    lse_s, ent = rescale(out, st.lse, spec.sinks, entropy="entropy" in rest)  # out rescaled in place
    res = stats_with_sinks(q, k, lse_s, dataclasses.replace(spec, stats=rest), ent) if rest else AttentionStats()
    if "lse" in spec.stats:
        res.lse = lse_s
    return out, res
