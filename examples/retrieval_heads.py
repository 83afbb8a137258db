"""Retrieval heads of a model: Wu et al.'s score on needle-in-a-haystack trials, then the causal check (ablate the
retrieval heads vs as many random heads).

    python examples/retrieval_heads.py --model smollm2-135m --contexts 512 1024 --depths 0.2 0.5 0.8
"""

import argparse
import time

import torch

import interp
from interp.analyses import retrieval as R


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--contexts", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--depths", type=float, nargs="+", default=[0.2, 0.5, 0.8])
    p.add_argument("--draws", type=int, default=3)
    args = p.parse_args()
    t = time.time()
    model = interp.load(args.model)
    trials = R.make_trials(model, contexts=args.contexts, depths=args.depths)
    scores, per_trial = R.retrieval_scores(model, trials)
    H = model.cfg.n_heads
    flat = torch.nan_to_num(scores, nan=0.0).flatten()
    k = int((flat >= 0.1).sum())
    print(f"{model.name}: {int(per_trial.answered.sum())}/{len(trials)} trials answered; "
          f"{k} of {flat.numel()} heads ({100 * k / flat.numel():.1f} %) are retrieval heads (score >= 0.1)")
    top = flat.topk(min(10, flat.numel()))
    print("top: " + ", ".join(f"L{i // H}H{i % H}={v:.2f}" for v, i in zip(top.values.tolist(), top.indices.tolist())))
    table = R.masking_experiment(model, trials, scores, k=max(k, 1), draws=args.draws)
    print(table.to_string(index=False))
    print(f"({time.time() - t:.0f}s)")


if __name__ == "__main__":
    main()
