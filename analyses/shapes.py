"""MInference-style head shapes from O(n) kernel statistics (an approximation that holds at any length):

- A-shape: mass on the first tokens + a recent window (the local/streaming score) is high;
- vertical-slash: besides the recent window (slash), a few key columns (vertical lines) collect the attention;
- block-sparse: neither (content-dependent blocks).
"""

from __future__ import annotations

import torch

from interp.validate import int_arg, model_arg, real_arg, tensor_arg, tokens_arg

from .patterns import _length_arg, _tokens_len, local_score

SHAPES = ("a_shape", "vertical_slash", "block_sparse")


def vertical_share(key_mass: torch.Tensor, n_queries: int, top_frac: float = 0.01) -> torch.Tensor:
    """Share of all attention that lands on the top `top_frac` of keys, the first key excluded.
    key_mass: [batch, head, k] -> [batch, head]."""
    where = "vertical_share"
    tensor_arg("key_mass", key_mass, floating=True, where=where, shape_doc="[batch, head, key_pos]")
    if key_mass.dim() == 0 or key_mass.shape[-1] < 2:
        raise ValueError(f"{where}: key_mass needs at least 2 keys (the first is excluded), got shape "
                         f"{tuple(key_mass.shape)}")
    int_arg("n_queries", n_queries, minimum=1, where=where)
    real_arg("top_frac", top_frac, low=0, high=1, low_open=True, where=where)
    km = key_mass[..., 1:]
    top = max(1, int(round(top_frac * km.shape[-1])))
    return km.topk(top, dim=-1).values.sum(-1) / n_queries


def shape_scores(model, tokens: torch.Tensor, sink_tokens: int = 4, local_window: int = 64,
                 top_frac: float = 0.01) -> dict:
    """{"a_shape_score", "vertical_score"}: [layer, head] tensors (mean over prompts)."""
    where = "shape_scores"
    model_arg(model, where)
    tokens_arg(tokens, model, where=where)
    int_arg("sink_tokens", sink_tokens, minimum=0, where=where)
    int_arg("local_window", local_window, minimum=1, where=where)
    real_arg("top_frac", top_frac, low=0, high=1, low_open=True, where=where)
    n = _tokens_len(tokens)
    if n is not None:
        _length_arg(n, sink_tokens, local_window, where)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    a = torch.zeros(L, H)
    v = torch.zeros(L, H)
    _, cache = model.run_with_cache(tokens, stats=["sink_mass", "local_mass", "key_mass"], sink_tokens=sink_tokens,
                                    local_window=local_window, to_cpu=True)
    n = cache.tokens.input_ids.shape[-1]
    _length_arg(n, sink_tokens, local_window, where)  # text: known once tokenized
    for l in range(L):
        pre = f"blocks.{l}.attn."
        a[l] = local_score(cache[pre + "hook_query_sink_mass"], cache[pre + "hook_query_local_mass"], sink_tokens,
                           local_window).mean(0)
        v[l] = vertical_share(cache[pre + "hook_key_mass"], n, top_frac).mean(0)
    return {"a_shape_score": a, "vertical_score": v}


def shape_labels(scores: dict, threshold: float = 0.7) -> list[list[str]]:
    """A-shape when a_shape_score >= threshold, else vertical-slash when a + vertical >= threshold, else
    block-sparse -> [layer][head] labels."""
    where = "shape_labels"
    if not isinstance(scores, dict) or not {"a_shape_score", "vertical_score"} <= set(scores):
        raise TypeError(f"{where}: scores must be a dict with 'a_shape_score' and 'vertical_score' [layer, head] "
                        f"tensors (from shape_scores), got {type(scores).__name__}")
    a, v = scores["a_shape_score"], scores["vertical_score"]
    for name, t in (("a_shape_score", a), ("vertical_score", v)):
        tensor_arg(f"scores[{name!r}]", t, dims=(2,), where=where, shape_doc="[layer, head]")
        if t.dtype == torch.bool or t.dtype.is_complex:
            raise TypeError(f"{where}: scores[{name!r}] must be a real-valued tensor, got {t.dtype}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where}: scores[{name!r}] holds NaN or inf (a layer not measured?); every head needs a "
                             "finite score to get a label")
    if a.shape != v.shape:
        raise ValueError(f"{where}: a_shape_score {tuple(a.shape)} and vertical_score {tuple(v.shape)} differ in shape")
    real_arg("threshold", threshold, low=0, high=1, low_open=True, where=where)
    out = []
    for l in range(a.shape[0]):
        row = []
        for h in range(a.shape[1]):
            if a[l, h] >= threshold:
                row.append("a_shape")
            elif a[l, h] + v[l, h] >= threshold:
                row.append("vertical_slash")
            else:
                row.append("block_sparse")
        out.append(row)
    return out
