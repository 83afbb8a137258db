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
        hf = unbridged(hf)
        # the bridge's own name (`cfg.model_name`: 'smollm2-135m' for `model.to_transformer_lens()`), not the
        # HF config's name_or_path (for a bundled model, its cache folder)
        given = getattr(getattr(obj, "cfg", None), "model_name", None)
        name = given if isinstance(given, str) and given.strip() else getattr(hf.config, "name_or_path", None)
        return HookedModel(hf, tokenizer if tokenizer is not None else getattr(obj, "tokenizer", None),
                           name=name, backend=backend)
    if hasattr(obj, "run_with_cache") and hasattr(obj, "cfg"):
        if tokenizer is not None:
            raise ValueError("tokenizer= is not applied to a TransformerLens model read through its patterns (it "
                             "tokenizes with its own); set the TransformerLens model's tokenizer instead")
        return TLPatternModel(obj)
    raise TypeError(f"unsupported TransformerLens object {type(obj).__name__}")


def _bridge_component(module) -> torch.nn.Module | None:
    """The Hugging Face module a TransformerBridge component stands in for (None for any other module)."""
    if not (type(module).__module__ or "").startswith("transformer_lens"):
        return None
    original = getattr(module, "original_component", None)
    return original if isinstance(original, torch.nn.Module) else None


def unbridged(hf: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model a TransformerBridge wraps, with its own modules back where the bridge put its components.

    Booting a bridge replaces the HF model's blocks, attention, MLPs, norms and embeddings in place by bridge
    components, and the attention components (transformer-lens 4.x) recompute attention themselves instead of calling
    the model's attention function: interp's statistics, attention hooks and head interventions would then silently
    never run. This returns a copy of the module tree with the original modules restored; parameters and buffers are
    shared with the bridge's model (each copied module holds the original's parameter and buffer dicts: no weights
    are copied, and moving the bridge later moves the copy too) and the bridge itself is left as it was."""
    if not any(_bridge_component(m) is not None for m in hf.modules()):
        return hf
    import copy

    memo = {id(t): t for t in (*hf.parameters(), *hf.buffers())}
    for m in hf.modules():  # accelerate's hooks shared, not copied (an offloaded model's weights_map holds every
        # offloaded weight: deep-copied, the whole model's weights were duplicated in memory)
        if "_hf_hook" in vars(m):
            memo[id(m._hf_hook)] = m._hf_hook
    out = copy.deepcopy(hf, memo)
    for m in hf.modules():  # the copies hold the same parameter and buffer dicts: a later bridge.to(device / dtype)
        # replaces buffers (and, under torch's overwrite flag, parameters) in these dicts, and the copy follows
        c = memo.get(id(m))
        if isinstance(c, torch.nn.Module) and c is not m:
            c._parameters, c._buffers = m._parameters, m._buffers
            c._non_persistent_buffers_set = m._non_persistent_buffers_set

    def restore(module: torch.nn.Module) -> None:
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            original = _bridge_component(child)
            while original is not None:
                child, original = original, _bridge_component(original)
            module._modules[name] = child
            restore(child)

    restore(out)
    for m in out.modules():  # hooks TransformerLens (or an earlier interp wrapper) put on the original modules
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                      "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs"):
            getattr(m, hooks).clear()
        for attr in ("_interp_model", "_interp_layer",
                     # transformers' output-capturing hooks went with the others: without this flag it installs them
                     # again at the next forward (with it, output_hidden_states=True gave an empty tuple)
                     "_output_capturing_hooks_installed"):
            m.__dict__.pop(attr, None)
    return out


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


TL_KEYWORDS = ("prepend_bos", "padding_side", "attention_mask")  # TransformerLens' own, handled in _check_run
TEXT_FORMS = "a text or a non-empty list of texts"


def _is_text(inputs) -> bool:
    return isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and len(inputs) > 0
                                       and all(isinstance(t, str) for t in inputs))


def _text_options(where: str, prepend_bos, padding_side) -> None:
    """TransformerLens' to_tokens options: prepend_bos True/False/None, padding_side 'right'/'left'/None."""
    from .tokens import _show, check_prepend_bos

    try:
        check_prepend_bos(prepend_bos)
    except TypeError as e:
        raise TypeError(f"{where}: {e}") from None
    if padding_side is not None and padding_side not in ("right", "left"):
        raise ValueError(f"{where}: padding_side must be 'right', 'left' or None (the tokenizer's side), got "
                         f"{_show(padding_side)}")


def _mask_arg(mask, ids: torch.Tensor, where: str) -> tuple[torch.Tensor, list[int]]:
    """attention_mask of token ids [batch, pos]: a bool or 0/1 integer tensor of the same shape (a [pos] one for
    [1, pos] ids), each row one run of real tokens padded on the right or on the left -> (bool [batch, pos], real
    tokens per row)."""
    from .tokens import _show, padding_mask

    b, n = ids.shape
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{where}: attention_mask must be None or a bool (or 0/1 integer) tensor [batch, pos] = "
                        f"[{b}, {n}], got {_show(mask)}")
    if mask.dtype.is_floating_point or mask.dtype.is_complex:  # (before the shape: the likelier mistake)
        raise TypeError(f"{where}: attention_mask must be a bool (or 0/1 integer) tensor (True/1 = real token), not "
                        f"an additive float mask, got {mask.dtype}")
    if mask.dim() == 1 and b == 1:
        mask = mask[None]
    if tuple(mask.shape) != (b, n):
        raise ValueError(f"{where}: attention_mask must have the shape of the token ids [batch, pos] = [{b}, {n}], "
                         f"got shape {tuple(mask.shape)}")
    mask, counts = padding_mask(f"{where}: attention_mask", mask, f"{where}: row")
    return mask.to(ids.device), counts


class TLPatternModel:
    """A TransformerLens model whose statistics come from its own `hook_pattern` (eager, short inputs)."""

    def __init__(self, tl_model):
        from .model import HookedModel

        if isinstance(tl_model, (HookedModel, TLPatternModel)):
            raise TypeError(f"TLPatternModel needs a TransformerLens model (a HookedTransformer or TransformerBridge), "
                            f"got an interp {type(tl_model).__name__}, which gives statistics itself: use it as it is"
                            + (", or wrap model.to_transformer_lens()" if isinstance(tl_model, HookedModel) else ""))
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

    def to_tokens(self, inputs, prepend_bos: bool | None = None, padding_side: str | None = None) -> torch.Tensor:
        """Text or a list of texts -> token ids [batch, pos] by TransformerLens' to_tokens (padded with the
        tokenizer's pad id; run_with_cache masks the padding of texts of unequal lengths)."""
        from .tokens import _show

        where = "TLPatternModel.to_tokens"
        if not _is_text(inputs):
            raise TypeError(f"{where}: inputs must be {TEXT_FORMS} (TransformerLens tokenizes text only; token ids "
                            f"go to run_with_cache as an integer tensor), got {_show(inputs)}")
        _text_options(where, prepend_bos, padding_side)
        self._need_tokenizer(where)
        texts = inputs if isinstance(inputs, str) else list(inputs)
        return self.tl.to_tokens(texts, prepend_bos=prepend_bos, padding_side=padding_side)

    def _need_tokenizer(self, where: str) -> None:
        if self.tokenizer is None:
            raise ValueError(f"{where}: this TransformerLens model has no tokenizer: pass token ids (an integer "
                             "tensor [batch, pos]) instead of text")

    def run_with_hooks(self, *args, **kwargs):
        raise ValueError("TLPatternModel gives statistics derived from TransformerLens patterns only; hooks, "
                         "interventions and gradients need interp's own wrapper: interp.load(hf_model) "
                         "(for a TransformerBridge, interp.load(bridge) runs its HF model through interp)")

    def _check_run(self, tokens, stats, layers, sink_tokens, local_window, span, to_cpu, kwargs):
        """HookedModel's checks of the same arguments (same helpers, same messages) -> (token ids [batch, pos],
        padding mask [batch, pos] bool or None (nothing padded), real tokens per row, layers, stats).

        Texts of unequal lengths are padded by TransformerLens' to_tokens; their mask comes from each text's own
        length (not from pad ids, which may be real tokens too). Token ids may come with an attention_mask."""
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
        prepend_bos, padding_side = kwargs.get("prepend_bos"), kwargs.get("padding_side")
        mask = kwargs.get("attention_mask")
        _text_options(where, prepend_bos, padding_side)
        if _is_text(tokens):
            if mask is not None:
                raise ValueError(f"{where}: attention_mask= goes with token ids; texts are padded and masked here "
                                 "(pass token ids [batch, pos] with their attention_mask, or the texts alone)")
            self._need_tokenizer(where)
            texts = [tokens] if isinstance(tokens, str) else list(tokens)
            opts = dict(prepend_bos=prepend_bos, padding_side=padding_side, truncate=False)
            lengths = [int(self.tl.to_tokens(t, **opts).shape[-1]) for t in texts]  # each text alone
            if 0 in lengths:
                raise ValueError(f"{where}: text {lengths.index(0)} is empty (no tokens)")
            tokens = self.tl.to_tokens(texts, **opts)  # [batch, max length], padded
            n = tokens.shape[-1]
            pos = torch.arange(n, device=tokens.device)
            real = torch.tensor(lengths, device=tokens.device)[:, None]  # [batch, 1]
            side = padding_side or getattr(self.tokenizer, "padding_side", None) or "right"
            mask = (pos < real) if side == "right" else (pos >= n - real)  # [batch, pos]
        else:
            for key, value in (("prepend_bos", prepend_bos), ("padding_side", padding_side)):
                if value is not None:
                    raise ValueError(f"{where}: {key}={value!r} applies to text (TransformerLens' to_tokens); token "
                                     f"ids are run as they are (leave {key} out, or pass the text)")
        tokens = tokens_arg(tokens, self, where=where, tensor_only=True)
        ids = tokens if tokens.dim() == 2 else tokens[None]  # [batch, pos]
        lengths = [ids.shape[-1]] * ids.shape[0]
        if mask is not None:
            mask, lengths = _mask_arg(mask, ids, where)
            if min(lengths) == ids.shape[-1]:  # nothing padded
                mask = None
        layers = checks.layer_list(layers, self.n_layers)
        if not layers:
            raise checks.empty_selection(None, None, None, layers)
        want = checks.stat_selection(stats, span)
        if not want:
            raise checks.empty_selection(None, None, want, None)
        b, n = ids.shape
        shape = torch.zeros(()).expand(b, 1, n, 16)  # no data: check_inputs reads shapes only
        check_inputs(shape, shape, shape, causal=True, scale=None, sliding_window=None, attention_mask=None,
                     key_bias=None, stats=want, sink_tokens=sink_tokens, local_window=local_window, span=span)
        return ids, mask, lengths, layers, want

    def run_with_cache(self, tokens, stats="all", layers=None, sink_tokens: int = 4, local_window: int = 64,
                       span=None, to_cpu: bool = False, grad_of=None, **kwargs):
        """(logits, ActivationCache of `blocks.{l}.attn.hook_*` statistics). `lse` comes from the model's
        `hook_attn_scores` (log-sum-exp over keys of the scaled, masked scores).

        Padding (texts of unequal lengths, or token ids with attention_mask=) is masked in the model and in the
        statistics as in HookedModel's: key statistics count real queries only; a query that sees no real key has
        an all-zero pattern row and lse -inf."""
        if grad_of is not None:
            self.run_with_hooks()  # the same clear error: no gradients through pattern-derived statistics
        ids, mask, lengths, layers, want = self._check_run(tokens, stats, layers, sink_tokens, local_window, span,
                                                           to_cpu, kwargs)
        names = {f"blocks.{l}.attn.hook_pattern" for l in layers}
        if "lse" in want:
            names |= {f"blocks.{l}.attn.hook_attn_scores" for l in layers}
        extra = {} if mask is None else {"attention_mask": mask.long()}  # the bridge derives positions from it
        logits, tl_cache = self.tl.run_with_cache(ids, names_filter=lambda n: n in names, **extra)
        cache = ActivationCache(n_layers=self.n_layers)
        cache.tokens = Tokens(ids, mask, lengths)  # as HookedModel's cache: what was run
        visible = None
        if mask is not None:  # [batch, 1, q, k]: real keys the query may see
            n = ids.shape[-1]
            visible = mask[:, None, None, :]
            if self.cfg.is_causal:
                visible = visible & torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()
        for l in layers:
            pre = f"blocks.{l}.attn."
            pattern = tl_cache[pre + "hook_pattern"]  # [batch, head, q, k]
            if visible is not None:  # a query seeing no real key: the model's uniform row becomes zeros
                pattern = pattern * visible.to(pattern.device)
            st = dict(stats_from_pattern(pattern, tuple(n for n in want if n != "lse"), sink_tokens=sink_tokens,
                                         local_window=local_window, span=span, query_valid=mask,
                                         key_valid=mask).items())
            if "lse" in want:
                if pre + "hook_attn_scores" not in tl_cache:
                    raise ValueError(f"stat 'lse' needs {pre}hook_attn_scores, which this TransformerLens model "
                                     "does not cache; ask for the other statistics")
                scores = tl_cache[pre + "hook_attn_scores"].float()  # [batch, head, q, k]
                if visible is not None:
                    scores = scores.masked_fill(~visible.to(scores.device), float("-inf"))
                st["lse"] = torch.logsumexp(scores, dim=-1)  # [batch, head, q]
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
    init = getattr(model.tokenizer, "init_kwargs", None)  # a transformers tokenizer's; TransformerLens re-reads it
    if isinstance(init, dict) and getattr(model.tokenizer, "bos_token", None) is not None and not init.get(
            "name_or_path"):
        raise ValueError(f"to_transformer_lens: {model.name}'s tokenizer was built in memory (it has no name_or_path), "
                         "and TransformerLens' TransformerBridge reloads the tokenizer from its name_or_path; save it "
                         "(tokenizer.save_pretrained(folder)), load it back with "
                         "transformers.AutoTokenizer.from_pretrained(folder) and give the model that tokenizer")
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
