"""TransformerLens interop.

- A `TransformerBridge` (transformer-lens 4.x) wraps a Hugging Face model: `interp.load(bridge)` takes that model
  and runs it through interp's attention function, so statistics work at any length (the bridge itself forces
  eager attention and materialises every pattern).
- Any other TransformerLens model with `run_with_cache` and `hook_pattern` (HookedTransformer in 3.x) becomes a
  `TLPatternModel`: statistics are derived from its patterns (short inputs only; same definitions as the kernels).
- `HookedModel.to_transformer_lens()` goes the other way.
"""

from __future__ import annotations

import torch

from .cache import ActivationCache
from .hooks import HOOK_OF_STAT
from .kernels.from_pattern import stats_from_pattern
from .kernels.stats import normalize_stats


def from_transformer_lens(obj, backend: str = "auto"):
    from .model import HookedModel

    hf = getattr(obj, "original_model", None)
    if isinstance(hf, torch.nn.Module) and hasattr(hf, "config"):
        return HookedModel(hf, getattr(obj, "tokenizer", None), name=getattr(hf.config, "name_or_path", None),
                           backend=backend)
    if hasattr(obj, "run_with_cache") and hasattr(obj, "cfg"):
        return TLPatternModel(obj)
    raise TypeError(f"unsupported TransformerLens object {type(obj).__name__}")


class TLPatternModel:
    """A TransformerLens model whose statistics come from its own `hook_pattern` (eager, short inputs)."""

    def __init__(self, tl_model):
        self.tl = tl_model
        self.tokenizer = getattr(tl_model, "tokenizer", None)
        self.n_layers = tl_model.cfg.n_layers
        self.n_heads = tl_model.cfg.n_heads

    def __repr__(self) -> str:
        return f"TLPatternModel({type(self.tl).__name__}, {self.n_layers} layers, {self.n_heads} heads)"

    def run_with_cache(self, tokens, stats="all", layers=None, sink_tokens: int = 4, local_window: int = 64,
                       span=None, **kwargs):
        if isinstance(tokens, str):
            tokens = self.tl.to_tokens(tokens)
        layers = range(self.n_layers) if layers is None else layers
        names = {f"blocks.{l}.attn.hook_pattern" for l in layers}
        logits, tl_cache = self.tl.run_with_cache(tokens, names_filter=lambda n: n in names, **kwargs)
        want = tuple(n for n in normalize_stats(stats) if n != "lse")
        cache = ActivationCache(n_layers=self.n_layers)
        for l in layers:
            st = stats_from_pattern(tl_cache[f"blocks.{l}.attn.hook_pattern"], want, sink_tokens=sink_tokens,
                                    local_window=local_window, span=span)
            for name, t in st.items():
                cache[f"blocks.{l}.attn.{HOOK_OF_STAT[name]}"] = t
        return logits, cache
