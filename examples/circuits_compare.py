"""Every circuit method on one task, side by side (issue 15's comparison table): EAP, EAP-IG, ACDC and the SAE-code
method against exact head patching, on the same prompts.

    python examples/circuits_compare.py --model smollm2-135m --task ioi --n 16 --tau 0.01      # one model
    python examples/circuits_compare.py report                                                 # markdown table

Per method: wall time; the head ranking (a head's score = the sum of its outgoing edges' |scores|; SAE: its own
head scores) against exact head patching: ROC AUC with the top 5 % heads by |exact effect| as positives, and how
many of those positives are among the method's top 5 % (recall at equal size); faithfulness at equal size: the
top-|score| edges at ACDC's circuit size (0.5 % of the edges without ACDC) and at 1 % of the edges, f = (M(C) - M(empty)) / (M(full) - M(empty))
under the task's corruption, plus ACDC's own kept set. Exact head patching and EAP / EAP-IG scores are the cached
ones of `circuits_ioi.py heads` when run with the same model / n (out/cfind/<model>/<task>-n<n>-s0/).
Results: out/cfind/<model>/<task>-n<n>-s0/compare.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cfind_common import ROOT, Ctx, edge_scores, faithfulness_buckets, head_reference, r3, save_json  # noqa: E402

from interp.analyses.circuits import acdc as A  # noqa: E402
from interp.analyses.circuits import sae_codes as S  # noqa: E402
from interp.analyses.circuits.evaluate import roc_auc, spearman, top_edges  # noqa: E402


def head_rank(ctx: Ctx, scores: torch.Tensor) -> torch.Tensor:
    """[layer, head]: the sum of |outgoing edge score| of each head."""
    g, c = ctx.graph, ctx.c
    s = torch.nan_to_num(scores.abs(), nan=0.0).sum(1)
    idx = torch.tensor([g.up_index(f"L{l}H{h}") for l in range(c.n_layers) for h in range(c.n_heads)])
    return s[idx].reshape(c.n_layers, c.n_heads)


def compare(a) -> dict:
    ctx = Ctx(a.model, a.task, a.n)
    c, g = ctx.c, ctx.graph
    times: dict = {}
    ref = head_reference(ctx, times, chunk=a.chunk)  # [layer, head] exact effects
    k = max(1, round(0.05 * c.n_layers * c.n_heads))
    imp = ref.abs().flatten()
    pos = torch.zeros_like(imp, dtype=torch.bool)
    pos[imp.topk(k).indices] = True
    out = {"model": a.model, "task": a.task, "n": len(ctx.batch), "n_edges": g.n_edges, "k_heads": k,
           "tau": a.tau, "exact_heads_s": times.get("head_patching_batched", {}).get("wall_s"),
           **ctx.clean_corrupt(), "methods": {}}
    methods: dict = {}
    want = a.methods.split(",")
    bad = sorted(set(want) - {"eap", "eap-ig", "acdc", "sae"})
    if bad or not want:
        raise SystemExit(f"--methods: unknown {', '.join(bad)}; choose from eap, eap-ig, acdc, sae")
    for name in [m for m in ("eap", "eap-ig") if m in want]:
        sc = edge_scores(ctx, name, steps=a.steps, log=times)  # timed only when computed here (else cached)
        tag = f"{name}_corrupted" + (f"_m{a.steps}" if name == "eap-ig" else "")
        methods[name] = {"scores": sc, "heads": head_rank(ctx, sc), "s": times.get(tag, {}).get("wall_s")}
    if "acdc" in want:
        ck = ctx.dir / f"acdc_tau{a.tau:g}.pt"
        t = time.perf_counter()
        acdc = A.acdc_task(ctx.model, ctx.task, ctx.batch, a.tau, graph=g, window=a.window, checkpoint=ck,
                           evaluate=False, progress=lambda m: print("acdc", m, flush=True))
        methods["acdc"] = {"scores": acdc.scores, "heads": head_rank(ctx, acdc.scores),
                           "s": time.perf_counter() - t, "kept": acdc.in_circuit, "search_s": acdc.meta.get("search_s")}
    if "sae" in want:
        t = time.perf_counter()
        sae = S.sae_circuit(ctx.model, ctx.task, ctx.batch, graph=g, seed=0)
        methods["sae"] = {"scores": sae.scores, "heads": torch.tensor(sae.meta["head_scores"]).abs(),
                          "s": time.perf_counter() - t}
    # equal size: ACDC's own circuit size when ACDC ran, else 0.5 % of the edges
    n_eq = int(methods["acdc"]["kept"].sum()) if "acdc" in methods else math.ceil(0.005 * g.n_edges)
    sizes = {"acdc_size": max(1, n_eq), "1pct": max(1, math.ceil(0.01 * g.n_edges))}
    masks, labels = [], []
    for name, m in methods.items():
        rank = torch.nan_to_num(m["scores"].abs(), nan=-math.inf)
        for tag, size in sizes.items():
            masks.append(top_edges(rank, size))
            labels.append((name, tag))
    if "acdc" in methods:
        masks.append(methods["acdc"]["kept"])
        labels.append(("acdc", "own"))
    fb = faithfulness_buckets(ctx, masks)
    f = dict(zip(labels, fb["f"]))
    for name, m in methods.items():
        h = m["heads"].flatten()
        top = set(h.topk(k).indices.tolist())
        row = {"wall_s": r3(m["s"]) if m["s"] is not None else None,
               "roc_auc_heads": r3(roc_auc(h, pos)), "spearman_heads_abs": r3(spearman(h, imp)),
               f"recall_top{k}": f"{len(top & set(pos.nonzero().flatten().tolist()))}/{k}",
               f"f@{sizes['acdc_size']}_edges": r3(f[(name, "acdc_size")]),
               f"f@1%={sizes['1pct']}_edges": r3(f[(name, "1pct")]),
               "top_heads": [f"L{int(i) // c.n_heads}H{int(i) % c.n_heads}" for i in h.topk(k).indices]}
        if name == "acdc":
            row.update(kept_edges=n_eq, f_own=r3(f[("acdc", "own")]), search_s=m["search_s"])
        out["methods"][name] = row
    out["exact_top_heads"] = [f"L{int(i) // c.n_heads}H{int(i) % c.n_heads} ({r3(ref.flatten()[i])})"
                              for i in imp.topk(k).indices]
    out["f_full_empty"] = [r3(fb["full"]), r3(fb["empty"])]
    out["times"] = times
    save_json(ctx.dir / "compare.json", out)
    return out


def report() -> str:
    rows = ["| model | task | method | time s | ROC AUC (heads vs exact top 5 %) | recall of the exact top 5 % | "
            "f at equal size (ACDC's, or 0.5 %) | f at 1 % of edges | top heads |", "|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(ROOT.glob("*/*/compare.json")):
        d = json.loads(p.read_text())
        for name, m in d["methods"].items():
            fa = next(v for kk, v in m.items() if kk.startswith("f@") and "%" not in kk)
            f1 = next(v for kk, v in m.items() if kk.startswith("f@1%"))
            size = next(kk for kk in m if kk.startswith("f@") and "%" not in kk)[2:].split("_")[0]
            rec = next(v for kk, v in m.items() if kk.startswith("recall"))
            extra = f" (own set: {m['kept_edges']} edges, f {m['f_own']})" if name == "acdc" else ""
            rows.append(f"| {d['model']} | {d['task']} n={d['n']} | {name}{extra} | {m['wall_s']} | "
                        f"{m['roc_auc_heads']} | {rec} | {fa} ({size} edges) | {f1} | "
                        f"{', '.join(m['top_heads'][:5])} |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="run", choices=("run", "report"))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="ioi")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--tau", type=float, default=0.01)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--methods", default="eap,eap-ig,acdc,sae", help="comma-separated subset of eap,eap-ig,acdc,sae")
    a = ap.parse_args(argv)
    if a.what == "report":
        print(report())
    else:
        print(json.dumps(compare(a), indent=1, default=str))


if __name__ == "__main__":
    main()
