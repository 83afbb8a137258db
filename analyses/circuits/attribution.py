"""Gradient attribution over the circuit graph: EAP, EAP-IG (inputs and activations), and node-level AtP.

All edge methods are one contraction over the same two pieces (the mask form of auto-circuit: the derivative of the
masked run of `patching.masked_logits` with respect to an edge's weight w_uv at w = 0):

    score(u -> v) = sum_{batch, pos, d} (a_u^ablated - a_u^clean) . dM/d in_v        (averaged over examples)

- `eap`: dM/d in_v at the clean input (Syed et al. 2023): one clean forward + backward, one ablated forward.
- `eap_ig`: dM/d in_v averaged over m runs whose embeddings are interpolated corrupt -> clean,
  e_k = e_corr + (k/m)(e_clean - e_corr), k = 0..m-1 (Hanna et al. 2024, their code's convention).
- `eap_ig_act`: dM/d in_v averaged along the straight path between the clean and corrupted *activations* of the
  edge's upstream node (the "activations" variant of EAP-IG / MIB): for each group of upstream nodes (the input,
  one layer's heads, one MLP) and k = 1..m, run clean with that group's activations set to
  a_corr + (k/m)(a_clean - a_corr) (k = m is the clean point, EAP-IG's code), and score the group's edges with the
  gradients of those runs. (1 + 2L) m forward + backward passes.
- `atp_heads`: the same first-order estimate per head output (node level, Kramar et al. 2024's AtP).

A score approximates M(edge ablated) - M(clean), the quantity `patching.edge_patching` measures exactly.
The gradients in_v come from `interp.head_inputs.input_gradients` (GQA-native k/v, no per-architecture code).

Memory: the deltas stay compact (`deltas.NodeDeltas`: per layer the heads' z, not [n_up, batch, pos, d_model]) and
are expanded one position chunk at a time; each gradient (one chunk of one layer's q / k / v heads, an MLP, the
logits) is contracted as soon as `input_gradients` produces it and dropped. The peak is the forward + backward
of the clean run plus ~O(batch x pos x d_model x (a few)), not O(batch x pos x d_model x (n_up + n_slots)).
"""

from __future__ import annotations

from typing import Callable

import torch

from interp.head_inputs import check_unpadded
from interp.input_gradients import input_gradients
from interp.validate import hooked_model_arg

from .deltas import DenseDeltas, node_deltas
from .graph import Graph, graph_arg
from .patching import check_aligned

GRAD_ELEMENTS = 2 ** 29  # elements of one batched pull-back [heads, batch, pos, d_model] (1 GiB in bf16)


class _Contractor:
    """The `input_gradients` sink: scores[u, s] += weight * <delta_u, grad_s> for each gradient as it arrives.

    Memory: the deltas stay compact (`deltas.NodeDeltas`) and are expanded one position chunk at a time, the
    gradients of one chunk of heads live only during their contraction."""

    def __init__(self, graph: Graph, deltas, scores: torch.Tensor, weight: float, pos_chunk: int | None = None):
        self.graph, self.deltas, self.scores, self.weight, self.pos_chunk = graph, deltas, scores, weight, pos_chunk
        self.where = {(_grad_key(s), s.index): i for i, s in enumerate(graph.slots)}

    def __call__(self, key: tuple, grad: torch.Tensor, heads: list) -> None:
        keep = [c for c, h in enumerate(heads) if (key, h) in self.where]
        if not keep:
            return
        idx = [self.where[(key, heads[c])] for c in keep]
        if len(keep) < len(heads):  # gradient rows of heads the graph has no slot for
            grad = grad[keep]
        n = max(self.graph.n_up_of_slot[i] for i in idx)
        part = torch.zeros(n, len(idx), dtype=torch.float32, device=grad.device)
        for sl, d in self.deltas.pieces(n, self.pos_chunk):  # d: [n, batch * chunk * d_model]
            g = grad[:, :, sl].reshape(len(idx), -1).to(d.dtype)  # [slot, batch * chunk * d_model]
            part += (d @ g.T).float()
        part = part.cpu()
        for c, i in enumerate(idx):
            m = self.graph.n_up_of_slot[i]
            self.scores[:m, i] += self.weight * part[:m, c]

    def gradients(self, model, clean, metric: Callable, head_chunk: int | None = None, **kw) -> float:
        """One forward + backward of `input_gradients`, contracted as it goes; returns the metric value."""
        if head_chunk is None:
            head_chunk = default_head_chunk(*clean.shape, model.cfg.d_model)
        value, _ = input_gradients(model, clean, metric, mlp=self.graph.mlp, sink=self, head_chunk=head_chunk, **kw)
        return value


def check_chunk(value, name: str) -> None:
    """None or a positive int (positions / heads per chunk), else a ValueError naming the argument."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None (automatic), got {value!r}")


def default_head_chunk(batch: int, pos: int, d_model: int) -> int:
    """Heads per batched gradient pull-back: ~`GRAD_ELEMENTS` elements of [heads, batch, pos, d_model]."""
    return max(1, GRAD_ELEMENTS // (batch * pos * d_model))


def _contract(graph: Graph, delta: torch.Tensor, grads: dict, scores: torch.Tensor, weight: float) -> None:
    """scores[u, s] += weight * <delta_u, grad_s> for every edge; delta [n_up, batch*pos*d] and grads of
    `input_gradients` both materialised (AtP*'s path)."""
    sink = _Contractor(graph, DenseDeltas(delta), scores, weight)
    for key, g in grads.items():
        if key[0] in ("q", "k", "v"):
            sink(key, g, list(range(g.shape[0])))
        else:
            sink(key, g[None], [0])


def _grad_key(slot) -> tuple:
    if slot.kind in ("q", "k", "v"):
        return (slot.kind, slot.layer)
    if slot.kind == "mlp":
        return ("mlp", slot.layer)
    return ("logits",)


def _scores_init(graph: Graph) -> torch.Tensor:
    s = torch.zeros(graph.n_up, graph.n_slots)
    s[~graph.valid()] = float("nan")
    return s


def eap(model, graph: Graph, clean, metric: Callable, corrupt=None, ablation: str = "corrupted",
        ablated: torch.Tensor | None = None, pos_chunk: int | None = None,
        head_chunk: int | None = None) -> torch.Tensor:
    """Edge attribution patching: scores [n_up, n_slots] (NaN where no edge), in units of the metric.

    `ablated`: precomputed [batch, pos, n_up, d_model] ablated outputs (`patching.ablated_outputs`); without it the
    deltas stay compact (`deltas.node_deltas`), which is what keeps long inputs in memory. `pos_chunk`: positions
    per expanded delta chunk (default: ~`deltas.CHUNK_ELEMENTS` elements); `head_chunk`: heads per gradient pull-back
    (default: ~`GRAD_ELEMENTS` elements). Neither changes the result beyond floating-point summation order."""
    hooked_model_arg(model, "eap")
    graph = graph_arg(graph, model, "eap")
    check_chunk(pos_chunk, "pos_chunk")
    check_chunk(head_chunk, "head_chunk")
    deltas = node_deltas(model, graph, clean, corrupt, ablation, ablated)
    scores = _scores_init(graph)
    _Contractor(graph, deltas, scores, 1.0, pos_chunk).gradients(model, check_unpadded(clean), metric, head_chunk)
    return scores


def eap_reference(model, graph: Graph, clean, metric: Callable, corrupt=None, ablation: str = "corrupted",
                  seed: int = 0) -> torch.Tensor:
    """`eap` computed the direct way, for tests and memory comparisons: every delta [n_up, batch*pos*d_model] and
    every input gradient [n_slots, batch, pos, d_model] materialised at once, then one contraction."""
    hooked_model_arg(model, "eap_reference")
    graph = graph_arg(graph, model, "eap_reference")
    from interp.head_inputs import node_outputs

    from .patching import ablated_outputs, stack_outputs

    clean = check_unpadded(clean, "clean prompts")
    ablated = ablated_outputs(model, graph, clean, corrupt, ablation, seed)
    a_clean = stack_outputs(node_outputs(model, clean), graph)  # [batch, pos, n_up, d_model]
    delta = (ablated.to(a_clean.dtype) - a_clean).permute(2, 0, 1, 3).reshape(graph.n_up, -1)
    del ablated, a_clean
    _, grads = input_gradients(model, clean, metric, mlp=graph.mlp)
    scores = _scores_init(graph)
    _contract(graph, delta, grads, scores, 1.0)
    return scores


def _ig_inputs(model, graph, clean, corrupt, steps, ablated, no_corrupt: str):
    """Checked (clean, corrupt, deltas) for the integrated-gradient variants; `no_corrupt`: the error without one."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    clean = check_unpadded(clean, "clean prompts")
    if corrupt is None:
        raise ValueError(no_corrupt)
    corrupt = check_unpadded(corrupt, "corrupted prompts")
    check_aligned(clean, corrupt)
    return clean, corrupt, node_deltas(model, graph, clean, corrupt, "corrupted", ablated)


def eap_ig(model, graph: Graph, clean, metric: Callable, corrupt, steps: int = 5,
           ablated: torch.Tensor | None = None, pos_chunk: int | None = None,
           head_chunk: int | None = None) -> torch.Tensor:
    """EAP with integrated gradients over input embeddings interpolated from corrupt to clean (m = `steps`).
    `ablated`, `pos_chunk`, `head_chunk`: as in `eap`."""
    hooked_model_arg(model, "eap_ig")
    graph = graph_arg(graph, model, "eap_ig")
    check_chunk(pos_chunk, "pos_chunk")
    check_chunk(head_chunk, "head_chunk")
    clean, corrupt, deltas = _ig_inputs(model, graph, clean, corrupt, steps, ablated,
                                        "eap_ig needs corrupted prompts (it interpolates the input embeddings from "
                                        "corrupt to clean)")
    emb = {}
    for name, toks in (("clean", clean), ("corrupt", corrupt)):
        _, cache = model.run_with_cache(toks, names=["hook_embed"])
        emb[name] = cache["hook_embed"]
    scores = _scores_init(graph)
    sink = _Contractor(graph, deltas, scores, 1.0 / steps, pos_chunk)
    for k in range(steps):
        alpha = k / steps
        interp_emb = emb["corrupt"] + alpha * (emb["clean"] - emb["corrupt"])

        def embed_hook(t, hook, e=interp_emb):
            return e.detach().clone().requires_grad_(True)

        sink.gradients(model, clean, metric, head_chunk, embed_hook=embed_hook)
    return scores


def atp_heads(model, clean, metric: Callable, corrupt=None, ablation: str = "corrupted") -> torch.Tensor:
    """Node-level attribution patching for head outputs: [n_layers, n_heads] ~ M(head ablated) - M(clean).

    (z_ablated - z_clean) . dM/dz at the clean input, summed over batch, positions and d_head."""
    hooked_model_arg(model, "atp_heads")
    if ablation not in ("corrupted", "zero", "mean"):
        raise ValueError(f"atp_heads: ablation must be 'corrupted', 'zero' or 'mean', got {ablation!r}")
    clean = check_unpadded(clean, "clean prompts")
    if ablation == "corrupted":
        if corrupt is None:
            raise ValueError("atp_heads: ablation='corrupted' needs corrupted prompts")
        corrupt = check_unpadded(corrupt, "corrupted prompts")
        check_aligned(clean, corrupt)
    c = model.cfg
    names = [f"blocks.{l}.attn.hook_z" for l in range(c.n_layers)]
    _, cache, grads = model.run_with_cache(clean, names=names, grad_of=metric)
    if ablation == "corrupted":
        _, abl = model.run_with_cache(corrupt, names=names)
        base = {n: abl[n] for n in names}
    elif ablation == "zero":
        base = {n: torch.zeros_like(cache[n]) for n in names}
    else:
        base = {n: cache[n].mean(0, keepdim=True).expand_as(cache[n]) for n in names}
    out = torch.zeros(c.n_layers, c.n_heads)
    for l, n in enumerate(names):
        out[l] = ((base[n] - cache[n]) * grads[n]).sum((0, 1, 3)).float().cpu()
    return out


def eap_ig_act(model, graph: Graph, clean, metric: Callable, corrupt, steps: int = 5,
               ablated: torch.Tensor | None = None, pos_chunk: int | None = None,
               head_chunk: int | None = None) -> torch.Tensor:
    """EAP-IG over activations: scores [n_up, n_slots] ~ M(edge ablated) - M(clean) (NaN where no edge).

    For the edges out of one group of upstream nodes (the input; layer l's heads; MLP l), dM/d in_v is averaged over
    m = `steps` runs of the clean prompts in which that group's activations are alpha a_clean + (1 - alpha) a_corr,
    alpha = k/m, k = 1..m (the input at resid_pre of layer 0, heads at hook_z, MLPs at hook_mlp_out; everything
    downstream recomputed), then contracted with (a_u^corr - a_u^clean) as in EAP. steps=1 is EAP. Unlike EAP-IG's
    reference code, which averages every edge over every group's runs, each edge here integrates along its own
    upstream group's path only (runs that interpolate a later group cut paths through it from earlier edges).
    `ablated`, `pos_chunk`, `head_chunk`: as in `eap`.
    """
    hooked_model_arg(model, "eap_ig_act")
    graph = graph_arg(graph, model, "eap_ig_act")
    check_chunk(pos_chunk, "pos_chunk")
    check_chunk(head_chunk, "head_chunk")
    clean, corrupt, deltas = _ig_inputs(model, graph, clean, corrupt, steps, ablated,
                                       "eap_ig_act needs corrupted prompts (it interpolates activations from corrupt "
                                       "to clean)")
    groups = [("blocks.0.hook_resid_pre", [graph.up_index("input")])]
    for l in range(graph.n_layers):
        groups.append((f"blocks.{l}.attn.hook_z", [graph.up_index(f"L{l}H{h}") for h in range(graph.n_heads)]))
        if graph.mlp:
            groups.append((f"blocks.{l}.hook_mlp_out", [graph.up_index(f"MLP{l}")]))
    names = [g[0] for g in groups]
    acts = {}
    for which, toks in (("clean", clean), ("corrupt", corrupt)):
        _, cache = model.run_with_cache(toks, names=names)
        acts[which] = {n: cache[n] for n in names}
    scores = _scores_init(graph)
    for name, rows in groups:
        part = _scores_init(graph)
        sink = _Contractor(graph, deltas, part, 1.0 / steps, pos_chunk)
        for k in range(1, steps + 1):
            alpha = k / steps
            value = acts["corrupt"][name] + alpha * (acts["clean"][name] - acts["corrupt"][name])

            def hook(t, hook_, v=value):
                return v.to(t.dtype).detach().clone().requires_grad_(True)

            sink.gradients(model, clean, metric, head_chunk, fwd_hooks=[(name, hook)])
        scores[rows] = part[rows]
    return scores
