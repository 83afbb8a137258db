"""Circuits from discrete sparse-autoencoder codes (O'Neill & Bui 2024, arXiv 2405.12522): no ablations, no gradients.

    from interp.analyses import circuits as C, tasks as T
    task = T.get_task("ioi"); batch = task.make(model, n=8)       # 8 positive (clean) + 8 negative (corrupt)
    circuit = C.sae_circuit(model, task, batch)                    # a scored Circuit, method "sae"
    circuit.meta["head_scores"]                                    # [n_layers][n_heads] node scores

Method. Each example is run once; every node of the circuit graph other than `input` (each head, and each MLP in
models that have them) contributes one vector per example: its output written to the residual stream
(`head_inputs.node_outputs`, i.e. the head's z @ W_O, `hook_result`), averaged over the chosen positions. A
sparse autoencoder (ReLU encoder, unit-norm decoder, pre-encoder bias tied to the output bias, MSE + l1 * L1 of
the features, full-batch Adam) is trained on these vectors, and each vector is discretised to an integer code: the
index of its most active feature (an extra "silent" code when no feature fires). A node is scored by how its codes
separate the positive (clean) from the negative (corrupted) examples, an edge by how the *pair* of codes of its
two ends does.

Where this follows the paper (and its code, github.com/charlieoneill11/sae-circuits):
- positives / negatives are prompts on which the model can / cannot predict the answer (here a task's clean and
  corrupted prompts); a handful of them (5-10 each) are enough;
- the SAE architecture and loss above (tied pre-encoder bias, unit-norm dictionary, MSE + lambda * L1, Adam,
  full-batch epochs; their defaults: 300 features, lambda 0.02, lr 1e-3, 500 epochs);
- inputs are the heads' residual-stream outputs (`stack_head_results`), averaged over positions (their
  `position="mean"`, used here with positions="mean");
- codes are the argmax of the SAE features; the node score `score="unique"` is the paper's: the number of distinct
  codes seen on positives and never on negatives, here divided by the number of distinct codes seen at all (their
  `normalise=True` variant);
- edge scores (`score="unique"`) are their code co-occurrence method: the distinct (code_u, code_v) pairs seen on
  positives and never on negatives, divided (as for nodes) by the distinct pairs seen at all.

Where it has to guess or deviates (the paper does not say, or says something that does not fit this graph):
- `shared=False` (default) trains one small SAE per node (batched into one optimisation); the paper trains one
  dictionary shared by all heads (`shared=True` here, slower on large models). With few examples a per-node
  dictionary of a few codes works as a per-head vector quantiser, so "same behaviour" gives the same code;
- inputs are divided by one global RMS (all nodes together, so relative head magnitudes survive) so that `l1` means
  the same on every model; the paper used raw activations;
- default positions "auto": the task's scored positions (`loss_mask`, e.g. induction's second repeat) where it
  has them, else the read position (IOI, greater-than: the last token) - the paper averaged over all positions;
- defaults `n_codes=32`, `n_epochs=100`, `lr=1e-2` (not the paper's 300 / 500 / 1e-3): fewer, faster steps keep
  the fit in seconds on a CPU; 32 codes ranked toy-induction's circuit best of 4 / 8 / 32 (docs/notes/sae.md);
- the paper scores the codes of many held-out examples (250 + 250) after fitting the SAE on ~10; here the SAE is
  fitted on the first `n_fit` pairs (default all) and every example of the batch is scored;
- `score="mi"`: mutual information (bits, plug-in) between the code and the positive/negative label, an
  alternative that does not reward merely diverse codes;
- MLP nodes get codes like heads (the paper only scores heads); edges from `input` get the downstream node's
  score, edges into `logits` the upstream node's score; a KV-head input (GQA) gets the best pair score over the
  query heads of its group;
- the paper turns pair scores into a node ranking (top-k pairs); here they are the edge scores of the Circuit.

Scores are in [0, 1] (higher = separates better), not in units of the task metric: compare rankings (ROC,
Spearman, top-k overlap) with the patching / attribution methods, not values. A pair of codes separates at least
as well as either code alone, so node -> node edges outscore the input / logits edges: plain top-n selection can
keep no path input -> logits; grow the circuit from the logits instead (`select(top_n, method="greedy")`).

Cost: one forward per prompt, then full-batch SAE training on [n_nodes, 2 * n, d_model] - about n_nodes * 2n *
d_model * n_codes * 6 flops per epoch; seconds for the toy, longer for d_model 576-640 on a loaded CPU
(docs/notes/sae.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from interp.validate import _show, hooked_model_arg, int_arg

from ..tasks.base import batch_arg, task_arg
from .evaluate import Circuit
from .graph import Graph, graph_arg

MIN_EXAMPLES = 5  # positive and negative examples each (the paper: 5-10)
MAX_CODES = 4096
SCORES = ("unique", "mi")
POSITIONS = ("auto", "mean", "read", "loss")


# ---------------------------------------------------------------------------------------------- the estimator
class DiscreteSAE(TransformerMixin, BaseEstimator):
    """Sparse autoencoder(s) with discrete codes: `fit(X)` with X [n_samples, n_groups, d] (or [n_samples, d]),
    `transform(X)` -> feature activations [n_samples, n_groups, n_codes], `predict(X)` -> int64 codes
    [n_samples, n_groups] in 0..n_codes (n_codes = "silent": no feature active).

    shared=False: one dictionary per group (per node), trained together; shared=True: one dictionary for all
    groups (the paper's setting). Deterministic for a given `random_state` (CPU, float32, full-batch Adam)."""

    def __init__(self, n_codes: int = 32, l1: float = 0.02, n_epochs: int = 100, lr: float = 1e-2,
                 shared: bool = False, random_state: int = 0):
        self.n_codes = n_codes
        self.l1 = l1
        self.n_epochs = n_epochs
        self.lr = lr
        self.shared = shared
        self.random_state = random_state

    def _check_params(self) -> None:
        k = self.n_codes
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= MAX_CODES:
            raise ValueError(f"n_codes (codebook size) must be an int in [2, {MAX_CODES}], got {k!r}")
        for name, what, positive in (("l1", "l1 (sparsity penalty)", False), ("lr", "lr (learning rate)", True)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or v < 0 or (positive and v == 0):
                raise ValueError(f"{what} must be a finite float {'> 0' if positive else '>= 0'}, got {v!r}")
        e = self.n_epochs
        if isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < 1:
            raise ValueError(f"n_epochs must be a positive int, got {e!r}")
        if not isinstance(self.shared, bool):
            raise TypeError(f"shared must be a bool, got {self.shared!r}")
        int_arg("random_state (seed)", self.random_state, minimum=-2**63, maximum=2**64 - 1, where="DiscreteSAE")

    def _as3d(self, X) -> torch.Tensor:
        X = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X).detach().float().cpu()
        if X.dim() == 2:
            X = X[:, None]
        if X.dim() != 3 or X.shape[0] < 1 or X.shape[2] < 1:
            raise ValueError(f"X must be [n_samples, n_groups, d] or [n_samples, d], got {tuple(X.shape)}")
        if not torch.isfinite(X).all():
            raise ValueError("X has NaN or infinite values")
        return X

    def fit(self, X, y=None):
        """Learn the dictionaries. `y` is ignored (the codes are unsupervised, as in the paper)."""
        self._check_params()
        X = self._as3d(X)  # [n, g, d]
        n, g, d = X.shape
        self.n_groups_in_, self.n_features_in_ = g, d
        rms = X.double().pow(2).mean().sqrt()  # float64: float32 squares of values near 1e38 overflow to inf
        self.scale_ = float(rms) if float(rms) > 0 else 1.0
        Z = self._groups(X / self.scale_)  # [G, m, d]: G dictionaries, m samples each
        G, k = Z.shape[0], int(self.n_codes)
        gen = torch.Generator().manual_seed(int(self.random_state))
        dec = torch.nn.functional.normalize(torch.randn(G, k, d, generator=gen), dim=-1)  # [G, k, d] unit rows
        params = {"b_dec": Z.mean(1).clone(),  # [G, d], the tied pre-encoder / output bias (paper: data median)
                  "w_enc": dec.transpose(1, 2).clone(),  # [G, d, k]
                  "b_enc": torch.zeros(G, k),  # [G, k]
                  "w_dec": dec}  # [G, k, d]
        for p in params.values():
            p.requires_grad_(True)
        opt = torch.optim.Adam(params.values(), lr=float(self.lr))
        with torch.enable_grad():
            for _ in range(int(self.n_epochs)):
                opt.zero_grad()
                f = _encode(Z, params)  # [G, m, k]
                rec = torch.bmm(f, params["w_dec"]) + params["b_dec"][:, None]
                loss = (rec - Z).pow(2).mean() + float(self.l1) * f.abs().sum(-1).mean()
                loss.backward()
                opt.step()
                with torch.no_grad():  # keep the dictionary on the unit sphere (the paper's constraint)
                    params["w_dec"].copy_(torch.nn.functional.normalize(params["w_dec"], dim=-1))
        self.params_ = {name: p.detach() for name, p in params.items()}
        self.loss_ = float(loss.detach())
        return self

    def _groups(self, X: torch.Tensor) -> torch.Tensor:
        """[n, g, d] -> [G, m, d]: one dictionary per group, or one for all (shared)."""
        if self.shared:
            return X.reshape(1, -1, X.shape[2])
        return X.transpose(0, 1).contiguous()

    def transform(self, X) -> np.ndarray:
        """Feature activations [n_samples, n_groups, n_codes] (ReLU, >= 0)."""
        check_is_fitted(self, "params_")
        X = self._as3d(X)
        if tuple(X.shape[1:]) != (self.n_groups_in_, self.n_features_in_):
            raise ValueError(f"X must be [n, {self.n_groups_in_}, {self.n_features_in_}] as in fit, "
                             f"got {tuple(X.shape)}")
        with torch.no_grad():
            f = _encode(self._groups(X / self.scale_), self.params_)  # [G, m, k]
        n, g = X.shape[:2]
        f = f.reshape(n, g, -1) if self.shared else f.transpose(0, 1)
        return f.numpy()

    def predict(self, X) -> np.ndarray:
        """Integer codes [n_samples, n_groups]: the most active feature, or n_codes when none is active."""
        f = self.transform(X)
        codes = f.argmax(-1)
        codes[f.max(-1) <= 0] = int(self.n_codes)
        return codes.astype(np.int64)


def _encode(Z: torch.Tensor, p: dict) -> torch.Tensor:
    """[G, m, d] -> ReLU features [G, m, k]."""
    return torch.relu(torch.bmm(Z - p["b_dec"][:, None], p["w_enc"]) + p["b_enc"][:, None])


# ---------------------------------------------------------------------------------------------- separation scores
def separation(ids: torch.Tensor, labels: torch.Tensor, score: str = "unique") -> torch.Tensor:
    """How well integer ids [n, *shape] separate labels [n] (1 = positive, 0 = negative), per entry of `shape`.

    "unique": (# distinct ids seen on positives, never on negatives) / (# distinct ids seen) - the paper's count;
    "mi": mutual information (bits) between the id and the label, plug-in estimate."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    ids = torch.as_tensor(ids)
    if ids.dim() < 1 or ids.shape[0] < 1 or ids.dtype.is_floating_point or ids.dtype.is_complex:
        raise ValueError(f"separation: ids must be integer ids [n, ...] with n >= 1, got {_show(ids)}")
    y = torch.as_tensor(labels)
    n = ids.shape[0]
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"separation: labels must be 1-D with one label per example (n = {n}), got shape "
                         f"{tuple(y.shape)}")
    if not ((y == 0) | (y == 1)).all():
        raise ValueError(f"separation: labels must be 0/1 or bool (1 = positive, 0 = negative), got values "
                         f"{sorted(set(y.tolist()))[:6]}")
    y = y.bool()
    same_pos = torch.zeros(ids.shape, dtype=torch.float64)  # per example: how many positives share its id
    same_neg = torch.zeros(ids.shape, dtype=torch.float64)
    for i in range(n):  # O(n) memory per step: [n, *shape]
        eq = (ids == ids[i]).double()  # [n, *shape]
        same_pos[i] = eq[y].sum(0)
        same_neg[i] = eq[~y].sum(0)
    same = same_pos + same_neg  # >= 1 (the example itself)
    yy = y.reshape(-1, *([1] * (ids.dim() - 1))).expand(ids.shape)
    if score == "unique":
        distinct = (1.0 / same).sum(0)  # each distinct id counted once
        only_pos = ((same_neg == 0) & yy).double() / same_pos.clamp_min(1)
        return (only_pos.sum(0) / distinct).float()
    n_pos = float(y.sum())
    p_y = torch.where(yy, torch.tensor(n_pos / n), torch.tensor(1 - n_pos / n)).double()
    joint = torch.where(yy, same_pos, same_neg)  # examples with this id and this label
    return (torch.log2(joint * n / (same * p_y * n)).mean(0)).float()


# ---------------------------------------------------------------------------------------------- model -> vectors
def node_vectors(model, graph: Graph, batch, positions: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Each node's residual-stream output averaged over the chosen positions, for every clean and corrupted example:
    X [2 * n, n_up - 1, d_model] (rows: the clean examples, then the corrupted ones; nodes: `graph.up[1:]`) and
    labels [2 * n] (1 = clean / positive)."""
    from interp.head_inputs import node_outputs

    from .api import buckets
    from .patching import stack_outputs

    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if positions == "loss" and batch.loss_mask is None:
        raise ValueError(f"positions='loss' needs a task with a loss_mask; task {batch.task!r} has none "
                         f"(use 'read', 'mean' or 'auto')")
    how = positions if positions != "auto" else ("loss" if batch.loss_mask is not None else "read")
    rows = {"clean": [], "corrupt": []}
    for sub in buckets(batch):
        b, p = sub.clean.input_ids.shape
        w = torch.zeros(b, p)  # [batch, pos] averaging weights
        if how == "mean":
            w[:] = 1.0
        elif how == "read":
            w[torch.arange(b), sub.position.cpu()] = 1.0
        else:
            w = sub.loss_mask.cpu().float()
            empty = w.sum(1) == 0
            w[empty, sub.position.cpu()[empty]] = 1.0  # rows without scored positions: the read position
        w = w / w.sum(1, keepdim=True)
        for side in rows:
            a = stack_outputs(node_outputs(model, getattr(sub, side).input_ids), graph)  # [b, p, n_up, d]
            rows[side].append(torch.einsum("bp,bpud->bud", w, a[:, :, 1:].float().cpu()))
    X = torch.cat(rows["clean"] + rows["corrupt"], 0)  # buckets keep order within, not across: labels suffice
    n = len(batch)
    return X, torch.cat([torch.ones(n), torch.zeros(n)]).long()


# ---------------------------------------------------------------------------------------------- the circuit
def sae_circuit(model, task, batch, n_codes: int = 32, l1: float = 0.02, n_epochs: int = 100, lr: float = 1e-2,
                shared: bool = False, score: str = "unique", positions: str = "auto", n_fit: int | None = None,
                seed: int = 0, graph: Graph | None = None) -> Circuit:
    """Score every edge of the circuit graph from discrete SAE codes of the nodes' outputs on `batch`'s clean
    (positive) and corrupted (negative) prompts. Needs at least 5 of each. Returns a Circuit (method "sae") with
    meta["head_scores"] [n_layers][n_heads] and meta["node_scores"] {node: score}."""
    hooked_model_arg(model, "sae_circuit")
    task, batch = task_arg(task, "sae_circuit"), batch_arg(batch, "sae_circuit")
    made_by, name = getattr(batch, "task", ""), getattr(task, "name", "")
    if made_by and name and made_by != name:
        raise ValueError(f"sae_circuit: batch was made by task {made_by!r}, not by task {name!r}; pass the task that "
                         f"made it (task.make(model, n=...))")
    seed = int_arg("seed", seed, minimum=-2**63, maximum=2**64 - 1, where="sae_circuit")
    n = len(batch)
    if batch.corrupt is None:
        raise ValueError(f"the SAE-code method needs negative examples: task {getattr(task, 'name', '?')!r} gives "
                         f"no corrupted prompts (use induction, ioi, greater-than, needle)")
    if n < MIN_EXAMPLES:
        raise ValueError(f"the SAE-code method needs at least {MIN_EXAMPLES} positive and {MIN_EXAMPLES} negative "
                         f"examples; the batch has {n} of each (make the task with n >= {MIN_EXAMPLES})")
    if n_fit is not None and (isinstance(n_fit, bool) or not isinstance(n_fit, int) or not MIN_EXAMPLES <= n_fit <= n):
        raise ValueError(f"n_fit must be an int in [{MIN_EXAMPLES}, {n}] (pairs used to train the SAE), got {n_fit!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    sae = DiscreteSAE(n_codes=n_codes, l1=l1, n_epochs=n_epochs, lr=lr, shared=shared, random_state=seed)
    sae._check_params()  # before the model runs: nothing is computed for bad settings
    graph = graph_arg(graph, model, "sae_circuit")
    X, y = node_vectors(model, graph, batch, positions)  # [2n, n_nodes, d], [2n]
    fit_rows = torch.cat([torch.arange(n_fit), n + torch.arange(n_fit)]) if n_fit else torch.arange(2 * n)
    codes = torch.from_numpy(sae.fit(X[fit_rows]).predict(X))  # [2n, n_nodes]
    node = separation(codes, y, score)  # [n_nodes]
    k = int(n_codes) + 1
    pair = separation(codes[:, :, None] * k + codes[:, None, :], y, score)  # [n_nodes, n_nodes]
    scores = edge_scores(graph, node, pair)
    nodes = graph.up[1:]
    head = torch.tensor([[float(node[nodes.index(f"L{l}H{h}")]) for h in range(graph.n_heads)]
                         for l in range(graph.n_layers)])
    meta = {"task": getattr(task, "name", ""), "n": n, "n_codes": int(n_codes), "l1": float(l1),
            "n_epochs": int(n_epochs), "lr": float(lr), "shared": shared, "score": score, "positions": positions,
            "n_fit": n_fit or n, "seed": seed, "sae_loss": sae.loss_, "head_scores": head.tolist(),
            "node_scores": {name: float(v) for name, v in zip(nodes, node)}}
    return Circuit(graph, scores, method="sae", meta=meta)


def edge_scores(graph: Graph, node: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
    """[n_up, n_slots] from node scores [n_nodes] and pair scores [n_nodes, n_nodes] (nodes = graph.up[1:]):
    node -> node edges get the pair score, input -> v the score of v, u -> logits the score of u; a KV-head input
    the best pair score over its group's query heads. NaN where there is no edge."""
    index = {name: i for i, name in enumerate(graph.up[1:])}
    out = torch.full((graph.n_up, graph.n_slots), float("nan"))
    g = graph.n_heads // graph.n_kv_heads
    for s, slot in enumerate(graph.slots):
        m = graph.n_up_of_slot[s]
        if slot.kind == "logits":
            out[1:m, s] = node[:m - 1]
            out[0, s] = float("nan") if m == 1 else 0.0  # the direct path input -> logits carries no code
            continue
        if slot.kind in ("k", "v") and graph.n_kv_heads != graph.n_heads:
            targets = [index[f"L{slot.layer}H{h}"] for h in range(slot.index * g, (slot.index + 1) * g)]
        else:
            targets = [index[slot.node]]
        out[0, s] = node[targets].max()
        if m > 1:
            out[1:m, s] = pair[:m - 1][:, targets].max(1).values
    return out
