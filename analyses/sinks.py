"""Attention sinks: first-token sink scores and Sink^eps ("When Attention Sink Emerges"), hidden sinks at later
tokens (ACT), dormant heads (Guo et al. 2024), value-state drains and massive activations.

alpha_k (a key's received attention) = the kernels' `key_mean`: mass divided by the number of queries that can see
the key, so every statistic here runs on O(n) captures at any context length.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.tokens import Tokens, first_real
from interp.validate import int_arg, model_arg, real_arg, tensor_arg, tokens_arg


def first_token_alpha(model, tokens: torch.Tensor, layers=None) -> torch.Tensor:
    """alpha_1 per head, averaged over prompts -> [layer, head] (NaN for layers not asked for).

    The first token is each prompt's first real token (position 0 unless a `Tokens` batch is left-padded)."""
    model_arg(model, "first_token_alpha")
    tokens_arg(tokens, model, where="first_token_alpha")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    out = torch.full((L, H), float("nan"))
    _, cache = model.run_with_cache(tokens, stats=["key_mean"], layers=layers, to_cpu=True)
    first = first_real(cache.tokens).cpu()  # [batch]
    rows = torch.arange(first.numel())
    for l in cache.layers_with("hook_key_mean"):
        out[l] = cache[f"blocks.{l}.attn.hook_key_mean"][rows, :, first].mean(0)
    return out


def _min_positions(tokens, n: int | None, where: str, name: str, need: int, why: str) -> None:
    """Refuse inputs of fewer than `need` positions (n: the tokenized length; None = read it off a tensor)."""
    if n is None and isinstance(tokens, torch.Tensor):
        n = tokens.shape[-1]
    if n is not None and n < need:
        raise ValueError(f"{where}: {name} has {n} position{'s' if n != 1 else ''}; it needs at least {need} ({why})")


def _right_padded(tokens, where: str, name: str = "tokens") -> None:
    """These analyses read positions (0 = the first token; the last rows are padding): a left-padded Tokens would
    shift them, so it is refused (model.to_tokens pads on the right)."""
    if isinstance(tokens, Tokens) and isinstance(tokens.attention_mask, torch.Tensor) and bool(
            first_real(tokens).any()):
        raise ValueError(f"{where}: {name} is left-padded (a row's first real token is not at position 0); these "
                         "statistics are read by position: pad on the right, as model.to_tokens does")


def sink_metric(alpha_first: torch.Tensor, eps: float = 0.3) -> float:
    """Sink^eps: the share of heads whose first-token alpha exceeds eps (NaN entries, layers not measured, are
    left out; NaN when nothing is left)."""
    tensor_arg("alpha_first", alpha_first, floating=True, where="sink_metric",
               shape_doc="of first-token alphas, [layer, head] (from first_token_alpha)")
    eps = real_arg("eps", eps, low=0, high=1, low_open=True, high_open=True, where="sink_metric")
    a = alpha_first[~torch.isnan(alpha_first)]
    if a.numel() and not (bool(torch.isfinite(a).all()) and float(a.min()) >= 0 and float(a.max()) <= 1 + 1e-3):
        raise ValueError(f"sink_metric: alpha_first must hold attention shares in [0, 1] (NaN = not measured), got "
                         f"values from {float(a.min())} to {float(a.max())}")
    return float((a > eps).float().mean()) if a.numel() else float("nan")


def hidden_sinks(model, tokens: torch.Tensor, threshold: float = 0.1, min_queries: int = 16,
                 layers=None) -> pd.DataFrame:
    """Non-initial tokens whose alpha_k exceeds `threshold` (ACT uses 0.1), in which heads.

    Keys seen by fewer than `min_queries` queries are skipped (the last few tokens' alpha is a mean over a handful
    of queries and means little). One row per (prompt, layer, head, position)."""
    where = "hidden_sinks"
    model_arg(model, where)
    tokens_arg(tokens, model, where=where)
    _right_padded(tokens, where)
    threshold = real_arg("threshold", threshold, low=0, high=1, high_open=True, where=where)
    min_queries = int_arg("min_queries", min_queries, minimum=1, where=where)
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


_DORMANT_WHY = "the output norm is read at the tokens after the first, the sink"


def dormant_heads(model, domains: dict[str, torch.Tensor], sink_threshold: float = 0.5,
                  norm_threshold: float = 0.2) -> pd.DataFrame:
    """Per head and input domain: first-token alpha and the head's output norm relative to the layer's strongest
    head (in a layer where most heads sink, the median head is itself dormant, so the max is the yardstick).

    A head is dormant on a domain when it puts most of its mass on the first token (alpha_1 > sink_threshold) and
    its output is small (relative norm < norm_threshold), following Guo et al. 2024."""
    where = "dormant_heads"
    model_arg(model, where)
    if not isinstance(domains, dict) or not domains:
        raise TypeError(f"{where}: domains must be a non-empty dict of name -> tokens, got "
                        f"{type(domains).__name__} {domains!r:.60}")
    for domain, toks in domains.items():
        tokens_arg(toks, model, name=f"domains[{domain!r}]", where=where)
        _right_padded(toks, where, name=f"domains[{domain!r}]")
        _min_positions(toks, None, where, f"domains[{domain!r}]", 2, _DORMANT_WHY)
    sink_threshold = real_arg("sink_threshold", sink_threshold, low=0, high=1, high_open=True, where=where)
    norm_threshold = real_arg("norm_threshold", norm_threshold, low=0, high=1, low_open=True, where=where)
    rows = []
    for domain, toks in domains.items():
        names = [f"blocks.{l}.attn.hook_result" for l in range(model.cfg.n_layers)]
        _, cache = model.run_with_cache(toks, names=names, stats=["key_mean"], to_cpu=True)
        _min_positions(toks, cache.tokens.input_ids.shape[-1], where, f"domains[{domain!r}]", 2, _DORMANT_WHY)
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


def dormant_by_query(model, tokens: torch.Tensor, query_masks: dict[str, torch.Tensor],
                     sink_threshold: float = 0.5, norm_threshold: float = 0.2) -> pd.DataFrame:
    """Active/dormant per head and per *query* domain within the same prompts (Guo et al.'s Bigram-Backcopy view:
    the copy head is active on trigger tokens and dormant on the others).

    query_masks: name -> bool [batch, pos] marking the queries of that domain (position 0, the sink, is skipped).
    Per head and domain: mass on the first token from those queries (kernel `sink_mass` with one sink token, O(n)),
    the head's mean output norm there, that norm relative to the head's largest over the domains, and `dormant`
    (first-token mass > sink_threshold and relative norm < norm_threshold)."""
    where = "dormant_by_query"
    model_arg(model, where)
    if not isinstance(query_masks, dict):
        raise TypeError(f"{where}: query_masks must be a non-empty dict of name -> bool [batch, pos] tensor, got "
                        f"{type(query_masks).__name__} {query_masks!r:.60}")
    if not query_masks:
        raise ValueError(f"{where}: query_masks is empty; give a non-empty dict of name -> bool [batch, pos] tensor")
    tokens_arg(tokens, model, where=where, tensor_only=True)
    sink_threshold = real_arg("sink_threshold", sink_threshold, low=0, high=1, high_open=True, where=where)
    norm_threshold = real_arg("norm_threshold", norm_threshold, low=0, high=1, low_open=True, where=where)
    if tokens.dim() == 1:
        tokens = tokens[None]
    for name, mask in query_masks.items():
        if isinstance(mask, torch.Tensor):
            tensor_arg(f"query_masks[{name!r}]", mask, where=where)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != tokens.shape:
            raise ValueError(f"{where}: query_masks[{name!r}] must be a bool tensor of the tokens' shape "
                             f"{tuple(tokens.shape)}, got {getattr(mask, 'dtype', type(mask).__name__)} "
                             f"{tuple(getattr(mask, 'shape', ()))}")
        if not mask[:, 1:].any():
            raise ValueError(f"{where}: query_masks[{name!r}] selects no query after position 0")
    masks = {name: mask.cpu().clone() for name, mask in query_masks.items()}
    for m in masks.values():
        m[:, 0] = False  # the sink itself
    names = [f"blocks.{l}.attn.hook_result" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names=names, stats=["sink_mass"], sink_tokens=1, prepend_bos=False,
                                    to_cpu=True)
    rows = []
    for l in range(model.cfg.n_layers):
        norms = cache[f"blocks.{l}.attn.hook_result"].norm(dim=-1)  # [batch, pos, head]
        first = cache[f"blocks.{l}.attn.hook_query_sink_mass"].transpose(1, 2)  # [batch, pos, head]
        per = {name: (first[m].mean(0), norms[m].mean(0)) for name, m in masks.items()}  # [head] each
        top = torch.stack([n for _, n in per.values()]).amax(0).clamp_min(1e-12)
        for name, (a, n) in per.items():
            for h in range(model.cfg.n_heads):
                rel = float(n[h] / top[h])
                rows.append(dict(domain=name, layer=l, head=h, first_token_mass=float(a[h]), output_norm=float(n[h]),
                                 rel_output_norm=rel, dormant=bool(a[h] > sink_threshold and rel < norm_threshold)))
    return pd.DataFrame(rows)


def value_drains(model, tokens: torch.Tensor, position: int = 0) -> torch.Tensor:
    """||v|| of the token at `position` over the mean ||v|| of the other tokens, per layer and KV head
    -> [layer, kv_head]. Values well below 1 are value-state drains."""
    where = "value_drains"
    model_arg(model, where)
    tokens_arg(tokens, model, where=where)
    _right_padded(tokens, where)
    n = tokens.shape[-1] if isinstance(tokens, torch.Tensor) else None
    position = int_arg("position", position, minimum=0, maximum=None if n is None else n - 1, where=where)
    if n == 1:
        raise ValueError(f"{where}: tokens has one position; the ratio needs other tokens to compare with")
    names = [f"blocks.{l}.attn.hook_v" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names=names, to_cpu=True)
    n = cache.tokens.input_ids.shape[1]
    if position >= n or n == 1:
        raise ValueError(f"{where}: position must be between 0 and {n - 1} and there must be other tokens; the input "
                         f"has {n} positions, position={position}")
    out = []
    for l in range(model.cfg.n_layers):
        v = cache[f"blocks.{l}.attn.hook_v"].norm(dim=-1)  # [batch, pos, kv_head]
        others = torch.cat([v[:, :position], v[:, position + 1:]], dim=1).mean((0, 1))
        out.append(v[:, position].mean(0) / others.clamp_min(1e-12))
    return torch.stack(out)


def massive_activations(model, tokens: torch.Tensor, top_dims: int = 4) -> pd.DataFrame:
    """Per layer: the residual-stream norm of the first token over the median token's, and the hidden dimensions
    with the largest magnitude at the token with the largest norm (massive activations). Prompt 0 is used."""
    where = "massive_activations"
    model_arg(model, where)
    tokens_arg(tokens, model, where=where)
    _right_padded(tokens, where)
    top_dims = int_arg("top_dims", top_dims, minimum=1, maximum=model.cfg.d_model, where=where)
    why = "the norms are compared with the median token's"
    _min_positions(tokens, None, where, "tokens", 2, why)
    names = [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names=names, to_cpu=True)
    _min_positions(tokens, cache.tokens.input_ids.shape[-1], where, "tokens", 2, why)
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
