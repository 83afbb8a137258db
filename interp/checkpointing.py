"""Block checkpointing for gradient runs: keep each block's input, recompute its insides during the backward.

A gradient run (`run_with_cache(grad_of=...)`, `run_with_hooks(grad=True)`) normally keeps every tensor the backward
needs: at long context that is most of a run's memory (Gemma 3 at 8k tokens: ~1.3 MB per token, 10.7 GiB for the
autograd graph). With `checkpoint=True` each decoder block runs under `torch.utils.checkpoint` (non-reentrant): only
the block's inputs are kept (d_model floats per token and layer), and the block is recomputed when the backward
reaches it: about one more forward of compute for O(n · d_model · layers) memory.

The recomputation happens during the backward, after the run's hook context has closed, so the wrapper puts the run's
context (hooks, interventions, padding mask) back for it: the block recomputes exactly what the forward computed.
Consequences for hooks: a forward hook inside a block (q/k/v, z, statistics, attn_out, mlp_out) runs once more
during the backward, so it must be a deterministic function of its input (a hook that resamples at random would make
the recomputation differ); what the recomputation passes through hooks is not recorded again (tracked tensors and
backward hooks belong to the first pass; `ctx.recomputing` is True meanwhile). Residual-stream hooks on the block's
own input and output (`hook_resid_pre`, `hook_resid_post`) sit outside the checkpoint and run once.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from .swaps import ForwardSwaps


@contextlib.contextmanager
def checkpointed_blocks(model, ctx, active: bool = True):
    """While active: each of `model.blocks` runs under a non-reentrant checkpoint when grad is enabled; the
    recomputation runs with the run context `ctx` and padding mask restored. Instance `forward`s already there (an
    `InputPatch` swap, accelerate's dispatch) are wrapped and put back afterwards."""
    if not active:
        yield
        return
    swaps = ForwardSwaps()
    try:
        for block in model.blocks:
            swaps.set(block, _wrap(model, ctx, model._valid, block.forward))
        yield
    finally:
        swaps.restore()


def _wrap(model, ctx, valid, forward):
    def run_block(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        calls = [0]

        def body(*a, **kw):
            calls[0] += 1
            if calls[0] == 1:  # the forward pass itself, inside the run's hook context
                return forward(*a, **kw)
            return _recompute(model, ctx, valid, forward, a, kw)

        return _checkpoint(body, *args, use_reentrant=False, **kwargs)

    return run_block


def _recompute(model, ctx, valid, forward, args, kwargs):
    """The block again, during the backward: the run's context back in place, bookkeeping off."""
    prev = model._ctx, model._valid, ctx.recomputing
    model._ctx, model._valid, ctx.recomputing = ctx, valid, True
    try:
        return forward(*args, **kwargs)
    finally:
        model._ctx, model._valid, ctx.recomputing = prev
