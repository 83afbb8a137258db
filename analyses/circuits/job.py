"""`run_circuit_job`: score a task's edges, select a circuit, evaluate it, write the files; resumable.

Files in out_dir: scores.pt (the scored graph and the job's settings; written first, reused on resume when the
settings match), faithfulness.json, edges.csv, nodes.csv, graph.json (EAP-IG/MIB format), report.html. Every file
is written atomically, so a killed job leaves only complete files; rerunning skips what is done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from . import api, draw, export
from .evaluate import Circuit, faithfulness_curve
from .graph import Graph
from .patching import ABLATIONS, ablated_outputs


def run_circuit_job(model, task, method: str = "eap-ig", out_dir="out/circuit", n: int = 32, seed: int = 0,
                    steps: int = 5, ablation: str = "corrupted", top_n: int = 200, select: str = "topn",
                    faithfulness: bool = True, faith_n: int = 8, eval_ablations=("corrupted",),
                    progress=print) -> Circuit:
    """Returns the selected Circuit. `task`: a name from analyses.tasks or a Task."""
    from interp.analyses import tasks as T

    api.check_method(method)
    for ab in (ablation, *eval_ablations):
        if ab not in ABLATIONS:
            raise ValueError(f"ablation must be one of {ABLATIONS}, got {ab!r}")
    task = T.get_task(task) if isinstance(task, str) else task
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"model": model.name, "task": task.name, "method": method, "n": n, "seed": seed, "steps": steps,
                "ablation": ablation}
    batch = task.make(model, n=n, seed=seed)
    graph = Graph.from_model(model)
    score_file = out / "scores.pt"
    scores = None
    if score_file.exists():
        saved = torch.load(score_file)
        if saved.get("settings") == settings:
            scores = saved["scores"]
            progress(f"resume: scores from {score_file}")
        else:
            progress(f"{score_file} has other settings ({saved.get('settings')}); recomputing")
    if scores is None:
        progress(f"scoring {graph.n_edges} edges of {model.name} on {task.name} with {method} (n={len(batch)})")
        scores = api.score_edges(model, graph, task, batch, method, steps=steps, ablation=ablation)
        tmp = score_file.with_name("scores.pt.tmp")
        torch.save({"settings": settings, "scores": scores}, tmp)
        os.replace(tmp, score_file)
    circuit = Circuit(graph, scores, method=method, meta=settings).select(top_n=top_n, method=select)
    progress(f"selected {circuit.n_edges} edges ({select}, top_n={top_n}, pruned to a connected graph)")
    results: dict = {"n_edges_graph": graph.n_edges, "n_edges_circuit": circuit.n_edges}
    faith_file = out / "faithfulness.json"
    if faithfulness:
        if faith_file.exists() and json.loads(faith_file.read_text()).get("settings") == settings:
            results["faithfulness"] = json.loads(faith_file.read_text())["curves"]
            progress("resume: faithfulness from faithfulness.json")
        else:
            sub = api.buckets(batch[:faith_n])[0]  # the first equal-length bucket of the first faith_n prompts
            curves = {}
            for ab in eval_ablations:
                progress(f"faithfulness curve, ablation={ab}, {len(sub)} prompts")
                clean = sub.clean.input_ids
                abl = ablated_outputs(model, graph, clean, None if sub.corrupt is None else sub.corrupt.input_ids,
                                      ab, seed=seed)
                curves[ab] = faithfulness_curve(model, circuit, clean, abl, lambda lg, s=sub: task.metric(lg, s))
            export._atomic_write(faith_file, json.dumps({"settings": settings, "curves": curves}, indent=1))
            results["faithfulness"] = curves
    export.write(circuit, out)
    export._atomic_write(out / "report.html", draw.report_html(circuit, extra={**settings, **results}))
    progress(f"wrote {out}/edges.csv, nodes.csv, graph.json, report.html")
    circuit.meta["results"] = results
    return circuit
