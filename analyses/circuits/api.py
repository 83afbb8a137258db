"""Task-level entry points: score a task's edges with a named method, over equal-length buckets of its prompts.

    from interp.analyses import circuits as C, tasks as T
    task = T.get_task("ioi"); batch = task.make(model, n=32)
    circuit = C.find_circuit(model, task, batch, method="eap-ig", steps=5)     # a scored Circuit
    circuit.select(top_n=200)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from interp.input_checks import bool_arg
from interp.tokens import Tokens
from interp.validate import hooked_model_arg, int_arg

from ..tasks.base import batch_arg, task_arg
from . import atp, attribution, checkpoints, patching
from .evaluate import Circuit
from .graph import Graph, graph_arg

METHODS = ("patching", "eap", "eap-ig", "eap-ig-act", "atp", "atp*", "acdc", "sae")
ACDC_TAU = 0.01  # the default ACDC threshold of score_edges / find_circuit (and `interp circuit --method acdc`)
PATCHING_CHUNK = 32  # edges per forward of method "patching" (score_edges' chunk)


def buckets(batch) -> list:
    """Split a TaskBatch into unpadded sub-batches of one token length each (rows keep their order inside)."""
    lengths = torch.tensor(list(batch.clean.lengths))
    out = []
    for n in sorted(set(lengths.tolist())):
        rows = (lengths == n).nonzero().flatten()
        sub = batch[rows]

        def trim(t):
            return None if t is None else Tokens(t.input_ids[:, :n], None, [n] * len(rows))

        out.append(dataclasses.replace(sub, clean=trim(sub.clean), corrupt=trim(sub.corrupt),
                                       loss_mask=None if sub.loss_mask is None else sub.loss_mask[:, :n]))
    return out


RESUMABLE = ("patching", "acdc")  # the methods that take a checkpoint (the long searches)


def _checkpoint_arg(checkpoint, method: str, where: str) -> None:
    """A checkpoint is for the long searches only, and its path is checked before any work starts."""
    if checkpoint is None:
        return
    if method not in RESUMABLE:
        raise ValueError(f"{where}: checkpoint is for the long searches, method 'patching' or 'acdc'; "
                         f"method {method!r} runs in one pass (pass checkpoint=None)")
    checkpoints.checkpoint_path(checkpoint, where)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    return method


def score_edges(model, graph: Graph, task, batch, method: str, steps: int = 5, ablation: str = "corrupted",
                chunk: int = PATCHING_CHUNK, tau: float = ACDC_TAU, checkpoint=None, progress=None) -> torch.Tensor:
    """[n_up, n_slots] edge scores ~ M(edge ablated) - M(clean), averaged over the task's prompts.
    ("acdc": the KL change measured when each edge was tested, at threshold `tau`; see acdc.py.)
    `task`: a Task or a task name; `chunk` (patching): edges per forward, an int >= 1. "patching" with
    `checkpoint=PATH` keeps its sweep there (one file per prompt-length bucket, PATH.b0, PATH.b1, ...) and continues
    it when rerun, "acdc" its search (PATH itself); `progress(msg)` hears how far it got. The other methods run in
    one pass and take no checkpoint (a ValueError, as in find_circuit)."""
    hooked_model_arg(model, "score_edges")
    check_method(method)
    task, batch = task_arg(task, "score_edges"), batch_arg(batch, "score_edges")
    graph = graph_arg(graph, model, "score_edges")
    int_arg("chunk", chunk, minimum=1, where="score_edges")
    patching.progress_arg(progress, "score_edges")
    _checkpoint_arg(checkpoint, method, "score_edges")
    if method == "sae":  # no ablations or gradients: discrete SAE codes (sae_codes.sae_circuit for its options)
        from .sae_codes import sae_circuit

        return sae_circuit(model, task, batch, graph=graph).scores
    if method == "acdc":
        return find_circuit(model, task, batch, method, ablation=ablation, graph=graph, tau=tau,
                            checkpoint=checkpoint, progress=progress).scores
    if method in ("eap-ig", "eap-ig-act") and ablation != "corrupted":
        raise ValueError(f"{method} interpolates corrupt -> clean: it needs ablation='corrupted'")
    total = None
    n = len(batch)
    for i, sub in enumerate(buckets(batch)):
        clean = sub.clean.input_ids
        corrupt = None if sub.corrupt is None else sub.corrupt.input_ids
        metric = (lambda lg, sub=sub: task.metric(lg, sub))
        lean = method in ("eap", "eap-ig", "eap-ig-act")  # these keep their deltas compact (long inputs)
        ablated = None if lean else patching.ablated_outputs(model, graph, clean, corrupt, ablation)
        if method == "patching":
            ck = None if checkpoint is None else Path(f"{checkpoint}.b{i}")
            s = patching.edge_patching(model, graph, clean, ablated, metric, chunk=chunk, checkpoint=ck,
                                       progress=progress)
        elif method == "eap":
            s = attribution.eap(model, graph, clean, metric, corrupt, ablation)
        elif method in ("atp", "atp*"):  # atp: EAP through the AtP* code path; atp*: QK fix + GradDrop (magnitudes)
            star = method == "atp*"
            s = atp.atp_star(model, graph, clean, metric, ablated=ablated, qk_fix=star, graddrop=star)
        elif method == "eap-ig-act":
            s = attribution.eap_ig_act(model, graph, clean, metric, corrupt, steps=steps, ablated=ablated)
        else:
            s = attribution.eap_ig(model, graph, clean, metric, corrupt, steps=steps, ablated=ablated)
        s = s * (len(sub) / n)
        total = s if total is None else total + s
    return total


def find_circuit(model, task, batch, method: str = "eap-ig", steps: int = 5, ablation: str = "corrupted",
                 graph: Graph | None = None, tau: float = ACDC_TAU, seed: int = 0, checkpoint=None,
                 progress=None) -> Circuit:
    """A scored Circuit; "acdc" also chooses its edges (in_circuit: the edges kept at threshold `tau`).
    `seed`: the row permutation of ablation="resample" (ACDC; the scoring methods use seed 0). `task`: a Task or
    a task name (looked up with analyses.tasks.get_task).

    The long searches resume: "patching" and "acdc" with `checkpoint=PATH` keep their progress there (see
    `score_edges`, `acdc_task`) and a rerun continues it; `progress(msg)` hears how far they got. The other methods
    run in one pass and take no checkpoint."""
    hooked_model_arg(model, "find_circuit")
    method = check_method(method)
    patching.progress_arg(progress, "find_circuit")
    _checkpoint_arg(checkpoint, method, "find_circuit")
    task, batch = task_arg(task, "find_circuit"), batch_arg(batch, "find_circuit")
    graph = graph_arg(graph, model, "find_circuit")
    if method == "acdc":
        from .acdc import acdc_task

        return acdc_task(model, task, batch, tau, ablation=ablation, graph=graph, seed=seed, checkpoint=checkpoint,
                         progress=progress)
    scores = score_edges(model, graph, task, batch, method, steps=steps, ablation=ablation, checkpoint=checkpoint,
                         progress=progress)
    return Circuit(graph, scores, method=method, meta={"task": getattr(task, "name", ""), "n": len(batch),
                                                        "steps": steps, "ablation": ablation})


def head_effects(model, task, batch, batched: bool = True, chunk: int = 16) -> torch.Tensor:
    """Exact head-output patching (clean -> corrupted) per head, [n_layers, n_heads], averaged over buckets."""
    hooked_model_arg(model, "head_effects")
    task, batch = task_arg(task, "head_effects"), batch_arg(batch, "head_effects")
    int_arg("chunk", chunk, minimum=1, where="head_effects")
    bool_arg("batched", batched, "head_effects")
    if batch.corrupt is None:
        raise ValueError(f"head_effects patches clean -> corrupted head outputs: task {task.name!r} gives no "
                         "corrupted prompts (use induction, ioi, greater-than, needle or a file task with corrupt)")
    total, n = None, len(batch)
    for sub in buckets(batch):
        s = patching.head_patching(model, sub.clean.input_ids, sub.corrupt.input_ids,
                                   lambda lg, sub=sub: task.metric(lg, sub), chunk=chunk, batched=batched)
        s = s * (len(sub) / n)
        total = s if total is None else total + s
    return total
