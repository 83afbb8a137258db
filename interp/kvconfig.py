"""KV-cache configuration from head roles: retrieval heads keep the full cache, streaming heads keep only the
attention sinks and a recent window (RazorAttention / DuoAttention style). Export as JSON, apply at generation time
through the same attention function (`StreamingAttention` interventions), and count the KV memory it saves."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .interventions import StreamingAttention

VERSION = 1


def config_from_scores(model, retrieval_scores: torch.Tensor, threshold: float = 0.1, sink_tokens: int = 4,
                       window: int = 64) -> dict:
    """Heads with retrieval score >= threshold keep the full cache; the rest stream."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    if tuple(retrieval_scores.shape) != (L, H):
        raise ValueError(f"retrieval_scores must be [{L}, {H}], got {tuple(retrieval_scores.shape)}")
    full = torch.nan_to_num(retrieval_scores, nan=0.0) >= threshold
    layers = {str(l): {"full": [h for h in range(H) if full[l, h]], "streaming": [h for h in range(H) if not full[l, h]]}
              for l in range(L)}
    return {"version": VERSION, "model": model.name, "n_layers": L, "n_heads": H, "n_kv_heads": model.cfg.n_kv_heads,
            "sink_tokens": sink_tokens, "window": window, "threshold": threshold, "layers": layers}


def save(config: dict, path) -> Path:
    validate(config)
    path = Path(path)
    path.write_text(json.dumps(config, indent=1) + "\n")
    return path


def load(path) -> dict:
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read KV config {path}: {e}") from None
    validate(config)
    return config


def validate(config: dict, model=None) -> None:
    for key in ("version", "n_layers", "n_heads", "sink_tokens", "window", "layers"):
        if key not in config:
            raise ValueError(f"KV config lacks {key!r}")
    L, H = config["n_layers"], config["n_heads"]
    if model is not None and (model.cfg.n_layers, model.cfg.n_heads) != (L, H):
        raise ValueError(f"KV config is for {L} layers x {H} heads, the model has "
                         f"{model.cfg.n_layers} x {model.cfg.n_heads}")
    for l, roles in config["layers"].items():
        heads = sorted(roles.get("full", []) + roles.get("streaming", []))
        if not 0 <= int(l) < L or heads != list(range(H)):
            raise ValueError(f"KV config layer {l}: every head 0..{H - 1} must be either full or streaming once")


def interventions(config: dict, model=None) -> list:
    validate(config, model)
    return [StreamingAttention(layer=int(l), heads=r["streaming"], sink_tokens=config["sink_tokens"],
                               window=config["window"]) for l, r in config["layers"].items() if r["streaming"]]


def kv_memory(config: dict, n_tokens: int) -> dict:
    """KV entries kept at n_tokens: a KV head can drop its old entries only if all its query heads stream."""
    L, H = config["n_layers"], config["n_heads"]
    kvh = config.get("n_kv_heads", H)
    g = H // kvh
    keep_stream = min(n_tokens, config["sink_tokens"] + config["window"])
    full_entries = L * kvh * n_tokens
    kept = 0
    for roles in config["layers"].values():
        streaming = set(roles["streaming"])
        for kv in range(kvh):
            group = set(range(kv * g, (kv + 1) * g))
            kept += keep_stream if group <= streaming else n_tokens
    return {"full_entries": full_entries, "kept_entries": kept, "saved_fraction": 1 - kept / full_entries}
