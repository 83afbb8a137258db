"""Attention sinks: first-token sink scores and Sink^eps ("When Attention Sink Emerges"), hidden sinks at later
tokens (ACT), dormant heads (Guo et al. 2024), value-state drains and massive activations.

alpha_k (a key's received attention) = the kernels' `key_mean`: mass divided by the number of queries that can see
the key, so every statistic here runs on O(n) captures at any context length.
"""

from __future__ import annotations

import pandas as pd
import torch


def first_token_alpha(model, tokens: torch.Tensor, layers=None) -> torch.Tensor:
    """alpha_1 per head, averaged over prompts -> [layer, head] (NaN for layers not asked for)."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    out = torch.full((L, H), float("nan"))
    _, cache = model.run_with_cache(tokens, stats=["key_mean"], layers=layers, to_cpu=True)
    for l in cache.layers_with("hook_key_mean"):
        out[l] = cache[f"blocks.{l}.attn.hook_key_mean"][:, :, 0].mean(0)
    return out


def sink_metric(alpha_first: torch.Tensor, eps: float = 0.3) -> float:
    """Sink^eps: the share of heads whose first-token alpha exceeds eps."""
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    a = alpha_first[~torch.isnan(alpha_first)]
    return float((a > eps).float().mean()) if a.numel() else float("nan")


def hidden_sinks(model, tokens: torch.Tensor, threshold: float = 0.1, min_queries: int = 16,
                 layers=None) -> pd.DataFrame:
    """Non-initial tokens whose alpha_k exceeds `threshold` (ACT uses 0.1), in which heads.

    Keys seen by fewer than `min_queries` queries are skipped (the last few tokens' alpha is a mean over a handful
    of queries and means little). One row per (prompt, layer, head, position)."""
    rows = []
    _, cache = model.run_with_cache(tokens, stats=["key_mean", "key_count"], layers=layers, to_cpu=True)
    ids = cache.tokens.input_ids.cpu()
    for l in cache.layers_with("hook_key_mean"):
        km = cache[f"blocks.{l}.attn.hook_key_mean"]  # [batch, head, k]
        cnt = cache[f"blocks.{l}.attn.hook_key_count"]
        hit = (km > threshold) & (cnt >= min_queries)
        hit[..., 0] = False
        for b, h, k in hit.nonzero().tolist():
            tok = int(ids[b, k])
            text = model.tokenizer.decode([tok]) if model.tokenizer is not None else str(tok)
            rows.append(dict(prompt=b, layer=l, head=h, position=k, token_id=tok, token=text,
                             alpha=float(km[b, h, k])))
    return pd.DataFrame(rows, columns=["prompt", "layer", "head", "position", "token_id", "token", "alpha"])


def dormant_heads(model, domains: dict[str, torch.Tensor], sink_threshold: float = 0.5,
                  norm_threshold: float = 0.2) -> pd.DataFrame:
    """Per head and input domain: first-token alpha and the head's output norm relative to the layer's strongest
    head (in a layer where most heads sink, the median head is itself dormant, so the max is the yardstick).

    A head is dormant on a domain when it puts most of its mass on the first token (alpha_1 > sink_threshold) and
    its output is small (relative norm < norm_threshold), following Guo et al. 2024."""
    rows = []
    for domain, toks in domains.items():
        names = [f"blocks.{l}.attn.hook_result" for l in range(model.cfg.n_layers)]
        _, cache = model.run_with_cache(toks, names=names, stats=["key_mean"], to_cpu=True)
        for l in range(model.cfg.n_layers):
            res = cache[f"blocks.{l}.attn.hook_result"][:, 1:]  # [batch, pos, head, d_model], skip the sink itself
            norms = res.norm(dim=-1).mean((0, 1))  # [head]
            rel = norms / norms.max().clamp_min(1e-12)
            alpha = cache[f"blocks.{l}.attn.hook_key_mean"][:, :, 0].mean(0)
            for h in range(model.cfg.n_heads):
                rows.append(dict(domain=domain, layer=l, head=h, alpha_first=float(alpha[h]),
                                 rel_output_norm=float(rel[h]),
                                 dormant=bool(alpha[h] > sink_threshold and rel[h] < norm_threshold)))
    return pd.DataFrame(rows)


def value_drains(model, tokens: torch.Tensor, position: int = 0) -> torch.Tensor:
    """||v|| of the token at `position` over the mean ||v|| of the other tokens, per layer and KV head
    -> [layer, kv_head]. Values well below 1 are value-state drains."""
    names = [f"blocks.{l}.attn.hook_v" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names=names, to_cpu=True)
    out = []
    for l in range(model.cfg.n_layers):
        v = cache[f"blocks.{l}.attn.hook_v"].norm(dim=-1)  # [batch, pos, kv_head]
        others = torch.cat([v[:, :position], v[:, position + 1:]], dim=1).mean((0, 1))
        out.append(v[:, position].mean(0) / others.clamp_min(1e-12))
    return torch.stack(out)


def massive_activations(model, tokens: torch.Tensor, top_dims: int = 4) -> pd.DataFrame:
    """Per layer: the residual-stream norm of the first token over the median token's, and the hidden dimensions
    with the largest magnitude at the token with the largest norm (massive activations)."""
    names = [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names=names, to_cpu=True)
    rows = []
    for l in range(model.cfg.n_layers):
        r = cache[f"blocks.{l}.hook_resid_post"][0]  # [pos, d_model]
        norms = r.norm(dim=-1)
        peak = int(norms.argmax())
        mags, dims = r[peak].abs().topk(top_dims)
        rows.append(dict(layer=l, first_token_norm_ratio=float(norms[0] / norms.median()),
                         peak_position=peak, peak_norm_ratio=float(norms[peak] / norms.median()),
                         top_dims=dims.tolist(), top_values=[round(float(x), 2) for x in r[peak, dims]]))
    return pd.DataFrame(rows)
