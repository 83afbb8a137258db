"""a_u^ablated - a_u^clean for every upstream node, kept compact and expanded one position chunk at a time.

Attribution (EAP, EAP-IG) contracts these deltas with input gradients: score(u -> v) = sum_{batch, pos, d}
delta_u . grad_v. Stored whole, the deltas are [n_up, batch, pos, d_model] (a Llama-3-8B layer has 32 heads: 33
d_model vectors per position and layer; 9 GB per 4 layers at 8k tokens in bf16). `NodeDeltas` keeps, per layer, the
heads' z [batch, pos, head, d_head] (one d_model vector per position when head x d_head = d_model) and the sandwich-norm
scale where the model has one (`interp.head_inputs.node_outputs(compact=True)`), plus W_O, and rebuilds the
contributions z_h W_O^h (* s) of a slice of positions on demand (`pieces`). Chunking positions is exact: the
contraction is a sum over positions, and every ablation acts per position (the mean is over the batch).

Ablations (as `patching.ablated_outputs`): "corrupted" (the corrupted run's outputs), "zero", "mean" (over the clean
batch, per position), "resample" (another clean example, `patching.resample_rows`); or a precomputed dense
`ablated` [batch, pos, n_up, d_model] (only the clean side is then compact). Without sandwich norms and with a
linear ablation, a head's delta is expanded once from the z difference, (T(z_abl) - z_clean) W_O.
"""

from __future__ import annotations

import torch

from interp.head_inputs import check_unpadded, head_contributions, head_weights, node_outputs

from .graph import Graph
from .patching import check_ablation, resample_rows, stack_outputs

CHUNK_ELEMENTS = 2 ** 27  # elements of one expanded delta chunk [n, batch, pos_chunk, d_model] (256 MiB in bf16)
# all deltas expanded once and kept when they take at most this many elements (short inputs: each gradient chunk
# would otherwise expand them again, which made EAP on SmolLM2's 32 IOI pairs 2.3x slower than the dense path)
CACHE_ELEMENTS = 2 ** 27


class NodeDeltas:
    """The deltas of one batch, expanded on demand: `pieces(n, pos_chunk)` -> (positions, [n, batch*chunk*d])."""

    def __init__(self, graph: Graph, w_o: list, clean: dict, source, transform):
        self.graph = graph
        self.w_o = w_o  # [head, d_head, d_model] per layer
        self.clean = clean  # compact node outputs of the clean run
        self.source = source  # compact outputs of the ablating run, a dense [b, p, n_up, d] tensor, or None (zero)
        self.transform = transform  # None, "mean" or a [batch] row index (resample)
        self.batch, self.n_pos, self.d_model = clean["input"].shape
        self._all = None  # [n_up, batch * pos * d_model] once expanded (small inputs only)

    @property
    def dtype(self) -> torch.dtype:
        return self.clean["input"].dtype

    def _t(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform is None:
            return x
        if isinstance(self.transform, str):  # "mean"
            return x.mean(0, keepdim=True).expand_as(x)
        return x[self.transform]

    def chunk(self, n: int, sl: slice) -> torch.Tensor:
        """[n, batch, len(sl), d_model]: the deltas of the first n upstream nodes at positions sl."""
        g, c, src = self.graph, self.clean, self.source
        per_layer = g.n_heads + int(g.mlp)
        k = min(g.n_layers, -(-(n - 1) // per_layer))  # layers whose nodes are among the first n
        dense = isinstance(src, torch.Tensor)
        if dense:
            a = src[:, sl, :n].to(self.dtype)
            return (a - self._contributions(c, sl, k, n)).permute(2, 0, 1, 3).contiguous()
        out = torch.empty(n, self.batch, sl.stop - sl.start, self.d_model, dtype=self.dtype,
                          device=c["input"].device)  # filled in graph.up order, one layer's heads at a time
        out[0] = self._diff(c["input"][:, sl], src and src["input"][:, sl])
        r = 1
        for l in range(k):
            z_c, s_c = c[("z", l)][:, sl], _scale(c, l, sl)
            if src is None:
                heads = -head_contributions(z_c, s_c, self.w_o[l])
            elif s_c is None and _scale(src, l, sl) is None:
                heads = head_contributions(self._t(src[("z", l)][:, sl]) - z_c, None, self.w_o[l])
            else:
                heads = (self._t(head_contributions(src[("z", l)][:, sl], _scale(src, l, sl), self.w_o[l]))
                         - head_contributions(z_c, s_c, self.w_o[l]))
            h = min(g.n_heads, n - r)
            out[r:r + h] = heads[:, :, :h].permute(2, 0, 1, 3)  # [batch, chunk, head, d] -> [head, batch, chunk, d]
            r += h
            del heads
            if g.mlp and r < n:
                out[r] = self._diff(c[("mlp", l)][:, sl], src and src[("mlp", l)][:, sl])
                r += 1
        return out

    def _diff(self, clean: torch.Tensor, src: torch.Tensor | None) -> torch.Tensor:
        return -clean if src is None else self._t(src).to(clean.dtype) - clean

    def _contributions(self, out: dict, sl: slice, k: int, n: int) -> torch.Tensor:
        """[batch, len(sl), n, d_model] the contributions of one compact run."""
        parts = {"input": out["input"][:, sl]}
        for l in range(k):
            parts[("head", l)] = head_contributions(out[("z", l)][:, sl], _scale(out, l, sl), self.w_o[l])
            if self.graph.mlp:
                parts[("mlp", l)] = out[("mlp", l)][:, sl]
        return stack_outputs(parts, self.graph, k)[:, :, :n]

    def pieces(self, n: int, pos_chunk: int | None = None):
        """Yield (positions slice, [n, batch * chunk * d_model]) covering every position once."""
        n_up = self.graph.n_up
        if (pos_chunk is None or pos_chunk >= self.n_pos) and n_up * self.batch * self.n_pos * self.d_model \
                <= CACHE_ELEMENTS:
            if self._all is None:
                self._all = self.chunk(n_up, slice(0, self.n_pos)).reshape(n_up, -1)
            yield slice(0, self.n_pos), self._all[:n]
            return
        step = pos_chunk or max(1, CHUNK_ELEMENTS // max(1, n * self.batch * self.d_model))
        for p0 in range(0, self.n_pos, step):
            sl = slice(p0, min(self.n_pos, p0 + step))
            yield sl, self.chunk(n, sl).reshape(n, -1)


class DenseDeltas:
    """Deltas already materialised as [n_up, batch * pos * d_model] (one piece)."""

    def __init__(self, delta: torch.Tensor):
        self.delta = delta
        self.dtype = delta.dtype

    def pieces(self, n: int, pos_chunk: int | None = None):
        yield slice(None), self.delta[:n]


def _scale(out: dict, layer: int, sl: slice):
    s = out.get(("scale", layer))
    return None if s is None else s[:, sl]


def node_deltas(model, graph: Graph, clean, corrupt=None, ablation: str = "corrupted",
                ablated: torch.Tensor | None = None, seed: int = 0) -> NodeDeltas:
    """Compact deltas of every upstream node for `clean` (two no-grad forwards: clean, and corrupted if needed).

    `ablated`: a precomputed [batch, pos, n_up, d_model] (`patching.ablated_outputs`) instead of `ablation`."""
    if ablated is not None:
        clean = check_unpadded(clean, "clean prompts")
        b, p = clean.shape
        if not isinstance(ablated, torch.Tensor) or tuple(ablated.shape[:3]) != (b, p, graph.n_up):
            raise ValueError(f"ablated outputs must be a tensor [{b}, {p}, {graph.n_up}, d_model] (batch, pos, "
                             f"upstream nodes, d_model), got {getattr(ablated, 'shape', type(ablated).__name__)}")
        source, transform = ablated, None
    else:
        clean, corrupt = check_ablation(clean, corrupt, ablation)
    out = node_outputs(model, clean, compact=True)
    if ablated is None:
        transform = None
        if ablation == "corrupted":
            source = node_outputs(model, corrupt, compact=True)
        elif ablation == "zero":
            source = None
        else:
            source = out
            transform = "mean" if ablation == "mean" else resample_rows(clean.shape[0], seed).to(clean.device)
    w_o = [head_weights(model, l).detach() for l in range(graph.n_layers)]
    return NodeDeltas(graph, w_o, out, source, transform)
