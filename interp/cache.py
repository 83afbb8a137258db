"""ActivationCache: what `run_with_cache` returns, a dict of hook name -> tensor with a few helpers."""

from __future__ import annotations

import torch


class ActivationCache(dict):
    """Hook name -> captured tensor (detached). `cache.stack("hook_key_mean")` -> [layer, ...]."""

    def __init__(self, *args, n_layers: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_layers = n_layers

    def __getitem__(self, name):
        try:
            return super().__getitem__(name)
        except KeyError:
            import difflib

            close = difflib.get_close_matches(str(name), list(self.keys()), n=3, cutoff=0.5)
            hint = f"; close: {close}" if close else ""
            raise KeyError(f"{name!r} was not captured{hint}. Captured: {len(self)} hook points") from None

    def layers_with(self, suffix: str) -> list[int]:
        return [l for l in range(self.n_layers) if f"blocks.{l}.attn.{suffix}" in self or f"blocks.{l}.{suffix}" in self]

    def stack(self, suffix: str) -> torch.Tensor:
        """Stack `blocks.{l}.attn.{suffix}` (or `blocks.{l}.{suffix}`) over the captured layers -> [layer, ...]."""
        layers = self.layers_with(suffix)
        if not layers:
            raise KeyError(f"no layer captured {suffix!r}")
        out = []
        for l in layers:
            key = f"blocks.{l}.attn.{suffix}" if f"blocks.{l}.attn.{suffix}" in self else f"blocks.{l}.{suffix}"
            out.append(self[key])
        return torch.stack(out)
