"""The statistics of many layers in one statistics pass (`run_with_cache`'s path on the Triton backend).

A short-input forward is bound by the host: each layer's statistics call spends ~110 us of host time on its own
allocations, launch and post-processing in a 30-layer model at 1k tokens, 3.5 ms of a 24 ms forward
(`docs/gpu/model_overhead_smollm2_round10b.log`). `run_with_cache` therefore asks each layer's attention call for
its output and lse only, hands the layer's q, k and lse to a `LayerBatch`, and runs the statistics of every layer
of one kind (same shapes, dtype and attention options) as one call, the layers stacked along the batch axis:
    q [layers x batch, heads, q_len, head_dim], k [layers x batch, kv_heads, k_len, head_dim], lse likewise.
Batch rows are independent in the statistics kernel, it picks its tile config by length and kind (not batch), and
its key sums are integers, so each layer's statistics equal what its own call gives with the same tile config, bit
for bit (tested; the config of a kind is tuned by its first call, stacked or not, and kept for both paths). Not so
on the GPU for a call of at most 128 queries against at least 1,024 cached keys: such a call splits its walks into
parts (`kernels/walk_parts.py`) when it has fewer programs than the GPU holds, so a stack of many layers may run
unparted (another kernel variant, tuned apart) where each layer's own call is parted, and its entropy and key sums
can then differ in their last bits.

Only layers whose q and k take at most LAYER_BYTES join (a 4-layer Llama-3-8B shape at 4k tokens, 42 MB a layer,
measured 1.09x HF per layer and 1.13x batched: there the kernels hide the host's time and stacking only adds
copies); longer layers make their own call in the layer, as before. Statistics are published at their hook points,
layer by layer in the order the layers ran, when the forward ends (`flush`) or earlier: when the q and k held for
pending layers would pass `budget_bytes` (memory stays bounded), and before a layer that makes its own call (a
key_bias, a prob_hook or captured patterns, the reference backend, a long layer) publishes its statistics in the
layer, as before. Only `run_with_cache` uses this: its only hook functions at statistics hook points store the
tensors, so publishing them after the layer ran changes no value; what changes is the cache's insertion order
(batched statistics come after the other hook points of their layers), and each published statistic is a view of
its pass's [layers x batch, ...] tensor.
"""

from __future__ import annotations

import torch

from .hooks import HOOK_OF_STAT
from .kernels import stats_from_lse
from .kernels.checks import has_padding, mark_padded
from .kernels.segments import mark_made

DEFAULT_BUDGET = 256 * 2**20  # bytes of q and k held for pending layers (the stacking copies as much again)
LAYER_BYTES = 16 * 2**20  # a layer joins the batch when its q and k together take at most this
ENABLED = True  # False: run_with_cache makes each layer's statistics call in the layer, as other runs do


class LayerBatch:
    """Pending layers' q, k and lse, grouped by kind; `flush(ctx)` computes and publishes their statistics."""

    def __init__(self, budget_bytes: int | None = None):
        self.budget = DEFAULT_BUDGET if budget_bytes is None else budget_bytes
        self._groups: dict = {}  # kind -> [(order, layer, q, k, lse)]
        self._held = 0
        self._order = 0

    def accepts(self, query, key) -> bool:
        """Whether a layer with these q and k joins the batch: short inputs only (q and k within LAYER_BYTES),
        where the host's per-call cost is what a statistics call costs. Longer layers keep their own call: their
        kernels hide the host's time, and stacking would only add copies (and hold q and k past the layer)."""
        return _bytes(query, key) <= LAYER_BYTES

    def add(self, ctx, layer: int, query, key, lse, *, mask, causal: bool, scale, sliding_window, stats: tuple,
            options: dict, softcap=None, sinks=None, segment_ids=None) -> None:
        """Keep one layer's attention inputs (q [batch, heads, q_len, d], k [batch, kv_heads, k_len, d], the lse
        of its call); publishes every pending layer first when holding this one too would pass the budget."""
        size = _bytes(query, key)
        if self._held and self._held + size > self.budget:
            self.flush(ctx)
        sink, local, span = options.get("sink_tokens", 4), options.get("local_window", 64), options.get("span")
        # learned sinks (GPT-OSS): each layer its own [heads] logits, stacked as [layers x batch, heads] in flush;
        # `lse` is then the sink-inclusive lse' of the layer's call
        kind = (query.shape, key.shape, query.dtype, query.device, causal, scale, sliding_window, softcap, id(mask),
                id(segment_ids), stats, sink, local, sinks is not None,
                id(span) if isinstance(span, torch.Tensor) else (None if span is None else tuple(span)))
        entry = self._groups.get(kind)
        if entry is None:
            entry = self._groups[kind] = dict(mask=mask, span=span, segment_ids=segment_ids, layers=[], options=dict(
                causal=causal, scale=scale, sliding_window=sliding_window, softcap=softcap, stats=stats,
                sink_tokens=sink, local_window=local))
        if sinks is not None:  # [batch, heads], detached: statistics carry no gradient
            sinks = sinks.detach().float().reshape(1, -1).expand(query.shape[0], -1)
        entry["layers"].append((self._order, layer, query, key, lse, sinks))
        self._order += 1
        self._held += size

    def flush(self, ctx) -> None:
        """One statistics pass per kind of pending layer, then every pending layer's statistics published at its
        hook points in the order the layers ran."""
        groups, self._groups, self._held = self._groups, {}, 0
        done = []
        for entry in groups.values():
            layers = entry["layers"]
            n = len(layers)
            q = layers[0][2] if n == 1 else torch.cat([e[2] for e in layers])
            k = layers[0][3] if n == 1 else torch.cat([e[3] for e in layers])
            lse = layers[0][4] if n == 1 else torch.cat([e[4] for e in layers])
            mask, span = entry["mask"], entry["span"]
            if mask is not None and n > 1:
                padded = has_padding(mask)
                mask = mask.repeat(n, 1)
                if padded:
                    mark_padded(mask)
            if isinstance(span, torch.Tensor) and span.dim() == 2 and n > 1:
                span = span.repeat(n, 1)
            ids = entry["segment_ids"]  # packed sequences, chunked layers: [batch, keys], the same for every layer
            if ids is not None and n > 1:
                ids = ids.repeat(n, 1)
                mark_made(ids)  # (made for this pass: checked and split once)
            sinks = layers[0][5]
            if sinks is not None and n > 1:
                sinks = torch.cat([e[5] for e in layers])
            st = stats_from_lse(q, k, lse, attention_mask=mask, span=span, sinks=sinks, segment_ids=ids,
                                **entry["options"])
            per_layer = [[] for _ in range(n)]
            for name, t in st.items():
                for i, part in enumerate(t.chunk(n) if n > 1 else (t,)):  # layer i's rows: [batch, heads, len]
                    per_layer[i].append((name, part))
            done.extend((e[0], e[1], per_layer[i]) for i, e in enumerate(layers))
        for _, layer, items in sorted(done, key=lambda d: d[0]):
            pre = f"blocks.{layer}.attn."
            for name, t in items:
                ctx.apply(pre + HOOK_OF_STAT[name], t, layer)


def _bytes(query, key) -> int:
    """What a layer's q and k take."""
    return query.numel() * query.element_size() + key.numel() * key.element_size()
