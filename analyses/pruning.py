"""Pruning curves (Michel et al. 2019, Fig. 3-style) and agreement between importance methods.

`pruning_curve` removes heads (zero output) from least to most important and measures the task loss after each
step, in one batched forward per chunk of steps (resumable: `checkpoint=PATH` keeps the steps measured after every
forward); `random_pruning_curve` is the control with random orders (resumable too).
`heads_removable` reads off how many heads can go for a given relative loss increase. `method_agreement` compares
the per-head scores of every pair of methods: Spearman rank correlation and top-k overlap.
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from interp.head_mask import HeadMask
from interp.validate import (fraction_list, frame_arg, hooked_model_arg, int_arg, is_number_column, not_meta,
                             progress_arg, real_arg)

from .importance import _finite, _loss_fn, _name, _rows_per_forward, _task_batch, _tile_batch

DEFAULT_FRACTIONS = tuple(i / 20 for i in range(20))  # 0 %, 5 %, ..., 95 % of the heads removed
MAX_ORDERS = 10_000  # each random order runs the whole curve again: more would run for hours


def _order(scores: torch.Tensor) -> list[tuple[int, int]]:
    """Heads from least to most important (ties broken by position)."""
    L, H = scores.shape
    flat = scores.reshape(-1).float()
    idx = sorted(range(L * H), key=lambda i: (float(flat[i]), i))
    return [(i // H, i % H) for i in idx]


def _steps_per_forward(model, batch) -> int:
    """Curve steps measured in one batched forward (the batch tiled once per step, ~LOGIT_BUDGET of logits)."""
    return max(1, _rows_per_forward(model, batch) // len(batch))


def _losses_after_removing(model, task, batch, order, counts: Sequence[int], where: str, done: Sequence[float] = (),
                           after: Callable[[list[float]], None] | None = None) -> list[float]:
    """Mean loss at each count of `counts` with the first `count` heads of `order` removed, _steps_per_forward
    steps per forward. `done`: the losses of the first steps, already measured (a whole number of forwards);
    `after(losses so far)` hears after every forward."""
    L, H, b = model.cfg.n_layers, model.cfg.n_heads, len(batch)
    loss = _loss_fn(task, where)
    k = _steps_per_forward(model, batch)
    out = list(done)
    for start in range(len(out), len(counts), k):
        chunk = counts[start:start + k]
        xi = torch.ones(len(chunk), L, H)
        for j, c in enumerate(chunk):
            for (l, h) in order[:c]:
                xi[j, l, h] = 0
        tiled = _tile_batch(batch, len(chunk))
        mask = HeadMask(xi.repeat_interleave(b, 0).to(model.device))
        with torch.no_grad():
            per = loss(model.run_with_hooks(tiled.clean, interventions=[mask]), tiled).reshape(len(chunk), b)
        _finite(per, where, _name(task), lambda j: f" with {chunk[j[0]]} heads removed")
        out.extend(float(v) for v in per.float().mean(1))
        if after is not None:
            after(out)
    return out


def _counts(n_heads: int, fractions, where: str) -> list[int]:
    """Heads removed at each fraction, sorted; 0 (the full model, the reference of rel_increase) always included."""
    fr = fraction_list("fractions", fractions, low_open=False, high_open=True,
                       meaning="fractions of the heads removed", example=[0, 0.25, 0.5], where=where)
    return sorted({0} | {int(round(f * n_heads)) for f in fr})


def _check_scores(scores, L: int, H: int) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"pruning_curve: scores must be a tensor [{L}, {H}] (layers x heads), got "
                        f"{type(scores).__name__}")
    if tuple(scores.shape) != (L, H):
        raise ValueError(f"pruning_curve: scores must be a tensor [{L}, {H}] (layers x heads), got "
                         f"{tuple(scores.shape)}")
    not_meta("scores", scores, "pruning_curve")
    if not (scores.dtype.is_floating_point or scores.dtype in (torch.int64, torch.int32, torch.int16, torch.int8,
                                                               torch.uint8)):
        raise TypeError(f"pruning_curve: scores must be a real-valued tensor, got {scores.dtype}")
    bad = ~torch.isfinite(scores.float())
    if bool(bad.any()):
        l, h = bad.nonzero()[0].tolist()
        raise ValueError(f"pruning_curve: scores are NaN/Inf ({int(bad.sum())} of {L * H}, first at layer {l} head "
                         f"{h}); the removal order needs a finite score for every head")
    return scores


def pruning_curve(model, task, batch, scores: torch.Tensor, fractions=DEFAULT_FRACTIONS,
                  progress: Callable | None = None, checkpoint=None) -> pd.DataFrame:
    """Loss after removing the n least important heads by `scores` [layer, head] -> columns n_removed, fraction,
    loss, rel_increase. The full model (n_removed 0, the reference of rel_increase) is always measured.
    `progress(done, total)` hears after every batched forward (and on resuming) how many steps of the curve are
    measured.
    `checkpoint=PATH`: the losses so far are saved there after every forward (the last one too, so a rerun of a
    finished curve returns it without a forward), and a rerun with the same model and dtype, task and prompts,
    removal order (from `scores`), steps (from `fractions`) and steps per forward continues from them: the same
    forwards, so the same curve as an uninterrupted run. Another run's file or a damaged one is refused (a
    ValueError naming it)."""
    from .circuits import checkpoints

    where = "pruning_curve"
    hooked_model_arg(model, where)
    task, batch = _task_batch(task, batch, where)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    scores = _check_scores(scores, L, H)
    counts = _counts(L * H, fractions, where)
    progress_arg(progress, where)
    path = None if checkpoint is None else checkpoints.checkpoint_path(checkpoint, where)
    order = _order(scores)
    done: list[float] = []
    if path is not None:
        settings = _curve_settings(model, task, batch, checkpoints.digest(torch.tensor(order)), counts)
        saved = checkpoints.load(path, settings, CURVE_KIND)
        if saved is not None:
            done = _curve_state(saved, path, counts, settings["steps_per_forward"])
            if progress:
                progress(len(done), len(counts))

    def after(losses):
        if path is not None:
            checkpoints.save(path, settings, {"done": len(losses), "losses": list(losses)})
        if progress:
            progress(len(losses), len(counts))

    losses = _losses_after_removing(model, task, batch, order, counts, where, done, after)
    return _frame(counts, losses, L * H)


CURVE_KIND = "a pruning-curve"


def _curve_settings(model, task, batch, order: str, counts: list[int]) -> dict:
    """What a saved pruning curve must match to be continued: the model and its dtype, the task's prompts and
    answers, the removal order (its digest, or "random"), the heads removed at each step, the steps per forward (the
    device is left out, as in ablated_losses' checkpoints)."""
    from .circuits import checkpoints

    return {"format": 1, **checkpoints.model_settings(model),
            "shape": [model.cfg.n_layers, model.cfg.n_heads, len(batch)], "task": _name(task),
            "prompts": checkpoints.prompts_digest(batch), "order": order,
            "n_removed": list(counts), "steps_per_forward": _steps_per_forward(model, batch)}


def _curve_state(saved, path, counts: list[int], k: int) -> list[float]:
    """The losses of a saved curve's measured steps, checked: a whole number of forwards of k steps (all of them
    for a finished curve), each loss a finite float."""
    from .circuits import checkpoints

    saved = checkpoints.state_fields(saved, path, CURVE_KIND, ("done", "losses"))
    done = checkpoints.done_count(saved["done"], path, CURVE_KIND, len(counts), k, f"forwards of {k} steps",
                                  finished_ok=True)
    losses = saved["losses"]
    if (not isinstance(losses, list) or len(losses) != done
            or not all(isinstance(v, float) and np.isfinite(v) for v in losses)):
        raise checkpoints.invalid(path, CURVE_KIND, f"'losses' must be a list of the {done} finite losses (floats) "
                                                    f"of the steps it says are done, got {losses!r:.60}")
    return list(losses)


def random_pruning_curve(model, task, batch, fractions=DEFAULT_FRACTIONS, n_orders: int = 3, seed: int = 0,
                         progress: Callable | None = None, checkpoint=None) -> pd.DataFrame:
    """The control: the same curve for random removal orders, averaged over `n_orders` orders (drawn in turn from
    one generator seeded with `seed`). `progress(done, total)` hears after every batched forward (and on resuming)
    how many of the n_orders x steps are measured.
    `checkpoint=PATH`: the losses so far are saved there after every forward, and a rerun with the same model and
    dtype, task and prompts, orders (`n_orders`, `seed`), steps and steps per forward continues from them to the
    same curve as an uninterrupted run; a finished run's file returns it without a forward. Another run's file or a
    damaged one is refused (a ValueError naming it)."""
    from .circuits import checkpoints

    where = "random_pruning_curve"
    hooked_model_arg(model, where)
    task, batch = _task_batch(task, batch, where)
    int_arg("n_orders", n_orders, minimum=1, maximum=MAX_ORDERS, where=where)
    seed = int_arg("seed", seed, minimum=-2**63, maximum=2**64 - 1, where=where)  # manual_seed's range
    progress_arg(progress, where)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    counts = _counts(L * H, fractions, where)
    path = None if checkpoint is None else checkpoints.checkpoint_path(checkpoint, where)
    g = torch.Generator().manual_seed(seed)
    orders = [[(i // H, i % H) for i in torch.randperm(L * H, generator=g).tolist()] for _ in range(n_orders)]
    total = n_orders * len(counts)
    runs: list[list[float]] = []
    if path is not None:
        settings = {**_curve_settings(model, task, batch, "random", counts), "n_orders": n_orders, "seed": seed}
        saved = checkpoints.load(path, settings, RANDOM_KIND)
        if saved is not None:
            runs = _random_state(saved, path, counts, n_orders, settings["steps_per_forward"])
            if progress:
                progress(sum(map(len, runs)), total)
    for o in range(n_orders):
        done = runs[o] if o < len(runs) else []
        if o == len(runs):
            runs.append(done)
        if len(done) == len(counts):
            continue

        def after(losses, o=o):
            runs[o] = list(losses)
            if path is not None:
                checkpoints.save(path, settings, {"losses": [list(r) for r in runs]})
            if progress:
                progress(sum(map(len, runs)), total)

        runs[o] = _losses_after_removing(model, task, batch, orders[o], counts, where, done, after)
    return _frame(counts, np.mean(runs, axis=0).tolist(), L * H)


RANDOM_KIND = "a random-pruning-curve"


def _random_state(saved, path, counts: list[int], n_orders: int, k: int) -> list[list[float]]:
    """The losses of a saved random curve, checked: one list per order begun (at most n_orders), every list but the
    last complete, the last a whole number of forwards of k steps, each loss a finite float."""
    from .circuits import checkpoints

    runs = checkpoints.state_fields(saved, path, RANDOM_KIND, ("losses",))["losses"]
    n = len(counts)
    if not isinstance(runs, list) or not 1 <= len(runs) <= n_orders:
        raise checkpoints.invalid(path, RANDOM_KIND, f"'losses' must be a list of 1..{n_orders} lists (one per "
                                                     f"order begun), got {runs!r:.60}")
    for o, losses in enumerate(runs):
        if (not isinstance(losses, list) or not all(isinstance(v, float) and np.isfinite(v) for v in losses)
                or len(losses) > n or (o < len(runs) - 1 and len(losses) != n)
                or (len(losses) % k and len(losses) != n)):
            need = f"all {n}" if o < len(runs) - 1 else f"a whole number of forwards of {k} steps (at most {n})"
            raise checkpoints.invalid(path, RANDOM_KIND, f"the losses of order {o} must be {need} finite floats, "
                                                         f"got {losses!r:.60}")
    return [list(r) for r in runs]


def _frame(counts, losses, n_heads) -> pd.DataFrame:
    base = losses[0]  # counts[0] == 0: the full model
    df = pd.DataFrame({"n_removed": counts, "fraction": [c / n_heads for c in counts], "loss": losses})
    df["rel_increase"] = (df["loss"] - base) / abs(base)  # losses of higher-is-better metrics are negative
    return df


def heads_removable(curve: pd.DataFrame, tolerance: float = 0.05) -> int:
    """The most heads removed (at a measured step) with loss within (1 + tolerance) of the full model's."""
    frame_arg(curve, ("n_removed", "rel_increase"), "heads_removable", "curve", "pruning_curve")
    tolerance = real_arg("tolerance", tolerance, low=0, where="heads_removable")
    if curve.empty:
        raise ValueError("heads_removable: curve is empty (no rows); pass the DataFrame pruning_curve returns")
    for col in ("n_removed", "rel_increase"):
        if not is_number_column(curve[col]):
            raise TypeError(f"heads_removable: curve column {col!r} must hold numbers (as pruning_curve returns), got "
                            f"dtype {curve[col].dtype}")
    if bool(curve["n_removed"].isna().any()):
        raise ValueError("heads_removable: curve column 'n_removed' has missing values; every row needs its count of "
                         "removed heads (as pruning_curve returns)")
    if curve["n_removed"].iloc[0] != 0:
        raise ValueError("heads_removable: the curve must start at n_removed = 0 (the full model)")
    if not np.isfinite(curve["rel_increase"].iloc[0]):
        raise ValueError("heads_removable: rel_increase of the full model (n_removed 0) is NaN/Inf: the curve has "
                         "no finite reference loss (is the full model's loss 0 or NaN?)")
    ok = curve[curve["rel_increase"] <= tolerance]
    # the first step that breaks the tolerance (or is NaN) ends the run of acceptable steps
    bad = curve[~(curve["rel_increase"] <= tolerance)]
    limit = bad["n_removed"].min() if not bad.empty else float("inf")
    return int(ok[ok["n_removed"] < limit]["n_removed"].max())


def method_agreement(table: pd.DataFrame, top_frac: float = 0.1) -> pd.DataFrame:
    """Pairwise Spearman correlation and top-k overlap (k = top_frac of the heads, 0 < top_frac <= 1) between the
    methods of a `head_importance` table (one model; the `model` column may be absent)."""
    where = "method_agreement"
    frame_arg(table, ("layer", "head", "method", "score"), where, "table", "head_importance")
    top_frac = real_arg("top_frac", top_frac, low=0, high=1, low_open=True, where=where)
    if "model" in table.columns and table["model"].nunique() > 1:
        raise ValueError("method_agreement compares methods on one model; filter the table by model first")
    dup = table.duplicated(["layer", "head", "method"], keep=False)
    if bool(dup.any()):
        first = table[dup].iloc[0]
        raise ValueError(f"{where}: table has {int(dup.sum())} rows that repeat a (layer, head, method), e.g. layer "
                         f"{first['layer']} head {first['head']} {first['method']}; give one score per head and "
                         "method (drop duplicates or average them yourself)")
    if table["method"].nunique() < 2:
        raise ValueError(f"{where} compares methods: the table needs at least 2, got "
                         f"{sorted(table['method'].unique().tolist())}")
    if not is_number_column(table["score"]):
        raise TypeError(f"{where}: table column 'score' must hold numbers (as head_importance returns), got dtype "
                        f"{table['score'].dtype}")
    unscored = sorted(str(m) for m, s in table.groupby("method")["score"] if not bool(s.notna().any()))
    if unscored:
        raise ValueError(f"{where}: method(s) {unscored} have no score (all NaN), so there is nothing to compare; "
                         "drop them from the table")
    wide = table.pivot_table(index=["layer", "head"], columns="method", values="score")
    k = max(1, int(round(top_frac * len(wide))))
    rows = []
    for a, b in combinations(wide.columns, 2):
        ra, rb = wide[a].rank(), wide[b].rank()
        rho = float(np.corrcoef(ra, rb)[0, 1])
        top_a = set(wide[a].nlargest(k).index)
        top_b = set(wide[b].nlargest(k).index)
        rows.append({"method_a": a, "method_b": b, "spearman": rho, f"top{k}_overlap": len(top_a & top_b) / k})
    return pd.DataFrame(rows)
