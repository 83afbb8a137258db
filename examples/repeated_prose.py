"""How much the bundled prose repeats, and what that does to the long-context scores the README quotes.

`A.text_tokens(model, "prose", n_tokens=N)` repeats one paragraph to reach N tokens. This prints the paragraph's
length, the model's next-token loss on each copy (the second copy is predictable by induction), and Sink^0.3 on the
repeated N tokens beside the paragraph once.

    python examples/repeated_prose.py [--model smollm2-135m] [--context 1024]
"""

from __future__ import annotations

import argparse

import torch

import interp
from interp import analyses as A


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--context", type=int, default=1024)
    args = p.parse_args(argv)
    model = interp.load(args.model)
    once = A.text_tokens(model, "prose")  # [1, n]: the paragraph (with BOS where the model adds one)
    text = A.text_tokens(model, "prose", n_tokens=args.context)  # [1, context]
    n = once.shape[1]
    with torch.no_grad():
        logits = model(text)
    logits = logits.logits if hasattr(logits, "logits") else logits
    nll = torch.nn.functional.cross_entropy(logits[0, :-1].float(), text[0, 1:], reduction="none")  # [context - 1]
    print(f"{model.name}: the prose paragraph is {n} tokens; {args.context} tokens are {args.context / n:.2f} copies")
    for i, start in enumerate(range(0, args.context - 1, n)):
        part = nll[start:start + n - 1]
        print(f"  next-token loss on copy {i + 1} (tokens {start}..{start + len(part)}): {part.mean().item():.2f}")
    for name, ids in ((f"{args.context} repeated tokens", text), (f"the paragraph once ({n} tokens)", once)):
        alpha = A.long_context_scores(model, ids)["sink_score"]
        print(f"  Sink^0.3 on {name}: {A.sink_metric(alpha, 0.3):.3f}")


if __name__ == "__main__":
    main()
