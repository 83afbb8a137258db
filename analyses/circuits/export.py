"""Write and read circuits: edges.csv, nodes.csv, and JSON in the EAP-IG / MIB graph format where the names map.

EAP-IG names: `input`, `a{l}.h{h}`, `m{l}`, `logits`; an edge is `"{src}->{dst}<{q|k|v}>"` into a head and
`"{src}->{dst}"` into an MLP or the logits. Under GQA a k/v edge goes into a KV head, which EAP-IG does not have: it
is written as `a{l}.kv{j}<k>` (and the file says `"gqa": true`). Files are written atomically (tmp + rename).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import torch

from .evaluate import Circuit
from .graph import Graph


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def eap_ig_name(node: str) -> str:
    if node in ("input", "logits"):
        return node
    if node.startswith("MLP"):
        return f"m{node[3:]}"
    layer, rest = node[1:].split("H", 1) if "KV" not in node else node[1:].split("KV", 1)
    return f"a{layer}.h{rest}" if "KV" not in node else f"a{layer}.kv{rest}"


def from_eap_ig_name(name: str) -> str:
    if name in ("input", "logits"):
        return name
    if name.startswith("m"):
        return f"MLP{name[1:]}"
    layer, head = name[1:].split(".", 1)
    return f"L{layer}KV{head[2:]}" if head.startswith("kv") else f"L{layer}H{head[1:]}"


def edges_csv(c: Circuit) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["src", "dst", "dst_input", "score", "in_circuit"])
    w.writeheader()
    for r in c.edges():
        w.writerow({**r, "score": f"{r['score']:.6g}", "in_circuit": int(r["in_circuit"])})
    return buf.getvalue()


def nodes_csv(c: Circuit) -> str:
    g = c.graph
    inside = set(c.nodes_in_circuit())
    s = torch.nan_to_num(c.scores, nan=0.0)
    out_score = {n: float(s[i].sum()) for i, n in enumerate(g.up)}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["node", "kind", "layer", "index", "out_score", "in_circuit"])
    for n in g.nodes:
        kind = "input" if n == "input" else "logits" if n == "logits" else "mlp" if n.startswith("MLP") else \
            "kv_head" if "KV" in n else "head"
        layer = "" if kind in ("input", "logits") else n[3:] if kind == "mlp" else n[1:].split("H")[0].split("K")[0]
        index = n.split("KV")[1] if kind == "kv_head" else n.split("H")[1] if kind == "head" else ""
        w.writerow([n, kind, layer, index, f"{out_score.get(n, 0.0):.6g}", int(n in inside)])
    return buf.getvalue()


def to_json(c: Circuit) -> dict:
    g = c.graph
    edges = {}
    for r in c.edges():
        dst = eap_ig_name(r["dst"])
        key = f"{eap_ig_name(r['src'])}->{dst}" + (f"<{r['dst_input']}>" if r["dst_input"] in "qkv" else "")
        edges[key] = {"score": r["score"], "in_graph": r["in_circuit"]}
    inside = set(c.nodes_in_circuit())
    return {"cfg": {"n_layers": g.n_layers, "n_heads": g.n_heads, "n_kv_heads": g.n_kv_heads,
                    "parallel_attn_mlp": False, "d_model": None, "model": g.model_name,
                    "gqa": g.n_kv_heads != g.n_heads, "mlp": g.mlp},
            "nodes": {eap_ig_name(n): n in inside for n in g.nodes},
            "edges": edges, "method": c.method, "meta": c.meta}


def write(c: Circuit, out_dir) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"edges.csv": edges_csv(c), "nodes.csv": nodes_csv(c), "graph.json": json.dumps(to_json(c))}
    paths = []
    for name, text in files.items():
        _atomic_write(out / name, text)
        paths.append(out / name)
    return paths


def read_json(path, model=None) -> Circuit:
    """A circuit from graph.json; with `model`, the file must describe that model's graph (else a ValueError)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        cfg = d["cfg"]
        g = Graph.from_config(cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"], cfg.get("mlp", True),
                              cfg.get("model", ""))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a circuit graph.json ({type(e).__name__}: {e})") from None
    if model is not None:
        mc = model.cfg
        if (mc.n_layers, mc.n_heads, mc.n_kv_heads) != (g.n_layers, g.n_heads, g.n_kv_heads):
            raise ValueError(f"{path} is a circuit of {g.model_name or 'another model'} ({g.n_layers} layers, "
                             f"{g.n_heads} heads, {g.n_kv_heads} KV heads), not of {model.name} ({mc.n_layers} "
                             f"layers, {mc.n_heads} heads, {mc.n_kv_heads} KV heads)")
    scores = torch.full((g.n_up, g.n_slots), float("nan"))
    keep = torch.zeros(g.n_up, g.n_slots, dtype=torch.bool)
    for key, e in d["edges"].items():
        src, dst = key.split("->")
        kind = None
        if dst.endswith(">"):
            dst, kind = dst[:-1].split("<")
        u, s = g.up_index(from_eap_ig_name(src)), g.slot_index(from_eap_ig_name(dst), kind)
        scores[u, s] = float(e["score"])
        keep[u, s] = bool(e["in_graph"])
    return Circuit(g, scores, d.get("method", ""), keep, d.get("meta", {}))
