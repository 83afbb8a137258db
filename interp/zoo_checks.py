"""Checks `interp.load` makes on a local Hugging Face folder and on the cache folder, so a config that does not match
its weights, an impossible size or an unusable `$INTERP_CACHE` is refused with a ValueError naming the file, instead
of random weights, a hang while building or a deep library traceback after minutes of work.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

# parameters a checkpoint may lack without harm: buffers (rotary tables, causal masks) that some configs list
HARMLESS_MISSING = re.compile(r"(^|\.)(inv_freq|original_inv_freq|masked_bias|attn\.bias|position_ids)$")
HARMLESS_UNEXPECTED = HARMLESS_MISSING
SHOW = 4  # parameter names shown per list


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def read_config(path: Path):
    """AutoConfig of a folder; every failure is a ValueError naming config.json (and the field, where one is at
    fault: huggingface_hub's strict-dataclass validation errors are neither ValueError nor OSError)."""
    from transformers import AutoConfig

    cfg_file = path / "config.json"
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # older huggingface_hub: no strict dataclasses
        StrictDataclassError = ()
    try:
        return AutoConfig.from_pretrained(path)
    except StrictDataclassError as e:
        lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
        field = re.search(r"field '([^']+)'", lines[0]) if lines else None
        why = lines[-1] if lines else type(e).__name__
        what = f"field {field.group(1)!r}" if field else "its fields are inconsistent"
        raise ValueError(f"invalid {cfg_file}: {what}: {why}") from None
    except (ValueError, KeyError) as e:
        raise ValueError(f"unsupported architecture in {cfg_file}: {_first_line(e)}") from None
    except OSError as e:  # invalid JSON and unreadable files arrive as OSError
        raise ValueError(f"cannot read {cfg_file}: {_first_line(e)}") from None


def _get(cfg, *names):
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return n, v
    return names[0], None


def _positive(cfg_file: Path, cfg, *names, required: bool = False) -> int | None:
    name, value = _get(cfg, *names)
    if value is None:
        if required:
            raise ValueError(f"{cfg_file} has no {name}; a model folder's config.json needs it")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{cfg_file}: {name} must be a positive int, got {type(value).__name__} {value!r:.40}")
    if value < 1:
        raise ValueError(f"{cfg_file}: {name} must be a positive int (>= 1), got {value}")
    return value


def estimate_params(cfg) -> int | None:
    """Rough parameter count from a config: layers x (attention + MLP) + embeddings (+ an untied output matrix);
    None when the config does not say its sizes."""
    _, layers = _get(cfg, "num_hidden_layers", "n_layer", "num_layers")
    _, d = _get(cfg, "hidden_size", "n_embd", "d_model")
    _, vocab = _get(cfg, "vocab_size")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (layers, d, vocab)):
        return None
    _, inter = _get(cfg, "intermediate_size", "n_inner", "ffn_dim")
    inter = inter if isinstance(inter, int) and not isinstance(inter, bool) else 4 * d
    per_layer = 4 * d * d + 3 * d * inter
    embed = vocab * d * (1 if getattr(cfg, "tie_word_embeddings", True) else 2)
    return layers * per_layer + embed


def check_config(path: Path, config, dtype) -> None:
    """Refuse, before anything is built, sizes that are not positive and a model that cannot fit in memory."""
    from .memory import GiB, available_bytes

    cfg_file = path / "config.json"
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    _positive(cfg_file, cfg, "num_hidden_layers", "n_layer", "num_layers")
    _positive(cfg_file, cfg, "hidden_size", "n_embd", "d_model")
    _positive(cfg_file, cfg, "vocab_size")
    _positive(cfg_file, cfg, "num_attention_heads", "n_head")
    _positive(cfg_file, cfg, "max_position_embeddings", "n_positions")
    n = estimate_params(cfg)
    if n is None:
        return
    need = n * (dtype or torch.float32).itemsize
    free = available_bytes("cpu")
    if free is not None and need > free:
        _, layers = _get(cfg, "num_hidden_layers", "n_layer", "num_layers")
        _, d = _get(cfg, "hidden_size", "n_embd", "d_model")
        raise ValueError(f"{cfg_file} describes a model of about {n:,} parameters ({layers} layers, hidden size {d}, "
                         f"vocabulary {cfg.vocab_size}): {need / GiB:.1f} GiB, more than the {free / GiB:.1f} GiB of "
                         "memory available; is num_hidden_layers / hidden_size / vocab_size in config.json right?")


def _tied(model) -> set[str]:
    """Names of parameters that share storage with another (tied embeddings): absent from a checkpoint by design."""
    if not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        return set()
    seen: dict[int, str] = {}
    tied = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(name)
            tied.add(seen[id(p)])
        else:
            seen[id(p)] = name
    return tied


def check_loading_info(path: Path, model, info: dict) -> None:
    """ValueError when the weights in `path` do not fill the model config.json describes: parameters left at their
    random initialisation (missing), checkpoint tensors dropped (unexpected) or of another shape (mismatched)."""
    tied = _tied(model)
    missing = [k for k in info.get("missing_keys", ()) if k not in tied and not HARMLESS_MISSING.search(k)]
    unexpected = [k for k in info.get("unexpected_keys", ()) if not HARMLESS_UNEXPECTED.search(k)]
    mismatched = [k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys", ())]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for what, keys in (("missing from the weights (they would be random)", missing),
                       ("in the weights but not in the model (they would be dropped)", unexpected),
                       ("of another shape than config.json says", mismatched)):
        if keys:
            keys = sorted(keys)
            more = f", ... ({len(keys)} in all)" if len(keys) > SHOW else ""
            parts.append(f"{what}: {', '.join(keys[:SHOW])}{more}")
    cfg = model.config
    raise ValueError(f"{path / 'config.json'} does not match the weights in {path} (model_type "
                     f"{getattr(cfg, 'model_type', '?')!r}, num_hidden_layers {getattr(cfg, 'num_hidden_layers', '?')}); "
                     f"parameters {'; '.join(parts)}. Fix config.json (model_type, num_hidden_layers, sizes) to "
                     "describe the checkpoint")


def usable_cache_dir(path: Path) -> Path:
    """Create `path` (under $INTERP_CACHE) if needed and check it is a writable folder, before any slow work."""
    env = os.environ.get("INTERP_CACHE")
    where = f"INTERP_CACHE={env!r}" if env else "the default cache (~/.cache/interp; set INTERP_CACHE to move it)"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the cache folder {path} from {where}: {e.strerror or _first_line(e)}; set "
                         "INTERP_CACHE to a writable folder, or load with cache=False") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"the cache folder {path} from {where} is not writable; set INTERP_CACHE to a writable "
                         "folder, or load with cache=False")
    return path
