"""The `importance` job: head importance of one or many models on a task, every method in one tidy table.

    interp importance smollm2-135m gemma3-270m --task ioi --out runs/imp [--methods ...] [--n 32] [--resume]

Shards per model (each resumable on its own), named after the methods (as in --methods and the CSV's method column,
so the progress lines read the same): one per group of methods that share a computation -- `ablation_zero`
(ablation_zero and attention_influence come from the same sweep), `ablation_mean`, `ablation_resample`,
`mask_gradient`, `dla` -- and `pruning` (mask-gradient order against random orders on the
bundled prose and code; on the job's task for tokenizer-less models). Assembled into DIR/importance.csv and importance.parquet (`model, layer, head, method,
score`), agreement.csv, pruning.csv and report.html.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import pandas as pd
import torch

from ..input_checks import bool_arg
from .checks import check_grid, check_keys, check_numbers, check_seed
from .runner import Job, register, shard_progress

SHARD_METHODS = {
    "ablation_zero": ("ablation_zero", "attention_influence"),
    "ablation_mean": ("ablation_mean",),
    "ablation_resample": ("ablation_resample",),
    "mask_gradient": ("mask_gradient",),
    "dla": ("dla",),
}


def _shards(model: str, options: dict) -> list[str]:
    wanted = set(options["methods"])
    shards = [s for s, ms in SHARD_METHODS.items() if wanted & set(ms)]
    return shards + (["pruning"] if options["pruning"] else [])


def _batch(model, options):
    from ..analyses import tasks as T

    task = T.get_task(options["task"])
    # refused before the prompts are built when one pass over them cannot fit (--n 100000000 is not a hang)
    T.check_batch_fits(model, task, options["n"], options["seed"], flag="--n")
    return task, task.make(model, n=options["n"], seed=options["seed"]).to(model.device)


def compute(model, shard: str, options: dict, checkpoint=None) -> dict:
    """One shard. `checkpoint` (local runs): where an ablation sweep keeps its losses after every forward and the
    pruning shard its finished curves; a rerun with --resume continues from there."""
    from ..analyses import importance as I

    if shard == "pruning":
        return {"curves": _pruning(model, options, checkpoint)}
    task, batch = _batch(model, options)
    if shard == "mask_gradient":
        scores = {"mask_gradient": I.mask_gradient_scores(model, task, batch)}
    elif shard == "dla":
        scores = {"dla": I.dla_scores(model, task, batch)}
    else:
        kind = shard  # "ablation_zero" | "ablation_mean" | "ablation_resample"
        full = I.clean_losses(model, task, batch)

        losses = I.ablated_losses(model, task, batch, kind, checkpoint=checkpoint,  # [layer, head, batch]
                                  progress=lambda done, total: shard_progress(f"{done} of {total} heads ablated"))
        scores = {kind: I.ablation_effect(losses, full)}
        if shard == "ablation_zero":
            scores["attention_influence"] = I.mean_relative_change(losses, full, model.name)
    for name, s in scores.items():
        if not bool(torch.isfinite(s).all()):
            raise ValueError(f"{model.name}: {name} scores are NaN/Inf (the model's outputs are not finite)")
    wanted = set(options["methods"])
    return {"scores": {k: v.tolist() for k, v in scores.items() if k in wanted}}


PRUNING_ORDERS = ("mask_gradient order", "random order")
MIN_PRUNING_STEP = 1e-4  # 1 / step fractions are listed: a step of 1e-12 was a hang
CURVE_KEYS = ("n_removed", "fraction", "loss", "rel_increase", "source", "order")


def check_result(shard: str, result: dict, options: dict):
    """A shard's result read back from disk (--resume): the scores of the shard's methods the run asked for, each
    a finite [layer, head] list, all of one shape -> (layers, heads); the pruning shard's curves, each point with
    its heads removed (a whole number), fraction in [0, 1], finite loss and its source and order -> None. Else a
    ValueError saying what is wrong."""
    if shard == "pruning":
        curves = check_keys(result, "result", required=("curves",))["curves"]
        if not isinstance(curves, list) or not curves:
            raise ValueError("result.curves must be a non-empty list of curve points")
        for i, point in enumerate(curves):
            what = f"result.curves[{i}]"
            check_keys(point, what, required=CURVE_KEYS)
            check_numbers([point["n_removed"]], f"{what}.n_removed", low=0, whole=True, where=lambda _: "")
            check_numbers([point["fraction"]], f"{what}.fraction", low=0, high=1, where=lambda _: "")
            check_numbers([point["loss"]], f"{what}.loss", where=lambda _: "")
            check_numbers([point["rel_increase"]], f"{what}.rel_increase", nan_ok=True, finite=False,
                          where=lambda _: "")
            if not isinstance(point["source"], str):
                raise ValueError(f"{what}.source must be a str, got {point['source']!r:.40}")
            if point["order"] not in PRUNING_ORDERS:
                raise ValueError(f"{what}.order must be one of {PRUNING_ORDERS}, got {point['order']!r:.40}")
        return None
    if shard not in SHARD_METHODS:
        raise ValueError(f"unknown importance shard {shard!r}")
    wanted = [m for m in SHARD_METHODS[shard] if m in options["methods"]]
    scores = check_keys(check_keys(result, "result", required=("scores",))["scores"], "result.scores",
                        required=wanted)
    shape = None
    for method in wanted:
        shape = check_grid(scores[method], f"result.scores.{method}", shape)
    return shape


def _pruning(model, options: dict, checkpoint=None) -> list[dict]:
    """Pruning curves on the bundled prose and code (language modelling); tokenizer-less models use the job's task.
    Each finished curve is a progress line and, with `checkpoint`, saved there; a rerun continues after it."""
    from ..analyses import importance as I
    from ..analyses import pruning as P
    from ..analyses import tasks as T
    from ..analyses.circuits import checkpoints

    step = options["pruning_step"]
    fractions = [i * step for i in range(int(round(1 / step)))]
    if model.tokenizer is not None:
        sources = [(f"lm ({src})", T.get_task("lm", source=src, seq_len=options["pruning_seq_len"]))
                   for src in ("prose", "code")]
    else:
        sources = [(options["task"], T.get_task(options["task"]))]
    curves = [(source, task, order) for source, task in sources for order in PRUNING_ORDERS]
    settings = {"format": 1, "model": model.name, "curves": [[s, o] for s, _, o in curves], "fractions": fractions,
                **{k: options[k] for k in ("task", "n", "seed", "pruning_seq_len")}}
    path = None if checkpoint is None else checkpoints.checkpoint_path(checkpoint, "importance pruning")
    rows, done = [], 0
    if path is not None:
        saved = checkpoints.load(path, settings, "a pruning-curves")
        if saved is not None:
            done, rows = _pruning_state(saved, path, len(curves))
            shard_progress(f"resume: {done} of {len(curves)} curves from {path.name}")
    batches = {}
    for i, (source, task, order) in enumerate(curves[done:], start=done):
        if source not in batches:
            T.check_batch_fits(model, task, options["n"], options["seed"] + 1, flag="--n")
            batches[source] = task.make(model, n=options["n"], seed=options["seed"] + 1).to(model.device)
        batch = batches[source]
        if order == "mask_gradient order":
            df = P.pruning_curve(model, task, batch, I.mask_gradient_scores(model, task, batch), fractions)
        else:
            df = P.random_pruning_curve(model, task, batch, fractions, n_orders=2, seed=options["seed"])
        rows.extend(df.assign(source=source, order=order).to_dict("records"))
        if path is not None and i + 1 < len(curves):
            checkpoints.save(path, settings, {"done": i + 1, "rows": rows})
        shard_progress(f"{i + 1} of {len(curves)} pruning curves ({source}, {order})")
    return rows


def _pruning_state(saved, path, n_curves: int) -> tuple[int, list[dict]]:
    """(curves done, their rows) of a saved pruning shard, checked as a finished shard's curves are."""
    from ..analyses.circuits import checkpoints

    if not isinstance(saved, dict) or set(saved) != {"done", "rows"}:
        raise checkpoints.invalid(path, "a pruning-curves", "its state must hold 'done' and 'rows'")
    done, rows = saved["done"], saved["rows"]
    if isinstance(done, bool) or not isinstance(done, int) or not 1 <= done < n_curves:
        raise checkpoints.invalid(path, "a pruning-curves", f"'done' must be a curve count in 1..{n_curves - 1}, "
                                                            f"got {done!r:.40}")
    try:
        check_result("pruning", {"curves": rows}, {})
    except ValueError as e:
        raise checkpoints.invalid(path, "a pruning-curves", str(e)) from None
    if len({(r["source"], r["order"]) for r in rows}) != done:
        raise checkpoints.invalid(path, "a pruning-curves", f"its rows are not those of {done} curves")
    return done, list(rows)


def assemble(results: dict, out: Path, options: dict, log=print) -> pd.DataFrame:
    from ..analyses.importance import scores_frame
    from ..analyses.pruning import heads_removable, method_agreement
    from ..importance_report import write_importance_report

    frames, pruning, curves, agreement = [], [], {}, {}
    for model, shards in results.items():
        for shard, part in shards.items():
            for method, s in part.get("scores", {}).items():
                frames.append(scores_frame(model, method, torch.tensor(s)))
            if "curves" in part:
                df = pd.DataFrame(part["curves"]).assign(model=model)
                pruning.append(df)
                curves[model] = {src: {o: g for o, g in sub.groupby("order", sort=False)}
                                 for src, sub in df.groupby("source", sort=False)}
                for (src, order), g in df.groupby(["source", "order"], sort=False):
                    log(f"{model}: {src}, {order}: {heads_removable(g, 0.05)} heads removable within +5 % loss")
    table = pd.concat(frames, ignore_index=True)
    order = {m: i for i, m in enumerate(options["methods"])}
    table = table.sort_values(["model", "method", "layer", "head"], key=lambda c: c.map(order) if c.name == "method"
                              else c, kind="stable").reset_index(drop=True)
    out = Path(out)
    table.to_csv(out / "importance.csv", index=False)
    try:
        table.to_parquet(out / "importance.parquet", index=False)
    except ImportError:
        log("note: importance.parquet not written (pip install pyarrow); importance.csv has the same table")
    agree_rows = []
    for model, sub in table.groupby("model", sort=False):
        if sub["method"].nunique() > 1:
            agreement[model] = method_agreement(sub)
            agree_rows.append(agreement[model].assign(model=model))
    if agree_rows:
        pd.concat(agree_rows).to_csv(out / "agreement.csv", index=False)
    if pruning:
        pd.concat(pruning).to_csv(out / "pruning.csv", index=False)
    write_importance_report(table, out / "report.html", curves=curves, agreement=agreement)
    return table


def _add_arguments(p) -> None:
    from ..analyses.importance import METHODS
    from ..analyses.tasks import TASKS

    p.add_argument("--task", default="ioi",  # (task files: `interp circuit --task file`)
                   help=f"one of {', '.join(t for t in TASKS if t != 'file')} (default ioi)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), metavar="METHOD",
                   help=f"any of {', '.join(METHODS)} (default: all)")
    p.add_argument("--n", type=int, default=32, help="examples (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-pruning", action="store_true", help="skip the pruning curves on prose and code")
    p.add_argument("--pruning-step", type=float, default=0.1, help="fraction of the heads removed per step")
    p.add_argument("--pruning-seq-len", type=int, default=64)


def _options_from_args(args) -> dict:
    return options(task=args.task, methods=args.methods, n=args.n, seed=args.seed, pruning=not args.no_pruning,
                   pruning_step=args.pruning_step, pruning_seq_len=args.pruning_seq_len)


def options(task: str = "ioi", methods=None, n: int = 32, seed: int = 0, pruning: bool = True,
            pruning_step: float = 0.1, pruning_seq_len: int = 64) -> dict:
    """Validated job options (clear errors before any model is loaded)."""
    from ..analyses.importance import METHODS, check_methods
    from ..analyses.tasks import TASKS

    if task not in TASKS or task == "file":
        raise ValueError(f"unknown task {task!r}; available: {', '.join(t for t in TASKS if t != 'file')}")
    methods = list(check_methods(methods if methods is not None else METHODS))
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
        raise ValueError(f"--n must be an int >= 2, got {n!r}")
    seed = check_seed(seed, "--seed")
    if isinstance(pruning_step, bool) or not isinstance(pruning_step, numbers.Real):
        raise TypeError(f"--pruning-step must be a number in [{MIN_PRUNING_STEP:g}, 1), got "
                        f"{type(pruning_step).__name__} {pruning_step!r:.40}")
    if not MIN_PRUNING_STEP <= pruning_step < 1:  # (NaN fails this too)
        raise ValueError(f"--pruning-step must be in (0, 1), at least {MIN_PRUNING_STEP:g} (at most "
                         f"{round(1 / MIN_PRUNING_STEP)} steps; a step below 1/heads adds no point), got "
                         f"{pruning_step}")
    if isinstance(pruning_seq_len, bool) or not isinstance(pruning_seq_len, numbers.Integral) or pruning_seq_len < 4:
        raise ValueError(f"--pruning-seq-len must be an int >= 4, got {pruning_seq_len!r}")
    pruning = bool_arg("pruning", pruning, "importance")
    return dict(task=task, methods=methods, n=int(n), seed=seed, pruning=pruning, pruning_step=float(pruning_step),
                pruning_seq_len=int(pruning_seq_len))


JOB = register(Job(
    name="importance", version=1, checkpoints=True, shards=_shards, compute=compute, assemble=assemble,
    check=check_result,
    former_names={"ablation_zero": "zero_ablation", "ablation_mean": "mean_ablation",
                  "ablation_resample": "resample_ablation"},
    outputs=("importance.csv", "importance.parquet", "agreement.csv", "pruning.csv", "report.html"),
    add_arguments=_add_arguments, options_from_args=_options_from_args,
    help="score every head's importance on a task (ablations, mask gradients, DLA, AttentionInfluence)",
))


def importance(models, out, *, device=None, dtype=None, resume: bool = False, ray_address: str | None = None,
               progress: bool = True, log=print, **opts) -> pd.DataFrame:
    """Python entry point of `interp importance` (same files, same resumable shards)."""
    from .runner import run_job

    return run_job(JOB, models, out, options(**opts), device=device, dtype=dtype, resume=resume,
                   ray_address=ray_address, progress=progress, log=log)
