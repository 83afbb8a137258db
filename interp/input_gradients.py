"""d metric / d (the residual stream each downstream input reads), for every input at once: one forward and one
backward (the gradient half of edge attribution; `interp.head_inputs` is the patching half).

Inputs as in `interp.head_inputs`: the query of each head, the key and value of each KV head, each MLP, the logits.
The gradient at hook_q/k/v (or at the MLP's output) is pulled back through that input's own path (input norm,
projection, q/k norm, RoPE) to the residual stream, one head slot at a time, batched over heads with
`torch.autograd.grad(..., is_grads_batched=True)`.
"""

from __future__ import annotations

from typing import Callable

import torch

from .input_checks import bool_arg, layer_list
from .validate import _show, model_arg


def input_gradients(model, tokens, metric: Callable, embed_hook: Callable | None = None,
                    mlp: bool = True, layers=None, fwd_hooks=(), interventions=(), sink: Callable | None = None,
                    head_chunk: int | None = None, logits_at=None) -> tuple[float, dict]:
    """d metric / d (residual stream read by each downstream input), one forward + one backward.

    Returns (metric value, grads) with grads[("q", l)]: [head, batch, pos, d_model], grads[("k", l)] and
    grads[("v", l)]: [kv_head, batch, pos, d_model], grads[("mlp", l)]: [batch, pos, d_model] (when mlp),
    grads[("logits",)]: [batch, pos, d_model]. `embed_hook` (a hook_embed forward hook) replaces the embeddings,
    e.g. by an interpolation between corrupt and clean (EAP-IG). `layers`: the q/k/v (and MLP) gradients of these
    layers only (default all; the logits always). `fwd_hooks` (run before the recording hooks, so a replaced
    activation is what the inputs read) and `interventions` are passed on to the run (EAP-IG over activations,
    AtP*'s GradDrop, a cheaper gradient path for long inputs).

    `sink(key, grad, heads)`: instead of returning them (grads is then {}), hand each gradient over as soon as it
    is computed and drop it: grad [len(heads), batch, pos, d_model] for the heads `heads` of q/k/v key (kind, l),
    [1, batch, pos, d_model] with heads [0] for ("mlp", l) and ("logits",). `head_chunk`: heads per batched pull-back
    (default: all of a layer's), which bounds the transient memory to ~3 x head_chunk x batch x pos x d_model.
    `logits_at` (1-D positions): the metric is handed the logits at those positions only (long inputs).
    A layer whose MLP output does not depend on its input (the toys' attention-only blocks: a zero MLP) gets a zero
    ("mlp", l) gradient, which is exact; pass mlp=False to leave the MLP inputs out. A metric that does not depend on
    the logits raises (its gradients would all be zero).
    """
    from .head_inputs import check_unpadded, mlp_input_norm  # noqa: PLC0415 - head_inputs re-exports this file

    where = "input_gradients"
    model_arg(model, where)
    for name, fn, optional in (("metric", metric, False), ("embed_hook", embed_hook, True), ("sink", sink, True)):
        if not callable(fn) and not (optional and fn is None):
            raise TypeError(f"{where}: {name} must be a callable{' or None' if optional else ''}, got {_show(fn)}")
    mlp = bool_arg("mlp", mlp, where)  # NumPy bools too
    tokens = check_unpadded(tokens)
    n = model.cfg.n_layers
    try:
        layers = sorted(set(layer_list(layers, n)))  # None: all; numpy ints too
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None
    if not layers:
        raise ValueError(f"{where}: layers selects no layer; give layers in 0..{n - 1}, or None for all")
    if isinstance(fwd_hooks, (str, bytes)) or not hasattr(fwd_hooks, "__iter__"):
        raise TypeError(f"{where}: fwd_hooks must be a list of (hook name, fn) pairs, got {_show(fwd_hooks)}")
    if head_chunk is not None and (isinstance(head_chunk, bool) or not isinstance(head_chunk, int) or head_chunk < 1):
        raise ValueError(f"input_gradients: head_chunk must be a positive int or None, got {head_chunk!r}")
    grads: dict = {}
    if sink is None:
        def sink(key, g, heads):  # collect: q/k/v chunks in head order, [batch, pos, d_model] for the others
            if key[0] not in ("q", "k", "v"):
                grads[key] = g[0]
            else:
                grads[key] = torch.cat([grads[key], g]) if key in grads else g
    live: dict = {}

    def stash(t, hook):
        live[hook.name] = t

    names = [f"blocks.{l}.{p}" for l in range(n) for p in ("hook_resid_pre", "attn.hook_q", "attn.hook_k",
                                                            "attn.hook_v")]
    names.append(f"blocks.{n - 1}.hook_resid_post")
    if mlp:
        names += [f"blocks.{l}.hook_mlp_out" for l in range(n)]
    hooks = list(fwd_hooks) + [(nm, stash) for nm in names]
    if embed_hook is not None:
        hooks.insert(0, ("hook_embed", embed_hook))
    handles = []
    if mlp:
        for l, block in enumerate(model.blocks):
            def grab(mod, args, l=l):
                live[("mid", l)] = args[0]
            handles.append(mlp_input_norm(block).register_forward_pre_hook(grab))
    try:
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks, interventions=interventions, grad=True,
                                      logits_at=logits_at)
    finally:
        for h in handles:
            h.remove()
    with torch.enable_grad():
        value = metric(logits)
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.requires_grad:
        raise ValueError(f"{where}: the metric must return a scalar tensor that depends on the logits, got "
                         f"{_show(value)}")
    if not bool(torch.isfinite(value.detach()).all()):
        raise ValueError(f"{where}: the metric is {float(value.detach().reshape(()))} (every gradient would be NaN); "
                         "check it on these logits (e.g. a log of a zero probability)")
    del logits
    if mlp:  # an MLP whose output does not depend on anything that needs grad (a zero MLP): its gradient is 0
        flat = [l for l in layers if not live[f"blocks.{l}.hook_mlp_out"].requires_grad]
    else:
        flat = []
    outs = [f"blocks.{l}.attn.hook_{x}" for l in layers for x in "qkv"]
    if mlp:
        outs += [f"blocks.{l}.hook_mlp_out" for l in layers if l not in flat]
    outs.append(f"blocks.{n - 1}.hook_resid_post")
    got = torch.autograd.grad(value.reshape(()), [live[o] for o in outs], retain_graph=True, allow_unused=True)
    if got[-1] is None:
        raise ValueError(f"{where}: the metric's value does not depend on the logits it was given (every gradient "
                         "would be zero); compute it from the logits argument")
    if not bool(torch.isfinite(got[-1]).all()):
        raise ValueError(f"{where}: the gradient of the metric is NaN/Inf at the logits' input (blocks.{n - 1}."
                         "hook_resid_post) though the metric is finite; check the metric's backward on these logits")
    g_at = {o: (torch.zeros_like(live[o]) if g is None else g) for o, g in zip(outs, got)}
    del got
    sink(("logits",), g_at.pop(outs[-1]).detach()[None], [0])
    for l in layers:
        resid = live[f"blocks.{l}.hook_resid_pre"]
        for x in "qkv":
            t = live[f"blocks.{l}.attn.hook_{x}"]  # [batch, pos, head, d_head]
            g = g_at.pop(f"blocks.{l}.attn.hook_{x}")
            nh = t.shape[2]
            step = nh if head_chunk is None else head_chunk
            for h0 in range(0, nh, step):
                heads = list(range(h0, min(nh, h0 + step)))
                eye = torch.eye(nh, dtype=g.dtype, device=g.device)[heads][:, None, None, :, None]  # [slot,1,1,head,1]
                stacked = g.unsqueeze(0) * eye  # [slot, batch, pos, head, d_head], only the slot's head non-zero
                (gi,) = torch.autograd.grad(t, resid, grad_outputs=stacked, is_grads_batched=True, retain_graph=True)
                del stacked
                sink((x, l), gi.detach(), heads)  # [slot, batch, pos, d_model]
                del gi
            del g
        if mlp and l in flat:
            sink(("mlp", l), torch.zeros_like(live[f"blocks.{l}.hook_mlp_out"])[None], [0])
        elif mlp:
            mo = live[f"blocks.{l}.hook_mlp_out"]
            (gm,) = torch.autograd.grad(mo, live[("mid", l)], grad_outputs=g_at.pop(f"blocks.{l}.hook_mlp_out"),
                                        retain_graph=l < layers[-1], allow_unused=True)
            sink(("mlp", l), (torch.zeros_like(mo) if gm is None else gm.detach())[None], [0])
            del gm
    return float(value.detach()), grads
