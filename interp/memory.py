"""Memory estimates made before a run, so a request that cannot fit is refused with its size instead of dying in
an allocation halfway through the layers.

Full patterns (`hook_pattern`, `run_with_cache(pattern=True)`) are float32 `[batch, head, query_pos, key_pos]`
maps: one working buffer per layer while it runs, plus the copy the cache keeps for every requested layer.
"""

from __future__ import annotations

import os

import torch

from .input_checks import layer_list
from .validate import int_arg

PATTERN_DTYPE_BYTES = 4  # patterns are float32 whatever the model's dtype
GiB = 2**30


def _layer_list(cfg, layers) -> list[int]:
    """The distinct layers asked for (input_checks.layer_list's checks and messages)."""
    return sorted(set(layer_list(layers, _cfg(cfg).n_layers)))


def _cfg(cfg):
    """A model config with n_layers and n_heads (a HookedModel is taken for its .cfg)."""
    cfg = getattr(cfg, "cfg", cfg)
    if not all(isinstance(getattr(cfg, a, None), int) for a in ("n_layers", "n_heads")):
        raise TypeError(f"cfg must be a model's config (model.cfg, with n_layers and n_heads) or the model, got "
                        f"{type(cfg).__name__}")
    return cfg


def pattern_bytes(cfg, batch: int, q_len: int, k_len: int, layers=None) -> int:
    """Bytes that full patterns at `layers` (None = all) need for one run: the cached float32
    `[batch, n_heads, q_len, k_len]` map of every requested layer plus one working buffer of that size."""
    for name, value in (("batch", batch), ("q_len", q_len), ("k_len", k_len)):
        int_arg(name, value, minimum=1, where="pattern_bytes")
    cfg = _cfg(cfg)
    n = len(_layer_list(cfg, layers))
    if n == 0:
        return 0
    per_layer = batch * cfg.n_heads * q_len * k_len * PATTERN_DTYPE_BYTES
    return (n + 1) * per_layer


def available_bytes(device) -> int | None:
    """Free memory on `device` (CUDA: the driver's free bytes; CPU: MemAvailable), or None if unknown."""
    if not isinstance(device, (str, int, torch.device)) or isinstance(device, bool):
        raise TypeError(f"available_bytes: device must be a device name ('cpu', 'cuda', 'cuda:N') or a torch.device, "
                        f"got {type(device).__name__} {device!r:.40}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"available_bytes: unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"available_bytes: device {str(device)!r} asked for, but no CUDA device is available "
                             "here; use 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"available_bytes: device {str(device)!r} does not exist; this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})")
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_pattern_memory(cfg, batch: int, q_len: int, k_len: int, layers=None, device="cpu",
                         limit: int | None = None) -> int:
    """Refuse (ValueError, with the size) full patterns that would not fit; returns the estimate in bytes.

    `limit` defaults to the free memory of `device`; with neither known nothing is refused."""
    need = pattern_bytes(cfg, batch, q_len, k_len, layers)
    cfg = _cfg(cfg)
    int_arg("limit", limit, minimum=0, where="check_pattern_memory (bytes)", optional=True)  # NaN refused nothing
    if limit is None:
        limit = available_bytes(device)
    if limit is not None and need > limit:
        n = len(_layer_list(cfg, layers))
        raise ValueError(
            f"full patterns at {n} layer{'s' if n != 1 else ''} would take {need / GiB:.1f} GiB "
            f"({n} x [{batch}, {cfg.n_heads}, {q_len}, {k_len}] float32 plus a working buffer), more than the "
            f"{limit / GiB:.1f} GiB available on {device}; ask for fewer layers (layers=[...]), a shorter input, or "
            "statistics instead (stats=...), which need O(n) memory"
        )
    return need
