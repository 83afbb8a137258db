"""Write and read circuits: edges.csv, nodes.csv, and JSON in the EAP-IG / MIB graph format where the names map.

EAP-IG names: `input`, `a{l}.h{h}`, `m{l}`, `logits`; an edge is `"{src}->{dst}<{q|k|v}>"` into a head and
`"{src}->{dst}"` into an MLP or the logits. Under GQA a k/v edge goes into a KV head, which EAP-IG does not have: it
is written as `a{l}.kv{j}<k>` (and the file says `"gqa": true`). Files are written atomically (tmp + rename).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from interp.input_checks import bool_arg
from interp.validate import hooked_model_arg, is_path

from .evaluate import Circuit
from .graph import Graph


def _atomic_write(path: Path, text: str) -> None:
    from interp.batch.runner import atomic_write_text

    atomic_write_text(path, text)


def eap_ig_name(node: str) -> str:
    if node in ("input", "logits"):
        return node
    if node.startswith("MLP"):
        return f"m{node[3:]}"
    layer, rest = node[1:].split("H", 1) if "KV" not in node else node[1:].split("KV", 1)
    return f"a{layer}.h{rest}" if "KV" not in node else f"a{layer}.kv{rest}"


def from_eap_ig_name(name: str) -> str:
    """EAP-IG node name -> ours ('a1.h2' -> 'L1H2', 'a1.kv0' -> 'L1KV0', 'm3' -> 'MLP3'); a ValueError otherwise."""
    import re

    if name in ("input", "logits"):
        return name
    m = re.fullmatch(r"m(\d+)|a(\d+)\.(h|kv)(\d+)", str(name))
    if m is None:
        raise ValueError(f"unknown node name {name!r}; EAP-IG node names are 'input', 'a{{layer}}.h{{head}}', "
                         "'a{layer}.kv{kv_head}', 'm{layer}', 'logits'")
    if m.group(1) is not None:
        return f"MLP{m.group(1)}"
    return f"L{m.group(2)}{'KV' if m.group(3) == 'kv' else 'H'}{m.group(4)}"


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
    """edges.csv, nodes.csv and graph.json in the folder `out_dir` (made if missing; files in it are replaced)."""
    if not isinstance(c, Circuit):
        raise TypeError(f"write: c must be a Circuit, got {type(c).__name__}")
    if not is_path(out_dir):
        raise TypeError(f"write: out_dir must be a folder path (a str or pathlib.Path), got {type(out_dir).__name__} "
                        f"{out_dir!r:.60}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"write: out_dir {str(out)!r} is a file, not a folder; write puts edges.csv, nodes.csv and "
                         "graph.json in a folder: give a folder path (made if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"write: cannot make the folder {str(out)!r}: a part of that path is a file") from None
    files = {"edges.csv": edges_csv(c), "nodes.csv": nodes_csv(c), "graph.json": json.dumps(to_json(c))}
    paths = []
    for name, text in files.items():
        _atomic_write(out / name, text)
        paths.append(out / name)
    return paths


def _differences(g: Graph, model) -> list[str]:
    """How the graph in a file differs from `model`'s graph, in words (empty when they match)."""
    mc = model.cfg
    diffs = [f"{what} {ours} in the file, {theirs} in {model.name}" for what, ours, theirs in (
        ("n_layers", g.n_layers, mc.n_layers), ("n_heads", g.n_heads, mc.n_heads),
        ("n_kv_heads", g.n_kv_heads, mc.n_kv_heads)) if ours != theirs]
    if not diffs and g.mlp != Graph.from_model(model).mlp:
        diffs.append(f"{'MLP nodes' if g.mlp else 'no MLP nodes'} in the file, "
                     f"{'none' if g.mlp else 'MLP nodes'} in {model.name}")
    return diffs


def _check_node_count(cfg, nodes) -> None:
    """The file's 'nodes' (when it has them) must be the nodes its cfg describes, counted before the graph is built:
    a damaged cfg (n_layers = 10**6) is refused instead of building a graph of millions of nodes."""
    if not isinstance(cfg, dict):
        raise TypeError(f"'cfg' must be an object, got {type(cfg).__name__}")
    sizes = [cfg.get(k) for k in ("n_layers", "n_heads", "n_kv_heads")]
    if not isinstance(nodes, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                              for v in sizes):
        return  # (no nodes listed: nothing to compare; a bad size is refused by Graph.from_config)
    n_layers, n_heads, n_kv = sizes
    want = 2 + n_layers * (n_heads + (n_kv if n_kv != n_heads else 0) + (1 if cfg.get("mlp", True) else 0))
    if len(nodes) != want:
        raise ValueError(f"its cfg ({n_layers} layers, {n_heads} heads, {n_kv} KV heads, mlp "
                         f"{cfg.get('mlp', True)}) describes {want} nodes, but 'nodes' lists {len(nodes)}")


def read_json(path, model=None, same_name: bool = True) -> Circuit:
    """A circuit from graph.json. With `model`, the file must describe that model's graph (layers, heads, KV
    heads, MLP nodes) and, unless same_name=False, have been written for a model of the same name; otherwise a
    one-line ValueError naming what differs."""
    bool_arg("same_name", same_name, "read_json")
    if not is_path(path):
        raise TypeError(f"read_json: path must be the path (a str or pathlib.Path) of a graph.json, got "
                        f"{type(path).__name__} {path!r:.60}")
    if model is not None:
        hooked_model_arg(model, "read_json")
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        cfg = d["cfg"]
        _check_node_count(cfg, d.get("nodes"))
        if not isinstance(d.get("method", ""), str) or not isinstance(d.get("meta", {}), dict):
            raise TypeError("'method' must be a string and 'meta' an object")
        g = Graph.from_config(cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"], cfg.get("mlp", True),
                              cfg.get("model", "") or "")
        edges = d["edges"]
        if not isinstance(edges, dict):
            raise TypeError("'edges' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a circuit graph.json ({type(e).__name__}: {e})") from None
    if model is not None:
        diffs = _differences(g, model)
        if diffs:
            raise ValueError(f"{path} is a circuit of {g.model_name or 'another model'}, not of {model.name}: "
                             + "; ".join(diffs))
        if same_name and g.model_name and g.model_name != model.name:
            raise ValueError(f"{path} is a circuit of {g.model_name}, not of {model.name} (same shape); pass "
                             "same_name=False to read it for this model anyway")
    scores = torch.full((g.n_up, g.n_slots), float("nan"))
    keep = torch.zeros(g.n_up, g.n_slots, dtype=torch.bool)
    valid = g.valid()
    for key, e in edges.items():
        try:
            if key.count("->") != 1:
                raise ValueError("edge keys look like 'a0.h3->a1.h0<k>', 'input->m0' or 'a1.h0->logits'")
            src, dst = key.split("->")
            kind = None
            if dst.endswith(">"):
                dst, kind = dst[:-1].split("<")
            u, s = g.up_index(from_eap_ig_name(src)), g.slot_index(from_eap_ig_name(dst), kind)
            if not valid[u, s]:
                raise ValueError(f"{src} comes after {dst}: no such edge")
            if not isinstance(e["in_graph"], bool):
                raise TypeError(f"'in_graph' must be true or false, got {e['in_graph']!r:.40}")
            scores[u, s] = float(e["score"])
            keep[u, s] = e["in_graph"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: bad edge {key!r}: {str(err) or type(err).__name__}") from None
    return Circuit(g, scores, d.get("method", ""), keep, d.get("meta", {}))
