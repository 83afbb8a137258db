"""A KV-cache config from head roles, applied at generation time: retrieval heads keep the full cache, the others
keep only sinks + a recent window. Prints needle recall with full attention vs with the config, and the KV memory
the config saves at the trials' length.

    python examples/kv_config.py --model gemma3-270m --out kv_gemma3.json
"""

import argparse

import interp
from interp import kvconfig
from interp.analyses import retrieval as R


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--contexts", type=int, nargs="+", default=[1024])
    p.add_argument("--depths", type=float, nargs="+", default=[0.2, 0.5, 0.8])
    p.add_argument("--sink-tokens", type=int, default=4)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    model = interp.load(args.model)
    trials = R.make_trials(model, contexts=args.contexts, depths=args.depths)
    scores, _ = R.retrieval_scores(model, trials)
    cfg = kvconfig.config_from_scores(model, scores, sink_tokens=args.sink_tokens, window=args.window)
    if args.out:
        kvconfig.save(cfg, args.out)
    full = R.needle_accuracy(model, trials)
    streamed = R.needle_accuracy(model, trials, kvconfig.interventions(cfg, model))
    mem = kvconfig.kv_memory(cfg, n_tokens=max(args.contexts))
    n_full = sum(len(r["full"]) for r in cfg["layers"].values())
    print(f"{model.name}: {n_full} of {model.cfg.n_layers * model.cfg.n_heads} heads keep the full cache; "
          f"KV entries kept at {max(args.contexts)} tokens: {mem['kept_entries']} of {mem['full_entries']} "
          f"({100 * mem['saved_fraction']:.1f} % saved)")
    print(f"needle recall: full attention {full['recall']:.2f} (answer loss {full['answer_loss']:.3f}); "
          f"with the config {streamed['recall']:.2f} (answer loss {streamed['answer_loss']:.3f})")


if __name__ == "__main__":
    main()
