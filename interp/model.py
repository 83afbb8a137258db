"""HookedModel: one wrapper for every Hugging Face architecture, hooked through the attention function.

Attention runs through `interp.attention.interp_attention` (registered with transformers' AttentionInterface), so
no per-architecture code is needed for q/k/v, patterns, statistics and head interventions; residual-stream hooks are
ordinary PyTorch module hooks on the blocks.

    model = interp.load("smollm2-135m")
    logits, cache = model.run_with_cache("The cat sat", stats=["key_mean", "entropy"])
    cache["blocks.0.attn.hook_key_mean"]          # [batch, head, key_pos]
    logits = model.run_with_hooks("...", interventions=[HeadAblation(layer=5, heads=[2])])
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Sequence

import torch

from . import attention as _attention
from .cache import ActivationCache
from .config import ATTN_NAMES, MLP_NAMES, ModelConfig, find_blocks, find_child, head_output_weight
from .hooks import HOOK_OF_STAT, RunContext, all_hook_names, parse_hook_name
from .interventions import (GatedStreaming, HeadAblation, KeyMask, ScaleAttention, StreamingAttention,
                            key_selector)
from .kernels import attention_with_stats, normalize_stats
from .tokens import Tokens, to_tokens

PATTERN_BYTES_LIMIT = 4 * 2**30


class HookedModel:
    def __init__(self, hf_model, tokenizer=None, name: str | None = None, backend: str = "auto"):
        if not isinstance(hf_model, torch.nn.Module) or not hasattr(hf_model, "config"):
            raise TypeError(f"HookedModel wraps a Hugging Face PreTrainedModel, got {type(hf_model).__name__}")
        _attention.register()
        self.model = hf_model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(hf_model.config, "name_or_path", None) or type(hf_model).__name__
        self.cfg = ModelConfig.from_hf(hf_model.config)
        self.backend = backend
        self.blocks = find_blocks(hf_model, self.cfg.n_layers)
        self.attn_modules = []
        for layer, block in enumerate(self.blocks):
            for m in block.modules():
                m._interp_layer = layer
                m._interp_model = self
            attn = find_child(block, ATTN_NAMES)
            if attn is None:
                raise ValueError(f"cannot find the attention module of block {layer} ({type(block).__name__})")
            self.attn_modules.append(attn)
        hf_model.set_attn_implementation(_attention.NAME)
        self._ctx: RunContext | None = None
        self._valid: torch.Tensor | None = None  # [batch, pos] padding mask of the current run
        self._install_module_hooks()

    # ------------------------------------------------------------------ basics
    def __repr__(self) -> str:
        c = self.cfg
        return (f"HookedModel({self.name!r}: {c.architecture}, {c.n_layers} layers, {c.n_heads} heads "
                f"({c.n_kv_heads} KV), d_head {c.d_head}, n_ctx {c.n_ctx})")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def hook_names(self) -> list[str]:
        return all_hook_names(self.cfg.n_layers)

    def to_tokens(self, inputs, prepend_bos: bool | None = None) -> Tokens:
        """Text, a list of texts, or token ids -> right-padded `Tokens(input_ids, attention_mask)`."""
        return to_tokens(inputs, self.tokenizer, self.cfg, self.device, prepend_bos=prepend_bos)

    def to_string(self, ids) -> str:
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer")
        return self.tokenizer.decode(ids)

    # ------------------------------------------------------------------ module hooks (residual stream)
    def _install_module_hooks(self) -> None:
        def out_hook(name_fn):
            def hook(module, args, output):
                ctx = self._ctx
                if ctx is None:
                    return None
                name = name_fn(module)
                if not ctx.active(name):
                    return None
                if isinstance(output, tuple):
                    return (ctx.apply(name, output[0], getattr(module, "_interp_layer", None)),) + output[1:]
                return ctx.apply(name, output, getattr(module, "_interp_layer", None))
            return hook

        def pre_hook(module, args, kwargs):
            ctx = self._ctx
            if ctx is None:
                return None
            name = f"blocks.{module._interp_layer}.hook_resid_pre"
            if not ctx.active(name):
                return None
            if args:
                return (ctx.apply(name, args[0], module._interp_layer),) + tuple(args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = ctx.apply(name, kwargs["hidden_states"], module._interp_layer)
            return args, kwargs

        for layer, block in enumerate(self.blocks):
            block.register_forward_pre_hook(pre_hook, with_kwargs=True)
            block.register_forward_hook(out_hook(lambda m: f"blocks.{m._interp_layer}.hook_resid_post"))
            self.attn_modules[layer].register_forward_hook(
                out_hook(lambda m: f"blocks.{m._interp_layer}.hook_attn_out"))
            mlp = find_child(block, MLP_NAMES)
            if mlp is not None:
                mlp.register_forward_hook(out_hook(lambda m: f"blocks.{m._interp_layer}.hook_mlp_out"))
        emb = self.model.get_input_embeddings()
        emb.register_forward_hook(out_hook(lambda m: "hook_embed"))
        norm = find_child(self.model, ("model.norm", "model.final_layernorm", "transformer.ln_f", "norm"))
        if norm is not None and not hasattr(norm, "_interp_layer"):
            norm.register_forward_hook(out_hook(lambda m: "ln_final.hook_normalized"))

    # ------------------------------------------------------------------ the attention call
    def attention_call(self, layer, module, query, key, value, mask, scaling, causal, sliding_window):
        """Called by interp_attention for every layer while a run context is active."""
        ctx = self._ctx
        pre = f"blocks.{layer}.attn."
        if ctx.active(pre + "hook_q"):
            query = ctx.apply(pre + "hook_q", query.transpose(1, 2), layer).transpose(1, 2)
        if ctx.active(pre + "hook_k"):
            key = ctx.apply(pre + "hook_k", key.transpose(1, 2), layer).transpose(1, 2)
        if ctx.active(pre + "hook_v"):
            value = ctx.apply(pre + "hook_v", value.transpose(1, 2), layer).transpose(1, 2)
        b, h, lq, _ = query.shape
        lk = key.shape[2]
        dev = query.device
        ivs = ctx.interventions.get(layer, [])
        bias = None
        prob_ivs = []
        for iv in ivs:
            if isinstance(iv, KeyMask) or (isinstance(iv, ScaleAttention) and not iv.needs_probs):
                ib = iv.key_bias(b, h, lk, dev)
                bias = ib if bias is None else bias + ib
            elif isinstance(iv, ScaleAttention):
                sel = key_selector(iv.keys, b, lk, dev)
                prob_ivs.append(lambda p, qs, iv=iv, sel=sel: iv.transform(p, sel))
            elif isinstance(iv, StreamingAttention):
                prob_ivs.append(lambda p, qs, iv=iv: iv.transform(p, qs + lk - lq))
        want_pattern = ctx.active(pre + "hook_pattern")
        pattern = None
        prob_hook = None  # set below when the probabilities themselves are needed
        if want_pattern or prob_ivs:
            if want_pattern:
                need = b * h * lq * lk * 4
                if need > PATTERN_BYTES_LIMIT:
                    raise ValueError(
                        f"hook_pattern at layer {layer} would take {need / 2**30:.1f} GiB ([{b}, {h}, {lq}, {lk}] "
                        "float32); capture statistics instead (stats=...), which need O(n) memory"
                    )
                pattern = torch.empty(b, h, lq, lk, device=dev, dtype=torch.float32)

            def capture_and_edit(p, qs):
                for fn in prob_ivs:
                    p = fn(p, qs)
                if pattern is not None:
                    pattern[:, :, qs:qs + p.shape[2]] = p
                return p

            prob_hook = capture_and_edit

        opts = ctx.stat_options
        out, st = attention_with_stats(
            query, key, value, causal=causal, scale=scaling, sliding_window=sliding_window, attention_mask=mask,
            key_bias=bias, stats=ctx.stats.get(layer, ()), sink_tokens=opts.get("sink_tokens", 4),
            local_window=opts.get("local_window", 64), span=opts.get("span"), backend=ctx.backend,
            prob_hook=prob_hook,
        )
        if pattern is not None:
            edited = ctx.apply(pre + "hook_pattern", pattern, layer)
            if edited is not pattern:  # a hook replaced the pattern: recompute the output from it
                g = h // key.shape[1]
                out = torch.matmul(edited.reshape(b, key.shape[1], g, lq, lk),
                                   value.float().unsqueeze(2)).reshape(b, h, lq, -1).to(query.dtype)
        for sname, t in st.items():
            ctx.apply(pre + HOOK_OF_STAT[sname], t, layer)
        for iv in ivs:
            if isinstance(iv, GatedStreaming):  # DuoAttention: mix full and streaming outputs per KV head
                stream, _ = attention_with_stats(
                    query, key, value, causal=causal, scale=scaling, sliding_window=sliding_window,
                    attention_mask=mask, key_bias=bias, stats=(), backend=ctx.backend,
                    prob_hook=lambda p, qs, iv=iv: iv._stream.transform(p, qs + lk - lq))
                a = iv.alpha_per_head(h).to(out.device)[None, :, None, None]
                out = (a * out.float() + (1 - a) * stream.float()).to(out.dtype)
        z = out.transpose(1, 2)  # [batch, query_pos, head, d_head]
        for iv in ivs:
            if isinstance(iv, HeadAblation):
                z = iv.apply_z(z, self._valid)
        z = ctx.apply(pre + "hook_z", z, layer)
        if ctx.active(pre + "hook_result"):
            w_o = head_output_weight(module, h, z.shape[-1])  # [head, d_head, d_model]
            ctx.apply(pre + "hook_result", torch.einsum("bqhd,hdm->bqhm", z.to(w_o.dtype), w_o), layer)
        return z.contiguous(), None

    # ------------------------------------------------------------------ running
    def _forward(self, toks: Tokens, grad: bool = False, **kwargs):
        self._valid = toks.attention_mask
        position_ids = None
        if toks.attention_mask is not None:
            position_ids = (toks.attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        with torch.set_grad_enabled(grad):
            out = self.model(input_ids=toks.input_ids, attention_mask=toks.attention_mask,
                             position_ids=position_ids, use_cache=False, **kwargs)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state

    def _check_interventions(self, interventions) -> dict[int, list]:
        by_layer: dict[int, list] = {}
        for iv in interventions or ():
            if not isinstance(iv, (HeadAblation, KeyMask, ScaleAttention, StreamingAttention, GatedStreaming)):
                raise TypeError(f"unknown intervention {iv!r}; use HeadAblation, KeyMask, ScaleAttention or "
                                "StreamingAttention")
            iv.validate(self.cfg.n_layers, self.cfg.n_heads)
            by_layer.setdefault(iv.layer, []).append(iv)
        return by_layer

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, Callable]] = (), interventions: Iterable = (),
              stats=None, layers=None, sink_tokens: int = 4, local_window: int = 64, span=None,
              backend: str | None = None):
        """Activate hooks, statistics and interventions for every forward pass inside the block (also generate)."""
        if self._ctx is not None:
            raise RuntimeError("hooks are already active on this model; nested hook contexts are not supported")
        ctx = RunContext(n_layers=self.cfg.n_layers, backend=backend or self.backend)
        for item in fwd_hooks:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"fwd_hooks takes (name, fn) pairs, got {item!r}")
            ctx.add_hook(*item)
        names = normalize_stats(stats)
        for layer in self._layers(layers):
            if names:
                ctx.stats[layer] = tuple(dict.fromkeys(ctx.stats.get(layer, ()) + names))
        ctx.stat_options = dict(sink_tokens=sink_tokens, local_window=local_window, span=span)
        ctx.interventions = self._check_interventions(interventions)
        self._ctx = ctx
        try:
            yield ctx
        finally:
            self._ctx = None
            self._valid = None

    def _layers(self, layers) -> list[int]:
        if layers is None:
            return list(range(self.cfg.n_layers))
        if isinstance(layers, int):
            layers = [layers]
        out = []
        for l in layers:
            if isinstance(l, bool) or not isinstance(l, int) or not 0 <= l < self.cfg.n_layers:
                raise ValueError(f"layer {l!r} out of range; the model has layers 0..{self.cfg.n_layers - 1}")
            out.append(l)
        return out

    def __call__(self, inputs, prepend_bos: bool | None = None):
        """Logits `[batch, pos, d_vocab]` (no hooks)."""
        return self._forward(self.to_tokens(inputs, prepend_bos))

    def run_with_hooks(self, inputs, fwd_hooks=(), interventions=(), prepend_bos=None, **stat_options):
        with self.hooks(fwd_hooks=fwd_hooks, interventions=interventions, **stat_options):
            return self._forward(self.to_tokens(inputs, prepend_bos))

    def run_with_cache(self, inputs, names: Iterable[str] | None = None, names_filter: Callable | None = None,
                       stats=None, layers=None, pattern: bool = False, interventions=(), prepend_bos=None,
                       sink_tokens: int = 4, local_window: int = 64, span=None, backend: str | None = None,
                       to_cpu: bool = False):
        """Logits and an ActivationCache.

        names / names_filter choose hook points (TransformerLens style); `stats=["key_mean", ...]` captures
        statistics (any length, O(n) memory) at `layers`; `pattern=True` captures full patterns (short inputs).
        With nothing chosen, every statistic of every layer is captured.
        """
        toks = self.to_tokens(inputs, prepend_bos)
        chosen = set()
        if names is not None:
            if isinstance(names, str):
                names = [names]
            for n in names:
                parse_hook_name(n, self.cfg.n_layers)
                chosen.add(n)
        if names_filter is not None:
            chosen.update(n for n in self.hook_names() if names_filter(n))
        layer_list = self._layers(layers)
        if pattern:
            chosen.update(f"blocks.{l}.attn.hook_pattern" for l in layer_list)
        stat_names = normalize_stats(stats)
        if not chosen and stats is None and not pattern:
            stat_names = normalize_stats("all")
        for l in layer_list:
            chosen.update(f"blocks.{l}.attn.{HOOK_OF_STAT[s]}" for s in stat_names if s != "span_mass" or span)
        cache = ActivationCache(n_layers=self.cfg.n_layers)

        def save(t, hook):
            t = t.detach()
            cache[hook.name] = t.cpu() if to_cpu else t.clone()

        hooks = [(n, save) for n in sorted(chosen)]
        with self.hooks(fwd_hooks=hooks, interventions=interventions, sink_tokens=sink_tokens,
                        local_window=local_window, span=span, backend=backend):
            logits = self._forward(toks)
        cache.tokens = toks
        return logits, cache

    def generate(self, inputs, max_new_tokens: int = 20, **kwargs):
        """Greedy generation (left-padded batch); hooks from an enclosing `model.hooks(...)` stay active."""
        toks = to_tokens(inputs, self.tokenizer, self.cfg, self.device, padding_side="left")
        kwargs.setdefault("do_sample", False)
        pad = getattr(self.tokenizer, "pad_token_id", None) if self.tokenizer is not None else None
        with torch.no_grad():
            out = self.model.generate(input_ids=toks.input_ids, attention_mask=toks.attention_mask,
                                      max_new_tokens=max_new_tokens, pad_token_id=pad, **kwargs)
        return out[:, toks.input_ids.shape[1]:]

    # ------------------------------------------------------------------ TransformerLens
    def to_transformer_lens(self, copy: bool = True):
        """The same weights as a TransformerLens `TransformerBridge` (eager attention; short inputs)."""
        import copy as _copy

        from transformer_lens.model_bridge import TransformerBridge

        hf = _copy.deepcopy(self.model) if copy else self.model
        for m in hf.modules():
            m.__dict__.pop("_interp_model", None)
            m.__dict__.pop("_interp_layer", None)
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
        hf.set_attn_implementation("eager")
        if not getattr(hf.config, "architectures", None):
            hf.config.architectures = [type(hf).__name__]
        return TransformerBridge.boot_transformers(self.name, hf_model=hf, tokenizer=self.tokenizer)
