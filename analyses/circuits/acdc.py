"""ACDC (Conmy et al. 2023) on the masking core: prune edges one receiver at a time, from the logits backwards.

    state = {}                                                   # removed (ablated, w = 1) edges
    for receiver v in reverse topological order (logits, MLP_{L-1}, v/k/q inputs of layer L-1, ..., layer 0):
        if no node that v feeds still has a kept outgoing edge: remove v's incoming edges untested (dead receiver)
        for sender u of v, latest first:
            delta = D(state + {u -> v}) - D(state)
            if delta < tau: state += {u -> v}                    # the edge does not matter: it stays removed

D is either "kl": KL(full model || state) of the next-token distribution at the positions the task reads (the
answer position; every loss-mask position for LM-like tasks), averaged over examples (delta signed, as the ACDC
repo and auto-circuit), or "task": the task metric with delta = |M(state + e) - M(state)| (the ACDC repo's
`abs_value_threshold`). The comparison is strict (`<`, as both references), so tau = 0 keeps every tested edge
under "task" and every edge whose removal does not lower the KL under "kl". The circuit is the kept edges, as
measured (not pruned further); `scores` holds each edge's signed D(state + e) - D(state) at the time it was tested
(0 for the untested edges of dead receivers, NaN where no edge).

Batching (`window`): a receiver's candidates are evaluated speculatively, many removals per forward. Each round
guesses the decision of the next `window` candidates (first round: "removed"; later: the decision their last
measured delta implies), evaluates the states state + {guessed removals before j} + {c_j} for every j of the window
in one batched `masked_logits` call, and walks them in order: while the guesses hold, every delta is D of exactly
the state the sequential algorithm is in, minus D of the state it was in just before (both measured). The first
wrong guess is committed and the rest of the window is re-evaluated in the next round. So every decision compares
the same two edge states as the sequential algorithm; `window=1` is the sequential schedule itself. Equivalence is
exact in exact arithmetic; in floating point the two runs evaluate the same states in different batch compositions
(the difference is rounding, ~1e-7 relative), so a decision can only differ for a delta within rounding of tau.
Like auto-circuit (and unlike the ACDC repo, which recomputes D at each receiver), D(state) is carried from the
forward that produced the state (also across untested dead-receiver removals, which change D only by rounding).

Resumable: with `checkpoint`, the state (removed edges, scores, next receiver, D of the state, counters) is written
atomically (tmp + rename) after every receiver; a rerun with the same settings continues from there and gives the
circuit of an uninterrupted run (receivers restart their rounds from scratch, so the forwards are the same).

Cost: one variant (a clean-prompts forward with edge weights) per tested edge, plus the re-evaluated rest of a
window after each wrong guess; dead receivers cost nothing. `tau_sweep` runs one search per tau and measures
faithfulness (`evaluate.faithfulness`, task metric) and size: a faithfulness-vs-size curve.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from interp.batch.arguments import check_out
from interp.head_inputs import check_unpadded
from interp.input_checks import bool_arg
from interp.validate import _show, hooked_model_arg

from ..tasks.base import batch_arg, task_arg
from . import checkpoints
from .evaluate import Circuit, _heads_of_slot, faithfulness
from .graph import Graph, graph_arg
from .patching import CleanRun, ablated_outputs, check_metric_value, clean_run, masked_logits, progress_arg

METRICS = ("kl", "task")
WINDOW = 16  # the default window: candidate edges of one receiver tested per batched forward
FORMAT = "interp-acdc-1"


# ---------------------------------------------------------------------------------------------- validation
def check_tau(tau, name: str = "tau") -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(float(tau)) or tau < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (the largest metric change that still removes an "
                         f"edge), got {tau!r}")
    return float(tau)


def _check_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS} ('kl': KL to the full model, 'task': the task metric's "
                         f"absolute change), got {metric!r}")
    return metric


# ---------------------------------------------------------------------------------------------- objective
@dataclass
class Part:
    """One equal-length bucket: clean ids [b, p], ablated outputs [b, p, n_up, d], its share of the examples,
    the task metric (logits [b, p, vocab] -> scalar) and the positions [b, p] bool whose distribution KL reads."""
    clean: torch.Tensor
    ablated: torch.Tensor
    weight: float = 1.0
    task_metric: Callable | None = None
    positions: torch.Tensor | None = None  # None: the last position
    ref_logp: torch.Tensor | None = None  # [n_read, vocab] float32, the full model's log-probs (filled in)
    prefix: CleanRun | None = None  # the clean run, so masked forwards start at the receiver's layer (filled in)


class Objective:
    """D of edge states: `obj(removed [variant, n_up, n_slots] bool) -> [variant] float64` (weighted over parts).

    Counts `n_variants` (edge states evaluated) and `n_forwards` (batched masked_logits calls)."""

    def __init__(self, model, graph: Graph, parts: list, metric: str = "kl", chunk: int = 16):
        self.model, self.graph, self.parts = model, graph, parts
        self.metric = _check_metric(metric)
        self.chunk = _check_int(chunk, "chunk")
        self.n_variants = self.n_forwards = 0
        for p in parts:
            # every edge removed so far ends at or after the receiver under test (reverse topological order), so
            # the layers before it run clean: each masked forward starts there
            p.prefix = clean_run(model, graph, p.clean)
            b, n = p.clean.shape
            if p.positions is None:
                p.positions = torch.zeros(b, n, dtype=torch.bool)
                p.positions[:, -1] = True
            if metric == "task" and p.task_metric is None:
                raise ValueError("metric='task' needs a task metric (logits [batch, pos, vocab] -> scalar)")
        if metric == "kl":
            for p in parts:
                p.ref_logp = None
                full = masked_logits(model, graph, p.clean, p.ablated, torch.zeros(1, graph.n_up, graph.n_slots),
                                     logits_at=self._cols(p), prefix=p.prefix)
                p.ref_logp = self._logp(full[0], p)

    @staticmethod
    def _cols(part: Part) -> torch.Tensor:
        """The positions KL reads in any row of the part: only these are unembedded (most of a short forward's
        cost with a large vocabulary)."""
        return part.positions.any(0).nonzero().flatten()

    def _logp(self, logits: torch.Tensor, part: Part) -> torch.Tensor:
        """logits [batch, len(cols), vocab] at the part's read columns -> log-probs [n_read, vocab] float32."""
        read = part.positions[:, self._cols(part)]  # [batch, len(cols)]
        return torch.log_softmax(logits[read.to(logits.device)].float(), -1)

    def _value(self, logits: torch.Tensor, part: Part) -> float:
        if self.metric == "task":
            return float(check_metric_value(part.task_metric(logits), "acdc (metric='task')"))
        logp = self._logp(logits, part)  # [n_read, vocab]
        ref = part.ref_logp
        return float((ref.exp() * (ref - logp)).sum(-1).mean())

    def __call__(self, removed: torch.Tensor) -> torch.Tensor:
        w = removed.float()
        out = torch.zeros(w.shape[0], dtype=torch.float64)
        for p in self.parts:
            for s in range(0, w.shape[0], self.chunk):
                lg = masked_logits(self.model, self.graph, p.clean, p.ablated, w[s:s + self.chunk],
                                   logits_at=self._cols(p) if self.metric == "kl" else None, prefix=p.prefix)
                self.n_forwards += 1
                for i in range(lg.shape[0]):
                    out[s + i] += p.weight * self._value(lg[i], p)
        self.n_variants += w.shape[0]
        return out

    def fingerprint(self) -> str:
        """A digest of the prompts, the ablation values and the read positions (for checkpoints). The ablation values
        enter as their sum and absolute sum to 4 significant digits, so a search started on one device resumes on
        another (a CPU's and a GPU's float32 sums differ in the last digits) while other data is still refused."""
        h = hashlib.sha256(self.metric.encode())
        for p in self.parts:
            h.update(p.clean.detach().cpu().to(torch.int64).numpy().tobytes())
            h.update(p.positions.cpu().numpy().tobytes())
            h.update(checkpoints.ablation_summary(p.ablated))
            h.update(f" {p.weight:.9g}".encode())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- the search
@dataclass
class _State:
    removed: torch.Tensor  # [n_up, n_slots] bool
    scores: torch.Tensor  # [n_up, n_slots] float, NaN where no edge or not tested yet
    next: int = 0  # position in the receiver order
    d_cur: float = 0.0  # D of the current state
    d_full: float = 0.0
    n_tested: int = 0
    n_skipped: int = 0
    n_variants: int = 0
    n_forwards: int = 0
    wall_s: float = 0.0


def receiver_order(graph: Graph) -> list[int]:
    """Slot indices, logits first (slots are stored in forward order, so reversed is reverse topological)."""
    return list(reversed(range(graph.n_slots)))


def is_dead(graph: Graph, removed: torch.Tensor, slot: int, valid: torch.Tensor | None = None) -> bool:
    """True when no node that input `slot` feeds keeps an outgoing edge (its inputs cannot change the output)."""
    sl = graph.slots[slot]
    if sl.kind == "logits":
        return False
    valid = graph.valid() if valid is None else valid
    for n in _heads_of_slot(graph, sl):
        u = graph.up_index(n)
        if bool((valid[u] & ~removed[u]).any()):
            return False
    return True


def _removes(delta: float, tau: float, metric: str) -> bool:
    return (abs(delta) if metric == "task" else delta) < tau


def _receiver(obj: Objective, st: _State, slot: int, tau: float, window: int) -> None:
    """Decide every incoming edge of `slot` (senders latest first), speculatively `window` at a time."""
    cands = list(reversed(range(obj.graph.n_up_of_slot[slot])))
    guess = [True] * len(cands)  # first guess: removed
    i = 0
    while i < len(cands):
        win = list(range(i, min(len(cands), i + window)))
        states, base_of = [], []  # base_of[n]: the variant whose state is n's base (-1: the current state)
        cur, last = st.removed.clone(), -1
        for n, j in enumerate(win):
            v = cur.clone()
            v[cands[j], slot] = True
            states.append(v)
            base_of.append(last)
            if guess[j]:
                cur, last = v, n
        vals = obj(torch.stack(states)).tolist()
        d0 = st.d_cur
        st.n_variants, st.n_forwards = obj.n_variants, obj.n_forwards
        i = win[-1] + 1
        for n, j in enumerate(win):
            delta = vals[n] - st.d_cur  # st.d_cur is D of the base state of n while the guesses held
            st.scores[cands[j], slot] = delta
            st.n_tested += 1
            rm = _removes(delta, tau, obj.metric)
            if rm:
                st.removed[cands[j], slot] = True
                st.d_cur = vals[n]
            if rm != guess[j]:  # wrong guess: the rest of the window was measured from another state
                for n2 in range(n + 1, len(win)):
                    b = d0 if base_of[n2] < 0 else vals[base_of[n2]]
                    guess[win[n2]] = _removes(vals[n2] - b, tau, obj.metric)
                i = j + 1
                break


def search(obj: Objective, tau: float, window: int = WINDOW, skip_dead: bool = True, checkpoint=None,
           progress: Callable | None = None, max_receivers: int | None = None) -> Circuit:
    """ACDC over `obj.graph` with objective `obj` (see the module docstring). Returns the Circuit.

    `max_receivers`: stop once that many receivers (counted from the logits, over resumes) are done; the Circuit
    then has meta["complete"] = False and the later receivers' edges all kept (a partial search, for timing)."""
    tau = check_tau(tau)
    window = _check_int(window, "window")
    bool_arg("skip_dead", skip_dead, "acdc")
    if max_receivers is not None:
        _check_int(max_receivers, "max_receivers")
    graph = obj.graph
    valid = graph.valid()
    t0 = time.perf_counter()
    settings = {"format": FORMAT, "graph": graph.describe(), "tau": tau, "metric": obj.metric,
                "skip_dead": bool(skip_dead), "data": obj.fingerprint()}
    progress_arg(progress, "acdc")
    path = None if checkpoint is None else checkpoints.checkpoint_path(checkpoint, "acdc")
    st = _load(path, settings, graph) if path is not None else None
    if st is None:
        scores = torch.full((graph.n_up, graph.n_slots), float("nan"))
        st = _State(torch.zeros(graph.n_up, graph.n_slots, dtype=torch.bool), scores)
        st.d_full = st.d_cur = float(obj(st.removed[None])[0])
        st.n_variants, st.n_forwards = obj.n_variants, obj.n_forwards
    else:
        obj.n_variants, obj.n_forwards = st.n_variants, st.n_forwards
        if progress:
            progress(f"resume: {path} at receiver {st.next} of {graph.n_slots}")
    order = receiver_order(graph)
    stop = len(order) if max_receivers is None else min(len(order), max_receivers)
    while st.next < stop:
        slot = order[st.next]
        t1 = time.perf_counter()
        if skip_dead and is_dead(graph, st.removed, slot, valid):
            n = graph.n_up_of_slot[slot]
            st.removed[:n, slot] = True
            st.scores[:n, slot] = 0.0
            st.n_skipped += n
        else:
            _receiver(obj, st, slot, tau, window)
        st.next += 1
        st.wall_s += time.perf_counter() - t1
        if path is not None:
            _save(path, settings, st)
        if progress:
            progress(f"receiver {st.next}/{len(order)} {graph.slots[slot].name}: kept "
                     f"{int((valid & ~st.removed).sum())} edges, D={st.d_cur:.4g}, {st.n_variants} variants, "
                     f"{time.perf_counter() - t1:.1f} s")
    kept = valid & ~st.removed
    meta = {"tau": tau, "metric": obj.metric, "window": window, "complete": st.next == len(order),
            "n_receivers_done": st.next, "skip_dead": bool(skip_dead),
            "d_full": st.d_full, "d_circuit": st.d_cur, "n_tested": st.n_tested, "n_skipped": st.n_skipped,
            "n_variants": st.n_variants, "n_forwards": st.n_forwards, "search_s": round(st.wall_s, 3),
            "wall_s": round(time.perf_counter() - t0, 3)}
    return Circuit(graph, st.scores.clone(), method="acdc", in_circuit=kept, meta=meta)


# ---------------------------------------------------------------------------------------------- checkpoints
def _save(path: Path, settings: dict, st: _State) -> None:
    checkpoints.save(path, settings, {k: getattr(st, k) for k in st.__dataclass_fields__})


def _load(path: Path, settings: dict, graph: Graph) -> _State | None:
    """The saved search state, None without a file; a ValueError naming the file for a malformed state (missing or
    unknown fields, `next` outside the receivers, `removed` / `scores` not [n_up, n_slots])."""
    state = checkpoints.load(path, settings, "an ACDC")
    if state is None:
        return None

    def bad(why):
        return checkpoints.invalid(path, "an ACDC", why)

    fields = set(_State.__dataclass_fields__)
    if not isinstance(state, dict) or set(state) != fields:
        have = set(state) if isinstance(state, dict) else set()
        raise bad(f"its state must hold exactly {sorted(fields)}; missing {sorted(fields - have)}, unknown "
                  f"{sorted(have - fields)}" if isinstance(state, dict) else f"its state is a {type(state).__name__}")
    shape = (graph.n_up, graph.n_slots)
    for key, want in (("removed", torch.bool), ("scores", None)):
        t = state[key]
        if (not isinstance(t, torch.Tensor) or tuple(t.shape) != shape
                or (t.dtype != torch.bool if want is torch.bool else not t.dtype.is_floating_point)):
            kind = "bool" if want is torch.bool else "float"
            raise bad(f"{key!r} must be a {kind} tensor {list(shape)}, got "
                      f"{type(t).__name__}{tuple(t.shape) if isinstance(t, torch.Tensor) else ''}")
    nxt = state["next"]
    if isinstance(nxt, bool) or not isinstance(nxt, int) or not 0 <= nxt <= graph.n_slots:
        raise bad(f"'next' must be a receiver position in 0..{graph.n_slots}, got {nxt!r}")
    for key in ("d_cur", "d_full", "wall_s"):
        if (isinstance(state[key], bool) or not isinstance(state[key], (int, float))
                or not math.isfinite(state[key])):
            raise bad(f"{key!r} must be a finite number, got {state[key]!r}")
    done = receiver_order(graph)[:nxt]  # every edge into a finished receiver was tested (or removed untested: 0)
    valid = graph.valid()[:, done]
    if not bool(torch.isfinite(state["scores"][:, done][valid]).all()):
        raise bad(f"'scores' lacks a finite score on some edge of the {nxt} receivers it says are done")
    for key in ("n_tested", "n_skipped", "n_variants", "n_forwards"):
        if isinstance(state[key], bool) or not isinstance(state[key], int) or state[key] < 0:
            raise bad(f"{key!r} must be an int >= 0, got {state[key]!r}")
    return _State(**state)


# ---------------------------------------------------------------------------------------------- entry points
def acdc_batch(model, graph: Graph, clean, ablated: torch.Tensor, tau: float, metric: str = "kl",
         task_metric: Callable | None = None, positions: torch.Tensor | None = None, window: int = WINDOW,
         chunk: int | None = None, skip_dead: bool = True, checkpoint=None, progress=None) -> Circuit:
    """ACDC on one equal-length batch: clean ids [batch, pos], ablated outputs [batch, pos, n_up, d] (from
    `patching.ablated_outputs`). `positions` [batch, pos] bool: where KL reads (default: the last position)."""
    hooked_model_arg(model, "acdc_batch")
    graph = graph_arg(graph, model, "acdc_batch")
    progress_arg(progress, "acdc_batch")
    if task_metric is not None and not callable(task_metric):
        raise TypeError(f"acdc_batch: task_metric must be a callable logits [batch, pos, vocab] -> scalar tensor or "
                        f"None, got {type(task_metric).__name__}")
    bool_arg("skip_dead", skip_dead, "acdc_batch")
    if checkpoint is not None:
        checkpoints.checkpoint_path(checkpoint, "acdc_batch")
    check_tau(tau)
    _check_metric(metric)
    _check_int(window, "window")
    clean = check_unpadded(clean, "clean prompts")
    if positions is not None:
        shape = tuple(clean.shape)
        if not isinstance(positions, torch.Tensor) or positions.dtype != torch.bool or tuple(positions.shape) != shape:
            bool_tensor = isinstance(positions, torch.Tensor) and positions.dtype == torch.bool  # (a wrong shape)
            raise (ValueError if bool_tensor else TypeError)(
                f"acdc_batch: positions must be a bool tensor {list(shape)} (like the clean prompts: True where KL "
                f"reads the next-token distribution) or None (the last position), got {_show(positions)}")
        if not bool(positions.any()):
            raise ValueError("acdc_batch: positions is all False, so KL would read no position; mark at least one "
                             "(None: the last position of each prompt)")
    obj = Objective(model, graph, [Part(clean, ablated, 1.0, task_metric, positions)], metric,
                    chunk=window if chunk is None else chunk)
    return search(obj, tau, window=window, skip_dead=skip_dead, checkpoint=checkpoint, progress=progress)


def task_objective(model, graph: Graph, task, batch, metric: str = "kl", ablation: str = "corrupted",
                   chunk: int = 16, seed: int = 0) -> Objective:
    """The objective over a task's equal-length buckets (weighted by their share of the examples). KL reads the
    loss-mask positions when the task has them (LM-like tasks), else each row's answer position."""
    from .api import buckets

    _check_metric(metric)
    parts, n = [], len(batch)
    for sub in buckets(batch):
        clean = sub.clean.input_ids
        corrupt = None if sub.corrupt is None else sub.corrupt.input_ids
        abl = ablated_outputs(model, graph, clean, corrupt, ablation, seed=seed)
        if sub.loss_mask is not None and bool(sub.loss_mask.any()):
            pos = sub.loss_mask.bool().cpu()
        else:
            pos = torch.zeros(clean.shape, dtype=torch.bool)
            pos[torch.arange(len(sub)), sub.position.cpu()] = True
        parts.append(Part(clean, abl, len(sub) / n, lambda lg, s=sub: task.metric(lg, s), pos))
    return Objective(model, graph, parts, metric, chunk=chunk)


def _faithfulness(model, graph, task, batch, circuits: list, ablation: str, seed: int = 0) -> list:
    """Task-metric faithfulness f of each kept-edge mask, weighted over the buckets."""
    from .api import buckets

    n, acc = len(batch), None
    for sub in buckets(batch):
        clean = sub.clean.input_ids
        corrupt = None if sub.corrupt is None else sub.corrupt.input_ids
        abl = ablated_outputs(model, graph, clean, corrupt, ablation, seed=seed)
        r = faithfulness(model, graph, clean, abl, lambda lg, s=sub: task.metric(lg, s), circuits)
        w = len(sub) / n
        vals = torch.tensor([r["full"], r["empty"], *r["metric"]], dtype=torch.float64) * w
        acc = vals if acc is None else acc + vals
    full, empty, ms = float(acc[0]), float(acc[1]), acc[2:].tolist()
    return [{"full": full, "empty": empty, "metric": m,
             "f": (m - empty) / (full - empty) if full != empty else float("nan")} for m in ms]


def acdc_task(model, task, batch, tau: float, metric: str = "kl", ablation: str = "corrupted",
              graph: Graph | None = None, window: int = WINDOW, chunk: int | None = None, checkpoint=None,
              evaluate: bool = True, progress=None, seed: int = 0, max_receivers: int | None = None) -> Circuit:
    """ACDC on a task's prompts (all equal-length buckets at once). meta["faithfulness"]: the task-metric f of the
    kept edges (when `evaluate`)."""
    hooked_model_arg(model, "acdc_task")
    progress_arg(progress, "acdc_task")
    bool_arg("evaluate", evaluate, "acdc_task")
    if checkpoint is not None:  # a bad path is refused before the prompts run
        checkpoints.checkpoint_path(checkpoint, "acdc_task")
    task, batch = task_arg(task, "acdc_task"), batch_arg(batch, "acdc_task")
    check_tau(tau)
    _check_int(window, "window")
    graph = graph_arg(graph, model, "acdc_task")
    obj = task_objective(model, graph, task, batch, metric, ablation, chunk=window if chunk is None else chunk,
                         seed=seed)
    c = search(obj, tau, window=window, checkpoint=checkpoint, progress=progress, max_receivers=max_receivers)
    c.meta.update(task=getattr(task, "name", ""), n=len(batch), ablation=ablation)
    if evaluate:
        c.meta["faithfulness"] = _faithfulness(model, graph, task, batch, [c.in_circuit], ablation, seed)[0]
    return c


def tau_sweep(model, task, batch, taus, metric: str = "kl", ablation: str = "corrupted",
              graph: Graph | None = None, window: int = WINDOW, chunk: int | None = None, checkpoint_dir=None,
              target_faithfulness: float | None = None, progress=None, seed: int = 0) -> dict:
    """One ACDC search per tau: {"rows": [{tau, n_edges, f, metric, d_circuit, n_variants, search_s}],
    "circuits": [Circuit], "chosen": index of the smallest circuit with f >= target_faithfulness (or None)}.

    `checkpoint_dir`: one checkpoint per tau (acdc_tau{tau}.pt), so a rerun reuses finished searches. Raises
    ValueError when no tau reaches `target_faithfulness` (the checkpoints stay: they are complete searches)."""
    hooked_model_arg(model, "tau_sweep")
    if isinstance(taus, torch.Tensor) and taus.dim() <= 1:
        taus = taus.reshape(-1).tolist()
    if isinstance(taus, (str, bytes, dict)) or not (isinstance(taus, (int, float)) or hasattr(taus, "__iter__")):
        raise TypeError(f"tau_sweep: taus must be a list of finite numbers >= 0 (ACDC thresholds, e.g. [0.001, 0.01, "
                        f"0.1]), got {_show(taus)}")
    taus = [taus] if isinstance(taus, (int, float)) else list(taus)
    if not taus:
        raise ValueError("taus must be a non-empty list of finite numbers >= 0, got an empty list")
    taus = [check_tau(t, "every tau in taus") for t in taus]
    progress_arg(progress, "tau_sweep")
    if checkpoint_dir is not None:  # a bad folder is refused before the searches start
        check_out(checkpoint_dir, "tau_sweep: checkpoint_dir")
    if target_faithfulness is not None and (isinstance(target_faithfulness, bool)
                                            or not isinstance(target_faithfulness, (int, float))
                                            or not math.isfinite(float(target_faithfulness))):
        raise ValueError(f"target_faithfulness must be a finite number (e.g. 0.8), got {target_faithfulness!r}")
    _check_metric(metric)
    _check_int(window, "window")
    task, batch = task_arg(task, "tau_sweep"), batch_arg(batch, "tau_sweep")
    graph = graph_arg(graph, model, "tau_sweep")
    obj = task_objective(model, graph, task, batch, metric, ablation, chunk=window if chunk is None else chunk,
                         seed=seed)
    cdir = None if checkpoint_dir is None else Path(checkpoint_dir)
    if cdir is not None:
        cdir.mkdir(parents=True, exist_ok=True)
    circuits = []
    for t in taus:
        ck = None if cdir is None else cdir / f"acdc_tau{t:.6g}.pt"
        circuits.append(search(obj, t, window=window, checkpoint=ck, progress=progress))
    faith = _faithfulness(model, graph, task, batch, [c.in_circuit for c in circuits], ablation, seed)
    rows = []
    for t, c, f in zip(taus, circuits, faith):
        c.meta.update(task=getattr(task, "name", ""), n=len(batch), ablation=ablation, faithfulness=f)
        rows.append({"tau": t, "n_edges": c.n_edges, "f": f["f"], "metric": f["metric"],
                     "d_circuit": c.meta["d_circuit"], "n_variants": c.meta["n_variants"],
                     "search_s": c.meta["search_s"]})
    chosen = None
    if target_faithfulness is not None:
        ok = [i for i, r in enumerate(rows) if r["f"] >= target_faithfulness]
        if not ok:
            best = max(range(len(rows)), key=lambda i: rows[i]["f"])
            raise ValueError(f"no tau in {taus} reaches faithfulness {target_faithfulness} (best "
                             f"{rows[best]['f']:.3f} at tau={rows[best]['tau']}); try smaller taus")
        chosen = min(ok, key=lambda i: (rows[i]["n_edges"], -rows[i]["f"]))
    return {"rows": rows, "circuits": circuits, "chosen": chosen, "full": faith[0]["full"],
            "empty": faith[0]["empty"], "n_edges_graph": graph.n_edges}
