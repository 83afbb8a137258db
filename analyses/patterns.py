"""Head patterns: previous-token, duplicate-token and induction scores (pure functions of a pattern), and
local/streaming and diffuse scores (pure functions of kernel statistics, so they hold at any length).

Nothing here modifies its inputs (TransformerLens' head detector zeroes cached patterns in place; we do not).
"""

from __future__ import annotations

import torch

from interp.validate import int_arg, model_arg, tensor_arg, tokens_arg


def _pattern_arg(pattern, where: str) -> int:
    """A square [batch, head, q, k] float pattern -> its length."""
    tensor_arg("pattern", pattern, dims=(4,), floating=True, where=where, shape_doc="[batch, head, query_pos, key_pos]")
    if pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(f"{where}: pattern must be square in its last two dims (queries = keys), got shape "
                         f"{tuple(pattern.shape)}")
    return pattern.shape[-1]


def _period_arg(period, bos, n: int, minimum: int, where: str) -> int:
    if not isinstance(bos, bool):
        raise TypeError(f"{where}: bos must be True or False, got {bos!r}")
    period = int_arg("period", period, minimum=minimum, where=where)
    if int(bos) + period >= n:
        raise ValueError(f"{where}: period {period} leaves no second copy in a pattern of {n} positions "
                         f"(needs {'1 + ' if bos else ''}period < {n})")
    return period


def _stat_arg(name: str, value, where: str) -> torch.Tensor:
    doc = "[..., query_pos] (kernel statistic)"
    tensor_arg(name, value, floating=True, where=where, shape_doc=doc)
    if value.dim() == 0:
        raise ValueError(f"{where}: {name} must have at least 1 dim {doc}, got a 0-D tensor")
    return value


def _length_arg(n: int, sink_tokens: int, local_window: int, where: str, name: str = "tokens") -> None:
    """The local/streaming score reads queries past the first sink_tokens + local_window positions: a shorter input
    would score every head as local (all its keys are sinks or in the window)."""
    if n <= sink_tokens + local_window:
        raise ValueError(f"{where}: {name} has {n} positions; the local score needs an input longer than "
                         f"sink_tokens + local_window = {sink_tokens} + {local_window} = {sink_tokens + local_window} "
                         "(on a shorter one every head looks local): pass longer tokens or a smaller "
                         "sink_tokens / local_window")


def _tokens_len(tokens) -> int | None:
    """Positions of a token-id tensor (None for text, known only once tokenized)."""
    return tokens.shape[-1] if isinstance(tokens, torch.Tensor) else None


def _offset_mass(pattern: torch.Tensor, offset: int, queries: torch.Tensor) -> torch.Tensor:
    """Mean over `queries` of p[q, q - offset] -> [batch, head]. pattern: [batch, head, q, k] (square)."""
    idx = (queries - offset).clamp_min(0)
    picked = pattern[:, :, queries, idx]  # [batch, head, n_queries]
    return picked.mean(-1)


def previous_token_score(pattern: torch.Tensor, exclude_bos: bool = True) -> torch.Tensor:
    """Mean attention from each query to the token just before it -> [batch, head]."""
    n = _pattern_arg(pattern, "previous_token_score")
    if not isinstance(exclude_bos, bool):
        raise TypeError(f"previous_token_score: exclude_bos must be True or False, got {exclude_bos!r}")
    if n < 2 + int(exclude_bos):
        raise ValueError(f"previous_token_score: a pattern of {n} positions has no query with a previous token"
                         f"{' after BOS' if exclude_bos else ''}")
    start = 2 if exclude_bos else 1  # with BOS excluded, the query right after BOS does not count
    return _offset_mass(pattern, 1, torch.arange(start, n, device=pattern.device))


def duplicate_token_score(pattern: torch.Tensor, period: int, bos: bool = True) -> torch.Tensor:
    """On [BOS] r r: mean attention from each second-copy token to its first occurrence -> [batch, head]."""
    n = _pattern_arg(pattern, "duplicate_token_score")
    period = _period_arg(period, bos, n, 1, "duplicate_token_score")
    first = int(bos) + period
    return _offset_mass(pattern, period, torch.arange(first, n, device=pattern.device))


def induction_score(pattern: torch.Tensor, period: int, bos: bool = True) -> torch.Tensor:
    """On [BOS] r r: mean attention to the token *after* the earlier occurrence (offset period - 1)."""
    n = _pattern_arg(pattern, "induction_score")
    period = _period_arg(period, bos, n, 2, "induction_score")  # period 1 would be attention to itself
    first = int(bos) + period
    return _offset_mass(pattern, period - 1, torch.arange(first, n, device=pattern.device))


def local_score(sink_mass: torch.Tensor, local_mass: torch.Tensor, sink_tokens: int, local_window: int,
                valid_from: int | None = None) -> torch.Tensor:
    """StreamingLLM-style: mass on the first `sink_tokens` keys plus the last `local_window` keys, averaged over
    queries far enough in that the two sets do not overlap. Inputs [batch, head, q] -> [batch, head]."""
    where = "local_score"
    _stat_arg("sink_mass", sink_mass, where)
    _stat_arg("local_mass", local_mass, where)
    if sink_mass.shape != local_mass.shape:
        raise ValueError(f"{where}: sink_mass {tuple(sink_mass.shape)} and local_mass {tuple(local_mass.shape)} must "
                         "have one shape")
    int_arg("sink_tokens", sink_tokens, minimum=0, where=where)
    int_arg("local_window", local_window, minimum=1, where=where)
    int_arg("valid_from", valid_from, minimum=0, where=where, optional=True)
    q = sink_mass.shape[-1]
    if valid_from is None:
        _length_arg(q, sink_tokens, local_window, where, name="sink_mass")
        start = sink_tokens + local_window
    elif valid_from >= q:
        raise ValueError(f"{where}: valid_from must be below the {q} query positions of sink_mass, got {valid_from}")
    else:
        start = valid_from
    return (sink_mass[..., start:] + local_mass[..., start:]).mean(-1).clamp(max=1.0)


def diffuseness(entropy: torch.Tensor, q_offset: int = 0) -> torch.Tensor:
    """Entropy over its maximum log(#visible keys), averaged over queries -> [batch, head] in [0, 1]."""
    _stat_arg("entropy", entropy, "diffuseness")
    int_arg("q_offset", q_offset, minimum=0, maximum=2**53, where="diffuseness")
    n = entropy.shape[-1]
    visible = torch.arange(1, n + 1, device=entropy.device, dtype=torch.float32) + q_offset
    norm = torch.log(visible).clamp_min(1e-6)
    ratio = entropy[..., 1:] / norm[1:]
    return ratio.mean(-1) if ratio.shape[-1] else torch.zeros(entropy.shape[:-1])


def head_pattern_scores(model, half: int = 48, n_prompts: int = 8, seed: int = 0, exclude_bos: bool = True):
    """previous-token, duplicate-token and induction scores per head, on repeated random tokens drawn from the
    model's own vocabulary -> dict of [layer, head] tensors."""
    from interp.memory import pattern_bytes

    from .probes import bos_id, fits_n_prompts, repeated_tokens

    where = "head_pattern_scores"
    model_arg(model, where)
    half = int_arg("half", half, minimum=2, maximum=(model.cfg.n_ctx - 1) // 2, where=where)
    if not isinstance(exclude_bos, bool):
        raise TypeError(f"{where}: exclude_bos must be True or False, got {exclude_bos!r}")
    n_prompts = int_arg("n_prompts", n_prompts, minimum=1, where=where)
    int_arg("seed", seed, minimum=0, maximum=2**63 - 1, where=where)
    n = 2 * half + int(bos_id(model) is not None)
    per_prompt = pattern_bytes(model.cfg, 1, n, n)  # the full patterns grow linearly with the prompts
    fits_n_prompts(n_prompts, per_prompt, getattr(model, "device", "cpu"), where,
                   what=f"full patterns of {n} x {n} positions at {model.cfg.n_layers} layers")
    toks = repeated_tokens(model, half=half, n_prompts=n_prompts, seed=seed, prepend_bos=bos_id(model) is not None)
    has_bos = bos_id(model) is not None
    _, cache = model.run_with_cache(toks, pattern=True)
    prev, dup, ind = [], [], []
    for l in range(model.cfg.n_layers):
        p = cache[f"blocks.{l}.attn.hook_pattern"]
        prev.append(previous_token_score(p, exclude_bos=exclude_bos and has_bos).mean(0))
        dup.append(duplicate_token_score(p, half, bos=has_bos).mean(0))
        ind.append(induction_score(p, half, bos=has_bos).mean(0))
    return {"previous_token_score": torch.stack(prev), "duplicate_token_score": torch.stack(dup),
            "induction_score": torch.stack(ind)}


def long_context_scores(model, tokens: torch.Tensor, sink_tokens: int = 4, local_window: int = 64,
                        layers=None) -> dict:
    """Local/streaming score, diffuseness and first-token sink score per head from kernel statistics (O(n) memory,
    any length) -> dict of [layer, head] tensors (layers not asked for are NaN)."""
    where = "long_context_scores"
    model_arg(model, where)
    tokens_arg(tokens, model, where=where)
    int_arg("sink_tokens", sink_tokens, minimum=0, where=where)
    int_arg("local_window", local_window, minimum=1, where=where)
    n = _tokens_len(tokens)
    if n is not None:
        _length_arg(n, sink_tokens, local_window, where)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    out = {k: torch.full((L, H), float("nan")) for k in ("local_score", "entropy", "diffuseness", "sink_score")}
    _, cache = model.run_with_cache(tokens, stats=["sink_mass", "local_mass", "entropy", "key_mean"], layers=layers,
                                    sink_tokens=sink_tokens, local_window=local_window, to_cpu=True)
    _length_arg(cache.tokens.input_ids.shape[-1], sink_tokens, local_window, where)  # text: known once tokenized
    for l in cache.layers_with("hook_query_entropy"):
        pre = f"blocks.{l}.attn."
        out["local_score"][l] = local_score(cache[pre + "hook_query_sink_mass"], cache[pre + "hook_query_local_mass"],
                                            sink_tokens, local_window).mean(0)
        ent = cache[pre + "hook_query_entropy"]
        out["entropy"][l] = ent.mean((0, 2))
        out["diffuseness"][l] = diffuseness(ent).mean(0)
        out["sink_score"][l] = cache[pre + "hook_key_mean"][..., 0].mean(0)
    return out


__all__ = ["previous_token_score", "duplicate_token_score", "induction_score", "local_score", "diffuseness",
           "head_pattern_scores", "long_context_scores"]
