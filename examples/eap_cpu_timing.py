"""EAP and EAP-IG over every edge of a bundled model on IOI, timed on this machine (issue 14's CPU speed figure):

    python examples/eap_cpu_timing.py --model smollm2-135m --n 32 --steps 5

Prints wall and CPU seconds of one call each (scores over all edges, corrupted ablation), after a warm-up call on
2 pairs so one-time costs (kernel caches, allocator) are not counted; beside EAP, the dense all-at-once reference
(`attribution.eap_reference`: every delta and gradient materialised) on the same buckets.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import interp
from interp.analyses import tasks as T
from interp.analyses.circuits import api, attribution
from interp.analyses.circuits.graph import Graph


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    fn()
    return {"wall_s": round(time.perf_counter() - w, 1), "cpu_s": round(time.process_time() - c, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args(argv)
    model = interp.load(a.model)
    task = T.get_task("ioi")
    batch = task.make(model, n=a.n, seed=0)
    graph = Graph.from_model(model)
    api.score_edges(model, graph, task, task.make(model, n=2, seed=1), "eap")  # warm-up
    out = {"model": a.model, "n": a.n, "edges": graph.n_edges, "threads": torch.get_num_threads()}
    out["eap"] = timed(lambda: api.score_edges(model, graph, task, batch, "eap"))

    def dense():
        for sub in api.buckets(batch):
            attribution.eap_reference(model, graph, sub.clean.input_ids, lambda lg, sub=sub: task.metric(lg, sub),
                                      sub.corrupt.input_ids)

    out["eap (dense reference)"] = timed(dense)
    out[f"eap-ig m={a.steps}"] = timed(lambda: api.score_edges(model, graph, task, batch, "eap-ig", steps=a.steps))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
