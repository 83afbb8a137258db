"""Public entry point: `attention_with_stats` checks its inputs once and picks a backend."""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import torch

from .checks import MIN_HEAD_DIM, AttnSpec, check_inputs
from .reference import ProbHook, reference_attention
from .stats import AttentionStats

BACKENDS = ("auto", "triton", "reference")
_WARNED: set = set()  # masks (by description) that auto sent to the reference backend instead of Triton


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def pick_backend(backend: str, device: torch.device) -> str:
    """auto: Triton on CUDA; on CPU the reference, or the Triton interpreter when TRITON_INTERPRET=1."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return "reference"
    on_cuda = device.type == "cuda"
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if backend == "triton":
        if not triton_available():
            raise ValueError("backend='triton' needs the triton package, which is not installed")
        if not on_cuda and not interpret:
            raise ValueError(
                f"backend='triton' needs CUDA tensors (got {device}); on CPU set TRITON_INTERPRET=1 before importing "
                "triton to run the kernels in the interpreter, or use backend='reference'"
            )
        return "triton"
    if on_cuda and triton_available():
        return "triton"
    return "reference"


def attention_with_stats(
    q: torch.Tensor,  # [batch, heads, q_len, head_dim]
    k: torch.Tensor,  # [batch, kv_heads, k_len, head_dim]
    v: torch.Tensor,  # [batch, kv_heads, k_len, v_head_dim]: v_head_dim may differ from head_dim (MLA)
    *,
    causal: bool = True,
    scale: float | None = None,
    sliding_window: int | None = None,
    attention_mask: torch.Tensor | None = None,  # [batch, k_len] bool/int, True/1 = real token
    key_bias: torch.Tensor | None = None,  # [batch|1, heads|1, k_len] float, added to the scaled scores; -inf
    # (or <= -1e30, or torch.finfo(its dtype).min) hides the key; NaN and +inf are refused
    stats="all",
    sink_tokens: int = 4,
    local_window: int = 64,
    span=None,
    backend: str = "auto",
    prob_hook: ProbHook | None = None,
    need_out: bool = True,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,  # [heads] float: learned sink logits (GPT-OSS's s_aux), one per query head
    segment_ids: torch.Tensor | None = None,  # [batch, k_len] int, never decreasing along a row: packed sequences,
    # chunked attention (a query sees only the keys of its own segment; `interp.kernels.segments`)
    attn_mask=None,  # [batch|1, heads|1, q_len, k_len] bool / float, or fn(batch_idx, head_idx, q_idx, kv_idx):
    # any other mask, on the reference backend (`interp.kernels.attn_mask`)
) -> tuple[torch.Tensor | None, AttentionStats]:
    """Attention output `[batch, heads, q_len, v_head_dim]` and the requested statistics (see `interp.kernels.stats`).

    q, k, v are in SDPA's layout `[batch, heads, seq, head_dim]`; a HookedModel's hook_q / hook_k / hook_v are
    `[batch, pos, head, d_head]`: pass them as `.transpose(1, 2)` (a tensor whose heads and positions are swapped is
    refused only where its shape gives it away, e.g. q_len > k_len; q and k of equal head count and length are not).

    v's head dim may differ from q's and k's (multi-head latent attention, DeepSeek-V2/V3: q/k 192, v 128); k and v
    still agree on batch, kv heads and length. The default scale is 1/sqrt(q/k head dim); no statistic depends on v.

    Queries are aligned to the end of the keys (query i sits at key position i + k_len - q_len), so a single decode
    query against a long cache and chunked prefill both work. `sliding_window=W` lets query i see keys j with
    i - j < W (transformers' convention). `prob_hook` forces the reference backend: it sees (and may replace) the
    probabilities of each query chunk. `softcap=C` (Gemma 2's attention logit soft-capping) turns each scaled score s
    into C * tanh(s / C) before masks and key_bias, on every backend, gradients included.

    `sinks` ([heads] float, GPT-OSS's `s_aux`): learned attention sinks. Each query head's sink logit (not scaled)
    joins every row's softmax and its probability is dropped: with lse the log-sum-exp of the visible scores,
    lse' = logaddexp(lse, sink), key probabilities p'_ij = exp(s_ij - lse') and output O * exp(lse - lse'). Then the
    `lse` statistic is lse', every key statistic and per-query mass (and max_prob) describes p', argmax / max_prob
    range over the keys only, and `entropy` is the whole softmax's, the sink's own probability p_sink =
    exp(sink - lse') included (`interp.kernels.sinks.sink_prob(lse, sinks)` gives p_sink). Gradients with sinks
    are exact on both backends, the sinks' own included (the Triton backward kernels read lse';
    `autograd.FusedAttention`).

    `segment_ids` ([batch, k_len] integers, never decreasing along a row): a query sees only the keys whose id is
    its own (its key position's), on top of every other mask: packed sequences (one id per document) and chunked
    attention (Llama 4: position // attention_chunk_size). `sink_mass` is then the mass on the first `sink_tokens`
    keys of the query's own segment. The Triton backend runs each segment's queries against that segment's keys
    alone (`interp.kernels.segments`); the reference masks the other segments' keys.

    `attn_mask`: any mask the arguments above cannot describe, combined with them by "and": a dense
    [batch or 1, heads or 1, q_len, k_len] tensor in SDPA's convention (bool: True = may attend; float: added to the
    scaled scores, -inf hides), or a mask function fn(batch_idx, head_idx, q_idx, kv_idx) -> bool in transformers'
    convention, q_idx being the query's position on the key axis (`interp.kernels.attn_mask`). The Triton kernels
    never read an n x n mask, so such a call runs on the reference backend (chunked over queries: O(chunk * k_len)
    memory, every (query, key) pair of its key range computed); backend='triton' refuses it.

    Differentiable on both backends: when grad mode is on and q, k, v or key_bias requires grad, the Triton path
    runs through `interp.kernels.autograd.FusedAttention` (FlashAttention-2-style backward kernels; the key_bias
    gradient is the sum over queries of dS, the attribution of attending to each key). Statistics carry no gradient.
    """
    spec = check_inputs(
        q, k, v, causal=causal, scale=scale, sliding_window=sliding_window, attention_mask=attention_mask,
        key_bias=key_bias, stats=stats, sink_tokens=sink_tokens, local_window=local_window, span=span,
        softcap=softcap, sinks=sinks, segment_ids=segment_ids, attn_mask=attn_mask,
    )
    chosen = pick_backend(backend, q.device)
    if spec.attn_mask is not None:
        if backend == "triton":
            raise ValueError(f"{spec.attn_mask.describe} is a mask the Triton kernels cannot apply (they compute "
                             "causal, sliding-window, padding and segment masks from positions and never read an n x n "
                             "mask); use backend='auto' or 'reference', which apply it in PyTorch")
        if chosen == "triton" and spec.attn_mask.describe not in _WARNED:  # auto on a GPU: say so, once
            _WARNED.add(spec.attn_mask.describe)
            warnings.warn(f"{spec.attn_mask.describe} runs on the reference backend (PyTorch, float32, chunked over "
                          "queries: every query-key pair computed), not the Triton kernels, which cannot apply it",
                          stacklevel=2)
        chosen = "reference"
    if not isinstance(need_out, (bool, np.bool_)):
        raise TypeError(f"need_out must be True or False, got {need_out!r}")
    if prob_hook is not None and not callable(prob_hook):
        raise TypeError(f"prob_hook must be a callable prob_hook(p, q_start) -> p or None, got "
                        f"{type(prob_hook).__name__}")
    if prob_hook is not None:
        if backend == "triton":
            raise ValueError("prob_hook needs the probabilities themselves, which the Triton kernels never form; "
                             "use backend='auto' or 'reference'")
        chosen = "reference"
    if chosen == "triton" and spec.segment_ids is not None:  # each segment's queries against its own keys
        from .segments import piece_bias, piece_options, run_pieces

        def piece(rows, qa, qe, ks, ke):
            return attention_with_stats(
                q[rows, :, qa:qe], k[rows, :, ks:ke], v[rows, :, ks:ke], key_bias=piece_bias(spec, rows, ks, ke),
                backend="triton", need_out=need_out, softcap=softcap, sinks=sinks,
                **piece_options(spec, rows, ks, ke, sink_tokens, local_window))

        return run_pieces(spec, spec.segment_ids, piece, need_out)
    if chosen == "triton":
        if spec.v_head_dim is not None or spec.head_dim < MIN_HEAD_DIM:  # v's head dim unlike q/k's (MLA), or
            return _triton_padded(q, k, v, spec, need_out)  # below the kernels' smallest: one padded head dim
        return _triton(q, k, v, spec, need_out)
    return reference_attention(q, k, v, spec, prob_hook=prob_hook, need_out=need_out)


def _triton(q, k, v, spec: AttnSpec, need_out: bool) -> tuple[torch.Tensor | None, AttentionStats]:
    """The Triton backend for q, k, v of one head dim: through `FusedAttention` when a gradient is wanted."""
    if need_out and torch.is_grad_enabled() and (
        q.requires_grad or k.requires_grad or v.requires_grad
        or (spec.key_bias is not None and spec.key_bias.requires_grad)
        or (spec.sinks is not None and spec.sinks.requires_grad)
    ):
        from .autograd import differentiable_triton_attention

        return differentiable_triton_attention(q, k, v, spec)
    from .launcher import triton_attention

    return triton_attention(q, k, v, spec, need_out=need_out)


def _pad_head_dim(t: torch.Tensor, width: int) -> torch.Tensor:
    """t [..., n] -> [..., width], zeros after its own n columns (t itself when n == width); differentiable."""
    n = t.shape[-1]
    return t if n == width else torch.nn.functional.pad(t, (0, width - n))


def _qk_for_kernels(q, k, spec: AttnSpec):
    """q and k (and spec) as the statistics kernels take them: a head dim below MIN_HEAD_DIM, the kernels' smallest,
    zero-padded to it (zero columns change no score)."""
    if spec.head_dim >= MIN_HEAD_DIM:
        return q, k, spec
    qp, kp = (_pad_head_dim(t, MIN_HEAD_DIM) for t in (q, k))
    return qp, kp, dataclasses.replace(spec, head_dim=MIN_HEAD_DIM)


def _triton_padded(q, k, v, spec: AttnSpec, need_out: bool) -> tuple[torch.Tensor | None, AttentionStats]:
    """The Triton backend where the kernels cannot take the head dims as they are: v of another head dim dv than
    q/k's d (multi-head latent attention), or d or dv below MIN_HEAD_DIM (tiny toy models). Everything is zero-padded
    to one head dim D = max(d, dv, MIN_HEAD_DIM): q's and k's extra columns add 0 to every score, and v's give output
    columns that are cut off again. spec.scale was fixed from the real d by `check_inputs`, and no statistic reads v,
    so every statistic is the unpadded call's. Pad and slice are differentiable: dq, dk and dv are the padded
    gradients' own columns. Statistics alone (need_out=False) never read v: they run on (q, k, k)."""
    if not need_out:
        qp, kp, spec = _qk_for_kernels(q, k, dataclasses.replace(spec, v_head_dim=None))
        return _triton(qp, kp, kp, spec, False)
    width = max(spec.head_dim, spec.value_dim, MIN_HEAD_DIM)
    qp, kp, vp = (_pad_head_dim(t, width) for t in (q, k, v))  # [b, h | kv_heads, len, D]
    out, st = _triton(qp, kp, vp, dataclasses.replace(spec, head_dim=width, v_head_dim=None), True)
    return out[..., :spec.value_dim], st  # [b, h, q_len, dv]


def stats_from_lse(
    q: torch.Tensor,  # [batch, heads, q_len, head_dim]
    k: torch.Tensor,  # [batch, kv_heads, k_len, head_dim]
    lse: torch.Tensor,  # [batch, heads, q_len] float32: the `lse` statistic of an earlier call on these q, k
    *,
    causal: bool = True,
    scale: float | None = None,
    sliding_window: int | None = None,
    attention_mask: torch.Tensor | None = None,
    stats="all",
    sink_tokens: int = 4,
    local_window: int = 64,
    span=None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
) -> AttentionStats:
    """The statistics of attention whose row log-sum-exp is already known: one Triton statistics pass, no forward.

    `lse` must come from `attention_with_stats` on the same q, k and options (its `lse` statistic, or what the model
    wrapper kept of it): every statistic is computed from it, and a wrong lse gives wrong statistics. Used to run
    the statistics of many layers in one pass (`interp.layer_batch`). Triton backend only (CUDA, or the CPU
    interpreter under TRITON_INTERPRET=1); no key_bias (its statistics depend on the bias, which is not kept).
    `softcap`: the call's logit soft-capping (an lse of capped scores read against uncapped ones gives
    "probabilities" far above 1).
    `sinks`: the call's learned sink logits, [heads] or [batch, heads] (a batch of stacked layers, each with its
    own); `lse` is then the sink-inclusive lse' that call returned as its `lse` statistic (`interp.kernels.sinks`).
    `segment_ids`: the call's segments (`attention_with_stats`), each segment's queries run against its own keys."""
    spec = check_inputs(
        q, k, k, causal=causal, scale=scale, sliding_window=sliding_window, attention_mask=attention_mask,
        key_bias=None, stats=stats, sink_tokens=sink_tokens, local_window=local_window, span=span, softcap=softcap,
        sinks=sinks, sinks_per_batch=True, segment_ids=segment_ids,
    )
    if not isinstance(lse, torch.Tensor):
        raise TypeError(f"lse must be a torch.Tensor, got {type(lse).__name__}")
    want = (spec.batch, spec.heads, spec.q_len)
    if tuple(lse.shape) != want or lse.dtype != torch.float32 or lse.device != q.device:
        raise ValueError(f"lse must be a float32 tensor of shape [batch, heads, q_len] = {list(want)} on {q.device} "
                         f"(the lse statistic of the same call), got {lse.dtype} {tuple(lse.shape)} on {lse.device}")
    pick_backend("triton", q.device)  # a clear error where the Triton kernels cannot run
    if spec.segment_ids is not None:
        from .segments import piece_options, run_pieces

        def piece(rows, qa, qe, ks, ke):
            return None, stats_from_lse(
                q[rows, :, qa:qe], k[rows, :, ks:ke], lse[rows, :, qa:qe], softcap=softcap,
                sinks=sinks if sinks is None or sinks.dim() == 1 else sinks[rows],
                **piece_options(spec, rows, ks, ke, sink_tokens, local_window))

        return run_pieces(spec, spec.segment_ids, piece, False)[1]
    from .launcher import triton_stats

    q, k, spec = _qk_for_kernels(q, k, spec)
    return triton_stats(q, k, lse.contiguous(), spec)
