"""IOI circuits on the bundled models: exact patching as the reference, EAP / EAP-IG scored against it, faithfulness
by ablation type, and head roles by position checked against the classifier. One subcommand per table:

    python examples/circuits_ioi.py heads     --model smollm2-135m --n 32   # exact head patching vs EAP / EAP-IG
    python examples/circuits_ioi.py edges     --model smollm2-135m --n 8 --heads 1   # exact edge reference
    python examples/circuits_ioi.py ablations --model smollm2-135m --n 32   # faithfulness: zero/mean/resample/corr.
    python examples/circuits_ioi.py roles     --model smollm2-135m --n 32 --classify out/cfind/classify/heads.csv
    python examples/circuits_ioi.py report                                   # every table above as markdown

Results (JSON) and cached scores go to out/cfind/<model>/ioi-n<n>-s0/; `report` reads the JSON files only.
Scores everywhere ~ M(ablated) - M(clean) in units of the IOI logit difference (negative: the component helps).
Node score of a head from edge scores: the sum of its outgoing edges' scores (the node-level attribution, AtP).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cfind_common import (ROOT, Ctx, Timer, cached, curve, edge_scores, head_reference, node_scores,  # noqa: E402
                          r3, save_json)

from interp.analyses.circuits import api  # noqa: E402
from interp.analyses.circuits.evaluate import roc_auc, spearman  # noqa: E402
from interp.analyses.circuits.patching import ablated_outputs, edge_patching, stack_outputs  # noqa: E402
from interp.head_inputs import node_outputs  # noqa: E402
from interp.readout import final_norm, unembedding  # noqa: E402

SIZES = (0.01, 0.05, 0.1)  # edge fractions at which faithfulness is compared at equal circuit size


def _positives(ref: torch.Tensor, k: int) -> torch.Tensor:
    flat = torch.nan_to_num(ref.abs(), nan=-math.inf).flatten()
    pos = torch.zeros_like(flat, dtype=torch.bool)
    pos[flat.topk(k).indices] = True
    return pos.reshape(ref.shape)


def _f_at(res: dict, sizes=SIZES) -> dict:
    return {f"f@{s:g}": r3(res["f"][res["fractions"].index(s)]) for s in sizes if s in res["fractions"]}


# ---------------------------------------------------------------------------------------------- heads
def cmd_heads(a):
    ctx = Ctx(a.model, "ioi", a.n)
    c = ctx.c
    log: dict = {"model": a.model, "n": a.n, "n_edges": ctx.graph.n_edges, **ctx.clean_corrupt()}
    times: dict = {}
    if a.only == "exact":  # fill the exact-head cache only (run beside `--only curves` to use two processes)
        head_reference(ctx, times, chunk=a.chunk)
        return
    s = {"eap": edge_scores(ctx, "eap", log=times), "eap-ig": edge_scores(ctx, "eap-ig", steps=a.steps, log=times)}
    comp = {}
    for name, sc in s.items():  # faithfulness first: cheaper than the exact sweep, and fails early if broken
        res = cached(ctx.dir / f"curve_{name}.pt", lambda sc=sc: curve(ctx, sc), times, f"faithfulness_{name}")
        comp[name] = dict(cpr=r3(res["cpr"]), cmd=r3(res["cmd"]), **_f_at(res), curve=[r3(x) for x in res["f"]],
                          m_full=r3(res["full"]), m_empty=r3(res["empty"]))
    if a.only == "curves":
        return
    ref = head_reference(ctx, times, chunk=a.chunk)
    k = max(1, round(0.05 * c.n_layers * c.n_heads))
    pos = _positives(ref, k)
    log["k_top_heads"] = k
    for name, sc in s.items():
        ns = node_scores(ctx.graph, sc, c.n_layers, c.n_heads)
        comp[name].update({"spearman": r3(spearman(ns.flatten(), ref.flatten())),
                           "roc_auc_top5pct": r3(roc_auc(ns.flatten(), pos.flatten())),
                           "top10_overlap": len(set(ns.abs().flatten().topk(10).indices.tolist())
                                                & set(ref.abs().flatten().topk(10).indices.tolist()))})
    log["vs_exact_heads"] = comp
    top = [divmod(int(i), c.n_heads) for i in ref.abs().flatten().topk(10).indices]
    log["top_heads_exact"] = [{"head": f"L{l}H{h}", "effect": r3(ref[l, h])} for l, h in top]
    log["times"] = times
    save_json(ctx.dir / "heads.json", log)


# ---------------------------------------------------------------------------------------------- edges
def receiver_slots(graph, heads: list[tuple[int, int]], kv: bool = True) -> list[int]:
    """The q slot of each head (and, with kv, the k and v slots of its KV head), then the logits slot."""
    g = graph.n_heads // graph.n_kv_heads
    out = []
    for l, h in heads:
        out.append(graph.slot_index(f"L{l}H{h}", "q"))
        if kv:
            for kind in ("k", "v"):
                out.append(graph.slot_index(graph.kv_name(l, h // g), kind))
    out.append(graph.slot_index("logits"))
    return list(dict.fromkeys(out))


def logits_edges_exact(ctx: Ctx, sub, ablated: torch.Tensor) -> torch.Tensor:
    """[n_up] exact M(edge u -> logits ablated) - M(clean) without a forward per edge: the logits read the final
    residual stream through the final norm and the unembedding only, so each edge's patched logits are
    W_U N_final(resid_final + a_u^ablated - a_u) at the read position (the core's definition, one run)."""
    ids = sub.clean.input_ids
    L = ctx.c.n_layers
    a = stack_outputs(node_outputs(ctx.model, ids), ctx.graph)  # [batch, pos, n_up, d_model]
    with torch.no_grad():
        _, cache = ctx.model.run_with_cache(ids, names=[f"blocks.{L - 1}.hook_resid_post"])
        r, end = torch.arange(len(ids)), sub.position
        x = cache[f"blocks.{L - 1}.hook_resid_post"][r, end]  # [batch, d_model]
        d = (ablated.to(a.dtype) - a)[r, end]  # [batch, n_up, d_model]
        h = final_norm(ctx.model)(torch.cat([x[:, None], x[:, None] + d], 1))  # [batch, 1 + n_up, d_model]
        w = unembedding(ctx.model)
        m = (h.float() * (w[sub.answer] - w[sub.wrong]).float()[:, None]).sum(-1).mean(0)  # [1 + n_up]
    return (m[1:] - m[0]).cpu()


def cmd_edges(a):
    ctx = Ctx(a.model, "ioi", a.n)
    c, graph = ctx.c, ctx.graph
    times: dict = {}
    if a.receivers:  # heads given by name (e.g. the strongest of a larger `heads` run): no head sweep here
        heads = [tuple(int(t) for t in x.strip()[1:].split("H")) for x in a.receivers.split(",")]
    else:
        ref_heads = head_reference(ctx, times, chunk=a.chunk)
        heads = [divmod(int(i), c.n_heads) for i in ref_heads.abs().flatten().topk(a.heads).indices]
    slots = list(range(graph.n_slots)) if a.all else receiver_slots(graph, heads, kv=a.kv)
    path = ctx.dir / ("edges_exact_all.pt" if a.all else "edges_exact.pt")
    state = torch.load(path) if path.exists() else {"scores": torch.full((graph.n_up, graph.n_slots), float("nan")),
                                                     "done": [], "cpu_s": 0.0, "wall_s": 0.0}
    subs = api.buckets(ctx.batch)
    n = len(ctx.batch)
    abl = [ablated_outputs(ctx.model, graph, s.clean.input_ids, s.corrupt.input_ids, "corrupted") for s in subs]
    logits = graph.slot_index("logits")
    todo = [s for s in slots if s not in state["done"]]
    todo.sort(key=lambda s: (s != logits, graph.n_up_of_slot[s]))  # the cheap analytic logits slot first
    n_edges = sum(graph.n_up_of_slot[s] for s in slots)
    print(f"{a.model}: {len(slots)} receivers, {n_edges} edges ({len(todo)} receivers to do), "
          f"heads {heads}", flush=True)
    check = {}
    for s in todo:
        idx = torch.tensor([[u, s] for u in range(graph.n_up_of_slot[s])])
        t = {}
        with Timer(graph.slots[s].name, t):
            tot = torch.zeros(len(idx))
            for sub, ab in zip(subs, abl):
                if s == logits:
                    tot += logits_edges_exact(ctx, sub, ab) * (len(sub) / n)
                else:
                    sc = edge_patching(ctx.model, graph, sub.clean.input_ids, ab, ctx.metric_of(sub), edges=idx,
                                       chunk=a.chunk)
                    tot += sc[idx[:, 0], idx[:, 1]] * (len(sub) / n)
        if s == logits:  # the analytic route against the core's masked forward, on the 4 strongest edges
            top = tot.abs().topk(min(4, len(tot))).indices
            core = torch.zeros(len(top))
            for sub, ab in zip(subs, abl):
                sc = edge_patching(ctx.model, graph, sub.clean.input_ids, ab, ctx.metric_of(sub), edges=idx[top])
                core += sc[idx[top, 0], idx[top, 1]] * (len(sub) / n)
            state["logits_check_max_abs_diff"] = float((core - tot[top]).abs().max())
            print("logits slot: analytic vs core max |diff|", state["logits_check_max_abs_diff"], flush=True)
        state["scores"][idx[:, 0], idx[:, 1]] = tot
        state["done"].append(s)
        state["cpu_s"] += t[graph.slots[s].name]["cpu_s"]
        state["wall_s"] += t[graph.slots[s].name]["wall_s"]
        torch.save(state, path)
    ref = state["scores"]
    log = {"model": a.model, "n": a.n, "heads": [f"L{l}H{h}" for l, h in heads],
           "receivers": [graph.slots[s].name for s in slots], "n_edges_ref": n_edges,
           "logits_check_max_abs_diff": state.get("logits_check_max_abs_diff"),
           "exact_cpu_s": round(state["cpu_s"], 1), "exact_wall_s": round(state["wall_s"], 1), **ctx.clean_corrupt()}
    mask = torch.isfinite(ref)
    comp = {}
    for name, steps in (("eap", 5), ("eap-ig", a.steps)):
        sc = edge_scores(ctx, name, steps=steps, log=times)
        sub_sc = torch.where(mask, sc, torch.full_like(sc, float("nan")))
        d = {"spearman": r3(spearman(sub_sc, ref)), "spearman_abs": r3(spearman(sub_sc.abs(), ref.abs()))}
        for k in a.topk:
            d[f"roc_top{k}"] = r3(roc_auc(sub_sc, _positives(ref, k)))
        per = {}
        for s in slots:
            per[graph.slots[s].name] = r3(spearman(sc[:, s], ref[:, s]))
        d["spearman_per_receiver"] = per
        comp[name] = d
    log["vs_exact_edges"] = comp
    order = torch.nan_to_num(ref.abs(), nan=-1).flatten().topk(10).indices
    log["top_edges_exact"] = [{"edge": f"{graph.up[int(i) // graph.n_slots]} -> {graph.slots[int(i) % graph.n_slots].name}",
                               "effect": r3(ref.flatten()[i])} for i in order]
    log["times"] = times
    save_json(ctx.dir / ("edges_all.json" if a.all else "edges.json"), log)


# ---------------------------------------------------------------------------------------------- ablations
def cmd_ablations(a):
    ctx = Ctx(a.model, "ioi", a.n)
    fr = tuple(float(x) for x in a.fractions.split(","))
    times: dict = {}
    s_ig = edge_scores(ctx, "eap-ig", steps=a.steps, log=times)
    rows = []
    for ab in ("corrupted", "mean", "resample", "zero"):
        todo = [("eap-ig (corrupted scores)", s_ig)]
        if "eap" in a.methods.split(","):
            todo.insert(0, (f"eap ({ab} scores)", edge_scores(ctx, "eap", ablation=ab, log=times)))
        for name, sc in todo:
            with Timer(f"curve {name} under {ab}", times):
                res = curve(ctx, sc, ablation=ab, fractions=fr)
            rows.append({"ablation": ab, "scores": name, "m_full": r3(res["full"]), "m_empty": r3(res["empty"]),
                         **_f_at(res, fr), "cpr": r3(res["cpr"]), "cmd": r3(res["cmd"])})
            print(rows[-1], flush=True)
    save_json(ctx.dir / "ablations.json", {"model": a.model, "n": a.n, "fractions": fr, "rows": rows,
                                           "times": times})


# ---------------------------------------------------------------------------------------------- roles
def positions(ids: torch.Tensor, io: torch.Tensor, s: torch.Tensor) -> dict:
    """Per row: the positions of IO, S1, S2 (first and second S) in an unpadded IOI bucket."""
    p = ids.shape[1]
    return {"IO": (ids == io[:, None]).float().argmax(1), "S1": (ids == s[:, None]).float().argmax(1),
            "S2": p - 1 - (ids == s[:, None]).flip(1).float().argmax(1)}


def attention_roles(ctx: Ctx) -> dict:
    """[layer, head] mean attention: end->IO, end->S1, end->S2, S2->S1 (duplicate), S2->S1+1 (induction), and the
    previous-token score (every query q >= first real token + 1 to q - 1), over the IOI batch."""
    c = ctx.c
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(c.n_layers)]
    keys = ("end->IO", "end->S1", "end->S2", "S2->S1", "S2->S1+1", "prev")
    acc = {k: torch.zeros(c.n_layers, c.n_heads) for k in keys}
    n = len(ctx.batch)
    bos = int(ctx.batch.clean.input_ids[0, 0]) == getattr(ctx.model.tokenizer, "bos_token_id", None)
    for sub in api.buckets(ctx.batch):
        ids = sub.clean.input_ids
        pos = positions(ids, sub.answer, sub.wrong)
        r = torch.arange(len(ids))
        end = sub.position
        with torch.no_grad():
            _, cache = ctx.model.run_with_cache(ids, names=names)
        q0 = 2 if bos else 1
        qs = torch.arange(q0, ids.shape[1])
        for l in range(c.n_layers):
            p = cache[names[l]].float().cpu()  # [batch, head, q, k]
            w = len(sub) / n
            acc["end->IO"][l] += w * p[r, :, end, pos["IO"]].mean(0)
            acc["end->S1"][l] += w * p[r, :, end, pos["S1"]].mean(0)
            acc["end->S2"][l] += w * p[r, :, end, pos["S2"]].mean(0)
            acc["S2->S1"][l] += w * p[r, :, pos["S2"], pos["S1"]].mean(0)
            acc["S2->S1+1"][l] += w * p[r, :, pos["S2"], pos["S1"] + 1].mean(0)
            acc["prev"][l] += w * p[:, :, qs, qs - 1].mean((0, 2))
    return acc


def cmd_roles(a):
    import pandas as pd

    from interp.analyses.importance import dla_scores

    ctx = Ctx(a.model, "ioi", a.n)
    c, graph = ctx.c, ctx.graph
    att = attention_roles(ctx)
    dla = dla_scores(ctx.model, ctx.task, ctx.batch).float()  # [layer, head], logit(IO) - logit(S) at the end
    ref_path = ctx.dir / "heads_exact.pt"  # the exact head effects if `heads` has run (else NaN: not recomputed)
    ref = torch.load(ref_path) if ref_path.exists() else torch.full((c.n_layers, c.n_heads), float("nan"))
    s_ig = edge_scores(ctx, "eap-ig", steps=a.steps)
    name = lambda l, h: f"L{l}H{h}"  # noqa: E731
    all_heads = [(l, h) for l in range(c.n_layers) for h in range(c.n_heads)]
    # name movers: attend from the end to IO more than to S (>= a.att) and write IO - S (top DLA)
    nm = [(l, h) for l, h in all_heads if att["end->IO"][l, h] >= a.att and att["end->IO"][l, h] > att["end->S1"][l, h]
          + att["end->S2"][l, h] and dla[l, h] >= a.dla]
    nnm = [(l, h) for l, h in all_heads if att["end->IO"][l, h] >= a.att and dla[l, h] <= -a.dla]
    nm.sort(key=lambda x: -float(dla[x]))
    # S-inhibition: heads whose output, through the name movers' queries, helps (EAP-IG score into q of NMs)
    q_slots = [graph.slot_index(name(l, h), "q") for l, h in nm]
    sinh_score = torch.zeros(c.n_layers, c.n_heads)
    for l, h in all_heads:
        u = graph.up_index(name(l, h))
        vals = s_ig[u, q_slots] if q_slots else torch.zeros(1)
        sinh_score[l, h] = float(torch.nan_to_num(vals, nan=0.0).sum())
    k_si = a.top
    cand = sorted(all_heads, key=lambda x: float(sinh_score[x]))[:k_si]  # most negative = ablating hurts the task
    sinh = [x for x in cand if sinh_score[x] < 0 and att["end->S2"][x] >= a.att]
    dup = [x for x in all_heads if att["S2->S1"][x] >= a.att]
    ind = [x for x in all_heads if att["S2->S1+1"][x] >= a.att]
    prev = [x for x in all_heads if att["prev"][x] >= 0.4]
    roles = {"name_mover": nm, "negative_name_mover": nnm, "s_inhibition": sinh, "duplicate": dup,
             "induction": ind, "previous_token": prev}
    detail = lambda x: {"head": name(*x), "end->IO": r3(att["end->IO"][x]), "end->S2": r3(att["end->S2"][x]),  # noqa
                        "S2->S1": r3(att["S2->S1"][x]), "S2->S1+1": r3(att["S2->S1+1"][x]), "prev": r3(att["prev"][x]),
                        "dla": r3(dla[x]), "exact": r3(ref[x]), "q_to_NM": r3(sinh_score[x])}
    log = {"model": a.model, "n": a.n, "thresholds": {"attention": a.att, "dla": a.dla, "prev": 0.4, "s_inh_top": k_si},
           "roles": {k: [detail(x) for x in v] for k, v in roles.items()},
           "s_inhibition_candidates": [detail(x) for x in cand]}
    if a.classify:
        tab = pd.read_csv(a.classify)
        tab = tab[tab["model"] == ctx.model.name] if (tab["model"] == ctx.model.name).any() else \
            tab[tab["model"].str.contains(a.model.split("-")[0], case=False)]
        if len(tab) != c.n_layers * c.n_heads:
            raise ValueError(f"--classify {a.classify}: expected {c.n_layers * c.n_heads} rows for {a.model}, "
                             f"got {len(tab)}")
        lab = {(int(r.layer), int(r.head)): r.label for r in tab.itertuples()}
        col = lambda k: torch.tensor([[float(getattr(r, k)) for r in tab.sort_values(["layer", "head"]).itertuples()  # noqa
                                       if int(r.layer) == l] for l in range(c.n_layers)])
        agree = {}
        for role, label, score, mine in (("duplicate", "duplicate_token", "duplicate_token_score", "S2->S1"),
                                         ("induction", "induction", "induction_score", "S2->S1+1"),
                                         ("previous_token", "previous_token", "previous_token_score", "prev")):
            theirs = {x for x in all_heads if lab[x] == label}
            theirs_score = {x for x in all_heads if float(col(score)[x]) >= _threshold(score)}
            ours = set(roles[role])
            agree[role] = {"by_position": len(ours), "classifier_label": len(theirs),
                           "classifier_score_over_threshold": len(theirs_score),
                           "both_label": len(ours & theirs), "both_score": len(ours & theirs_score),
                           "jaccard_score": r3(len(ours & theirs_score) / max(1, len(ours | theirs_score))),
                           "spearman_scores": r3(spearman(att[mine].flatten(), col(score).flatten())),
                           "ours_labelled_as": _count([lab[x] for x in ours])}
        for role in ("name_mover", "negative_name_mover", "s_inhibition"):
            agree[role] = {"by_position": len(roles[role]), "ours_labelled_as": _count([lab[x] for x in roles[role]])}
        log["classifier_agreement"] = agree
        log["classifier"] = a.classify
        for k in log["roles"]:
            for d in log["roles"][k]:
                l, h = (int(t) for t in d["head"][1:].split("H"))
                d["classifier_label"] = lab[(l, h)]
    save_json(ctx.dir / "roles.json", log)


def _threshold(score: str) -> float:
    from interp.analyses.table import DEFAULT_THRESHOLDS

    return DEFAULT_THRESHOLDS[score]


def _count(xs) -> dict:
    out: dict = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return out


# ---------------------------------------------------------------------------------------------- report
def cmd_report(a):
    files = sorted(ROOT.glob("*/ioi-n*-s0/*.json"))
    by: dict = {}
    for f in files:
        by.setdefault(f.stem, []).append(json.loads(f.read_text()))
    if "heads" in by:
        print("\n| model | n | logit diff clean / corrupt | method | Spearman vs exact heads | ROC AUC top-5 % heads | "
              "top-10 overlap | CPR | CMD | f @1 % / 5 % / 10 % edges |\n|---|---|---|---|---|---|---|---|---|---|")
        for d in by["heads"]:
            for m, v in d["vs_exact_heads"].items():
                print(f"| {d['model']} | {d['n']} | {d['clean']:.2f} / {d['corrupt']:.2f} | {m} | {v['spearman']} | "
                      f"{v['roc_auc_top5pct']} | {v['top10_overlap']}/10 | {v['cpr']} | {v['cmd']} | "
                      f"{v['f@0.01']} / {v['f@0.05']} / {v['f@0.1']} |")
    for key in ("edges", "edges_all"):
        if key in by:
            print(f"\n| model | n | receivers | edges patched | exact CPU s | method | Spearman | Spearman abs | ROC AUC top-k "
                  "exact edges |\n|---|---|---|---|---|---|---|---|---|")
            for d in by[key]:
                for m, v in d["vs_exact_edges"].items():
                    rocs = ", ".join(f"k={k[7:]}: {x}" for k, x in v.items() if k.startswith("roc_top"))
                    print(f"| {d['model']} | {d['n']} | {len(d['receivers'])} ({', '.join(d['heads'])} + logits) | "
                          f"{d['n_edges_ref']} | {d['exact_cpu_s']} | {m} | {v['spearman']} | {v['spearman_abs']} | "
                          f"{rocs} |")
    if "ablations" in by:
        for d in by["ablations"]:
            fr = d["fractions"]
            cols = [f"f@{x:g}" for x in fr if x in SIZES]
            print(f"\n{d['model']} (n = {d['n']})\n\n| ablation | circuit from | M(full) | M(empty) | "
                  + " | ".join(cols) + " | CPR | CMD |\n|---|---|---|---|" + "---|" * len(cols) + "---|---|")
            for r in d["rows"]:
                print(f"| {r['ablation']} | {r['scores']} | {r['m_full']} | {r['m_empty']} | "
                      + " | ".join(str(r[c]) for c in cols) + f" | {r['cpr']} | {r['cmd']} |")
    if "roles" in by:
        for d in by["roles"]:
            print(f"\n{d['model']} (n = {d['n']}): heads by position")
            for role, hs in d["roles"].items():
                print(f"- {role}: " + ", ".join(f"{h['head']} ({h.get('classifier_label', '?')})" for h in hs))
            if "classifier_agreement" in d:
                print(json.dumps(d["classifier_agreement"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    for name in ("heads", "edges", "ablations", "roles", "report"):
        p = sp.add_parser(name)
        if name == "report":
            continue
        p.add_argument("--model", default="smollm2-135m")
        p.add_argument("--n", type=int, default=32)
        p.add_argument("--steps", type=int, default=5)
        p.add_argument("--chunk", type=int, default=16, help="variants (heads / edges) per batched forward")
        if name == "heads":
            p.add_argument("--only", choices=("exact", "curves"), default=None,
                           help="compute only the exact head sweep or only the faithfulness curves (caches)")
        if name == "edges":
            p.add_argument("--heads", type=int, default=5, help="receivers: the top heads by exact effect")
            p.add_argument("--all", action="store_true", help="every edge of the graph")
            p.add_argument("--receivers", default=None, help="heads by name, e.g. L17H4,L20H0 (else the top --heads)")
            p.add_argument("--kv", action="store_true", help="also the k / v inputs of the heads' KV heads")
            p.add_argument("--topk", type=int, nargs="+", default=[10, 50])
        if name == "ablations":
            p.add_argument("--fractions", default="0.001,0.002,0.005,0.01,0.02,0.05,0.1,0.2,0.5,1.0")
            p.add_argument("--methods", default="eap-ig", help="eap-ig (its circuit under every ablation) or "
                           "eap,eap-ig (also EAP scored with each ablation)")
        if name == "roles":
            p.add_argument("--classify", default=None, help="heads.csv of `interp classify`")
            p.add_argument("--att", type=float, default=0.2, help="attention threshold for a role")
            p.add_argument("--dla", type=float, default=0.3, help="|DLA(IO - S)| threshold for (negative) NMs")
            p.add_argument("--top", type=int, default=5, help="S-inhibition candidates (strongest q -> NM scores)")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    {"heads": cmd_heads, "edges": cmd_edges, "ablations": cmd_ablations, "roles": cmd_roles,
     "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
