"""`run_circuit_job`: score a task's edges, select a circuit, evaluate it, write the files; resumable.

Files in out_dir: scores.pt (the scored graph, ACDC's kept edges, the job's settings; written first, reused on
resume when the settings match), faithfulness.json, edges.csv, nodes.csv, graph.json (EAP-IG/MIB format),
report.html. Every file is written atomically, so a killed job leaves only complete files; rerunning skips what is
done (an ACDC search also checkpoints after every receiver, acdc_tau<tau>-<settings digest>.pt, and edge
patching its sweep, patching-<settings digest>.pt.b<bucket>, removed once scores.pt is written; a run with other
settings -- the task's prompts included -- starts its own, and a damaged one is named and started over). A scores.pt
written before the settings held the prompts' digest (before 7e82a0d) is recomputed once, with a line that says so.

The circuit (`method_circuit`): for "acdc", the edges ACDC itself kept at threshold tau (method option `tau`,
default 0.01), exactly as its search kept them -- top_n / select do not apply and nothing is pruned (kept edges
whose sender is not reached from the input are counted in meta["n_edges_unreached"]); for every other method,
"sae" included (it scores edges by how well its discrete codes separate clean from corrupted prompts, and chooses
none itself), the top_n edges by |score| (or greedy), pruned to a connected graph. The faithfulness curve always
ranks edges by |score|; the circuit's own f and size are those of the written edge set.

The steps are public so that the batch job (`interp circuit`, interp/batch/circuit.py) runs the same code:
`check_settings` (validation before any model work), `method_circuit` (the circuit: scores and edges),
`rebuild_circuit` (the same circuit from saved scores), `faithfulness_results` (f of the circuit and the MIB
curve under each ablation) and `write_outputs` (the files).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

import torch

from interp.batch.arguments import check_out
from interp.input_checks import bool_arg
from interp.validate import hooked_model_arg

from . import api, draw, export
from .checkpoints import discard, prompts_digest, run_fresh_if_unusable
from .evaluate import Circuit, faithfulness, faithfulness_curve
from .graph import Graph
from .patching import ABLATIONS, ablated_outputs, progress_arg
from .sae_codes import MIN_EXAMPLES

SELECT = ("topn", "greedy")
FLAGS = {"n": "--n", "steps": "--steps", "faith_n": "--faith-n"}  # how the command line spells the settings
# score_edges arguments set by the job (checkpoint: the job's shard file; progress: its progress lines)
_FIXED = ("model", "graph", "task", "batch", "method", "steps", "ablation", "checkpoint", "progress")


def _positive_int(name: str, v, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return v


def check_method_options(method_options: dict | None, method: str | None = None) -> dict:
    """Extra keyword options of `api.score_edges` for a method (ACDC's threshold `tau`); refused by name when
    score_edges does not take them, and (given `method`) `tau` when the method is not "acdc" or tau is not >= 0,
    `chunk` when the method is not "patching" or chunk is not an int >= 1."""
    if method_options is not None and not isinstance(method_options, dict):
        try:  # pairs, as dict() takes them
            method_options = dict(method_options)
        except (TypeError, ValueError):
            raise TypeError(f"method_options must be a dict of score_edges keyword options (e.g. {{'tau': 0.05}}) or "
                            f"None, got {type(method_options).__name__} {method_options!r:.60}") from None
    method_options = dict(method_options or {})
    params = inspect.signature(api.score_edges).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = [p for p, v in params.items() if p not in _FIXED and v.kind is not inspect.Parameter.VAR_KEYWORD]
    for key in method_options:
        if key in _FIXED:
            raise ValueError(f"method option {key!r} is set by its own option (--{key} / {key}=), not as a "
                             "method option")
        if key not in allowed and not takes_any:
            raise ValueError(f"unknown method option {key!r}; score_edges takes: {', '.join(allowed) or 'none'}")
    if method is not None and "tau" in method_options:
        from .acdc import check_tau

        if method != "acdc":
            raise ValueError(f"method option tau is ACDC's threshold: it needs method acdc, not {method!r}")
        check_tau(method_options["tau"])
    if method is not None and "chunk" in method_options:
        if method != "patching":
            raise ValueError(f"method option chunk is the edges per forward of method patching: it needs method "
                             f"patching, not {method!r}")
        _positive_int("method option chunk (edges per forward)", method_options["chunk"])
    return method_options


def check_settings(method: str, n: int, steps: int, ablation: str, top_n: int, select: str, faith_n: int,
                   eval_ablations, method_options: dict | None = None, flags: bool = False) -> tuple:
    """Validated (eval_ablations tuple, method_options dict); clear ValueErrors before any model work.
    `flags`: name the settings as the command line spells them (--n, --steps, --faith-n)."""
    api.check_method(method)
    for name, v in (("n", n), ("steps", steps), ("faith_n", faith_n)):
        _positive_int(FLAGS[name] if flags else name, v)
    _positive_int("top_n", top_n, 0)
    if select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}, got {select!r}")
    if isinstance(eval_ablations, str):
        eval_ablations = (eval_ablations,)
    if not isinstance(eval_ablations, (bytes, dict)) and hasattr(eval_ablations, "__iter__"):
        eval_ablations = tuple(eval_ablations)  # a list, a set, a generator
    if not isinstance(eval_ablations, tuple) or not eval_ablations:
        raise (ValueError if isinstance(eval_ablations, tuple) else TypeError)(
            f"eval ablations must be a non-empty list of {', '.join(ABLATIONS)} (the ablations faithfulness is "
            f"measured under), got {eval_ablations!r:.60}")
    for what, ab in [("ablation", ablation)] + [("eval ablation", a) for a in eval_ablations]:
        if ab not in ABLATIONS:
            raise ValueError(f"{what} must be one of {', '.join(ABLATIONS)}, got {ab!r}")
    if len(set(eval_ablations)) != len(eval_ablations):
        raise ValueError(f"eval ablations are named more than once: {list(eval_ablations)}")
    if method == "eap-ig" and ablation != "corrupted":
        raise ValueError("method eap-ig interpolates corrupt -> clean inputs: it needs ablation 'corrupted'")
    if method == "sae" and n < MIN_EXAMPLES:
        raise ValueError(f"method sae needs n >= {MIN_EXAMPLES} (as many positive, clean, and negative, corrupted "
                         f"prompts to fit its discrete codes on), got n={n}")
    return eval_ablations, check_method_options(method_options, method)


def score_task(model, task, batch, graph: Graph, method: str, steps: int, ablation: str, method_options=None,
               checkpoint=None, progress=None):
    """[n_up, n_slots] edge scores (NaN where no edge) of `method` on the task's prompts (patching: resumable from
    `checkpoint`, reporting to `progress`)."""
    return api.score_edges(model, graph, task, batch, method, steps=steps, ablation=ablation,
                           checkpoint=checkpoint if method in api.RESUMABLE else None, progress=progress,
                           **check_method_options(method_options, method))


def select_circuit(graph: Graph, scores: torch.Tensor, method: str, meta: dict, top_n: int, how: str) -> Circuit:
    return Circuit(graph, scores, method=method, meta=meta).select(top_n=top_n, method=how)


def rebuild_circuit(graph: Graph, scores: torch.Tensor, method: str, meta: dict, top_n: int, select: str,
                    in_circuit: torch.Tensor | None = None) -> Circuit:
    """The job's circuit from saved scores: ACDC's saved kept edges as they are, any other method selected."""
    if method == "acdc":
        if in_circuit is None:
            raise ValueError("an acdc circuit is rebuilt from its kept edges: in_circuit is missing")
        return Circuit(graph, scores, method=method, in_circuit=in_circuit.bool(), meta=dict(meta))
    return select_circuit(graph, scores, method, dict(meta), top_n, select)


def acdc_tau(method_options: dict | None) -> float:
    """The threshold an "acdc" job runs at: method option tau, else api.ACDC_TAU."""
    return float((method_options or {}).get("tau", api.ACDC_TAU))


def method_circuit(model, task, batch, graph: Graph, method: str, steps: int, ablation: str, top_n: int,
                   select: str, meta: dict, method_options=None, seed: int = 0, checkpoint=None,
                   progress=None) -> Circuit:
    """The job's circuit.

    "acdc": ACDC's own circuit, the edges its search kept at threshold tau (`method_options["tau"]`, default
    api.ACDC_TAU), exactly as kept: not re-selected by score (top_n and select do not apply) and not pruned.
    Scores: the KL change measured when each edge was tested. meta["acdc"]: the search's counters, and
    "n_edges_unreached": kept edges whose sender no kept path from the input reaches (ACDC measured them as
    mattering with the sender fed its ablated inputs; `prune_to_connected` would drop them). `checkpoint`: ACDC's
    per-receiver checkpoint file, or edge patching's sweep (a rerun continues either).
    Every other method ("sae" too: its scores say how well the codes of an edge's two ends separate clean from
    corrupted prompts; it chooses no edges itself): the edge scores, then `top_n` by |score| or `greedy`, pruned to
    edges on a path input -> logits."""
    method_options = check_method_options(method_options, method)
    if method != "acdc":
        scores = score_task(model, task, batch, graph, method, steps, ablation, method_options,
                            checkpoint=checkpoint, progress=progress)
        check_finite(model, graph, scores, method)
        return select_circuit(graph, scores, method, meta, top_n, select)
    from .acdc import acdc_task
    from .evaluate import prune_to_connected

    tau = acdc_tau(method_options)
    c = acdc_task(model, task, batch, tau, ablation=ablation, graph=graph, checkpoint=checkpoint, evaluate=False,
                  progress=progress, seed=seed)
    keep = ("metric", "window", "complete", "d_full", "d_circuit", "n_tested", "n_skipped", "n_variants",
            "n_forwards", "search_s")
    reached = prune_to_connected(graph, c.in_circuit)
    c.meta = dict(meta, tau=tau, acdc={k: c.meta[k] for k in keep},
                  n_edges_unreached=int((c.in_circuit & ~reached).sum()))
    check_finite(model, graph, c.scores, method)
    return c


def check_finite(model, graph: Graph, scores: torch.Tensor, method: str) -> None:
    if not bool(torch.isfinite(scores[graph.valid()]).all()):
        raise ValueError(f"{model.name}: {method} edge scores are NaN/Inf (the model's outputs or the task metric "
                         "are not finite)")


def faithfulness_batch(batch, faith_n: int):
    """The prompts faithfulness is measured on: the largest equal-length bucket of the first faith_n prompts."""
    return max(api.buckets(batch[:faith_n]), key=len)


def faithfulness_results(model, task, batch, circuit: Circuit, ablations, faith_n: int = 8, seed: int = 0,
                         progress=print) -> dict:
    """Per ablation: the MIB curve (f at 0.1 ... 100 % of the edges, CPR, CMD) and `circuit`: f, metric and
    edge count of the selected circuit itself."""
    sub = faithfulness_batch(batch, faith_n)
    clean = sub.clean.input_ids
    corrupt = None if sub.corrupt is None else sub.corrupt.input_ids
    metric = (lambda lg: task.metric(lg, sub))
    curves = {}
    for ab in ablations:
        progress(f"faithfulness under {ab} ablation, {len(sub)} prompts of {clean.shape[1]} tokens")
        if ab == "resample" and len(sub) < 2:
            raise ValueError(f"faithfulness under resample ablation needs >= 2 prompts of one token length among "
                             f"the first {faith_n}; got {len(sub)} (raise faith_n / --faith-n or n)")
        abl = ablated_outputs(model, circuit.graph, clean, corrupt, ab, seed=seed)
        curve = faithfulness_curve(model, circuit, clean, abl, metric)
        own = faithfulness(model, circuit.graph, clean, abl, metric, [circuit.in_circuit])
        curve["circuit"] = {"n_edges": circuit.n_edges, "f": own["f"][0], "metric": own["metric"][0]}
        curves[ab] = curve
    return curves


def write_outputs(circuit: Circuit, out_dir, settings: dict, results: dict) -> list[Path]:
    """faithfulness.json (when results has faithfulness), edges.csv, nodes.csv, graph.json, report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if "faithfulness" in results:
        export._atomic_write(out / "faithfulness.json",
                             json.dumps({"settings": settings, "curves": results["faithfulness"]}, indent=1))
        paths.append(out / "faithfulness.json")
    paths += export.write(circuit, out)
    export._atomic_write(out / "report.html", draw.report_html(circuit, extra={**settings, **results}))
    return paths + [out / "report.html"]


def _read_scores(path: Path, graph: Graph, method: str) -> tuple[dict, str]:
    """(the saved scores.pt, "") or ({}, what is wrong with it): a file a kill, another program or another version
    left is recomputed, not a crash from inside torch.load."""
    try:
        saved = torch.load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is recomputed
        return {}, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]}"
    shape = (graph.n_up, graph.n_slots)
    if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict):
        return {}, f"a {type(saved).__name__} without the job's settings"
    scores, keep = saved.get("scores"), saved.get("in_circuit")
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != shape or not scores.dtype.is_floating_point:
        return {}, f"'scores' is not a float tensor {list(shape)}"
    if not bool(torch.isfinite(scores[graph.valid()]).all()):
        return {}, "'scores' is not finite on every edge"
    if method == "acdc" and keep is not None and (not isinstance(keep, torch.Tensor) or tuple(keep.shape) != shape):
        return {}, f"'in_circuit' is not a tensor {list(shape)}"
    if not isinstance(saved.get("meta", {}), dict):
        return {}, "'meta' is not a dict"
    return saved, ""


def run_circuit_job(model, task, method: str = "eap-ig", out_dir="out/circuit", n: int = 32, seed: int = 0,
                    steps: int = 5, ablation: str = "corrupted", top_n: int = 200, select: str = "topn",
                    faithfulness: bool = True, faith_n: int = 8, eval_ablations=("corrupted",),
                    method_options: dict | None = None, progress=print) -> Circuit:
    """Returns the selected Circuit. `task`: a name from analyses.tasks or a Task. `method_options`: extra keyword
    options of the method, passed to `api.score_edges`."""
    from interp.analyses import tasks as T

    eval_ablations, method_options = check_settings(method, n, steps, ablation, top_n, select, faith_n,
                                                    eval_ablations, method_options)
    bool_arg("faithfulness", faithfulness, "run_circuit_job")
    progress = progress_arg(progress, "run_circuit_job") or (lambda msg: None)  # None: no progress lines
    hooked_model_arg(model, "run_circuit_job")
    task = T.task_arg(task, "run_circuit_job")
    out = check_out(out_dir, "run_circuit_job: out_dir")
    batch = task.make(model, n=n, seed=seed)
    # "prompts": a digest of the task's prompts and answers, so a task with other options (induction's half, another
    # task file) does not reuse these scores under the same task name
    settings = {"model": model.name, "task": task.name, "method": method, "n": n, "seed": seed, "steps": steps,
                "ablation": ablation, "dtype": str(model.dtype).replace("torch.", ""), "prompts": prompts_digest(batch)}
    if method_options:
        settings["method_options"] = method_options
    graph = Graph.from_model(model)
    score_file = out / "scores.pt"
    circuit = None
    if score_file.exists():
        saved, damage = _read_scores(score_file, graph, method)
        if damage:
            progress(f"{score_file} is damaged or not a circuit job's scores ({damage}); recomputing")
        elif saved.get("settings") == settings and (method != "acdc" or "in_circuit" in saved):
            circuit = rebuild_circuit(graph, saved["scores"], method, saved.get("meta", settings), top_n, select,
                                      saved.get("in_circuit"))
            progress(f"resume: scores from {score_file}")
        elif isinstance(saved.get("settings"), dict) and "prompts" not in saved["settings"]:
            # written before the settings held the prompts' digest: its prompts cannot be checked (a task with other
            # options has the same name), so it is recomputed once
            progress(f"{score_file} predates the prompts digest in its settings (its prompts cannot be checked); "
                     "recomputing once")
        else:
            progress(f"{score_file} has other settings ({saved.get('settings')}); recomputing")
    if circuit is None:
        progress(f"scoring {graph.n_edges} edges of {model.name} on {task.name} with {method} (n={len(batch)})")
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        ck = {"acdc": out / f"acdc_tau{acdc_tau(method_options):.6g}-{digest}.pt",
              "patching": out / f"patching-{digest}.pt"}.get(method)  # the long searches keep their progress
        circuit = run_fresh_if_unusable(
            lambda: method_circuit(model, task, batch, graph, method, steps, ablation, top_n, select, settings,
                                   method_options, seed, checkpoint=ck, progress=progress),
            ck, lambda why: progress(f"{why}; starting the search over"))
        tmp = score_file.with_name("scores.pt.tmp")
        torch.save({"settings": settings, "scores": circuit.scores, "meta": circuit.meta,
                    **({"in_circuit": circuit.in_circuit} if method == "acdc" else {})}, tmp)
        os.replace(tmp, score_file)
        if ck is not None:
            discard(ck)  # the finished search is in scores.pt now (patching: its per-bucket files too)
    progress(f"ACDC kept {circuit.n_edges} edges at tau={circuit.meta['tau']:g}" if method == "acdc" else
             f"selected {circuit.n_edges} edges ({select}, top_n={top_n}, pruned to a connected graph)")
    results: dict = {"n_edges_graph": graph.n_edges, "n_edges_circuit": circuit.n_edges}
    faith_file = out / "faithfulness.json"
    faith_settings = {**settings, "top_n": top_n, "select": select, "faith_n": faith_n}
    if faithfulness:
        try:
            saved = json.loads(faith_file.read_text()) if faith_file.exists() else {}
        except (OSError, ValueError) as e:
            progress(f"{faith_file} is unreadable ({type(e).__name__}: {e}); recomputing")
            saved = {}
        if not isinstance(saved, dict) or not isinstance(saved.get("curves", {}), dict):
            progress(f"{faith_file} is not a circuit job's faithfulness.json; recomputing")
            saved = {}
        if saved.get("settings") == faith_settings and set(saved.get("curves", {})) >= set(eval_ablations):
            results["faithfulness"] = {ab: saved["curves"][ab] for ab in eval_ablations}
            progress("resume: faithfulness from faithfulness.json")
        else:
            results["faithfulness"] = faithfulness_results(model, task, batch, circuit, eval_ablations, faith_n,
                                                           seed, progress)
    write_outputs(circuit, out, faith_settings, results)
    progress(f"wrote {out}/edges.csv, nodes.csv, graph.json, report.html")
    circuit.meta["results"] = results
    return circuit
