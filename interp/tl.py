"""TransformerLens interop.

- A `TransformerBridge` (transformer-lens 4.x) wraps a Hugging Face model: `interp.load(bridge)` takes that model
  and runs it through interp's attention function, so statistics work at any length (the bridge itself forces
  eager attention and materialises every pattern).
- Any other TransformerLens model with `run_with_cache` and `hook_pattern` (HookedTransformer in 3.x, or a bridge
  wrapped on purpose) becomes a `TLPatternModel`: statistics are derived from its patterns (short inputs only;
  same definitions as the kernels), `lse` from its `hook_attn_scores`; it has a `cfg` like HookedModel's.
- `to_transformer_lens(model)` goes the other way (`HookedModel.to_transformer_lens()`).
"""

from __future__ import annotations

import torch

from .cache import ActivationCache
from .config import ModelConfig
from .hooks import HOOK_OF_STAT
from .kernels.from_pattern import stats_from_pattern
from .tokens import Tokens


def from_transformer_lens(obj, backend: str = "auto", tokenizer=None):
    """A bridge's HF model as a HookedModel (with `tokenizer`, else the bridge's), or a TLPatternModel."""
    from .model import HookedModel

    hf = getattr(obj, "original_model", None)
    if isinstance(hf, torch.nn.Module) and hasattr(hf, "config"):
        return HookedModel(hf, tokenizer if tokenizer is not None else getattr(obj, "tokenizer", None),
                           name=getattr(hf.config, "name_or_path", None), backend=backend)
    if hasattr(obj, "run_with_cache") and hasattr(obj, "cfg"):
        if tokenizer is not None:
            raise ValueError("tokenizer= is not applied to a TransformerLens model read through its patterns (it "
                             "tokenizes with its own); set the TransformerLens model's tokenizer instead")
        return TLPatternModel(obj)
    raise TypeError(f"unsupported TransformerLens object {type(obj).__name__}")


def config_from_tl(tl_cfg, name: str = "") -> ModelConfig:
    """interp's ModelConfig from a TransformerLens config (HookedTransformerConfig or a bridge's cfg)."""
    n_layers, n_heads = int(tl_cfg.n_layers), int(tl_cfg.n_heads)
    windows = [None] * n_layers
    window = getattr(tl_cfg, "window_size", None)
    types = getattr(tl_cfg, "attn_types", None)
    if window and types:
        windows = [window if t == "local" else None for t in types]
    d_model = int(tl_cfg.d_model)
    return ModelConfig(
        n_layers=n_layers, n_heads=n_heads, n_kv_heads=int(getattr(tl_cfg, "n_key_value_heads", None) or n_heads),
        d_head=int(getattr(tl_cfg, "d_head", None) or d_model // n_heads), d_model=d_model,
        d_vocab=int(tl_cfg.d_vocab), n_ctx=int(tl_cfg.n_ctx), layer_windows=tuple(windows),
        is_causal=getattr(tl_cfg, "attention_dir", "causal") != "bidirectional",
        architecture=getattr(tl_cfg, "original_architecture", None) or name or "TransformerLens")


TL_KEYWORDS = ("prepend_bos", "padding_side", "attention_mask")  # passed on to TransformerLens' run_with_cache


class TLPatternModel:
    """A TransformerLens model whose statistics come from its own `hook_pattern` (eager, short inputs)."""

    def __init__(self, tl_model):
        if not (hasattr(tl_model, "run_with_cache") and hasattr(tl_model, "cfg")):
            raise TypeError(f"TLPatternModel needs a TransformerLens model (run_with_cache and cfg), got "
                            f"{type(tl_model).__name__}")
        self.tl = tl_model
        self.tokenizer = getattr(tl_model, "tokenizer", None)
        self.name = getattr(tl_model.cfg, "model_name", None) or type(tl_model).__name__
        self.cfg = config_from_tl(tl_model.cfg, type(tl_model).__name__)
        self.n_layers = self.cfg.n_layers
        self.n_heads = self.cfg.n_heads

    def __repr__(self) -> str:
        return f"TLPatternModel({type(self.tl).__name__}, {self.n_layers} layers, {self.n_heads} heads)"

    def to_tokens(self, inputs):
        return self.tl.to_tokens(inputs)

    def run_with_hooks(self, *args, **kwargs):
        raise ValueError("TLPatternModel gives statistics derived from TransformerLens patterns only; hooks, "
                         "interventions and gradients need interp's own wrapper: interp.load(hf_model) "
                         "(for a TransformerBridge, interp.load(bridge) runs its HF model through interp)")

    def _check_run(self, tokens, stats, layers, sink_tokens, local_window, span, to_cpu, kwargs):
        """HookedModel's checks of the same arguments (same helpers, same messages): -> (token ids, layers, stats)."""
        from .kernels.checks import check_inputs

        from . import input_checks as checks
        from .validate import tokens_arg

        where = "TLPatternModel.run_with_cache"
        for key in ("names", "names_filter", "pattern", "interventions", "logits_at", "checkpoint"):
            if key in kwargs:
                raise TypeError(f"{where} got {key}=: a TLPatternModel gives statistics derived from TransformerLens "
                                "patterns only (stats=, layers=); hook points, patterns and interventions need "
                                "interp's own wrapper: interp.load(hf_model) (a TransformerBridge: interp.load(bridge))")
        checks.keywords(where, kwargs, TL_KEYWORDS, "tokens, stats, layers, sink_tokens, local_window, span, to_cpu "
                        "(and TransformerLens' own)")
        checks.bool_arg("to_cpu", to_cpu, where)
        if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens
                                       and all(isinstance(t, str) for t in tokens)):
            tokens = self.tl.to_tokens(tokens)
        tokens = tokens_arg(tokens, self, where=where, tensor_only=True)
        layers = checks.layer_list(layers, self.n_layers)
        if not layers:
            raise checks.empty_selection(None, None, None, layers)
        want = checks.stat_selection(stats, span)
        if not want:
            raise checks.empty_selection(None, None, want, None)
        b, n = (1, tokens.shape[0]) if tokens.dim() == 1 else tokens.shape
        shape = torch.zeros(()).expand(b, 1, n, 16)  # no data: check_inputs reads shapes only
        check_inputs(shape, shape, shape, causal=True, scale=None, sliding_window=None, attention_mask=None,
                     key_bias=None, stats=want, sink_tokens=sink_tokens, local_window=local_window, span=span)
        return tokens, layers, want

    def run_with_cache(self, tokens, stats="all", layers=None, sink_tokens: int = 4, local_window: int = 64,
                       span=None, to_cpu: bool = False, grad_of=None, **kwargs):
        """(logits, ActivationCache of `blocks.{l}.attn.hook_*` statistics). `lse` comes from the model's
        `hook_attn_scores` (log-sum-exp over keys of the scaled, masked scores)."""
        if grad_of is not None:
            self.run_with_hooks()  # the same clear error: no gradients through pattern-derived statistics
        tokens, layers, want = self._check_run(tokens, stats, layers, sink_tokens, local_window, span, to_cpu, kwargs)
        names = {f"blocks.{l}.attn.hook_pattern" for l in layers}
        if "lse" in want:
            names |= {f"blocks.{l}.attn.hook_attn_scores" for l in layers}
        logits, tl_cache = self.tl.run_with_cache(tokens, names_filter=lambda n: n in names, **kwargs)
        cache = ActivationCache(n_layers=self.n_layers)
        ids = tokens if tokens.dim() == 2 else tokens[None]
        cache.tokens = Tokens(ids, None, [ids.shape[-1]] * ids.shape[0])  # as HookedModel's cache: what was run
        for l in layers:
            pre = f"blocks.{l}.attn."
            st = dict(stats_from_pattern(tl_cache[pre + "hook_pattern"], tuple(n for n in want if n != "lse"),
                                         sink_tokens=sink_tokens, local_window=local_window, span=span).items())
            if "lse" in want:
                if pre + "hook_attn_scores" not in tl_cache:
                    raise ValueError(f"stat 'lse' needs {pre}hook_attn_scores, which this TransformerLens model "
                                     "does not cache; ask for the other statistics")
                st["lse"] = torch.logsumexp(tl_cache[pre + "hook_attn_scores"].float(), dim=-1)  # [batch, head, q]
            for name, t in st.items():
                cache[pre + HOOK_OF_STAT[name]] = t.cpu() if to_cpu else t
        return logits, cache


def to_transformer_lens(model, copy: bool = True):
    """The same weights as a TransformerLens `TransformerBridge` (eager attention; short inputs).

    A bridge needs a tokenizer: without one it would look the model's name up on the hub, so a tokenizer-less
    model (the toys) is refused here with a ValueError instead of a network error."""
    import copy as _copy

    from .model import HookedModel

    if not isinstance(model, HookedModel):
        raise TypeError(f"to_transformer_lens: model must be an interp HookedModel (e.g. interp.load('smollm2-135m')), "
                        f"got {type(model).__name__} {model!r:.40}")
    if not isinstance(copy, bool):
        raise TypeError(f"to_transformer_lens: copy must be True or False, got {type(copy).__name__} {copy!r:.40}")
    from transformer_lens.model_bridge import TransformerBridge

    if model.tokenizer is None:
        raise ValueError(f"{model.name} has no tokenizer, and TransformerLens' TransformerBridge needs one (it would "
                         "fetch one from the hub by the model's name); load the model with tokenizer=... first")
    hf = _copy.deepcopy(model.model) if copy else model.model
    for m in hf.modules():
        m.__dict__.pop("_interp_model", None)
        m.__dict__.pop("_interp_layer", None)
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    hf.set_attn_implementation("eager")
    if not getattr(hf.config, "architectures", None):
        hf.config.architectures = [type(hf).__name__]
    return TransformerBridge.boot_transformers(model.name, hf_model=hf, tokenizer=model.tokenizer)
