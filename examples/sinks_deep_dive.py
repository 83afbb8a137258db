"""Dormant heads per input domain, value-state drains and massive activations in a bundled model.

    python examples/sinks_deep_dive.py --model smollm2-135m
"""

import argparse

import interp
from interp import analyses as A


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tokens", type=int, default=256)
    args = p.parse_args()
    m = interp.load(args.model)
    domains = {"prose": A.text_tokens(m, "prose", n_tokens=args.tokens),
               "code": A.text_tokens(m, "code", n_tokens=args.tokens),
               "random": A.random_tokens(m, n_tokens=args.tokens, n_prompts=1)}
    d = A.dormant_heads(m, domains)
    per = d.pivot_table(index=["layer", "head"], columns="domain", values="dormant")
    print("dormant heads per domain:", {k: int(v) for k, v in d.groupby("domain")["dormant"].sum().items()})
    switch = per[(per.sum(axis=1) > 0) & (per.sum(axis=1) < len(domains))]
    print(f"heads dormant on some domains but active on others: {len(switch)}")
    print(switch.astype(int).head(12).to_string())
    drains = A.value_drains(m, domains["prose"])
    print("value-state drain ||v_first|| / mean ||v_other|| per layer (mean over KV heads): "
          + " ".join(f"{x:.2f}" for x in drains.mean(1).tolist()))
    ma = A.massive_activations(m, domains["prose"])
    print(ma.to_string(index=False))


if __name__ == "__main__":
    main()
