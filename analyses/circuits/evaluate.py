"""A `Circuit` (scored graph + chosen edges), selection pruned to a connected graph, and faithfulness (MIB CPR/CMD).

    f(C) = (M(C) - M(empty)) / (M(full) - M(empty))

M(C) runs the clean prompts with every edge outside C ablated (`patching.masked_logits`, weights 1 outside C);
M(empty) ablates every edge (= the corrupted run under 'corrupted' ablation), M(full) is the clean model.
The curve is taken at 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100 % of the edges (top-|score|); CPR is the area under
f and CMD the area under |1 - f| (trapezoid over the edge fraction, MIB's convention), so CPR is higher-better and
CMD lower-better.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from interp.input_checks import bool_arg
from interp.validate import fraction_list, int_arg, real_arg

from .graph import Graph, graph_arg
from .patching import masked_logits, metric_arg, metric_of

FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass
class Circuit:
    graph: Graph
    scores: torch.Tensor  # [n_up, n_slots], NaN where no edge
    method: str = ""
    in_circuit: torch.Tensor | None = None  # [n_up, n_slots] bool
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.graph, Graph):
            raise TypeError(f"Circuit.graph must be a circuits Graph (Graph.from_model(model)), got "
                            f"{type(self.graph).__name__}")
        shape = (self.graph.n_up, self.graph.n_slots)
        if not isinstance(self.scores, torch.Tensor):
            raise TypeError(f"Circuit.scores must be a tensor {list(shape)} (upstream nodes x inputs, NaN where no "
                            f"edge), got {type(self.scores).__name__}")
        if tuple(self.scores.shape) != shape:
            raise ValueError(f"Circuit.scores must be {list(shape)} for this graph, got {tuple(self.scores.shape)}")
        if self.in_circuit is None:
            self.in_circuit = torch.zeros(shape, dtype=torch.bool)
        elif not isinstance(self.in_circuit, torch.Tensor):
            raise TypeError(f"Circuit.in_circuit must be a bool tensor {list(shape)} (the kept edges) or None, got "
                            f"{type(self.in_circuit).__name__}")
        elif tuple(self.in_circuit.shape) != shape:
            raise ValueError(f"Circuit.in_circuit must be {list(shape)} for this graph (like scores), got "
                             f"{tuple(self.in_circuit.shape)}")
        else:
            self.in_circuit = self.in_circuit.bool()
        if not isinstance(self.method, str):
            raise TypeError(f"Circuit.method must be a str (the method's name, e.g. 'eap'), got "
                            f"{type(self.method).__name__} {self.method!r:.60}")
        if not isinstance(self.meta, dict):
            raise TypeError(f"Circuit.meta must be a dict, got {type(self.meta).__name__} {self.meta!r:.60}")

    # ------------------------------------------------------------------ selection
    def select(self, top_n: int | None = None, threshold: float | None = None, method: str = "topn",
               absolute: bool = True, prune: bool = True) -> "Circuit":
        """Choose edges: `top_n` highest |score| (method "topn"), every |score| >= `threshold`, or "greedy"
        (grow from the logits, always adding the best edge into a node already in the circuit); then prune to
        edges on a path input -> logits. Returns self."""
        if method not in ("topn", "greedy"):
            raise ValueError(f"selection method must be 'topn' or 'greedy', got {method!r}")
        bool_arg("absolute", absolute, "Circuit.select")
        bool_arg("prune", prune, "Circuit.select")
        if (top_n is None) == (threshold is None):
            raise ValueError("give exactly one of top_n (int) or threshold (float)")
        if method == "greedy" and threshold is not None:
            raise ValueError("Circuit.select: method 'greedy' grows a circuit of top_n edges from the logits; it "
                             "takes top_n, not threshold (threshold selects with method 'topn')")
        s = self._rank_scores(absolute)
        if threshold is not None:
            threshold = real_arg("threshold", threshold, where="Circuit.select")
            chosen = s >= threshold
        else:
            if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0:
                raise ValueError(f"top_n must be a non-negative int, got {top_n!r}")
            chosen = greedy(self.graph, s, top_n) if method == "greedy" else top_edges(s, top_n)
        self.in_circuit = prune_to_connected(self.graph, chosen) if prune else chosen
        return self

    def _rank_scores(self, absolute: bool) -> torch.Tensor:
        s = self.scores.abs() if absolute else self.scores.clone()
        return torch.nan_to_num(s, nan=-math.inf)

    @property
    def n_edges(self) -> int:
        return int(self.in_circuit.sum())

    def nodes_in_circuit(self) -> list[str]:
        idx = self.in_circuit.nonzero().tolist()
        names = {self.graph.up[u] for u, _ in idx} | {self.graph.slots[s].node for _, s in idx}
        return [n for n in self.graph.nodes if n in names]

    def edges(self) -> list[dict]:
        """One dict per edge of the graph: src, dst, dst_input, score, in_circuit (sorted by |score|)."""
        idx = self.graph.edge_index()
        rows = []
        for (u, s) in idx.tolist():
            sl = self.graph.slots[s]
            rows.append({"src": self.graph.up[u], "dst": sl.node, "dst_input": sl.kind,
                         "score": float(self.scores[u, s]), "in_circuit": bool(self.in_circuit[u, s])})
        rows.sort(key=lambda r: -abs(r["score"]) if not math.isnan(r["score"]) else 0.0)
        return rows


def top_edges(rank: torch.Tensor, n: int) -> torch.Tensor:
    flat = rank.flatten()
    n = min(n, int(torch.isfinite(flat).sum()))
    out = torch.zeros_like(flat, dtype=torch.bool)
    if n:
        out[flat.topk(n).indices] = True
    return out.reshape(rank.shape)


def _heads_of_slot(graph: Graph, slot) -> list[str]:
    """The upstream (output) nodes that an input slot feeds: a head, a KV group's heads, an MLP, or logits."""
    if slot.kind == "q":
        return [slot.node]
    if slot.kind in ("k", "v"):
        g = graph.n_heads // graph.n_kv_heads
        return [f"L{slot.layer}H{h}" for h in range(slot.index * g, (slot.index + 1) * g)]
    return [slot.node]


def prune_to_connected(graph: Graph, chosen: torch.Tensor) -> torch.Tensor:
    """Keep the chosen edges that lie on some chosen path from `input` to `logits`."""
    reached = {"input"}
    # forward, in slot order (= forward order): a node is reached if a chosen edge from a reached node feeds it
    for s, slot in enumerate(graph.slots):
        srcs = chosen[:, s].nonzero().flatten().tolist()
        if any(graph.up[u] in reached for u in srcs):
            reached.update(_heads_of_slot(graph, slot))
    useful = {"logits"}
    keep = torch.zeros_like(chosen)
    for s in reversed(range(graph.n_slots)):
        slot = graph.slots[s]
        if not any(n in useful for n in _heads_of_slot(graph, slot)):
            continue
        for u in chosen[:, s].nonzero().flatten().tolist():
            if graph.up[u] in reached:
                keep[u, s] = True
                useful.add(graph.up[u])
    return keep


def greedy(graph: Graph, rank: torch.Tensor, n: int) -> torch.Tensor:
    """Grow from the logits: repeatedly add the best-ranked edge into a slot whose node is already in."""
    chosen = torch.zeros_like(rank, dtype=torch.bool)
    inside = {"logits"}
    slot_open = torch.tensor([any(h in inside for h in _heads_of_slot(graph, sl)) for sl in graph.slots])
    r = rank.clone()
    for _ in range(n):
        cand = torch.where(slot_open[None, :] & ~chosen, r, torch.full_like(r, -math.inf))
        best = int(cand.flatten().argmax())
        if not math.isfinite(float(cand.flatten()[best])):
            break
        u, s = divmod(best, rank.shape[1])
        chosen[u, s] = True
        src = graph.up[u]
        if src not in inside:
            inside.add(src)
            for j, sl in enumerate(graph.slots):
                if src in _heads_of_slot(graph, sl):
                    slot_open[j] = True
    return chosen


def faithfulness(model, graph: Graph, clean, ablated: torch.Tensor, metric: Callable, circuits: list,
                 chunk: int = 4) -> dict:
    """f for each circuit (a [n_up, n_slots] bool mask of kept edges); also M(full) and M(empty)."""
    int_arg("chunk", chunk, minimum=1, where="faithfulness")
    metric_arg(metric, "faithfulness")
    graph = graph_arg(graph, model, "faithfulness")
    shape = (graph.n_up, graph.n_slots)
    if isinstance(circuits, torch.Tensor) or not isinstance(circuits, (list, tuple)):
        raise TypeError(f"faithfulness: circuits must be a list of {list(shape)} bool masks (Circuit.in_circuit), "
                        f"got {type(circuits).__name__}" + (" (wrap one mask in a list)"
                                                            if isinstance(circuits, torch.Tensor) else ""))
    for i, c in enumerate(circuits):
        if not isinstance(c, torch.Tensor) or tuple(c.shape) != shape:
            got = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
            raise ValueError(f"faithfulness: circuits[{i}] must be a {list(shape)} bool mask of kept edges "
                             f"(upstream nodes x inputs of this graph), got {got}")
    valid = graph.valid()
    w = [torch.zeros(graph.n_up, graph.n_slots), valid.float()]  # full model, empty circuit
    w += [(valid & ~c.bool()).float() for c in circuits]
    names = ["the full model", "the empty circuit"] + [f"circuit {i}" for i in range(len(w) - 2)]
    vals = metric_of(masked_logits(model, graph, clean, ablated, torch.stack(w), chunk=chunk), metric, "faithfulness",
                     names.__getitem__).float()
    full, empty = float(vals[0]), float(vals[1])
    denom = full - empty
    f = [(float(v) - empty) / denom if denom != 0 else float("nan") for v in vals[2:]]
    return {"full": full, "empty": empty, "metric": [float(v) for v in vals[2:]], "f": f}


def faithfulness_curve(model, circuit: Circuit, clean, ablated: torch.Tensor, metric: Callable,
                       fractions=FRACTIONS, chunk: int = 4, prune: bool = False) -> dict:
    """f at each fraction of the edges (top-|score|, fractions in (0, 1]), and the CPR / CMD areas."""
    if not isinstance(circuit, Circuit):
        raise TypeError(f"faithfulness_curve: circuit must be a Circuit, got {type(circuit).__name__}")
    bool_arg("prune", prune, "faithfulness_curve")
    fractions = fraction_list("fractions", fractions, low_open=True, high_open=False,
                              meaning="fractions of the edges kept", example=FRACTIONS, where="faithfulness_curve")
    _increasing("fractions", fractions, "faithfulness_curve")
    rank = circuit._rank_scores(True)
    n_total = circuit.graph.n_edges
    masks, counts = [], []
    for fr in fractions:
        n = max(1, math.ceil(fr * n_total))
        m = top_edges(rank, n)
        masks.append(prune_to_connected(circuit.graph, m) if prune else m)
        counts.append(int(masks[-1].sum()))
    res = faithfulness(model, circuit.graph, clean, ablated, metric, masks, chunk=chunk)
    res.update(fractions=list(fractions), n_edges=counts, **areas(list(fractions), res["f"]))
    return res


def areas(fractions: list, f: list) -> dict:
    """CPR = area under f, CMD = area under |1 - f| (trapezoid over the edge fraction, normalised by its span).
    `fractions`: increasing edge fractions; `f`: the faithfulness at each (one number per fraction)."""
    fractions, f = (v.tolist() if isinstance(v, (torch.Tensor, np.ndarray)) and v.ndim == 1 else v
                    for v in (fractions, f))  # 1-D arrays and tensors, as faithfulness_curve takes
    for name, v in (("fractions", fractions), ("f", f)):
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, numbers.Real) and not isinstance(x, bool)
                                                       for x in v):
            raise TypeError(f"areas: {name} must be a list of numbers, got {type(v).__name__} {v!r:.60}")
    if not fractions or len(fractions) != len(f):
        raise ValueError(f"areas: fractions and f must be non-empty lists of one length (f at each fraction), got "
                         f"{len(fractions)} fractions and {len(f)} values of f")
    _increasing("fractions", fractions, "areas")
    x = torch.tensor(fractions, dtype=torch.float64)
    y = torch.tensor(f, dtype=torch.float64)
    span = float(x[-1] - x[0]) or 1.0
    return {"cpr": float(torch.trapezoid(y, x)) / span, "cmd": float(torch.trapezoid((1 - y).abs(), x)) / span}


def _increasing(name: str, xs, where: str) -> None:
    """The x axis of a curve: strictly increasing (a repeated or out-of-order value would give a wrong area)."""
    bad = next((i for i in range(1, len(xs)) if not xs[i] > xs[i - 1]), None)
    if bad is not None:
        raise ValueError(f"{where}: {name} must be strictly increasing (the x axis of the curve), got {list(xs)}: "
                         f"{name}[{bad}] = {xs[bad]} does not exceed {xs[bad - 1]}")


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of |scores| against a known set of edges (valid edges only; ties count half)."""
    _same_shape("roc_auc", "scores", scores, "positive", positive)
    valid = torch.isfinite(scores)
    s, y = scores[valid].abs().double(), positive[valid].bool()
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("roc_auc needs at least one positive and one negative edge")
    gt = (pos[:, None] > neg[None, :]).double().mean()
    eq = (pos[:, None] == neg[None, :]).double().mean()
    return float(gt + 0.5 * eq)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation over the entries finite in both (average ranks for ties); NaN where fewer than two are
    (a layer-0 receiver has one upstream edge: no correlation to speak of, and a sweep over receivers goes on)."""
    _same_shape("spearman", "a", a, "b", b)
    ok = torch.isfinite(a) & torch.isfinite(b)
    if int(ok.sum()) < 2:
        return float("nan")
    ra, rb = _rank(a[ok].double()), _rank(b[ok].double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def _same_shape(where: str, na: str, a, nb: str, b) -> None:
    for name, t in ((na, a), (nb, b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{where}: {name} must be a tensor, got {type(t).__name__}")
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{where}: {na} {tuple(a.shape)} and {nb} {tuple(b.shape)} must have one shape (one entry "
                         "per edge / node, in the same order)")


def _rank(x: torch.Tensor) -> torch.Tensor:
    order = x.argsort()
    r = torch.empty_like(x)
    r[order] = torch.arange(len(x), dtype=x.dtype)
    # average ties
    uniq, inv = torch.unique(x, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=x.dtype).index_add_(0, inv, r)
    cnt = torch.zeros(len(uniq), dtype=x.dtype).index_add_(0, inv, torch.ones_like(r))
    return (sums / cnt)[inv]
