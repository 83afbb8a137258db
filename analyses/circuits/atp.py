"""AtP* (Kramar et al. 2024): attribution patching with the QK fix and GradDrop, per node and per edge.

Plain AtP estimates the effect of patching an activation a (clean -> corrupted) by (a_corr - a_clean) . dM/da at the
clean input. Two failure modes, two fixes:

- **QK fix.** A query or key moves the scores through a softmax; at a saturated pattern dM/dq and dM/dk vanish and
  AtP misses large effects. AtP* recomputes the head's attention exactly with the patched q (or k) and clean
  everything else, z' = softmax(q' k^T) V, and keeps the linear approximation only after the softmax:
  (z' - z) . dM/dz. Values need no fix (z is linear in v). Here z' comes from the model's own attention call (hooks
  replace q/k/v by cached tensors and read hook_z), so RoPE, GQA, scales and sliding windows are the model's.
- **GradDrop.** Cancellation between a node's direct and indirect effects can zero its gradient. For each layer l,
  AtP is repeated with the gradient through layer l's residual contribution (its attention and MLP outputs)
  dropped; the estimate is the mean of the magnitudes over the layers other than the node's own (whose drop zeroes
  it): c = 1/(L-1) sum_{l != layer(n)} |c_l(n)| (for the logits input, the mean over all L layers). GradDrop
  scores are magnitudes (>= 0), for ranking; L extra forward + backward passes.

Entry points: `atp_nodes` (head outputs and q / k / v inputs, node level) and `atp_star` (every edge of a `Graph`:
EAP with the QK fix on q / k inputs, then GradDrop; `qk_fix=False, graddrop=False` is EAP itself). The exact
references are `patching.head_patching`, `path_patching.input_patching` and `patching.edge_patching`.
"""

from __future__ import annotations

from typing import Callable

import torch

from interp.head_inputs import check_unpadded, node_outputs
from interp.input_gradients import input_gradients
from interp.input_checks import bool_arg
from interp.stages import Intervention
from interp.validate import hooked_model_arg, int_arg

from .attribution import _contract, _scores_init
from .graph import Graph, graph_arg
from .patching import ablated_outputs, check_aligned, metric_arg, stack_outputs


class _ZeroGrad(torch.autograd.Function):
    """Identity forward; zero gradient backward (the output still requires grad, so hooks downstream work)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.zeros_like(g)


class DropLayerGrad(Intervention):
    """Forward unchanged; no gradient flows back through layer `layer`'s attention and MLP outputs (GradDrop)."""

    stages = ("attn_out", "mlp_out")

    def __init__(self, layer: int):
        self.layer = layer

    def validate(self, n_layers: int, n_heads: int) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or not 0 <= self.layer < n_layers:
            raise ValueError(f"DropLayerGrad: layer must be an int in 0..{n_layers - 1}, got {self.layer!r}")

    def resid(self, stage, x, layer, valid):
        return _ZeroGrad.apply(x) if x.requires_grad else x


def _drops(n_layers: int, graddrop: bool) -> list:
    return [None] + (list(range(n_layers)) if graddrop else [])


def _ivs(drop) -> list:
    return [] if drop is None else [DropLayerGrad(drop)]


def _combine(est: list, layer_of: torch.Tensor, n_layers: int, graddrop: bool) -> torch.Tensor:
    """est[0] (no drop) when not graddrop, else mean_{l != layer_of} |est[1 + l]| (element-wise layer_of)."""
    if not graddrop:
        return est[0]
    stack = torch.stack(est[1:]).abs()  # [L, ...]
    own = torch.arange(n_layers).reshape(-1, *([1] * layer_of.dim())) == layer_of[None]
    stack = stack.masked_fill(own, 0.0)
    n = (~own).sum(0).clamp_min(1)
    return stack.nan_to_num(0.0).sum(0) / n + (est[0] * 0)  # keeps the NaN of est[0] where there is no edge


def _names(n_layers: int, kinds: str) -> list[str]:
    return [f"blocks.{l}.attn.hook_{x}" for l in range(n_layers) for x in kinds]


def patched_z(model, tokens, fixed: dict, patched: dict) -> dict:
    """hook_z of every layer in a run where each layer's q, k, v are replaced: the `patched` ones ({name: tensor})
    win over the `fixed` ones. Each layer's z then depends on the given q/k/v only: {layer: z [batch, pos, head,
    d_head]}."""
    got = {}

    def put(t, hook):
        src = patched.get(hook.name, fixed.get(hook.name))
        return None if src is None else src.to(t.dtype)

    def grab(t, hook):
        got[hook.name] = t.detach()

    names = sorted(set(fixed) | set(patched))
    n = model.cfg.n_layers
    hooks = [(nm, put) for nm in names] + [(f"blocks.{l}.attn.hook_z", grab) for l in range(n)]
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks)
    return {l: got[f"blocks.{l}.attn.hook_z"] for l in range(n)}


def atp_nodes(model, clean, corrupt, metric: Callable, qk_fix: bool = True, graddrop: bool = False) -> dict:
    """Node-level AtP / AtP*: {"head": [n_layers, n_heads] (head outputs), "q": [n_layers, n_heads],
    "k", "v": [n_layers, n_kv_heads] (inputs)} ~ M(node patched to its corrupted value) - M(clean).

    `qk_fix`: q and k through the exact softmax (AtP*), else linear in q/k (AtP). `graddrop`: GradDrop magnitudes.
    """
    hooked_model_arg(model, "atp_nodes")
    bool_arg("qk_fix", qk_fix, "atp_nodes")
    bool_arg("graddrop", graddrop, "atp_nodes")
    metric_arg(metric, "atp_nodes")
    clean = check_unpadded(clean, "clean prompts")
    corrupt = check_unpadded(corrupt, "corrupted prompts")
    check_aligned(clean, corrupt)
    c = model.cfg
    L, H, KV = c.n_layers, c.n_heads, c.n_kv_heads
    names = _names(L, "qkvz")
    _, cc = model.run_with_cache(corrupt, names=names)
    runs = []
    for drop in _drops(L, graddrop):
        _, cache, grads = model.run_with_cache(clean, names=names, grad_of=metric, interventions=_ivs(drop))
        runs.append(grads)
        if drop is None:
            clean_cache = cache
    zc = {l: clean_cache[f"blocks.{l}.attn.hook_z"] for l in range(L)}
    dz = {}
    if qk_fix:
        fixed = {n: clean_cache[n] for n in _names(L, "qkv")}
        for x in "qk":
            pz = patched_z(model, clean, fixed, {n: cc[n] for n in _names(L, x)})
            dz[x] = {l: (pz[l] - zc[l]).float() for l in range(L)}

    def dot(a, g):  # sum over batch, pos, d_head -> [head]
        return (a.float() * g.float()).sum((0, 1, 3))

    def group(per_head):  # [H] -> [KV]
        return per_head.reshape(KV, H // KV).sum(1)

    est = {k: [] for k in ("head", "q", "k", "v")}
    for g in runs:
        out = {"head": torch.zeros(L, H), "q": torch.zeros(L, H), "k": torch.zeros(L, KV), "v": torch.zeros(L, KV)}
        for l in range(L):
            z, gz = f"blocks.{l}.attn.hook_z", g[f"blocks.{l}.attn.hook_z"]
            out["head"][l] = dot(cc[z] - clean_cache[z], gz).cpu()
            for x in "qkv":
                n = f"blocks.{l}.attn.hook_{x}"
                if qk_fix and x in "qk":
                    per_head = dot(dz[x][l], gz)
                    val = per_head if x == "q" else group(per_head)
                else:
                    val = dot(cc[n] - clean_cache[n], g[n])
                out[x][l] = val.cpu()
        for k in est:
            est[k].append(out[k])
    res = {}
    for k, e in est.items():
        layer_of = torch.arange(L)[:, None].expand_as(e[0])
        res[k] = _combine(e, layer_of, L, graddrop)
    return res


def _slot_layers(graph: Graph) -> torch.Tensor:
    """[n_up, n_slots] the layer of each slot's node (n_layers for the logits)."""
    return torch.tensor([s.layer for s in graph.slots])[None, :].expand(graph.n_up, graph.n_slots)


def atp_star(model, graph: Graph, clean, metric: Callable, corrupt=None, ablation: str = "corrupted",
             ablated: torch.Tensor | None = None, qk_fix: bool = True, graddrop: bool = True,
             chunk: int = 16) -> torch.Tensor:
    """Edge-level AtP*: scores [n_up, n_slots] (NaN where no edge).

    EAP's (a_u^ablated - a_u^clean) . dM/d in_v on every edge; with `qk_fix`, an edge into a query (key) input is
    scored by recomputing that head's (KV group's) attention with the query (key) read from the clean residual
    plus the edge's delta, (z' - z) . dM/dz; with `graddrop`, the GradDrop magnitudes. `chunk`: upstream nodes per
    forward of the QK fix (the batch grows `chunk`-fold).
    """
    hooked_model_arg(model, "atp_star")
    graph = graph_arg(graph, model, "atp_star")
    bool_arg("qk_fix", qk_fix, "atp_star")
    bool_arg("graddrop", graddrop, "atp_star")
    int_arg("chunk", chunk, minimum=1, where="atp_star")
    metric_arg(metric, "atp_star")
    clean = check_unpadded(clean, "clean prompts")
    if ablated is None:
        ablated = ablated_outputs(model, graph, clean, corrupt, ablation)
    L = graph.n_layers
    a_clean = stack_outputs(node_outputs(model, clean), graph)  # [batch, pos, n_up, d_model]
    d4 = ablated.to(a_clean.dtype) - a_clean
    delta = d4.permute(2, 0, 1, 3).reshape(graph.n_up, -1)
    drops = _drops(L, graddrop)
    est, gz = [], []
    for drop in drops:
        _, grads = input_gradients(model, clean, metric, mlp=graph.mlp, interventions=_ivs(drop))
        s = _scores_init(graph)
        _contract(graph, delta, grads, s, 1.0)
        est.append(s)
        if qk_fix:
            _, _, g = model.run_with_cache(clean, names=_names(L, "z"), grad_of=metric, interventions=_ivs(drop))
            gz.append({l: g[f"blocks.{l}.attn.hook_z"].float() for l in range(L)})
    if qk_fix:
        _qk_fix(model, graph, clean, d4, gz, est, chunk)
    return _combine(est, _slot_layers(graph), L, graddrop)


def _qk_fix(model, graph: Graph, clean, d4: torch.Tensor, gz: list, est: list, chunk: int) -> None:
    """Overwrite the q / k slot scores of every run in `est` with the softmax-exact estimate."""
    L, H, KV = graph.n_layers, graph.n_heads, graph.n_kv_heads
    names = _names(L, "qkvz") + [f"blocks.{l}.hook_resid_pre" for l in range(L)]
    _, cache = model.run_with_cache(clean, names=names)
    b, p = clean.shape
    qk_slots = [i for i, s in enumerate(graph.slots) if s.kind in ("q", "k")]
    n_src = max(graph.n_up_of_slot[i] for i in qk_slots)  # upstream nodes that feed some q / k input
    valid = graph.valid()
    where = {}  # (kind, layer) -> (slot indices, head / KV-head index of each)
    for j in qk_slots:
        s = graph.slots[j]
        js, idx = where.setdefault((s.kind, s.layer), ([], []))
        js.append(j)
        idx.append(s.index)
    for s0 in range(0, n_src, max(1, chunk)):
        us = torch.arange(s0, min(n_src, s0 + chunk))
        c = len(us)
        rows = clean.repeat(c, 1)
        fixed = {n: cache[n].repeat(c, 1, 1, 1) for n in _names(L, "qkv")}
        for x in "qk":
            z = _delta_run(model, rows, cache, d4[:, :, us.to(d4.device)], fixed, x, L)
            for l in range(L):
                js, idx = (torch.tensor(t) for t in where[(x, l)])
                ok = valid[us][:, js]  # [c, n_slots of this layer and kind]
                if not bool(ok.any()):
                    continue
                dz = z[l].reshape(c, b, p, H, -1).float() - cache[f"blocks.{l}.attn.hook_z"].float()[None]
                for r, g in zip(est, gz):
                    per = torch.einsum("ubphd,bphd->uh", dz, g[l]).cpu()  # [c, head]
                    if x == "k":
                        per = per.reshape(c, KV, H // KV).sum(2)
                    cur = r[us[:, None], js[None, :]]
                    r[us[:, None], js[None, :]] = torch.where(ok, per[:, idx], cur)


def _delta_run(model, rows, cache, d, fixed, kind: str, n_layers: int) -> dict:
    """hook_z of every layer when layer l's q (kind 'q') or k ('k') is computed from resid_pre_l + delta of one
    upstream node per variant, everything else clean. d: [batch, pos, c, d_model] -> {layer: z [c*batch, ...]}."""
    c = d.shape[2]
    flat = d.permute(2, 0, 1, 3).reshape(c * d.shape[0], d.shape[1], -1)
    other = {"q": "kv", "k": "qv"}[kind]
    got = {}

    def resid(t, hook):
        return (cache[hook.name].repeat(c, 1, 1) + flat).to(t.dtype)

    def put(t, hook):
        return fixed[hook.name].to(t.dtype)

    def grab(t, hook):
        got[hook.layer] = t.detach()

    hooks = [(f"blocks.{l}.hook_resid_pre", resid) for l in range(n_layers)]
    hooks += [(f"blocks.{l}.attn.hook_{x}", put) for l in range(n_layers) for x in other]
    hooks += [(f"blocks.{l}.attn.hook_z", grab) for l in range(n_layers)]
    with torch.no_grad():
        model.run_with_hooks(rows, fwd_hooks=hooks)
    return got
