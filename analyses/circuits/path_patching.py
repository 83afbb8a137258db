"""Path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023) and exact q/k/v-input patching, on the masking core.

    from interp.analyses import circuits as C
    eff = C.path_patching(model, clean, corrupt, metric, senders=["L0H3"],
                          receivers=[("L1H0", "k"), ("L1H1", "k"), "logits"])      # [n_senders, n_receivers]

A path sender -> receiver input is one edge of the circuit graph (`graph.py`): the receiver's input (the query of a
head, the key or value of a KV head, an MLP, the logits) reads the sender's *corrupted* output while every other
node, and every other input, reads the clean run; whatever the receiver then writes propagates freely. This is the
TransformerLens-style two-pass recipe ("freeze everything except the path": pass 1 runs clean with the sender
corrupted and all other nodes frozen to clean, and records the receiver's input; pass 2 runs clean with that input
patched in), computed in one pass by `patching.masked_logits` with weight 1 on the path's edges. A sender or a
receiver may be a group (a list), patched jointly: every edge from the group of senders into the group of receivers.

Effects are M(path patched) - M(clean), the convention of `patching.edge_patching`; variants (sender x receiver
pairs) are batched in the batch dimension, `chunk` per forward. Pairs with no edge (a receiver at or before the
sender's layer) are NaN.

`input_patching`: exact patching of each head's q and each KV head's k / v input (all its incoming edges at once:
the input reads the corrupted residual stream), the reference for AtP and AtP*'s QK fix at the input level.
"""

from __future__ import annotations

from typing import Callable

import torch

from interp.head_inputs import check_unpadded
from interp.validate import hooked_model_arg

from .graph import Graph, graph_arg
from .patching import ablated_arg, ablated_outputs, base_metric, masked_logits, metric_arg, metric_of


def _as_group(x) -> list:
    return list(x) if isinstance(x, list) else [x]


def resolve_receiver(graph: Graph, r) -> list[int]:
    """Slot indices of a receiver: ("L1H0", "k") (a query head's KV head under GQA), ("L1KV0", "v"), "L1H0<q>",
    "MLP2", "logits", or ("L1H0", None) / "L1H0" for the head's q, k and v together."""
    if isinstance(r, tuple):
        if len(r) != 2:
            raise ValueError(f"a receiver is (node, kind) like ('L1H0', 'k'), got {r!r}")
        node, kind = r
        if not isinstance(node, str):
            raise TypeError(f"a receiver's node is a name like 'L1H0', 'L1KV0', 'MLP2' or 'logits', got "
                            f"{type(node).__name__} {node!r} in {r!r}")
    elif isinstance(r, str):
        node, kind = (r[:-1].split("<") if r.endswith(">") and "<" in r else (r, None))
    else:
        raise TypeError(f"a receiver is a str like 'L1H0<k>' / 'MLP2' / 'logits' or a (node, kind) tuple, got {r!r}")
    if kind not in (None, "q", "k", "v", "mlp", "logits"):
        raise ValueError(f"receiver kind must be 'q', 'k', 'v' (or None for all three), got {kind!r}")
    if node in ("logits",) or node.startswith("MLP"):
        return [graph.slot_index(node)]
    kinds = ("q", "k", "v") if kind is None else (kind,)
    out = []
    for k in kinds:
        name = node
        if k in ("k", "v") and graph.n_kv_heads != graph.n_heads and "H" in node and "KV" not in node:
            layer, head = _layer_head(graph, node)
            name = graph.kv_name(layer, head // (graph.n_heads // graph.n_kv_heads))
        out.append(graph.slot_index(name, k))
    return out


def _layer_head(graph: Graph, node: str) -> tuple[int, int]:
    try:
        layer, head = node[1:].split("H")
        layer, head = int(layer), int(head)
    except ValueError:
        raise ValueError(f"unknown head {node!r}; heads look like 'L1H0'") from None
    if not (0 <= layer < graph.n_layers and 0 <= head < graph.n_heads):
        raise ValueError(f"head {node!r} out of range (layers 0..{graph.n_layers - 1}, heads 0..{graph.n_heads - 1})")
    return layer, head


def path_weights(graph: Graph, senders: list, receivers: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge weights [n_senders * n_receivers, n_up, n_slots] of every (sender group, receiver group) pair, and a
    [n_senders, n_receivers] bool: True where the pair has at least one edge."""
    if not senders or not receivers:
        raise ValueError("path_patching needs at least one sender and one receiver")
    for name, groups in (("senders", senders), ("receivers", receivers)):
        empty = [i for i, x in enumerate(groups) if isinstance(x, list) and not x]
        if empty:
            raise ValueError(f"path_patching: {name}[{empty[0]}] is an empty group; a group (a list patched "
                             "jointly) needs at least one node")
    ups = [[graph.up_index(u) for u in _as_group(s)] for s in senders]
    slots = [[i for r in _as_group(rc) for i in resolve_receiver(graph, r)] for rc in receivers]
    valid = graph.valid()
    w = torch.zeros(len(ups), len(slots), graph.n_up, graph.n_slots)
    for i, us in enumerate(ups):
        for j, ss in enumerate(slots):
            w[i, j][torch.tensor(us)[:, None], torch.tensor(ss)[None, :]] = 1.0
    w = w * valid
    has = w.flatten(2).any(-1)
    return w.flatten(0, 1), has


def path_patching(model, clean, corrupt, metric: Callable, senders: list, receivers: list,
                  graph: Graph | None = None, ablation: str = "corrupted", ablated: torch.Tensor | None = None,
                  chunk: int = 16) -> torch.Tensor:
    """M(path sender -> receiver patched) - M(clean) for every (sender, receiver) pair: [n_senders, n_receivers].

    senders: node names ("input", "L0H3", "MLP1") or lists of them (a group patched jointly); receivers: see
    `resolve_receiver`, or lists of them. `ablation` ("corrupted", "mean", "zero", "resample") picks the sender's
    patched value (see `patching.ablated_outputs`); `ablated` passes precomputed ones.
    """
    where = "path_patching"
    hooked_model_arg(model, where)
    graph = graph_arg(graph, model, where)
    metric_arg(metric, where)
    for name, v in (("senders", senders), ("receivers", receivers)):
        # (a receiver may be a (layer, head, slot) tuple, so a bare tuple of receivers is ambiguous; senders are not)
        if isinstance(v, str) or (name == "receivers" and isinstance(v, tuple)) or not hasattr(v, "__iter__"):
            raise TypeError(f"{where}: {name} must be a list (of node names, or of lists of them patched jointly), "
                            f"e.g. {name}=[{v!r}], got {type(v).__name__} {v!r:.60}")
    senders, receivers = list(senders), list(receivers)
    w, has = path_weights(graph, senders, receivers)
    clean = check_unpadded(clean, "clean prompts")
    ablated_arg(ablated, clean, graph, where)
    if ablated is None:
        ablated = ablated_outputs(model, graph, clean, corrupt, ablation)
    base = base_metric(model, clean, metric, where)
    keep = has.flatten().nonzero().flatten()
    out = torch.full((len(senders) * len(receivers),), float("nan"))
    if len(keep):
        def label(i):
            k = int(keep[i])
            return f"the path {senders[k // len(receivers)]!r} -> {receivers[k % len(receivers)]!r}"

        vals = metric_of(masked_logits(model, graph, clean, ablated, w[keep].to(ablated.device), chunk=chunk), metric,
                         where, label)
        out[keep] = vals.float().cpu() - base
    return out.reshape(len(senders), len(receivers))


def input_patching(model, clean, corrupt, metric: Callable, graph: Graph | None = None,
                   ablation: str = "corrupted", ablated: torch.Tensor | None = None, chunk: int = 16) -> dict:
    """Exact patching of each head's q input and each KV head's k and v input (the input reads the ablated residual
    stream, every incoming edge at once): {"q": [n_layers, n_heads], "k"/"v": [n_layers, n_kv_heads]} of
    M(input patched) - M(clean)."""
    where = "input_patching"
    hooked_model_arg(model, where)
    graph = graph_arg(graph, model, where)
    metric_arg(metric, where)
    clean = check_unpadded(clean, "clean prompts")
    ablated_arg(ablated, clean, graph, where)
    if ablated is None:
        ablated = ablated_outputs(model, graph, clean, corrupt, ablation)
    idx = [i for i, s in enumerate(graph.slots) if s.kind in ("q", "k", "v")]
    valid = graph.valid()
    w = torch.zeros(len(idx), graph.n_up, graph.n_slots)
    for r, i in enumerate(idx):
        w[r, :, i] = valid[:, i].float()
    base = base_metric(model, clean, metric, where)
    vals = metric_of(masked_logits(model, graph, clean, ablated, w.to(ablated.device), chunk=chunk), metric, where,
                     lambda r: f"input {graph.slots[idx[r]].name} patched")
    out = {"q": torch.zeros(graph.n_layers, graph.n_heads), "k": torch.zeros(graph.n_layers, graph.n_kv_heads),
           "v": torch.zeros(graph.n_layers, graph.n_kv_heads)}
    for r, i in enumerate(idx):
        s = graph.slots[i]
        out[s.kind][s.layer, s.index] = float(vals[r]) - base
    return out
