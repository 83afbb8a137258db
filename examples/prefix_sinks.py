"""What a bidirectional prefix does to the first-token attention sink: a prefix-LM mask through a causal model.

In a causal model the first token sees only itself, and most heads park their spare attention on it (the attention
sink). Here the first P tokens of the bundled paragraph attend to each other both ways, and the rest stays causal:
`model.run_with_cache(..., attn_mask=prefix_lm)` runs every layer with that mask instead of the model's own (the
reference backend applies it). The model was trained causal, so this probes how the sink depends on the first token
seeing nothing else.
For each P it prints, mean over layers and heads,
- the mass the queries after the prefix put on the first token (sink_mass with sink_tokens=1),
- the mass they put on the prefix's other tokens (span_mass over keys 1..P-1),
- the share of heads whose mean first-token mass (queries after the prefix) exceeds 0.5,
- the first-token mass of the prefix's own queries (those past the first),
- the key that receives the most attention mass over all queries, and its share (a new sink, if one forms),
and writes the per-layer first-token mass as a plotly figure. P = 0 is plain causal attention; the script also
checks that a causal mask function gives the model's own causal statistics.

    python examples/prefix_sinks.py [--model smollm2-135m] [--tokens 256] [--prefixes 0 2 8 32 128] [--prepend-bos]
"""

from __future__ import annotations

import argparse
import os

import torch

import interp
from interp import analyses as A


def prefix_lm(prefix: int):
    """The run's mask: causal, plus every pair inside the first `prefix` tokens (a mask function in transformers'
    convention; q_idx is the query's position on the key axis)."""
    return lambda b, h, q, k: (k <= q) | ((k < prefix) & (q < prefix))


def statistics(model, ids: torch.Tensor, mask, span) -> dict:
    """{stat: [layer, head, pos]} of sink_mass (first token), span_mass (per query) and key_mass (per key), with every
    layer running `mask` (None: the model's own)."""
    _, cache = model.run_with_cache(ids, stats=["sink_mass", "span_mass", "key_mass"], sink_tokens=1, span=span,
                                    attn_mask=mask)
    hooks = {"sink_mass": "hook_query_sink_mass", "span_mass": "hook_query_span_mass", "key_mass": "hook_key_mass"}
    return {stat: torch.stack([cache[f"blocks.{layer}.attn.{hook}"][0].float().cpu()
                               for layer in range(model.cfg.n_layers)]) for stat, hook in hooks.items()}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--prefixes", type=int, nargs="+", default=[0, 2, 8, 32, 128])
    ap.add_argument("--prepend-bos", action="store_true", help="start the text with the tokenizer's BOS token")
    ap.add_argument("--out", default="out/prefix_sinks")
    args = ap.parse_args(argv)
    model = interp.load(args.model)
    ids = A.text_tokens(model, "prose", n_tokens=args.tokens, prepend_bos=args.prepend_bos or None).to(model.device)
    n = ids.shape[1]
    if any(not 0 <= p < n for p in args.prefixes):
        raise SystemExit(f"--prefixes must lie in [0, {n})")

    # a causal mask function against the model's own causal mask: the same statistics
    own = statistics(model, ids, None, (1, 2))
    causal = statistics(model, ids, prefix_lm(0), (1, 2))
    gap = max((own[s] - causal[s]).abs().max().item() for s in own)
    print(f"{model.name}, {n} tokens of the bundled paragraph; a causal mask function vs the model's own mask: "
          f"largest statistic difference {gap:.1e}")
    assert gap < 1e-4, gap

    print("prefix P | queries after the prefix: mass on token 0 | on tokens 1..P-1 | heads with token-0 mass > 0.5 "
          "| prefix queries 1..P-1: mass on token 0 | the key with the most mass: position, its share of all mass")
    per_layer = {}
    for p in args.prefixes:
        st = statistics(model, ids, prefix_lm(p), (1, max(p, 2)))
        after = slice(max(p, 1), n)
        first = st["sink_mass"][:, :, after]  # [layer, head, queries after the prefix]
        rest = st["span_mass"][:, :, after] if p > 1 else torch.zeros_like(first)
        heads = (first.mean(-1) > 0.5).float().mean().item()
        inside = f"{st['sink_mass'][:, :, 1:p].mean().item():.3f}" if p > 1 else "-"
        per_layer[p] = first.mean((1, 2))
        share = st["key_mass"].mean((0, 1)) / n  # [keys]: mean over layers and heads, a share of the n queries' mass
        top = int(share.argmax())
        print(f"{p} | {first.mean().item():.3f} | {rest.mean().item():.3f} | {heads:.2f} | {inside} | "
              f"{top} ({model.to_string(ids[0, top:top + 1])!r}), {share[top].item():.3f}")

    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(x=list(range(model.cfg.n_layers)), y=v.tolist(), mode="lines+markers",
                                name="causal" if p == 0 else f"bidirectional prefix of {p}")
                     for p, v in per_layer.items()])
    fig.update_layout(title=f"{model.name}: mass on the first token, queries after the prefix (mean over heads)",
                      xaxis_title="layer", yaxis_title="attention mass on token 0")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"prefix_sinks_{model.name}{'_bos' if args.prepend_bos else ''}.html")
    fig.write_html(path, include_plotlyjs=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
