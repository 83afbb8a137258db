"""The computational graph of a transformer as circuits see it: nodes write to and read from the residual stream.

Upstream (output) nodes, in forward order: `input`, then per layer its heads `L{l}H{h}` and its MLP `MLP{l}`.
Downstream inputs ("slots"), per layer: the query of each head (`L{l}H{h}`, q), the key and value of each KV head
(`L{l}H{h}` when every head has its own KV head, `L{l}KV{j}` under GQA/MQA), the MLP (`MLP{l}`), and finally
`logits`. An edge joins an upstream node to a slot of a later node (an MLP also reads the heads of its own layer).
Attention-only models (the toys) have no MLP nodes. Edge counts: toy-induction 81, Gemma 3 270M 5,644,
SmolLM2-135M 70,651 (the EAP-IG formula with k/v at KV-head granularity).

Scores live in a dense matrix `[n_up, n_slots]` with NaN where there is no edge (`Graph.valid`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from interp.input_checks import bool_arg


@dataclass(frozen=True)
class Slot:
    node: str  # "L3H2", "L3KV1", "MLP3", "logits"
    kind: str  # "q" | "k" | "v" | "mlp" | "logits"
    layer: int  # n_layers for logits
    index: int  # head / KV-head index (q / k / v), 0 otherwise

    @property
    def key(self) -> tuple:
        """The InputPatch / input_gradients slot key."""
        return (self.kind, self.index) if self.kind in "qkv" else (self.kind,)

    @property
    def name(self) -> str:
        return f"{self.node}<{self.kind}>" if self.kind in ("q", "k", "v") else self.node


@dataclass
class Graph:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    mlp: bool
    model_name: str = ""
    up: list = field(default_factory=list)  # upstream node names in forward order
    slots: list = field(default_factory=list)  # [Slot]
    n_up_of_slot: list = field(default_factory=list)  # how many upstream nodes (a prefix of `up`) each slot reads

    @classmethod
    def from_config(cls, n_layers: int, n_heads: int, n_kv_heads: int, mlp: bool = True, model_name: str = ""):
        for what, v in (("n_layers", n_layers), ("n_heads", n_heads), ("n_kv_heads", n_kv_heads)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Graph: {what} must be a positive int, got {v!r}")
        mlp = bool_arg("mlp", bool(mlp) if isinstance(mlp, np.bool_) else mlp, "Graph")
        if n_heads % n_kv_heads:
            raise ValueError(f"Graph: n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        g = cls(n_layers, n_heads, n_kv_heads, mlp, model_name)
        g.up = ["input"]
        for l in range(n_layers):
            n_before = len(g.up)
            for h in range(n_heads):
                g._add_slot(Slot(f"L{l}H{h}", "q", l, h), n_before)
            for kind in ("k", "v"):
                for j in range(n_kv_heads):
                    g._add_slot(Slot(g.kv_name(l, j), kind, l, j), n_before)
            g.up += [f"L{l}H{h}" for h in range(n_heads)]
            if mlp:
                g._add_slot(Slot(f"MLP{l}", "mlp", l, 0), len(g.up))
                g.up.append(f"MLP{l}")
        g._add_slot(Slot("logits", "logits", n_layers, 0), len(g.up))
        return g

    @classmethod
    def from_model(cls, model, mlp: bool | None = None):
        """The graph of a wrapped model; `mlp=None` detects attention-only models (MLP outputs all zero)."""
        c = model.cfg
        if mlp is not None and not isinstance(mlp, bool):
            raise TypeError(f"Graph.from_model: mlp must be True, False or None (detect), got {type(mlp).__name__} "
                            f"{mlp!r:.40}")
        if mlp is None:
            mlp = not _mlp_is_zero(model)
        return cls.from_config(c.n_layers, c.n_heads, c.n_kv_heads, mlp, model.name)

    def _add_slot(self, slot: Slot, n_up: int) -> None:
        self.slots.append(slot)
        self.n_up_of_slot.append(n_up)

    # ------------------------------------------------------------------ naming
    def kv_name(self, layer: int, j: int) -> str:
        return f"L{layer}H{j}" if self.n_kv_heads == self.n_heads else f"L{layer}KV{j}"

    @property
    def n_up(self) -> int:
        return len(self.up)

    @property
    def n_slots(self) -> int:
        return len(self.slots)

    @property
    def n_edges(self) -> int:
        return sum(self.n_up_of_slot)

    @property
    def nodes(self) -> list[str]:
        """Every node once: input, heads, KV heads (GQA), MLPs, logits."""
        seen = dict.fromkeys(self.up)
        for s in self.slots:
            seen.setdefault(s.node)
        return list(seen)

    def valid(self) -> torch.Tensor:
        """[n_up, n_slots] bool: True where an edge exists."""
        v = torch.zeros(self.n_up, self.n_slots, dtype=torch.bool)
        for j, n in enumerate(self.n_up_of_slot):
            v[:n, j] = True
        return v

    def up_index(self, name: str) -> int:
        try:
            return self._up_idx[name]
        except AttributeError:
            self._up_idx = {n: i for i, n in enumerate(self.up)}
            return self.up_index(name)
        except KeyError:
            raise ValueError(f"unknown upstream node {name!r}; nodes look like 'input', 'L0H3', 'MLP2' "
                             f"(layers 0..{self.n_layers - 1}, heads 0..{self.n_heads - 1}"
                             f"{'' if self.mlp else ', no MLP nodes in this attention-only model'})") from None

    def slot_index(self, node: str, kind: str | None = None) -> int:
        """Index of a downstream input: ("L1H2", "q"), ("MLP3", None), ("logits", None), or "L1H2<q>"."""
        if kind is None and node.endswith(">") and "<" in node:
            node, kind = node[:-1].split("<")
        for i, s in enumerate(self.slots):
            if s.node == node and (kind is None or s.kind == kind):
                return i
        raise ValueError(f"unknown downstream input {node!r}{'' if kind is None else f' <{kind}>'}; inputs look "
                         f"like 'L1H2<q>', '{self.kv_name(1, 0)}<k>', 'MLP3', 'logits'")

    def edge_names(self) -> list[tuple[str, str, str]]:
        """(src, dst, dst_input) of every edge, in the order of `edge_index()`."""
        return [(self.up[u], self.slots[s].node, self.slots[s].kind) for u, s in self.edge_index().tolist()]

    def edge_index(self) -> torch.Tensor:
        """[n_edges, 2] (upstream index, slot index) of every edge, slot-major."""
        return self.valid().T.nonzero()[:, [1, 0]]

    def slots_of_layer(self, layer: int) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s.layer == layer]

    def up_of_layer(self, layer: int) -> list[int]:
        """Upstream node indices written by layer `layer` (its heads, then its MLP)."""
        pre = f"L{layer}H"
        return [i for i, n in enumerate(self.up) if n.startswith(pre) or n == f"MLP{layer}"]

    def describe(self) -> dict:
        return {"model": self.model_name, "n_layers": self.n_layers, "n_heads": self.n_heads,
                "n_kv_heads": self.n_kv_heads, "mlp": self.mlp, "n_edges": self.n_edges}


def graph_arg(graph, model, where: str) -> Graph:
    """`graph` checked against `model` (None: the model's own graph): a TypeError for a non-Graph, a ValueError
    naming what differs for the graph of another model (layers, heads, KV heads)."""
    if graph is None:
        return Graph.from_model(model)
    if not isinstance(graph, Graph):
        raise TypeError(f"{where}: graph must be a circuits Graph (Graph.from_model(model)) or None, got "
                        f"{type(graph).__name__}")
    c = model.cfg
    diffs = [f"{what} {ours} in the graph, {theirs} in {model.name}" for what, ours, theirs in (
        ("n_layers", graph.n_layers, c.n_layers), ("n_heads", graph.n_heads, c.n_heads),
        ("n_kv_heads", graph.n_kv_heads, c.n_kv_heads)) if ours != theirs]
    if diffs:
        raise ValueError(f"{where}: graph is the graph of {graph.model_name or 'another model'}, not of "
                         f"{model.name}: {'; '.join(diffs)}; pass Graph.from_model(model) or graph=None")
    return graph


def _mlp_is_zero(model) -> bool:
    from interp.head_inputs import node_outputs

    ids = torch.tensor([[1, 2, 3]], device=model.device) % model.cfg.d_vocab
    out = node_outputs(model, ids)
    return all(bool((out[("mlp", l)] == 0).all()) for l in range(model.cfg.n_layers) if ("mlp", l) in out)
