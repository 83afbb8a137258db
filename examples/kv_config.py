"""A KV-cache config from head roles, applied at generation time: retrieval heads keep the full cache, the others
keep only sinks + a recent window. Prints needle recall with full attention vs with the config, and the KV memory
the config saves at the trials' length.

    python examples/kv_config.py --model gemma3-270m --out kv_gemma3.json
"""

import argparse
from pathlib import Path

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
    if min(args.contexts) < 1:
        p.error(f"--contexts must be >= 1, got {min(args.contexts)}")
    if not all(0 <= d <= 1 for d in args.depths):
        p.error(f"--depths must be fractions in [0, 1], got {args.depths}")
    if args.sink_tokens < 0:
        p.error(f"--sink-tokens must be >= 0, got {args.sink_tokens}")
    if args.window < 1:
        p.error(f"--window must be >= 1, got {args.window}")
    if args.out is not None and (Path(args.out).is_dir() or not Path(args.out).parent.is_dir()):
        p.error(f"--out must be a file path in an existing folder, got {args.out!r}")
    try:
        model = interp.load(args.model)
    except (ValueError, TypeError, OSError, KeyError) as e:
        p.error(f"--model {args.model!r}: cannot load it: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    try:
        trials = R.make_trials(model, contexts=args.contexts, depths=args.depths)
    except (ValueError, TypeError) as e:
        p.error(f"--contexts/--depths: {e}")
    scores, _ = R.retrieval_scores(model, trials)
    try:
        cfg = kvconfig.config_from_scores(model, scores, sink_tokens=args.sink_tokens, window=args.window)
    except ValueError as e:  # all-NaN scores: the model answered no needle trial, so no head can be chosen
        raise SystemExit(f"kv_config: {e}") from None
    if args.out:
        try:
            kvconfig.save(cfg, args.out)
        except ValueError as e:
            p.error(f"--out: {e}")
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
