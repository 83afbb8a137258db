"""toy-induction: exact edge patching of all 81 edges vs EAP and EAP-IG (rank correlation, ROC against the known
circuit), with the induction task's prompts and the first repeat corrupted (so the keys carry the difference).

    python examples/circuits_toy.py [--n 32] [--steps 5] [--out out/circuits_toy]

Known circuit: input -> L0H3<v> (the previous-token head moves the previous token), L0H3 -> L1Hh<k> (K-composition
into every layer-1 induction head), input -> L1Hh<v> (the token they copy), L1Hh -> logits.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

import interp
from interp.analyses import circuits as C
from interp.analyses import tasks as T
from interp.tokens import Tokens


def known_circuit(graph) -> torch.Tensor:
    pos = torch.zeros(graph.n_up, graph.n_slots, dtype=torch.bool)
    pos[graph.up_index("input"), graph.slot_index("L0H3", "v")] = True
    for h in range(graph.n_heads):
        pos[graph.up_index("L0H3"), graph.slot_index(f"L1H{h}", "k")] = True
        pos[graph.up_index("input"), graph.slot_index(f"L1H{h}", "v")] = True
        pos[graph.up_index(f"L1H{h}"), graph.slot_index("logits")] = True
    return pos


def corrupt_first_half(batch, vocab: int, seed: int, half: int):
    """Replace the first repeat by fresh random tokens (BOS and the second repeat stay)."""
    ids = batch.clean.input_ids.clone()
    g = torch.Generator().manual_seed(seed + 1)
    off = ids.shape[1] - 2 * half
    ids[:, off:off + half] = torch.randint(1, vocab, (ids.shape[0], half), generator=g)
    return dataclasses.replace(batch, corrupt=Tokens(ids, None, list(batch.clean.lengths)))


def compare(model, n=32, steps=5, seed=0, half=20) -> dict:
    task = T.get_task("induction", half=half)
    batch = corrupt_first_half(task.make(model, n=n, seed=seed), model.cfg.d_vocab, seed, half)
    graph = C.Graph.from_model(model)
    out, times = {"n_edges": graph.n_edges, "n": n}, {}
    scores = {}
    for method in ("patching", "eap", "eap-ig"):
        t = time.perf_counter()
        scores[method] = C.score_edges(model, graph, task, batch, method, steps=steps)
        times[method] = round(time.perf_counter() - t, 2)
    pos = known_circuit(graph)
    for method in ("eap", "eap-ig"):
        out[method] = {"spearman_signed": round(C.spearman(scores[method], scores["patching"]), 3),
                       "spearman_abs": round(C.spearman(scores[method].abs(), scores["patching"].abs()), 3),
                       "roc_auc_known": round(C.roc_auc(scores[method], pos), 3)}
    out["patching"] = {"roc_auc_known": round(C.roc_auc(scores["patching"], pos), 3)}
    out["times_s"] = times
    circuit = C.Circuit(graph, scores["patching"], "patching").select(top_n=13)
    out["top13_exact"] = [f"{r['src']}->{r['dst']}<{r['dst_input']}>" for r in circuit.edges()[:13]]
    return out, scores, batch, task


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default="out/circuits_toy")
    a = ap.parse_args(argv)
    model = interp.load("toy-induction")
    res, scores, batch, task = compare(model, a.n, a.steps)
    print(json.dumps(res, indent=1))
    graph = C.Graph.from_model(model)
    c = C.Circuit(graph, scores["eap-ig"], "eap-ig").select(top_n=13)
    C.write(c, a.out)
    open(f"{a.out}/report.html", "w").write(C.report_html(c, extra=res))


if __name__ == "__main__":
    main()
