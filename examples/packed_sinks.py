"""Where the attention sink sits when documents share a row: packed with document masking, or merely concatenated.

Three short documents run three ways through a bundled model:
- alone, one run each;
- packed (`model.pack`): one row, position ids restarting at each document, each document attending only to itself
  (transformers' packed-sequence mask, interp's segments);
- concatenated: one row of plain causal attention over all three, positions counting on.
For each document this prints the attention mass its queries put on its own first token (averaged over the
document's queries after the first, all heads and layers, from the captured patterns), and in the concatenated row
the mass they put on the row's first token. Packed, every document's first token should be the sink it is alone
(the same numbers to float rounding); concatenated, the later documents' first tokens are ordinary tokens and the
sink stays at the start of the row.

    python examples/packed_sinks.py [--model smollm2-135m]
"""

from __future__ import annotations

import argparse

import torch

import interp

DOCS = [
    "The river rose for three days after the storm, and the old bridge at the edge of town finally gave way.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the leaves of green plants.",
    "She opened the letter slowly, read the first line twice, and then put it back in the envelope unread.",
]


def mass_on(patterns: list[torch.Tensor], start: int, end: int, key: int) -> float:
    """Mean over layers, heads and the queries start+1..end-1 of the mass on `key` (patterns [1, head, q, k])."""
    return torch.stack([p[0, :, start + 1:end, key].mean() for p in patterns]).mean().item()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args(argv)
    model = interp.load(args.model)
    layers = range(model.cfg.n_layers)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in layers]

    def patterns(inputs):
        _, cache = model.run_with_cache(inputs, names=names)
        return [cache[n].float() for n in names]

    packed = model.pack(DOCS)
    concat = packed.tokens.input_ids  # the same tokens, one causal row
    got = {"packed": patterns(packed), "concatenated": patterns(concat)}
    print(f"{model.name}: {len(DOCS)} documents of {[e - s for s, e in packed.spans]} tokens "
          f"(mass their queries put on a token, mean over {model.cfg.n_layers} layers x {model.cfg.n_heads} heads)")
    print("document | alone: own first token | packed: own first token | concatenated: own first token | "
          "concatenated: the row's first token")
    for i, (s, e) in enumerate(packed.spans):
        alone = patterns(model.to_tokens(DOCS[i]))
        print(f"{i + 1} | {mass_on(alone, 0, e - s, 0):.3f} | {mass_on(got['packed'], s, e, s):.3f} | "
              f"{mass_on(got['concatenated'], s, e, s):.3f} | {mass_on(got['concatenated'], s, e, 0):.3f}")


if __name__ == "__main__":
    main()
