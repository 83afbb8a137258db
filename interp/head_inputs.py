"""Per-node inputs and outputs of the residual stream: the mechanism behind edge-level patching and attribution.

A circuit graph's nodes read from and write to the residual stream (Elhage et al.): the input embedding, every
attention head, every MLP, the logits. This file makes that view concrete for any wrapped architecture:

- **outputs** (`NodeOutputs`): each node's additive contribution to the residual stream in a run. A head's is
  z_h W_O^h (`hook_result`); the input's is `resid_pre` of layer 0 (embeddings, plus learned positions where the
  model has them); an MLP's is what its block adds. Models with *sandwich norms* (Gemma 2/3: an RMSNorm on the sum
  of the heads before it is added) are linearised with the run's own norm scale: contribution_h = z_h W_O^h * s with
  s = post_norm(attn_out) / attn_out (= w / rms(attn_out), frozen per run), so the heads still add up exactly to
  what the block adds. Output biases are left out (they cancel in every difference of two runs).
- **inputs** (`InputPatch`): each downstream input gets its own residual stream. Inputs are the query of each head,
  the key and the value of each *KV head* (GQA-native: a KV head is shared by its group of query heads), each MLP,
  and the logits. A layer whose inputs are patched runs its attention input with the batch expanded into groups:
  group 0 is the unpatched residual, group g the residual plus the delta of input g; the attention call takes each
  head's q (and each KV head's k, v) from its own group and runs once, on the original batch. Where the block has
  its own norm in front of the attention (Llama, Gemma, GPT-2: `input_layernorm` / `ln_1`), only that norm and the
  q/k/v projections see the groups and the attention module's output is folded back at once; otherwise the whole
  block runs expanded and is folded at its output. No per-architecture code: it uses the interventions by stage
  (resid_pre, qkv, z, attn_out, mlp_out, resid_post) and the block's norm modules only to find where the attention
  and MLP inputs start.
- **input gradients** (`input_gradients`, in `interp/input_gradients.py`): d metric / d input of every downstream input, from one forward and one
  backward: the gradient at hook_q/k/v (or the MLP's output) is pulled back through that input's own path (input
  norm, projection, q/k norm, RoPE) to the residual stream, one head slot at a time, batched over heads with
  `torch.autograd.grad(..., is_grads_batched=True)`.

Both need unpadded batches (all rows of one length): a padded batch has per-row positions that do not broadcast over
the expanded groups. Split a ragged task into equal-length buckets first.
"""

from __future__ import annotations

import contextlib
import numbers

from typing import Callable

import torch

from .input_checks import bool_arg
from .config import MLP_NAMES, OUT_PROJ_NAMES, find_child, head_output_weight
from .readout import post_attention_norm, post_feedforward_norm
from .stages import AttnCall, Intervention
from .swaps import ForwardSwaps
from .validate import _show, int_arg, model_arg, tensor_arg

# the module whose input is the residual stream that the MLP reads (resid_mid), first match wins
MLP_IN_NORMS = ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2", "post_attn_layernorm")
# the module whose input is the residual stream that the attention reads (resid_pre), first match wins
ATTN_IN_NORMS = ("input_layernorm", "ln_1")


def sandwich_norms(block) -> tuple | None:
    """(post-attention norm, post-MLP norm) of a block that normalises both outputs before adding them (Gemma 2/3's
    sandwich norms, OLMo 2's post-norms), else None."""
    post_attn, post_mlp = post_attention_norm(block), post_feedforward_norm(block)
    return None if post_attn is None or post_mlp is None else (post_attn, post_mlp)


def attn_input_norm(block):
    """The norm in front of a block's attention when the block has its own one for the MLP (so that expanding the
    attention's input leaves the MLP's alone), else None (InputPatch then expands the whole block)."""
    names = dict(block.named_children())
    norm = next((names[n] for n in ATTN_IN_NORMS if n in names), None)
    if norm is None:
        return None
    try:
        mlp_norm = mlp_input_norm(block)
    except ValueError:
        return None
    return None if mlp_norm is norm else norm


def mlp_input_norm(block):
    """The module whose input is the residual stream the MLP reads (resid_mid): its input norm, or the MLP itself
    where the block normalises only outputs (OLMo 2)."""
    names = dict(block.named_children())
    post = sandwich_norms(block)
    for n in MLP_IN_NORMS:
        if n in names and not (post is not None and names[n] is post[0]):  # a post-norm is not the MLP's input
            return names[n]
    mlp = find_child(block, MLP_NAMES)
    if post is not None and mlp is not None:
        return mlp
    raise ValueError(f"cannot find the norm in front of the MLP of {type(block).__name__} (looked for "
                     f"{', '.join(MLP_IN_NORMS)}); MLP nodes are not supported for this architecture")


UNPADDED_FORMS = ("an integer tensor of token ids [batch, pos] (one row per prompt, all of one length) or the "
                  "Tokens of model.to_tokens(...)")


def check_unpadded(tokens, what: str = "inputs"):
    """Tokens / token ids -> ids [batch, pos]; anything else (text, lists, a TaskBatch, None, 1-D or float ids, an
    empty tensor) raises a TypeError / ValueError naming `what`, and padded batches raise (rows must have one
    length)."""
    if isinstance(tokens, torch.Tensor):
        ids, mask = tokens, None
    elif hasattr(tokens, "input_ids"):  # interp Tokens, a Hugging Face BatchEncoding
        ids, mask = tokens.input_ids, getattr(tokens, "attention_mask", None)
    else:
        hint = ""
        if hasattr(tokens, "clean") and hasattr(tokens, "corrupt"):
            hint = " (this is a TaskBatch: pass batch.clean / batch.corrupt, one prompt length per call)"
        elif isinstance(tokens, (str, list, tuple)):
            hint = " (turn text or lists of ids into tokens with model.to_tokens(...) first)"
        raise TypeError(f"{what} must be {UNPADDED_FORMS}, got {_show(tokens)}{hint}")
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{what} must be {UNPADDED_FORMS}; its input_ids are {_show(ids)}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{what} must be {UNPADDED_FORMS}, got a {ids.dtype} tensor (token ids are integers)")
    if ids.dim() != 2:
        hint = "; add the batch dimension: ids[None]" if ids.dim() == 1 else ""
        raise ValueError(f"{what} must be {UNPADDED_FORMS}, got shape {tuple(ids.shape)}{hint}")
    if ids.numel() == 0:
        raise ValueError(f"{what} are empty (shape {tuple(ids.shape)}); give at least one prompt of at least one "
                         "token")
    if mask is not None and not bool(mask.all()):
        raise ValueError(f"{what} are padded (rows of different token lengths); edge patching and attribution need "
                         "rows of one length: bucket the prompts by length (analyses.circuits does this for tasks)")
    return ids


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def head_contributions(z: torch.Tensor, scale: torch.Tensor | None, w_o: torch.Tensor) -> torch.Tensor:
    """Each head's residual contribution z_h W_O^h (* s, the sandwich-norm scale): [batch, pos, head, d_model].

    z: [batch, pos, head, d_head]; scale: [batch, pos, d_model] or None; w_o: [head, d_head, d_model]."""
    if (not isinstance(z, torch.Tensor) or not isinstance(w_o, torch.Tensor) or z.dim() != 4 or w_o.dim() != 3
            or tuple(z.shape[2:]) != tuple(w_o.shape[:2])):
        raise ValueError(f"head_contributions: z must be [batch, pos, head, d_head] and w_o [head, d_head, d_model], "
                         f"agreeing on [head, d_head]; got z {_shape(z)} and w_o {_shape(w_o)}")
    if scale is not None:
        want = (z.shape[0], z.shape[1], w_o.shape[2])
        if (not isinstance(scale, torch.Tensor) or scale.dim() != 3
                or any(n not in (1, w) for n, w in zip(scale.shape, want))):
            raise ValueError(f"head_contributions: scale must be None or the sandwich-norm scale [batch, pos, d_model] "
                             f"= {list(want)}; got {_shape(scale)}")
    heads = torch.einsum("bqhd,hdm->bqhm", z.to(w_o.dtype), w_o)
    return heads if scale is None else heads * scale[:, :, None, :].to(heads.dtype)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den elementwise, 0 where den == 0 (the sandwich-norm scale w / rms, read off a run)."""
    safe = torch.where(den == 0, torch.ones_like(den), den)
    return torch.where(den == 0, torch.zeros_like(num), num / safe)


class InputPatch(Intervention):
    """Each downstream input reads its own residual stream; records every node's contribution on the way.

    delta_fn(layer, part, patch) -> {slot: delta [batch, pos, d_model]} is called three times per run and layer:
    part "attn" when the layer starts (slots ("q", h), ("k", j), ("v", j)), part "mlp" when its MLP is about to read
    the residual (slot ("mlp",)), and part "logits" after the last layer (slot ("logits",)). It may read the
    contributions recorded so far in this run (current-run values, so patches compose through the graph):
    `patch.outputs` = {"input": [batch, pos, d_model], ("head", l): [batch, pos, head, d_model],
    ("mlp", l): [batch, pos, d_model]}. With delta_fn=None nothing is patched and the run only records outputs.
    Run it with `patch.run(model, tokens)`, which also installs the module probes (MLP input, sandwich norms).
    `compact=True` records the heads as ("z", l): z [batch, pos, head, d_head] and ("scale", l): the sandwich-norm
    scale [batch, pos, d_model] (absent without sandwich norms) instead of ("head", l), head_count times smaller;
    `head_contributions(z, scale, W_O)` expands them (for delta_fn=None runs: a delta_fn reads ("head", l)).

    `start=l, start_resid=r` ([batch, pos, d_model]: the residual stream entering layer l, e.g. the clean run's):
    the blocks before l are skipped (their outputs are not recorded, nothing is patched there) and layer l starts
    from r: a run whose patches all sit at layer l or later costs only the layers from l on.
    """

    stages = ("resid_pre", "qkv", "z", "attn_out", "mlp_out", "resid_post")
    resizes_batch = True  # the groups run as extra copies of the batch between resid_pre and attn_out/resid_post

    def __init__(self, model, delta_fn: Callable | None = None, record: bool = True, compact: bool = False,
                 start: int = 0, start_resid: torch.Tensor | None = None):
        model_arg(model, "InputPatch")
        if delta_fn is not None and not callable(delta_fn):
            raise TypeError(f"InputPatch: delta_fn must be a callable (layer, part, patch) -> {{slot: delta}} or None, "
                            f"got {_show(delta_fn)}")
        if start_resid is not None:
            tensor_arg("start_resid", start_resid, dims=(3,), floating=True, where="InputPatch",
                       shape_doc="[batch, pos, d_model]")
        if compact and delta_fn is not None:
            raise ValueError("InputPatch: compact=True records z instead of the head contributions that a delta_fn "
                             "reads; use it with delta_fn=None")
        bool_arg("record", record, "InputPatch")
        bool_arg("compact", compact, "InputPatch")
        start = _start_arg(start, model.cfg.n_layers, "InputPatch")
        if start > 0 and start_resid is None:
            raise ValueError("InputPatch: start > 0 needs start_resid, the residual stream entering that layer")
        if start == 0 and start_resid is not None:
            raise ValueError("InputPatch: start_resid is the residual entering layer `start`; it needs start > 0")
        self.start, self.start_resid = start, start_resid
        self.model = model
        self.delta_fn = delta_fn
        self.record = record
        self.compact = compact
        self.n_layers = model.cfg.n_layers
        self.outputs: dict = {}
        self._attn_norms: dict = {}  # layer -> the attention's input norm (set by run), None: expand the block
        self._reset()

    def _reset(self) -> None:
        self._groups: list = [None]
        self._z = self._mlp = self._attn_scale = self._mlp_add = None
        self._pending = None  # deltas of the attention inputs, added where the groups are made
        self._early = False  # groups made at the attention's input norm (folded at attn_out), not at resid_pre
        self._batch = 0
        self._layer = -1

    # -- Intervention API
    def validate(self, n_layers: int, n_heads: int) -> None:
        if n_layers != self.n_layers:
            raise ValueError(f"InputPatch was built for a model with {self.n_layers} layers, not {n_layers}")

    def layers(self, n_layers: int) -> list[int]:
        return list(range(self.start, n_layers))

    def resid(self, stage: str, x: torch.Tensor, layer: int, valid) -> torch.Tensor:
        if stage == "resid_pre":
            return self._expand(x, layer)
        if stage == "attn_out":
            return x[:self._batch] if self._early else x  # [batch, pos, d_model]: the groups end here
        if stage == "mlp_out":
            self._mlp = x
            return x
        if stage == "resid_post":
            return self._fold(x, layer)
        return x

    def qkv(self, q, k, v, call: AttnCall):
        """q [G*batch, heads, q_len, d], k/v [G*batch, kv_heads, k_len, d] -> the assembled q/k/v [batch, ...]:
        each head's q and each KV head's k, v from its own group (attention then runs once, not G times)."""
        g = len(self._groups)
        if g == 1:
            return q, k, v
        b = self._batch
        parts = {"q": q.reshape(g, b, *q.shape[1:]), "k": k.reshape(g, b, *k.shape[1:]),
                 "v": v.reshape(g, b, *v.shape[1:])}
        out = {n: t[0].clone() for n, t in parts.items()}
        for gi, slot in enumerate(self._groups[1:], start=1):
            out[slot[0]][:, slot[1]] = parts[slot[0]][gi][:, slot[1]]
        return out["q"], out["k"], out["v"]

    def z(self, z: torch.Tensor, call: AttnCall) -> torch.Tensor:
        """z [batch, pos, head, d_head] -> [G*batch, ...]: the attention module still holds G*batch rows (every
        group's output is the same; the groups are dropped at attn_out or resid_post)."""
        self._z = z[:self._batch]
        g = len(self._groups)
        return z if g == 1 else z.repeat(g, 1, 1, 1)

    # -- the stages' work
    def _deltas(self, layer: int, part: str, shape) -> dict:
        """delta_fn's {slot: delta} for this part, checked: known slots, tensors that add onto `shape`."""
        if self.delta_fn is None:
            return {}
        got = self.delta_fn(layer, part, self)
        where = f"InputPatch: delta_fn({layer}, {part!r}, patch)"
        if not isinstance(got, dict):
            raise TypeError(f"{where} must return a dict {{slot: delta tensor or None}}, got {_show(got)}")
        out = {}
        for slot, d in got.items():
            self._check_slot(where, part, slot)
            if d is None:
                continue
            if not isinstance(d, torch.Tensor) or not d.dtype.is_floating_point or d.device.type == "meta":
                raise TypeError(f"{where}: the delta of slot {slot!r} must be a floating-point tensor with "
                                f"values [batch, pos, d_model] or None, got {_show(d)}")
            if d.dim() > len(shape) or any(a not in (1, b) for a, b in zip(reversed(d.shape), reversed(shape))):
                raise ValueError(f"{where}: the delta of slot {slot!r} must be [batch, pos, d_model] = "
                                 f"{list(shape)} (or broadcast to it), got shape {tuple(d.shape)}")
            out[slot] = d
        return out

    def _check_slot(self, where: str, part: str, slot) -> None:
        c = self.model.cfg
        if part == "attn":
            ok = (isinstance(slot, tuple) and len(slot) == 2 and slot[0] in ("q", "k", "v")
                  and isinstance(slot[1], int) and not isinstance(slot[1], bool)
                  and 0 <= slot[1] < (c.n_heads if slot[0] == "q" else c.n_kv_heads))
        else:
            ok = slot == (part,)
        if not ok:  # the message is built only here: this runs per layer and part of every patched forward
            allowed = (f"('q', 0..{c.n_heads - 1}), ('k', 0..{c.n_kv_heads - 1}) or ('v', 0..{c.n_kv_heads - 1})"
                       if part == "attn" else f"({part!r},)")
            raise ValueError(f"{where}: unknown slot {slot!r}; part {part!r} takes {allowed}")

    def _expand(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        self._reset()
        self._batch, self._layer = x.shape[0], layer
        if layer == 0 and self.record:
            self.outputs["input"] = x
        deltas = self._deltas(layer, "attn", x.shape)
        self._groups = [None] + list(deltas)
        if len(self._groups) == 1:
            return x
        if self._attn_norms.get(layer) is not None:  # expand only the attention's input (see _attn_input)
            self._pending, self._early = deltas, True
            return x
        return self._with_groups(x, deltas)

    def _with_groups(self, x: torch.Tensor, deltas: dict) -> torch.Tensor:
        """[batch, pos, d] -> [G*batch, pos, d]: group 0 unpatched, group g plus the delta of input g."""
        return torch.cat([x] + [x + deltas[s].to(x.dtype) for s in self._groups[1:]], 0)

    def _attn_input(self, x: torch.Tensor) -> torch.Tensor:
        """The residual the attention's input norm reads -> its groups (the skip path keeps the plain batch)."""
        if self._pending is None:
            return x
        deltas, self._pending = self._pending, None
        return self._with_groups(x, deltas)

    def _record_heads(self, layer: int) -> None:
        if not self.record or ("head", layer) in self.outputs or ("z", layer) in self.outputs or self._z is None:
            return
        scale = None if self._attn_scale is None else self._attn_scale[:self._batch]  # [batch, pos, d_model]
        if self.compact:
            self.outputs[("z", layer)] = self._z
            if scale is not None:
                self.outputs[("scale", layer)] = scale
            return
        w_o = head_weights(self.model, layer, self._z.shape[-1])
        self.outputs[("head", layer)] = head_contributions(self._z, scale, w_o)  # [batch, pos, head, d_model]

    def _mlp_input(self, x: torch.Tensor) -> torch.Tensor:
        """The residual stream the MLP reads (resid_mid, [G*batch, pos, d_model]); the skip path keeps its own."""
        layer = self._layer
        self._record_heads(layer)
        d = self._deltas(layer, "mlp", x[:self._batch].shape).get(("mlp",))
        if d is None:
            return x
        x = x.clone()
        x[:self._batch] = x[:self._batch] + d.to(x.dtype)  # only group 0's MLP output is kept
        return x

    def _fold(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        b = self._batch
        out = x[:b]
        self._record_heads(layer)
        if self.record:
            mlp = self._mlp_add if self._mlp_add is not None else self._mlp
            if mlp is not None:
                self.outputs[("mlp", layer)] = mlp[:b]
        if layer == self.n_layers - 1:
            d = self._deltas(self.n_layers, "logits", out.shape).get(("logits",))
            if d is not None:
                out = out + d.to(out.dtype)
        return out

    # -- running
    def run(self, model, tokens, fwd_hooks=(), grad: bool = False, logits_at=None):
        """Logits [batch, pos, vocab] of a run with this patch (module probes installed for the run only);
        [batch, len(logits_at), vocab] at the positions `logits_at` only, when given. `model` must be the one the
        patch was built for (its W_O turns the recorded z into head contributions)."""
        self._check_model(model)
        tokens = check_unpadded(tokens)
        if self.start:
            self._check_start_resid(tokens.shape)
        self.outputs = {}
        handles: list = []
        swaps = ForwardSwaps()
        try:
            self._install(model, handles, swaps)
            return model.run_with_hooks(tokens, fwd_hooks=fwd_hooks, interventions=[self], grad=grad,
                                        logits_at=logits_at)
        finally:
            swaps.restore()
            for h in handles:
                h.remove()
            self._reset()

    def _install(self, model, handles: list, swaps: ForwardSwaps) -> None:
        """The run's module probes and shortcuts (appended to handles / swaps as they are made, so a failure half
        way leaves nothing behind)."""
        self._attn_norms = {}
        for layer, block in enumerate(model.blocks):
            if layer < self.start:
                continue
            a_norm = attn_input_norm(block) if self.delta_fn is not None else None
            self._attn_norms[layer] = a_norm
            if a_norm is not None:
                handles.append(a_norm.register_forward_pre_hook(lambda mod, args: (self._attn_input(args[0]),)
                                                                + tuple(args[1:])))
                o_proj = find_child(model.attn_modules[layer], OUT_PROJ_NAMES)
                if o_proj is not None:  # every group's z is the same: project one
                    handles.append(o_proj.register_forward_pre_hook(
                        lambda mod, args: (args[0][:self._batch] if self._early else args[0],) + tuple(args[1:])))
                self._slice_projections(model.attn_modules[layer], swaps)
            try:
                norm = mlp_input_norm(block)
            except ValueError:
                norm = None
            if norm is not None:
                handles.append(norm.register_forward_pre_hook(lambda mod, args: (self._mlp_input(args[0]),)
                                                              + tuple(args[1:])))
            sw = sandwich_norms(block)
            if sw is None:
                continue
            post_attn, post_mlp = sw

            def attn_probe(mod, args, out):
                self._attn_scale = _ratio(out, args[0]).detach()  # [G*batch, pos, d_model] = w / rms(attn_out)

            def mlp_probe(mod, args, out):
                self._mlp_add = out

            handles += [post_attn.register_forward_hook(attn_probe), post_mlp.register_forward_hook(mlp_probe)]
        if self.start:
            start_at(model, self.start, self.start_resid, handles, swaps)

    def _slice_projections(self, attn, swaps: ForwardSwaps) -> None:
        """Separate q/k/v projections (Llama, Gemma, Qwen, Mistral: plain `q_proj`, `k_proj`, `v_proj` Linear layers)
        project each group only where its slot is read: group 0 in full, group g only the d_head (v: d_head_v) columns
        of its head (the other columns are never read; they are group 0's). G times less projection work. Only where
        everything between projection and attention works head by head: a q/k norm over all heads (OLMoE) mixes the
        columns, and other layouts (GPT-2's fused c_attn, quantised linears, multi-head latent attention's shared
        latent projections: DeepSeek has no k_proj / v_proj) run as they are."""
        c = self.model.cfg
        mods = {kind: getattr(attn, f"{kind}_proj", None) for kind in "qkv"}
        heads = {"q": c.n_heads, "k": c.n_kv_heads, "v": c.n_kv_heads}
        width = {"q": c.d_head, "k": c.d_head, "v": c.d_head_v}
        if not all(m is not None and type(m).forward is torch.nn.Linear.forward and isinstance(m, torch.nn.Linear)
                   and m.out_features == heads[kind] * width[kind] for kind, m in mods.items()):
            return
        for name in ("q_norm", "k_norm"):  # per-head norms only (Gemma 3, Qwen 3: normalised over d_head)
            norm = getattr(attn, name, None)
            w = getattr(norm, "weight", None)
            if norm is not None and (w is None or w.shape[-1] != c.d_head):
                return
        for kind, m in mods.items():
            swaps.set(m, self._grouped_linear(m, kind, width[kind]))

    def _grouped_linear(self, lin: torch.nn.Linear, kind: str, d_head: int):
        def forward(x):  # x: [G*batch, pos, d_model] (the normed attention input of every group)
            g = len(self._groups)
            if g == 1 or not self._early:
                return torch.nn.functional.linear(x, lin.weight, lin.bias)
            b = self._batch
            xs = x.reshape(g, b, *x.shape[1:])
            out = torch.nn.functional.linear(xs[0], lin.weight, lin.bias)  # [batch, pos, out]
            out = out.unsqueeze(0).repeat(g, *([1] * out.dim()))
            for gi, slot in enumerate(self._groups[1:], start=1):
                if slot[0] == kind:
                    cols = slice(slot[1] * d_head, (slot[1] + 1) * d_head)
                    bias = None if lin.bias is None else lin.bias[cols]
                    out[gi, ..., cols] = torch.nn.functional.linear(xs[gi], lin.weight[cols], bias)
            return out.reshape(g * b, *out.shape[2:])
        return forward

    def _check_model(self, model) -> None:
        model_arg(model, "InputPatch.run")
        if model is self.model or getattr(model, "model", None) is getattr(self.model, "model", object()):
            return
        c, d = self.model.cfg, model.cfg
        keys = ("n_layers", "n_heads", "d_head", "d_head_v", "d_model")
        what = ", ".join(f"{k} {getattr(d, k)} vs {getattr(c, k)}" for k in keys if getattr(d, k) != getattr(c, k))
        raise ValueError(f"InputPatch.run: model {getattr(model, 'name', '?')!r} is not the model the patch was built "
                         f"for ({getattr(self.model, 'name', '?')!r}{': ' + what if what else ', other weights'}); "
                         "build an InputPatch for each model")

    def _check_start_resid(self, shape) -> None:
        (batch, pos), d = shape, self.model.cfg.d_model
        check_start_resid("InputPatch: start_resid", self.start_resid, self.start, batch, pos, d)


def check_start_resid(who: str, resid, start: int, batch: int, pos: int, d: int) -> None:
    """ValueError unless `resid` is [b, pos, d] with the run's `batch` a multiple of b (what start_at reads)."""
    r = resid
    if (not isinstance(r, torch.Tensor) or r.dim() != 3 or tuple(r.shape[1:]) != (pos, d) or r.shape[0] == 0
            or batch % r.shape[0]):
        raise ValueError(f"{who} must be [batch, {pos}, {d}] (the residual entering layer {start}) with the run's "
                         f"batch ({batch}) a multiple of its batch, got "
                         f"{tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__}")


def start_at(model, start: int, resid: torch.Tensor, handles: list, swaps: ForwardSwaps) -> None:
    """Run the model from layer `start`: blocks before it hand their input on unchanged, and block `start` reads
    `resid` ([batch, pos, d_model], repeated over the run's batch when that is a multiple) instead of its input.
    What is installed goes into handles / swaps for the caller to undo."""
    def hook(mod, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        check_start_resid(f"the residual to start layer {start} from", resid, start, *x.shape)
        rr = resid.repeat(x.shape[0] // resid.shape[0], 1, 1).to(x.dtype)
        if args:
            return (rr,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": rr}

    handles.append(model.blocks[start].register_forward_pre_hook(hook, with_kwargs=True, prepend=True))
    for block in model.blocks[:start]:  # a skipped block hands its input on (the start block replaces it)
        swaps.set(block, _pass_through)


def _start_arg(start, n: int, where: str) -> int:
    """The layer a run starts from: an int (NumPy ints too) in 0..n - 1."""
    if isinstance(start, bool) or not isinstance(start, numbers.Integral):
        raise TypeError(f"{where}: start must be a layer in 0..{n - 1} (an int), got {_show(start)}")
    if not 0 <= start < n:
        raise ValueError(f"{where}: start must be a layer in 0..{n - 1}, got {start!r}")
    return int(start)


@contextlib.contextmanager
def started_at(model, start: int, resid: torch.Tensor | None):
    """Within the block, forwards start at layer `start` from `resid` (the residual stream entering it, e.g. the
    clean run's); start 0 / resid None: nothing changes."""
    start = _start_arg(start, model.cfg.n_layers, "started_at")
    if resid is not None and not isinstance(resid, torch.Tensor):
        raise TypeError(f"started_at: resid must be a tensor [batch, pos, d_model] or None, got {type(resid).__name__}")
    if resid is not None:  # (a meta tensor failed inside the first block, an integer one was silently converted)
        tensor_arg("resid", resid, floating=True, where="started_at", shape_doc="[batch, pos, d_model]")
    handles: list = []
    swaps = ForwardSwaps()
    try:
        if start > 0 and resid is not None:
            start_at(model, start, resid, handles, swaps)
        yield
    finally:
        swaps.restore()
        for h in handles:
            h.remove()


def _pass_through(*args, **kwargs):
    """A skipped block's forward: its input, unchanged (transformers 5 blocks return the hidden states alone)."""
    return args[0] if args else kwargs["hidden_states"]


def head_weights(model, layer: int, d_head: int | None = None) -> torch.Tensor:
    """Layer `layer`'s W_O split by head: [head, d_head_v, d_model]. `d_head`: the per-head width W_O reads, hook_z's
    last dim (default: the model's value head dim `cfg.d_head_v`, which is d_head except in multi-head latent
    attention)."""
    model_arg(model, "head_weights")
    c = model.cfg
    int_arg("layer", layer, minimum=0, maximum=c.n_layers - 1, where="head_weights")
    int_arg("d_head", d_head, minimum=1, where="head_weights", optional=True)
    dv = c.d_head_v
    try:
        return head_output_weight(model.attn_modules[layer], c.n_heads, dv if d_head is None else d_head)
    except ValueError:
        if d_head is None or d_head == dv or not _projects(model, layer, c.n_heads * dv):
            raise
        raise ValueError(f"head_weights: d_head={d_head} does not fit layer {layer}'s output projection, which reads "
                         f"{c.n_heads} heads x {dv} (hook_z's head dim); leave d_head out or give {dv}") from None


def _projects(model, layer: int, width: int) -> bool:
    """Whether the model's head weights of `layer` split with the model's own value head dim (width = n_heads *
    d_head_v)."""
    try:
        head_output_weight(model.attn_modules[layer], model.cfg.n_heads, width // model.cfg.n_heads)
    except ValueError:
        return False
    return True


def node_outputs(model, tokens, compact: bool = False) -> dict:
    """Every node's contribution to the residual stream in a plain run (see `InputPatch.outputs`), detached.
    `compact`: heads as z and sandwich-norm scale (see `InputPatch`), no logits."""
    model_arg(model, "node_outputs")
    bool_arg("compact", compact, "node_outputs")
    patch = InputPatch(model, compact=compact)
    with torch.no_grad():
        logits = patch.run(model, tokens)
    out = {k: v.detach() for k, v in patch.outputs.items()}
    if not compact:
        out["logits"] = logits
    return out


# the gradients at every downstream input live in their own file; importable from here as before
from .input_gradients import input_gradients  # noqa: E402,F401
