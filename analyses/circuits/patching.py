"""The masking/patching core, and exact patching sweeps built on it.

One core (`masked_logits`): every edge u -> v carries an ablation weight w in [0, 1]; downstream input v reads

    in_v = in_v^run + sum_u w_uv * (a_u^ablated - a_u^run)          (a_u: u's residual contribution)

with a_u^run the value in the *current* run, so ablations compose through the graph (auto-circuit / EAP-IG's
evaluation). w = 0 everywhere is the clean model; w = 1 on edge e is exact edge patching of e; w = 1 outside a
circuit evaluates the circuit. The variants of a sweep share one forward: the batch is [variant, example].

Ablation values (`ablated_outputs`): "corrupted" (a_u of the corrupted prompt, position-aligned), "zero", "mean"
(a_u averaged over the clean batch, per position), "resample" (a_u of another clean example).

Named sweeps on top: `edge_patching` (every edge, or a subset), `head_patching` (head outputs, batched HeadMask),
`resid_patching` (residual stream per layer and position), `qkv_patching` (a head's q/k/v input).
`edge_patching` and `head_patching` keep their finished chunks in a checkpoint file (`checkpoint=PATH`: every
`save_every_s` seconds and when Ctrl-C or an error stops them; `chunked_sweeps.py`) and a rerun continues from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from interp.head_inputs import InputPatch, check_unpadded, node_outputs
from interp.input_checks import bool_arg
from interp.validate import _show, hooked_model_arg, int_arg, progress_arg, real_arg  # noqa: F401 (progress_arg: re-exported)

from . import checkpoints
from .chunked_sweeps import EDGE_KIND, HEAD_KIND, _digest, _resume_chunks
from .graph import Graph, graph_arg

ABLATIONS = ("corrupted", "zero", "mean", "resample")


def stack_outputs(out: dict, graph: Graph, n_layers: int | None = None) -> torch.Tensor:
    """Recorded node outputs -> [batch, pos, n_up, d_model] in `graph.up` order (the first layers only if asked)."""
    n_layers = graph.n_layers if n_layers is None else n_layers
    parts = [out["input"][:, :, None]]
    for l in range(n_layers):
        parts.append(out[("head", l)])
        if graph.mlp:
            parts.append(out[("mlp", l)][:, :, None])
    return torch.cat(parts, 2)


def ablated_outputs(model, graph: Graph, clean, corrupt=None, ablation: str = "corrupted",
                    seed: int = 0) -> torch.Tensor:
    """The ablated value of every node's output: [batch, pos, n_up, d_model]."""
    hooked_model_arg(model, "ablated_outputs")
    graph = graph_arg(graph, model, "ablated_outputs")
    seed = int_arg("seed", seed, minimum=-2**63, maximum=2**64 - 1, where="ablated_outputs")
    clean, corrupt = check_ablation(clean, corrupt, ablation)
    if ablation == "corrupted":
        return stack_outputs(node_outputs(model, corrupt), graph)
    a = stack_outputs(node_outputs(model, clean), graph)
    if ablation == "zero":
        return torch.zeros_like(a)
    if ablation == "mean":
        return a.mean(0, keepdim=True).expand_as(a).contiguous()
    return a[resample_rows(a.shape[0], seed).to(a.device)]


def check_ablation(clean, corrupt, ablation: str) -> tuple:
    """Checked (clean ids, corrupt ids or None) for an ablation type."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    clean = check_unpadded(clean, "clean prompts")
    if ablation != "corrupted":
        return clean, None
    if corrupt is None:
        raise ValueError("ablation='corrupted' needs corrupted prompts (the task gave none); use 'mean', "
                         "'zero' or 'resample'")
    corrupt = check_unpadded(corrupt, "corrupted prompts")
    check_aligned(clean, corrupt)
    return clean, corrupt


def resample_rows(b: int, seed: int = 0) -> torch.Tensor:
    """[b] the example whose outputs each row takes under ablation='resample' (never the row itself)."""
    if b < 2:
        raise ValueError("ablation='resample' needs at least 2 examples in the batch")
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(b) + torch.randint(1, b, (b,), generator=g)) % b


def ablated_arg(ablated, clean: torch.Tensor, graph: Graph, where: str):
    """Precomputed ablated outputs: None (computed from the prompts) or a tensor [batch, pos, n_up, d_model] (its
    shape is checked by masked_logits)."""
    if ablated is not None and not isinstance(ablated, torch.Tensor):
        b, p = clean.shape
        raise TypeError(f"{where}: ablated must be a tensor [{b}, {p}, {graph.n_up}, d_model] (ablated_outputs(model, "
                        f"graph, clean, corrupt, ablation)) or None, got {_show(ablated)}")
    return ablated


def check_aligned(clean: torch.Tensor, corrupt: torch.Tensor) -> None:
    if tuple(clean.shape) != tuple(corrupt.shape):
        raise ValueError(f"clean and corrupted prompts must have the same shape [batch, pos] (position-aligned, "
                         f"same token length per pair), got clean {tuple(clean.shape)} and corrupted "
                         f"{tuple(corrupt.shape)}; pad or rewrite the corrupted prompts so the tokens line up")


@dataclass
class CleanRun:
    """What a masked run needs to skip the layers before its first patched input: the clean run's node outputs
    and the residual stream entering every layer (both position-aligned with the clean prompts)."""

    clean: torch.Tensor  # [batch, pos] token ids
    outputs: torch.Tensor  # [batch, pos, n_up, d_model], graph.up order
    resid: torch.Tensor  # [n_layers, batch, pos, d_model]: resid_pre of each layer


def clean_run(model, graph: Graph, clean) -> CleanRun:
    """One clean forward recording every node's output and every layer's resid_pre (for `masked_logits`)."""
    hooked_model_arg(model, "clean_run")
    graph = graph_arg(graph, model, "clean_run")
    clean = check_unpadded(clean, "clean prompts")
    names = [f"blocks.{l}.hook_resid_pre" for l in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names=names)
    return CleanRun(clean, stack_outputs(node_outputs(model, clean), graph), torch.stack([cache[n] for n in names]))


def masked_logits(model, graph: Graph, clean, ablated: torch.Tensor, weights: torch.Tensor,
                  chunk: int | None = None, logits_at=None, prefix: CleanRun | None = None) -> torch.Tensor:
    """Logits [variant, batch, pos, vocab] of the clean prompts with edge ablation weights [variant, n_up, n_slots].

    `ablated`: [batch, pos, n_up, d_model] from `ablated_outputs`. `chunk`: variants per forward (default: all).
    `logits_at` (1-D positions): only those positions are unembedded -> [variant, batch, len(logits_at), vocab].
    `prefix` (`clean_run(model, graph, clean)`): each forward starts at the first layer with a weighted input,
    from the clean run's residual stream there (the layers before it compute the clean run anyway): ACDC and edge
    sweeps whose edges end late in the model cost only the layers they touch.
    """
    hooked_model_arg(model, "masked_logits")
    graph = graph_arg(graph, model, "masked_logits")
    clean = check_unpadded(clean, "clean prompts")
    b, p = clean.shape
    if not isinstance(weights, torch.Tensor) or weights.dim() not in (2, 3):
        raise TypeError(f"masked_logits: weights must be a tensor [variant, {graph.n_up}, {graph.n_slots}] or "
                        f"[{graph.n_up}, {graph.n_slots}], got {_show(weights)}")
    if not isinstance(ablated, torch.Tensor):
        raise TypeError(f"masked_logits: ablated outputs must be a tensor [{b}, {p}, {graph.n_up}, d_model] "
                        f"(ablated_outputs(...)), got {_show(ablated)}")
    if weights.dim() == 2:
        weights = weights[None]
    if weights.shape[1:] != (graph.n_up, graph.n_slots):
        raise ValueError(f"weights must be [variant, {graph.n_up}, {graph.n_slots}] (upstream nodes x inputs of "
                         f"this graph), got {tuple(weights.shape)}")
    if ablated.shape[:3] != (b, p, graph.n_up):
        raise ValueError(f"ablated outputs must be [{b}, {p}, {graph.n_up}, d_model], got {tuple(ablated.shape)}")
    if ablated.dim() != 4 or ablated.shape[3] != model.cfg.d_model:
        raise ValueError(f"masked_logits: ablated outputs must be [{b}, {p}, {graph.n_up}, {model.cfg.d_model}] "
                         f"(d_model of {model.name}), got {tuple(ablated.shape)}; build them with "
                         "ablated_outputs(model, ...) for this model")
    if prefix is not None and (prefix.clean.shape != clean.shape or not bool((prefix.clean == clean).all())):
        raise ValueError("masked_logits: prefix is the clean run of other prompts; build it with "
                         "clean_run(model, graph, clean) for these")
    weights = weights * graph.valid().to(weights.device)  # no weight on edges that do not exist
    n_var = weights.shape[0]
    chunk = n_var if chunk is None else int_arg("chunk", chunk, minimum=1, where="masked_logits")
    outs = []
    for s in range(0, n_var, chunk):
        w = weights[s:s + chunk]
        outs.append(_masked_chunk(model, graph, clean, ablated, w, logits_at, prefix))
    return torch.cat(outs, 0)


def _first_piece(graph: Graph, layer: int) -> tuple[int, int]:
    """(node columns, output pieces) written before layer `layer`'s attention: input, then heads (+ MLP) per layer."""
    if layer == 0:
        return 1, 1
    first_q = graph.slots_of_layer(layer)[0]
    return graph.n_up_of_slot[first_q], 1 + layer * (2 if graph.mlp else 1)


def _masked_chunk(model, graph, clean, ablated, w, logits_at=None, prefix=None):
    v, (b, p) = w.shape[0], clean.shape
    rows = clean.repeat(v, 1)  # [variant * batch, pos]
    slots_by_part = _slots_by_part(graph)
    # node-major layout, so each input's delta is one batched matmul over the nodes without copies
    diff = ablated.to(device=model.device, dtype=model.dtype).permute(2, 0, 1, 3)  # [n_up, batch, pos, d]
    diff = diff[None].repeat(v, 1, 1, 1, 1)  # [variant, n_up, batch, pos, d]: ablated, minus current as recorded
    d_model = diff.shape[-1]
    used = set(w.reshape(-1, w.shape[-1]).any(0).nonzero().flatten().tolist())  # slots with a weight: one sync
    w = w.to(diff.device)  # masks may be built on the CPU (scores live there); diff becomes ablated - current
    filled = [0, 0]  # node columns and output pieces subtracted so far
    start = 0
    if prefix is not None and used:
        start = min(min(graph.slots[s].layer for s in used), graph.n_layers - 1)
    if start:  # the layers before `start` are the clean run: their nodes' differences are ablated - clean
        filled[:] = _first_piece(graph, start)
        diff[:, :filled[0]] -= prefix.outputs[:, :, :filled[0]].permute(2, 0, 1, 3).to(diff)[None]

    def delta_fn(layer, part, patch):
        # subtract the current-run outputs recorded since the last call: diff[:, :filled] = ablated - current
        new = _new_outputs(patch.outputs, graph, layer, part)
        for t in new[filled[1]:]:  # t: [variant*batch, pos, k, d]
            k = t.shape[2]
            diff[:, filled[0]:filled[0] + k] -= t.reshape(v, b, p, k, d_model).permute(0, 3, 1, 2, 4).to(diff.dtype)
            filled[0] += k
            filled[1] += 1
        active = [s for s in slots_by_part.get((layer, part), []) if s in used]
        if not active:
            return {}
        n = max(graph.n_up_of_slot[s] for s in active)
        ww = w[:, :n, active].to(dtype=diff.dtype).transpose(1, 2)  # [variant, n_active, n]
        d = torch.bmm(ww, diff[:, :n].reshape(v, n, b * p * d_model))  # [variant, n_active, batch*pos*d]
        return {graph.slots[s].key: d[:, i].reshape(v * b, p, d_model) for i, s in enumerate(active)}

    with torch.no_grad():
        patch = InputPatch(model, delta_fn, start=start, start_resid=prefix.resid[start] if start else None)
        logits = patch.run(model, rows, logits_at=logits_at)
    return logits.reshape(v, b, logits.shape[1], -1)


def _slots_by_part(graph: Graph) -> dict:
    out: dict = {}
    for i, s in enumerate(graph.slots):
        part = "attn" if s.kind in ("q", "k", "v") else s.kind
        out.setdefault((s.layer, part), []).append(i)
    return out


def _new_outputs(outputs: dict, graph: Graph, layer: int, part: str) -> list:
    """The node outputs written before this point of the run, in `graph.up` order, as [rows, pos, k, d] pieces."""
    inp = outputs.get("input")  # absent (None) for the layers a run skipped: those pieces are never read
    parts = [None if inp is None else inp[:, :, None]]
    last = layer if part == "attn" else min(layer, graph.n_layers - 1) + 1
    for l in range(last):
        parts.append(outputs.get(("head", l)))
        if graph.mlp and (l < layer or part == "logits"):
            m = outputs.get(("mlp", l))
            parts.append(None if m is None else m[:, :, None])
    return parts


def metric_arg(metric, where: str) -> Callable:
    if not callable(metric):
        raise TypeError(f"{where}: metric must be a callable logits [batch, pos, vocab] -> scalar tensor (e.g. "
                        f"lambda lg: task.metric(lg, batch)), got {_show(metric)}")
    return metric


def check_metric_value(value, where: str, when: str = "", batch: int | None = None) -> torch.Tensor:
    """A metric's return value checked: a finite real tensor, a scalar (one element; returned as shape ()) or, with
    `batch`, one value per example (shape [batch]). Anything else raises a TypeError / ValueError naming the shape
    expected and the one got; `when` says which run it was (e.g. " for the clean run")."""
    want = ("a scalar tensor (one number for the batch)" if batch is None else
            f"a tensor of shape [{batch}] (one value per example, per_example=True)")
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where}: metric must return {want}, got {_show(value)}{when}")
    if value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(f"{where}: metric must return {want} of real numbers, got a {value.dtype} tensor{when}")
    if batch is None and value.numel() != 1:
        raise ValueError(f"{where}: metric must return {want}; got shape {tuple(value.shape)}{when} (a per-example "
                         "metric, e.g. task.metric(logits, batch, per_example=True), gives [batch]: average it or "
                         "drop per_example)")
    if batch is not None and tuple(value.shape) != (batch,):
        raise ValueError(f"{where}: metric must return {want}; got shape {tuple(value.shape)}{when}")
    value = value.reshape(()) if batch is None else value
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{where}: metric returned a non-finite value ({value.detach().flatten()[:4].tolist()})"
                         f"{when}; it must be finite")
    return value


def metric_of(logits: torch.Tensor, metric: Callable, where: str = "metric_of", label=None) -> torch.Tensor:
    """metric(logits [batch, pos, vocab]) for each variant of [variant, batch, pos, vocab] -> [variant], each return
    checked (`check_metric_value`: a finite scalar tensor). `label(i)`: what variant i patches, for the messages."""
    def when(i):
        return f" for {label(i)}" if label is not None else f" for patched variant {i}"

    vals = []
    for i, lg in enumerate(logits):
        v = metric(lg)
        if not isinstance(v, torch.Tensor) or v.numel() != 1 or v.dtype.is_complex or v.dtype == torch.bool:
            check_metric_value(v, where, when(i))
        vals.append(v.reshape(()))
    out = torch.stack(vals)
    bad = ~torch.isfinite(out)
    if bool(bad.any()):  # one sync for the whole chunk
        i = int(bad.nonzero()[0, 0])
        check_metric_value(out[i], where, when(i))
    return out


def base_metric(model, clean: torch.Tensor, metric: Callable, where: str) -> float:
    """M(clean): the metric of the clean run, checked."""
    with torch.no_grad():
        return float(check_metric_value(metric(model(clean)), where, " for the clean run"))


def edge_index_arg(edges, graph: Graph, where: str = "edge_patching") -> torch.Tensor:
    """`edges` checked against the graph -> a long [n, 2] tensor of (up, slot) pairs (None: every edge). Pairs that
    are no edge of the graph raise (naming the first one and what it would mean)."""
    if edges is None:
        return graph.edge_index()
    allowed = ("an int [n, 2] tensor of (up, slot) pairs that are edges of the graph (rows of graph.edge_index(); "
               "None: every edge)")
    if isinstance(edges, torch.Tensor):
        t = edges
    elif isinstance(edges, (list, tuple)) or type(edges).__name__ == "ndarray":
        if len(edges) == 0:
            raise ValueError(f"{where}: edges is empty; give {allowed}")
        try:
            t = torch.as_tensor(edges)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{where}: edges must be {allowed}, got {_show(edges)} ({e})") from None
    else:
        raise TypeError(f"{where}: edges must be {allowed}, got {_show(edges)}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{where}: edges must be {allowed}, got a {t.dtype} tensor")
    if t.dim() != 2 or t.shape[1] != 2:
        raise ValueError(f"{where}: edges must be {allowed}, got shape {tuple(t.shape)}")
    if len(t) == 0:
        raise ValueError(f"{where}: edges is empty; give {allowed}")
    t = t.detach().to("cpu", torch.long)
    up, slot = t[:, 0], t[:, 1]
    out = (up < 0) | (up >= graph.n_up) | (slot < 0) | (slot >= graph.n_slots)
    if bool(out.any()):
        i = int(out.nonzero()[0, 0])
        raise ValueError(f"{where}: edges must be {allowed}; edges[{i}] = ({int(up[i])}, {int(slot[i])}) is out of "
                         f"range: up must be in 0..{graph.n_up - 1} (graph.up, the upstream nodes) and slot in "
                         f"0..{graph.n_slots - 1} (graph.slots, the inputs they feed)")
    ok = graph.valid()[up, slot]
    if not bool(ok.all()):
        i = int((~ok).nonzero()[0, 0])
        u, v = int(up[i]), int(slot[i])
        raise ValueError(f"{where}: edges must be {allowed}; edges[{i}] = ({u}, {v}) is not an edge: "
                         f"{graph.up[u]} does not feed {graph.slots[v].name} (input {v} reads upstream nodes "
                         f"0..{graph.n_up_of_slot[v] - 1} only, the ones written before it)")
    return t


def edge_patching(model, graph: Graph, clean, ablated: torch.Tensor, metric: Callable, edges=None,
                  chunk: int = 64, checkpoint=None, progress: Callable | None = None,
                  save_every_s: float = 30.0) -> torch.Tensor:
    """Exact effect of ablating each edge alone: scores [n_up, n_slots] = M(edge ablated) - M(clean), NaN where no
    edge (or not in `edges`, an int [n, 2] tensor or list of (up, slot) pairs, each an edge of the graph, as the
    rows of graph.edge_index(); default: every edge; a pair that is no edge raises). `chunk` edges per forward.
    `metric(logits)` must return a finite scalar tensor (checked for every run).

    A long sweep (70k edges on SmolLM2) can be stopped and continued: with `checkpoint=PATH` (its folder is made
    if missing) the scores of the finished chunks are saved there every `save_every_s` seconds (a number >= 0; 0:
    after every chunk) and when an exception (Ctrl-C included) stops the sweep, and a rerun with the same model,
    graph, prompts, ablation values, edges and chunk continues from them, giving the uninterrupted run's scores
    (another sweep's file, or a damaged one, is refused). `progress(msg)` hears about it at each save."""
    where = "edge_patching"
    hooked_model_arg(model, where)
    graph = graph_arg(graph, model, where)
    int_arg("chunk", chunk, minimum=1, where=where)
    metric_arg(metric, where)
    progress_arg(progress, where)
    save_every_s = real_arg("save_every_s", save_every_s, low=0, where=where)
    path = None if checkpoint is None else checkpoints.checkpoint_path(checkpoint, where)
    idx = edge_index_arg(edges, graph, where)
    clean = check_unpadded(clean, "clean prompts")
    b, p = clean.shape
    if not isinstance(ablated, torch.Tensor) or tuple(ablated.shape[:3]) != (b, p, graph.n_up):
        raise ValueError(f"{where}: ablated outputs must be a tensor [{b}, {p}, {graph.n_up}, d_model] "
                         f"(ablated_outputs(model, graph, clean, ...)), got {_show(ablated)}")
    base = base_metric(model, clean, metric, where)
    prefix = clean_run(model, graph, clean)  # each chunk's forward starts at the first layer its edges enter
    idx = idx[torch.argsort(idx[:, 1], stable=True)]  # slot-major: a chunk's edges end in nearby layers
    scores = torch.full((graph.n_up, graph.n_slots), float("nan"))
    settings = None if path is None else _sweep_settings(model, graph, clean, ablated, idx, chunk, base)
    start, scores, saver = _resume_chunks(path, settings, EDGE_KIND, idx, chunk, scores, "edges", save_every_s,
                                          progress)
    try:
        for s in range(start, len(idx), chunk):
            part = idx[s:s + chunk]
            w = torch.zeros(len(part), graph.n_up, graph.n_slots)
            w[torch.arange(len(part)), part[:, 0], part[:, 1]] = 1.0
            vals = metric_of(masked_logits(model, graph, clean, ablated, w, prefix=prefix), metric, where,
                             lambda i, part=part: "edge " + _edge_name(graph, *part[i].tolist()))
            scores[part[:, 0], part[:, 1]] = vals.float().cpu() - base
            saver.finished(min(s + chunk, len(idx)))
    except BaseException:  # Ctrl-C or an error: keep the chunks finished since the last save
        saver.stopped()
        raise
    return scores


def _edge_name(graph: Graph, u: int, s: int) -> str:
    return f"{graph.up[u]} -> {graph.slots[s].name}"


def _sweep_settings(model, graph: Graph, clean: torch.Tensor, ablated: torch.Tensor, idx: torch.Tensor, chunk: int,
                    base: float) -> dict:
    """What a saved sweep must match to be continued: the graph, the prompts, the ablation values, the edges, the
    clean metric."""
    digest = _digest(clean, idx, checkpoints.ablation_summary(ablated))
    return {"format": 1, "model": model.name, "graph": graph.describe(), "data": digest,
            "n_edges": int(len(idx)), "chunk": int(chunk), "base": base}


def head_patching(model, clean, corrupt, metric: Callable, chunk: int = 16, batched: bool = True,
                  heads: list | None = None, logits_at=None, checkpoint=None, progress: Callable | None = None,
                  save_every_s: float = 30.0) -> torch.Tensor:
    """Activation patching of head outputs, clean -> corrupted: [n_layers, n_heads] = M(head's z from the
    corrupted run) - M(clean). Batched: `chunk` heads per forward (a per-row HeadMask), else one forward per head.
    `heads`: [(layer, head)] or head names (["L1H2"]) to patch (default all; the others stay 0). `logits_at`: the
    metric is handed the logits at these positions only ([batch, len(logits_at), vocab]; long prompts, large
    vocabularies). Each forward starts at its first patched layer from the clean run's residual stream there (the
    layers before it compute the clean run anyway).

    A long sweep can be stopped and continued, as edge_patching's: with `checkpoint=PATH` (its folder is made if
    missing) the scores of the finished forwards are saved there every `save_every_s` seconds (a number >= 0; 0:
    after every forward) and when an exception (Ctrl-C included) stops the sweep; a rerun with the same model and
    dtype, prompts (clean and corrupted), heads, chunk, batched, logits_at and clean metric continues after the last
    saved forward, with the same forwards, so the same scores as an uninterrupted run. Another sweep's file, or a
    damaged one, is refused (a ValueError naming it). `progress(msg)` hears about each save."""
    where = "head_patching"
    hooked_model_arg(model, where)
    from ..importance import head_pairs

    int_arg("chunk", chunk, minimum=1, where=where)
    bool_arg("batched", batched, where)
    metric_arg(metric, where)
    progress_arg(progress, where)
    save_every_s = real_arg("save_every_s", save_every_s, low=0, where=where)
    path = None if checkpoint is None else checkpoints.checkpoint_path(checkpoint, where)

    clean = check_unpadded(clean, "clean prompts")
    corrupt = check_unpadded(corrupt, "corrupted prompts")
    check_aligned(clean, corrupt)
    c = model.cfg
    heads = ([(l, h) for l in range(c.n_layers) for h in range(c.n_heads)] if heads is None
             else head_pairs(heads, c.n_layers, c.n_heads, "head_patching"))
    step = chunk if batched else 1
    runs = _head_runs(model, clean, corrupt, heads, step, logits_at)
    base = float(check_metric_value(metric(runs.logits), where, " for the clean run"))
    out = torch.zeros(c.n_layers, c.n_heads)
    idx = torch.tensor(heads, dtype=torch.long)  # [n, 2] (layer, head)
    settings = None if path is None else _head_sweep_settings(model, clean, corrupt, idx, step, batched, logits_at,
                                                              base)
    start, out, saver = _resume_chunks(path, settings, HEAD_KIND, idx, step, out, "heads", save_every_s, progress)
    try:
        for s in range(start, len(heads), step):
            part = heads[s:s + step]
            vals = metric_of(_patched_heads_logits(model, clean, part, runs, logits_at), metric, where,
                             lambda i, part=part: "head L{}H{} patched".format(*part[i]))
            rows = idx[s:s + step]
            out[rows[:, 0], rows[:, 1]] = (vals.detach().double().cpu() - base).float()
            saver.finished(min(s + step, len(heads)))
    except BaseException:  # Ctrl-C or an error: keep the forwards finished since the last save
        saver.stopped()
        raise
    return out


@dataclass
class _HeadRuns:
    """What head_patching's forwards read: the clean run's logits (for M(clean)), the corrupted run's z of the
    patched layers and the clean residual stream where forwards begin."""

    logits: torch.Tensor
    corrupt_z: dict  # hook name -> [batch, pos, n_heads, d_head]
    resid: dict  # hook name -> [batch, pos, d_model]


def _z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def _head_runs(model, clean: torch.Tensor, corrupt: torch.Tensor, heads: list, step: int, logits_at) -> _HeadRuns:
    """The corrupted and clean runs that head_patching's forwards (of `step` heads each) read from."""
    starts = sorted({min(l for l, _ in heads[s:s + step]) for s in range(0, len(heads), step)} - {0})
    resid_names = [f"blocks.{l}.hook_resid_pre" for l in starts]
    patched = sorted({_z_name(l) for l, _ in heads})  # only the patched layers' corrupted z are read
    with torch.no_grad():
        _, cc = model.run_with_cache(corrupt, names=patched, logits_at=logits_at)
        if resid_names:
            lg, rc = model.run_with_cache(clean, names=resid_names, logits_at=logits_at)
        else:
            lg, rc = model.run_with_hooks(clean, logits_at=logits_at), {}
    return _HeadRuns(lg, cc, rc)


def _patched_heads_logits(model, clean: torch.Tensor, part: list, runs: _HeadRuns, logits_at) -> torch.Tensor:
    """Logits [variant, batch, pos, vocab] of one forward: variant i has head part[i]'s z from the corrupted run.
    The forward starts at the first patched layer, from the clean run's residual stream there."""
    from interp import HeadMask
    from interp.head_inputs import started_at

    c, v, b = model.cfg, len(part), clean.shape[0]
    xi = torch.ones(v, b, c.n_layers, c.n_heads, device=clean.device)
    for i, (l, h) in enumerate(part):
        xi[i, :, l, h] = 0
    layers = sorted({l for l, _ in part})
    baseline = {l: runs.corrupt_z[_z_name(l)].repeat(v, 1, 1, 1) for l in layers}
    start = layers[0]
    with torch.no_grad(), started_at(model, start, runs.resid[f"blocks.{start}.hook_resid_pre"] if start else None):
        lg = model.run_with_hooks(clean.repeat(v, 1), logits_at=logits_at, interventions=[
            HeadMask(xi.reshape(v * b, c.n_layers, c.n_heads), baseline=baseline, only_layers=layers)])
    return lg.reshape(v, b, *lg.shape[1:])


def _head_sweep_settings(model, clean: torch.Tensor, corrupt: torch.Tensor, idx: torch.Tensor, step: int,
                         batched: bool, logits_at, base: float) -> dict:
    """What a saved head-patching sweep must match to be continued: the model and its dtype, the clean and corrupted
    prompts, the heads and heads per forward, the positions the metric reads, the clean metric. (The device is left
    out, as in edge patching's checkpoints.)"""
    from interp.model_checks import logits_positions

    at = None if logits_at is None else logits_positions(logits_at, clean.shape[1]).tolist()
    return {"format": 1, **checkpoints.model_settings(model), "prompts": [*clean.shape],
            "data": _digest(clean.long(), corrupt.long(), idx), "n_heads": int(len(idx)), "chunk": int(step),
            "batched": bool(batched), "logits_at": at, "base": base}
