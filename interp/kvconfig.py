"""KV-cache configuration from head roles: retrieval heads keep the full cache, streaming heads keep only the
attention sinks and a recent window (RazorAttention / DuoAttention style). Export as JSON, apply at generation time
through the same attention function (`StreamingAttention` interventions), and count the KV memory it saves."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from .interventions import StreamingAttention
from .validate import _show, int_arg, is_path, model_arg, real_arg, tensor_arg

VERSION = 1


def config_from_scores(model, retrieval_scores: torch.Tensor, threshold: float = 0.1, sink_tokens: int = 4,
                       window: int = 64) -> dict:
    """Heads with retrieval score >= threshold (in [0, 1], as the scores) keep the full cache; the rest stream.

    A NaN score counts as 0 (that head streams), with a warning; all-NaN scores are refused: retrieval_scores gives
    them when the model answered no trial, so they say nothing about any head (pass zeros to stream every head)."""
    where = "config_from_scores"
    model_arg(model, where)
    tensor_arg("retrieval_scores", retrieval_scores, dims=(2,), where=where, shape_doc="[n_layers, n_heads]")
    threshold = real_arg("threshold", threshold, low=0, high=1, where=where)
    sink_tokens = int_arg("sink_tokens", sink_tokens, minimum=0, where=where)
    window = int_arg("window", window, minimum=1, where=where)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    if tuple(retrieval_scores.shape) != (L, H):
        raise ValueError(f"{where}: retrieval_scores must be [{L}, {H}], got {tuple(retrieval_scores.shape)}")
    if retrieval_scores.dtype == torch.bool or retrieval_scores.dtype.is_complex:
        raise TypeError(f"{where}: retrieval_scores must be a real-valued tensor, got {retrieval_scores.dtype}")
    scores = retrieval_scores.detach().float().cpu()
    nan = torch.isnan(scores)
    if bool(nan.all()):
        raise ValueError(f"{where}: retrieval_scores are all NaN: no trial was answered (retrieval_scores gives NaN "
                         "then), so no head is known to retrieve and every head would stream; use trials the model "
                         "answers (shorter contexts), or pass torch.zeros to stream every head on purpose")
    out = ~nan & ~((scores >= 0) & (scores <= 1 + 1e-3))
    if bool(out.any()):
        l, h = out.nonzero()[0].tolist()
        raise ValueError(f"{where}: retrieval_scores must be shares in [0, 1] (NaN = not measured), as "
                         f"retrieval_scores gives; {int(out.sum())} of {out.numel()} are not (first: layer {l} head "
                         f"{h}: {float(scores[l, h])})")
    if bool(nan.any()):
        first = nan.nonzero()[0].tolist()
        warnings.warn(f"{where}: {int(nan.sum())} of {nan.numel()} retrieval scores are NaN (first: layer {first[0]} "
                      f"head {first[1]}); they count as 0, so those heads stream", stacklevel=2)
    full = torch.nan_to_num(scores, nan=0.0) >= threshold
    layers = {str(l): {"full": [h for h in range(H) if full[l, h]], "streaming": [h for h in range(H) if not full[l, h]]}
              for l in range(L)}
    return {"version": VERSION, "model": model.name, "n_layers": L, "n_heads": H, "n_kv_heads": model.cfg.n_kv_heads,
            "sink_tokens": sink_tokens, "window": window, "threshold": threshold, "layers": layers}


def _path_arg(path, where: str) -> Path:
    if not is_path(path):
        raise TypeError(f"{where}: path must be a file path (a str or pathlib.Path), got {_show(path)}")
    return Path(path)


def save(config: dict, path) -> Path:
    validate(config)
    path = _path_arg(path, "kvconfig.save")
    try:
        path.write_text(json.dumps(config, indent=1) + "\n")
    except OSError as e:
        raise ValueError(f"kvconfig.save: cannot write KV config to {path} (give a file path in an existing, writable "
                         f"folder): {e}") from None
    return path


def load(path) -> dict:
    path = _path_arg(path, "kvconfig.load")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"kvconfig.load: cannot read KV config {path} (a JSON file written by kvconfig.save): "
                         f"{e}") from None
    validate(config)
    return config


def _heads(l, roles, role, H):
    where = f"kvconfig.validate: KV config layer {l}"
    heads = roles.get(role) if isinstance(roles, dict) else None
    if not isinstance(heads, list):
        raise ValueError(f"{where} must be an object with lists 'full' and 'streaming' of head indices, got "
                         f"{_show(roles)}")
    for h in heads:
        int_arg(f"a {role!r} head", h, minimum=0, maximum=H - 1, where=where)
    return heads


def validate(config: dict, model=None) -> None:
    """Check a KV config (as written by config_from_scores / read by load) and, if given, that it fits the model."""
    where = "kvconfig.validate"
    if not isinstance(config, dict):
        raise TypeError(f"{where}: config must be a dict (from config_from_scores or load), got {_show(config)}")
    for key in ("version", "n_layers", "n_heads", "sink_tokens", "window", "layers"):
        if key not in config:
            raise ValueError(f"{where}: KV config lacks {key!r}")
    if isinstance(config["version"], bool) or config["version"] != VERSION:
        raise ValueError(f"{where}: KV config version must be {VERSION}, got {config['version']!r}")
    L = int_arg("n_layers", config["n_layers"], minimum=1, where=where)
    H = int_arg("n_heads", config["n_heads"], minimum=1, where=where)
    kvh = int_arg("n_kv_heads", config.get("n_kv_heads", H), minimum=1, maximum=H, where=where)
    if H % kvh:
        raise ValueError(f"{where}: n_kv_heads must divide n_heads ({H}), got {kvh}")
    int_arg("sink_tokens", config["sink_tokens"], minimum=0, where=where)
    int_arg("window", config["window"], minimum=1, where=where)
    if config.get("threshold") is not None:  # only recorded (configs saved before round 19 took any threshold)
        real_arg("threshold", config["threshold"], where=where)
    if model is not None:
        model_arg(model, where)
        if (model.cfg.n_layers, model.cfg.n_heads) != (L, H):
            raise ValueError(f"{where}: KV config is for {L} layers x {H} heads, the model has "
                             f"{model.cfg.n_layers} x {model.cfg.n_heads}")
        if "n_kv_heads" in config and model.cfg.n_kv_heads != kvh:
            raise ValueError(f"{where}: KV config is for {kvh} KV heads, the model has {model.cfg.n_kv_heads}")
    layers = config["layers"]
    if not isinstance(layers, dict):
        raise ValueError(f"{where}: KV config 'layers' must be an object mapping each layer '0'..'{L - 1}' to its "
                         f"roles, got {_show(layers)}")
    # (nothing below builds a list of n_layers or n_heads entries: a damaged file's n_layers=10**9 hung here)
    odd = [k for k in layers if not (isinstance(k, str) and k.isascii() and k.isdigit() and len(k) <= len(str(L))
                                     and k == str(int(k)) and int(k) < L)]
    if odd:
        raise ValueError(f"{where}: KV config 'layers' keys must be the layer numbers '0'..'{L - 1}' written plainly "
                         f"(no spaces, signs or leading zeros), got {', '.join(map(repr, odd))}")
    for l, roles in layers.items():
        heads = _heads(l, roles, "full", H) + _heads(l, roles, "streaming", H)  # each in 0..H - 1
        if len(heads) != H or len(set(heads)) != H:
            raise ValueError(f"{where}: KV config layer {l}: every head 0..{H - 1} must be either full or streaming "
                             "once")
    if len(layers) < L:  # the keys are distinct layers in 0..L - 1: the first missing ones lie below len + 10
        missing = [str(l) for l in range(min(L, len(layers) + 10)) if str(l) not in layers][:10]
        more = f" and {L - len(layers) - len(missing)} more" if L - len(layers) > len(missing) else ""
        raise ValueError(f"{where}: KV config lacks layer(s) {', '.join(missing)}{more}: every layer 0..{L - 1} "
                         "needs its full and streaming heads")


def interventions(config: dict, model=None) -> list:
    validate(config, model)
    return [StreamingAttention(layer=int(l), heads=r["streaming"], sink_tokens=config["sink_tokens"],
                               window=config["window"]) for l, r in config["layers"].items() if r["streaming"]]


def kv_memory(config: dict, n_tokens: int) -> dict:
    """KV entries kept at n_tokens: a KV head can drop its old entries only if all its query heads stream."""
    validate(config)
    n_tokens = int_arg("n_tokens", n_tokens, minimum=1, where="kv_memory")
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
