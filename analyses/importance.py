"""Head importance on a task, every method in one tidy table (`model, layer, head, method, score`).

Sign convention: a positive score means the head helps the task (removing it makes the metric worse).

- `ablation_zero` / `ablation_mean` / `ablation_resample`: metric change when one head's output (hook_z) is
  replaced by zero, by its mean over the batch's real tokens, or by its output on another input (the task's
  corrupted prompt, else the next example of the batch). The heads of a sweep run in the batch dimension: one
  batched forward ablates many heads at once (`HeadMask` with a per-row mask), not one forward per head.
- `mask_gradient` (Michel et al. 2019): I_h = E_x |dL/dxi_h| at xi = 1, with L the task loss (the metric, negated
  when higher is better), normalised per layer to unit l2 norm. Per-example gradients come from one backward pass
  with a per-row mask.
- `dla`: direct logit attribution (`interp.readout`): each head's direct effect on the answer logit (minus the
  wrong answer's where the task has one) at the read position, or on the next token's logit at every loss
  position for language-modelling tasks; averaged over the batch.
- `attention_influence` (Hua et al. 2025): the relative loss change (L_masked - L) / L when the head is masked
  (zero output), averaged over examples; `attention_influence(model, batch, heads)` gives the per-example score
  for a set of heads, the quantity that paper ranks pre-training documents by.
"""

from __future__ import annotations

import re
import numbers
import time
import warnings
from typing import Callable, Iterable, Sequence

import pandas as pd
import numpy as np
import torch

from interp.head_mask import HeadMask
from interp.input_checks import bool_arg
from interp.readout import logit_attribution
from interp.validate import hooked_model_arg, int_arg, progress_arg, tensor_arg

from .tasks.base import batch_arg, task_arg

ABLATIONS = ("ablation_zero", "ablation_mean", "ablation_resample")
METHODS = ABLATIONS + ("mask_gradient", "dla", "attention_influence")
LOGIT_BUDGET = 2**29  # bytes of float32 logits per batched forward (512 MiB)


def check_methods(methods) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    try:
        methods = tuple(methods)
    except TypeError:
        raise TypeError(f"methods must be a name or a list of names from {METHODS}, got {methods!r}") from None
    if not methods:
        raise ValueError(f"methods is empty; give one or more of {list(METHODS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown importance method(s) {unknown!r}; allowed: {list(METHODS)}")
    repeated = sorted({m for m in methods if methods.count(m) > 1})
    if repeated:
        raise ValueError(f"methods repeats {repeated}; name each method once (a repeat would give its scores twice)")
    return methods


def _task_batch(task, batch, where: str) -> tuple:
    """(Task, TaskBatch): a task name is looked up like head_importance does; anything else is a TypeError."""
    return task_arg(task, where), batch_arg(batch, where)


def _name(task) -> str:
    return str(getattr(task, "name", None) or type(task).__name__)


def _loss_fn(task, where: str = "head importance") -> Callable:
    """Per-example loss (lower is better) from the task metric, which must give one value per example: a float
    tensor [batch] from `task.metric(logits, batch, per_example=True)` (a TypeError / ValueError otherwise)."""
    sign = -1.0 if task.higher_is_better else 1.0
    name = _name(task)

    def loss(logits, batch):
        m = task.metric(logits, batch, per_example=True)
        n = len(batch)
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"{where}: task {name!r}: metric(logits, batch, per_example=True) must return a tensor "
                            f"of shape [batch] (one value per example; this batch has {n} rows), got "
                            f"{type(m).__name__} {m!r:.40}")
        if tuple(m.shape) != (n,):
            raise ValueError(f"{where}: task {name!r}: metric(logits, batch, per_example=True) must return one value "
                             f"per example, a tensor of shape [batch] (this batch has {n} rows: shape ({n},)); got "
                             f"shape {tuple(m.shape)}"
                             + (" (a scalar: does the metric ignore per_example?)" if m.dim() == 0 else ""))
        if not m.dtype.is_floating_point:
            raise TypeError(f"{where}: task {name!r}: metric(logits, batch, per_example=True) must return a float "
                            f"tensor, got {m.dtype}")
        return sign * m

    return loss


def _finite(values: torch.Tensor, where: str, task: str, context: Callable[[list[int]], str]) -> torch.Tensor:
    """values [..., batch] of the task loss: a ValueError naming where the metric is NaN/Inf (context(index of
    the leading dims) says under which ablation), since every score computed from it would be NaN."""
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        idx = bad.nonzero()[0].tolist()
        raise ValueError(f"{where}: the loss of task {task!r} is NaN/Inf{context(idx[:-1])} "
                         f"for {int(bad.sum())} of {values.numel()} values (first: example {idx[-1]}); every score "
                         "computed from it would be NaN: check the task's metric and the model's logits")
    return values


def _rows_per_forward(model, batch) -> int:
    per_row = batch.clean.input_ids.shape[1] * model.cfg.d_vocab * 4
    return max(1, LOGIT_BUDGET // per_row)


def _tile_batch(batch, k: int):
    """k copies of the batch stacked (copy j = rows j*b .. (j+1)*b - 1)."""
    return batch[torch.arange(len(batch)).repeat(k)]


def _z_names(model) -> list[str]:
    return [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]


def _baseline(model, batch, kind: str) -> dict | str:
    """HeadMask baseline per layer: zero, the batch mean of each head, or another input's z."""
    if kind == "ablation_zero":
        return "zero"
    if kind == "ablation_mean":
        _, cache = model.run_with_cache(batch.clean, names=_z_names(model))
        valid = batch.clean.attention_mask
        out = {}
        for l, n in enumerate(_z_names(model)):
            z = cache[n]  # [b, pos, head, d_head]
            w = valid[..., None, None].to(z.dtype) if valid is not None else torch.ones_like(z[..., :1, :1])
            out[l] = (z * w).sum((0, 1), keepdim=True) / w.sum((0, 1), keepdim=True).clamp_min(1)
        return out
    source = batch.corrupt if batch.corrupt is not None else None
    if source is None:  # resample from the next example of the batch
        if len(batch) < 2:
            raise ValueError("ablation_resample needs a task with corrupted prompts or a batch of >= 2 examples")
        source = batch[torch.roll(torch.arange(len(batch)), -1)].clean
    _, cache = model.run_with_cache(source, names=_z_names(model))
    return {l: cache[n] for l, n in enumerate(_z_names(model))}


def _tile_baseline(base, k: int):
    if isinstance(base, str):
        return base
    return {l: t if t.shape[0] == 1 else t.repeat(k, 1, 1, 1) for l, t in base.items()}


def ablated_losses(model, task, batch, kind: str = "ablation_zero", heads_per_forward: int | None = None,
                   progress: Callable | None = None, checkpoint=None) -> torch.Tensor:
    """[layer, head, batch] per-example task loss with each head ablated alone, the heads of a sweep batched.
    `heads_per_forward`: heads ablated per batched forward (an int >= 1; None: as many as ~LOGIT_BUDGET allows).
    `progress(done, total)` hears after every forward how many heads are done. `checkpoint=PATH`: the losses so far
    are saved there after every forward, and a rerun with the same model and dtype, prompts, ablation and heads per
    forward continues from them (the same forwards, so the same losses as an uninterrupted sweep); another sweep's
    file or a damaged one is refused (a ValueError)."""
    from .circuits import checkpoints

    hooked_model_arg(model, "ablated_losses")
    task, batch = _task_batch(task, batch, "ablated_losses")
    if kind not in ABLATIONS:
        raise ValueError(f"kind must be one of {ABLATIONS}, got {kind!r}")
    heads_per_forward = int_arg("heads_per_forward", heads_per_forward, minimum=1, where="ablated_losses",
                                optional=True)
    progress_arg(progress, "ablated_losses")
    path = None if checkpoint is None else checkpoints.checkpoint_path(checkpoint, "ablated_losses")
    L, H, b = model.cfg.n_layers, model.cfg.n_heads, len(batch)
    loss = _loss_fn(task, "ablated_losses")
    baseline = _baseline(model, batch, kind)
    k = heads_per_forward or max(1, _rows_per_forward(model, batch) // b)
    heads = [(l, h) for l in range(L) for h in range(H)]
    out = torch.zeros(L, H, b)
    first = 0
    if path is not None:
        settings = _sweep_settings(model, task, batch, kind, k, baseline)
        saved = checkpoints.load(path, settings, "a head-ablation")
        if saved is not None:
            first, out = _sweep_state(saved, path, (L, H, b), len(heads), k)
            if progress:
                progress(first, len(heads))
    for start in range(first, len(heads), k):
        chunk = heads[start:start + k]
        xi = torch.ones(len(chunk), L, H)
        for j, (l, h) in enumerate(chunk):
            xi[j, l, h] = 0
        xi = xi.repeat_interleave(b, 0)  # [len(chunk) * b, L, H]: rows j*b .. (j+1)*b - 1 ablate head j
        tiled = _tile_batch(batch, len(chunk))  # copy-major, like the mask
        mask = HeadMask(xi.to(model.device), baseline=_tile_baseline(baseline, len(chunk)))
        with torch.no_grad():
            per = loss(model.run_with_hooks(tiled.clean, interventions=[mask]), tiled).reshape(len(chunk), b)
        _finite(per, "ablated_losses", _name(task),
                lambda j: " with head L{}H{} ablated ({})".format(*chunk[j[0]], kind))
        for j, (l, h) in enumerate(chunk):
            out[l, h] = per[j].float().cpu()
        if path is not None and start + k < len(heads):
            checkpoints.save(path, settings, {"done": start + k, "losses": out})
        if progress:
            progress(min(start + k, len(heads)), len(heads))
    return out


def _sweep_settings(model, task, batch, kind: str, k: int, baseline) -> dict:
    """What a saved ablation sweep must match to be continued: the model and its dtype, the task's prompts and
    answers, the ablation and its values, the heads per forward. (The device is left out, as in ACDC's and edge
    patching's checkpoints: a sweep may continue on another device.)"""
    from .circuits import checkpoints

    base = "zero" if isinstance(baseline, str) else b" ".join(
        checkpoints.ablation_summary(baseline[l]) for l in sorted(baseline)).decode()
    return {"format": 1, **checkpoints.model_settings(model),
            "shape": [model.cfg.n_layers, model.cfg.n_heads, len(batch)],
            "task": _name(task), "prompts": checkpoints.prompts_digest(batch), "kind": kind, "baseline": base,
            "heads_per_forward": int(k)}


def _sweep_state(saved, path, shape: tuple, n_heads: int, k: int) -> tuple[int, torch.Tensor]:
    """(heads done, losses) of a saved sweep, checked: `done` a whole number of forwards of k heads inside the
    sweep, losses a finite float tensor [layer, head, batch] on the heads done (the rest is not read)."""
    from .circuits import checkpoints

    kind = "a head-ablation"
    saved = checkpoints.state_fields(saved, path, kind, ("done", "losses"))
    done = checkpoints.done_count(saved["done"], path, kind, n_heads, k, f"forwards of {k} heads", finished_ok=False)
    losses = saved["losses"]
    if (not isinstance(losses, torch.Tensor) or tuple(losses.shape) != tuple(shape)
            or not losses.dtype.is_floating_point):
        raise checkpoints.invalid(path, kind, f"'losses' must be a float tensor {list(shape)}")
    if not bool(torch.isfinite(losses.reshape(n_heads, -1)[:int(done)]).all()):
        raise checkpoints.invalid(path, kind, f"'losses' is not finite on some of the {int(done)} heads it says "
                                              "are done")
    return int(done), losses.float().clone()


def ablation_effect(ablated: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """[layer, head, batch] ablated and [batch] clean losses -> [layer, head] mean loss increase."""
    return ablated.mean(-1) - full.mean()


ZERO_LOSS = 1e-6  # |L| below this: the relative change of that example is undefined (NaN)


def _loss_pair(masked, full, where: str) -> None:
    """masked [..., batch] and full [batch]: float tensors whose last dimensions agree."""
    tensor_arg("full", full, dims=(1,), floating=True, where=where, shape_doc="[batch] of clean losses")
    tensor_arg("masked", masked, floating=True, where=where, shape_doc="[..., batch] of masked losses")
    if masked.dim() == 0 or masked.shape[-1] != full.shape[0]:
        raise ValueError(f"{where}: masked {tuple(masked.shape)} must end in the batch of full {tuple(full.shape)}: "
                         f"[..., {full.shape[0]}]")


def relative_change(masked: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """AttentionInfluence per example: (L_masked - L) / |L|, [..., batch] against [batch]; NaN for the examples
    whose clean loss is 0 (|L| < 1e-6), where a relative change is undefined (it used to divide by 1e-6)."""
    _loss_pair(masked, full, "relative_change")
    return torch.where(full.abs() < ZERO_LOSS, torch.nan, (masked - full) / full.abs().clamp_min(ZERO_LOSS))


def mean_relative_change(masked: torch.Tensor, full: torch.Tensor, where: str) -> torch.Tensor:
    """[..., batch] -> [...] mean relative change over the examples with a nonzero clean loss; a warning names how
    many were left out, a ValueError when every clean loss is 0."""
    _loss_pair(masked, full, where)
    zero = int((full.abs() < ZERO_LOSS).sum())
    if zero == full.numel():
        raise ValueError(f"{where}: every clean loss is 0 (|L| < {ZERO_LOSS:g}), so the relative change "
                         f"(L_masked - L) / |L| is undefined; use ablation_zero (the absolute change) instead")
    if zero:
        warnings.warn(f"{where}: {zero} of {full.numel()} examples have clean loss 0 (|L| < {ZERO_LOSS:g}); "
                      "their relative change is undefined and left out of the mean", stacklevel=3)
    return relative_change(masked, full).nanmean(-1)


def clean_losses(model, task, batch) -> torch.Tensor:
    """[batch] per-example task loss of the unmodified model."""
    hooked_model_arg(model, "clean_losses")
    task, batch = _task_batch(task, batch, "clean_losses")
    with torch.no_grad():
        full = _loss_fn(task, "clean_losses")(model.run_with_hooks(batch.clean), batch).float().cpu()
    return _finite(full, "clean_losses", _name(task), lambda _: " on the unmodified model")


def ablation_scores(model, task, batch, kind: str = "ablation_zero", **kwargs) -> torch.Tensor:
    """[layer, head] mean loss increase when each head is ablated alone (positive = the head helps)."""
    return ablation_effect(ablated_losses(model, task, batch, kind, **kwargs), clean_losses(model, task, batch))


def attention_influence_scores(model, task, batch, **kwargs) -> torch.Tensor:
    """[layer, head] mean relative loss change (L_masked - L) / L when the head alone is masked (zero output)."""
    full = clean_losses(model, task, batch)
    masked = ablated_losses(model, task, batch, "ablation_zero", **kwargs)
    return mean_relative_change(masked, full, "attention_influence_scores")


def mask_gradient_scores(model, task, batch, normalize: bool = True) -> torch.Tensor:
    """[layer, head] E_x |dL/dxi_h| at xi = 1 (Michel et al.), per-layer l2-normalised (normalize=False: raw)."""
    hooked_model_arg(model, "mask_gradient_scores")
    task, batch = _task_batch(task, batch, "mask_gradient_scores")
    bool_arg("normalize", normalize, "mask_gradient_scores")
    L, H, b = model.cfg.n_layers, model.cfg.n_heads, len(batch)
    xi = torch.ones(b, L, H, device=model.device, requires_grad=True)
    logits = model.run_with_hooks(batch.clean, interventions=[HeadMask(xi)])
    per = _loss_fn(task, "mask_gradient_scores")(logits, batch)  # [b]
    _finite(per.detach(), "mask_gradient_scores", _name(task), lambda _: " on the unmodified model")
    (g,) = torch.autograd.grad(per.sum(), xi)  # row i of xi only reaches example i: per-example gradients
    if not bool(torch.isfinite(g).all()):
        bad = sorted({int(l) for l in (~torch.isfinite(g)).nonzero()[:, 1]})
        raise ValueError(f"mask_gradient_scores: mask gradients are NaN/Inf at layer(s) {bad}")
    imp = g.abs().mean(0).float().cpu()  # [L, H]
    if normalize:
        imp = imp / imp.norm(dim=1, keepdim=True).clamp_min(1e-20)
    return imp


def dla_scores(model, task, batch) -> torch.Tensor:
    """[layer, head] mean direct logit attribution to the answer (minus the wrong answer) at the read position, or
    to the next token at every loss position for language-modelling tasks."""
    hooked_model_arg(model, "dla_scores")
    task, batch = _task_batch(task, batch, "dla_scores")
    ids = batch.clean.input_ids
    b, p = ids.shape
    if batch.loss_mask is not None:  # position t predicts ids[t + 1]
        dirs = torch.full((b, p), -1, dtype=torch.long, device=ids.device)
        dirs[:, :-1] = torch.where(batch.loss_mask[:, :-1].to(ids.device), ids[:, 1:], -1)
    else:
        rows = torch.arange(b, device=ids.device)
        pair = batch.wrong is not None
        dirs = torch.full((b, p, 2 if pair else 1), -1, dtype=torch.long, device=ids.device)
        dirs[rows, batch.position, 0] = batch.answer
        if pair:
            dirs[rows, batch.position, 1] = batch.wrong
    att = logit_attribution(model, batch.clean, dirs)
    used = ((dirs if dirs.dim() == 2 else dirs[..., 0]) >= 0).float().cpu()[..., None, None]  # [b, p, 1, 1]
    return (att.heads * used).sum((0, 1)) / used.sum().clamp_min(1)


def attention_influence(model, batch, heads: Iterable[tuple[int, int] | str], task=None) -> torch.Tensor:
    """Per-example AttentionInfluence of a set of heads: (L_masked - L) / L, heads masked by zeroing their output.
    `heads`: (layer, head) pairs or the circuits API's head names, e.g. [(18, 6)] or ["L18H6"].

    `task` gives the loss (default: next-token loss over the batch's loss_mask); returns [batch], NaN for an
    example whose clean loss is 0 (the relative change is undefined there)."""
    hooked_model_arg(model, "attention_influence")
    batch = batch_arg(batch, "attention_influence")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    xi = torch.ones(L, H)
    for l, h in head_pairs(heads, L, H, "attention_influence"):
        xi[l, h] = 0
    if task is None:
        from .tasks.base import next_token_loss as loss

        if batch.loss_mask is None:
            raise ValueError(f"attention_influence: the batch of task {batch.task or '?'!r} has no loss_mask, so "
                             "there is no next-token loss to use; pass task= (its metric gives the loss)")
    else:
        task = task_arg(task, "attention_influence")
        loss = _loss_fn(task, "attention_influence")
    with torch.no_grad():
        full = loss(model.run_with_hooks(batch.clean), batch)
        masked = loss(model.run_with_hooks(batch.clean, interventions=[HeadMask(xi.to(model.device))]), batch)
    full, masked = full.float().cpu(), masked.float().cpu()
    name = _name(task) if task is not None else f"{batch.task or '?'} (next-token loss)"
    _finite(full, "attention_influence", name, lambda _: " on the unmodified model")
    _finite(masked, "attention_influence", name, lambda _: " with the heads masked")
    return relative_change(masked, full)


def _as_int(v):
    if isinstance(v, torch.Tensor) and v.dim() == 0 and not (v.dtype.is_floating_point or v.dtype == torch.bool):
        return int(v)
    return int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else None


_HEAD_NAME = re.compile(r"L(\d+)H(\d+)")  # a head as the circuits API names it: "L18H6"


def _entry_ints(entry) -> list | None:
    """One entry of a heads list -> [layer, head] (None where an element is not an int), or None when it is neither a
    (layer, head) pair (a tuple, list, or tensor / array row) nor an "L{layer}H{head}" name."""
    if isinstance(entry, str):
        named = _HEAD_NAME.fullmatch(entry)
        return [int(g) for g in named.groups()] if named else None
    if not (isinstance(entry, (tuple, list)) or getattr(entry, "ndim", None) == 1):
        return None
    pair = tuple(entry)
    return [_as_int(x) for x in pair] if len(pair) == 2 else None


def head_pairs(heads, n_layers: int, n_heads: int, where: str) -> list[tuple[int, int]]:
    """Checked (layer, head) int pairs inside the model: a TypeError / ValueError naming the bad entry otherwise.
    An entry is a (layer, head) pair or a head's name as the circuits API writes it, "L{layer}H{head}" ("L18H6")."""
    form = ("a list of (layer, head) int pairs or 'L{layer}H{head}' names (as the circuits API names heads), "
            "e.g. [(0, 1), (1, 3)] or ['L0H1', 'L1H3']")
    if isinstance(heads, (str, bytes)) or not isinstance(heads, Iterable):
        one = isinstance(heads, str) and _HEAD_NAME.fullmatch(heads)
        hint = f" (one head: [{heads!r}])" if one else ""
        raise TypeError(f"{where}: heads must be {form}, got {type(heads).__name__} {str(heads)[:40]!r}{hint}")
    out = []
    for entry in heads:
        ints = _entry_ints(entry)
        if ints is None or None in ints:
            shown = entry.tolist() if hasattr(entry, "tolist") and not isinstance(entry, numbers.Number) else entry
            raise TypeError(f"{where}: heads must be {form}; got the entry {shown!r}")
        l, h = ints
        if not (0 <= l < n_layers and 0 <= h < n_heads):
            raise ValueError(f"{where}: head ({l}, {h}) out of range; the model has layers 0..{n_layers - 1} and "
                             f"heads 0..{n_heads - 1}")
        out.append((l, h))
    if not out:
        raise ValueError(f"{where} needs at least one (layer, head); heads is empty")
    return out


def head_importance(model, task, methods: Sequence[str] = METHODS, n: int = 32, seed: int = 0, batch=None,
                    progress: Callable[[str], None] | None = None, checkpoint=None, **task_options) -> pd.DataFrame:
    """Tidy DataFrame `model, layer, head, method, score` (one row per head and method) for `task`.

    task: a name from `interp.analyses.tasks.TASKS` or a Task; `batch` overrides the examples it builds.
    `progress(msg)` hears each method's time and, inside an ablation sweep, the heads done after every forward.
    `checkpoint=PATH` (a file path, e.g. 'out/imp.pt'): each ablation sweep (the costly part: one batched forward
    per few heads) keeps its losses beside it, in PATH's name with the sweep's kind added ('out/imp.ablation_zero.pt'),
    after every forward, and a rerun with the same model, dtype, prompts and methods continues each sweep where it
    stopped, giving the same table as an uninterrupted run (`ablated_losses(checkpoint=)`; the gradient and DLA
    methods take one pass and are recomputed). The files stay after the run; delete them to start over."""
    from .circuits import checkpoints

    hooked_model_arg(model, "head_importance")
    from . import tasks as T

    methods = check_methods(methods)
    progress_arg(progress, "head_importance")
    path = None if checkpoint is None else checkpoints.checkpoint_path(checkpoint, "head_importance")
    if isinstance(task, str):
        task = T.get_task(task, **task_options)
    elif task_options:
        raise ValueError(f"head_importance: task options {sorted(task_options)} go with a task name; set them on "
                         "the Task itself (task.with_options(...))")
    task = task_arg(task, "head_importance")
    if batch is None:
        T.check_batch_fits(model, task, n, seed, where="head_importance")
        batch = task.make(model, n=n, seed=seed)
    batch = batch_arg(batch, "head_importance").to(model.device)
    full = clean_losses(model, task, batch)
    sweeps: dict[str, torch.Tensor] = {}

    def sweep(kind):  # the zero-ablation sweep serves both ablation_zero and attention_influence
        if kind not in sweeps:
            heard = None if progress is None else (
                lambda done, total: progress(f"{model.name}: {kind}, {done} of {total} heads"))
            sweeps[kind] = ablated_losses(model, task, batch, kind, progress=heard,
                                          checkpoint=None if path is None else sweep_path(path, kind))
        return sweeps[kind]

    frames = []
    for method in methods:
        t0 = time.perf_counter()
        if method in ABLATIONS:
            scores = ablation_effect(sweep(method), full)
        elif method == "attention_influence":
            scores = mean_relative_change(sweep("ablation_zero"), full, "head_importance")
        elif method == "mask_gradient":
            scores = mask_gradient_scores(model, task, batch)
        else:
            scores = dla_scores(model, task, batch)
        if progress:
            progress(f"{model.name}: {method} ({time.perf_counter() - t0:.1f} s)")
        frames.append(scores_frame(model.name, method, scores))
    return pd.concat(frames, ignore_index=True)


def sweep_path(path, kind: str):
    """Where head_importance(checkpoint=PATH) keeps the `kind` ablation sweep: PATH with the kind before its suffix
    ('imp.pt' -> 'imp.ablation_zero.pt'; 'imp' -> 'imp.ablation_zero')."""
    return path.with_name(f"{path.stem}.{kind}{path.suffix}")


def scores_frame(model_name: str, method: str, scores: torch.Tensor) -> pd.DataFrame:
    if isinstance(scores, np.ndarray):
        scores = torch.from_numpy(scores)
    tensor_arg("scores", scores, dims=(2,), where="scores_frame", shape_doc="[layer, head]")
    L, H = scores.shape
    return pd.DataFrame({"model": model_name, "layer": torch.arange(L).repeat_interleave(H).tolist(),
                         "head": torch.arange(H).repeat(L).tolist(), "method": method,
                         "score": scores.reshape(-1).tolist()})
