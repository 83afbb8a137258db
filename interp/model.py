"""HookedModel: one wrapper for every Hugging Face architecture, hooked through the attention function.

Attention runs through `interp.attention.interp_attention` (registered with transformers' AttentionInterface), so
no per-architecture code is needed for q/k/v, patterns, statistics and head interventions; residual-stream hooks are
ordinary PyTorch module hooks on the blocks.

    model = interp.load("smollm2-135m")
    logits, cache = model.run_with_cache("The cat sat", stats=["key_mean", "entropy"])
    cache["blocks.0.attn.hook_key_mean"]          # [batch, head, key_pos]
    logits = model.run_with_hooks("...", interventions=[HeadAblation(layer=5, heads=[2])])
    logits, cache, grads = model.run_with_cache("...", names=["blocks.3.attn.hook_z"], grad_of=metric)

The wrapped model's weights are frozen (`requires_grad=False`): gradients are taken with respect to activations,
head masks and other interventions. To train the weights, set `model.model.requires_grad_(True)` yourself.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Iterable, Sequence

import torch

from . import attention as _attention
from . import input_checks as checks
from .cache import ActivationCache
from .checkpointing import checkpointed_blocks
from .config import ATTN_NAMES, MLP_NAMES, ModelConfig, find_blocks, find_child, head_output_weight
from .hooks import (HOOK_OF_STAT, STAT_HOOKS, RunContext, all_hook_names, differentiable, no_gradient,
                    parse_hook_name)
from .stages import RESID_STAGES, AttnCall, checked, checked_bias, checked_qkv
from .kernels import AttentionStats, attention_with_stats, pick_backend
from .kernels.attn_mask import check_run_mask
from . import layer_batch
from .memory import check_pattern_memory
from .packing import Packed, check_packed_interventions, checked_packed, pack
from .tokens import Tokens, to_string_ids, to_tokens
# check_weight_dtype and the names before it were defined here (interp.zoo imports it from here)
from .model_checks import (PATTERN_BYTES_LIMIT, SPAN_HOOK, check_grad_of, check_interventions,  # noqa: F401
                           check_metric_value, check_pattern_size, check_span_hooks, check_weight_dtype,
                           logits_positions, probabilities_error, span_hook_error)


def _at(interventions, stage: str) -> list:
    return [iv for iv in interventions if stage in iv.stages]


def _hook_order(name: str):
    """Forward order of hook names: embed, then layer by layer, then the final norm."""
    if name.startswith("blocks."):
        return (1, int(name.split(".")[1]), name)
    return (0 if name == "hook_embed" else 2, 0, name)


def _attn_implementation(hf_model) -> str | None:
    """The attention implementation a model's (text) layers run now."""
    config = hf_model.config.get_text_config() if hasattr(hf_model.config, "get_text_config") else hf_model.config
    return getattr(config, "_attn_implementation", None)


def _check_attention_routed(hf_model) -> None:
    """A ValueError when the model kept another attention implementation (its attention does not go through
    transformers' AttentionInterface): interp's hooks, statistics and interventions would never run."""
    impl = _attn_implementation(hf_model)
    if impl != _attention.NAME:
        raise ValueError(
            f"{type(hf_model).__name__} kept attention implementation {impl!r}: its attention does not go through "
            "transformers' AttentionInterface, so interp cannot hook it (attention hooks and statistics would "
            "capture nothing); interp wraps models whose attention modules call the AttentionInterface")


def _refuse_output_attentions(module, args, kwargs):
    """Forward pre-hook: interp attention never forms attention weights, so output_attentions=True would give an
    empty tuple (models that do not hand the flag to their attention function included). A model switched back to
    eager attention (`set_attn_implementation("eager")`) returns them as usual."""
    if kwargs.get("output_attentions") and _attn_implementation(module) == _attention.NAME:
        _attention.refuse_output_attentions()


class HookedModel:
    def __init__(self, hf_model, tokenizer=None, name: str | None = None, backend: str = "auto"):
        if not isinstance(hf_model, torch.nn.Module) or not hasattr(hf_model, "config"):
            raise TypeError(f"HookedModel wraps a Hugging Face PreTrainedModel, got {type(hf_model).__name__}")
        from .kernels.api import BACKENDS

        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        check_weight_dtype(hf_model, name or type(hf_model).__name__)
        _attention.register()
        self.model = hf_model.eval().requires_grad_(False)  # interp takes gradients of activations, never weights
        self.tokenizer = checks.tokenizer_arg(tokenizer, "HookedModel")
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
        _check_attention_routed(hf_model)
        self._ctx: RunContext | None = None
        self._valid: torch.Tensor | None = None  # [batch, pos] padding mask of the current run
        # the layers the last forward ran, and those whose mask confined them to segments (`_forward`'s check that
        # packed prompts were kept apart)
        self._layers_run: set = set()
        self._layers_apart: set = set()
        self._install_module_hooks()

    # ------------------------------------------------------------------ basics
    def __repr__(self) -> str:
        c = self.cfg
        v = f", d_head_v {c.d_head_v}" if c.d_head_v != c.d_head else ""
        return (f"HookedModel({self.name!r}: {c.architecture}, {c.n_layers} layers, {c.n_heads} heads "
                f"({c.n_kv_heads} KV), d_head {c.d_head}{v}, n_ctx {c.n_ctx})")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def hook_names(self) -> list[str]:
        return all_hook_names(self.cfg.n_layers)

    def to_tokens(self, inputs, prepend_bos: bool | None = None) -> Tokens:
        """Text, a list of texts, or token ids -> right-padded `Tokens(input_ids, attention_mask)`.

        prepend_bos: None keeps the tokenizer's default for text and token ids as given; True puts BOS first (text
        and token ids alike, where it is not there already); False encodes text without special tokens."""
        return to_tokens(inputs, self.tokenizer, self.cfg, self.device, prepend_bos=prepend_bos,
                         bos_id=getattr(self.model.config, "bos_token_id", None))

    def pack(self, inputs, prepend_bos: bool | None = None) -> Packed:
        """Prompts (as `to_tokens` takes them) packed into one row, each attending only to itself
        (`interp.packing`): pass the result to `model(...)`, `run_with_hooks` or `run_with_cache`."""
        return pack(self.to_tokens(inputs, prepend_bos), self.cfg.n_ctx)

    def _input(self, inputs, prepend_bos) -> tuple[Tokens, torch.Tensor | None]:
        """(tokens, position ids for packed prompts or None) of a forward's input."""
        if isinstance(inputs, Packed):
            return checked_packed(inputs, self.cfg, self.device, lambda t: self.to_tokens(t, prepend_bos))
        return self.to_tokens(inputs, prepend_bos), None

    def to_string(self, ids) -> str | list[str]:
        """Token ids -> text: an id or a 1-D list/tensor of ids gives a string, a 2-D one a list of strings (one per
        row). Ids must be ints in the vocabulary (a tokenizer would decode unknown ids to '' or overflow)."""
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer")
        rows, flat = to_string_ids(ids, self._decode_vocab())
        out = [self.tokenizer.decode(r) for r in rows]
        return out[0] if flat else out

    def _decode_vocab(self) -> int:
        """Ids to_string decodes: [0, this) — the model's vocabulary, or the tokenizer's where that is larger."""
        try:
            n = len(self.tokenizer)
        except TypeError:
            n = 0
        return max(self.cfg.d_vocab, n)

    # ------------------------------------------------------------------ module hooks (residual stream)
    def _install_module_hooks(self) -> None:
        def out_hook(name_fn, stage=None):
            def hook(module, args, output):
                ctx = self._ctx
                if ctx is None:
                    return None
                name = name_fn(module)
                layer = getattr(module, "_interp_layer", None)
                ivs = _at(ctx.interventions.get(layer, ()), stage) if stage else ()
                grad_leaf = name == "hook_embed" and ctx.grad
                if not (ctx.active(name) or ivs or grad_leaf):
                    return None
                x = output[0] if isinstance(output, tuple) else output
                if grad_leaf and not x.requires_grad:  # gradients of activations: the graph starts here
                    x = x.detach().requires_grad_(True)
                for iv in ivs:
                    x = checked(iv, stage, iv.resid(stage, x, layer, self._valid), x, layer)
                x = ctx.apply(name, x, layer)
                return (x,) + tuple(output[1:]) if isinstance(output, tuple) else x
            return hook

        def pre_hook(module, args, kwargs):
            ctx = self._ctx
            if ctx is None:
                return None
            layer = module._interp_layer
            name = f"blocks.{layer}.hook_resid_pre"
            ivs = _at(ctx.interventions.get(layer, ()), "resid_pre")
            if not (ctx.active(name) or ivs):
                return None
            x = args[0] if args else kwargs["hidden_states"]
            for iv in ivs:
                x = checked(iv, "resid_pre", iv.resid("resid_pre", x, layer, self._valid), x, layer)
            x = ctx.apply(name, x, layer)
            if args:
                return (x,) + tuple(args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = x
            return args, kwargs

        for layer, block in enumerate(self.blocks):
            block.register_forward_pre_hook(pre_hook, with_kwargs=True)
            block.register_forward_hook(out_hook(lambda m: f"blocks.{m._interp_layer}.hook_resid_post", "resid_post"))
            self.attn_modules[layer].register_forward_hook(
                out_hook(lambda m: f"blocks.{m._interp_layer}.hook_attn_out", "attn_out"))
            mlp = find_child(block, MLP_NAMES)
            if mlp is not None:
                mlp.register_forward_hook(out_hook(lambda m: f"blocks.{m._interp_layer}.hook_mlp_out", "mlp_out"))
        emb = self.model.get_input_embeddings()
        emb.register_forward_hook(out_hook(lambda m: "hook_embed"))
        for m in self.model.modules():  # the outer model and the base models inside it
            if hasattr(m, "config") and hasattr(m, "set_attn_implementation"):
                m.register_forward_pre_hook(_refuse_output_attentions, with_kwargs=True)
        norm = find_child(self.model, ("model.norm", "model.final_layernorm", "transformer.ln_f", "norm"))
        if norm is not None and not hasattr(norm, "_interp_layer"):
            norm.register_forward_hook(out_hook(lambda m: "ln_final.hook_normalized"))

    # ------------------------------------------------------------------ the attention call
    def attention_call(self, layer, module, query, key, value, mask, scaling, causal, sliding_window, softcap=None,
                       sinks=None, segment_ids=None, attn_mask=None):
        """Called by interp_attention for every layer while a run context is active: hooks, then the intervention
        stages in order (qkv, key_bias, probs, out, z; see `interp.stages`), statistics published as hooks."""
        ctx = self._ctx
        pre = f"blocks.{layer}.attn."
        if ctx.active(pre + "hook_q"):
            query = ctx.apply(pre + "hook_q", query.transpose(1, 2), layer).transpose(1, 2)
        if ctx.active(pre + "hook_k"):
            key = ctx.apply(pre + "hook_k", key.transpose(1, 2), layer).transpose(1, 2)
        if ctx.active(pre + "hook_v"):
            value = ctx.apply(pre + "hook_v", value.transpose(1, 2), layer).transpose(1, 2)
        ivs = ctx.interventions.get(layer, [])
        opts = ctx.stat_options
        bias = None

        running = []  # the intervention whose out / z stage runs now (it may call call.attend(prob_hook=...))

        def attend(prob_hook=None, stats=(), by_intervention=False):
            if prob_hook is not None and ctx.backend == "triton":  # (the kernels' message names a prob_hook)
                if by_intervention:  # an intervention's call.attend: that one (others at the layer need nothing)
                    raise probabilities_error(layer, False, running[-1:])
                raise probabilities_error(layer, ctx.active(pre + "hook_pattern"), _at(ivs, "probs"))
            c = call_ref()
            return attention_with_stats(
                c.query, c.key, c.value, causal=causal, scale=scaling, sliding_window=sliding_window,
                attention_mask=mask, key_bias=bias, stats=stats, sink_tokens=opts.get("sink_tokens", 4),
                local_window=opts.get("local_window", 64), span=opts.get("span"), backend=ctx.backend,
                prob_hook=prob_hook, softcap=softcap, sinks=sinks, segment_ids=segment_ids, attn_mask=attn_mask)

        # `attend` reaches the call through a weak reference: a closure cycle (call -> call.attend -> attend ->
        # call) would keep every layer's q/k/v alive until the garbage collector ran (Gemma 3 at 16k tokens:
        # ~1.8 GB per forward, 21.8 GiB peak in a patching sweep)
        call = AttnCall(layer, query, key, value, self._valid,
                        attend=lambda prob_hook=None: attend(prob_hook, by_intervention=True)[0])
        call_ref = weakref.ref(call)
        for iv in _at(ivs, "qkv"):
            call.query, call.key, call.value = checked_qkv(
                iv, iv.qkv(call.query, call.key, call.value, call), call.query, call.key, call.value, layer)
        for iv in _at(ivs, "key_bias"):
            ib = checked_bias(iv, iv.key_bias(call), call)
            if ib is not None:
                bias = ib if bias is None else bias + ib
        b, h, lq, lk = call.batch, call.heads, call.q_len, call.k_len
        prob_ivs = _at(ivs, "probs")
        want_pattern = ctx.active(pre + "hook_pattern")
        pattern = None
        prob_hook = None  # set below when the probabilities themselves are needed
        if want_pattern or prob_ivs:
            if want_pattern:
                check_pattern_size(b, h, lq, lk, layer)
                pattern = torch.empty(b, h, lq, lk, device=call.device, dtype=torch.float32)

            def capture_and_edit(p, qs):
                for iv in prob_ivs:
                    p = checked(iv, "probs", iv.probs(p, qs, call), p, layer, "p")
                if pattern is not None:
                    pattern[:, :, qs:qs + p.shape[2]] = p
                return p if prob_ivs else None  # (None: nothing edited, so nothing for the reference to check)

            prob_hook = capture_and_edit

        stats = ctx.stats.get(layer, ())
        batch = ctx.layer_batch
        if (batch is not None and bias is None and prob_hook is None and attn_mask is None
                and any(n != "lse" for n in stats)
                and not torch.is_grad_enabled() and batch.accepts(call.query, call.key)
                and pick_backend(ctx.backend, call.device) == "triton"):
            out, lse_only = attend(None, ("lse",))  # output and lse now; the statistics pass runs for many layers
            batch.add(ctx, layer, call.query, call.key, lse_only.lse, mask=mask, causal=causal, scale=scaling,
                      sliding_window=sliding_window, stats=stats, options=opts, softcap=softcap, sinks=sinks,
                      segment_ids=segment_ids)
            st = AttentionStats()  # published by batch.flush
        else:
            if batch is not None and stats:  # pending layers' statistics first: every layer's arrive in layer order
                batch.flush(ctx)
            out, st = attend(prob_hook, stats)
        if pattern is not None:
            edited = ctx.apply(pre + "hook_pattern", pattern, layer)
            if edited is not pattern or ctx.tracked(pre + "hook_pattern"):
                # a hook replaced the pattern, or its gradient is wanted: the output is computed from it
                g = h // call.key.shape[1]
                out = torch.matmul(edited.reshape(b, call.key.shape[1], g, lq, lk),
                                   call.value.float().unsqueeze(2)).reshape(b, h, lq, -1).to(call.query.dtype)
        if torch.is_grad_enabled() and not out.requires_grad and (
                call.query.requires_grad or call.key.requires_grad or call.value.requires_grad
                or (bias is not None and bias.requires_grad)):
            raise ValueError(f"layer {layer}: gradients were requested but the {ctx.backend!r} attention backend "
                             "returned an output without them; use backend='reference' for this run")
        for sname, t in st.items():
            ctx.apply(pre + HOOK_OF_STAT[sname], t, layer)
        for iv in _at(ivs, "out"):
            running[:] = [iv]
            out = checked(iv, "out", iv.out(out, call), out, layer)
        z = out.transpose(1, 2)  # [batch, query_pos, head, d_head_v]
        for iv in _at(ivs, "z"):
            running[:] = [iv]
            z = checked(iv, "z", iv.z(z, call), z, layer)
        z = ctx.apply(pre + "hook_z", z, layer)
        if ctx.active(pre + "hook_result"):
            w_o = head_output_weight(module, h, z.shape[-1])  # [head, d_head_v, d_model]
            ctx.apply(pre + "hook_result", torch.einsum("bqhd,hdm->bqhm", z.to(w_o.dtype), w_o), layer)
        return z.contiguous(), None

    # ------------------------------------------------------------------ running
    def _forward(self, toks: Tokens, grad: bool = False, logits_at=None, position_ids=None, **kwargs):
        self._valid = toks.attention_mask
        # packed prompts (`pack`; their tokens are never padded): several in the row when a position id restarts
        packed = position_ids is not None and bool((position_ids[:, 1:] == 0).any())
        if packed and self._ctx is not None:
            check_packed_interventions(self._ctx.interventions)
        self._layers_run, self._layers_apart = set(), set()
        if toks.attention_mask is not None:
            position_ids = (toks.attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        keep = None if logits_at is None else logits_positions(logits_at, toks.input_ids.shape[1])
        native = keep is not None and self._keeps_logits()
        if native:
            kwargs["logits_to_keep"] = keep.to(toks.input_ids.device)
        ckpt = grad and self._ctx is not None and self._ctx.checkpoint
        with torch.set_grad_enabled(grad), checkpointed_blocks(self, self._ctx, active=ckpt):
            out = self.model(input_ids=toks.input_ids, attention_mask=toks.attention_mask,
                             position_ids=position_ids, use_cache=False, **kwargs)
        mixed = sorted(self._layers_run - self._layers_apart) if packed else []
        if mixed:
            raise ValueError(f"{type(self.model).__name__} ran the packed prompts without keeping them apart in layers "
                             f"{mixed[:8]} (their attention mask does not read packed position ids), so they attended "
                             "to each other there; run them as a padded batch instead of HookedModel.pack")
        out = out.logits if hasattr(out, "logits") else out.last_hidden_state
        return out[:, keep.to(out.device)] if keep is not None and not native else out

    def _keeps_logits(self) -> bool:
        """True when the HF forward takes `logits_to_keep` (unembeds only the positions asked for)."""
        if not hasattr(self, "_logits_to_keep"):
            import inspect

            self._logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        return self._logits_to_keep

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, Callable]] = (), interventions: Iterable = (),
              stats=None, layers=None, sink_tokens: int = 4, local_window: int = 64, span=None,
              backend: str | None = None, bwd_hooks: Sequence[tuple[str, Callable]] = (),
              checkpoint: bool = False, attn_mask=None):
        """Activate hooks, statistics and interventions for every forward pass inside the block (also generate).

        `bwd_hooks=[(name, fn)]` run on the gradient at that hook point when a loss computed from the run is
        backpropagated (`fn(grad, hook)`, may return a replacement gradient). `checkpoint=True`: gradient runs keep
        only each block's input and recompute the block during the backward (`interp.checkpointing`: long-context
        memory; hooks inside blocks then run once more in the backward and must be deterministic).

        `attn_mask`: the mask every layer runs with instead of the model's own (causal, sliding window, chunks,
        overlays; padding and packed prompts' separation still apply): a mask function fn(batch_idx, head_idx,
        q_idx, kv_idx) -> bool, q_idx and kv_idx being positions in the row (so `kv_idx <= q_idx` is causal, and a
        prefix-LM is `(kv_idx <= q_idx) | (kv_idx < P)`; packed prompts share one row), or a dense [batch or 1,
        heads or 1, q_len, k_len] tensor, bool or additive float (`interp.kernels.attn_mask`). Those layers run on
        the reference backend. Forwards without a KV cache only (generation inside the block is refused), and not
        beside a 4-D mask passed to the model."""
        checkpoint = checks.bool_arg("checkpoint", checkpoint)  # NumPy bools too
        check_run_mask(attn_mask)
        if self._ctx is not None:
            raise self._nested_hooks_error("model.hooks(...)")
        ctx = RunContext(n_layers=self.cfg.n_layers, backend=backend or self.backend)
        for kind, items, add in (("fwd_hooks", fwd_hooks, ctx.add_hook), ("bwd_hooks", bwd_hooks, ctx.add_bwd_hook)):
            for item in items:
                if not (isinstance(item, tuple) and len(item) == 2):
                    raise TypeError(f"{kind} takes (name, fn) pairs, got {item!r}")
                add(*item)
        ctx.grad = bool(ctx.bwd_hooks)
        ctx.checkpoint = checkpoint
        names = checks.stat_selection(stats, span)
        for layer in self._layers(layers):
            if names:
                ctx.stats[layer] = tuple(dict.fromkeys(ctx.stats.get(layer, ()) + names))
        check_span_hooks(ctx.hooks, span)
        ctx.stat_options = dict(sink_tokens=sink_tokens, local_window=local_window, span=span)
        ctx.interventions = check_interventions(interventions, self.cfg.n_layers, self.cfg.n_heads)
        ctx.attn_mask = attn_mask
        self._ctx = ctx
        try:
            yield ctx
        finally:
            self._ctx = None
            self._valid = None

    def _nested_hooks_error(self, where: str) -> RuntimeError:
        """Hooks opened inside an active `with model.hooks(...)`: what to do instead."""
        return RuntimeError(
            f"{where}: hooks are already active on this model (an enclosing `with model.hooks(...)`); nested hook "
            "contexts are not supported. Pass the interventions, hooks and statistics to the call itself instead "
            "of the block: `model.run_with_cache(x, interventions=[...], names=[...], stats=...)` or "
            "`model.run_with_hooks(x, fwd_hooks=[...], interventions=[...])`; inside the block, `model(x)` and "
            "`model.generate(...)` run with the block's hooks")

    def _layers(self, layers) -> list[int]:
        return checks.layer_list(layers, self.cfg.n_layers)

    def __call__(self, inputs, prepend_bos: bool | None = None):
        """Logits `[batch, pos, d_vocab]` (no hooks). `inputs` may be prompts packed by `pack`."""
        toks, positions = self._input(inputs, prepend_bos)
        return self._forward(toks, position_ids=positions)

    def run_with_hooks(self, inputs, fwd_hooks=(), interventions=(), prepend_bos=None, bwd_hooks=(),
                       grad: bool | None = None, logits_at=None, checkpoint: bool = False, attn_mask=None,
                       **stat_options):
        """Logits with hooks and interventions active.

        `logits_at` (1-D positions, or a slice such as slice(-1, None)): logits [batch, len(logits_at), vocab] at
        those positions only; the unembedding runs only there (through transformers' `logits_to_keep`), which is
        most of a forward's cost for short prompts and large vocabularies (Gemma 3: 262k).

        The run records a graph (so `loss.backward()` works on the logits) when `grad=True`, or by default when
        backward hooks are given or an intervention holds a tensor that requires grad (e.g. `HeadMask(xi)` with
        `xi.requires_grad_()`); otherwise it runs without grad. Model weights are frozen: gradients flow to
        activations, masks and hooks, never into `.grad` of the weights. `checkpoint=True` keeps only each block's
        input for the backward and recomputes the block there (long context; see `interp.checkpointing`).
        `attn_mask`: every layer's mask instead of the model's own (`hooks`)."""
        checks.keywords("run_with_hooks", stat_options, checks.STAT_OPTIONS,
                        "inputs, fwd_hooks, interventions, prepend_bos, bwd_hooks, grad, logits_at, checkpoint, "
                        "attn_mask")
        if self._ctx is not None:
            raise self._nested_hooks_error("run_with_hooks")
        with self.hooks(fwd_hooks=fwd_hooks, interventions=interventions, bwd_hooks=bwd_hooks,
                        checkpoint=checkpoint, attn_mask=attn_mask, **stat_options) as ctx:
            if grad is None:
                grad = ctx.grad or any(iv.requires_grad() for ivs in ctx.interventions.values() for iv in ivs)
            else:
                checks.bool_arg("grad", grad, "run_with_hooks")
            ctx.grad = ctx.grad or bool(grad)
            toks, positions = self._input(inputs, prepend_bos)
            return self._forward(toks, grad=bool(grad), logits_at=logits_at, position_ids=positions)

    def run_with_cache(self, inputs, names: Iterable[str] | None = None, names_filter: Callable | None = None,
                       stats=None, layers=None, pattern: bool = False, interventions=(), prepend_bos=None,
                       sink_tokens: int = 4, local_window: int = 64, span=None, backend: str | None = None,
                       to_cpu: bool = False, grad_of: Callable | None = None, logits_at=None,
                       checkpoint: bool = False, attn_mask=None):
        """Logits and an ActivationCache (and, with `grad_of`, a second cache of gradients).

        names / names_filter choose hook points (TransformerLens style); `stats=["key_mean", ...]` captures
        statistics (any length, O(n) memory) at `layers`; `pattern=True` captures full patterns (short inputs).
        With nothing chosen (all four left out), every statistic of every layer is captured; an explicit choice that
        selects nothing (names=[], a names_filter matching no hook point, stats=[]) is refused. The span_mass hook
        points exist only with `span=(start, end)`: without a span a names_filter skips them (so
        `names_filter=lambda n: True` works), while naming one in `names` is refused.

        `grad_of=metric` (a function of the logits returning a scalar tensor, e.g. a task's logit difference) runs
        the forward with grad and returns `(logits, cache, grads)`: `grads[name]` is d metric / d activation at
        every chosen hook point on the forward path (statistics and hook_result have none: `grads[name]` says so; a
        choice with no such point is refused), and `grads.metric` the metric's value. One forward and one backward.

        `logits_at` (1-D positions): the logits (and what `grad_of` is handed) only at those positions,
        [batch, len(logits_at), vocab]; at long context the full logits are the largest tensor of a run
        (8k tokens x 262k vocabulary = 8.6 GB for Gemma 3).

        `checkpoint=True` (with `grad_of`): the backward keeps only each block's input and recomputes the block
        (`interp.checkpointing`): the autograd graph's memory drops from every block's internals to d_model floats
        per token and layer, for about one more forward of compute; cached hooks inside blocks run once more.

        `attn_mask`: every layer's mask instead of the model's own, e.g. a prefix-LM
        `lambda b, h, q, k: (k <= q) | (k < 16)` (`hooks`; the reference backend runs those layers).
        """
        checks.bool_arg("pattern", pattern, "run_with_cache")
        checks.bool_arg("to_cpu", to_cpu, "run_with_cache")
        if self._ctx is not None:
            raise self._nested_hooks_error("run_with_cache")
        toks, positions = self._input(inputs, prepend_bos)
        chosen = set()
        if names is not None:
            names = checks.hook_names(names)
            for n in names:
                parse_hook_name(n, self.cfg.n_layers)
                chosen.add(n)
        skipped = []  # span_mass hook points a names_filter matched, with no span to compute them on
        if checks.names_filter_arg(names_filter) is not None:
            for n in self.hook_names():
                if names_filter(n):
                    if span is None and n.endswith(SPAN_HOOK):
                        skipped.append(n)
                    else:
                        chosen.add(n)
        layer_list = self._layers(layers)
        if pattern:
            chosen.update(f"blocks.{l}.attn.hook_pattern" for l in layer_list)
        check_grad_of(grad_of, chosen)
        everything = names is None and names_filter is None and stats is None and not pattern  # nothing chosen
        stat_names = checks.stat_selection("all" if everything else stats, span)
        for l in layer_list:
            chosen.update(f"blocks.{l}.attn.{HOOK_OF_STAT[s]}" for s in stat_names)
        if not chosen and skipped:
            raise ValueError(span_hook_error(skipped[0], "names_filter matches only span_mass hook points"))
        if not chosen:
            raise checks.empty_selection(names, names_filter, None if stats is None else stat_names,
                                         None if layers is None else layer_list)
        pattern_layers = [parse_hook_name(n, self.cfg.n_layers)[0] for n in chosen if n.endswith("attn.hook_pattern")]
        if pattern_layers:  # refuse before running when the patterns of all these layers cannot fit
            b, n = toks.input_ids.shape
            check_pattern_memory(self.cfg, b, n, n, pattern_layers, device=self.device)
        cache = ActivationCache(n_layers=self.cfg.n_layers)

        # statistics are new tensors of each attention call, seen by no other hook here: kept as they are (one copy
        # launch fewer per statistic and layer); activations may be edited in place downstream, so they are copied
        fresh = {n for n in chosen if n.rsplit(".", 1)[-1] in STAT_HOOKS}

        def save(t, hook):
            t = t.detach()
            cache[hook.name] = t.cpu() if to_cpu else (t if hook.name in fresh else t.clone())

        hooks = [(n, save) for n in sorted(chosen)]
        with self.hooks(fwd_hooks=hooks, interventions=interventions, sink_tokens=sink_tokens,
                        local_window=local_window, span=span, backend=backend, checkpoint=checkpoint,
                        attn_mask=attn_mask) as ctx:
            if grad_of is not None:
                ctx.grad = True
                for n in chosen:
                    if differentiable(parse_hook_name(n, self.cfg.n_layers)[1]):
                        ctx.track(n)
            if grad_of is None and layer_batch.ENABLED:  # statistics of many layers per pass
                ctx.layer_batch = layer_batch.LayerBatch()
            try:
                logits = self._forward(toks, grad=grad_of is not None, logits_at=logits_at, position_ids=positions)
                if ctx.layer_batch is not None:
                    ctx.layer_batch.flush(ctx)
            finally:
                ctx.layer_batch = None  # a forward that raised leaves no q and k held by a traceback
            live = dict(ctx.live)
        cache.tokens = toks
        if grad_of is None:
            return logits, cache
        grads = self._grads_of(grad_of, logits, live, to_cpu)
        grads.why_missing = {n: no_gradient(n) for n in chosen if no_gradient(n)}
        return logits.detach(), cache, grads

    def _grads_of(self, metric_fn, logits, live: dict, to_cpu: bool) -> ActivationCache:
        with torch.enable_grad():
            value = metric_fn(logits)
        check_metric_value(value)
        names = sorted(live, key=_hook_order)
        got = torch.autograd.grad(value.reshape(()), [live[n] for n in names], allow_unused=True)
        grads = ActivationCache(n_layers=self.cfg.n_layers)
        bad = []
        for n, g in zip(names, got):
            g = torch.zeros_like(live[n]) if g is None else g.detach()
            if not bool(torch.isfinite(g).all()):
                bad.append(n)
            grads[n] = g.cpu() if to_cpu else g
        if bad:
            raise ValueError(f"the gradient of the metric is NaN/Inf at {bad[-1]!r} (the first point the backward "
                             f"pass reached), and at {len(bad) - 1} more hook point(s) upstream")
        grads.metric = float(value.detach())
        return grads

    def generate(self, inputs, max_new_tokens: int = 20, prepend_bos: bool | None = None, **kwargs):
        """Greedy generation (left-padded batch); hooks from an enclosing `model.hooks(...)` stay active.
        prepend_bos as in `to_tokens`; other keywords go to transformers' `generate`.

        Returns only the NEW token ids, a [batch, new_tokens] tensor, without the prompt (unlike transformers'
        `generate`, which returns prompt + new tokens, and TransformerLens', which can return a string). For text,
        `model.to_string(out)` (a list of strings, one per row) or `model.to_string(out[0])`; for prompt + new,
        `torch.cat([model.to_tokens(prompt).input_ids, out], dim=1)` (one unpadded prompt).

        Mean ablations (`HeadAblation(mode="mean")`, `HeadMask(baseline="mean")`) take their mean on the prompt pass
        (its real tokens) and reuse it at every decode step (`interp.interventions.prompt_mean`)."""
        toks = to_tokens(inputs, self.tokenizer, self.cfg, self.device, padding_side="left", prepend_bos=prepend_bos,
                         bos_id=getattr(self.model.config, "bos_token_id", None))
        max_new_tokens = checks.max_new_tokens_arg(max_new_tokens, toks.input_ids.shape[1], self.cfg.n_ctx)
        kwargs.setdefault("do_sample", False)
        pad = getattr(self.tokenizer, "pad_token_id", None) if self.tokenizer is not None else None
        valid, passes = self._valid, []

        def padding_of_this_pass(module, args, kw):  # the prompt's padding mask on the prompt pass; decode steps'
            self._valid = None if passes else toks.attention_mask  # new tokens are all real: None ("unpadded")
            passes.append(1)

        handle = self.model.register_forward_pre_hook(padding_of_this_pass, with_kwargs=True)
        try:
            with torch.no_grad():
                out = self.model.generate(input_ids=toks.input_ids, attention_mask=toks.attention_mask,
                                          max_new_tokens=max_new_tokens, pad_token_id=pad, **kwargs)
        finally:
            handle.remove()
            self._valid = valid
        return out[:, toks.input_ids.shape[1]:]

    # ------------------------------------------------------------------ TransformerLens
    def to_transformer_lens(self, copy: bool = True):
        """The same weights as a TransformerLens `TransformerBridge` (eager attention; short inputs)."""
        from .tl import to_transformer_lens

        return to_transformer_lens(self, copy=copy)
