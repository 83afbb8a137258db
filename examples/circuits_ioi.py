"""IOI circuits on a bundled model: exact head patching as the reference, EAP / EAP-IG scored against it, head roles
by position, timings (wall and process CPU time).

    python examples/circuits_ioi.py --model smollm2-135m --n 32 --steps 5 [--loop] [--out out/circuits_ioi.json]

Node score of a head from edge scores: the sum of its outgoing edges' scores (exactly the node-level attribution of
its output, AtP). Reference: M(head's output patched to the corrupted run) - M(clean), the IOI logit difference.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import interp
from interp.analyses import tasks as T
from interp.analyses.circuits import api
from interp.analyses.circuits.evaluate import roc_auc, spearman
from interp.analyses.circuits.graph import Graph


class Timer:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()

    def __exit__(self, *a):
        self.log[self.name] = {"wall_s": round(time.perf_counter() - self.w, 2),
                               "cpu_s": round(time.process_time() - self.c, 2)}
        print(f"  {self.name}: {self.log[self.name]}", flush=True)


def node_scores(graph: Graph, scores: torch.Tensor, n_layers: int, n_heads: int) -> torch.Tensor:
    out = torch.zeros(n_layers, n_heads)
    sums = torch.nan_to_num(scores, nan=0.0).sum(1)
    for l in range(n_layers):
        for h in range(n_heads):
            out[l, h] = sums[graph.up_index(f"L{l}H{h}")]
    return out


def head_roles(model, batch, top: list) -> dict:
    """Attention from the end position to IO / S1 / S2 and from S2 to S1 (duplicate/induction), per given head."""
    roles = {}
    for sub in api.buckets(batch):
        ids = sub.clean.input_ids
        io = (ids == sub.answer[:, None]).float().argmax(1)
        s1 = (ids == sub.wrong[:, None]).float().argmax(1)
        s2 = ids.shape[1] - 1 - (ids == sub.wrong[:, None]).flip(1).float().argmax(1)
        layers = sorted({l for l, _ in top})
        _, cache = model.run_with_cache(ids, names=[f"blocks.{l}.attn.hook_pattern" for l in layers])
        r = torch.arange(len(ids))
        for l, h in top:
            p = cache[f"blocks.{l}.attn.hook_pattern"][:, h]  # [batch, q, k]
            end = sub.position
            d = roles.setdefault(f"L{l}H{h}", {"end->IO": 0.0, "end->S": 0.0, "S2->S1": 0.0, "n": 0})
            d["end->IO"] += float(p[r, end, io].sum())
            d["end->S"] += float((p[r, end, s1] + p[r, end, s2]).sum())
            d["S2->S1"] += float(p[r, s2, s1].sum())
            d["n"] += len(ids)
    for d in roles.values():
        n = d.pop("n")
        for k in d:
            d[k] = round(d[k] / n, 3)
    return roles


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--loop", action="store_true", help="also time head patching one forward per head")
    ap.add_argument("--out", default="out/circuits_ioi.json")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    model = interp.load(a.model)
    c = model.cfg
    task = T.get_task("ioi")
    batch = task.make(model, n=a.n, seed=0)
    log: dict = {"model": a.model, "n": len(batch), "threads": torch.get_num_threads()}
    with torch.no_grad():
        log["clean_metric"] = float(task.metric(model(batch.clean), batch))
        log["corrupt_metric"] = float(task.metric(model(batch.corrupt), batch))
    graph = Graph.from_model(model)
    log["n_edges"] = graph.n_edges
    print(f"{a.model}: {graph.n_edges} edges; logit diff clean {log['clean_metric']:.2f}, "
          f"corrupt {log['corrupt_metric']:.2f}", flush=True)
    times: dict = {}
    with Timer("head_patching_batched", times):
        ref = api.head_effects(model, task, batch, batched=True)
    if a.loop:  # batched vs one forward per head, on the first bucket and the heads of the first 4 layers
        from interp.analyses.circuits.patching import head_patching
        sub = api.buckets(batch)[0]
        heads = [(l, h) for l in range(4) for h in range(c.n_heads)]
        args = (model, sub.clean.input_ids, sub.corrupt.input_ids, lambda lg: task.metric(lg, sub))
        with Timer(f"head_patching_{len(heads)}heads_{len(sub)}prompts_batched", times):
            hb = head_patching(*args, heads=heads)
        with Timer(f"head_patching_{len(heads)}heads_{len(sub)}prompts_loop", times):
            hl = head_patching(*args, heads=heads, batched=False)
        log["batched_vs_loop_max_diff"] = float((hb - hl).abs().max())
    with Timer("eap", times):
        s_eap = api.score_edges(model, graph, task, batch, "eap")
    with Timer(f"eap_ig_m{a.steps}", times):
        s_ig = api.score_edges(model, graph, task, batch, "eap-ig", steps=a.steps)
    log["times"] = times
    k = max(1, round(0.05 * c.n_layers * c.n_heads))  # the top 5 % of heads by |exact effect| are "the circuit"
    positive = torch.zeros(c.n_layers * c.n_heads, dtype=torch.bool)
    positive[ref.abs().flatten().topk(k).indices] = True
    comp = {}
    for name, s in (("eap", s_eap), ("eap-ig", s_ig)):
        ns = node_scores(graph, s, c.n_layers, c.n_heads)
        comp[name] = {"spearman_vs_exact": round(spearman(ns.flatten(), ref.flatten()), 3),
                      "roc_auc_top5pct": round(roc_auc(ns.flatten(), positive), 3)}
    log["vs_exact_heads"] = comp
    top = [divmod(int(i), c.n_heads) for i in ref.abs().flatten().topk(10).indices]
    log["top_heads_exact"] = [{"head": f"L{l}H{h}", "effect": round(float(ref[l, h]), 3)} for l, h in top]
    log["roles"] = head_roles(model, batch, top)
    print(json.dumps({k: v for k, v in log.items() if k != "times"}, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(log, indent=1))


if __name__ == "__main__":
    main()
