"""The `circuit` job: a task's circuit in one or many models -- edge scores, the selected circuit, its faithfulness.

    interp circuit toy-induction smollm2-135m --task induction --method eap-ig --out runs/circ [--top-n 200]
                   [--select topn|greedy] [--eval-ablations corrupted zero mean resample] [--resume]

One shard per model (`circuit`): the task's prompts, every edge scored with the method (`api.score_edges`), the
circuit selected, and its faithfulness under each evaluation ablation (the MIB curve: f at 0.1 ... 100 % of the
edges, CPR, CMD, and f of the selected circuit) -- the steps of `analyses.circuits.job`, the same code as
`run_circuit_job`. The shard keeps the scores, so `--resume` after a kill recomputes only the models whose shard
was not finished. Assembled, per model, into DIR/<model>/ edges.csv, nodes.csv, graph.json (EAP-IG/MIB format),
faithfulness.json and report.html, and across models into DIR/summary.csv (one row per model and evaluation
ablation) and DIR/faithfulness.csv (the curves).

Task options: `--task file --task-file ROWS.jsonl` runs the user's rows (analyses.tasks.FileTask); the file's
content hash is one of the options, so a changed file is not resumed over. `--method-option KEY=VALUE` passes an
extra keyword to `score_edges` (for methods that take one), refused by name when score_edges does not take it.

Which edges are "the circuit" (`analyses.circuits.job.method_circuit`):
- `--method acdc [--method-option tau=0.01]`: ACDC's own circuit, the edges its search kept at tau (default 0.01),
  exactly as kept: --top-n and --select do not apply and the set is not pruned (kept edges whose sender no kept
  path from the input reaches are counted in graph.json meta n_edges_unreached). The scores are the KL changes
  ACDC measured when it tested each edge. The search checkpoints after every receiver (next to the shard file,
  local runs), so `--resume` after a kill continues it and gives the same circuit. tau < 0 is refused.
- every other method, `--method sae` included (its scores say how well discrete SAE codes of an edge's two ends
  separate clean from corrupted prompts; it needs --n >= 5 and chooses no edges itself): the top --top-n edges by
  |score| (or --select greedy, grown from the logits; recommended for sae, whose input/logits edges score lower),
  pruned to edges on a path input -> logits.
The faithfulness curve ranks edges by |score| for every method; f_circuit and n_edges_circuit (summary.csv,
faithfulness.json "circuit") are those of the written edge set.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import torch

from ..validate import is_path
from .checks import check_count, check_keys, check_numbers, check_seed
from .runner import Job, atomic_write_text, register, shard_progress, slug

SHARD = "circuit"


def _task(options: dict):
    from ..analyses import tasks as T

    extra = {"path": options["task_file"]} if options["task"] == "file" else {}
    return T.get_task(options["task"], **options["task_options"], **extra)


def _settings(options: dict) -> dict:
    """What the circuit files record as their settings (graph.json meta, faithfulness.json, report)."""
    from ..analyses.circuits.job import acdc_tau

    keep = ("task", "method", "n", "seed", "steps", "ablation", "top_n", "select", "faith_n", "dtype")
    if options["method"] == "acdc":  # ACDC chooses its own edges: top_n and select do not apply
        keep = tuple(k for k in keep if k not in ("top_n", "select"))
    s = {k: options[k] for k in keep if k in options}
    for k in ("task_file", "task_options", "method_options"):
        if options.get(k):
            s[k] = options[k]
    if options["method"] == "acdc":
        s["tau"] = acdc_tau(options["method_options"])
    return s


def _graph_floats(options: dict, graph, d_model: int) -> int:
    """Floats per prompt token a method keeps beyond one pass: the node outputs of the graph, [n_up, d_model], once
    per variant of a batched patching forward (patching: `chunk` edges, ACDC: its window) or ~3 times (ablated
    values, deltas and gradients of the attribution methods)."""
    from ..analyses.circuits.acdc import WINDOW
    from ..analyses.circuits.api import PATCHING_CHUNK

    copies = {"patching": options["method_options"].get("chunk", PATCHING_CHUNK) + 2,
              "acdc": WINDOW + 2}.get(options["method"], 3)
    return copies * graph.n_up * d_model


def compute(model, shard: str, options: dict, checkpoint=None) -> dict:
    from ..analyses import tasks as T
    from ..analyses.circuits import job as J
    from ..analyses.circuits.graph import Graph

    task = _task(options)
    graph = Graph.from_model(model)
    # refused before the prompts are built when one pass over them cannot fit (--n 100000000 is not an OOM kill)
    T.check_batch_fits(model, task, options["n"], options["seed"], flag="--n",
                       extra_per_token=_graph_floats(options, graph, model.cfg.d_model))
    batch = task.make(model, n=options["n"], seed=options["seed"])  # the file task: its first n rows
    settings = dict(_settings(options), model=model.name)

    circuit = J.method_circuit(model, task, batch, graph, options["method"], options["steps"], options["ablation"],
                               options["top_n"], options["select"], settings, options["method_options"],
                               options["seed"], checkpoint=checkpoint, progress=shard_progress)
    faith = J.faithfulness_results(model, task, batch, circuit, options["eval_ablations"], options["faith_n"],
                                   options["seed"], progress=shard_progress)
    idx = graph.edge_index()
    result = {"graph": graph.describe(), "n_prompts": len(batch),
              "scores": circuit.scores[idx[:, 0], idx[:, 1]].tolist(),  # every edge, in graph.edge_index() order
              "faithfulness": faith}
    how = f"{options['select']}, top {options['top_n']}"
    if options["method"] == "acdc":  # ACDC's own edges: kept as they are, not re-selected from the scores
        result["in_circuit"] = circuit.in_circuit[idx[:, 0], idx[:, 1]].tolist()
        result["meta"] = {k: circuit.meta[k] for k in ("acdc", "n_edges_unreached")}
        how = f"kept by ACDC at tau={circuit.meta['tau']:g}"
    result["notes"] = [f"{model.name}: {circuit.n_edges} of {graph.n_edges} edges ({how}); f = "
                       + ", ".join(f"{c['circuit']['f']:.3g} ({ab})" for ab, c in faith.items())]
    return result


FAITH_KEYS = ("full", "empty", "metric", "f", "fractions", "n_edges", "cpr", "cmd", "circuit")


def check_result(shard: str, result: dict, options: dict) -> tuple[int, int]:
    """The circuit shard's result read back from disk (--resume): its graph (positive layer/head counts, the edge
    count those give), one finite score per edge (and, for acdc, one kept flag per edge and the search's meta), and
    per evaluation ablation the faithfulness curve (fractions in (0, 1], edge counts within the graph, finite
    metrics; f, CPR and CMD may be NaN when the full and empty circuits score the same) -> (layers, heads). Else a
    ValueError saying what is wrong."""
    from ..analyses.circuits.graph import Graph

    acdc = options["method"] == "acdc"
    check_keys(result, "result", required=("graph", "n_prompts", "scores", "faithfulness")
               + (("in_circuit", "meta") if acdc else ()), optional=("notes",))
    d = check_keys(result["graph"], "result.graph", required=("model", "n_layers", "n_heads", "n_kv_heads", "mlp",
                                                              "n_edges"), extra_ok=True)  # (Graph.describe())
    L, H, KV = (check_count(d[k], f"result.graph.{k}", low=1) for k in ("n_layers", "n_heads", "n_kv_heads"))
    if not isinstance(d["mlp"], bool) or not isinstance(d["model"], str):
        raise ValueError(f"result.graph.mlp must be true or false and result.graph.model a str, got "
                         f"{d['mlp']!r:.20} and {d['model']!r:.40}")
    if H % KV:
        raise ValueError(f"result.graph: n_heads {H} is not a multiple of n_kv_heads {KV}")
    n_edges = Graph.from_config(L, H, KV, d["mlp"], d["model"]).n_edges
    if d["n_edges"] != n_edges:
        raise ValueError(f"result.graph.n_edges is {d['n_edges']!r:.20}, but a graph of {L} layers x {H} heads has "
                         f"{n_edges} edges")
    check_count(result["n_prompts"], "result.n_prompts", low=1, high=options["n"])
    check_numbers(result["scores"], "result.scores")
    if len(result["scores"]) != n_edges:
        raise ValueError(f"result.scores has {len(result['scores'])} edge scores, the graph {n_edges} edges")
    if acdc:
        kept = result["in_circuit"]
        if not isinstance(kept, list) or len(kept) != n_edges or not all(isinstance(k, bool) for k in kept):
            raise ValueError(f"result.in_circuit must be a list of {n_edges} true/false flags (one per edge)")
        meta = check_keys(result["meta"], "result.meta", required=("acdc", "n_edges_unreached"))
        if not isinstance(meta["acdc"], dict):
            raise ValueError(f"result.meta.acdc must be an object (the search's counters), got {meta['acdc']!r:.40}")
        check_count(meta["n_edges_unreached"], "result.meta.n_edges_unreached", high=n_edges)
    faith = check_keys(result["faithfulness"], "result.faithfulness", required=tuple(options["eval_ablations"]))
    for ab, c in faith.items():
        what = f"result.faithfulness.{ab}"
        check_keys(c, what, required=FAITH_KEYS, extra_ok=True)  # (what analyses.circuits measures)
        for k in ("full", "empty"):
            check_numbers([c[k]], f"{what}.{k}", where=lambda _: "")
        check_numbers(c["fractions"], f"{what}.fractions", low=0, high=1)
        if not c["fractions"] or 0 in c["fractions"]:
            raise ValueError(f"{what}.fractions must be fractions of the edges in (0, 1], got {c['fractions']!r:.60}")
        check_numbers(c["n_edges"], f"{what}.n_edges", low=0, high=n_edges, whole=True)
        check_numbers(c["metric"], f"{what}.metric")
        check_numbers(c["f"], f"{what}.f", nan_ok=True)
        if not len(c["fractions"]) == len(c["n_edges"]) == len(c["metric"]) == len(c["f"]):
            raise ValueError(f"{what}: fractions, n_edges, metric and f must have one entry per point of the curve")
        check_numbers([c["cpr"], c["cmd"]], f"{what}", nan_ok=True, where=lambda i: (".cpr", ".cmd")[i])
        own = check_keys(c["circuit"], f"{what}.circuit", required=("n_edges", "f", "metric"), extra_ok=True)
        check_count(own["n_edges"], f"{what}.circuit.n_edges", high=n_edges)
        check_numbers([own["f"]], f"{what}.circuit.f", nan_ok=True, where=lambda _: "")
        check_numbers([own["metric"]], f"{what}.circuit.metric", where=lambda _: "")
    return L, H


def circuit_of(model: str, result: dict, options: dict):
    """The job's Circuit rebuilt from a shard's result (no model needed): ACDC's kept edges, else the selection."""
    from ..analyses.circuits import job as J
    from ..analyses.circuits.graph import Graph

    d = result["graph"]
    graph = Graph.from_config(d["n_layers"], d["n_heads"], d["n_kv_heads"], d["mlp"], d["model"])
    idx = graph.edge_index()
    scores = torch.full((graph.n_up, graph.n_slots), float("nan"))
    scores[idx[:, 0], idx[:, 1]] = torch.tensor(result["scores"], dtype=torch.float32)
    kept = None
    if "in_circuit" in result:
        kept = torch.zeros(graph.n_up, graph.n_slots, dtype=torch.bool)
        kept[idx[:, 0], idx[:, 1]] = torch.tensor(result["in_circuit"], dtype=torch.bool)
    settings = dict(_settings(options), model=model, **result.get("meta", {}))
    return J.rebuild_circuit(graph, scores, options["method"], settings, options["top_n"], options["select"], kept)


def assemble(results: dict, out: Path, options: dict, log=print) -> pd.DataFrame:
    from ..analyses.circuits import job as J

    out = Path(out)
    summary, curves = [], []
    for model, shards in results.items():
        r = shards[SHARD]
        circuit = circuit_of(model, r, options)
        faith = r["faithfulness"]
        res = {"n_prompts": r["n_prompts"], "n_edges_graph": circuit.graph.n_edges,
               "n_edges_circuit": circuit.n_edges, "faithfulness": faith}
        folder = out / slug(model)
        J.write_outputs(circuit, folder, dict(circuit.meta), res)
        circuit.meta["results"] = res
        log(f"{model}: {folder}/edges.csv, nodes.csv, graph.json, faithfulness.json, report.html")
        for ab, c in faith.items():
            summary.append({"model": model, "method": options["method"], "task": options["task"],
                            "n_edges_graph": circuit.graph.n_edges, "n_edges_circuit": circuit.n_edges,
                            "eval_ablation": ab, "f_circuit": c["circuit"]["f"], "cpr": c["cpr"], "cmd": c["cmd"],
                            "metric_full": c["full"], "metric_empty": c["empty"],
                            "metric_circuit": c["circuit"]["metric"]})
            for fr, k, f in zip(c["fractions"], c["n_edges"], c["f"]):
                curves.append({"model": model, "eval_ablation": ab, "fraction": fr, "n_edges": k, "f": f})
    table = pd.DataFrame(summary)
    atomic_write_text(out / "faithfulness.csv", pd.DataFrame(curves).to_csv(index=False))
    atomic_write_text(out / "summary.csv", table.to_csv(index=False))
    return table


# ---------------------------------------------------------------------------------------------- options
def _add_arguments(p) -> None:
    from ..analyses.circuits import ABLATIONS, METHODS
    from ..analyses.tasks import TASKS

    p.add_argument("--task", default="ioi", help=f"one of {', '.join(TASKS)} (default ioi; file needs --task-file)")
    p.add_argument("--task-file", default=None, metavar="ROWS",
                   help="with --task file: JSONL/CSV rows with clean, answer and optional corrupt, wrong")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a task option (repeatable), e.g. half=10 for induction, source=code for lm")
    p.add_argument("--method", default="eap-ig", help=f"one of {', '.join(METHODS)} (default eap-ig)")
    p.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra option of the method (repeatable; VALUE is read as JSON, else as text), e.g. "
                        "tau=0.05 for acdc: the circuit is then the edges ACDC kept at that tau (default 0.01)")
    p.add_argument("--n", type=int, default=32, help="prompts (default 32; the file task: the first n rows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=5, help="EAP-IG interpolation steps (default 5)")
    p.add_argument("--ablation", default="corrupted", help=f"ablation the edges are scored under: "
                   f"{', '.join(ABLATIONS)} (default corrupted)")
    p.add_argument("--top-n", type=int, default=200, help="edges in the circuit before pruning (default 200; not "
                   "for acdc, which keeps its own edges)")
    p.add_argument("--select", default="topn", help="topn (highest |score|) or greedy (grown from the logits; "
                   "suits sae); not for acdc")
    p.add_argument("--eval-ablations", nargs="+", default=None, metavar="ABLATION",
                   help="ablations faithfulness is measured under (default: the scoring ablation); e.g. "
                        "corrupted zero mean resample to see how f changes with the ablation")
    p.add_argument("--faith-n", type=int, default=8, help="prompts faithfulness is measured on (default 8)")


def _key_values(pairs, flag: str) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} must be KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _options_from_args(args) -> dict:
    return options(task=args.task, task_file=args.task_file, method=args.method, n=args.n, seed=args.seed,
                   steps=args.steps, ablation=args.ablation, top_n=args.top_n, select=args.select,
                   eval_ablations=args.eval_ablations, faith_n=args.faith_n,
                   task_options=_key_values(args.task_option, "--task-option"),
                   method_options=_key_values(args.method_option, "--method-option"), flag_names=True)


def options(task: str = "ioi", method: str = "eap-ig", n: int = 32, seed: int = 0, steps: int = 5,
            ablation: str = "corrupted", top_n: int = 200, select: str = "topn", eval_ablations=None,
            faith_n: int = 8, task_file=None, task_options: dict | None = None,
            method_options: dict | None = None, flag_names: bool = False) -> dict:
    """Validated job options (clear errors before any model is loaded). `flag_names`: errors name the command
    line's flags (--n, --steps, --seed, ...) rather than the keyword arguments."""
    from ..analyses.circuits import job as J
    from ..analyses.tasks import TASKS, get_task

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; available: {', '.join(TASKS)}")
    if (task == "file") != (task_file is not None):
        raise ValueError("--task file needs --task-file ROWS (a .jsonl or .csv file)" if task == "file" else
                         f"--task-file is for --task file, not --task {task}")
    if task_file is not None and (not is_path(task_file) or not os.fspath(task_file).strip()):
        raise (ValueError if isinstance(task_file, str) else TypeError)(
            f"--task-file must be the path of a .jsonl or .csv file of rows, got {type(task_file).__name__} "
            f"{task_file!r:.60}")
    try:
        task_options = dict(task_options or {})
    except (TypeError, ValueError):  # a str, a number, a list of non-pairs
        raise TypeError(f"task_options must be a dict of the task's options (e.g. {{'half': 10}}) or None, got "
                        f"{type(task_options).__name__} {task_options!r:.60}") from None
    if "path" in task_options:
        raise ValueError("give the file task's rows with --task-file ROWS, not as a task option")
    get_task(task, **task_options)  # unknown task options are refused by name
    seed = check_seed(seed, "--seed" if flag_names else "seed")
    eval_ablations = (ablation,) if eval_ablations is None else eval_ablations
    eval_ablations, method_options = J.check_settings(method, n, steps, ablation, top_n, select, faith_n,
                                                      eval_ablations, method_options, flags=flag_names)
    opts = dict(task=task, method=method, n=n, seed=seed, steps=steps, ablation=ablation, top_n=top_n,
                select=select, eval_ablations=list(eval_ablations), faith_n=faith_n, task_options=task_options,
                method_options=method_options)
    if task == "file":
        from ..analyses.tasks import read_rows

        path = Path(task_file)
        rows = read_rows(path)  # a missing file, a bad row: refused now, before any model is loaded
        if "corrupted" in (ablation, *eval_ablations) and rows[0].get("corrupt") in (None, ""):
            raise ValueError(f"{path.name} has no corrupt column, so there is no corrupted run to ablate to; use "
                             "--ablation and --eval-ablations among zero, mean, resample (or add corrupt prompts)")
        opts["task_file"] = str(path.resolve())
        opts["task_file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return opts


JOB = register(Job(
    name="circuit", version=2, checkpoints=True, shards=lambda model, opts: [SHARD], compute=compute, assemble=assemble,
    check=check_result,
    outputs=("summary.csv", "faithfulness.csv"), add_arguments=_add_arguments, options_from_args=_options_from_args,
    help="find a task's circuit (edge scores, selected circuit, faithfulness) in one or many models",
))


def circuit(models, out, *, device=None, dtype=None, resume: bool = False, ray_address: str | None = None,
            progress: bool = True, log=print, **opts) -> pd.DataFrame:
    """Python entry point of `interp circuit` (same files, same resumable shards); returns the summary table."""
    from .runner import run_job

    return run_job(JOB, models, out, options(**opts), device=device, dtype=dtype, resume=resume,
                   ray_address=ray_address, progress=progress, log=log)
