"""How each component's output reaches the logits: direct logit attribution (DLA) with frozen norm scales.

The residual stream before the final norm is a sum of components: the embedding, every head's output
z_h W_O^h and every MLP's output. Freezing each norm's scale at its value in the run makes the norm linear, so the
logit of a token splits exactly into one term per component:

    logit[t] = sum_c  N_f'(r_c) . W_U[t]          N_f'(r) = gamma_f * r / rms(x_final)   (RMSNorm)

Gemma 2/3 (and OLMo 2) put an extra RMSNorm on the attention output before it enters the residual stream
("sandwich" / post norms):
a head's contribution is then N_post'(z_h W_O^h), with the post-attention norm's scale frozen at the layer's total
attention output -- still exact, since the heads sum to that output. LayerNorm (GPT-2 style) also subtracts the
mean, a linear map too; its bias is a constant that belongs to no component.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import find_child, head_output_weight
from .validate import model_arg, tensor_arg


def frozen_norm_scale(norm: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The norm at input x as a linear map r -> scale * (r - mean(r) if centred else r).

    x: [..., d_model] -> scale [..., d_model] (float32), centred. Works for Llama/Gemma RMSNorm (gamma read off
    the module by normalising a vector of ones, so 1 + w conventions need no special case) and nn.LayerNorm."""
    xf = x.float()
    if isinstance(norm, nn.LayerNorm):
        var = xf.var(-1, keepdim=True, unbiased=False)
        gamma = norm.weight.float() if norm.weight is not None else torch.ones_like(xf[..., :1])
        return gamma * torch.rsqrt(var + norm.eps), True
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", None) or 1e-6
    with torch.no_grad():
        ones = torch.ones(1, x.shape[-1], device=x.device, dtype=x.dtype)
        gamma = norm(ones).float()[0] * (1.0 + eps) ** 0.5  # N(1) = gamma / sqrt(1 + eps)
    return gamma * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps), False


def _apply(scale: torch.Tensor, centred: bool, r: torch.Tensor) -> torch.Tensor:
    if centred:
        r = r - r.mean(-1, keepdim=True)
    return r * scale


def post_attention_norm(block: nn.Module) -> nn.Module | None:
    """The norm applied to the attention output before the residual add, or None. Blocks that also normalise the
    MLP output (`post_feedforward_layernorm`: Gemma 2/3's sandwich norms, OLMo 2's post-norms) name it
    `post_attention_layernorm`; in Llama-style blocks that name is the MLP's *input* norm."""
    if find_child(block, ("post_feedforward_layernorm",)) is not None:
        return find_child(block, ("post_attention_layernorm",))
    return None


def post_feedforward_norm(block: nn.Module) -> nn.Module | None:
    """The norm applied to the MLP output before the residual add (Gemma 2/3, OLMo 2), or None."""
    return find_child(block, ("post_feedforward_layernorm",))


def unembedding(model) -> torch.Tensor:
    """W_U: [d_vocab, d_model] (the output embedding)."""
    out = model.model.get_output_embeddings()
    if out is None:
        raise ValueError(f"{model.name} has no output embedding (an encoder?): logit attribution needs an LM head")
    return out.weight


def final_norm(model) -> nn.Module:
    norm = find_child(model.model, ("model.norm", "model.final_layernorm", "transformer.ln_f", "norm"))
    if norm is None:
        raise ValueError(f"cannot find the final norm of {model.name}")
    return norm


@dataclass
class LogitAttribution:
    """Direct logit attribution of every component, at the chosen positions, to a direction in logit space."""

    heads: torch.Tensor  # [batch, pos, layer, head]
    mlps: torch.Tensor  # [batch, pos, layer] (zeros where a model has no MLP)
    embed: torch.Tensor  # [batch, pos]
    target: torch.Tensor  # [batch, pos]: the logit (difference) the terms add up to (minus any LayerNorm bias);
    # with final logit soft-capping (Gemma 2: logits = C tanh(z / C)), z, the logit before the cap

    def total(self) -> torch.Tensor:
        return self.heads.sum((-1, -2)) + self.mlps.sum(-1) + self.embed


def logit_attribution(model, inputs, directions: torch.Tensor) -> LogitAttribution:
    """DLA of every head, MLP and the embedding.

    directions: [batch, pos, d_vocab] is not materialised; give token ids instead:
      LongTensor [batch, pos] (the logit of that token at each position) or [batch, pos, 2] (logit of token 0
      minus logit of token 1, e.g. IO - S). Positions with id -1 get zeros; padding positions of a padded batch
      must have -1 (a ValueError otherwise: their logits read no token).
    """
    where = "logit_attribution"
    model_arg(model, where)
    cfg = model.cfg
    tensor_arg("directions", directions, dims=(2, 3), floating=False, where=where,
               shape_doc="of token ids, [batch, pos] or [batch, pos, 2] (-1 = unused position)")
    directions = directions.long()  # before any comparison: -1 would wrap in an unsigned dtype
    names = ["hook_embed", f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
    for l in range(cfg.n_layers):
        names += [f"blocks.{l}.attn.hook_z", f"blocks.{l}.hook_mlp_out", f"blocks.{l}.hook_attn_out"]
    toks = model.to_tokens(inputs)  # the padding mask of text / lists of ids, checked before the run
    _, cache = model.run_with_cache(toks, names=names)
    b, p = cache["hook_embed"].shape[:2]
    if directions.dim() == 2:
        directions = directions[..., None]
    if tuple(directions.shape[:2]) != (b, p) or directions.shape[-1] not in (1, 2):
        raise ValueError(f"{where}: directions must be [batch, pos] = [{b}, {p}] or [{b}, {p}, 2] token ids, got "
                         f"{tuple(directions.shape)}")
    w_u = unembedding(model).float()  # [vocab, d_model]
    ids = directions.to(w_u.device)
    if bool((ids < -1).any()) or bool((ids >= w_u.shape[0]).any()):
        raise ValueError(f"{where}: directions hold token ids outside [0, {w_u.shape[0]}) (-1 = unused position): "
                         f"min {int(ids.min())}, max {int(ids.max())}")
    used = ids[..., 0] >= 0  # [b, p]
    if toks.attention_mask is not None:
        on_pad = (used & ~toks.attention_mask.to(device=used.device, dtype=torch.bool)).nonzero()
        if len(on_pad):
            r, q = on_pad[0].tolist()
            raise ValueError(f"{where}: directions give token id {int(ids[r, q, 0])} at row {r} position {q}, which is "
                             f"padding (row {r} has {toks.lengths[r]} real tokens); put -1 (unused) at padding "
                             f"positions ({len(on_pad)} such entries)")
    ids = ids.clamp_min(0)
    d = w_u[ids[..., 0]]  # [b, p, d_model]
    if ids.shape[-1] == 2:
        d = d - w_u[ids[..., 1]]
    d = d * used[..., None]
    x_final = cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
    scale, centred = frozen_norm_scale(final_norm(model), x_final)

    def read(r):  # r: [b, p, ..., d_model] -> [b, p, ...]
        extra = r.dim() - 3
        s = scale.reshape(b, p, *([1] * extra), -1)
        return (_apply(s, centred, r.float()) * d.reshape(b, p, *([1] * extra), -1)).sum(-1)

    heads = torch.zeros(b, p, cfg.n_layers, cfg.n_heads)
    mlps = torch.zeros(b, p, cfg.n_layers)
    for l in range(cfg.n_layers):
        z = cache[f"blocks.{l}.attn.hook_z"]  # [b, p, head, d_head]
        w_o = head_output_weight(model.attn_modules[l], cfg.n_heads, z.shape[-1]).float()  # [head, d_head, d_model]
        r = torch.einsum("bphd,hdm->bphm", z.float(), w_o)  # [b, p, head, d_model]
        post = post_attention_norm(model.blocks[l])
        if post is not None:
            ps, pc = frozen_norm_scale(post, cache[f"blocks.{l}.hook_attn_out"])
            r = _apply(ps[:, :, None, :], pc, r)
        heads[:, :, l] = read(r)
        if f"blocks.{l}.hook_mlp_out" in cache:
            m = cache[f"blocks.{l}.hook_mlp_out"]
            post = post_feedforward_norm(model.blocks[l])
            if post is not None:
                ms, mc = frozen_norm_scale(post, m)
                m = _apply(ms, mc, m.float())
            mlps[:, :, l] = read(m)
    embed = read(cache["hook_embed"])
    # the frozen-norm read of the whole residual stream: exactly the logit (difference), before any final logit
    # soft-capping (which is not linear: the terms add up to the capped model's z, whose logit is C tanh(z / C))
    target = read(x_final)
    return LogitAttribution(heads=heads, mlps=mlps, embed=embed, target=target)
